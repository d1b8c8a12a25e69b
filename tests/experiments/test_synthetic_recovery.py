import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import synthetic_recovery
import torch
from claims import measured_values

import sweep
from identifiability.conditions import CAPACITY_FACTOR, check_prediction, predict
from smartclip.cli import parse_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "synthetic_recovery.py"
TINY = [
    "--steps",
    "60",
    "--batch-size",
    "64",
    "--n-eval",
    "240",
    "--max-subsets",
    "2",
    "--hidden",
    "32",
    "--text-width",
    "16",
    "--workers",
    "1",
]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--steps", "0"], "--steps"),
        (["--n-blocks", "-1"], "--n-blocks"),
        (["--block-dim", "0"], "--block-dim"),
        (["--preset", "huge"], "--preset"),
        (["--objectives", "clip,magic"], "--objectives"),
        (["--seeds", "1,x"], "--seeds"),
        (["--seeds", "-3"], "--seeds"),
        (["--batch-size", "abc"], "--batch-size"),
        (["--worlds", "atlantis"], "--worlds"),
    ],
)
def test_bad_values_exit_with_one_line_naming_the_flag(args, flag, one_line_error):
    one_line_error(synthetic_recovery.main, args, flag)


def test_script_error_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "-5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "synthetic_recovery.py: error: --steps: must be positive, got -5"
    ]


def test_presets_and_flags_compose():
    parser_cfg = synthetic_recovery.RecoveryConfig
    cfg = parse_config(
        parser_cfg, ["--preset", "paper", "--steps", "123"], synthetic_recovery.PRESETS
    )
    assert cfg.seeds == (0, 1, 2) and cfg.steps == 123 and len(cfg.worlds) == 4
    assert parse_config(parser_cfg, [], synthetic_recovery.PRESETS) == parser_cfg()


def test_measure_reports_every_quantity_for_smartclip(tmp_path):
    cfg = synthetic_recovery.RecoveryConfig(steps=30, batch_size=64, hidden=32, text_width=16)
    world = synthetic_recovery.World(cfg.world_config("custom", 0))
    fit_config = synthetic_recovery.FitConfig(**cfg.settings(), objective="smartclip")
    ctx = sweep.RunContext(lambda n: None, tmp_path / "log")
    rows = synthetic_recovery.run_one(ctx, world.config, fit_config, 240, 3)
    frame = pd.DataFrame(rows)
    quantities = set(frame.quantity)
    assert {
        "input_r2",
        "preserve_r2",
        "preserve_r2_linear",
        "nuisance_r2",
        "mcc",
        "mcc_spearman",
        "reverse_r2",
        "disentangle_in_r2",
        "disentangle_out_r2",
        "mask_on",
        "final_loss",
        "final_mask_on",
        "final_mask_varying",
    } <= quantities
    trace = pd.read_csv(tmp_path / "log" / "train.csv")  # the mask's health, per logged step
    assert trace.step.tolist() == [30] and {"mask_on", "mask_varying", "lr"} <= set(trace.columns)
    assert set(frame[frame.quantity == "preserve_r2"].block) == {"z0", "z1", "z2", "z3"}
    inside = frame[frame.quantity == "disentangle_in_r2"]
    assert inside.subset.nunique() == 3
    # each subset's in-rows are exactly its blocks; the out-rows the others
    outside = frame[frame.quantity == "disentangle_out_r2"]
    for subset, rows in inside.groupby("subset"):
        assert set(rows.block) == set(subset.split("+"))
        assert set(outside[outside.subset == subset].block) == {"z0", "z1", "z2", "z3"} - set(
            subset.split("+")
        )
    assert len(frame[frame.quantity == "mask_on"]) == 4 * cfg.embed_dim


@pytest.mark.slow
def test_sweep_writes_outputs_and_resumes_without_redoing_runs(tmp_path, capsys):
    out = tmp_path / "out"
    args = [*TINY, "--out", str(out), "--seeds", "0,1"]
    synthetic_recovery.main(args)
    results = pd.read_csv(out / "results.csv")
    assert {"world", "objective", "seed", "quantity", "block", "value", "run"} <= set(
        results.columns
    )
    assert set(results.objective) == {"smartclip", "clip"} and set(results.seed) == {0, 1}
    for name in ("config.json", "preserve.png", "disentangle.png", "summary.md"):
        assert (out / name).exists(), name
    # a sweep killed before one run finished: only that run is redone
    runs = out / "runs"
    stamps = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.csv")}
    assert len(stamps) == 4
    (killed,) = runs.glob("custom-clip-seed1-*.csv")
    killed.unlink()
    capsys.readouterr()
    synthetic_recovery.main(args)
    assert "3 of 4 runs already done" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.csv")}
    assert after.keys() == stamps.keys()
    assert all(after[k] == v for k, v in stamps.items() if k != killed.name)
    resumed = pd.read_csv(out / "results.csv")
    assert len(resumed) == len(results)


