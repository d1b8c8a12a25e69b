import itertools
import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from smartclip.fit import FitConfig, build_model, objective_for, training_batch
from smartclip.losses import (
    ClipLoss,
    Features,
    LongCLIPLoss,
    MulCLIPLoss,
    SmartCLIPLoss,
    before_gather,
    build_objective,
    mask_health,
    masked_similarity,
    pca_reconstruct,
)
from smartclip.masknet import straight_through_threshold
from synthetic.worlds import World, WorldConfig


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


def peer_features(b, d, seed, patches=3, tokens=4, sentences=3):
    """Random float64 inputs of the long-caption objectives: every row has a random, uneven set
    of real tokens and sentences (at least one of each)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def some_real(n):
        real = torch.rand(b, n, generator=g) < 0.6
        real[torch.arange(b), torch.randint(n, (b,), generator=g)] = True
        return real

    return Features(
        u=randn(b, d),
        t=F.normalize(randn(b, d), dim=-1),
        t_short=F.normalize(randn(b, d), dim=-1),
        patches=randn(b, patches, d),
        tokens=randn(b, tokens, d),
        token_mask=some_real(tokens),
        subs=F.normalize(randn(b, sentences, d), dim=-1),
        sub_mask=some_real(sentences),
    )


def value_and_grads(loss_fn, features):
    """loss_fn(features) and its gradient w.r.t. every floating-point field (None if unused)."""
    leaves = features.map(lambda x: x.clone().requires_grad_(x.is_floating_point()))
    loss = loss_fn(leaves)
    names = [f.name for f in fields(leaves) if getattr(leaves, f.name) is not None]
    names = [n for n in names if getattr(leaves, n).requires_grad]
    grads = torch.autograd.grad(loss, [getattr(leaves, n) for n in names], allow_unused=True)
    return loss.detach(), dict(zip(names, grads, strict=True))


def assert_same(got, want, atol=1e-8):
    (value, grads), (ref_value, ref_grads) = got, want
    assert torch.isfinite(value) and torch.allclose(value, ref_value, atol=atol), (value, ref_value)
    assert grads.keys() == ref_grads.keys()
    for key, grad in grads.items():
        assert (grad is None) == (ref_grads[key] is None), key
        if grad is not None:
            assert torch.allclose(grad, ref_grads[key], atol=atol), (key, grad, ref_grads[key])


def naive_ce(logits, target, eps=0.0):
    """−(1 − ε) log p_target − ε · mean_j log p_j (label smoothing ε)."""
    logp = F.log_softmax(logits, 0)
    return -(1 - eps) * logp[target] - eps * logp.mean()


def naive_cos(x, y):
    return x @ y / (x.norm() * y.norm())


def naive_symmetric_nce(x, y, scale, eps=0.0):
    """½ [mean_i CE_j(s·x_i·y_j; i) + mean_j CE_i(s·y_j·x_i; j)], one pair at a time."""
    b = x.shape[0]
    x2y = sum(
        naive_ce(torch.stack([scale * x[i] @ y[j] for j in range(b)]), i, eps) for i in range(b)
    )
    y2x = sum(
        naive_ce(torch.stack([scale * y[j] @ x[i] for i in range(b)]), j, eps) for j in range(b)
    )
    return (x2y + y2x) / (2 * b)


def naive_pca(x, k):
    """The rows' projection onto their top-k principal subspace, from an eigendecomposition (no
    SVD): of the D×D scatter matrix Σ_i c_i c_iᵀ, or where n ≤ D of the n×n Gram matrix c_i·c_j,
    whose top eigenvectors e_m give the same projection c_i ↦ Σ_j Σ_m e_mi e_mj c_j. The smaller
    matrix holds at most one zero eigenvalue, whose degeneracy would break eigh's gradient."""
    n, d = x.shape
    if k >= min(n - 1, d):  # the centred rows span at most min(n − 1, d) dimensions
        return x
    mu = sum(x[i] for i in range(n)) / n
    c = [x[i] - mu for i in range(n)]
    if n <= d:
        gram = torch.stack([torch.stack([c[i] @ c[j] for j in range(n)]) for i in range(n)])
        e = torch.linalg.eigh(gram).eigenvectors[:, -k:]  # eigenvalues ascending
        weight = e @ e.T
        return torch.stack([mu + sum(weight[i, j] * c[j] for j in range(n)) for i in range(n)])
    e = torch.linalg.eigh(sum(torch.outer(ci, ci) for ci in c)).eigenvectors[:, -k:]
    return torch.stack([mu + sum((ci @ e[:, m]) * e[:, m] for m in range(k)) for ci in c])


