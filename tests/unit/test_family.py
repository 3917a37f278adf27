"""One surface for every family (``attnlab.models.FamilyModel``): the tools above ``models`` ask the
model, and what it answers is what its own forward pass computes."""

from __future__ import annotations

import pytest
import torch

from attnlab.inspect import run_with_cache
from attnlab.models import (
    DecoderLM,
    EncoderDecoder,
    EncoderForClassification,
    EncoderForMaskedLM,
    EncoderModel,
    FamilyModel,
    TransformerConfig,
)
from attnlab.nn import FeedForward, activate

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = 31
BASE = dict(vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=2, d_ff=24, max_len=16, dropout=0.0)


def _build(kind: str, **kw) -> FamilyModel:
    family = {"decoder": "decoder", "seq2seq": "encoder-decoder"}.get(kind, "encoder")
    config = TransformerConfig(**{**BASE, "family": family, **kw})
    cls = {"decoder": DecoderLM, "seq2seq": EncoderDecoder, "mlm": EncoderForMaskedLM, "body": EncoderModel,
           "classifier": EncoderForClassification}[kind]
    model = cls(config.replace(n_classes=3) if kind == "classifier" else config)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms and biases
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _args(model: FamilyModel) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    return (ids, ids[:, :5]) if model.config.family == "encoder-decoder" else (ids,)


SURFACE = {  # kind -> (stacks, output stack, vocabulary head, generates)
    "decoder": (["decoder"], "decoder", True, True),
    "seq2seq": (["encoder", "decoder"], "decoder", True, False),
    "mlm": (["encoder"], "encoder", True, False),
    "classifier": (["encoder"], "encoder", False, False),
    "body": (["encoder"], "encoder", False, False),
}


@pytest.mark.parametrize("kind", SURFACE)
def test_every_family_answers_the_same_questions(kind: str) -> None:
    model = _build(kind)
    stacks, output, vocab, generates = SURFACE[kind]
    assert isinstance(model, FamilyModel)
    assert list(model.stacks()) == stacks and model.output_stack == output
    assert model.has_vocab_head is vocab and model.can_generate is generates
    sv = model.stack_view()
    assert sv.name == output and sv.n_layers == 2 and sv.n_heads == 2 and sv.causal == (output == "decoder")
    with pytest.raises(IndexError, match="layer 2 out of range"):
        sv.check_head(2, 0)
    with pytest.raises(ValueError, match="no 'nowhere' stack"):
        model.stack_view("nowhere")


@pytest.mark.parametrize("kind", ["decoder", "seq2seq", "mlm", "classifier"])
def test_the_head_is_the_forward_passs_own_head(kind: str) -> None:
    """``head`` on the recorded final hidden states gives exactly the recorded logits (BERT's MLM transform
    included), and ``readout`` on the stream before the final norm does too."""
    model = _build(kind)
    final, logits = model.readout_hooks
    out, cache = run_with_cache(model, *_args(model), names=[final, logits])
    torch.testing.assert_close(model.head(cache[final]), cache[logits], rtol=0, atol=0)
    torch.testing.assert_close(cache[logits], out, rtol=0, atol=0)
    if model.has_vocab_head:
        last = f"{model.output_stack}.blocks.1.hook_resid_post"
        _, pre = run_with_cache(model, *_args(model), names=[last])
        torch.testing.assert_close(model.readout(pre[last]), out, rtol=0, atol=0)


def test_an_encoder_body_has_no_head_and_no_decoding() -> None:
    model = _build("body")
    assert model.readout_hooks == ("encoder.hook_resid_final",)
    with pytest.raises(ValueError, match="no output head"):
        model.head(torch.zeros(1, 2, 16))
    with pytest.raises(ValueError, match="no vocabulary head"):
        model.readout(torch.zeros(1, 2, 16))
    with pytest.raises(TypeError, match="does not decode"):
        model.new_cache()
    assert _build("seq2seq").new_cache(8).max_len == 8


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_one_activation_for_the_feed_forward_layer_and_the_mlm_head(activation: str) -> None:
    ff = FeedForward(4, 6, activation=activation)  # type: ignore[arg-type]
    x = torch.randn(3, 4)
    recorded = {}
    ff.hook_hidden.register_forward_hook(lambda _m, _i, out: recorded.setdefault("h", out))
    ff(x)
    torch.testing.assert_close(recorded["h"], activate(ff.up(x), activation), rtol=0, atol=0)
    mlm = _build("mlm", activation=activation)
    h = torch.randn(2, 3, 16)
    want = mlm.lm_head(mlm.transform_norm(activate(mlm.transform(h), activation)))
    torch.testing.assert_close(mlm.head(h), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a function of one tensor"):
        activate(x, "swiglu")  # type: ignore[arg-type]
