import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from smartclip.losses import (
    ClipLoss,
    Features,
    SmartCLIPLoss,
    build_objective,
    mask_health,
    masked_similarity,
)
from smartclip.masknet import straight_through_threshold


def naive_similarity(u, m, t, floor=1.0, eps=1e-6):
    """The per-pair definition: v = u_i ⊙ m_j, S = v·t_j / max(‖v‖, floor‖u_i‖/√D, eps)."""
    s = torch.zeros(u.shape[0], m.shape[0], dtype=u.dtype)
    for i in range(u.shape[0]):
        for j in range(m.shape[0]):
            v = u[i] * m[j]
            lower = floor * u[i].norm() / math.sqrt(u.shape[1])
            s[i, j] = v @ t[j] / torch.maximum(v.norm(), lower).clamp_min(eps)
    return s


def naive_smartclip(u, t, m, scale, weights=(10.0, 10.0, 2.0), floor=1.0, sparsity="abs"):
    s = naive_similarity(u, m, t, floor)
    b = u.shape[0]
    sidm = sum(-F.log_softmax(scale * s[i, :], 0)[i] for i in range(b)) / b
    dism = sum(-F.log_softmax(scale * s[:, j], 0)[j] for j in range(b)) / b
    sparse = m.abs().mean() if sparsity == "abs" else m.mean()
    return weights[0] * sidm + weights[1] * dism + weights[2] * sparse


def inputs(b, d, seed, zero_row=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, generator=g, dtype=torch.float64)
    t = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    logits = torch.randn(b, d, generator=g, dtype=torch.float64)
    if zero_row:
        logits[0] = -5.0  # this caption's hard mask is all zero
    return u, t, logits


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 7),
    d=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    zero_row=st.booleans(),
    floor=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_masked_similarity_matches_naive_loop(b, d, seed, zero_row, floor):
    u, t, logits = inputs(b, d, seed, zero_row)
    m = (torch.sigmoid(logits) > 0.5).double()
    got = masked_similarity(u, m, t, floor)
    assert torch.allclose(got, naive_similarity(u, m, t, floor), atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), d=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_floor_leaves_masks_that_hold_an_average_dimension_unchanged(b, d, seed):
    """Where ‖u_i ⊙ m_j‖² ≥ ‖u_i‖²/D the floored S is the released formula exactly."""
    u, t, logits = inputs(b, d, seed)
    m = (logits > 0).double()
    plain = masked_similarity(u, m, t, floor=0.0)
    floored = masked_similarity(u, m, t, floor=1.0)
    enough = ((u * u) @ (m * m).T) >= (u * u).sum(1, keepdim=True) / d
    assert torch.equal(plain[enough], floored[enough])
    assert (floored.abs() <= 1 + 1e-12).all()


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(2, 6),
    d=st.integers(2, 6),
    seed=st.integers(0, 10_000),
    zero_row=st.booleans(),
    sparsity=st.sampled_from(["abs", "mean"]),
)
def test_smartclip_loss_and_gradients_match_naive_loop(b, d, seed, zero_row, sparsity):
    """Values and gradients w.r.t. u, t and the mask logits (through the straight-through
    threshold) agree with a per-pair loop, for both sparsity forms and the weights."""
    u, t, logits = inputs(b, d, seed, zero_row)
    weights = (3.0, 5.0, 2.0)
    grads = []
    for impl in ("matmul", "naive"):
        leaves = [x.clone().requires_grad_(True) for x in (u, t, logits)]
        m = straight_through_threshold(torch.sigmoid(leaves[2]))
        if impl == "matmul":
            loss = SmartCLIPLoss(weights, sparsity)(Features(leaves[0], leaves[1], m), 7.0).total
        else:
            loss = naive_smartclip(leaves[0], leaves[1], m, 7.0, weights, sparsity=sparsity)
        loss.backward()
        grads.append((loss.detach(), *[x.grad for x in leaves]))
    for a, b_ in zip(*grads, strict=True):
        assert torch.isfinite(a).all()
        assert torch.allclose(a, b_, atol=1e-8), (a, b_)


def test_all_zero_mask_gives_zero_similarity_and_a_bounded_gradient():
    """An empty mask contributes S = 0, and |∂S_ij/∂m_jd| ≤ √D |t_jd| / floor; the bare eps
    guard (floor 0) gives gradients of order 1/eps instead."""
    u, t, _ = inputs(4, 9, 0)
    for floor, bounded in ((1.0, True), (0.5, True), (0.0, False)):
        m = torch.zeros(4, 9, dtype=torch.float64, requires_grad=True)
        s = masked_similarity(u, m, t, floor)
        assert torch.equal(s.detach(), torch.zeros(4, 4, dtype=torch.float64))
        for i in range(4):
            for j in range(4):
                (grad,) = torch.autograd.grad(s[i, j], m, retain_graph=True)
                limit = math.sqrt(9) * t[j].abs() / floor if floor else None
                if bounded:
                    assert (grad[j].abs() <= limit + 1e-12).all()
                else:
                    assert grad[j].abs().max() > 1e4


