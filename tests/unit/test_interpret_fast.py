"""Batched interventions started at their layer (``attnlab.interpret._fast``) equal the one-at-a-time
definitions: every head removed alone by ``ablate``, every activation patched alone by a hook on a
whole-model run, on tiny random models of every family, float32, one thread."""

from __future__ import annotations

import pytest
import torch

from attnlab import interpret
from attnlab.inspect import hooks_attached, math_backend
from attnlab.interpret import _fast, _names, metrics
from attnlab.interpret._model import ModelView
from attnlab.models import EncoderDecoder
from tests.unit.test_interpret import LM_MODELS, inputs_for, run

pytestmark = pytest.mark.usefixtures("one_thread")
close = dict(atol=1e-5, rtol=1e-5)


def _stacks(model) -> list[str | None]:
    return ["encoder", "decoder"] if isinstance(model, EncoderDecoder) else [None]


def _one_at_a_time_effects(model, x, metric, method, stack, cross) -> torch.Tensor:
    sv = ModelView(model).stack(stack)
    clean = float(metric(run(model, x)).mean())
    return torch.tensor([[float(metric(interpret.ablate(model, x, [(layer, head)], method=method, stack=stack,
                                                         cross=cross)).mean()) - clean
                          for head in range(sv.n_heads)] for layer in range(sv.n_layers)])


@pytest.mark.parametrize("name", list(LM_MODELS))
@pytest.mark.parametrize("method", ["zero", "mean"])
def test_head_effects_equal_one_head_at_a_time(name: str, method: str) -> None:
    model = LM_MODELS[name]()
    x = inputs_for(model, batch=2)
    metric = metrics.token_logprob(7)
    for stack in _stacks(model):
        crosses = [False, True] if stack == "decoder" else [False]
        for cross in crosses:
            fast = interpret.head_effects(model, x, metric, method=method, stack=stack, cross=cross).effects
            torch.testing.assert_close(fast, _one_at_a_time_effects(model, x, metric, method, stack, cross), **close)
            assert fast.abs().max() > 1e-4


def test_layers_split_into_groups_give_the_same_effects(monkeypatch) -> None:
    model = LM_MODELS["llama-like"]()
    x = inputs_for(model)
    metric = metrics.token_logprob(3)
    whole = interpret.head_effects(model, x, metric).effects
    monkeypatch.setattr(_fast, "ROWS_PER_PASS", 1)  # one layer per staircase
    torch.testing.assert_close(interpret.head_effects(model, x, metric).effects, whole, **close)


def test_reading_only_the_last_position_changes_no_value() -> None:
    model = LM_MODELS["gpt2-like"]()
    x = inputs_for(model, batch=2)
    last, same = metrics.token_logprob(5), metrics.token_logprob(5, position=x.shape[1] - 1)
    assert _fast.reads_last_position(last) and not _fast.reads_last_position(same)
    torch.testing.assert_close(interpret.head_effects(model, x, last).effects,
                               interpret.head_effects(model, x, same).effects, **close)


def _patched_by_hand(model, receiver, donor, metric, name: str, slot: int, i: int) -> float:
    """The metric of one run of ``receiver`` with the donor's ``name`` activation copied in at index ``i``
    of dimension ``slot`` (position of ``(batch, seq, d_model)``, head of ``(batch, heads, seq, d_k)``)."""
    view = ModelView(model)
    _, cache = view.cache(donor, [name])

    def hook(_m, _inputs, act):
        act = act.clone()
        index = (slice(None),) * slot + (i,)
        act[index] = cache[name][index]
        return act

    with torch.no_grad(), math_backend(model), hooks_attached(model, {_names.resolve(model, name): hook}):
        out = model(*receiver) if isinstance(receiver, tuple) else model(receiver)
    return float(metric(out).mean())


