import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import synthetic_recovery

import sweep
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


def test_measure_reports_every_quantity_for_smartclip():
    cfg = synthetic_recovery.RecoveryConfig(steps=30, batch_size=64, hidden=32, text_width=16)
    world = synthetic_recovery.World(cfg.world_config("custom", 0))
    fit_config = synthetic_recovery.FitConfig(**cfg.settings(), objective="smartclip")
    rows = synthetic_recovery.run_one(lambda n: None, world.config, fit_config, 240, 3)
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
    } <= quantities
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
    assert {"world", "objective", "seed", "quantity", "block", "value"} <= set(results.columns)
    assert set(results.objective) == {"smartclip", "clip"} and set(results.seed) == {0, 1}
    for name in ("config.json", "preserve.png", "disentangle.png", "summary.txt"):
        assert (out / name).exists(), name
    # a sweep killed before one run finished: only that run is redone
    runs = out / "runs"
    stamps = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.csv")}
    assert len(stamps) == 4
    (runs / "custom-clip-seed1.csv").unlink()
    capsys.readouterr()
    synthetic_recovery.main(args)
    assert "3 of 4 runs already done" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.csv")}
    assert after.keys() == stamps.keys()
    assert all(after[k] == v for k, v in stamps.items() if k != "custom-clip-seed1.csv")
    resumed = pd.read_csv(out / "results.csv")
    assert len(resumed) == len(results)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    sweep.atomic_write_text(path, "old\n")

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        sweep.atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]
