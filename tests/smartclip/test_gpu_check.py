"""The GPU check: its tiny mode end to end on the CPU, its GPU mode's command lines parsed by the
commands they call (so the script a maintainer runs cannot drift from their flags), and a failing
step leaving no results file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from smartclip import bench, gpu_check, train
from smartclip.builtin import scenes_root
from smartclip.cli import parse_config
from smartclip.eval import EvalConfig
from smartclip.losses import OBJECTIVES
from smartclip.model import LONG_CONTEXT, TINY_MODEL
from smartclip.train_config import PRESETS, TrainConfig

STEPS = ("bench", "train", "eval")


def tiny_argv(scenes: Path, output: Path, name: str) -> list[str]:
    """The tiny mode at sizes 2 busy cores run in seconds (the mode's own, made explicit)."""
    return [
        "--mode", "tiny", "--output-dir", str(output), "--name", name, "--scenes-dir", str(scenes),
        "--scenes-images", "40", "--batch-size", "4", "--steps", "4", "--bench-steps", "2",
        "--bench-rounds", "1", "--bench-warmup-steps", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenes")


@pytest.fixture(scope="module")
def checked(scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict]:
    """(argv, results) of one tiny check."""
    argv = tiny_argv(scenes, tmp_path_factory.mktemp("out"), "ok")
    path = gpu_check.main(argv)
    return argv, json.loads(path.read_text())


def finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_tiny_check_records_every_step_with_its_command_and_finite_figures(checked) -> None:
    argv, results = checked
    assert results["status"] == "ok" and results["mode"] == "tiny" and results["argv"] == argv
    env = results["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["open_clip"]
    assert list(results["steps"]) == list(STEPS)
    for name, step in results["steps"].items():
        assert step["command"].startswith(f"python -m smartclip.{name} ")
        assert step["command"].endswith(" ".join(step["argv"]))
        assert finite(step["seconds"]) and step["seconds"] > 0
    assert finite(results["seconds"])
    assert results["seconds"] >= sum(s["seconds"] for s in results["steps"].values())


def test_tiny_check_benches_every_objective_at_the_long_context(checked) -> None:
    bench_step = checked[1]["steps"]["bench"]
    rows = {r["objective"]: r for r in bench_step["rows"]}
    assert list(rows) == list(OBJECTIVES)
    for r in rows.values():
        assert r["model"] == TINY_MODEL and r["batch_size"] == 4 and r["precision"] == "fp32"
        for key in ("samples_per_s", "step_seconds", "peak_memory_gib", "over_clip"):
            assert finite(r[key]) and r[key] > 0, key
        assert r["mfu"] is None  # no peak FLOP/s for a CPU
    assert rows["clip"]["over_clip"] == 1.0
    cfg = parse_config(bench.BenchConfig, bench_step["argv"])
    assert cfg.context_length == LONG_CONTEXT


def test_tiny_check_fine_tunes_with_accumulation_and_checkpointing_and_evaluates_it(
    checked,
) -> None:
    argv, results = checked
    step = results["steps"]["train"]
    cfg = parse_config(TrainConfig, step["argv"], presets=PRESETS)
    assert cfg.objective == "smartclip" and cfg.grad_checkpointing and cfg.accumulation(1) == 2
    assert step["init"] == "random" and cfg.pretrained is None
    assert step["pairs_per_step"] == 8 and step["scenes_rendered"]
    assert finite(step["loss_first"]) and finite(step["loss_last"])
    assert finite(step["samples_per_s"]) and step["samples_per_s"] > 0
    export = Path(step["export"])
    assert export.is_file()
    evaluated = results["steps"]["eval"]
    assert evaluated["argv"][evaluated["argv"].index("--pretrained") + 1] == str(export)
    recall = evaluated["retrieval"]
    assert recall["images"] == 4 and recall["captions"] == 12  # the 40 scenes' held-out tenth
    keys = [f"{d}_r{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)]
    assert all(finite(recall[k]) and 0 <= recall[k] <= 100 for k in keys)
    # the table beside the JSON shows the same recalls
    table = (export.parents[2] / "results.md").read_text()
    assert "| " + " | ".join(f"{recall[k]:.1f}" for k in keys) + " |" in table


def test_gpu_mode_commands_are_valid_for_the_commands_they_call(tmp_path) -> None:
    """The GPU run (not possible here) passes flags its commands accept and means: ViT-B/16 at
    248 tokens for every objective; a fp16-AMP SmartCLIP fine-tune with checkpointing and
    accumulation, from the given weights at the recipe's rate; eval of the same model."""
    weights = tmp_path / "ViT-B-16.pt"
    weights.write_bytes(b"")
    sizes = gpu_check.PROFILES["gpu"].sizes
    val = scenes_root(tmp_path, sizes["scenes_images"]) / "val" / "captions.csv"
    val.parent.mkdir(parents=True)
    val.write_text("")  # eval checks that its --data exists
    for pretrained, lr in ((None, gpu_check.RANDOM_INIT_LR), (str(weights), gpu_check.RECIPE_LR)):
        given = gpu_check.GpuCheckConfig(pretrained=pretrained, scenes_dir=str(tmp_path))
        cfg = gpu_check.resolved(given, cuda=True)
        assert cfg.mode == "gpu" and cfg.lr == lr
        b = parse_config(bench.BenchConfig, gpu_check.bench_argv(cfg, tmp_path / "b.json"))
        assert b.models == ("ViT-B-16",) and b.context_length == LONG_CONTEXT
        assert b.objectives == tuple(OBJECTIVES)
        t = parse_config(TrainConfig, gpu_check.train_argv(cfg, tmp_path), presets=PRESETS)
        assert t.model == "ViT-B-16-quickgelu" and t.precision == "amp"
        assert t.objective == "smartclip" and t.grad_checkpointing and t.accumulation(1) == 2
        assert t.pretrained == pretrained and t.lr == lr and t.train_data is None
        assert t.steps == cfg.steps and t.warmup < t.steps
        e = parse_config(EvalConfig, gpu_check.eval_argv(cfg, str(weights), tmp_path / "e.json"))
        assert e.model == t.model and e.pretrained == (str(weights),) and e.data == str(val)


def test_unset_sizes_take_the_mode_and_set_ones_stay() -> None:
    cfg = gpu_check.resolved(gpu_check.GpuCheckConfig(steps=7), cuda=False)
    assert cfg.mode == "tiny" and cfg.steps == 7
    assert cfg.batch_size == gpu_check.PROFILES["tiny"].sizes["batch_size"]
    assert all(getattr(cfg, k) is not None for k in gpu_check.PROFILES["tiny"].sizes)
    assert cfg.lr == gpu_check.RANDOM_INIT_LR


def test_gpu_mode_without_cuda_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        gpu_check.resolved(gpu_check.GpuCheckConfig(mode="gpu"), cuda=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and "--mode gpu" in lines[0]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--mode", "fast"], "--mode"),
        (["--accum-freq", "1"], "--accum-freq"),
        (["--steps", "0"], "--steps"),
        (["--pretrained", "no/such/file.pt"], "--pretrained"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, flag, one_line_error) -> None:
    one_line_error(gpu_check.main, argv, flag)


def test_a_used_name_is_refused_before_anything_runs(tmp_path, one_line_error) -> None:
    (tmp_path / "out" / "taken").mkdir(parents=True)
    argv = tiny_argv(tmp_path / "scenes", tmp_path / "out", "taken")
    one_line_error(gpu_check.main, argv, "--name")
    assert not (tmp_path / "scenes").exists()


def test_a_failing_step_stops_with_one_line_and_no_results(
    scenes, tmp_path, monkeypatch, capsys
) -> None:
    def fails(argv: list[str]) -> None:
        raise SystemExit(1)

    evaluated = []
    monkeypatch.setattr(train, "main", fails)
    monkeypatch.setattr(gpu_check.evaluate, "main", evaluated.append)
    with pytest.raises(SystemExit) as info:
        gpu_check.main(tiny_argv(scenes, tmp_path, "failed"))
    assert info.value.code == 1 and not evaluated
    assert (tmp_path / "failed" / "bench.json").is_file()  # the step before it ran
    assert not list(tmp_path.rglob("results.*"))
    errors = [line for line in capsys.readouterr().err.splitlines() if "gpu_check" in line]
    assert len(errors) == 1 and "step train failed (exit status 1)" in errors[0]
    assert "rerun it alone: python -m smartclip.train --preset tiny-smartclip" in errors[0]


def test_a_crashing_step_is_one_line_naming_the_error() -> None:
    def crashes(argv: list[str]) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    with pytest.raises(gpu_check.StepFailed) as info:
        gpu_check.run_step("eval", "smartclip.eval", crashes, ["--data", "a b.csv"])
    message = str(info.value)
    assert "\n" not in message and "step eval failed (RuntimeError: CUDA out of memory" in message
    assert message.endswith("python -m smartclip.eval --data 'a b.csv'")
