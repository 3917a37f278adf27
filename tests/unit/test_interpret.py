"""attnlab.interpret against its definitions, on tiny random models of every family.

Each tool is held to what it must add up to (Elhage et al. 2021; Sundararajan et al. 2017): the
logit lens's last read-out is the logits, attributions sum to the logit or score they split,
integrated gradients are complete, a patch from the same run or an ablation of nothing changes
nothing. TransformerLens and Captum comparisons are in tests/integration/test_interpret_reference.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from attnlab import interpret
from attnlab.inspect import hooks_attached, math_backend, run_with_cache
from attnlab.interpret import _names, metrics
from attnlab.models import DecoderLM, EncoderDecoder, EncoderForMaskedLM, EncoderModel, TransformerConfig

VOCAB = 53
pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial norms and biases (fresh ones are 1 and 0, which would hide a missed term)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def decoder(**kw) -> DecoderLM:
    base = dict(family="decoder", vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=3, d_ff=48, max_len=40)
    return _randomize(DecoderLM(TransformerConfig(**{**base, **kw})))


def llama_like() -> DecoderLM:
    return decoder(positions="rotary", norm="rmsnorm", activation="swiglu", n_kv_heads=2, bias=False,
                   tie_embeddings=False)


def encoder_mlm(**kw) -> EncoderForMaskedLM:
    base = dict(family="encoder", vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2, d_ff=48, max_len=40,
                type_vocab_size=2)
    return _randomize(EncoderForMaskedLM(TransformerConfig(**{**base, **kw})))


def bert_like() -> EncoderForMaskedLM:
    return encoder_mlm(norm_placement="post", embedding_norm=True)


def seq2seq(**kw) -> EncoderDecoder:
    base = dict(family="encoder-decoder", vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2, n_decoder_layers=2,
                d_ff=48, max_len=40, positions="sinusoidal")
    return _randomize(EncoderDecoder(TransformerConfig(**{**base, **kw})))


def inputs_for(model: torch.nn.Module, seed: int = 0, batch: int = 1, seq: int = 9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    if isinstance(model, EncoderDecoder):
        return (ids, torch.randint(0, VOCAB, (batch, seq - 2), generator=g))
    return ids


def run(model, inputs) -> torch.Tensor:
    """The clean output, with the attention backend the tools use (``math``; ``sdpa`` differs by ~1e-6)."""
    with torch.no_grad(), math_backend(model):
        return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


LM_MODELS = {
    "gpt2-like": lambda: decoder(),
    "llama-like": llama_like,
    "encoder-mlm-prenorm": lambda: encoder_mlm(),
    "bert-like": bert_like,
    "seq2seq-prenorm": lambda: seq2seq(),
    "seq2seq-2017": lambda: seq2seq(norm_placement="post", scale_embeddings=True),
}
WITH_VOCAB_HEAD = list(LM_MODELS)


@pytest.fixture(params=list(LM_MODELS))
def lm(request):
    return request.param, LM_MODELS[request.param]()


# ---------------------------------------------------------------- logit lens


def test_logit_lens_last_layer_is_the_logits(lm) -> None:
    _, model = lm
    x = inputs_for(model, batch=2)
    lens = interpret.logit_lens(model, x, target=5, k=3)
    n = model.config.n_decoder_layers if isinstance(model, EncoderDecoder) else model.config.n_layers
    assert lens.labels == ["embed"] + [f"block {i}" for i in range(n)]
    torch.testing.assert_close(lens.logits[-1], run(model, x), atol=1e-5, rtol=1e-5)
    assert lens.top_ids.shape[:3] == lens.logits.shape[:3] and lens.top_ids.shape[-1] == 3
    # rank 0 exactly where the target is the arg-max
    top1 = lens.logits.argmax(-1) == 5
    assert torch.equal(lens.target_rank == 0, top1)
    json.dumps(lens.to_dict())


def test_logit_lens_needs_a_vocabulary_head() -> None:
    model = _randomize(EncoderModel(TransformerConfig(family="encoder", vocab_size=VOCAB, d_model=32, n_heads=4,
                                                      n_layers=2, d_ff=48, max_len=40)))
    with pytest.raises(ValueError, match="vocabulary head"):
        interpret.logit_lens(model, inputs_for(model))


# ---------------------------------------------------------------- ablation


def test_ablating_no_head_changes_nothing(lm) -> None:
    _, model = lm
    x = inputs_for(model, batch=2)
    for method in ("zero", "mean"):
        assert torch.equal(interpret.ablate(model, x, [], method=method), run(model, x))


def test_zero_ablation_is_zero_z_and_head_effects_match_one_at_a_time(lm) -> None:
    _, model = lm
    x = inputs_for(model, batch=2)
    metric = metrics.token_logprob(7)
    effects = interpret.head_effects(model, x, metric)
    clean = float(metric(run(model, x)).mean())
    assert effects.baseline == pytest.approx(clean, abs=1e-6)
    for layer, head in [(0, 1), (1, 3)]:
        alone = float(metric(interpret.ablate(model, x, [(layer, head)])).mean())
        assert effects.effects[layer, head].item() == pytest.approx(alone - clean, abs=1e-5)
    assert effects.effects.abs().max() > 1e-4  # some head matters
    json.dumps(effects.to_dict())


def test_mean_ablation_replaces_z_by_its_mean() -> None:
    model = decoder()
    x = inputs_for(model, batch=2)
    name = _names.block(model, "decoder", 1, "attn.hook_z")
    _, cache = run_with_cache(model, x, names=name)
    mean = cache[name][:, 2].mean(dim=(0, 1))  # over batch and positions

    def by_hand(_m, _i, z):
        z = z.clone()
        z[:, 2] = mean
        return z

    with torch.no_grad(), math_backend(model), hooks_attached(model, {name: by_hand}):
        expected = model(x)
    torch.testing.assert_close(interpret.ablate(model, x, [(1, 2)], method="mean"), expected, atol=1e-5, rtol=1e-5)


def test_ablation_errors() -> None:
    model = decoder()
    x = inputs_for(model)
    with pytest.raises(IndexError, match="layer 3"):
        interpret.ablate(model, x, [(3, 0)])
    with pytest.raises(IndexError, match="head 4"):
        interpret.ablate(model, x, [(0, 4)])
    with pytest.raises(ValueError, match="method"):
        interpret.ablate(model, x, [(0, 0)], method="resample")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cross-attention"):
        interpret.ablate(model, x, [(0, 0)], cross=True)
    with pytest.raises(TypeError, match="tensor of token ids"):
        interpret.ablate(model, (x, x), [])


def test_cross_attention_heads_of_a_seq2seq_can_be_removed() -> None:
    model = seq2seq()
    x = inputs_for(model)
    effects = interpret.head_effects(model, x, metrics.token_logprob(3), cross=True)
    assert effects.effects.shape == (2, 4) and effects.effects.abs().max() > 1e-5
    enc = interpret.head_effects(model, x, metrics.token_logprob(3), stack="encoder")
    assert enc.stack == "encoder" and enc.effects.abs().max() > 1e-5


# ---------------------------------------------------------------- patching


@pytest.mark.parametrize("where", ["resid", "attn", "mlp", "head"])
def test_patching_a_run_into_itself_changes_nothing(lm, where: str) -> None:
    _, model = lm
    x = inputs_for(model, batch=2)
    result = interpret.patch(model, x, x, metrics.token_logprob(4), where=where)
    assert result.baseline == pytest.approx(result.source, abs=1e-5)
    torch.testing.assert_close(result.values, torch.full_like(result.values, result.baseline), atol=1e-5, rtol=0)


def test_patching_every_position_before_the_last_block_gives_the_corrupted_output(lm) -> None:
    """Run clean, copy the corrupted run's residual stream into every position at the last block's
    input: from there on the model sees only the corrupted stream, so its output is the corrupted one.
    (``patch`` patches one position at a time; this is the same hook on all positions at once.)"""
    _, model = lm
    clean, corrupted = inputs_for(model, seed=1), inputs_for(model, seed=2)
    if isinstance(clean, tuple):  # the decoder's last block also reads the encoder: keep one source
        corrupted = (clean[0], corrupted[1])
    from attnlab.interpret._model import ModelView

    view = ModelView(model)
    sv = view.stack(None)
    name = f"{sv.name}.blocks.{sv.n_layers - 1}.hook_resid_pre"
    _, cache = view.cache(corrupted, [name])

    with torch.no_grad(), hooks_attached(model, {_names.resolve(model, name): lambda _m, _i, _x: cache[name]}):
        patched = run(model, clean)
    torch.testing.assert_close(patched, run(model, corrupted), atol=1e-5, rtol=1e-5)
    # patch() itself, on an output sequence of one position (so one position is every position):
    # its last layer's row is the corrupted run's metric, in both directions.
    if isinstance(clean, tuple):
        clean1, corrupted1 = (clean[0], clean[1][:, :1]), (corrupted[0], corrupted[1][:, :1])
    else:
        clean1, corrupted1 = clean[:, :1], corrupted[:, :1]
    res = interpret.patch(model, clean1, corrupted1, metrics.token_logprob(4), direction="noise")
    assert res.values[-1, 0].item() == pytest.approx(res.source, abs=1e-5)


def test_patch_errors() -> None:
    model = decoder()
    with pytest.raises(ValueError, match="same shape"):
        interpret.patch(model, torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long),
                        metrics.token_logprob(0))
    with pytest.raises(ValueError, match="where"):
        interpret.patch(model, inputs_for(model), inputs_for(model), metrics.token_logprob(0), where="q")  # type: ignore[arg-type]


# ---------------------------------------------------------------- direct logit attribution


@pytest.mark.parametrize("name", WITH_VOCAB_HEAD)
def test_direct_logit_attributions_sum_to_the_logit_minus_bias_terms(name: str) -> None:
    model = LM_MODELS[name]()
    x = inputs_for(model)
    for position in (-1, 2):
        dla = interpret.direct_logit_attribution(model, x, 11, position=position)
        logits = run(model, x)
        assert dla.logit == pytest.approx(float(logits[0, position, 11]), abs=1e-6)
        assert float(dla.contributions.sum()) == pytest.approx(dla.logit - dla.bias_term, abs=1e-4)
    n_heads = model.config.n_heads * (model.config.n_decoder_layers or model.config.n_layers)
    assert sum(lbl.startswith("L") and "H" in lbl for lbl in dla.labels) == n_heads
    json.dumps(dla.to_dict())


def test_direct_logit_attribution_components_sum_to_the_residual_stream() -> None:
    from attnlab.interpret._model import ModelView, component_names, residual_components

    for model in (decoder(), llama_like(), seq2seq(), encoder_mlm(), bert_like(),
                  seq2seq(norm_placement="post", scale_embeddings=True)):
        view = ModelView(model)
        x = inputs_for(model)
        for sv in view.stacks.values():
            for upto in range(sv.n_layers + 1):
                point = (f"{sv.name}.blocks.{upto}.hook_resid_pre" if upto < sv.n_layers
                         else f"{sv.name}.blocks.{sv.n_layers - 1}.hook_resid_post")
                _, cache = view.cache(x, [*component_names(view, sv, upto), point])
                labels, comps = residual_components(view, sv, cache, upto)
                assert ("norm offsets" in labels) == (model.config.norm_placement == "post")
                torch.testing.assert_close(comps.sum(0).to(cache[point].dtype), cache[point], atol=1e-5, rtol=1e-5)


def test_direct_logit_attribution_refuses_a_model_without_logits() -> None:
    model = _randomize(EncoderModel(TransformerConfig(family="encoder", vocab_size=VOCAB, d_model=32, n_heads=4,
                                                      n_layers=2, d_ff=48, max_len=40, norm_placement="post")))
    with pytest.raises(ValueError, match="no vocabulary head"):
        interpret.direct_logit_attribution(model, inputs_for(model), 3)


# ---------------------------------------------------------------- score decomposition


@pytest.mark.parametrize("name", list(LM_MODELS))
def test_score_decomposition_sums_to_the_recorded_score(name: str) -> None:
    """Pre- and post-norm (the norms' statistics read off the forward pass), self- and cross-attention."""
    model = LM_MODELS[name]()
    x = inputs_for(model)
    view_stacks = ["encoder", "decoder"] if isinstance(model, EncoderDecoder) else [None]
    for stack in view_stacks:
        for cross in ([False, True] if stack == "decoder" else [False]):
            for layer, head, query, key in [(0, 0, 5, 5), (1, 3, 6, 2), (1, 1, 4, 0)]:
                dec = interpret.score_decomposition(model, x, layer, head, query, key, stack=stack, cross=cross)
                from attnlab.interpret._model import ModelView
                view = ModelView(model)
                sv = view.stack(stack)
                kind = "cross_attn" if cross else "attn"
                _, cache = view.cache(x, [f"{sv.name}.blocks.{layer}.{kind}.hook_scores"])
                recorded = float(next(iter(cache.values()))[0, head, query, key])
                assert dec.score == recorded
                assert float(dec.terms.sum()) == pytest.approx(recorded, abs=1e-5)
                assert dec.terms.shape == (len(dec.query_labels), len(dec.key_labels))
                assert dec.query_labels[-1] == "q/k bias"
                assert all(label.startswith("enc ") for label in dec.key_labels[:-1]) == cross
    assert len(dec.top_pairs(3)) == 3
    json.dumps(dec.to_dict())


def test_score_decomposition_errors() -> None:
    model = decoder()
    x = inputs_for(model)
    with pytest.raises(ValueError, match="masked"):
        interpret.score_decomposition(model, x, 0, 0, 2, 5)  # causal: 2 cannot see 5
    with pytest.raises(IndexError):
        interpret.score_decomposition(model, x, 0, 0, 2, 50)
    with pytest.raises(ValueError, match="batch size 1"):
        interpret.score_decomposition(model, inputs_for(model, batch=2), 0, 0, 2, 1)
    with pytest.raises(ValueError, match="no cross-attention"):
        interpret.score_decomposition(model, x, 0, 0, 2, 1, cross=True)


# ---------------------------------------------------------------- saliency


@pytest.mark.parametrize("name", list(LM_MODELS))
def test_integrated_gradients_are_complete(name: str) -> None:
    """Sundararajan et al. 2017, axiom of completeness: within 1% at the documented 50 steps."""
    model = LM_MODELS[name]()
    x = inputs_for(model)
    # a Llama-style model (no absolute positions, no biases) needs a token baseline (see saliency's docstring)
    sal = interpret.saliency(model, x, 9, baseline=0 if name == "llama-like" else None)
    expected = sal.value - sal.baseline_value
    assert sal.steps == 50
    assert abs(sal.completeness_gap) <= 0.01 * abs(expected) + 1e-6
    seq = (x[0] if isinstance(x, tuple) else x).shape[1]
    assert sal.scores.shape == (seq,)
    assert sal.value == pytest.approx(float(run(model, x)[0, -1, 9]), abs=1e-5)
    json.dumps(sal.to_dict())


def test_saliency_works_inside_no_grad() -> None:
    model = decoder()
    x = inputs_for(model)
    free = interpret.saliency(model, x, 9, steps=8)
    with torch.no_grad():
        inside = interpret.saliency(model, x, 9, steps=8)
    assert torch.equal(free.scores, inside.scores)


def test_input_x_gradient_is_embedding_times_gradient() -> None:
    model = decoder()
    x = inputs_for(model)
    sal = interpret.saliency(model, x, 9, method="input_x_gradient")
    emb = model.embed.token.weight[x[0]].detach().clone().requires_grad_(True)
    pos = model.embed.positions(torch.arange(x.shape[1]))
    # by hand: the model's layers on embeddings we own
    h = model.stack((emb + pos)[None], is_causal=True)
    logit = model.lm_head(h)[0, -1, 9]
    (grad,) = torch.autograd.grad(logit, emb)
    torch.testing.assert_close(sal.scores, (emb * grad).sum(-1).detach().double(), atol=1e-5, rtol=1e-4)


def test_saliency_of_an_encoder_with_a_metric() -> None:
    model = _randomize(EncoderModel(TransformerConfig(family="encoder", vocab_size=VOCAB, d_model=32, n_heads=4,
                                                      n_layers=2, d_ff=48, max_len=40)))
    sal = interpret.saliency(model, inputs_for(model), lambda hidden: hidden[:, 0].sum(-1), steps=64)
    assert abs(sal.completeness_gap) <= 0.01 * abs(sal.value - sal.baseline_value) + 1e-6


# ---------------------------------------------------------------- head detection


def test_detect_heads_scores_definitions() -> None:
    n = 5
    weights = torch.zeros(1, 3, 2 * n, 2 * n)
    q = torch.arange(2 * n)
    weights[0, 0, q, (q - n + 1).clamp(min=0)] = 1  # induction
    weights[0, 1, q, (q - n).clamp(min=0)] = 1  # duplicate
    weights[0, 2, q, (q - 1).clamp(min=0)] = 1  # previous
    s = interpret.detect.pattern_scores(weights, n)
    assert s["induction"].tolist() == [1, 0, 0]
    assert s["duplicate-token"].tolist() == [0, 1, 0]
    assert s["previous-token"].tolist() == [0, 0, 1]


def test_detect_heads_runs_on_every_family(lm) -> None:
    _, model = lm
    det = interpret.detect_heads(model, seq_len=6, batch=2)
    sv_layers = model.config.n_decoder_layers if isinstance(model, EncoderDecoder) else model.config.n_layers
    assert det.scores["induction"].shape == (sv_layers, 4)
    assert ((det.scores["induction"] >= 0) & (det.scores["induction"] <= 1)).all()
    json.dumps(det.to_dict())
    with pytest.raises(ValueError, match="seq_len"):
        interpret.detect_heads(model, seq_len=21)
