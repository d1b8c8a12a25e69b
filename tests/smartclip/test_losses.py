import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from smartclip.losses import (
    Embeddings,
    clip_loss,
    masked_similarity,
    objective_loss,
    smartclip_loss,
)
from smartclip.masknet import straight_through_threshold


def naive_similarity(u, m, t, eps=1e-6):
    b = u.shape[0]
    s = torch.zeros(b, b, dtype=u.dtype)
    for i in range(b):
        for j in range(b):
            v = u[i] * m[j]
            s[i, j] = (v / v.norm().clamp_min(eps)) @ t[j]
    return s


def naive_smartclip(u, t, m, scale, weights=(10.0, 10.0, 2.0)):
    s = naive_similarity(u, m, t)
    b = u.shape[0]
    sidm = sum(-F.log_softmax(scale * s[i, :], 0)[i] for i in range(b)) / b
    dism = sum(-F.log_softmax(scale * s[:, j], 0)[j] for j in range(b)) / b
    return weights[0] * sidm + weights[1] * dism + weights[2] * m.mean()


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
    b=st.integers(1, 7), d=st.integers(1, 6), seed=st.integers(0, 10_000), zero_row=st.booleans()
)
def test_masked_similarity_matches_naive_loop(b, d, seed, zero_row):
    u, t, logits = inputs(b, d, seed, zero_row)
    m = (torch.sigmoid(logits) > 0.5).double()
    assert torch.allclose(masked_similarity(u, m, t), naive_similarity(u, m, t), atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(2, 6), d=st.integers(2, 6), seed=st.integers(0, 10_000), zero_row=st.booleans()
)
def test_smartclip_loss_and_gradients_match_naive_loop(b, d, seed, zero_row):
    """Values and gradients w.r.t. u, t and the mask logits (through the straight-through
    threshold) agree with a per-pair loop."""
    u, t, logits = inputs(b, d, seed, zero_row)
    grads = []
    for impl in ("matmul", "naive"):
        leaves = [x.clone().requires_grad_(True) for x in (u, t, logits)]
        m = straight_through_threshold(torch.sigmoid(leaves[2]))
        if impl == "matmul":
            loss = smartclip_loss(leaves[0], leaves[1], m, 7.0).total
        else:
            loss = naive_smartclip(leaves[0], leaves[1], m, 7.0)
        loss.backward()
        grads.append((loss.detach(), *[x.grad for x in leaves]))
    for a, b_ in zip(*grads, strict=True):
        assert torch.isfinite(a).all()
        assert torch.allclose(a, b_, atol=1e-8), (a, b_)


def test_all_zero_mask_gives_finite_loss_and_zero_similarity():
    u, t, _ = inputs(4, 5, 0)
    m = torch.zeros(4, 5, dtype=torch.float64)
    assert torch.equal(masked_similarity(u, m, t), torch.zeros(4, 4, dtype=torch.float64))
    out = smartclip_loss(u.requires_grad_(), t, m)
    out.total.backward()
    assert torch.isfinite(out.total) and torch.isfinite(u.grad).all()


def test_full_mask_reduces_to_clip_logits():
    """With m ≡ 1, S[i, j] = û_i · t_j, so L_sidm and L_dism are CLIP's two directions."""
    u, t, _ = inputs(6, 4, 1)
    ones = torch.ones_like(u)
    smart = smartclip_loss(u, t, ones, 5.0, weights=(1.0, 1.0, 0.0))
    clip = clip_loss(u, t, 5.0)
    assert torch.allclose(smart.terms["sidm"], clip.terms["i2t"])
    assert torch.allclose(smart.terms["dism"], clip.terms["t2i"])
    assert torch.allclose(smart.total, 2 * clip.total)


def test_loss_weights_and_sparsity_term():
    u, t, logits = inputs(5, 4, 2)
    m = (logits > 0).double()
    out = smartclip_loss(u, t, m, 3.0, weights=(10.0, 10.0, 2.0))
    terms = out.terms
    expected = 10 * terms["sidm"] + 10 * terms["dism"] + 2 * terms["sparsity"]
    assert torch.allclose(out.total, expected)
    assert torch.allclose(terms["sparsity"], m.mean())


@pytest.mark.parametrize("name", ["smartclip", "clip"])
def test_local_rows_of_global_loss_average_to_the_global_loss(name):
    """Split a batch into 'ranks': each computes its rows against gathered features; the mean
    of the local losses equals the global loss (the DDP contract)."""
    u, t, logits = inputs(8, 5, 3)
    m = (logits > 0).double()
    full = objective_loss(name, Embeddings(u, t, m), 4.0).total
    parts = []
    for offset in (0, 4):
        local = Embeddings(u[offset : offset + 4], t[offset : offset + 4], m[offset : offset + 4])
        parts.append(objective_loss(name, local, 4.0, Embeddings(u, t, m), offset).total)
    assert torch.allclose(torch.stack(parts).mean(), full)


def test_unknown_objective_and_missing_mask():
    u, t, _ = inputs(3, 3, 0)
    with pytest.raises(ValueError, match="unknown objective"):
        objective_loss("nope", Embeddings(u, t), 1.0)
    with pytest.raises(ValueError, match="needs masks"):
        objective_loss("smartclip", Embeddings(u, t), 1.0)
