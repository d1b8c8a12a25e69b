"""A GPU check in one command: `python -m smartclip.gpu_check [--flag value ...]`.

Three steps, each the toolkit's own command called in-process with its flags, timed:
  1. bench: `smartclip.bench` of ViT-B/16 at 248 text tokens for every objective (samples/s,
     step time, peak memory, MFU, step time ÷ CLIP's), read back from its `--output` JSON;
  2. train: a short SmartCLIP fine-tune of ViT-B/16 (`ViT-B-16-quickgelu`, the config of
     OpenAI's weights) on the built-in scenes with fp16 AMP, gradient checkpointing and gradient
     accumulation (`smartclip.train`), from `--pretrained` if given, else from random init;
  3. eval: retrieval of the fine-tune's open_clip export on the scenes' held-out captions
     (`smartclip.eval --output`).

`--mode auto` runs that (mode "gpu") where CUDA is available and otherwise the same three steps
with the tiny model (mode "tiny": `smartclip.model.TINY_MODEL`, fp32, small batches, few steps and
scenes), which is how its test runs it on a CPU. Everything goes to `<output-dir>/<name>/`: the
bench JSON, the training run (logs, checkpoint, export), the eval JSON, and at the end, written
atomically, `results.json` (mode, device, torch/open_clip/CUDA versions, this command's argv, and
per step its exact argv, seconds and figures) and `results.md` (the same as short tables, also
printed). A step that fails ends the check with status 1 and one line naming the step and the
command that reruns it alone; no results file is written.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from smartclip import bench, train
from smartclip import eval as evaluate
from smartclip.builtin import scenes_root
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import parse_config, require
from smartclip.export import EXPORT_WEIGHTS_NAME
from smartclip.losses import OBJECTIVES
from smartclip.model import LONG_CONTEXT, TINY_MODEL
from smartclip.train_config import PRESETS, TrainConfig

PROG = "python -m smartclip.gpu_check"
MODES = ("auto", "gpu", "tiny")
RECALL = re.compile(r"(t2i|i2t)_r\d+")  # eval's recall@k keys
RECIPE_LR = TrainConfig.lr  # the release's fine-tune rate, for pretrained weights
RANDOM_INIT_LR = PRESETS["tiny-smartclip"]["lr"]  # the tiny fine-tune rate, for random weights


@dataclass(frozen=True)
class Profile:
    """What a mode runs: the benchmarked model, the trainer's model flags, the evaluated model
    (the trained one), and the values of the size flags left unset."""

    bench_model: str
    train_flags: tuple[str, ...]
    eval_model: str
    sizes: dict[str, int]


PROFILES = {
    # bench batch 64, not bench's 128: MulCLIP's ten text passes at 248 tokens keep about 0.55 GiB
    # of activations per pair (counted on CPU with saved-tensor hooks), so 128 would need ~70 GiB
    "gpu": Profile(
        "ViT-B-16",
        ("--model", "ViT-B-16-quickgelu", "--precision", "amp"),
        "ViT-B-16-quickgelu",
        {
            "bench_batch_size": 64,
            "bench_steps": 20,
            "bench_rounds": 3,
            "bench_warmup_steps": 5,
            "scenes_images": 2000,
            "batch_size": 64,
            "steps": 300,
            "workers": 8,
        },
    ),
    # the tiny fine-tune preset (its heads, logit scale, fp32), at sizes a CPU runs in seconds
    "tiny": Profile(
        TINY_MODEL,
        ("--preset", "tiny-smartclip"),
        TINY_MODEL,
        {
            "bench_batch_size": 4,
            "bench_steps": 2,
            "bench_rounds": 1,
            "bench_warmup_steps": 1,
            "scenes_images": 40,
            "batch_size": 4,
            "steps": 4,
            "workers": 0,
        },
    ),
}


def _size(name: str, what: str) -> Any:
    """A size flag: None takes the mode's value (both shown in the help)."""
    per_mode = ", ".join(f"{mode} {profile.sizes[name]}" for mode, profile in PROFILES.items())
    return field(default=None, metadata={"help": f"{what} (None: {per_mode})"})


