"""Weight-only quantization on small random models: the schemes' error bounds, both paths, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnlab.quantize as q
from attnlab.generate import Sampling, stream_ids
from attnlab.models import DecoderLM, EncoderModel, preset
from attnlab.quantize import QuantizationError, QuantizedLinear, quantize, weight_bytes_per_token
from attnlab.tokenizers import CharTokenizer


def tiny_decoder() -> DecoderLM:
    config = preset("shakespeare-char").replace(d_model=64, n_heads=2, n_layers=2, d_ff=128, max_len=32)
    return DecoderLM(config).eval()


def test_int8_rounds_each_weight_to_within_half_a_step() -> None:
    w = torch.randn(48, 64) * torch.linspace(0.01, 3, 48)[:, None]  # rows of very different size
    qw, scale = q.quantize_int8(w)
    assert qw.dtype == torch.int8 and scale.shape == (48,)
    assert qw.abs().max() <= 127
    err = (qw.float() * scale[:, None] - w).abs()
    assert torch.all(err <= scale[:, None] / 2 + 1e-7)


def test_int8_in_groups_keeps_a_scale_per_group() -> None:
    w = torch.randn(8, 64)
    w[:, :32] *= 100  # one group far larger than the other: per-channel scales would flatten the small one
    qw, scale = q.quantize_int8(w, group_size=32)
    assert scale.shape == (8, 2)
    back = (qw.float().reshape(8, 2, 32) * scale[..., None]).reshape(8, 64)
    assert torch.all((back - w).abs() <= scale.repeat_interleave(32, dim=1) / 2 + 1e-5)
    assert (back - w)[:, 32:].abs().max() < 0.02


def test_int4_rounds_each_weight_to_within_half_a_step_of_its_group() -> None:
    w = torch.randn(16, 64)
    qw, scale, lo = q.quantize_int4(w, group_size=32)
    assert qw.shape == (16, 64) and scale.shape == lo.shape == (16, 2)
    assert qw.min() >= 0 and qw.max() <= 15
    back = (qw.float().reshape(16, 2, 32) * scale[..., None] + lo[..., None]).reshape(16, 64)
    assert torch.all((back - w).abs() <= scale.repeat_interleave(32, dim=1) / 2 + 1e-6)


def test_int4_recovers_weights_already_on_a_4_bit_group_grid_exactly() -> None:
    """Weights dequantized from a Q4_1 file (SmolLM2's) are on this grid: nothing more is lost."""
    grid = torch.randint(0, 16, (8, 64)).float()
    grid[:, ::32] = 0  # every group uses its lowest and highest level
    grid[:, 1::32] = 15
    w = (grid.reshape(8, 2, 32) * torch.rand(8, 2, 1) + torch.randn(8, 2, 1)).reshape(8, 64)
    layer = QuantizedLinear.from_linear(_linear(w), "int4", path="dequantize")
    torch.testing.assert_close(layer.dequantized_weight(), w, atol=1e-6, rtol=0)


def _linear(w: torch.Tensor, bias: bool = False) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


@pytest.mark.parametrize(("scheme", "group_size", "path"), [
    ("int8", 0, "kernel"), ("int8", 0, "dequantize"), ("int8", 16, "dequantize"),  # no kernel for int8 groups
    ("int4", 32, "kernel"), ("int4", 32, "dequantize"),
])
def test_a_quantized_layer_multiplies_by_its_dequantized_weight(scheme: str, group_size: int, path: str) -> None:
    if path == "kernel" and not q.kernel_available(scheme, "cpu", group_size):  # type: ignore[arg-type]
        pytest.fail(f"torch {torch.__version__} has no CPU {scheme} kernel here; the tests expect one on CPU")
    linear = _linear(torch.randn(96, 64), bias=True)
    with torch.no_grad():
        linear.bias.normal_()
    layer = QuantizedLinear.from_linear(linear, scheme, group_size=group_size, path=path)  # type: ignore[arg-type]
    assert layer.quant_path == f"{scheme}-{path}"
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        want = nn.functional.linear(x, layer.dequantized_weight(), linear.bias)
        got = layer(x)
        full = linear(x)
    assert got.shape == (3, 5, 96) and got.dtype == torch.float32
    # the kernel rounds activations and outputs to bfloat16 (2^-8 relative); the dequantize path is float32
    tol = 3e-2 * want.abs().max().item() if path == "kernel" else 1e-4
    torch.testing.assert_close(got, want, atol=tol, rtol=0)
    # and the quantized weights are close to the float ones (a loose, scheme-sized bound)
    assert (got - full).abs().max() < (0.05 if scheme == "int8" else 0.5) * full.abs().max()


def test_quantize_replaces_every_linear_and_leaves_the_original_alone() -> None:
    model = tiny_decoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qm = quantize(model, "int8")
    assert not any(isinstance(m, nn.Linear) for m in qm.modules())
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, QuantizedLinear) for m in qm.modules()) == n_linear
    assert qm.quant_path == "int8-kernel"  # lm_head per channel too where the kernel runs
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert qm.embed.token.weight.dtype == torch.float32  # a lookup reads one row: stays float
    assert weight_bytes_per_token(qm) < 0.4 * weight_bytes_per_token(model)


