"""The tools behind the Why view's two stages, against their definitions on tiny random models of every
family: attribution patching's estimate of every head's removal (one backward pass), a head's removal
run from its layer on a recorded clean run, and the logit lens read from a recorded run at one position."""

from __future__ import annotations

import pytest
import torch

from attnlab import interpret
from attnlab.inspect import hooks_attached, math_backend, run_with_cache
from attnlab.interpret import _names, metrics
from tests.unit.test_interpret import LM_MODELS, inputs_for, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=list(LM_MODELS))
def lm(request):
    return request.param, LM_MODELS[request.param]()


def _metric(model, x):
    return metrics.token_logprob(int(run(model, x)[0, -1].argmax()))


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_estimated_head_effects_are_the_gradient_times_the_change(lm, method: str) -> None:
    """estimate[l, h] = sum((z_removed - z) * dmetric/dz) over that head, the gradient by autograd on a
    separately recorded clean run; and a head whose removal is linear in the metric is estimated exactly."""
    _, model = lm
    x = inputs_for(model)
    metric = _metric(model, x)
    est = interpret.estimate_head_effects(model, x, metric, method=method)
    assert est.estimated and est.effects.shape == interpret.head_effects(model, x, metric, method=method).effects.shape
    sv = model.stack_view()
    names = [_names.block(model, sv.name, layer, "attn.hook_z") for layer in range(sv.n_layers)]
    zs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, _i, z):
            zs[name] = z  # in the graph (the parameters need gradients): later heads' paths stay connected
            return z
        return hook

    model.eval()  # as the tools run it (no dropout)
    with torch.enable_grad(), math_backend(model), hooks_attached(model, {n: keep(n) for n in names}):
        m = metric(model(*x) if isinstance(x, tuple) else model(x)).mean()
        grads = torch.autograd.grad(m, [zs[n] for n in names], allow_unused=True)
    for layer, (name, g) in enumerate(zip(names, grads, strict=True)):
        z = zs[name].detach()
        g = torch.zeros_like(z) if g is None else g
        removed = torch.zeros_like(z) if method == "zero" else z.mean(dim=(0, 2), keepdim=True).expand_as(z)
        torch.testing.assert_close(est.effects[layer], ((removed - z) * g).sum(dim=(0, 2, 3)).float(), atol=1e-5, rtol=1e-4)


def test_effects_agreement_is_pearson_r_and_the_largest_difference() -> None:
    model = LM_MODELS["gpt2-like"]()
    x = inputs_for(model)
    metric = _metric(model, x)
    est, exact = interpret.estimate_head_effects(model, x, metric), interpret.head_effects(model, x, metric)
    r, largest, (layer, head) = interpret.effects_agreement(est, exact)
    a, b = est.effects.flatten().double(), exact.effects.flatten().double()
    expected_r = float(((a - a.mean()) * (b - b.mean())).sum() / ((a - a.mean()).norm() * (b - b.mean()).norm()))
    assert r == pytest.approx(expected_r, abs=1e-9)
    assert largest == pytest.approx(float((a - b).abs().max()), abs=1e-9)
    assert abs(float(est.effects[layer, head] - exact.effects[layer, head])) == pytest.approx(largest, abs=1e-6)
    assert interpret.effects_agreement(exact, exact)[:2] == (pytest.approx(1.0), 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        interpret.effects_agreement(est, interpret.HeadEffects(exact.effects[:1], 0.0, "zero", "decoder"))


def test_a_head_removed_from_its_layer_on_a_recorded_run_equals_ablate(lm) -> None:
    name, model = lm
    x = inputs_for(model)
    cross = name.startswith("seq2seq")
    sv = model.stack_view()
    pre = [f"{sv.name}.blocks.{layer}.hook_resid_pre" for layer in range(sv.n_layers)]
    _, cache = run_with_cache(model, *(x if isinstance(x, tuple) else (x,)), names=pre)
    for layer, head in [(0, 1), (sv.n_layers - 1, 0)]:
        whole = interpret.ablate(model, x, [(layer, head)], cross=cross)
        from_layer = interpret.ablate_from(model, x, layer, head, [cache[n] for n in pre], cross=cross)
        torch.testing.assert_close(from_layer, whole, atol=1e-6, rtol=0)
        last = interpret.ablate_from(model, x, layer, head, [cache[n] for n in pre], cross=cross, last_only=True)
        torch.testing.assert_close(last, whole[:, -1:], atol=1e-5, rtol=0)
    with pytest.raises(IndexError):
        interpret.ablate_from(model, x, sv.n_layers, 0, [cache[n] for n in pre])


def test_the_logit_lens_at_one_position_from_a_recorded_run(lm) -> None:
    _, model = lm
    x = inputs_for(model)
    full = interpret.logit_lens(model, x, k=3)
    _, names = interpret.accumulated_names(model)
    _, cache = run_with_cache(model, *(x if isinstance(x, tuple) else (x,)), names=names)
    for position in (-1, 2):
        one = interpret.logit_lens(model, x, k=3, position=position, recorded={n: cache[n] for n in names})
        assert one.top_ids.shape[2] == 1 and one.labels == full.labels
        torch.testing.assert_close(one.top_probs[:, :, 0], full.top_probs[:, :, position], atol=1e-6, rtol=0)
        assert torch.equal(one.top_ids[:, :, 0], full.top_ids[:, :, position])


def test_integrated_gradients_record_the_path_they_integrate() -> None:
    """path_values are the target at the quadrature nodes (ascending alpha), and the ends bracket them for
    a smooth path: the first node sits near the baseline, the last near the input."""
    model = LM_MODELS["gpt2-like"]()
    x = inputs_for(model)
    target = int(run(model, x)[0, -1].argmax())
    sal = interpret.saliency(model, x, target, steps=20)
    assert sal.path_alphas.shape == sal.path_values.shape == (20,)
    assert bool((sal.path_alphas.diff() > 0).all())
    assert float(sal.path_values[-1]) == pytest.approx(sal.value, abs=0.05 * abs(sal.value - sal.baseline_value) + 1e-3)
    assert float(sal.path_values[0]) == pytest.approx(sal.baseline_value, abs=0.05 * abs(sal.value - sal.baseline_value) + 1e-3)


def test_integrated_gradients_can_keep_positions_of_the_input_in_the_baseline() -> None:
    """keep=(0,): the baseline is the input at position 0 (its score is 0) and the token baseline
    elsewhere; completeness still holds (the scores sum to f(input) - f(that baseline))."""
    model = LM_MODELS["llama-like"]()
    x = inputs_for(model)
    target = int(run(model, x)[0, -1].argmax())
    sal = interpret.saliency(model, x, target, baseline=0, keep=(0,))
    assert float(sal.scores[0]) == 0.0
    base = x.clone()
    base[:, 1:] = 0
    assert sal.baseline_value == pytest.approx(float(run(model, base)[0, -1, target]), abs=1e-5)
    assert abs(sal.completeness_gap) <= 0.01 * abs(sal.value - sal.baseline_value)
    with pytest.raises(IndexError, match="keep positions"):
        interpret.saliency(model, x, target, baseline=0, keep=(x.shape[1],))
