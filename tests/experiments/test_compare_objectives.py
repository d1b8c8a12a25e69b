"""The comparison of objectives: configs, the curves, the orderings decided by the seed rule, the
step-time table (on hand-built results and logs), and a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import compare_objectives as co
import numpy as np
import open_clip
import pandas as pd
import pytest
from scipy import stats

from smartclip import bench
from smartclip.model import TINY_MODEL, build_model
from smartclip.step import objective_from_config


def test_fine_tuning_runs_share_all_but_the_objective():
    cfg = co.CompareConfig()
    runs = {o: co.TrainConfig(**cfg.train_settings(o, 1, None)) for o in co.OBJECTIVES}
    first = runs["clip"]
    for objective, train_config in runs.items():
        assert train_config.objective == objective and train_config.seed == 1
        same = {k: v for k, v in vars(train_config).items() if k != "objective"}
        assert same == {k: v for k, v in vars(first).items() if k != "objective"}
    assert cfg.train_settings("mulclip", 0, "w.bin")["pretrained"] == "w.bin"
    pretrain = co.TrainConfig(**cfg.train_settings("pretrain", 0, None))
    assert pretrain.objective == "clip" and pretrain.pretrained is None
    assert pretrain.epochs == cfg.pretrain_epochs and first.epochs == cfg.finetune_epochs
    assert first.save_frequency == 1 and pretrain.save_frequency == 0  # a curve point per epoch


def test_tiny_towers_keep_the_releases_shares():
    """Long-CLIP: 32 of 512 → 4 of 64 components; MulCLIP: the assumed top 16 of ViT-B/16's 39
    calibrated patches → 5 of the tiny towers' 12 (16 would select all of them)."""
    cfg = co.CompareConfig()
    longclip = co.TrainConfig(**cfg.train_settings("longclip", 0, None))
    assert objective_from_config(longclip).components(64) == 4 == 64 * 32 // 512
    mulclip = co.TrainConfig(**cfg.train_settings("mulclip", 0, None))
    tokens = build_model(TINY_MODEL, None, 77, with_mask=False, with_calibration=True)
    m = tokens.calibration.tokens_out
    assert m == 12 and mulclip.sub_topk == round(16 * m / 39) == 5 < m
    assert objective_from_config(mulclip).sub_topk == 5
    chosen = co.CompareConfig(pca_components=7, sub_topk=3)
    assert co.TrainConfig(**chosen.train_settings("longclip", 0, None)).pca_components == 7
    assert co.TrainConfig(**chosen.train_settings("mulclip", 0, None)).sub_topk == 3


def test_evaluation_files_point_at_the_images_from_anywhere(tmp_path, monkeypatch):
    """The scenes folder is often relative (runs/data/scenes); the written sets must not be. The
    short captions are the release's: the text before the first ". "."""
    from synthetic.scenes import write_dataset

    monkeypatch.chdir(tmp_path)
    write_dataset("scenes", 30, ("csv",))
    files = co.evaluation_files(co.Path("scenes"), tmp_path / "out")
    for kind, path in files.items():
        rows = list(co.csv.DictReader(path.open()))
        assert rows and all(co.Path(r["filepath"]).is_absolute() for r in rows), kind
        assert all(co.Path(r["filepath"]).is_file() for r in rows)
    long = list(co.csv.DictReader(files["long"].open()))
    short = list(co.csv.DictReader(files["short"].open()))
    assert [r["image_id"] for r in long] == [r["image_id"] for r in short]
    for a, b in zip(long, short, strict=True):
        assert b["title"] == a["title"].split(". ")[0]
    several = [b["title"] for a, b in zip(long, short, strict=True) if ". " in a["title"]]
    assert several and not any(t.endswith(".") for t in several)  # not the first sentence


# ------------------------------------------------------------------------ hand-built results


def row(world, objective, seed, step, quantity, value, block="", subset=""):
    return {
        "world": world, "objective": objective, "seed": seed, "step": step,
        "quantity": quantity, "block": block, "subset": subset, "dim": "", "value": value,
        "run": f"{world}{objective}{seed}",
    }  # fmt: skip


def retrieval(objective, seed, step, t2i, i2t):
    return [
        row("scenes", objective, seed, step, "retrieval", t2i, "long", "t2i_r1"),
        row("scenes", objective, seed, step, "retrieval", i2t, "long", "i2t_r1"),
    ]


