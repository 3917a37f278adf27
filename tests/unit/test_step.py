"""The project's one optimizer update (``attnlab.train.step.apply_update``) and ``train_step`` around it."""

from __future__ import annotations

import torch
from torch import nn

from attnlab.train.step import apply_update, train_step


def linear_with_grad(grad: float) -> tuple[nn.Linear, torch.optim.SGD]:
    torch.manual_seed(0)
    layer = nn.Linear(4, 1, bias=False)
    layer.weight.grad = torch.full_like(layer.weight, grad)
    return layer, torch.optim.SGD(layer.parameters(), lr=1.0)


def test_the_update_clips_the_global_norm_before_stepping() -> None:
    layer, opt = linear_with_grad(3.0)  # norm 6
    before = layer.weight.detach().clone()
    apply_update(layer, opt, clip=1.0)
    torch.testing.assert_close(before - layer.weight.detach(), torch.full_like(before, 0.5), rtol=1e-6, atol=0)
    layer, opt = linear_with_grad(3.0)
    apply_update(layer, opt, clip=0.0)  # 0: no clipping
    torch.testing.assert_close(before - layer.weight.detach(), torch.full_like(before, 3.0), rtol=0, atol=0)


def test_with_a_scaler_the_gradients_are_unscaled_before_clipping_and_an_overflow_skips_the_step() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    layer, opt = linear_with_grad(0.0)
    layer.weight.grad = None
    before = layer.weight.detach().clone()
    scaler.scale(layer(torch.full((1, 4), 0.25)).sum()).backward()  # true gradient 0.25 (norm 0.5), held x 8
    torch.testing.assert_close(layer.weight.grad, torch.full_like(before, 2.0), rtol=0, atol=0)
    apply_update(layer, opt, clip=1.0, scaler=scaler)  # unscaled first: under the clip, so not clipped
    torch.testing.assert_close(before - layer.weight.detach(), torch.full_like(before, 0.25), rtol=1e-6, atol=0)

    opt.zero_grad()
    after = layer.weight.detach().clone()
    scaler.scale(layer(torch.full((1, 4), float("inf"))).sum()).backward()
    apply_update(layer, opt, clip=1.0, scaler=scaler)
    assert torch.equal(layer.weight.detach(), after)  # skipped, and the scale shrinks for the next step
    assert scaler.get_scale() == 4.0


def test_train_step_returns_the_loss_before_the_update() -> None:
    layer, _ = linear_with_grad(0.0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    x = torch.ones(1, 4)
    expected = float(layer(x).pow(2).sum())
    assert train_step(layer, opt, lambda: layer(x).pow(2).sum(), clip=0.0) == expected
    assert float(layer(x).pow(2).sum()) < expected