def test_empty_mask_row_does_not_swamp_the_mask_gradient():
    """The measured failure: one caption whose hard mask is all zero got a mask-logit gradient
    of order 1e6 while the others stayed below 10. With the floor its gradient obeys the
    analytic bound: column j of S gets |∂L_sidm/∂S_ij| ≤ s/B from each of the B rows and
    Σ_i |∂L_dism/∂S_ij| ≤ 2s/B, the sigmoid's slope is ≤ ¼, so
    |∂L/∂logit_jd| ≤ s (w₁ + 2 w₂ / B) · √D max_d |t_jd| / (4 floor)."""
    b, d = 8, 16
    u, t, logits = inputs(b, d, 3, zero_row=True)
    scale, weights = 100.0, (10.0, 10.0, 2.0)
    spread = scale * (weights[0] + 2 * weights[1] / b) * math.sqrt(d) * t[0].abs().max() / 4
    bound = spread.item()
    for floor in (1.0, 0.0):
        leaf = logits.clone().requires_grad_(True)
        m = straight_through_threshold(torch.sigmoid(leaf))
        assert m[0].sum() == 0
        SmartCLIPLoss(weights, norm_floor=floor)(Features(u, t, m), scale).total.backward()
        zero_row = leaf.grad[0].abs().max().item()
        if floor:
            assert zero_row <= bound / floor
        else:
            assert zero_row > 100 * bound


def test_release_sparsity_pushes_only_the_entries_that_are_on():
    u, t, logits = inputs(6, 5, 4)
    for form, off_moves in (("abs", False), ("mean", True)):
        leaf = logits.clone().requires_grad_(True)
        m = straight_through_threshold(torch.sigmoid(leaf))
        SmartCLIPLoss((0.0, 0.0, 1.0), form)(Features(u, t, m), 1.0).total.backward()
        on = m.detach().bool()
        assert (leaf.grad[on] > 0).all()  # gradient descent lowers the logits of "on" entries
        assert bool((leaf.grad[~on] != 0).any()) is off_moves


def test_full_mask_reduces_to_clip_logits():
    """With m ≡ 1, S[i, j] = û_i · t_j, so L_sidm and L_dism are CLIP's two directions."""
    u, t, _ = inputs(6, 4, 1)
    ones = torch.ones_like(u)
    smart = SmartCLIPLoss((1.0, 1.0, 0.0))(Features(u, t, ones), 5.0)
    clip = ClipLoss()(Features(u, t), 5.0)
    assert torch.allclose(smart.terms["sidm"], clip.terms["i2t"])
    assert torch.allclose(smart.terms["dism"], clip.terms["t2i"])
    assert torch.allclose(smart.total, 2 * clip.total)


def test_hard_negatives_add_image_to_text_columns_only():
    """NegCLIP: row i's image→text logits cover the B captions and all B·k negatives; the
    text→image direction is unchanged."""
    u, t, _ = inputs(5, 6, 2)
    neg = F.normalize(torch.randn(5, 2, 6, dtype=torch.float64), dim=-1)
    got = ClipLoss()(Features(u, t, t_neg=neg), 3.0)
    u_n = F.normalize(u, dim=-1)
    texts = torch.cat([t, neg.flatten(0, 1)])
    i2t = F.cross_entropy(3.0 * u_n @ texts.T, torch.arange(5))
    t2i = F.cross_entropy(3.0 * t @ u_n.T, torch.arange(5))
    assert torch.allclose(got.terms["i2t"], i2t) and torch.allclose(got.terms["t2i"], t2i)
    assert got.terms["i2t"] > ClipLoss()(Features(u, t), 3.0).terms["i2t"]

    m = torch.ones(5, 6, dtype=torch.float64)
    m_neg = torch.ones(5, 2, 6, dtype=torch.float64)
    smart = SmartCLIPLoss((1.0, 1.0, 0.0))(Features(u, t, m, neg, m_neg), 3.0)
    assert torch.allclose(smart.terms["sidm"], i2t) and torch.allclose(smart.terms["dism"], t2i)


@pytest.mark.parametrize("name", ["smartclip", "clip"])
@pytest.mark.parametrize("negatives", [False, True])
def test_local_rows_of_global_loss_average_to_the_global_loss(name, negatives):
    """Split a batch into 'ranks': each computes its rows against gathered features; the mean
    of the local losses equals the global loss (the DDP contract)."""
    u, t, logits = inputs(8, 5, 3)
    m = (logits > 0).double()
    g = torch.Generator().manual_seed(0)
    neg = F.normalize(torch.randn(8, 2, 5, generator=g, dtype=torch.float64), dim=-1)
    m_neg = (torch.rand(8, 2, 5, generator=g) > 0.3).double()
    full = Features(u, t, m, neg, m_neg) if negatives else Features(u, t, m)
    objective = build_objective(name)
    whole = objective(full, 4.0).total
    parts = []
    for offset in (0, 4):
        local = full.map(lambda x, o=offset: x[o : o + 4])
        parts.append(objective(local, 4.0, full, offset).total)
    assert torch.allclose(torch.stack(parts).mean(), whole)


def test_mask_health_counts_dimensions_that_follow_the_caption():
    m = torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 1], [1, 1, 0, 0]])
    health = mask_health(m)
    assert health["mask_on"] == pytest.approx(2.0)
    assert health["mask_varying"] == 2  # dims 1 and 3; dim 0 always on, dim 2 always off
    assert mask_health(torch.tensor([[1.0, 0], [1, 0]]))["mask_varying"] == 0


def test_unknown_objective_bad_settings_and_missing_mask():
    u, t, _ = inputs(3, 3, 0)
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("nope")
    with pytest.raises(ValueError, match="needs masks"):
        build_objective("smartclip")(Features(u, t), 1.0)
    with pytest.raises(ValueError, match="sparsity"):
        SmartCLIPLoss(sparsity="l2")
    with pytest.raises(ValueError, match="3 loss weights"):
        SmartCLIPLoss((1.0, 1.0))
