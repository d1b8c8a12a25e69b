"""The training loop: flags, optimiser groups, accumulation, exact resume, precision, end to end."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import open_clip
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from smartclip import run_setup, train
from smartclip.cli import parse_config
from smartclip.data import Batch, build_eval_set
from smartclip.export import EXPORT_WEIGHTS_NAME
from smartclip.model import TINY_MODEL, build_model, create_clip
from smartclip.step import forward_backward, objective_from_config
from synthetic.scenes import write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """60 rendered scenes: 54 train images (6 batches of 8), 6 val images, 3 captions each."""
    files = write_dataset(tmp_path_factory.mktemp("scenes"), 60, ("csv",))
    return files["train"].annotations["csv"], files["val"].annotations["csv"]


def flags(scenes: tuple[str, str], logs: Path, name: str, *extra: str) -> list[str]:
    return [
        "--preset", "tiny-smartclip", "--train-data", scenes[0], "--val-data", scenes[1],
        "--batch-size", "8",
        "--context-length", "77", "--workers", "0", "--log-every-n-steps", "1",
        "--logs", str(logs), "--name", name, *extra,
    ]  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------ flags


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--precision", "fp8"], "--precision"),
        (["--batch-size", "0"], "--batch-size"),
        (["--steps", "ten"], "--steps"),
        (["--model", "no-such-model"], "--model"),
        (["--objective", "siglip"], "--objective"),
        (["--caption-fit", "words"], "--caption-fit"),
        (["--wds-resampled"], "--wds-resampled"),  # the built-in scenes are no shards
        (["--train-data", "/no/such.csv"], "--train-data"),
        (["--resume", "latest"], "--resume"),
        (["--preset", "vit-h"], "--preset"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], flag: str, one_line_error) -> None:
    one_line_error(train.main, argv, flag)


def test_bad_flag_from_the_command_line() -> None:
    cmd = [sys.executable, "-m", "smartclip.train", "--precision", "fp64"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--precision" in proc.stderr


def test_unusable_pretrained_weights_end_as_one_line_and_status_1(tmp_path) -> None:
    weights, captions = tmp_path / "ViT-B-16.pt", tmp_path / "captions.csv"
    weights.write_bytes(b"<html>not found</html>")  # what a failed download leaves behind
    captions.write_text("filepath,title\n")  # the weights are refused before any data is read
    cmd = [sys.executable, "-m", "smartclip.train", "--preset", "tiny-smartclip"]
    cmd += ["--pretrained", str(weights), "--train-data", str(captions)]
    cmd += ["--logs", str(tmp_path / "logs"), "--workers", "0"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"smartclip.train: error: {weights}:"), lines
    assert not (tmp_path / "logs").exists()


# ------------------------------------------------------------------------------------ optimisation


def test_accumulated_micro_batches_give_the_full_batch_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 64, 64, generator=g)
    tokenizer = open_clip.get_tokenizer(TINY_MODEL, context_length=77)
    texts = tokenizer([f"a {c} shape number {i}" for i, c in enumerate("rgbcmykw")])
    cfg = train.TrainConfig()
    objective = objective_from_config(cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def run(splits: list[slice]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = build_model(TINY_MODEL, context_length=77, mask_heads=4)
        batches = [Batch(images[s], texts[s], 0) for s in splits]
        cpu = torch.device("cpu")
        result = forward_backward(model, None, batches, objective, cfg, cpu, scaler, nullcontext)
        return result.losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    full_loss, full = run([slice(None)])
    for splits in ([slice(0, 4), slice(4, 8)], [slice(0, 5), slice(5, 6), slice(6, 8)]):
        loss, grads = run(splits)
        assert loss == pytest.approx(full_loss, rel=1e-5)
        scale = max(g.abs().max().item() for g in full.values())
        for name, grad in full.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6 * scale, msg=name)


# ----------------------------------------------------------------------------------- checkpoints


@pytest.mark.slow
def test_crash_and_resume_reproduce_the_uninterrupted_run(scenes, tmp_path, monkeypatch) -> None:
    # 6 batches an epoch; 10 steps cross an epoch boundary; latest.pt every 3 steps.
    common = [
        "--steps",
        "10",
        "--epochs",
        "3",
        "--save-every-steps",
        "3",
        "--save-frequency",
        "1",
        "--workers",
        "1",
    ]
    train.main(flags(scenes, tmp_path, "whole", *common))

    real_save, calls = torch.save, []

    def save_then_crash_on_third(obj: object, fh) -> None:
        calls.append(1)
        if len(calls) == 3:  # latest.pt at step 6 (after latest@3 and epoch_1.pt)
            fh.write(b"half a checkpoint")
            raise OSError("disk full")
        real_save(obj, fh)

    monkeypatch.setattr(torch, "save", save_then_crash_on_third)
    with pytest.raises(OSError, match="disk full"):
        train.main(flags(scenes, tmp_path, "crashed", *common))
    monkeypatch.setattr(torch, "save", real_save)
    latest = tmp_path / "crashed" / "checkpoints" / "latest.pt"
    assert torch.load(latest, weights_only=True)["progress"]["step"] == 3
    train.main(flags(scenes, tmp_path, "crashed", *common, "--resume", "latest"))

    whole, resumed = (read_csv(tmp_path / n / "train.csv") for n in ("whole", "crashed"))
    assert [r["step"] for r in resumed] == [str(s) for s in range(1, 11)]
    for a, b in zip(whole, resumed, strict=True):
        a.pop("samples_per_s"), b.pop("samples_per_s")
        assert a == b  # losses, learning rates and counters as written: bitwise
    assert read_csv(tmp_path / "whole" / "val.csv") == read_csv(tmp_path / "crashed" / "val.csv")
    end_a, end_b = (
        torch.load(tmp_path / n / "checkpoints" / "latest.pt", weights_only=True)
        for n in ("whole", "crashed")
    )
    assert end_a["progress"] == end_b["progress"]
    for key, value in end_a["model"].items():
        assert torch.equal(value, end_b["model"][key]), key
    assert torch.equal(end_a["rng"]["torch"], end_b["rng"]["torch"])


# ------------------------------------------------------------------------------- precision, e2e


@pytest.mark.parametrize("precision", ["amp_bf16", "amp"])
def test_mixed_precision_runs_on_cpu(precision: str, scenes, tmp_path) -> None:
    train.main(flags(scenes, tmp_path, precision, "--steps", "2", "--precision", precision))
    rows = read_csv(tmp_path / precision / "train.csv")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)


@pytest.mark.parametrize("caption_fit", ["truncate", "sentences"])
def test_captions_over_the_context_are_reported_and_counted(
    caption_fit: str, scenes, tmp_path, capsys
) -> None:
    rows = read_csv(Path(scenes[0]))
    for row in rows:  # one sentence of 300 words: cut in either mode
        row["title"] = " ".join(["a red circle"] * 100)
    path = Path(scenes[0]).with_name(f"long_{caption_fit}.csv")
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    train.main(
        flags(
            (str(path), scenes[1]), tmp_path, "long", "--steps", "2", "--caption-fit", caption_fit
        )
    )
    out = capsys.readouterr().out
    line = f"captions over the 77-token context: {len(rows)} of {len(rows)} (100.0%)"
    assert f"{line}; --caption-fit {caption_fit}" in out
    logged = read_csv(tmp_path / "long" / "train.csv")
    assert [int(r["truncated_captions"]) for r in logged] == [8, 16]  # batch 8, cumulative


@pytest.mark.slow
def test_no_argument_run_renders_scenes_pretrains_fine_tunes_and_exports(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    small = {
        "scenes_dir": str(tmp_path / "data"), "scenes_images": 40, "steps": 2, "batch_size": 8,
        "workers": 0, "logs": str(tmp_path / "runs"),
    }  # fmt: skip
    for preset in ("tiny-clip", *train.DEMO_STAGES):
        monkeypatch.setitem(train.PRESETS, preset, {**train.PRESETS[preset], **small})
    run_dir = train.main([])
    out = capsys.readouterr().out
    for what in ("checkpoints:", "logs:", "open_clip:", "retrieval:"):
        assert what in out
    data = tmp_path / "data" / "n40-px64-neg3"
    assert (data / "train" / "captions.csv").is_file()
    assert (data / "val" / "hard_negatives.csv").is_file()
    runs = {p.name.split("-", 2)[-1]: p for p in (tmp_path / "runs").iterdir()}
    assert set(runs) == {"tiny-clip", *train.DEMO_STAGES} and runs["tiny-smartclip"] == run_dir
    assert read_csv(run_dir / "val.csv")[-1]["step"] == "2"
    stage1 = runs["tiny-clip"]
    # the mined stage trained on the scenes' hard negatives: its image-to-text term has the
    # negatives' columns, so at the same weights it starts above the plain CLIP stage's
    negclip = json.loads((runs["tiny-negclip"] / "config.json").read_text())
    assert negclip["train_data"] is None and negclip["hard_negatives"] is True
    first = {s: read_csv(runs[s] / "train.csv")[0] for s in ("tiny-negclip", "tiny-clip-ft")}
    assert float(first["tiny-negclip"]["i2t"]) > float(first["tiny-clip-ft"]["i2t"])

    # stage 2 started from stage 1's export, its context stretched 77 → 248
    pretrained = torch.load(stage1 / "export" / EXPORT_WEIGHTS_NAME, weights_only=True)
    ckpt = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["config"]["pretrained"] == str(stage1 / "export" / EXPORT_WEIGHTS_NAME)
    pos = ckpt["model"]["clip.positional_embedding"]
    assert pos.shape[0] == 248 and pretrained["positional_embedding"].shape[0] == 77

    # the export loads in open_clip and embeds exactly as the trained model (mask net dropped)
    model = build_model(TINY_MODEL, context_length=248, mask_heads=4)
    model.load_state_dict(ckpt["model"])
    exported = open_clip.create_model(
        TINY_MODEL,
        pretrained=str(run_dir / "export" / EXPORT_WEIGHTS_NAME),
        force_context_length=248,
    )
    x = torch.randn(2, 3, 64, 64)
    text = open_clip.get_tokenizer(TINY_MODEL, context_length=248)(["a red star", "a circle"])
    torch.testing.assert_close(exported.encode_image(x, normalize=True), model.encode_image(x))
    torch.testing.assert_close(exported.encode_text(text, normalize=True), model.encode_text(text))


# ---------------------------------------------------------------------------- failing loudly


def broken_copy(csv_path: str, out: Path, every: int) -> str:
    """The caption file with every `every`-th image's path pointing nowhere (1: all)."""
    rows = read_csv(Path(csv_path))
    root = Path(csv_path).parent
    for row in rows:
        broken = int(row["image_id"]) % every == 0
        row["filepath"] = (
            f"missing/{row['image_id']}.png" if broken else str(root / row["filepath"])
        )
    out.mkdir(parents=True, exist_ok=True)
    with (out / "captions.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(out / "captions.csv")


def stops_with(argv: list[str], capsys) -> str:
    """Run the trainer; it must exit with status 1 and one stderr line, which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("smartclip.train: error: ")
    return lines[-1]


def test_every_image_missing_stops_at_once_and_leaves_nothing(scenes, tmp_path, capsys) -> None:
    """It used to exit 0 after training no step, with an untrained export."""
    data = broken_copy(scenes[0], tmp_path / "data", every=1)
    argv = flags((data, scenes[1]), tmp_path / "runs", "lost", "--steps", "3")
    assert "none of the first" in stops_with(argv, capsys)
    assert not (tmp_path / "runs" / "lost").exists()
    train.main(flags(scenes, tmp_path / "runs", "lost", "--steps", "1"))  # the name is free
    assert (tmp_path / "runs" / "lost" / "export" / EXPORT_WEIGHTS_NAME).is_file()


def test_mostly_missing_images_stop_at_the_skipped_share_bound(scenes, tmp_path, capsys) -> None:
    data = broken_copy(scenes[0], tmp_path / "data", every=2)  # half of the images
    argv = flags((data, scenes[1]), tmp_path / "runs", "half", "--steps", "10")
    line = stops_with(argv, capsys)
    assert "--max-skipped-share 0.05" in line and "unreadable" in line
    assert not (tmp_path / "runs" / "half").exists()
    train.main([*argv, "--max-skipped-share", "0.6"])  # a bound the user chose
    rows = read_csv(tmp_path / "runs" / "half" / "train.csv")
    assert int(rows[-1]["skipped_images"]) > 0


def test_an_empty_evaluation_set_is_one_line(scenes, tmp_path, capsys) -> None:
    val = broken_copy(scenes[1], tmp_path / "val", every=1)
    line = stops_with(flags((scenes[0], val), tmp_path / "runs", "e", "--steps", "1"), capsys)
    assert "evaluation set is empty" in line
    assert not (tmp_path / "runs" / "e").exists()


def nan_from(first_bad: int, last_bad: int | None = None):
    """An objective factory whose loss is NaN on calls first_bad..last_bad (1-based)."""
    real, calls = train.objective_from_config, []

    def factory(cfg):
        objective = real(cfg)

        def poisoned(*args, **kwargs):
            out = objective(*args, **kwargs)
            calls.append(1)
            if first_bad <= len(calls) and (last_bad is None or len(calls) <= last_bad):
                out.total = out.total * float("nan")
            return out

        poisoned.consumes = objective.consumes
        return poisoned

    return factory


def test_non_finite_steps_are_skipped_and_counted(scenes, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(train, "objective_from_config", nan_from(2, 3))
    train.main(flags(scenes, tmp_path, "nan", "--steps", "5"))
    rows = read_csv(tmp_path / "nan" / "train.csv")
    assert [int(r["nonfinite_steps"]) for r in rows] == [0, 1, 2, 2, 2]
    state = torch.load(tmp_path / "nan" / "checkpoints" / "latest.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_persistent_non_finite_steps_stop_with_the_last_good_checkpoint(
    scenes, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(train, "objective_from_config", nan_from(3))
    argv = flags(scenes, tmp_path, "bad", "--steps", "20", "--save-every-steps", "2")
    line = stops_with([*argv, "--max-nonfinite-steps", "3"], capsys)
    assert "3 consecutive steps up to step 5" in line
    state = torch.load(tmp_path / "bad" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["progress"]["step"] == 4  # steps 3 and 4 skipped: the weights of step 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "bad" / "export").exists()


def test_global_batch_sets_the_accumulation_as_the_release_does(scenes, tmp_path, capsys) -> None:
    cfg = train.TrainConfig(batch_size=128, global_batch=1024)
    assert [cfg.accumulation(w) for w in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]
    assert train.TrainConfig(accum_freq=3).accumulation(8) == 3
    argv = flags(scenes, tmp_path, "acc", "--steps", "1", "--global-batch", "16")
    capsys.readouterr()
    train.main([*argv, "--accum-freq", "none"])
    assert "batch 8 × 2 accumulated × 1 = 16" in capsys.readouterr().out


def test_val_split_keeps_one_split_of_a_karpathy_file(tmp_path) -> None:
    files = write_dataset(tmp_path / "k", 30, ("csv", "karpathy"))
    karpathy = files["train"].annotations["karpathy"]
    cfg = train.TrainConfig(val_data=karpathy, val_split="val")
    fmt, options = run_setup.data_options(cfg, karpathy, cfg.val_split)
    assert options["split"] == "val"
    val = build_eval_set(karpathy, fmt, **options)
    assert len(val.images) == len(files["val"].images) < 30


def test_mask_health_is_logged_for_smartclip(scenes, tmp_path) -> None:
    train.main(flags(scenes, tmp_path, "health", "--steps", "2"))
    rows = read_csv(tmp_path / "health" / "train.csv")
    assert all(0 <= float(r["mask_varying"]) <= 64 and float(r["mask_on"]) > 0 for r in rows)


def test_threads_sets_torch_cpu_threads_and_zero_is_refused(scenes, tmp_path, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    train.main(flags(scenes, tmp_path, "threads", "--steps", "1", "--threads", "1"))
    assert calls == [1]
    with pytest.raises(SystemExit):
        train.main(flags(scenes, tmp_path, "threads0", "--steps", "1", "--threads", "0"))
    assert calls == [1] and not (tmp_path / "threads0").exists()


def test_hard_negatives_from_a_csv_column_join_the_image_to_text_contrast(scenes, tmp_path) -> None:
    rows = read_csv(Path(scenes[0]))
    root = Path(scenes[0]).parent
    for row in rows:
        row["filepath"] = str(root / row["filepath"])
        row["neg"] = " ".join(reversed(row["title"].split()))  # a word-order negative
    data = tmp_path / "negatives.csv"
    with data.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    first = {}
    # a caption with a negative is used whole (the negative was written for all of it)
    for name, extra in (
        ("plain", ["--no-sentence-sampling"]),
        ("mined", ["--csv-negative-key", "neg"]),
    ):
        argv = flags((str(data), scenes[1]), tmp_path, name, "--steps", "1", *extra)
        train.main([*argv, "--objective", "clip"])
        first[name] = read_csv(tmp_path / name / "train.csv")[0]
    assert float(first["mined"]["i2t"]) > float(first["plain"]["i2t"])
    assert first["mined"]["t2i"] == first["plain"]["t2i"]  # negatives describe no image


def test_resuming_with_other_settings_is_refused(scenes, tmp_path, capsys) -> None:
    """A resumed run must continue the same computation: a changed setting stops it with one
    line naming the flag; --steps and --epochs set the cosine horizon, so they are settings too;
    operational flags (--workers, --save-every-steps) may change."""
    argv = flags(scenes, tmp_path, "r", "--steps", "3", "--save-every-steps", "2")
    with pytest.raises(train.Interrupted):  # stop after step 2's checkpoint, as Ctrl-C would
        with interrupt_at(3):
            cfg = parse_config(train.TrainConfig, argv, presets=train.PRESETS)
            train.train(cfg, tmp_path / "r", None)
    line = stops_with([*argv, "--resume", "latest", "--steps", "4"], capsys)
    assert "--steps: 3 → 4" in line
    line = stops_with([*argv, "--resume", "latest", "--epochs", "5"], capsys)
    assert "--epochs: 2 → 5" in line
    line = stops_with([*argv, "--resume", "latest", "--lr", "0.5"], capsys)
    assert "--lr: 0.0001 → 0.5" in line
    train.main([*argv, "--resume", "latest", "--save-every-steps", "1"])  # operational: fine
    assert [r["step"] for r in read_csv(tmp_path / "r" / "train.csv")] == ["1", "2", "3"]


# ------------------------------------------------------- verdicts: divergence, resume, Ctrl-C


@contextmanager
def interrupt_at(step: int):
    """Raise KeyboardInterrupt when the trainer is about to run `step` (1-based)."""
    real = train.train_step

    def interrupting(run):
        if run.state.progress["step"] + 1 == step:
            raise KeyboardInterrupt
        return real(run)

    train.train_step = interrupting
    try:
        yield
    finally:
        train.train_step = real


def test_a_diverged_run_names_no_checkpoint_and_leaves_nothing(scenes, tmp_path, capsys) -> None:
    """--lr 1e12 used to name a deleted latest.pt as "the last good checkpoint" and, with
    --save-every-steps 1, to save weights whose embeddings are NaN (100 % recall on export)."""
    for name, extra in (("d", []), ("d1", ["--save-every-steps", "1"])):
        argv = flags(scenes, tmp_path, name, "--steps", "6", "--lr", "1e12", *extra)
        line = stops_with([*argv, "--max-nonfinite-steps", "2"], capsys)
        assert "no checkpoint was written" in line and "last good" not in line, line
        assert not (tmp_path / name).exists()


def test_a_checkpoint_holds_weights_with_finite_embeddings(scenes, tmp_path, capsys) -> None:
    """Weights that diverge after a good checkpoint: the run stops when the next checkpoint
    would hold non-finite embeddings, naming the good one, which loads and embeds finitely."""
    argv = flags(scenes, tmp_path, "g", "--steps", "6", "--save-every-steps", "1")
    real = train.train_step

    def blow_up_after_two(run):
        out = real(run)
        if run.state.progress["step"] == 3:
            with torch.no_grad():
                for p in run.state.model.parameters():
                    p.mul_(1e30)
        return out

    train.train_step = blow_up_after_two
    try:
        line = stops_with(argv, capsys)
    finally:
        train.train_step = real
    good = tmp_path / "g" / "checkpoints" / "latest.pt"
    assert "step 3: the weights or their embeddings are not finite" in line
    assert f"the last good checkpoint is {good}" in line
    state = torch.load(good, weights_only=True)
    assert state["progress"]["step"] == 2
    model = build_model(TINY_MODEL, context_length=77, mask_heads=4)
    model.load_state_dict(state["model"])
    tokens = open_clip.get_tokenizer(TINY_MODEL)(["a red star"])
    assert torch.isfinite(model.encode_text(tokens)).all()
    assert not (tmp_path / "g" / "export").exists()
    assert "stopped: step 3" in (tmp_path / "g" / "run.log").read_text()


def test_ctrl_c_prints_the_step_and_a_resume_command_that_finishes_the_run(
    scenes, tmp_path, capsys
) -> None:
    argv = flags(scenes, tmp_path, "c", "--steps", "4", "--save-every-steps", "2")
    train.main(flags(scenes, tmp_path, "whole", "--steps", "4", "--save-every-steps", "2"))
    capsys.readouterr()
    with interrupt_at(4), pytest.raises(SystemExit) as info:
        train.main(argv)
    assert info.value.code == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("smartclip.train: interrupted at step 3 of c; resume from step 2: ")
    command = shlex.split(line.split(": ", 2)[-1])
    assert command[:3] == ["python", "-m", "smartclip.train"]
    train.main(command[3:])  # the printed command, as a user would paste it
    whole, resumed = (read_csv(tmp_path / n / "train.csv") for n in ("whole", "c"))
    for a, b in zip(whole, resumed, strict=True):
        a.pop("samples_per_s"), b.pop("samples_per_s")
        assert a == b
    before = read_csv(tmp_path / "c" / "val.csv")
    train.main([*argv, "--resume", "latest"])  # a finished run: nothing repeated
    assert (
        read_csv(tmp_path / "c" / "val.csv") == before == read_csv(tmp_path / "whole" / "val.csv")
    )
    events = EventAccumulator(str(tmp_path / "c" / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [1, 2, 3, 4]  # the purged step 3 of the interrupted run is not repeated
    assert [e.step for e in events.Scalars("val/t2i_r1")] == [4]


def test_interrupted_before_any_checkpoint_keeps_nothing(scenes, tmp_path, capsys) -> None:
    with interrupt_at(2), pytest.raises(SystemExit) as info:
        train.main(flags(scenes, tmp_path, "early", "--steps", "4"))
    assert info.value.code == 130
    assert "no checkpoint had been written" in capsys.readouterr().err
    assert not (tmp_path / "early").exists()


def test_data_smaller_than_one_step_names_both_numbers(scenes, tmp_path, capsys) -> None:
    argv = flags(scenes, tmp_path, "small", "--accum-freq", "8")  # 54 images < 8 × 8
    line = stops_with(argv, capsys)
    assert "54 training samples per rank" in line and "8 × 8 = 64" in line, line


def test_a_warmup_as_long_as_the_run_is_a_warning_in_the_run_log(scenes, tmp_path) -> None:
    train.main(flags(scenes, tmp_path, "w", "--steps", "3", "--warmup", "5"))
    log = (tmp_path / "w" / "run.log").read_text()
    assert "--warmup 5 is not shorter than the run (3 steps)" in log


def test_locked_towers_do_not_move_and_the_other_does(scenes, tmp_path) -> None:
    for steps in ("1", "2"):
        train.main(flags(scenes, tmp_path, f"lock{steps}", "--steps", steps, "--lock-image"))
    one, two = (
        torch.load(tmp_path / f"lock{n}" / "checkpoints" / "latest.pt", weights_only=True)["model"]
        for n in ("1", "2")
    )
    visual = [k for k in one if k.startswith("clip.visual.")]
    text = [k for k in one if k.startswith("clip.transformer.")]
    assert visual and text
    assert all(torch.equal(one[k], two[k]) for k in visual)
    assert not all(torch.equal(one[k], two[k]) for k in text)


def test_the_summary_names_only_what_exists_and_a_loader_plain_open_clip_accepts(
    scenes, tmp_path, capsys
) -> None:
    argv = flags(scenes, tmp_path, "s", "--steps", "1", "--val-frequency", "0")
    at = argv.index("--val-data")
    train.main(argv[:at] + argv[at + 2 :])  # no evaluation set: no val.csv
    out = capsys.readouterr().out
    assert "val.csv" not in out and "epoch_" not in out and "latest.pt" in out
    call = re.search(r"open_clip\.create_model\('local-dir:[^']+'\)", out).group(0)
    code = f"import open_clip; m = {call}; print(type(m).__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_default_workers_fit_the_machine_without_torch_s_warning(scenes, tmp_path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert train.TrainConfig().loader_workers() == min(4, cores)
    assert train.TrainConfig(workers=0).loader_workers() == 0
    argv = flags(scenes, tmp_path, "wk", "--steps", "1")
    at = argv.index("--workers")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.main(argv[:at] + argv[at + 2 :])
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]


def test_weights_of_another_model_end_as_one_line(scenes, tmp_path, capsys) -> None:
    """It used to end in open_clip's `AssertionError: text pos_embed width changed!`."""
    state = create_clip(TINY_MODEL).state_dict()
    state["positional_embedding"] = torch.zeros(77, 7)  # a text tower 7 wide: not this model
    weights = tmp_path / "other.bin"
    torch.save(state, weights)
    line = stops_with(flags(scenes, tmp_path, "o", "--pretrained", str(weights)), capsys)
    assert str(weights) in line and "positional_embedding" in line, line
    assert not (tmp_path / "o").exists()
