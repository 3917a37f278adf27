"""Hugging Face BERT, GPT-2 and Llama checkpoints to and from attnlab, exactly.

Four kinds of checkpoint, each a ``KeyMap`` (see ``attnlab.weights.keymap``) written as a table:

- ``bert``: ``BertModel`` (with or without its pooler) <-> ``EncoderModel``
- ``bert-mlm``: ``BertForMaskedLM`` <-> ``EncoderForMaskedLM``
- ``gpt2``: ``GPT2LMHeadModel`` (or a bare ``GPT2Model`` file) <-> ``DecoderLM``
- ``llama``: ``LlamaForCausalLM`` (or ``LlamaModel``) <-> ``DecoderLM``

Hugging Face's Llama applies rotary embeddings in the "rotate half" layout, as attnlab does, so no
permutation is needed here (llama.cpp's GGUF files are permuted: undo that, rename to Hugging Face's
keys and ``from_hf_state_dict("llama", ...)`` does the rest). ``transformers`` is not imported: state
dicts are plain dicts and configs may be a ``PretrainedConfig`` or the dict of a ``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.models import ConfigError, DecoderLM, EncoderForMaskedLM, EncoderModel, TransformerConfig
from attnlab.weights.keymap import IDENTITY, TRANSPOSE, KeyMap, Rule, Transform, fuse, rule, split

KINDS: tuple[str, ...] = ("bert", "bert-mlm", "gpt2", "llama")

# Prefix of the base model's keys in the canonical Hugging Face class of each kind, the keys that
# live outside it (heads), and checkpoint entries that are buffers rather than weights.
_PREFIX = {"bert": "", "bert-mlm": "bert.", "gpt2": "transformer.", "llama": "model."}
_BASE_NAME = {"bert": "bert.", "bert-mlm": "bert.", "gpt2": "transformer.", "llama": "model."}
_HEADS = {"bert": (), "bert-mlm": ("cls.",), "gpt2": ("lm_head.",), "llama": ("lm_head.",)}
_IGNORE = {
    "bert": (r"embeddings\.position_ids$",),
    "bert-mlm": (r"embeddings\.position_ids$",),
    "gpt2": (r"\.attn\.(bias|masked_bias)$",),
    "llama": (r"rotary_emb\.inv_freq$",),
}
# What each checkpoint's architecture fixes; a config that differs would load but compute another model.
_ARCHITECTURE: dict[str, dict[str, Any]] = {
    "bert": dict(family="encoder", positions="learned", norm="layernorm", norm_placement="post",
                 embedding_norm=True, final_norm=False, scale_embeddings=False, norm_bias=True),
    "gpt2": dict(family="decoder", positions="learned", norm="layernorm", norm_placement="pre",
                 embedding_norm=False, final_norm=True, scale_embeddings=False, bias=True, norm_bias=True),
    "llama": dict(family="decoder", positions="rotary", norm="rmsnorm", norm_placement="pre",
                  embedding_norm=False, final_norm=True, scale_embeddings=False, activation="swiglu"),
}
_ARCHITECTURE["bert-mlm"] = _ARCHITECTURE["bert"]


def _linear(ours: str, theirs: str, bias: bool, transform: Transform = IDENTITY) -> list[Rule]:
    """A linear (or norm) layer: weight, and bias if present; ``transform`` applies to the weight."""
    rules = [rule(f"{ours}.weight", f"{theirs}.weight", transform)]
    if bias:
        rules.append(rule(f"{ours}.bias", f"{theirs}.bias"))
    return rules


def _qkv(config: TransformerConfig, ours: str, theirs: tuple[str, str, str], bias: bool) -> list[Rule]:
    """Separate checkpoint q/k/v projections onto ours, fused (one matmul) or not, as the config says."""
    if not config.fused_qkv:
        return [r for name, t in zip("qkv", theirs, strict=True) for r in _linear(f"{ours}.{name}_proj", t, bias)]
    sizes = _qkv_sizes(config)
    rules = [rule(f"{ours}.qkv_proj.weight", [f"{t}.weight" for t in theirs], fuse(sizes))]
    if bias:
        rules.append(rule(f"{ours}.qkv_proj.bias", [f"{t}.bias" for t in theirs], fuse(sizes)))
    return rules


def _qkv_sizes(config: TransformerConfig) -> list[int]:
    assert config.head_dim is not None and config.n_kv_heads is not None
    return [config.n_heads * config.head_dim] + [config.n_kv_heads * config.head_dim] * 2


def _bert_rules(config: TransformerConfig, mlm: bool, pooler: bool) -> list[Rule]:
    o, p = ("encoder.", "bert.") if mlm else ("", "")
    block, layer = f"{o}stack.blocks.{{layer}}", f"{p}encoder.layer.{{layer}}"
    rules = [
        rule(f"{o}embed.token.weight", f"{p}embeddings.word_embeddings.weight"),
        rule(f"{o}embed.positions.embedding.weight", f"{p}embeddings.position_embeddings.weight"),
        *_linear(f"{o}embed.norm", f"{p}embeddings.LayerNorm", config.norm_bias),
        *_qkv(config, f"{block}.attn", tuple(f"{layer}.attention.self.{n}" for n in ("query", "key", "value")),
              config.bias),
        *_linear(f"{block}.attn.out_proj", f"{layer}.attention.output.dense", config.bias),
        *_linear(f"{block}.attn_norm", f"{layer}.attention.output.LayerNorm", config.norm_bias),
        *_linear(f"{block}.ff.up", f"{layer}.intermediate.dense", config.bias),
        *_linear(f"{block}.ff.down", f"{layer}.output.dense", config.bias),
        *_linear(f"{block}.ff_norm", f"{layer}.output.LayerNorm", config.norm_bias),
    ]
    if config.type_vocab_size:
        rules.append(rule(f"{o}embed.token_type.weight", f"{p}embeddings.token_type_embeddings.weight"))
    if pooler and not mlm:
        rules += _linear("pooler", "pooler.dense", True)
    if mlm:
        rules += [
            *_linear("transform", "cls.predictions.transform.dense", True),
            *_linear("transform_norm", "cls.predictions.transform.LayerNorm", config.norm_bias),
            rule("lm_head.bias", "cls.predictions.bias"),
        ]
        if not config.tie_embeddings:
            rules.append(rule("lm_head.weight", "cls.predictions.decoder.weight"))
    return rules


def _gpt2_rules(config: TransformerConfig) -> list[Rule]:
    block, h = "stack.blocks.{layer}", "transformer.h.{layer}"
    if config.fused_qkv:
        qkv = _linear(f"{block}.attn.qkv_proj", f"{h}.attn.c_attn", True, TRANSPOSE)
    else:  # one Conv1D holds q, k and v side by side
        sizes = _qkv_sizes(config)
        names = [f"{block}.attn.{n}_proj" for n in "qkv"]
        qkv = [
            rule([f"{n}.weight" for n in names], f"{h}.attn.c_attn.weight", TRANSPOSE.then(split(sizes))),
            rule([f"{n}.bias" for n in names], f"{h}.attn.c_attn.bias", split(sizes)),
        ]
    rules = [
        rule("embed.token.weight", "transformer.wte.weight"),
        rule("embed.positions.embedding.weight", "transformer.wpe.weight"),
        *_linear(f"{block}.attn_norm", f"{h}.ln_1", config.norm_bias),
        *qkv,
        *_linear(f"{block}.attn.out_proj", f"{h}.attn.c_proj", True, TRANSPOSE),
        *_linear(f"{block}.ff_norm", f"{h}.ln_2", config.norm_bias),
        *_linear(f"{block}.ff.up", f"{h}.mlp.c_fc", True, TRANSPOSE),
        *_linear(f"{block}.ff.down", f"{h}.mlp.c_proj", True, TRANSPOSE),
        *_linear("stack.final_norm", "transformer.ln_f", config.norm_bias),
    ]
    if not config.tie_embeddings:
        rules.append(rule("lm_head.weight", "lm_head.weight"))
    return rules


def _llama_rules(config: TransformerConfig) -> list[Rule]:
    block, layer = "stack.blocks.{layer}", "model.layers.{layer}"
    rules = [
        rule("embed.token.weight", "model.embed_tokens.weight"),
        rule(f"{block}.attn_norm.weight", f"{layer}.input_layernorm.weight"),
        *_qkv(config, f"{block}.attn", tuple(f"{layer}.self_attn.{n}_proj" for n in "qkv"), config.bias),
        *_linear(f"{block}.attn.out_proj", f"{layer}.self_attn.o_proj", config.bias),
        rule(f"{block}.ff_norm.weight", f"{layer}.post_attention_layernorm.weight"),
        *_linear(f"{block}.ff.gate", f"{layer}.mlp.gate_proj", config.bias),
        *_linear(f"{block}.ff.up", f"{layer}.mlp.up_proj", config.bias),
        *_linear(f"{block}.ff.down", f"{layer}.mlp.down_proj", config.bias),
        rule("stack.final_norm.weight", "model.norm.weight"),
    ]
    if not config.tie_embeddings:
        rules.append(rule("lm_head.weight", "lm_head.weight"))
    return rules


def _check_kind(kind: str, config: TransformerConfig) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; choose one of {KINDS}")
    for key, value in _ARCHITECTURE[kind].items():
        if getattr(config, key) != value:
            raise ConfigError(
                f"a {kind} checkpoint needs {key}={value!r}, but the config has {key}={getattr(config, key)!r}"
            )


def hf_keymap(kind: str, config: TransformerConfig, *, pooler: bool = True) -> KeyMap:
    """The two-way key map of one checkpoint kind for one config (``pooler``: ``bert`` only)."""
    _check_kind(kind, config)
    theirs_tied: dict[str, str] = {}
    ours_tied: dict[str, str] = {}
    if kind in ("bert", "bert-mlm"):
        rules = _bert_rules(config, mlm=kind == "bert-mlm", pooler=pooler)
        if kind == "bert-mlm":
            theirs_tied["cls.predictions.decoder.bias"] = "cls.predictions.bias"
            if config.tie_embeddings:
                theirs_tied["cls.predictions.decoder.weight"] = "bert.embeddings.word_embeddings.weight"
                ours_tied["lm_head.weight"] = "encoder.embed.token.weight"
    else:
        rules = _gpt2_rules(config) if kind == "gpt2" else _llama_rules(config)
        if config.tie_embeddings:
            theirs_tied["lm_head.weight"] = "transformer.wte.weight" if kind == "gpt2" else "model.embed_tokens.weight"
            ours_tied["lm_head.weight"] = "embed.token.weight"
    return KeyMap(
        name=f"Hugging Face {kind}", rules=rules, n_layers=config.n_layers,
        ours_tied=ours_tied, theirs_tied=theirs_tied, ignore=_IGNORE[kind],
    )


def model_for(kind: str, config: TransformerConfig, *, pooler: bool = True) -> nn.Module:
    """The attnlab model a checkpoint kind loads into (``EncoderModel``, ``EncoderForMaskedLM``, ``DecoderLM``)."""
    _check_kind(kind, config)
    if kind == "bert":
        return EncoderModel(config, pooler=pooler)
    if kind == "bert-mlm":
        return EncoderForMaskedLM(config)
    return DecoderLM(config)


def _reference(kind: str, config: TransformerConfig, pooler: bool) -> dict[str, Tensor]:
    """Our state dict's keys and shapes, built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return model_for(kind, config, pooler=pooler).state_dict()