def interval(values):
    """An independent 95 % t-interval: (mean, half-width)."""
    v = np.asarray(values, dtype=float)
    return v.mean(), stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))


def test_curves_start_at_the_pretrained_export_and_reduce_blocks():
    rows = retrieval("pretrain", 0, 0, 10.0, 20.0)
    rows += [
        row("scenes", "pretrain", 0, 0, "attribute_r2", v, b) for b, v in (("a", 0.2), ("b", 0.4))
    ]
    ends = {0: (12.0, 0.5, 0.9), 1: (13.0, 0.3, 0.5), 2: (15.5, 0.1, 0.2)}
    for seed, (t2i, r2a, r2b) in ends.items():
        rows += retrieval("clip", seed, 42, 11.0 + seed, 21.0)
        rows += retrieval("clip", seed, 84, t2i, 22.0)
        rows += [
            row("scenes", "clip", seed, 84, "attribute_r2", v, b)
            for b, v in (("a", r2a), ("b", r2b))
        ]
        rows += [
            row("custom", "smartclip", seed, s, "preserve_r2", v + seed / 10, f"z{k}")
            for s in (100, 200) for k, v in enumerate((0.9, 0.5, 0.7))
        ]  # fmt: skip
    table = co.curves(pd.DataFrame(rows)).set_index(["world", "objective", "step", "metric"])
    start = table.loc[("scenes", "clip", 0, "long t2i R@1")]
    assert (start["mean"], start.half, start.seeds) == (10.0, 0.0, 3)  # one export, every seed
    end = table.loc[("scenes", "clip", 84, "long t2i R@1")]
    mean, half = interval([12.0, 13.0, 15.5])
    assert end["mean"] == pytest.approx(mean) and end.half == pytest.approx(half)
    r2 = table.loc[("scenes", "clip", 84, "attribute R²")]
    assert r2["mean"] == pytest.approx(np.mean([0.7, 0.4, 0.15]))  # the blocks' mean per seed
    assert table.loc[("scenes", "clip", 0, "attribute R²")]["mean"] == pytest.approx(0.3)
    worst = table.loc[("custom", "smartclip", 200, "worst preserve R²")]
    assert worst["mean"] == pytest.approx(np.mean([0.5, 0.6, 0.7]))  # the worst block per seed
    assert ("scenes", "pretrain", 0, "long t2i R@1") not in table.index
    assert "custom" not in {w for w, o, s, m in table.index if s == 0}  # no start: trained anew
    cells = co.curve_table(co.curves(pd.DataFrame(rows)))
    assert cells.loc[("scenes", "clip", 84), "long t2i R@1"] == f"{mean:.3f} ± {half:.3f}"


def ordering_results(seeds=(0, 1, 2)):
    """End point at step 84: Long-CLIP − CLIP = +2, +3, +2.5 (above); SmartCLIP − Long-CLIP =
    −1, −2, −1.5 (below), having been −3, −4.5, −3.3 at step 42 (closing); MulCLIP − Long-CLIP =
    +1, −1, +0.5 (undecided)."""
    clip = {42: (10.0, 11.0, 12.0), 84: (14.0, 15.0, 13.0)}
    gaps = {
        "longclip": {42: (1.0, 1.0, 1.0), 84: (2.0, 3.0, 2.5)},
        "smartclip": {42: (-3.0, -4.5, -3.3), 84: (-1.0, -2.0, -1.5)},
        "mulclip": {42: (0.0, 0.0, 0.0), 84: (3.0, 1.0, 3.0)},
    }  # smartclip and mulclip relative to longclip
    rows = []
    for seed in seeds:
        for step in (42, 84):
            c = clip[step][seed]
            lc = c + gaps["longclip"][step][seed]
            values = {"clip": c, "longclip": lc}
            values |= {o: lc + gaps[o][step][seed] for o in ("smartclip", "mulclip")}
            for objective, value in values.items():
                rows += retrieval(objective, seed, step, value, value + 5)
            rows += [
                row("custom", o, seed, step, "preserve_r2", v, "z0")
                for o, v in (("clip", 0.9), ("longclip", 0.8), ("smartclip", 0.95 + seed / 100))
            ]
    return pd.DataFrame(rows)


