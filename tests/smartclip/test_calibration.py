"""MulCLIP's calibration: FineLIP's token aggregation, checked against a per-token loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smartclip.calibration import LocalCalibration, TokenAggregation, aggregated_tokens


def naive_aggregation(module: TokenAggregation, x: torch.Tensor, real: torch.Tensor):
    """Y_j = Σ_i a_ji x_i with a_j· = softmax over the real i of γ · (W₂ GELU(W₁ LN(x_i)))_j, one
    token i and one output j at a time."""
    norm, first, _, second = module.weight
    out = []
    for row, keep in zip(x, real, strict=True):
        scores = []
        for token in row:
            h = F.layer_norm(token, token.shape, norm.weight, norm.bias, norm.eps)
            h = F.gelu(first.weight @ h + first.bias)
            scores.append(module.scale * (second.weight @ h + second.bias))
        scores = torch.stack(scores)  # [n, m]
        aggregates = []
        for j in range(scores.shape[1]):
            kept = [i for i in range(len(row)) if keep[i]]
            a = torch.softmax(torch.stack([scores[i, j] for i in kept]), 0)
            aggregates.append(sum(a[q] * row[i] for q, i in enumerate(kept)))
        out.append(torch.stack(aggregates))
    return torch.stack(out)


def test_aggregation_matches_a_per_token_loop_and_ignores_padding():
    torch.manual_seed(0)
    module = TokenAggregation(dim=10, tokens=3).double()
    with torch.no_grad():
        module.scale.fill_(1.7)
    x = torch.randn(2, 7, 10, dtype=torch.float64, requires_grad=True)
    real = torch.tensor([[True] * 7, [True, True, False, True, False, False, False]])
    y = module(x, real)
    assert y.shape == (2, 3, 10)
    assert torch.allclose(y, naive_aggregation(module, x, real), atol=1e-12)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    assert (grad[~real] == 0).all() and (grad[real] != 0).any()
    noisy = x.detach().clone()
    noisy[~real] = 1e3 * torch.randn(int((~real).sum()), 10, dtype=torch.float64)
    assert torch.allclose(module(noisy, real), y, atol=1e-12)


def test_every_aggregate_is_a_convex_combination_of_the_tokens():
    torch.manual_seed(1)
    module = TokenAggregation(dim=1, tokens=4)
    x = torch.randn(3, 9, 1)
    y = module(x)
    assert y.shape == (3, 4, 1)
    low, high = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
    assert ((y >= low - 1e-6) & (y <= high + 1e-6)).all()
    same = torch.full((3, 9, 1), 2.5)
    assert torch.allclose(module(same), torch.full((3, 4, 1), 2.5))


@pytest.mark.parametrize(("patches", "kept"), [(196, 39), (256, 51), (64, 12), (3, 1)])
def test_the_calibrated_length_is_finelips_share_of_the_patches(patches: int, kept: int):
    """m = ⌊0.4 · 0.5 · P⌋ (FineLIP's aggr_ratio × sparse_ratio): 39 of ViT-B/16's 196 patches,
    51 of ViT-L/14's 256, 12 of the tiny towers' 64, at least 1; both sides get the same m."""
    assert aggregated_tokens(patches) == kept == max(1, int(patches * 0.4 * 0.5))
    calibration = LocalCalibration(dim=8, patches=patches)
    v, t = torch.randn(2, patches, 8), torch.randn(2, 11, 8)
    mask = torch.arange(11).expand(2, 11) < torch.tensor([[11], [4]])
    v_cal, t_cal = calibration(v, t, mask)
    assert v_cal.shape == t_cal.shape == (2, kept, 8) == (2, calibration.tokens_out, 8)
    assert LocalCalibration(dim=8, patches=64, share=0.5).tokens_out == 32


def test_a_share_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="calibration share"):
        LocalCalibration(dim=8, patches=64, share=0.0)