@pytest.mark.slow
def test_a_changed_flag_runs_anew_and_outputs_describe_the_same_runs(tmp_path, capsys):
    """Resume is keyed by the full configuration: rerunning into the same --out with another
    logit scale trains again (it once reused the old run and relabelled it), and config.json,
    results.csv and summary.md all describe the new runs."""
    out = tmp_path / "out"
    base = [*TINY, "--out", str(out), "--objectives", "smartclip"]
    synthetic_recovery.main([*base, "--logit-scale", "30"])
    first = pd.read_csv(out / "results.csv", dtype={"run": str})
    capsys.readouterr()
    synthetic_recovery.main([*base, "--logit-scale", "100"])
    said = capsys.readouterr().out
    assert "already done" not in said
    assert "logit_scale (--logit-scale): 30.0 → 100.0" in said
    config = json.loads((out / "config.json").read_text())
    second = pd.read_csv(out / "results.csv", dtype={"run": str})
    assert config["config"]["logit_scale"] == 100.0
    assert set(second.run) == set(config["runs"].values()) != set(first.run)
    run_config = json.loads(
        (out / "runs" / f"custom-smartclip-seed0-{second.run[0]}.json").read_text()
    )
    assert run_config["kwargs"]["fit_config"]["logit_scale"] == 100.0
    assert not second.value.equals(first.value)
    summary = (out / "summary.md").read_text()
    cfg = parse_config(synthetic_recovery.RecoveryConfig, [*base, "--logit-scale", "100"])
    assert summary == synthetic_recovery.summary_markdown(cfg, second)
    assert "1 seed: no verdict" in summary  # one seed decides no claim
    # the first setting again: its stored run is found, nothing retrains
    capsys.readouterr()
    synthetic_recovery.main([*base, "--logit-scale", "30"])
    assert "1 of 1 runs already done" in capsys.readouterr().out
    assert pd.read_csv(out / "results.csv", dtype={"run": str}).equals(first)