def test_orderings_are_decided_by_the_seed_rule_on_paired_differences():
    table = co.orderings(ordering_results()).set_index(["world", "ordering", "metric"])
    long = table.xs("long t2i R@1", level="metric").loc["scenes"]
    held = long.loc["Long-CLIP above CLIP"]
    mean, half = interval([2.0, 3.0, 2.5])
    assert held.verdict == "held" and held.step == 84 and held.seeds == 3
    assert held["A − B"] == f"{mean:+.3f} ± {half:.3f}"
    assert pd.isna(held["budget effect"])  # only asked where not held
    below = long.loc["SmartCLIP above Long-CLIP"]
    assert below.verdict == "not held" and below["last interval"] == "42 → 84"
    mean, half = interval([2.0, 2.5, 1.8])  # the gap's change, 42 → 84
    assert below["gap change"] == f"{mean:+.3f} ± {half:.3f} (held)"
    assert below["budget effect"] == "suggested"
    # SmartCLIP at 84: 16 − 1, 18 − 2, 15.5 − 1.5; at 42: 11 − 3, 12 − 4.5, 13 − 3.3
    mean, half = interval([15.0 - 8.0, 16.0 - 7.5, 14.0 - 9.7])  # its own rise
    assert below["A's rise"] == f"{mean:+.3f} ± {half:.3f} (held)"
    assert long.loc["MulCLIP above Long-CLIP"].verdict == "undecided"
    assert table.loc[("scenes", "SmartCLIP above Long-CLIP", "long i2t R@1")].verdict == "not held"
    synthetic = table.loc["custom"]
    assert synthetic.loc[("SmartCLIP above Long-CLIP", "worst preserve R²")].verdict == "held"
    # Long-CLIP below CLIP, and a gap that does not move: no budget effect
    below = synthetic.loc[("Long-CLIP above CLIP", "worst preserve R²")]
    assert below.verdict == "not held" and below["budget effect"] == "not suggested"
    assert "MulCLIP above Long-CLIP" not in synthetic.index.get_level_values("ordering")


def test_a_tie_is_not_above_and_two_seeds_give_no_verdict():
    assert co.above([0.0, 0.0, 0.0]) == "not held"  # equal is not above
    assert co.above([1.0, 1.0, 1.0]) == "held"
    assert co.above([1.0, 2.0]) == "no verdict"
    two = co.orderings(ordering_results(seeds=(0, 1)))
    assert set(two.verdict) == {"no verdict"}


def write_run(out, name, objective, samples_per_s, batch=128):
    log_dir = out / "logs" / name
    log_dir.mkdir(parents=True)
    settings = {"model": TINY_MODEL, "context_length": 248, "batch_size": batch, "accum_freq": 1}
    (log_dir / "config.json").write_text(json.dumps({**settings, "objective": objective}))
    steps = [10 * (i + 1) for i in range(len(samples_per_s))]
    pd.DataFrame({"step": steps, "samples_per_s": samples_per_s}).to_csv(log_dir / "train.csv")
    return name.rsplit("-", 1)[1]


def test_step_times_come_from_every_seeds_logged_intervals(tmp_path):
    runs = {
        ("clip", 0): [128.0, 64.0],  # 1 s, 2 s a step
        ("clip", 1): [100.0],  # 1.28 s
        ("mulclip", 0): [64.0, 32.0, 64.0],  # 2 s, 4 s, 2 s
        ("pretrain", 0): [1.0],  # not a fine-tuning run
    }
    rows = []
    for (objective, seed), rates in runs.items():
        run_id = write_run(
            tmp_path, f"scenes-{objective}-seed{seed}-id{objective}{seed}", objective, rates
        )
        rows.append({**row("scenes", objective, seed, 4, "retrieval", 1.0), "run": run_id})
    table = co.step_times(tmp_path, pd.DataFrame(rows))
    assert list(table.index) == ["clip", "mulclip"]
    assert table.loc["clip", "s/step (median)"] == pytest.approx(1.28)
    assert table.loc["mulclip", "s/step (median)"] == pytest.approx(2.0)
    assert table.loc["mulclip", "× CLIP"] == pytest.approx(2.0 / 1.28)
    assert table.loc["clip", "logged intervals"] == 3
    config = open_clip.get_model_config(TINY_MODEL)
    worst = bench.step_flops_per_sample(config, 248, "mulclip", 128)
    worst /= bench.step_flops_per_sample(config, 248, "clip", 128)
    assert table.loc["mulclip", "bench worst case × CLIP"] == pytest.approx(worst)
    assert table.loc["clip", "bench worst case × CLIP"] == 1.0


