import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic.seeding import stream
from synthetic.worlds import World, WorldConfig


def test_same_seeds_give_bitwise_identical_samples():
    a = World(WorldConfig(seed=5)).sample(300, stream(9, "eval"))
    b = World(WorldConfig(seed=5)).sample(300, stream(9, "eval"))
    for name in ("x", "t", "z", "m", "s_img", "s_txt"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = World(WorldConfig(seed=5)).sample(300, stream(10, "eval"))
    assert not torch.equal(a.x, c.x)


def test_observations_invert_to_latents():
    world = World(WorldConfig(block_dims=(2, 3), img_nuisance_dim=1, txt_nuisance_dim=2))
    batch = world.sample(500, stream(0, "eval"))
    rec_x = world.g_img.inverse(batch.x.double()).float()
    assert torch.allclose(rec_x, torch.cat([batch.z, batch.s_img], 1), atol=1e-3)
    rec_t = world.g_txt.inverse(batch.t.double()).float()
    m_dims = torch.cat([batch.m[:, [0]].expand(-1, 2), batch.m[:, [1]].expand(-1, 3)], 1)
    assert torch.allclose(rec_t[:, :5], batch.z * m_dims, atol=1e-3)
    assert torch.allclose(rec_t[:, 5:7], batch.m, atol=1e-3)  # the caption says what it describes


def test_the_short_caption_describes_the_first_described_block_alone():
    """Inverting g_T: t_short carries the mask of the lowest-index described block, that block's
    latent (zeros elsewhere) and the caption's own nuisance; a one-block caption is its own."""
    dims = (2, 3, 1)
    world = World(WorldConfig(block_dims=dims, img_nuisance_dim=1, txt_nuisance_dim=2, seed=3))
    batch = world.sample(500, stream(0, "eval"))
    first = batch.m.argmax(1)
    assert (batch.m.sum(1) >= 2).sum() > 100 and len(set(first.tolist())) == 3
    one_hot = torch.nn.functional.one_hot(first, 3).float()
    keep = one_hot.repeat_interleave(torch.tensor(dims), dim=1)
    rec = world.g_txt.inverse(batch.t_short.double()).float()
    assert torch.allclose(rec[:, :6], batch.z * keep, atol=1e-3)
    assert torch.allclose(rec[:, 6:9], one_hot, atol=1e-3)
    assert torch.allclose(rec[:, 9:], batch.s_txt, atol=1e-3)
    single = batch.m.sum(1) == 1
    assert single.any() and torch.equal(batch.t_short[single], batch.t[single])


@settings(max_examples=20, deadline=None)
@given(
    probs=st.lists(st.floats(0.05, 0.95), min_size=2, max_size=5),
    seed=st.integers(0, 1000),
)
def test_inclusion_frequencies_and_no_empty_caption(probs, seed):
    world = World(WorldConfig(block_dims=(1,) * len(probs), include_prob=tuple(probs), seed=seed))
    m = world.sample(4000, stream(seed, "eval")).m.numpy()
    assert (m.sum(1) > 0).all()
    # conditioning on non-empty raises each rate by at most 1/P(non-empty)
    p_nonempty = 1 - np.prod([1 - p for p in probs])
    expected = np.array(probs) / p_nonempty
    assert np.all(np.abs(m.mean(0) - expected) < 0.05)


def test_explicit_subsets_always_blocks_and_fixed_masks():
    cfg = WorldConfig(
        block_dims=(1, 1, 1, 1), subsets=((0,), (1, 2)), subset_probs=(0.25, 0.75), always=(3,)
    )
    m = World(cfg).sample(4000, stream(1, "eval")).m.numpy()
    patterns = {tuple(np.flatnonzero(r)) for r in m}
    assert patterns == {(0, 3), (1, 2, 3)}
    assert abs(m[:, 0].mean() - 0.25) < 0.03
    assert cfg.support() == [(0, 3), (1, 2, 3)]
    fixed = World(cfg).sample(10, stream(1, "eval"), mask=(1,)).m
    assert torch.equal(fixed, torch.tensor([[0.0, 1, 0, 0]]).expand(10, 4))


def test_support_of_independent_inclusion():
    cfg = WorldConfig(block_dims=(1, 1, 1), include_prob=(1.0, 0.5, 0.0))
    assert cfg.support() == [(0,), (0, 1)]
    assert len(WorldConfig(block_dims=(1,) * 4).support()) == 15


def test_latent_correlation_between_blocks():
    world = World(WorldConfig(block_dims=(2, 2, 2), latent_corr=0.6))
    z = world.sample(20_000, stream(0, "eval")).z.numpy()
    corr = np.corrcoef(z.T)
    assert abs(corr[0, 2] - 0.6) < 0.03 and abs(corr[1, 5] - 0.6) < 0.03
    assert abs(corr[0, 1]) < 0.03  # within a block, dims stay independent


def test_selection_bias_makes_inclusion_depend_on_z():
    world = World(WorldConfig(block_dims=(1, 1), selection=3.0))
    b = world.sample(5000, stream(0, "eval"))
    z0, m0 = b.z[:, 0].numpy(), b.m[:, 0].numpy()
    assert m0[z0 > 1].mean() > m0[z0 < -1].mean() + 0.5


def test_observation_noise_is_added():
    clean = World(WorldConfig(seed=2)).sample(100, stream(3, "eval"))
    noisy = World(WorldConfig(seed=2, noise=0.5)).sample(100, stream(3, "eval"))
    assert torch.equal(clean.z, noisy.z)
    assert 0.3 < (noisy.x - clean.x).std() < 0.7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_dims": ()},
        {"block_dims": (2, 0)},
        {"include_prob": (0.5, 0.5, 0.5)},
        {"include_prob": (1.5,)},
        {"subsets": ((0, 9),)},
        {"subsets": ((0,), (1,)), "subset_probs": (0.5, 0.6)},
        {"latent_corr": 1.0},
        {"include_prob": (0.0,)},
        {"include_prob": (0.0,), "selection": 1.0},
    ],
)
def test_invalid_worlds_are_rejected(kwargs):
    with pytest.raises(ValueError):
        WorldConfig(**kwargs)