def naive_longclip(f, scale, k, eps, weights, groups=None):
    """Long-CLIP on the whole batch, its coarse features PCA'd group by group: `groups` = the
    rows of each rank in order (None: one group, the batch)."""
    u_n = torch.stack([f.u[i] / f.u[i].norm() for i in range(f.u.shape[0])])
    fine = naive_symmetric_nce(u_n, f.t, scale, eps)
    bounds = [0, *itertools.accumulate(groups or [len(u_n)])]
    coarse_u = torch.cat([naive_pca(u_n[a:b], k) for a, b in itertools.pairwise(bounds)])
    coarse = naive_symmetric_nce(coarse_u, f.t_short, scale, eps)
    return weights[0] * fine + weights[1] * coarse


def naive_retrieval(recon, originals, tau):
    """mean_j CE over j′ of cos(recon_j, originals_j′) / τ with target j."""
    n = len(originals)
    return (
        sum(
            naive_ce(torch.stack([naive_cos(recon[j], originals[q]) / tau for q in range(n)]), j)
            for j in range(n)
        )
        / n
    )


def naive_mulclip(f, scale, weights, tau_a, tau_w, topk, short_weight=1.0):
    b, n_patches = f.patches.shape[:2]
    u_n = torch.stack([f.u[i] / f.u[i].norm() for i in range(b)])
    short = naive_symmetric_nce(u_n, f.t_short, scale)
    glob = naive_symmetric_nce(u_n, f.t, scale) + short_weight * short

    word = 0.0
    for i in range(b):
        v = [f.patches[i, p] / f.patches[i, p].norm() for p in range(n_patches)]
        t = [f.tokens[i, j] / f.tokens[i, j].norm() for j in range(f.tokens.shape[1])]
        t = [tj for tj, real in zip(t, f.token_mask[i], strict=True) if real]
        t_rec, v_rec = [], []
        for tj in t:
            att = torch.softmax(torch.stack([tj @ vp / tau_a for vp in v]), 0)
            t_rec.append(sum(att[p] * v[p] for p in range(len(v))))
        for vp in v:
            att = torch.softmax(torch.stack([vp @ tj / tau_a for tj in t]), 0)
            v_rec.append(sum(att[j] * t[j] for j in range(len(t))))
        word = word + naive_retrieval(t_rec, t, tau_w) + naive_retrieval(v_rec, v, tau_w)
    word = word / b

    sub = 0.0
    for i in range(b):
        losses = []
        for c in range(f.subs.shape[1]):
            if not f.sub_mask[i, c]:
                continue
            tc, logits = f.subs[i, c], []
            for image in range(b):
                v = [f.patches[image, p] / f.patches[image, p].norm() for p in range(n_patches)]
                a = [naive_cos(vp, tc) for vp in v]
                kept = sorted(range(n_patches), key=lambda p, a=a: -a[p].item())[:topk]
                w = torch.softmax(torch.stack([a[p] / tau_a for p in kept]), 0)
                v_bar = sum(w[m] * v[p] for m, p in enumerate(kept))
                logits.append(scale * naive_cos(v_bar, tc))
            losses.append(naive_ce(torch.stack(logits), i))
        sub = sub + sum(losses) / len(losses)
    sub = sub / b
    return glob + weights[0] * word + weights[1] * sub


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 7),
    d=st.integers(1, 6),
    k=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    eps=st.sampled_from([0.0, 0.1]),
    scope=st.sampled_from(["rank", "global"]),
)
def test_longclip_loss_and_gradients_match_naive_loop(b, d, k, seed, eps, scope):
    """Value and gradients w.r.t. u, t and t_short agree with a per-pair loop whose PCA comes from
    an eigendecomposition, for k below and at or above the batch's rank; in one process the
    batch is the one PCA group of either scope."""
    f = peer_features(b, d, seed)
    weights = (1.5, 0.5)
    loss = LongCLIPLoss(*weights, pca_components=k, pca_scope=scope, label_smoothing=eps)
    got = value_and_grads(lambda x: loss(x, 3.0).total, f)
    want = value_and_grads(lambda x: naive_longclip(x, 3.0, k, eps, weights), f)
    assert_same(got, want)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 5),
    d=st.integers(2, 5),
    patches=st.integers(1, 4),
    tokens=st.integers(1, 4),
    sentences=st.integers(1, 3),
    topk=st.integers(1, 5),
    taus=st.sampled_from([(0.1, 0.1), (0.5, 0.2)]),
    short_weight=st.sampled_from([1.0, 0.5]),
    seed=st.integers(0, 10_000),
)
def test_mulclip_loss_and_gradients_match_naive_loop(
    b, d, patches, tokens, sentences, topk, taus, short_weight, seed
):
    """Value and gradients w.r.t. every input (u, t, t_short, patches, tokens, subs) agree with a
    per-pair, per-token, per-sentence loop, with uneven numbers of real tokens and sentences."""
    f = peer_features(b, d, seed, patches, tokens, sentences)
    weights = (0.7, 1.3)
    loss = MulCLIPLoss(*weights, *taus, sub_topk=topk, short_weight=short_weight)
    got = value_and_grads(lambda x: loss(x, 3.0).total, f)
    want = value_and_grads(lambda x: naive_mulclip(x, 3.0, weights, *taus, topk, short_weight), f)
    assert_same(got, want)