@pytest.mark.parametrize("name", list(LM_MODELS))
@pytest.mark.parametrize("where", ["resid", "attn", "mlp", "head"])
def test_patch_equals_one_activation_at_a_time(name: str, where: str) -> None:
    model = LM_MODELS[name]()
    clean, corrupted = inputs_for(model, seed=1, batch=2), inputs_for(model, seed=2, batch=2)
    metric = metrics.token_logprob(4)
    point = {"resid": "hook_resid_pre", "attn": "attn.hook_out", "mlp": "ff.hook_out", "head": "attn.hook_z"}[where]
    for stack in _stacks(model):
        for direction in ("denoise", "noise"):
            res = interpret.patch(model, clean, corrupted, metric, where=where, direction=direction, stack=stack)
            receiver, donor = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
            sv = ModelView(model).stack(stack)
            expected = torch.tensor([[_patched_by_hand(model, receiver, donor, metric,
                                                       f"{sv.name}.blocks.{layer}.{point}", 1, i)
                                      for i in range(res.values.shape[1])] for layer in range(sv.n_layers)])
            torch.testing.assert_close(res.values, expected, **close)


def _gradient_by_hand(model, receiver, metric, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The receiving run's activation ``name`` and the gradient of the batch-mean metric with respect
    to it, through a leaf tensor put in its place."""
    view = ModelView(model)
    _, cache = view.cache(receiver, [name])
    leaf = cache[name].clone().requires_grad_()
    with torch.enable_grad(), math_backend(model), hooks_attached(model, {_names.resolve(model, name): lambda *_: leaf}):
        out = model(*receiver) if isinstance(receiver, tuple) else model(receiver)
        (grad,) = torch.autograd.grad(metric(out).float().mean(), [leaf])
    return cache[name], grad


@pytest.mark.parametrize("name", list(LM_MODELS))
@pytest.mark.parametrize("where", ["resid", "head"])
def test_attribution_patch_is_activation_difference_times_gradient(name: str, where: str) -> None:
    model = LM_MODELS[name]()
    clean, corrupted = inputs_for(model, seed=1, batch=2), inputs_for(model, seed=2, batch=2)
    metric = metrics.token_logprob(4)
    point = {"resid": "hook_resid_pre", "head": "attn.hook_z"}[where]
    res = interpret.attribution_patch(model, clean, corrupted, metric, where=where)
    assert res.method == "attribution" and res.values.shape == interpret.patch(model, clean, corrupted, metric,
                                                                               where=where).values.shape
    assert all(p.grad is None for p in model.parameters())  # the gradient is taken on activations only
    sv = ModelView(model).stack(None)
    for layer in range(sv.n_layers):
        n = f"{sv.name}.blocks.{layer}.{point}"
        act, grad = _gradient_by_hand(model, corrupted, metric, n)
        _, donor = ModelView(model).cache(clean, [n])
        product = (donor[n] - act) * grad
        expected = product.sum(dim=(0, 2, 3)) if where == "head" else product.sum(dim=(0, 2))
        torch.testing.assert_close(res.values[layer] - res.baseline, expected, **close)


def test_attribution_patch_agrees_with_exact_patching_on_a_tiny_model() -> None:
    """One token changed on a tiny random GPT-2 (near-linear there): the estimate of each head's,
    attention block's and feed-forward block's patch follows the exact values (measured r >= 0.999;
    SmolLM2's figure is in the README). A patch of a run into itself estimates no change."""
    model = LM_MODELS["gpt2-like"]()
    clean = inputs_for(model, seed=1, batch=2)
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(0, 53, (2,), generator=torch.Generator().manual_seed(5))
    metric = metrics.logit_diff(4, 9)
    for where in ("head", "attn", "mlp"):
        est = interpret.attribution_patch(model, clean, corrupted, metric, where=where)
        exact = interpret.patch(model, clean, corrupted, metric, where=where)
        assert est.baseline == pytest.approx(exact.baseline, abs=1e-5)
        assert interpret.agreement(est, exact) > 0.99
    same = interpret.attribution_patch(model, clean, clean, metric, where="resid")
    torch.testing.assert_close(same.values, torch.full_like(same.values, same.baseline), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="different"):
        interpret.agreement(est, same)