class OracleModel(torch.nn.Module):
    """An encoder built from the world's own inverses: u = (z, s_I, 1), the exact latents, the
    image nuisance and a constant dimension (the normalised masked embedding needs one beyond the
    block, see the README); the mask network reads which blocks the caption describes (inverting
    g_T) and keeps their dims and the constant one, and the nuisance's dims only with
    `nuisance_in_mask`. With `shift` the mask of block k keeps block k − shift's dims instead: a
    wrong mask."""

    def __init__(
        self, world: synthetic_recovery.World, shift: int = 0, nuisance_in_mask: bool = False
    ) -> None:
        super().__init__()
        self.world, self.shift = world, shift
        c = world.config
        self.dims = torch.zeros(c.n_blocks, c.latent_dim + c.img_nuisance_dim + 1)
        for k, s in enumerate(c.block_slices):
            self.dims[(k + shift) % c.n_blocks, s] = 1.0
        self.dims[:, c.latent_dim : c.latent_dim + c.img_nuisance_dim] = float(nuisance_in_mask)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.world.g_img.inverse(x.double()).float()
        return torch.cat([latents, torch.ones(len(latents), 1)], dim=1)

    def encode_text(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.world.config
        present = self.world.g_txt.inverse(t.double())[:, c.latent_dim : c.latent_dim + c.n_blocks]
        return t, present.round().float()

    def masknet(self, present: torch.Tensor) -> torch.Tensor:
        mask = (present @ self.dims).clamp(max=1.0)
        mask[:, -1] = 1.0
        return mask


def frame_of(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_measure_on_an_exact_inverse_encoder_and_on_a_wrong_mask():
    """measure() must report in-subset R² ≈ 1 and out-of-subset ≈ 0 for the ideal SmartCLIP
    encoder, and the reverse when the masks select the wrong blocks: a wrong split of in/out
    blocks or wrong regression targets would fail one of the two."""
    world = synthetic_recovery.World(synthetic_recovery.RecoveryConfig().world_config("custom", 0))
    good = frame_of(synthetic_recovery.measure(world, OracleModel(world), 400, 5, seed=0))
    bad = frame_of(synthetic_recovery.measure(world, OracleModel(world, shift=1), 400, 5, seed=0))

    def values(frame, quantity):
        return frame[frame.quantity == quantity].value

    assert values(good, "preserve_r2").min() > 0.98
    assert values(good, "preserve_r2_linear").min() > 0.98
    assert values(good, "nuisance_r2").min() > 0.95  # u keeps s_I in dims no mask selects
    assert values(good, "nuisance_v_r2").max() < 0.05  # the masked v drops it
    assert values(good, "mcc").item() > 0.95
    assert values(good, "disentangle_in_r2").min() > 0.85
    assert values(good, "disentangle_out_r2").max() < 0.05
    on = good[good.quantity == "mask_on"]
    dims = OracleModel(world).dims
    own = on.apply(lambda r: bool(dims[int(r.block[1:]), int(r.dim)] == 1), axis=1)
    assert (on[own].value == 1).all() and (on[~own].value.abs() < 0.2).all()
    share = good[good.quantity.isin(["mask_dims", "mask_shared_dims"])]
    assert (share[share.quantity == "mask_dims"].value == 2).all()  # block_dim 2, none shared
    assert (share[share.quantity == "mask_shared_dims"].value == 0).all()
    block = good[good.quantity == "block_r2"]
    diagonal = block.block == block.subset.str.slice(5, -1)
    assert block[diagonal].value.min() > 0.95 and block[~diagonal].value.max() < 0.05

    alone = bad[bad.subset.isin(["z0", "z1", "z2", "z3"]) & (bad.block != "s_img")]
    assert values(alone, "disentangle_in_r2").max() < 0.1  # the block is not in its mask
    shifted = alone[alone.apply(lambda r: int(r.block[1:]) == (int(r.subset[1:]) - 1) % 4, axis=1)]
    assert len(shifted) == 4 and values(shifted, "disentangle_out_r2").min() > 0.9


@pytest.mark.slow
def test_the_nuisance_claim_is_on_the_masked_embedding():
    """P1's "drops s_I" is predicted for v: an encoder that keeps s_I in dimensions no mask
    selects passes it (though u holds s_I), one whose masks select s_I's dimensions fails it."""
    world = synthetic_recovery.World(synthetic_recovery.RecoveryConfig().world_config("custom", 0))
    prediction = predict(world, "smartclip", subsets=world.config.support()[:4])

    def nuisance_claims(model) -> list[bool | None]:
        frame = frame_of(synthetic_recovery.measure(world, model, 400, 4, seed=0))
        outcomes = check_prediction(prediction, measured_values(frame.assign(seed=0)))
        return [o.held for o in outcomes if o.expectation.quantity == "nuisance_v_r2"]

    assert not any(e.quantity == "nuisance_r2" for e in prediction.expectations)
    kept_aside = nuisance_claims(OracleModel(world))
    masked = nuisance_claims(OracleModel(world, nuisance_in_mask=True))
    assert len(kept_aside) == len(masked) == 4
    assert all(kept_aside) and not any(masked)


@pytest.mark.slow
def test_one_and_two_workers_give_bitwise_the_same_results(tmp_path):
    """Each job computes in its own single-threaded worker on the pinned CPU paths, so the
    number of workers changes nothing, to the last bit; config.json records the machine."""
    args = [*TINY, "--seeds", "0,1", "--objectives", "smartclip", "--steps", "40"]
    synthetic_recovery.main([*args, "--out", str(tmp_path / "one")])
    synthetic_recovery.main([*args, "--out", str(tmp_path / "two"), "--workers", "2"])
    one, two = ((tmp_path / d / "results.csv").read_bytes() for d in ("one", "two"))
    assert one == two
    machine = json.loads((tmp_path / "two" / "config.json").read_text())["machine"]
    assert machine["cpu_paths"] == "avx2" and machine["pinned"]["MKL_CBWR"] == "AVX2"
    assert torch.__version__.startswith(machine["versions"]["torch"])


def test_a_world_near_capacity_is_warned_about_before_training():
    # custom world: 5 blocks × 3 dims, d = 15, the default width 16 is inside d ≤ D < c·d
    near = synthetic_recovery.RecoveryConfig(n_blocks=5, block_dim=3)
    (line,) = synthetic_recovery.capacity_warnings(near)
    wide = math.ceil(CAPACITY_FACTOR * 15)
    assert line.startswith("warning: custom: embedding width 16 is near capacity")
    assert f"--embed-dim {wide} leaves the band" in line
    cleared = dataclasses.replace(near, embed_dim=wide)
    assert synthetic_recovery.capacity_warnings(cleared) == []
    assert not predict(cleared.world_config("custom", 0), embed_dim=wide).near_capacity
    # no SmartCLIP run: nothing to warn about; no sparsity term: the map lost blocks there too
    clip_only = dataclasses.replace(near, objectives=("clip",))
    assert synthetic_recovery.capacity_warnings(clip_only) == []
    no_sparsity = dataclasses.replace(near, loss_weights=(10.0, 10.0, 0.0))
    assert synthetic_recovery.capacity_warnings(no_sparsity) == [line]
    # the default world (d = 8, D = 16) trains without a warning
    assert synthetic_recovery.capacity_warnings(synthetic_recovery.RecoveryConfig()) == []