def _canonical_keys(kind: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Accept both the base model's keys and the head model's (``h.0...`` or ``transformer.h.0...``)."""
    found = _BASE_NAME[kind] if any(k.startswith(_BASE_NAME[kind]) for k in state_dict) else ""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_HEADS[kind]) or not key.startswith(found):
            out[key] = value
        else:
            out[_PREFIX[kind] + key[len(found):]] = value
    return out


def from_hf_state_dict(kind: str, hf_state_dict: Mapping[str, Tensor], config: TransformerConfig) -> dict[str, Tensor]:
    """A Hugging Face state dict -> an attnlab state dict for ``model_for(kind, config)``.

    Key sets and shapes are checked before anything is copied; a mismatch raises
    ``CheckpointMismatchError`` naming the key (and both shapes).
    """
    _check_kind(kind, config)
    theirs = _canonical_keys(kind, hf_state_dict)
    pooler = kind == "bert" and "pooler.dense.weight" in theirs
    return hf_keymap(kind, config, pooler=pooler).to_ours(theirs, _reference(kind, config, pooler))


def check_hf_layout(kind: str, hf_shapes: Mapping[str, Tensor], config: TransformerConfig) -> None:
    """Check a Hugging Face state dict's keys and shapes against ``config`` without reading a value:
    ``hf_shapes`` may hold meta tensors (a file's header), and the model is built on the meta device.

    Raises ``CheckpointMismatchError`` naming the key (and both shapes), as ``from_hf_state_dict`` does.
    """
    _check_kind(kind, config)
    theirs = _canonical_keys(kind, hf_shapes)
    pooler = kind == "bert" and "pooler.dense.weight" in theirs
    hf_keymap(kind, config, pooler=pooler).check_layout(theirs, _reference(kind, config, pooler))


def to_hf_state_dict(kind: str, state_dict: Mapping[str, Tensor], config: TransformerConfig) -> dict[str, Tensor]:
    """An attnlab state dict -> the state dict of the Hugging Face class of ``kind`` (see module doc)."""
    pooler = kind == "bert" and "pooler.weight" in state_dict
    return hf_keymap(kind, config, pooler=pooler).to_theirs(state_dict, _reference(kind, config, pooler))


# --- configs -------------------------------------------------------------------------------------

_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise ConfigError(f"hidden activation {name!r} has no exact attnlab equivalent; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _unsupported(c: Mapping[str, Any], key: str, allowed: Any, default: Any) -> None:
    if c.get(key, default) != allowed:
        raise ConfigError(f"{c.get('model_type')} config has {key}={c.get(key)!r}; attnlab supports only {allowed!r}")


def config_from_hf(hf_config: Any, **overrides: Any) -> TransformerConfig:
    """``BertConfig`` / ``GPT2Config`` / ``LlamaConfig`` (or a ``config.json`` dict) -> ``TransformerConfig``.

    ``overrides`` change attnlab-only choices (``fused_qkv``, ``attention_backend``, ``dropout``...).
    A setting attnlab cannot reproduce exactly (relative positions, rope scaling...) is a ``ConfigError``.
    """
    if not isinstance(hf_config, Mapping) and not hasattr(hf_config, "to_dict"):
        raise ConfigError(f"expected a config object or a JSON object of config fields, found {type(hf_config).__name__}")
    c: dict[str, Any] = dict(hf_config) if isinstance(hf_config, Mapping) else hf_config.to_dict()
    model_type = c.get("model_type")
    name = c.get("_name_or_path") or f"hf-{model_type}"
    if model_type == "bert":
        _unsupported(c, "position_embedding_type", "absolute", "absolute")
        _unsupported(c, "is_decoder", False, False)
        fields: dict[str, Any] = dict(
            _ARCHITECTURE["bert"], vocab_size=c["vocab_size"], d_model=c["hidden_size"],
            n_heads=c["num_attention_heads"], n_layers=c["num_hidden_layers"], d_ff=c["intermediate_size"],
            max_len=c["max_position_embeddings"], norm_eps=c.get("layer_norm_eps", 1e-12),
            activation=_activation(c.get("hidden_act", "gelu")), type_vocab_size=c.get("type_vocab_size", 2),
            pad_token_id=c.get("pad_token_id"), dropout=c.get("hidden_dropout_prob", 0.1),
            attn_dropout=c.get("attention_probs_dropout_prob", 0.1), tie_embeddings=c.get("tie_word_embeddings", True),
            fused_qkv=True,
        )
    elif model_type == "gpt2":
        _unsupported(c, "scale_attn_weights", True, True)
        _unsupported(c, "scale_attn_by_inverse_layer_idx", False, False)
        _unsupported(c, "add_cross_attention", False, False)
        fields = dict(
            _ARCHITECTURE["gpt2"], vocab_size=c["vocab_size"], d_model=c["n_embd"], n_heads=c["n_head"],
            n_layers=c["n_layer"], d_ff=c.get("n_inner") or 4 * c["n_embd"], max_len=c["n_positions"],
            norm_eps=c.get("layer_norm_epsilon", 1e-5), activation=_activation(c.get("activation_function", "gelu_new")),
            dropout=c.get("resid_pdrop", 0.1), attn_dropout=c.get("attn_pdrop", 0.1),
            tie_embeddings=c.get("tie_word_embeddings", True), fused_qkv=True,
        )
    elif model_type == "llama":
        rope = c.get("rope_parameters") or {}  # transformers >= 5; earlier: rope_theta / rope_scaling
        scaling = c.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
        if rope_type != "default":
            raise ConfigError(f"llama config uses rope scaling {rope_type!r}; attnlab supports only plain RoPE")
        _unsupported(c, "hidden_act", "silu", "silu")
        if c.get("mlp_bias", False) != c.get("attention_bias", False):
            raise ConfigError("llama config with attention_bias != mlp_bias; attnlab has one bias flag")
        fields = dict(
            _ARCHITECTURE["llama"], vocab_size=c["vocab_size"], d_model=c["hidden_size"],
            n_heads=c["num_attention_heads"], n_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
            head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
            n_layers=c["num_hidden_layers"], d_ff=c["intermediate_size"], max_len=c["max_position_embeddings"],
            rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
            norm_eps=c.get("rms_norm_eps", 1e-6), bias=c.get("attention_bias", False),
            attn_dropout=c.get("attention_dropout", 0.0), dropout=0.0, pad_token_id=c.get("pad_token_id"),
            tie_embeddings=c.get("tie_word_embeddings", False), fused_qkv=True,
        )
    else:
        raise ConfigError(f"unsupported Hugging Face model_type {model_type!r}; supported: bert, gpt2, llama")
    return TransformerConfig.from_dict({**fields, "name": name, **overrides})


_KIND_OF_CLASS = {
    "BertModel": "bert", "BertForMaskedLM": "bert-mlm", "GPT2LMHeadModel": "gpt2", "GPT2Model": "gpt2",
    "LlamaForCausalLM": "llama", "LlamaModel": "llama",
}


def kind_of(hf_model: nn.Module) -> str:
    """The checkpoint kind of a Hugging Face model instance, from its class."""
    cls = type(hf_model).__name__
    if cls not in _KIND_OF_CLASS:
        raise ValueError(f"no weight map for {cls}; supported: {', '.join(_KIND_OF_CLASS)}")
    return _KIND_OF_CLASS[cls]


def load_hf_model(hf_model: nn.Module, **overrides: Any) -> nn.Module:
    """The attnlab twin of a Hugging Face model: config converted, weights copied and checked.

    >>> ours = load_hf_model(transformers.GPT2LMHeadModel.from_pretrained("gpt2"))  # doctest: +SKIP
    """
    kind = kind_of(hf_model)
    config = config_from_hf(hf_model.config, **overrides)
    state = hf_model.state_dict()
    model = model_for(kind, config, pooler=kind == "bert" and getattr(hf_model, "pooler", None) is not None)
    model.load_state_dict(from_hf_state_dict(kind, state, config))
    return model.train(hf_model.training)