def test_pca_with_enough_components_reproduces_the_data():
    """PCA_k(X) = X when k covers the centred rows' rank: exactly when k ≥ min(n − 1, D), and up
    to rounding through the SVD for data of rank r < min(n − 1, D) with k = r; fewer components
    leave a centred rank of exactly k and keep the mean."""
    g = torch.Generator().manual_seed(0)
    for n, d, k in ((3, 6, 2), (5, 6, 32), (10, 4, 4), (1, 3, 1)):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        assert torch.equal(pca_reconstruct(x, k), x)
    rank = 3
    low = torch.randn(12, rank, generator=g, dtype=torch.float64)
    x = low @ torch.randn(rank, 8, generator=g, dtype=torch.float64) + torch.randn(8, generator=g)
    assert torch.allclose(pca_reconstruct(x, rank), x, atol=1e-12)
    for k in (1, 2):
        y = pca_reconstruct(x, k)
        assert torch.allclose(y.mean(0), x.mean(0), atol=1e-12)
        assert torch.linalg.matrix_rank(y - y.mean(0)) == k
        assert torch.allclose(y, naive_pca(x, k), atol=1e-12)


def test_coarse_term_is_invariant_to_a_rotation_of_the_embedding_space():
    """PCA_k(ÛQ) = PCA_k(Û)Q and dot products are preserved, so L_coarse(UQ, t_short Q) = L_coarse;
    keeping the k coordinates of highest variance instead would not be."""
    f = peer_features(8, 6, 1)
    q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(2)).double()).Q
    loss = LongCLIPLoss(pca_components=3)
    coarse = loss(f, 5.0).terms["coarse"]
    rotated = Features(f.u @ q, f.t, t_short=f.t_short @ q)
    assert torch.allclose(loss(rotated, 5.0).terms["coarse"], coarse, atol=1e-12)
    assert not torch.allclose(LongCLIPLoss(pca_components=6)(f, 5.0).terms["coarse"], coarse)


def test_padded_tokens_and_sentences_have_no_influence():
    """New values in the padding: the loss and every gradient at real entries are unchanged and
    the padding's own gradient is zero."""
    f = peer_features(6, 4, 5, patches=4, tokens=5, sentences=3)
    assert not f.token_mask.all() and not f.sub_mask.all()
    noisy = f.map(lambda x: x.clone())
    noisy.tokens[~f.token_mask] = 100 * torch.randn(int((~f.token_mask).sum()), 4).double()
    noisy.subs[~f.sub_mask] = F.normalize(torch.randn(int((~f.sub_mask).sum()), 4).double(), dim=-1)
    loss = MulCLIPLoss(sub_topk=2)
    (value, grads), (noisy_value, noisy_grads) = (
        value_and_grads(lambda x: loss(x, 5.0).total, features) for features in (f, noisy)
    )
    assert torch.allclose(value, noisy_value, atol=1e-12)
    for key, grad in grads.items():
        assert torch.allclose(grad, noisy_grads[key], atol=1e-12), key
    assert (grads["tokens"][~f.token_mask] == 0).all() and (grads["subs"][~f.sub_mask] == 0).all()


def test_mulclip_without_word_and_sub_terms_is_its_global_term():
    """L_global sums CLIP's loss on the long and on the short caption (weight 1, as its reviewers
    describe it), or weighs the short one by short_weight."""
    f = peer_features(6, 5, 7)
    out = MulCLIPLoss(word_weight=0.0, sub_weight=0.0)(f, 4.0)
    assert torch.equal(out.total, out.terms["global"])
    clip = ClipLoss()
    long, short = (clip(Features(f.u, y), 4.0).total for y in (f.t, f.t_short))
    assert torch.allclose(out.total, long + short, atol=1e-12)
    half = MulCLIPLoss(word_weight=0.0, sub_weight=0.0, short_weight=0.5)(f, 4.0)
    assert torch.allclose(half.total, long + short / 2, atol=1e-12)
    assert out.terms["word"] > 0 and out.terms["sub"] > 0
    assert MulCLIPLoss()(f, 4.0).total > out.total


