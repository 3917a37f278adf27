"""The architecture diagram as data: boxes, arrows and frames of the three Transformer families.

views.js draws whatever this describes, so the picture and its explanations stay in one place. Box
``part`` names the explanation page and the live values shown on click; ``changed`` says what differs
from the 2017 encoder-decoder (Vaswani et al. 2017, Figure 1) in the other two families.
"""

from __future__ import annotations

import itertools

from attnlab.models.config import TransformerConfig
from attnlab.web import schemas as s

WIDTH, HEIGHT = 600.0, 620.0
W, H = 190.0, 34.0

CONTENT_OF_PART = {
    "input-embedding": "embeddings",
    "output-embedding": "embeddings",
    "positional-encoding": "positional-encoding",
    "self-attention": "self-attention",
    "masked-self-attention": "masking",
    "cross-attention": "cross-attention",
    "add-norm": "add-norm",
    "feed-forward": "feed-forward",
    "linear": "linear",
    "softmax": "softmax",
}

_KIND = {
    "input-embedding": "embed", "output-embedding": "embed", "positional-encoding": "position",
    "self-attention": "attention", "masked-self-attention": "attention", "cross-attention": "attention",
    "add-norm": "norm", "feed-forward": "ffn", "linear": "output", "softmax": "output",
}

_LABEL = {
    "input-embedding": "Input embedding", "output-embedding": "Output embedding",
    "positional-encoding": "+ Positional encoding", "self-attention": "Multi-head attention",
    "masked-self-attention": "Masked multi-head attention", "cross-attention": "Cross-attention (enc→dec)",
    "add-norm": "Add & norm", "feed-forward": "Feed-forward", "linear": "Linear", "softmax": "Softmax",
}


# What each part computes, shown when the pointer rests on its box (Vaswani et al. 2017, sections 3.2-3.5).
FORMULA = {
    "input-embedding": "x = E[token] · √d_model (a learned row per token)",
    "output-embedding": "x = E[token] · √d_model (a learned row per token)",
    "positional-encoding": "x + PE(pos), PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(…)",
    "self-attention": "softmax(Q Kᵀ / √d_k) V, Q = x W_Q, K = x W_K, V = x W_V, per head",
    "masked-self-attention": "softmax(Q Kᵀ / √d_k + M) V, M = −∞ above the diagonal",
    "cross-attention": "softmax(Q Kᵀ / √d_k) V, Q from the decoder, K and V from the encoder",
    "add-norm": "LayerNorm(x + Sublayer(x))",
    "feed-forward": "max(0, x W₁ + b₁) W₂ + b₂, per token",
    "linear": "logits = h W_vocab",
    "softmax": "p_i = exp(z_i) / Σ_j exp(z_j)",
}


def model_formula(part: str, config: TransformerConfig) -> str:
    """What ``part`` computes in the model of ``config``, with its sizes (the hover card's formula once
    a model's live values are shown; ``FORMULA`` is the 2017 paper's, which the diagram's boxes show).

    Read from the config, so the text differs from ``FORMULA`` where the model differs from the paper:
    MiniLM does not scale its embeddings by sqrt(d_model), GPT-2 and Llama normalise before each
    sublayer, Llama uses RMSNorm, SwiGLU and rotary positions. ``KeyError`` for an unknown part.
    """
    d, dk, h = config.d_model, config.head_dim, config.n_heads
    norm = "LayerNorm" if config.norm == "layernorm" else "RMSNorm"
    rope = config.positions == "rotary"
    if part in ("input-embedding", "output-embedding"):
        text = f"x = E[token] · √d_model (√{d}; a learned row per token)" if config.scale_embeddings else \
            "x = E[token] (a learned row per token, not scaled)"
        return f"{text}; {config.vocab_size:,} rows of {d}"
    if part == "positional-encoding":
        after = f", then {norm}" if config.embedding_norm else ""
        segment = " + S[segment]" if config.type_vocab_size else ""
        return {
            "sinusoidal": f"x + PE(pos), PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(…){after}",
            "learned": f"x + P[pos]{segment} (a learned row per position, {config.max_len} of them){after}",
            "rotary": f"nothing added: Q and K are rotated by angle pos · θ_i inside attention (RoPE, θ = "
                      f"{config.rope_theta:g})",
            "none": "no positional information",
        }[config.positions]
    if part in ("self-attention", "masked-self-attention", "cross-attention"):
        mask = " + M" if part == "masked-self-attention" else ""
        qk = "rotated Q Kᵀ" if rope and part != "cross-attention" else "Q Kᵀ"
        shared = (f", K and V shared by {h // config.n_kv_heads} heads each" if config.n_kv_heads != h else "")
        source = ", Q from the decoder, K and V from the encoder" if part == "cross-attention" else \
            ", Q = x W_Q, K = x W_K, V = x W_V"
        return f"softmax({qk} / √d_k{mask}) V, d_k = {dk}, {h} heads{shared}{source}"
    if part == "add-norm":
        return f"{norm}(x + Sublayer(x))" if config.norm_placement == "post" else f"x + Sublayer({norm}(x))"
    if part == "feed-forward":
        b1, b2 = (" + b₁", " + b₂") if config.bias else ("", "")
        inner = {
            "relu": f"max(0, x W₁{b1}) W₂{b2}", "gelu": f"GELU(x W₁{b1}) W₂{b2}",
            "gelu_tanh": f"GELU_tanh(x W₁{b1}) W₂{b2}", "swiglu": "(SiLU(x W_gate) ⊙ x W_up) W_down",
        }[config.activation]
        return f"{inner}, per token, {d} → {config.d_ff} → {d}"
    if part == "linear":
        return "logits = h Eᵀ (the embedding matrix, tied)" if config.tie_embeddings else "logits = h W_vocab"
    return FORMULA[part]


