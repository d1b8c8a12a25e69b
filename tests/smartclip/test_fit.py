"""The synthetic fit: every purpose draws from its own stream, so held-out means disjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartclip.fit import FitConfig, build_model, held_out_batch, training_batch
from synthetic.worlds import World, WorldConfig


def longest_presets() -> list[tuple[int, int, int, int]]:
    """(steps, batch size, evaluation samples, evaluated subsets) of the longest sweeps the
    experiments define (--preset paper of synthetic_recovery, the violations run)."""
    import assumption_violations
    import synthetic_recovery

    recovery = synthetic_recovery.RecoveryConfig(
        **synthetic_recovery.PRESETS["paper"]  # type: ignore[arg-type]
    )
    violations = assumption_violations.ViolationConfig()
    return [(c.steps, c.batch_size, c.n_eval, c.max_subsets) for c in (recovery, violations)]


@pytest.mark.slow
def test_no_evaluation_latent_equals_a_training_latent_in_the_longest_preset():
    """The old offsets (training seed·1,000,003 + 17 + step, evaluation 10,000 + seed) made the
    last training batches of a 10k-step run the evaluation set; streams keyed by purpose cannot
    meet, for any number of steps."""
    steps, batch, n_eval, subsets = max(longest_presets())
    seed = 0  # with the old offsets, step 9,983 of seed 0 was the evaluation set
    world = World(WorldConfig(seed=seed))
    held_out = [held_out_batch(world, n_eval, seed)]
    held_out += [
        held_out_batch(world, n_eval, seed, 1 + i, s)
        for i, s in enumerate(world.config.support()[:subsets])
    ]
    evaluation = torch.cat([b.z for b in held_out]).numpy()
    first = set(evaluation[:, 0].tolist())
    cfg = FitConfig(steps=steps, batch_size=batch, seed=seed)
    for step in range(steps):
        z = training_batch(world, cfg, step).z.numpy()
        candidates = np.isin(z[:, 0], list(first))  # a full-row match needs this first
        for row in z[candidates]:
            assert not (evaluation == row).all(1).any(), f"step {step} meets the evaluation set"


def test_streams_are_reproducible_and_distinct_per_purpose():
    world = World(WorldConfig(seed=1))
    cfg = FitConfig(seed=1)
    a, b = training_batch(world, cfg, 5), training_batch(world, cfg, 5)
    assert torch.equal(a.z, b.z) and not torch.equal(a.z, training_batch(world, cfg, 6).z)
    assert not torch.equal(held_out_batch(world, 512, 1).z, training_batch(world, cfg, 0).z)
    torch.manual_seed(123)  # the global RNG does not matter: init has its own stream
    first = build_model(world, cfg).state_dict()
    torch.manual_seed(456)
    second = build_model(world, cfg).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = build_model(world, FitConfig(seed=2)).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)