def test_the_report_states_the_budget_and_every_section(tmp_path):
    results = ordering_results()
    results = pd.concat(
        [results, pd.DataFrame(retrieval("pretrain", 0, 0, 9.0, 14.0)).assign(run="p")]
    )
    for objective, run_id in results[["objective", "run"]].drop_duplicates().itertuples(False):
        if objective != "pretrain" and run_id.startswith("scenes"):
            write_run(tmp_path, f"x-{run_id}", objective, [64.0])
    text = co.report(co.CompareConfig(), results, tmp_path)
    assert "scenes 84 steps" in text and "custom 84 steps" in text
    assert "4 of the tiny towers' 64" in text and "top 5 calibrated patches" in text
    for heading in ("End point", "The papers' orderings", "Learning curves", "Step time"):
        assert f"## {heading}" in text
    assert "| scenes | SmartCLIP above Long-CLIP | long t2i R@1 | 84 | 3 |" in text


def test_synthetic_curve_points_leave_the_training_unchanged(tmp_path):
    """Measuring along the way must not change the run: its end rows are those of
    `synthetic_recovery.run_one`, and the points before the end are at `curve_steps`."""
    from synthetic_recovery import run_one

    cfg = co.CompareConfig(
        objectives=("clip",), seeds=(0,), synthetic_steps=20, synthetic_n_eval=200
    )
    (job,) = co.synthetic_jobs(cfg)
    ctx = co.RunContext(lambda n: None, tmp_path / "a")
    rows = pd.DataFrame(job.fn(ctx, **{**job.kwargs, "points": 4}))
    assert co.curve_steps(20, 4) == [5, 10, 15, 20]
    assert set(rows.step) == {5, 10, 15, 20}
    assert set(rows[rows.step < 20].quantity) == {"preserve_r2"}
    kwargs = {k: v for k, v in job.kwargs.items() if k not in ("meta", "points")}
    plain = pd.DataFrame(run_one(co.RunContext(lambda n: None, tmp_path / "b"), **kwargs))
    end = rows[rows.step == 20]
    for quantity in ("preserve_r2", "preserve_r2_linear", "reverse_r2"):
        got = end[end.quantity == quantity].value.to_numpy()
        assert got.size and np.array_equal(got, plain[plain.quantity == quantity].value.to_numpy())


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--objectives", "siglip"], "--objectives"),
        (["--seeds", "1,1"], "--seeds"),
        (["--sub-topk", "0"], "--sub-topk"),
    ],
)
def test_bad_flags_exit_with_one_line(argv, flag, one_line_error):
    one_line_error(co.main, argv, flag)


@pytest.mark.slow
def test_each_objective_trains_and_is_measured_along_its_curve(tmp_path):
    out = tmp_path / "compare"
    co.main(
        ["--seeds", "0", "--scenes-images", "300", "--scenes-dir", str(tmp_path / "scenes")]
        + ["--pretrain-epochs", "1", "--finetune-epochs", "2", "--batch-size", "128"]
        + ["--synthetic-steps", "20", "--synthetic-n-eval", "200", "--workers", "1"]
        + ["--out", str(out)]
    )
    results = pd.read_csv(out / "results.csv")
    scenes = results[results.world == "scenes"]
    assert set(scenes.objective) == {"pretrain", *co.OBJECTIVES}
    retrieval = scenes[scenes.quantity == "retrieval"]
    assert set(retrieval.block) == {"long", "short"}
    # 270 training scenes: 2 steps of 128 an epoch, a point per epoch; the start at step 0
    assert set(scenes[scenes.objective == "pretrain"].step) == {0}
    for objective in co.OBJECTIVES:
        assert set(scenes[scenes.objective == objective].step) == {2, 4}, objective
    assert len(retrieval) == (1 + 4 * 2) * 2 * 6  # points × caption kinds × recall values
    assert set(scenes[scenes.quantity == "attribute_r2"].block) >= {"n_objects", "obj0_size"}
    synthetic = results[results.world == "custom"]
    assert set(synthetic.objective) == set(co.SYNTHETIC_OBJECTIVES)
    assert set(synthetic.step) == {4, 8, 12, 16, 20}
    text = (out / "summary.md").read_text()
    assert "| scenes | mulclip |" in text and "no verdict" in text and "## Step time" in text
    assert (out / "curves.png").stat().st_size > 0 and (out / "retrieval.png").stat().st_size > 0