def test_generation_runs_unchanged_on_a_quantized_model_and_mostly_agrees() -> None:
    model = tiny_decoder()
    qm = quantize(model, "int8", path="dequantize")
    greedy = Sampling(temperature=0)
    ref = [t for t, _ in stream_ids(model, [1, 2, 3], max_new_tokens=8, sampling=greedy)]
    got = [t for t, _ in stream_ids(qm, [1, 2, 3], max_new_tokens=8, sampling=greedy)]
    assert len(got) == 8 and got[0] == ref[0]
    with torch.no_grad():
        ids = torch.randint(0, 65, (2, 16))
        got_logits, want_logits = qm(ids), model(ids)
    assert (got_logits - want_logits).abs().max() < 0.05 * want_logits.abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_compiled_generation_of_a_quantized_model_gives_the_eager_tokens(scheme: str, one_thread) -> None:
    """int8 kernel layers switch to the dequantize formula under compilation (Inductor cannot lower the
    kernel on a fused input); the int4 kernel is called from the compiled graph."""
    qm = quantize(tiny_decoder(), scheme)  # type: ignore[arg-type]
    assert f"{scheme}-kernel" in qm.quant_path
    greedy = Sampling(temperature=0)
    eager = [t for t, _ in stream_ids(qm, [1, 2, 3], max_new_tokens=10, sampling=greedy)]
    compiled = [t for t, _ in stream_ids(qm, [1, 2, 3], max_new_tokens=10, sampling=greedy, compile=True)]
    assert compiled[:5] == eager[:5]  # bf16-rounded eager kernels vs float32 compiled: near-ties may differ late


def test_the_output_layer_takes_its_own_scheme() -> None:
    qm = quantize(tiny_decoder(), "int4", path="dequantize")
    assert (qm.lm_head.scheme, qm.lm_head.group_size) == ("int8", 32)  # on the dequantize path
    assert quantize(tiny_decoder(), "int4").lm_head.group_size == 0  # where the int8 kernel runs: per channel
    assert (qm.stack.blocks[0].ff.up.scheme, qm.stack.blocks[0].ff.up.group_size) == ("int4", 32)
    assert quantize(tiny_decoder(), "int8").stack.blocks[0].ff.up.group_size == 0  # per channel
    assert quantize(tiny_decoder(), "int4", output_scheme="int4", path="dequantize").lm_head.scheme == "int4"


def test_a_quantized_model_refuses_training() -> None:
    qm = quantize(tiny_decoder(), "int8")
    with pytest.raises(QuantizationError, match="inference"):
        qm.train()
    assert not qm.training and not any(m.training for m in qm.modules())
    assert all(not p.requires_grad for p in qm.parameters())
    with pytest.raises(QuantizationError, match="inference"):
        qm.lm_head(torch.randn(1, 64, requires_grad=True))  # a backward would have to pass through it
    qm.eval()  # still allowed
    qm.train(False)


