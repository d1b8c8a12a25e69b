"""The continuous token world: a positive C^∞ density on z_inv, diffeomorphic generators with
closed-form inverses, seeded samples, and targets named as the discrete world names them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from synthetic.continuous_tokens import ContinuousTokenConfig, ContinuousTokenWorld, SmoothMixing
from synthetic.mixing import InvertibleMLP
from synthetic.seeding import stream
from synthetic.tokens import TokenWorld, TokenWorldConfig

WORLD = ContinuousTokenWorld(ContinuousTokenConfig())
TOKENS = TokenWorld(TokenWorldConfig())


def test_sizes_follow_the_config():
    c = WORLD.config
    assert WORLD.z_dim == c.n_objects * (c.shape_dim + c.color_dim) == 20
    assert WORLD.x_dim == WORLD.z_dim + c.img_nuisance_dim
    assert WORLD.text_input == WORLD.t_dim == WORLD.z_dim + c.txt_nuisance_dim
    wide = ContinuousTokenWorld(ContinuousTokenConfig(n_objects=3, shape_dim=4, color_dim=1))
    assert wide.z_dim == 15


def test_log_density_is_the_standard_normal_finite_everywhere_with_gradient_minus_z():
    batch = WORLD.sample(500, stream(0, "eval", 0))
    far = torch.full((1, WORLD.z_dim), 60.0)
    z = torch.cat([batch.z, far, torch.zeros(1, WORLD.z_dim)]).double().requires_grad_()
    log_p = WORLD.log_density(z)
    reference = stats.multivariate_normal(np.zeros(WORLD.z_dim)).logpdf(z.detach().numpy())
    np.testing.assert_allclose(log_p.detach().numpy(), reference, rtol=1e-12)
    assert torch.isfinite(log_p).all()
    (grad,) = torch.autograd.grad(log_p.sum(), z)
    torch.testing.assert_close(grad, -z.detach(), rtol=0, atol=1e-12)
    assert log_p[-1].item() == pytest.approx(-0.5 * WORLD.z_dim * math.log(2 * math.pi))


def test_samples_are_standard_normal_latents_rendered_by_both_generators():
    batch = WORLD.sample(4000, stream(1, "eval", 0))
    assert batch.z.shape == (4000, WORLD.z_dim) and batch.t_neg is None
    assert batch.z.mean(0).abs().max() < 0.08 and (batch.z.std(0) - 1).abs().max() < 0.06
    torch.testing.assert_close(batch.x, WORLD.g_img(torch.cat([batch.z, batch.s_img], 1)))
    torch.testing.assert_close(batch.t, WORLD.g_txt(torch.cat([batch.z, batch.s_txt], 1)))


def test_the_activation_is_smooth_where_leaky_relu_is_not_and_its_inverse_is_closed_form():
    g = SmoothMixing(3, 2, slope=0.2, smoothness=0.5)
    v = torch.cat([torch.linspace(-1e3, 1e3, 2001), torch.linspace(-1e-3, 1e-3, 2001)]).double()
    torch.testing.assert_close(g.activation_inverse(g.activation(v)), v, rtol=1e-12, atol=1e-12)
    for eps in (1e-3, 1e-6):
        side = torch.tensor([-eps, eps], dtype=torch.float64, requires_grad=True)
        (smooth,) = torch.autograd.grad(g.activation(side).sum(), side)
        leaky = torch.nn.functional.leaky_relu(side, 0.2)
        (kink,) = torch.autograd.grad(leaky.sum(), side)
        assert abs(smooth[1] - smooth[0]) < 2 * eps  # σ' is continuous at 0 (σ'' bounded)
        assert abs(kink[1] - kink[0]) == pytest.approx(0.8)  # LeakyReLU's jumps by 1 − α
    x = torch.linspace(-50, 50, 10_001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(g.activation(x).sum(), x)
    assert (slope > 0.2).all() and (slope < 1).all()
    # as β → 0, σ tends to LeakyReLU(α)
    sharp = SmoothMixing(3, 2, slope=0.2, smoothness=1e-9)
    torch.testing.assert_close(sharp.activation(v), torch.nn.functional.leaky_relu(v, 0.2))


def test_generators_round_trip_and_their_jacobians_are_conditioned_as_the_bound_says():
    batch = WORLD.sample(300, stream(2, "eval", 0))
    for g, data in ((WORLD.g_img, batch.x), (WORLD.g_txt, batch.t)):
        v = torch.randn(300, g.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        torch.testing.assert_close(g.inverse(g(v)), v, rtol=0, atol=1e-10)
        torch.testing.assert_close(g(g.inverse(v)), v, rtol=0, atol=1e-10)
        latent = g.inverse(data.double())
        c, layers = WORLD.config, len(g.weights)
        bound = c.max_cond**layers / c.slope ** (layers - 1)  # Π cond(W_l) · max σ' / min σ'
        for row in latent[:20]:
            jac = torch.autograd.functional.jacobian(g, row)
            assert torch.linalg.cond(jac).item() <= bound
    latent = WORLD.g_img.inverse(batch.x.double())
    torch.testing.assert_close(latent[:, : WORLD.z_dim].float(), batch.z, rtol=0, atol=1e-4)
    latent = WORLD.g_txt.inverse(batch.t.double())
    torch.testing.assert_close(latent[:, WORLD.z_dim :].float(), batch.s_txt, rtol=0, atol=1e-4)


def test_the_same_seed_gives_the_same_world_and_samples_and_another_does_not():
    twin = ContinuousTokenWorld(ContinuousTokenConfig())
    a, b = WORLD.sample(50, stream(4, "eval", 0)), twin.sample(50, stream(4, "eval", 0))
    for name in ("x", "t", "z", "s_img", "s_txt"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    other = WORLD.sample(50, stream(4, "eval", 1))
    assert not torch.equal(a.z, other.z)
    reseeded = ContinuousTokenWorld(ContinuousTokenConfig(seed=1))
    assert not torch.equal(reseeded.g_img.weights, WORLD.g_img.weights)
    c = reseeded.sample(50, stream(4, "eval", 0))
    assert torch.equal(c.z, a.z) and not torch.equal(c.x, a.x)


def test_targets_slice_z_by_object_as_the_discrete_world_names_them():
    batch = WORLD.sample(10, stream(5, "eval", 0))
    targets = WORLD.targets(batch.z)
    discrete = TOKENS.targets(TOKENS.sample_scenes(2, stream(0, "eval", 0)))
    assert set(targets) == set(discrete) - {"layout"}
    c = WORLD.config
    order = [targets[f"{k}{p}"] for p in range(c.n_objects) for k in ("shape", "color")]
    assert torch.equal(torch.cat(order, 1), batch.z)
    assert all(targets[f"shape{p}"].shape[1] == c.shape_dim for p in range(c.n_objects))
    assert all(targets[f"color{p}"].shape[1] == c.color_dim for p in range(c.n_objects))


def test_bad_configs_are_refused():
    for bad in ({"smoothness": 0.0}, {"slope": 0.0}, {"slope": 1.5}, {"n_objects": 0}):
        with pytest.raises(ValueError):
            ContinuousTokenConfig(**bad)
    assert isinstance(WORLD.g_img, InvertibleMLP)