@dataclass(frozen=True)
class GpuCheckConfig:
    """Every field is a flag; a size left None takes the mode's value (`PROFILES`)."""

    mode: str = field(
        default="auto",
        metadata={"help": f"one of {MODES}; auto: gpu (ViT-B/16) with CUDA, else tiny"},
    )
    output_dir: str = field(default="runs/gpu_check", metadata={"help": "where runs go"})
    name: str | None = field(
        default=None, metadata={"help": "this run's folder (None: a timestamp and the mode)"}
    )
    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "local weights to fine-tune from (gpu: OpenAI's ViT-B-16.pt); None: random"
        },
    )
    lr: float | None = field(
        default=None,
        metadata={
            "help": f"backbone rate (None: the recipe's {RECIPE_LR:g} from --pretrained; "
            f"{RANDOM_INIT_LR:g}, the tiny fine-tune presets' rate, from random init)"
        },
    )
    scenes_dir: str = field(
        default="runs/data/scenes", metadata={"help": "cache of rendered scenes"}
    )
    scenes_images: int | None = _size("scenes_images", "built-in scenes to render")
    batch_size: int | None = _size("batch_size", "fine-tune micro-batch")
    accum_freq: int = field(default=2, metadata={"help": "fine-tune micro-batches per step"})
    steps: int | None = _size("steps", "fine-tune optimizer steps")
    workers: int | None = _size("workers", "fine-tune data loader workers")
    bench_batch_size: int | None = _size("bench_batch_size", "bench batch")
    bench_steps: int | None = _size("bench_steps", "bench timed steps per round")
    bench_rounds: int | None = _size("bench_rounds", "bench rounds")
    bench_warmup_steps: int | None = _size("bench_warmup_steps", "bench untimed steps first")

    def __post_init__(self) -> None:
        require(self.mode in MODES, "mode", f"choose one of {MODES}")
        require(
            self.pretrained is None or Path(self.pretrained).is_file(),
            "pretrained",
            f"no such local file {self.pretrained!r}",
        )
        require(self.lr is None or self.lr > 0, "lr", "must be positive")
        require(self.accum_freq >= 2, "accum_freq", "at least 2: the check covers accumulation")
        for name in ("scenes_images", "batch_size", "steps", "bench_batch_size", "bench_steps"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, "must be at least 1")
        require(self.bench_rounds is None or self.bench_rounds >= 1, "bench_rounds", "at least 1")
        for name in ("workers", "bench_warmup_steps"):
            value = getattr(self, name)
            require(value is None or value >= 0, name, "must be non-negative")


class StepFailed(Exception):
    """A step whose command did not complete; the message is the one line to print."""


def resolved(cfg: GpuCheckConfig, cuda: bool) -> GpuCheckConfig:
    """`cfg` with its mode decided (auto: gpu where `cuda`, else tiny), its unset sizes from that
    mode's profile and its learning rate from the initialisation; gpu without CUDA exits 2."""
    mode = cfg.mode if cfg.mode != "auto" else ("gpu" if cuda else "tiny")
    if mode == "gpu" and not cuda:
        print(
            f"{PROG}: error: --mode gpu: no CUDA device (--mode tiny runs on CPU)", file=sys.stderr
        )
        raise SystemExit(2)
    sizes = {k: v for k, v in PROFILES[mode].sizes.items() if getattr(cfg, k) is None}
    lr = cfg.lr or (RECIPE_LR if cfg.pretrained else RANDOM_INIT_LR)
    return dataclasses.replace(cfg, mode=mode, lr=lr, **sizes)