def test_without_the_kernel_it_falls_back_to_the_named_dequantize_path(monkeypatch) -> None:
    monkeypatch.setattr(q, "_KERNEL_PROBES", {})
    monkeypatch.setattr(q, "_probe", lambda *a: False)  # a machine whose torch lacks the kernels
    qm = quantize(tiny_decoder(), "int4")
    assert qm.quant_path == "mixed: int4-dequantize, int8-dequantize"  # lm_head is int8
    assert quantize(tiny_decoder(), "int8").quant_path == "int8-dequantize"
    with pytest.raises(QuantizationError, match="kernel does not run"):
        quantize(tiny_decoder(), "int8", path="kernel")
    monkeypatch.undo()
    assert quantize(tiny_decoder(), "int8", path="kernel").quant_path == "int8-kernel"
    assert quantize(tiny_decoder(), "int8", path="kernel", output_group_size=32).quant_path == (
        "mixed: int8-dequantize, int8-kernel")  # no kernel for groups: that layer says so


def test_bad_requests_are_refused_with_the_reason() -> None:
    model = tiny_decoder()
    with pytest.raises(QuantizationError, match="unknown scheme 'int3'"):
        quantize(model, "int3")  # type: ignore[arg-type]
    with pytest.raises(QuantizationError, match="unknown path"):
        quantize(model, "int8", path="fast")  # type: ignore[arg-type]
    with pytest.raises(QuantizationError, match=r"layer .stack.blocks.0.*multiple of group_size \(48\)"):
        quantize(model, "int4", group_size=48)
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize(quantize(model, "int8"), "int8")
    with pytest.raises(QuantizationError, match=r"no nn\.Linear"):
        quantize(nn.LayerNorm(4), "int8")


def test_many_rows_take_the_dequantized_weight_and_few_the_kernel() -> None:
    layer = QuantizedLinear.from_linear(_linear(torch.randn(32, 64)), "int8")
    assert layer.quant_path == "int8-kernel"
    x = torch.randn(q.KERNEL_MAX_ROWS + 1, 64)
    with torch.no_grad():
        exact = nn.functional.linear(x, layer.dequantized_weight())
        torch.testing.assert_close(layer(x), exact, atol=1e-5, rtol=1e-5)  # float32: not bf16-rounded
        few = layer(x[: q.KERNEL_MAX_ROWS])
    assert not torch.allclose(few, exact[: q.KERNEL_MAX_ROWS], atol=1e-5, rtol=1e-5)  # the bf16 kernel
    torch.testing.assert_close(few, exact[: q.KERNEL_MAX_ROWS], atol=0.05 * exact.abs().max().item(), rtol=0)


def test_an_encoder_quantizes_too() -> None:
    config = preset("bert-tiny", vocab_size=100).replace(dropout=0.0, attn_dropout=0.0)
    model = EncoderModel(config, pooler=True).eval()
    qm = quantize(model, "int8", path="dequantize")
    ids, mask = torch.randint(0, 100, (2, 12)), torch.ones(2, 12, dtype=torch.long)
    with torch.no_grad():
        cos = nn.functional.cosine_similarity(qm(ids, attention_mask=mask), model(ids, attention_mask=mask), dim=-1)
    assert cos.min() > 0.99


def test_load_quantized_from_the_catalogue_is_a_cached_copy() -> None:
    import attnlab

    fp32 = attnlab.load("shakespeare-char")
    qloaded = attnlab.load("shakespeare-char", quantize="int8")
    assert qloaded is attnlab.load("shakespeare-char", quantize="int8")
    assert qloaded.tokenizer is fp32.tokenizer and qloaded.name == fp32.name
    assert isinstance(qloaded.model.lm_head, QuantizedLinear)
    assert isinstance(fp32.model.lm_head, nn.Linear)


def _registered(name: str, seed: int):
    import attnlab.catalog as cat

    def build():
        torch.manual_seed(seed)
        config = preset("shakespeare-char").replace(d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=8)
        model = DecoderLM(config).eval()
        return model, CharTokenizer("abcdefgh .\n")

    cat.register(cat._entry(name, "decoder", "", "0", "test", "", "", lambda: True, build))


def _is_copy_of(qm: nn.Module, model: nn.Module) -> bool:
    """The quantized output layer is the float one to within its own rounding (int8 per channel: half a
    step, 1/254 of a row's largest weight; independent random layers differ by far more)."""
    w = model.lm_head.weight
    return bool(((qm.lm_head.dequantized_weight() - w).abs() <= w.abs().amax(dim=1, keepdim=True) / 250).all())