def _box(box_id: str, part: str, x: float, y: float, changed: str | None = None) -> s.Box:
    return s.Box(id=box_id, part=part, label=_LABEL[part], x=x, y=y, w=W, h=H, kind=_KIND[part], changed=changed,
                 formula=FORMULA[part], content=CONTENT_OF_PART[part])


def _chain(ids: list[str]) -> list[s.Arrow]:
    return [s.Arrow(source=a, target=b) for a, b in itertools.pairwise(ids)]


def _encoder(x: float, changed: dict[str, str] | None = None) -> tuple[list[s.Box], list[str], s.Frame]:
    c = changed or {}
    spec = [("enc-embed", "input-embedding", 560), ("enc-pos", "positional-encoding", 505),
            ("enc-attn", "self-attention", 420), ("enc-norm1", "add-norm", 375),
            ("enc-ff", "feed-forward", 315), ("enc-norm2", "add-norm", 270)]
    boxes = [_box(i, p, x, y, c.get(i)) for i, p, y in spec]
    return boxes, [i for i, _, _ in spec], s.Frame(label="Encoder block × N", x=x - 15, y=255, w=W + 30, h=215)


def _variants() -> list[s.Variant]:
    ex, dx = 50.0, 350.0
    enc_boxes, enc_ids, enc_frame = _encoder(ex)
    dec_spec = [("dec-embed", "output-embedding", 560), ("dec-pos", "positional-encoding", 505),
                ("dec-attn", "masked-self-attention", 440), ("dec-norm1", "add-norm", 395),
                ("dec-cross", "cross-attention", 335), ("dec-norm2", "add-norm", 290),
                ("dec-ff", "feed-forward", 230), ("dec-norm3", "add-norm", 185),
                ("linear", "linear", 110), ("softmax", "softmax", 60)]
    dec_boxes = [_box(i, p, dx, y) for i, p, y in dec_spec]
    dec_ids = [i for i, _, _ in dec_spec]
    full = s.Variant(
        id="encoder-decoder", title="Encoder–decoder (2017)",
        summary="The original translation model: the encoder reads the source, the decoder writes the target "
                "and consults the encoder through cross-attention.",
        boxes=enc_boxes + dec_boxes,
        arrows=_chain(enc_ids) + _chain(dec_ids) + [s.Arrow(source="enc-norm2", target="dec-cross")],
        frames=[enc_frame, s.Frame(label="Decoder block × N", x=dx - 15, y=170, w=W + 30, h=315)],
    )
    cx = (WIDTH - W) / 2
    eo_boxes, eo_ids, eo_frame = _encoder(cx, {
        "enc-attn": "Every token sees every other token: no mask (bidirectional).",
    })
    eo_boxes += [
        _box("linear", "linear", cx, 190, "An output head instead of a decoder: masked-token prediction (MLM) or a classifier."),
        _box("softmax", "softmax", cx, 140, "Probabilities over the vocabulary for each masked position."),
    ]
    encoder_only = s.Variant(
        id="encoder-only", title="Encoder-only (BERT-style)",
        summary="Just the encoder stack: contextual vectors for every token, trained by filling in masked tokens. "
                "The decoder and cross-attention are gone.",
        boxes=eo_boxes, arrows=_chain([*eo_ids, "linear", "softmax"]), frames=[eo_frame],
    )
    do_spec = [("dec-embed", "output-embedding", 560, "The prompt enters here; there is no separate source."),
               ("dec-pos", "positional-encoding", 505, "GPT-2 learns position vectors; Llama rotates queries and keys (RoPE) instead."),
               ("dec-attn", "masked-self-attention", 430, "The only attention: causal self-attention over the text so far."),
               ("dec-norm1", "add-norm", 385, "Pre-norm in GPT-2 and Llama: the norm comes before each sublayer."),
               ("dec-ff", "feed-forward", 325, None), ("dec-norm3", "add-norm", 280, None),
               ("linear", "linear", 200, None), ("softmax", "softmax", 150, "Next-token probabilities: sample one, append it, repeat.")]
    decoder_only = s.Variant(
        id="decoder-only", title="Decoder-only (GPT/Llama-style)",
        summary="Just the decoder stack without cross-attention: it predicts the next token from the ones before it.",
        boxes=[_box(i, p, cx, y, c) for i, p, y, c in do_spec],
        arrows=_chain([i for i, _, _, _ in do_spec]),
        frames=[s.Frame(label="Decoder block × N", x=cx - 15, y=265, w=W + 30, h=210)],
    )
    return [full, encoder_only, decoder_only]