def environment() -> dict[str, str | None]:
    """The device and the versions the figures belong to."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
    }


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def run_step(
    name: str, module: str, main: Callable[[list[str]], Any], argv: list[str]
) -> tuple[Any, dict]:
    """(what `main(argv)` returned, the step's record: argv, command, seconds, and on CUDA the
    peak memory allocated during the step). A step that exits or raises is `StepFailed`."""
    command = f"python -m {module} {shlex.join(argv)}"
    rerun = f"rerun it alone: {command}"
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    print(f"\n== {name}: {command}", flush=True)
    start = time.perf_counter()
    try:
        value = main(argv)
        if cuda:
            torch.cuda.synchronize()
    except SystemExit as err:  # the command's own error line, if any, is already printed
        cause = err.code if isinstance(err.code, str) else f"exit status {err.code}"
        raise StepFailed(f"step {name} failed ({first_line(cause)}); {rerun}") from None
    except Exception as err:  # a crash of the step, e.g. CUDA out of memory
        cause = f"{type(err).__name__}: {err}"
        raise StepFailed(f"step {name} failed ({first_line(cause)}); {rerun}") from None
    record = {
        "argv": list(argv),
        "command": command,
        "seconds": time.perf_counter() - start,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    return value, record


def bench_argv(cfg: GpuCheckConfig, output: Path) -> list[str]:
    """Step 1's flags: `smartclip.bench` of the mode's model at 248 tokens, every objective."""
    return [
        "--models", PROFILES[cfg.mode].bench_model, "--context-length", str(LONG_CONTEXT),
        "--objectives", ",".join(OBJECTIVES), "--batch-size", str(cfg.bench_batch_size),
        "--steps", str(cfg.bench_steps), "--rounds", str(cfg.bench_rounds),
        "--warmup-steps", str(cfg.bench_warmup_steps), "--output", str(output),
    ]  # fmt: skip


def train_argv(cfg: GpuCheckConfig, logs: Path) -> list[str]:
    """Step 2's flags: `smartclip.train` of SmartCLIP on the built-in scenes with the mode's
    model flags (gpu: fp16 AMP), gradient checkpointing and accumulation, as run `train` in
    `logs`. `--epochs` = `--steps`: every epoch has at least one step, so `--steps` sets the
    run's length and cosine horizon; warm-up is a tenth of it; validation and the checkpoint
    come at the end only."""
    argv = [
        *PROFILES[cfg.mode].train_flags, "--objective", "smartclip", "--grad-checkpointing",
        "--batch-size", str(cfg.batch_size), "--accum-freq", str(cfg.accum_freq),
        "--steps", str(cfg.steps), "--epochs", str(cfg.steps), "--lr", f"{cfg.lr:g}",
        "--warmup", str(cfg.steps // 10), "--log-every-n-steps", str(max(1, cfg.steps // 10)),
        "--workers", str(cfg.workers),
        "--scenes-dir", cfg.scenes_dir, "--scenes-images", str(cfg.scenes_images),
        "--val-frequency", "0", "--save-frequency", "0",
        "--logs", str(logs), "--name", "train",
    ]  # fmt: skip
    return argv + (["--pretrained", cfg.pretrained] if cfg.pretrained else [])


def eval_argv(cfg: GpuCheckConfig, export: str, output: Path) -> list[str]:
    """Step 3's flags: `smartclip.eval` retrieval of `export` on the scenes' held-out captions."""
    val = scenes_root(cfg.scenes_dir, cfg.scenes_images) / "val" / "captions.csv"
    return [
        "--model", PROFILES[cfg.mode].eval_model, "--pretrained", export,
        "--data", str(val), "--csv-id-key", "image_id", "--output", str(output),
    ]  # fmt: skip


def read_rows(path: Path) -> list[dict[str, float]]:
    """A run log's CSV rows, every value as a float."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def bench_step(cfg: GpuCheckConfig, folder: Path) -> dict:
    """Step 1, with the rows bench wrote to its JSON."""
    out = folder / "bench.json"
    _, record = run_step("bench", "smartclip.bench", bench.main, bench_argv(cfg, out))
    return {**record, "rows": json.loads(out.read_text())["results"]}


def train_step(cfg: GpuCheckConfig, folder: Path) -> dict:
    """Step 2 (rendering the scenes first unless cached), with its logged losses and
    throughput and the path of its export."""
    rendered = not (scenes_root(cfg.scenes_dir, cfg.scenes_images) / "train").is_dir()
    argv = train_argv(cfg, folder)
    run_dir, record = run_step("train", "smartclip.train", train.main, argv)
    log = read_rows(Path(run_dir) / "train.csv") or [{}]
    val = read_rows(Path(run_dir) / "val.csv") or [None]
    return {
        **record,
        "init": cfg.pretrained or "random",
        "scenes_rendered": rendered,  # if so, the step's seconds include the rendering
        "pairs_per_step": cfg.batch_size * cfg.accum_freq,
        "loss_first": log[0].get("loss"),  # at the first logged step, a tenth of the run
        "loss_last": log[-1].get("loss"),
        "samples_per_s": log[-1].get("samples_per_s"),  # over the last tenth of the run
        "val": val[-1],  # the trainer's own validation at the last step
        "export": str(Path(run_dir) / "export" / EXPORT_WEIGHTS_NAME),
    }


