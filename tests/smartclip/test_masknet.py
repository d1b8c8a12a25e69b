import torch

from smartclip.masknet import CollapseWatch, MaskNet, straight_through_threshold


def test_straight_through_forward_hard_backward_identity():
    p = torch.tensor([0.2, 0.5, 0.7, 0.99], requires_grad=True)
    m = straight_through_threshold(p)
    assert torch.equal(m, torch.tensor([0.0, 1.0, 1.0, 1.0]))  # the release keeps p ≥ 0.5
    (m * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_masknet_shapes_hard_values_and_detached_input():
    torch.manual_seed(0)
    net = MaskNet(width=16, embed_dim=10, heads=4)
    states = torch.randn(3, 7, 16, requires_grad=True)
    m = net(states)
    assert m.shape == (3, 10)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    m.sum().backward()
    assert states.grad is None  # the text graph receives nothing from the mask network
    assert net.proj.weight.grad is not None and net.proj.weight.grad.abs().sum() > 0


def test_soft_mask_and_single_token_input():
    """[B, W] is one token per row, whose pooling weight is 1: p = sigmoid(W_o Block(s) + b_o).
    The soft mask is p itself, the hard one 1[p ≥ ½]; without detach the states get p's
    gradient."""
    torch.manual_seed(0)
    net = MaskNet(width=8, embed_dim=5, heads=2, hard=False, detach=False)
    states = torch.randn(4, 8, requires_grad=True)
    m = net(states)
    p = torch.sigmoid(net.proj(net.block(states[:, None, :])[:, 0]))
    torch.testing.assert_close(m, p)
    assert torch.equal(m, net(states[:, None, :]))
    assert len(m.unique()) == m.numel()  # graded values, not a thresholded 0/1 mask
    net.hard = True
    assert torch.equal(net(states), (p >= 0.5).float())
    (got,) = torch.autograd.grad(m.sum(), states)
    (want,) = torch.autograd.grad(p.sum(), states)
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, want)


def test_attention_pooling_weights_tokens_by_a_softmax_of_their_scores():
    """p = sigmoid(W_o Σ_l a_l h_l + b_o), a = softmax over the tokens of w_a · h, by hand."""
    torch.manual_seed(2)
    net = MaskNet(width=8, embed_dim=6, heads=2, hard=False)
    states = torch.randn(3, 5, 8)
    h = net.block(states)
    scores = h @ net.score.weight[0] + net.score.bias  # [3, 5]
    weights = scores.exp() / scores.exp().sum(1, keepdim=True)
    pooled = torch.einsum("bl,blw->bw", weights, h)
    want = torch.sigmoid(pooled @ net.proj.weight.T + net.proj.bias)
    torch.testing.assert_close(net(states), want)


def test_attention_pooling_is_permutation_invariant_over_tokens():
    torch.manual_seed(1)
    net = MaskNet(width=8, embed_dim=6, heads=2, hard=False)
    states = torch.randn(2, 5, 8)
    perm = torch.randperm(5)
    assert torch.allclose(net(states), net(states[:, perm]), atol=1e-6)


def test_collapse_watch_warns_once_per_collapse_after_patience(caplog):
    watch = CollapseWatch(patience=2)
    healthy, constant = {"mask_varying": 3.0, "mask_on": 5.0}, {"mask_varying": 0.0, "mask_on": 6.0}
    assert watch.update(10, healthy) is None
    assert watch.update(20, constant) is None  # one logged step is not yet a collapse
    message = watch.update(30, constant)
    assert message is not None and "step 30" in message and "6.0 dimensions" in message
    assert "no longer depends on the caption" in caplog.text
    assert watch.update(40, constant) is None  # said once
    assert watch.update(50, healthy) is None
    watch.update(60, constant)
    assert watch.update(70, constant) is not None  # a new collapse after a recovery
    assert CollapseWatch().update(1, {"loss": 1.0}) is None  # CLIP has no mask