def architecture() -> s.ArchitectureResponse:
    return s.ArchitectureResponse(width=WIDTH, height=HEIGHT, variants=_variants())


FAMILY_VARIANT = {"encoder": "encoder-only", "decoder": "decoder-only", "encoder-decoder": "encoder-decoder"}


def variant_of(config: TransformerConfig) -> s.Variant:
    """The family's variant drawn for the model of ``config``: what the model really has.

    Its frames count its real blocks (``× 6``, not ``× N``). A model without an output head keeps the linear and
    softmax boxes: their hover card says that the model ends with its vectors (``payloads.part``).

    An attention-only model (``config.attn_only``: blocks without a feed-forward sub-layer, Elhage et al.
    2021) loses its feed-forward boxes and the add & norm that follows each; arrows into a removed box go
    on to the box it led to, and the block frames say "attention only".
    """
    variant = next(v for v in _variants() if v.id == FAMILY_VARIANT[config.family])
    depth = {"Encoder": config.n_layers, "Decoder": config.n_decoder_layers if config.family == "encoder-decoder" else config.n_layers}
    variant.frames = [f.model_copy(update={"label": f.label.replace("× N", f"× {depth[f.label.split()[0]]}")}) for f in variant.frames]
    if not config.attn_only:
        return variant
    ff_ids = [b.id for b in variant.boxes if b.part == "feed-forward"]
    after = {a.source: a.target for a in variant.arrows}
    gone = set(ff_ids) | {after[i] for i in ff_ids if i in after}  # each feed-forward and its add & norm
    before = {a.target: a.source for a in variant.arrows if a.target in gone}

    def onward(box_id: str) -> str | None:  # the first kept box after a removed one
        while box_id in gone:
            box_id = after.get(box_id)  # type: ignore[assignment]
            if box_id is None:
                return None
        return box_id

    def kept(box_id: str) -> str:  # the last kept box before a removed one
        while box_id in gone:
            box_id = before[box_id]
        return box_id

    arrows = []
    for a in variant.arrows:
        source, target = kept(a.source), onward(a.target)
        if target is not None and source != target and (source, target) not in {(x.source, x.target) for x in arrows}:
            arrows.append(s.Arrow(source=source, target=target))
    frames = [f.model_copy(update={"label": f.label.replace("block", "block (attention only)")}) for f in variant.frames]
    return variant.model_copy(update={
        "boxes": [b for b in variant.boxes if b.id not in gone], "arrows": arrows, "frames": frames,
        "summary": variant.summary + " This model is attention-only: its blocks have no feed-forward network.",
    })
