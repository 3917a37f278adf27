"""One rule for a model's train/eval state (issue 22, item 1): every interpretability tool, every
``attnlab.show`` view and every decoding loop runs the model in eval mode and gives it back with every
submodule in the mode it found it.

The model has dropout on everything and is left in training mode with one block switched to eval
(mixed modes), as a user mid-training might leave it. Each tool must then give exactly what it gives
on an eval-mode copy, and afterwards every submodule's ``training`` flag must be unchanged.
"""

from __future__ import annotations

import copy

import pytest
import torch

from attnlab import generate, interpret, show
from attnlab.interpret import metrics
from attnlab.models import DecoderLM, EncoderDecoder, TransformerConfig, eval_mode
from attnlab.tokenizers import CharTokenizer

VOCAB = 23
pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**kw) -> TransformerConfig:
    base = dict(family="decoder", vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=3, d_ff=48, max_len=32,
                dropout=0.3, attn_dropout=0.3)
    return TransformerConfig(**{**base, **kw})


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def training_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in training mode with its second block in eval mode: mixed modes."""
    model.train()
    model.stack.blocks[1].eval() if hasattr(model, "stack") else model.decoder.blocks[1].eval()
    return model


def modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.fixture
def pair() -> tuple[DecoderLM, DecoderLM]:
    """(the model left in training, an eval-mode copy): float32, one thread."""
    model = training_model(_randomize(DecoderLM(_config())))
    reference = copy.deepcopy(model).eval()
    return model, reference


IDS = torch.tensor([[1, 5, 7, 2, 9, 5, 7, 3, 11, 4]])


def _assert_same(a, b) -> None:
    """Exactly equal results: tensors bit for bit, dataclasses field by field."""
    if isinstance(a, torch.Tensor):  # NaN where a score has no case (corpus roles): equal to NaN
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            _assert_same(getattr(a, name), getattr(b, name))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    else:
        assert a == b


METRIC = metrics.token_logprob(3)
_CHARS = CharTokenizer([chr(ord("a") + i) for i in range(VOCAB - 3)] + [" ", ".", ","])
CORPUS = ["abc de fa", "ba ab cd, ef.", "dd ee f"]
#: (case, public tool, call): every public tool of attnlab.interpret that runs a model.
TOOLS = [
    ("ablate", "ablate", lambda m: interpret.ablate(m, IDS, [(0, 1), (2, 3)])),
    ("ablate-mean", "ablate", lambda m: interpret.ablate(m, IDS, [(1, 0)], method="mean")),
    ("head_effects", "head_effects", lambda m: interpret.head_effects(m, IDS, METRIC)),
    ("estimate_head_effects", "estimate_head_effects", lambda m: interpret.estimate_head_effects(m, IDS, METRIC)),
    ("ablate_from", "ablate_from",
     lambda m: interpret.ablate_from(m, IDS, 1, 2, list(interpret.accumulated_residual(m, IDS)[1][:-1]))),
    ("patch-resid", "patch", lambda m: interpret.patch(m, IDS, IDS.flip(1), METRIC)),
    ("patch-head", "patch", lambda m: interpret.patch(m, IDS, IDS.flip(1), METRIC, where="head")),
    ("logit_lens", "logit_lens", lambda m: interpret.logit_lens(m, IDS, target=3)),
    ("accumulated_residual", "accumulated_residual", lambda m: interpret.accumulated_residual(m, IDS)),
    ("dla", "direct_logit_attribution", lambda m: interpret.direct_logit_attribution(m, IDS, 3)),
    ("score_decomposition", "score_decomposition", lambda m: interpret.score_decomposition(m, IDS, 1, 2, 6, 3)),
    ("saliency-ig", "saliency", lambda m: interpret.saliency(m, IDS, 3, steps=20)),
    ("saliency-ixg", "saliency", lambda m: interpret.saliency(m, IDS, 3, method="input_x_gradient")),
    ("detect_heads", "detect_heads", lambda m: interpret.detect_heads(m, seq_len=8)),
    ("attribution_patch", "attribution_patch", lambda m: interpret.attribution_patch(m, IDS, IDS.flip(1), METRIC)),
    ("scan_corpus", "scan_corpus", lambda m: interpret.scan_corpus(m, _CHARS, CORPUS, cache=False, progress=False)),
    ("head_contexts", "head_contexts", lambda m: interpret.head_contexts(m, _CHARS, CORPUS, 1, 2, cache=False, progress=False)),
    ("corpus_roles", "corpus_roles", lambda m: interpret.corpus_roles(m, _CHARS, CORPUS, cache=False, progress=False)),
]


def test_every_public_tool_that_runs_a_model_is_tested_here() -> None:
    functions = {name for name in interpret.__all__
                 if callable(getattr(interpret, name)) and not isinstance(getattr(interpret, name), type)}
    # agreement and effects_agreement compare two results and run no model; nor do specificity (weights in),
    # cached_scan (a file read) and accumulated_names (hook names)
    assert functions - {"Metric", "Inputs", "repeated_random_tokens", "agreement", "effects_agreement", "specificity",
                        "cached_scan", "accumulated_names"} == \
        {tool for _, tool, _ in TOOLS}


@pytest.mark.parametrize("call", [c for _, _, c in TOOLS], ids=[case for case, _, _ in TOOLS])
def test_a_tool_on_a_training_model_gives_the_eval_result_and_restores_every_mode(pair, call) -> None:
    model, reference = pair
    before = modes(model)
    result = call(model)
    assert modes(model) == before  # every submodule as it was, the mixed modes included
    _assert_same(result, call(reference))


def test_patching_a_prompt_with_itself_has_no_effect_in_training_mode(pair) -> None:
    model, _ = pair
    for where in ("resid", "attn", "mlp", "head"):
        result = interpret.patch(model, IDS, IDS, METRIC, where=where)
        assert result.baseline == result.source  # one run each: the same numbers
        # the patched runs are batched copies: equal up to float32 rounding (dropout on: 0.1 nats off)
        torch.testing.assert_close(result.values, torch.full_like(result.values, result.baseline), atol=1e-5, rtol=0)
    assert model.training and not model.stack.blocks[1].training


def test_integrated_gradients_are_complete_on_a_training_model(pair) -> None:
    model, _ = pair
    sal = interpret.saliency(model, IDS, 3, steps=50)
    assert abs(sal.completeness_gap) <= 0.01 * abs(sal.value - sal.baseline_value)


def test_an_encoder_decoder_in_training_mode() -> None:
    config = _config(family="encoder-decoder", n_layers=2, n_decoder_layers=2, positions="sinusoidal")
    model = training_model(_randomize(EncoderDecoder(config)))
    reference = copy.deepcopy(model).eval()
    before = modes(model)
    src, tgt = IDS, IDS[:, :6]
    for tool in (lambda m: interpret.patch(m, (src, tgt), (src.flip(1), tgt), METRIC),
                 lambda m: interpret.logit_lens(m, (src, tgt)),
                 lambda m: interpret.saliency(m, (src, tgt), 3, steps=8)):
        _assert_same(tool(model), tool(reference))
        assert modes(model) == before
    out = generate.translate_ids(model, [1, 5, 7], bos_id=1, eos_id=2, max_new_tokens=5, beam_size=2)
    assert out == generate.translate_ids(reference, [1, 5, 7], bos_id=1, eos_id=2, max_new_tokens=5, beam_size=2)
    assert modes(model) == before


def test_decoding_restores_every_submodules_mode(pair) -> None:
    model, reference = pair
    before = modes(model)
    greedy = generate.Sampling(temperature=0)
    tokens = [t for t, _ in generate.stream_ids(model, [1, 5, 7], max_new_tokens=6, sampling=greedy)]
    assert tokens == [t for t, _ in generate.stream_ids(reference, [1, 5, 7], max_new_tokens=6, sampling=greedy)]
    assert modes(model) == before
    batch = generate.generate_batch_ids(model, [[1, 5, 7], [2]], max_new_tokens=4, sampling=greedy)
    assert batch == generate.generate_batch_ids(reference, [[1, 5, 7], [2]], max_new_tokens=4, sampling=greedy)
    assert modes(model) == before


def test_eval_mode_restores_modes_when_the_block_raises(pair) -> None:
    model, _ = pair
    before = modes(model)
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not any(modes(model).values())
        raise RuntimeError("inside")
    assert modes(model) == before


CHARS = "".join(chr(ord("a") + i) for i in range(VOCAB - 3)) + " .,"
VIEWS = {
    "attention": lambda m, tok: show.attention(m, "abc de fa", tokenizer=tok, layer=1, head=2),
    "head_finder": lambda m, tok: show.head_finder(m, "abc de fa", tokenizer=tok),
    "logit_lens": lambda m, tok: show.logit_lens(m, "abc de fa", tokenizer=tok, target=3),
    "head_effects": lambda m, tok: show.head_effects(m, "abc de fa", tokenizer=tok),
    "saliency": lambda m, tok: show.saliency(m, "abc de fa", tokenizer=tok),
    "head_contexts": lambda m, tok: show.head_contexts(m, 1, 2, corpus=CORPUS, tokenizer=tok, cache=False, progress=False),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_a_show_view_draws_the_eval_numbers_and_gives_the_model_back_in_training(pair, view: str) -> None:
    model, reference = pair
    tokenizer = CharTokenizer(list(CHARS))
    before = modes(model)
    drawn = VIEWS[view](model, tokenizer)
    assert modes(model) == before  # old code: every view left the model in eval mode
    assert drawn.data == VIEWS[view](reference, tokenizer).data
