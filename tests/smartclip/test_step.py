"""One optimizer step: the non-finite guard and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch

from smartclip.step import optimizer_step


def model_with_gradient(
    scale: float, scaler: torch.amp.GradScaler | None = None
) -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    """A layer whose gradient (scaled by `scaler`, as fp16 AMP leaves it) is set."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    loss = layer(torch.randn(5, 4)).pow(2).sum().mul(scale)
    (loss if scaler is None else scaler.scale(loss)).backward()
    return layer, torch.optim.SGD(layer.parameters(), lr=1.0)


def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float((x.detach() - y).pow(2).sum()) for x, y in zip(a, b, strict=True)))


@pytest.mark.parametrize("precision", ["fp32", "amp"])
def test_clipping_scales_the_gradient_to_the_norm_and_moves_the_weights_by_it(precision):
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "amp")
    layer, opt = model_with_gradient(100.0, scaler)
    before = [p.detach().clone() for p in layer.parameters()]
    assert optimizer_step(opt, scaler, {"loss": 1.0}, clip_norm=1.0)
    # SGD at lr 1: the step is the clipped, unscaled gradient, of norm 1 (unclipped: far more)
    assert distance(list(layer.parameters()), before) == pytest.approx(1.0, rel=1e-5)


def test_no_clipping_and_a_large_bound_leave_the_gradient_alone():
    for clip in (None, 1e9):
        layer, opt = model_with_gradient(100.0)
        raw = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in layer.parameters()))
        before = [p.detach().clone() for p in layer.parameters()]
        assert optimizer_step(opt, torch.amp.GradScaler("cpu", enabled=False), {"loss": 1.0}, clip)
        assert raw > 10 and distance(list(layer.parameters()), before) == pytest.approx(raw)


def test_a_non_finite_loss_is_not_applied_even_when_clipped():
    layer, opt = model_with_gradient(1.0)
    before = [p.detach().clone() for p in layer.parameters()]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert not optimizer_step(opt, scaler, {"loss": float("nan")}, clip_norm=1.0)
    assert distance(list(layer.parameters()), before) == 0
