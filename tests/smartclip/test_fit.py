"""The synthetic fit: every purpose draws from its own stream, so held-out means disjoint;
gradient clipping bounds what each update uses and is off by default; mined hard negatives are
what their names say."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from smartclip.cli import ConfigError, parse_config
from smartclip.encoders import SyntheticCLIP
from smartclip.fit import (
    FitConfig,
    TrainSettings,
    build_model,
    fit,
    held_out_batch,
    training_batch,
)
from smartclip.losses import build_objective
from synthetic.seeding import stream
from synthetic.token_operators import edit_depths
from synthetic.tokens import OPERATORS, TokenWorld, TokenWorldConfig
from synthetic.worlds import World, WorldConfig

SMALL = {"steps": 6, "batch_size": 64, "hidden": 32, "text_width": 16, "warmup": 2, "log_every": 1}


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


def test_long_clip_trains_on_the_batch_short_captions():
    """Step 0's loss is Long-CLIP's on the fresh model with the batch's own short captions, which
    differs from the loss with the long captions in their place."""
    world, cfg = (
        World(WorldConfig(seed=1)),
        FitConfig(objective="longclip", **{**SMALL, "steps": 1}),
    )
    logged: list[float] = []
    fit(world, cfg, lambda s, terms, m: logged.append(terms["loss"]))
    model, batch = build_model(world, cfg), training_batch(world, cfg, 0)
    objective = build_objective("longclip")
    with torch.no_grad():
        want, wrong = (
            objective(model(batch.x, batch.t, None, short), model.logit_scale).total.item()
            for short in (batch.t_short, batch.t)
        )
    assert logged == [pytest.approx(want, rel=1e-6)]
    assert abs(wrong - want) > 1e-3


def gradient_norm(model: torch.nn.Module) -> float:
    """‖g‖₂ of the model's current gradients, viewed as one vector."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item()


def traced_fit(cfg: FitConfig, log_dir: Path) -> tuple[SyntheticCLIP, list[float], pd.DataFrame]:
    """A fit of the quick world (seed 1) with: the gradient norm each update used (after any
    clipping; `fit` clears the gradients only at the next step), and the logged train.csv."""
    used: list[float] = []
    model = fit(
        World(WorldConfig(seed=1)), cfg, lambda s, t, m: used.append(gradient_norm(m)), log_dir
    )
    return model, used, pd.read_csv(log_dir / "train.csv")


def test_clipping_bounds_the_gradient_of_every_update_and_logs_the_norm_before_it(tmp_path):
    free_model, free, free_log = traced_fit(FitConfig(**SMALL), tmp_path / "free")
    max_norm = min(free) / 10  # below every unclipped norm
    cfg = FitConfig(**SMALL, grad_clip_norm=max_norm)
    clipped_model, clipped, clipped_log = traced_fit(cfg, tmp_path / "clipped")
    assert len(clipped) == SMALL["steps"] and max(clipped) <= max_norm * (1 + 1e-5)
    # the clipped gradients are what the optimiser stepped with: the runs part ways
    free_state, clipped_state = free_model.state_dict(), clipped_model.state_dict()
    assert not all(torch.equal(free_state[k], clipped_state[k]) for k in free_state)
    # train.csv holds the norm before clipping: at step 1 both runs have the same gradient
    assert free_log.grad_norm.tolist() == pytest.approx(free, rel=1e-5)
    assert clipped_log.grad_norm[0] == pytest.approx(free[0], rel=1e-5)


def test_no_clipping_by_default_and_a_norm_above_every_gradient_changes_nothing(tmp_path):
    assert FitConfig().grad_clip_norm is None  # the release does not clip
    default_model, default_used, default_log = traced_fit(FitConfig(**SMALL), tmp_path / "a")
    cfg = FitConfig(**SMALL, grad_clip_norm=1e30)
    loose_model, loose_used, loose_log = traced_fit(cfg, tmp_path / "b")
    default_state, loose_state = default_model.state_dict(), loose_model.state_dict()
    assert all(torch.equal(default_state[k], loose_state[k]) for k in default_state)
    assert default_used == loose_used
    pd.testing.assert_frame_equal(default_log, loose_log)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_a_clip_norm_that_is_not_positive_and_finite_is_refused(bad):
    with pytest.raises(ConfigError, match="--grad-clip-norm: must be positive and finite"):
        FitConfig(grad_clip_norm=bad)


def test_the_clip_norm_flag_parses_and_a_bad_value_exits_with_one_line(capsys):
    assert parse_config(TrainSettings, ["--grad-clip-norm", "0.5"]).grad_clip_norm == 0.5
    assert parse_config(TrainSettings, ["--grad-clip-norm", "none"]).grad_clip_norm is None
    with pytest.raises(SystemExit) as exit_info:
        parse_config(TrainSettings, ["--grad-clip-norm", "-2"], prog="fit")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "fit: error: --grad-clip-norm: must be positive and finite (or none for no clipping), "
        "got -2.0"
    ]


# ------------------------------------------------------------------------------------- mining


@pytest.mark.parametrize("k", [1, 2, 3])
def test_mined_primitives_draw_what_apply_operator_drew(k):
    """Bare primitives applied negative_k times: the same negatives, from the same stream, as
    `TokenWorld.hard_negatives` (so runs mined before compositions existed are reproduced)."""
    world = TokenWorld(TokenWorldConfig())
    cfg = FitConfig(**SMALL, text_encoder="transformer", hard_negatives=OPERATORS, negative_k=k)
    got = training_batch(world, cfg, 3)
    gen = stream(cfg.seed, "train", 3)
    batch = world.sample(cfg.batch_size, gen)
    pick = torch.randint(len(OPERATORS), (cfg.batch_size,), generator=gen)
    scenes = world.hard_negatives(batch.scenes, [OPERATORS[i] for i in pick.tolist()], k, gen)
    assert torch.equal(got.t, batch.t)
    assert torch.equal(got.t_neg, world.negative_captions(batch, [[s] for s in scenes]))


def test_mined_compositions_and_in_vocabulary_operators_are_what_their_names_say():
    world = TokenWorld(TokenWorldConfig())
    names = ("swap^2∘add", "replace∘add^2", "object_swap")
    cfg = FitConfig(**SMALL, text_encoder="transformer", hard_negatives=names)
    batch = training_batch(world, cfg, 0)
    seen = set()
    for caption, negative in zip(batch.t, batch.t_neg[:, 0], strict=True):
        words, neg = world.words(caption), world.words(negative)
        depths = edit_depths(world, neg)
        if depths == {"swap": 2, "replace": 0, "add": 1}:
            seen.add(names[0])
        elif depths == {"swap": 0, "replace": 1, "add": 2}:
            seen.add(names[1])
        else:  # object_swap: two object phrases trade places, all else kept
            assert world.on_support(world.parse(neg)) and neg != words
            assert sorted(neg) == sorted(words)
            seen.add(names[2])
        assert world.repair(neg) == (words if depths["swap"] + depths["add"] else neg)
    assert seen == set(names)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"hard_negatives": ("bogus",)}, "--hard-negatives"),
        ({"hard_negatives": ("swap^0",)}, "--hard-negatives"),
        ({"hard_negatives": ("swap∘swap",)}, "--hard-negatives"),
        ({"hard_negatives": ("swap^2",), "negative_k": 2}, "--negative-k"),
        ({"hard_negatives": ("object_add",), "negative_k": 2}, "--negative-k"),
    ],
)
def test_bad_mined_names_are_refused(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        FitConfig(**kwargs)