def test_float_copies_of_the_masks_give_the_same_loss():
    """The training step casts every field to fp32, masks included: 0/1 masks keep their
    meaning."""
    f = peer_features(5, 4, 8, patches=3, tokens=4, sentences=3)
    loss = MulCLIPLoss(sub_topk=2)
    cast = f.map(lambda x: x.float())
    assert cast.token_mask.dtype == torch.float32
    assert torch.allclose(loss(cast, 3.0).total.double(), loss(f, 3.0).total, atol=1e-5)


@pytest.mark.parametrize("name", ["smartclip", "clip", "longclip", "mulclip"])
@pytest.mark.parametrize("negatives", [False, True])
def test_local_rows_of_global_loss_average_to_the_global_loss(name, negatives):
    """Split a batch of 8 into 'ranks' of 5 and 3 rows: each computes its rows against gathered
    features, weighted by W·b_r/B (`distributed.local_weight`); DDP's average over the W ranks
    equals the single-process loss, in value and in the gradient of every input."""
    full = peer_features(8, 5, 3, patches=4, tokens=5, sentences=3)
    g = torch.Generator().manual_seed(0)
    full.m = (torch.randn(8, 5, generator=g, dtype=torch.float64) > 0).double()
    if negatives:
        full.t_neg = F.normalize(torch.randn(8, 2, 5, generator=g, dtype=torch.float64), dim=-1)
        full.m_neg = (torch.rand(8, 2, 5, generator=g) > 0.3).double()
    # PCA and top-k both bite; Long-CLIP's global PCA (the per-rank one depends on the split)
    objective = build_objective(name, pca_components=2, pca_scope="global", sub_topk=2)
    whole, whole_grads = value_and_grads(lambda f: objective(f, 4.0).total, full)

    def ddp_average(f: Features) -> torch.Tensor:
        world, parts = 2, []
        for offset, rows in ((0, 5), (5, 3)):
            local = f.map(lambda x, o=offset, r=rows: x[o : o + r])
            parts.append(objective(local, 4.0, f, offset).total * (world * rows / 8))
        return sum(parts) / world

    split, split_grads = value_and_grads(ddp_average, full)
    assert torch.allclose(split, whole, atol=1e-12)
    assert split_grads.keys() == whole_grads.keys()
    for key, grad in whole_grads.items():
        assert (grad is None) == (split_grads[key] is None), key
        if grad is not None:
            assert torch.allclose(split_grads[key], grad, atol=1e-12), key


def stacked(parts: list[Features]) -> Features:
    """The features of several groups of rows, concatenated (what a gather returns)."""
    return Features(
        **{
            f.name: None
            if getattr(parts[0], f.name) is None
            else torch.cat([getattr(p, f.name) for p in parts])
            for f in fields(Features)
        }
    )


def test_per_rank_pca_matches_a_per_rank_naive_reference():
    """Long-CLIP as released: each rank takes the PCA of its own rows before the gather. Ranks of
    5 and 3 rows (each running `before_gather`, then its rows against the gathered features,
    weighted by W·b_r/B) average to the loss whose coarse features are PCA'd rank by rank, in
    value and in every gradient; one process that ran `before_gather` on the same two groups
    (micro-batches) gives it too. It differs from the global PCA's loss: the split matters."""
    full = peer_features(8, 6, 11)
    k, eps, weights, groups = 1, 0.1, (1.0, 1.0), (5, 3)
    objective = build_objective("longclip", pca_components=k)
    assert objective.pca_scope == "rank"
    bounds = [(0, 5), (5, 3)]

    def ranks(f: Features) -> list[Features]:
        return [
            before_gather(objective, f.map(lambda x, o=o, r=r: x[o : o + r])) for o, r in bounds
        ]

    def ddp_average(f: Features) -> torch.Tensor:
        local = ranks(f)
        gathered = stacked(local)
        parts = [
            objective(part, 4.0, gathered, offset).total * (2 * rows / 8)
            for part, (offset, rows) in zip(local, bounds, strict=True)
        ]
        return sum(parts) / 2

    want = value_and_grads(lambda f: naive_longclip(f, 4.0, k, eps, weights, groups), full)
    assert_same(value_and_grads(ddp_average, full), want)
    one_process = value_and_grads(lambda f: objective(stacked(ranks(f)), 4.0).total, full)
    assert_same(one_process, want)
    global_pca = LongCLIPLoss(pca_components=k, pca_scope="global")(full, 4.0).total
    assert not torch.allclose(global_pca, want[0], atol=1e-3)