def test_quantized_copies_live_and_die_with_their_source() -> None:
    """Copies used to be cached under ``id(model)``: a new model at a freed model's address got the old
    model's copy, and no copy was ever released. 200 re-registrations under one name: every copy is
    the current model's, and the cache never holds more than the current one."""
    import attnlab
    import attnlab.catalog as cat

    name = "test-quantized-reregistered"
    try:
        wrong, held = [], set()
        for seed in range(200):
            _registered(name, seed)
            fp32 = attnlab.load(name)
            qloaded = attnlab.load(name, quantize="int8")
            if not _is_copy_of(qloaded.model, fp32.model):
                wrong.append(seed)
            held.add(q.cached_quantized_copies())
            del fp32, qloaded  # the old model is freed: its address can be reused by the next one
        fp32 = attnlab.load(name)
        assert wrong == []  # no registration got another model's copy
        before = q.cached_quantized_copies() - 1
        assert held == {before + 1}  # the cache never held more than the current model's copy
        # unload releases the copy though the caller still holds the float model
        assert cat.unload(name)
        assert q.cached_quantized_copies() == before
        assert not q.release_quantized(fp32.model)
    finally:
        cat.unload(name)
        cat._REGISTRY.pop(name, None)


def test_a_quantized_copy_follows_its_sources_weights_and_is_freed_with_it() -> None:
    import gc
    import weakref

    import attnlab.catalog as cat

    torch.manual_seed(0)
    model = tiny_decoder()
    loaded = cat.LoadedModel(name="m", model=model, tokenizer=CharTokenizer("ab"), config=model.config, info=None)  # type: ignore[arg-type]
    first = q.quantized_copy(loaded, "int8")
    assert q.quantized_copy(loaded, "int8") is first and _is_copy_of(first.model, model)
    with torch.no_grad():  # weights changed in place: the old copy no longer fits
        model.lm_head.weight.mul_(-1)
    second = q.quantized_copy(loaded, "int8")
    assert second.model is not first.model and _is_copy_of(second.model, model)
    copy_alive, source_alive = weakref.ref(second.model), weakref.ref(model)
    n = q.cached_quantized_copies()
    del model, loaded, first, second
    gc.collect()
    assert source_alive() is None and copy_alive() is None
    assert q.cached_quantized_copies() == n - 1


def test_cli_generate_quantized() -> None:
    from typer.testing import CliRunner

    from attnlab.cli import app

    args = ["generate", "ROMEO:", "--model", "shakespeare-char", "-n", "20", "--temperature", "0"]
    plain = CliRunner().invoke(app, args)
    quant = CliRunner().invoke(app, [*args, "--quantize", "int8"])
    assert plain.exit_code == 0 and quant.exit_code == 0, quant.output
    assert quant.stdout.startswith("ROMEO:") and len(quant.stdout) > len("ROMEO:") + 10
    bad = CliRunner().invoke(app, [*args, "--quantize", "int2"])
    assert bad.exit_code == 2 and "--quantize must be int8 or int4" in bad.output  # a usage error


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_saving_a_quantized_model_is_refused_and_the_float_model_round_trips(scheme: str, tmp_path) -> None:
    """A checkpoint of a quantized model used to be written and then refused by ``load_checkpoint``
    (``lm_head.qweight`` unexpected): saving is refused, a checkpoint already there survives, and the
    route the message gives (save the float model, quantize after loading) gives the same logits."""
    from attnlab.weights.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = tiny_decoder()
    tokenizer = CharTokenizer("".join(chr(c) for c in range(32, 32 + model.config.vocab_size)))
    save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    before = sorted((p.name, p.stat().st_size) for p in (tmp_path / "ckpt").iterdir())
    qm = quantize(model, scheme)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match=r"cannot save a quantized model .*Save the float model"):
        save_checkpoint(tmp_path / "ckpt", qm, tokenizer)
    with pytest.raises(CheckpointError, match="cannot save a quantized model"):
        save_checkpoint(tmp_path / "new", qm, tokenizer)
    assert not (tmp_path / "new").exists()
    assert sorted((p.name, p.stat().st_size) for p in (tmp_path / "ckpt").iterdir()) == before
    again = quantize(load_checkpoint(tmp_path / "ckpt").model, scheme)  # type: ignore[arg-type]
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids), qm(ids), rtol=0, atol=0)