def eval_step(cfg: GpuCheckConfig, folder: Path, export: str) -> dict:
    """Step 3, with the recalls eval wrote to its JSON."""
    out = folder / "eval.json"
    _, record = run_step("eval", "smartclip.eval", evaluate.main, eval_argv(cfg, export, out))
    return {**record, "retrieval": json.loads(out.read_text())["results"][0]["retrieval"]}


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    """Short tables of the results: step times, the bench rows, the fine-tune, the recalls."""
    env, steps = results["environment"], results["steps"]
    bench_rows, tr, ev = steps["bench"]["rows"], steps["train"], steps["eval"]["retrieval"]
    recalls = {k: v for k, v in ev.items() if RECALL.fullmatch(k)}
    lines = [
        f"GPU check ({results['mode']} mode) on {env['device']}: torch {env['torch']}, "
        f"open_clip {env['open_clip']}, CUDA {env['cuda']}; {results['finished']}",
        "",
        "| step | seconds | peak GiB |",
        "|---|---|---|",
        *(
            f"| {name}{' (scenes rendered first)' if s.get('scenes_rendered') else ''} | "
            f"{s['seconds']:.1f} | {_num(s['peak_memory_gib'], '.2f')} |"
            for name, s in steps.items()
        ),
        f"| total | {results['seconds']:.1f} | |",
        "",
        f"bench: {bench_rows[0]['model']}, {LONG_CONTEXT} tokens, batch "
        f"{bench_rows[0]['batch_size']}, {bench_rows[0]['precision']}",
        "",
        "| objective | samples/s | ms/step | peak GiB | MFU | step / CLIP step |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['objective']} | {r['samples_per_s']:.1f} | {1e3 * r['step_seconds']:.1f} | "
            f"{r['peak_memory_gib']:.2f} | {_num(r['mfu'], '.1%')} | {r['over_clip']:.3f} |"
            for r in bench_rows
        ),
        "",
        "| fine-tune init | steps × pairs | samples/s | loss first → last |",
        "|---|---|---|---|",
        f"| {tr['init']} | {results['config']['steps']} × {tr['pairs_per_step']} | "
        f"{_num(tr['samples_per_s'], '.1f')} | "
        f"{_num(tr['loss_first'], '.3f')} → {_num(tr['loss_last'], '.3f')} |",
        "",
        f"retrieval of the export ({ev['images']} images, {ev['captions']} captions)",
        "",
        "| " + " | ".join(recalls) + " |",
        "|" + "---|" * len(recalls),
        "| " + " | ".join(f"{v:.1f}" for v in recalls.values()) + " |",
    ]
    return "\n".join(lines) + "\n"


def run_check(cfg: GpuCheckConfig, argv: Sequence[str]) -> Path:
    """The three steps into `<output_dir>/<name>/`; returns the results file written last."""
    name = cfg.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.mode}"
    folder = Path(cfg.output_dir) / name
    if folder.exists():
        print(f"{PROG}: error: --name: {folder} exists; pick another", file=sys.stderr)
        raise SystemExit(2)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    steps = {"bench": bench_step(cfg, folder), "train": train_step(cfg, folder)}
    steps["eval"] = eval_step(cfg, folder, steps["train"]["export"])
    results = {
        "status": "ok",
        "mode": cfg.mode,
        "environment": environment(),
        "argv": list(argv),
        "config": asdict(cfg),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "seconds": time.perf_counter() - start,
        "steps": steps,
    }
    table = markdown(results)
    print("\n" + table)
    atomic_write_text(folder / "results.md", table)
    atomic_write_text(folder / "results.json", json.dumps(results, indent=1) + "\n")
    print(f"written: {folder / 'results.json'} and {folder / 'results.md'}")
    return folder / "results.json"


def main(argv: Sequence[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_config(GpuCheckConfig, argv, prog=PROG, description=__doc__.split("\n")[0])
    cfg = resolved(cfg, torch.cuda.is_available())
    try:
        return run_check(cfg, argv)
    except StepFailed as err:
        print(f"{PROG}: error: {err}; no results written", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