def test_per_rank_pca_without_before_gather_is_refused():
    full = peer_features(4, 5, 2)
    local = full.map(lambda x: x[:2])
    with pytest.raises(ValueError, match="before_gather"):
        LongCLIPLoss(pca_components=1)(local, 4.0, full, 0)
    global_ = LongCLIPLoss(pca_components=1, pca_scope="global")
    assert before_gather(global_, local) is local and before_gather(ClipLoss(), local) is local


def test_synthetic_longclip_keeps_the_configured_share_of_components():
    """The synthetic Long-CLIP (its objective built as `fit` builds it, on the 16-dim embedding of
    the quick world's model) keeps round(16/16) = 1 principal component by default, the release's
    share 32/512, so its coarse term is coarse; other shares and a fixed k keep what they say."""
    world = World(WorldConfig(seed=1))
    cfg = FitConfig(objective="longclip", steps=1, batch_size=64)
    batch = training_batch(world, cfg, 0)
    with torch.no_grad():
        f = build_model(world, cfg)(batch.x, batch.t, None, batch.t_short)
    assert f.u.shape[1] == cfg.embed_dim == 16
    settings = {"weights": cfg.loss_weights, "sparsity": cfg.sparsity, "norm_floor": 1.0}
    for extra, kept in (({}, 1), ({"pca_share": 0.25}, 4), ({"pca_components": 3}, 3)):
        objective = build_objective("longclip", **settings, **extra)
        coarse = objective.before_gather(f).u_coarse
        assert torch.linalg.matrix_rank(coarse - coarse.mean(0)) == kept
        want = naive_pca(F.normalize(f.u.double(), dim=-1), kept)
        assert torch.allclose(coarse.double(), want, atol=1e-4)
    for dim, kept in ((512, 32), (768, 48), (16, 1), (4, 1)):
        assert LongCLIPLoss().components(dim) == kept
    for share, kept in ((1 / 16, 1), (0.25, 4), (1.0, 16)):  # the flag a synthetic run sets
        objective = objective_for(FitConfig(objective="longclip", pca_share=share))
        coarse = objective.before_gather(f).u_coarse
        assert torch.linalg.matrix_rank(coarse - coarse.mean(0)) == kept


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


def test_build_objective_passes_each_class_its_own_settings():
    """The trainer hands every objective the same keyword arguments; each class takes its own
    (SmartCLIP's three `weights` must not reach the long-caption objectives)."""
    shared = {"weights": (10.0, 10.0, 2.0), "sparsity": "abs", "norm_floor": 1.0}
    long = build_objective("longclip", **shared, pca_components=4, label_smoothing=0.0)
    assert (long.pca_components, long.label_smoothing) == (4, 0.0)
    assert (long.fine_weight, long.coarse_weight) == (1.0, 1.0)
    default = build_objective("longclip")
    assert (default.pca_components, default.pca_share, default.pca_scope) == (None, 1 / 16, "rank")
    assert default.label_smoothing == 0.1
    mul = build_objective("mulclip", **shared, sub_topk=3, word_weight=0.5)
    assert (mul.sub_topk, mul.word_weight, mul.sub_weight, mul.short_weight) == (3, 0.5, 1.0, 1.0)
    assert (mul.attn_temperature, mul.word_temperature) == (0.1, 0.1)
    assert build_objective("mulclip").sub_topk == 16


def test_long_caption_objectives_name_what_they_miss_and_reject_bad_settings():
    u, t, _ = inputs(3, 3, 0)
    with pytest.raises(ValueError, match="t_short"):
        LongCLIPLoss()(Features(u, t), 1.0)
    with pytest.raises(ValueError, match="patches"):
        MulCLIPLoss()(Features(u, t, t_short=t), 1.0)
    for cls, field in ((LongCLIPLoss, "t_short"), (MulCLIPLoss, "sub_mask")):
        assert field in cls.consumes and {"u", "t"} <= cls.consumes
    with pytest.raises(ValueError, match="pca_components"):
        LongCLIPLoss(pca_components=0)
    with pytest.raises(ValueError, match="pca_share"):
        LongCLIPLoss(pca_share=0.0)
    with pytest.raises(ValueError, match="pca_scope"):
        LongCLIPLoss(pca_scope="node")
    with pytest.raises(ValueError, match="label_smoothing"):
        LongCLIPLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="temperatures"):
        MulCLIPLoss(attn_temperature=0.0)
    with pytest.raises(ValueError, match="sub_topk"):
        MulCLIPLoss(sub_topk=0)
