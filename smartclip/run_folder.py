"""A training run's folder and its words: naming, what a resume may change, the warnings file,
and what is printed when a run ends, stops or is interrupted.

    <logs>/<name>/config.json, train.csv, val.csv, run.log, tensorboard/, checkpoints/, export/

A run that stops before its first checkpoint leaves no folder (`discarded_on_error`); one that
resumes must have been trained with the same settings, except the OPERATIONAL ones.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from smartclip import distributed as dist
from smartclip.cli import flag_name
from smartclip.export import EXPORT_WEIGHTS_NAME
from smartclip.train_config import TrainConfig

RUN_LOG = "run.log"  # the warnings of a run, beside train.csv


class RunError(Exception):
    """A run that cannot produce a real result; the message names the cause in one line."""


class Interrupted(Exception):
    """Ctrl-C during training: the step reached and the run's last checkpoint."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


def run_directory(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from). A fresh run may not reuse the name of a run
    that has checkpoints; a folder left by a run that stopped before its first checkpoint is
    replaced."""
    name = cfg.name or time.strftime("%Y_%m_%d-%H_%M_%S") + f"-{cfg.model}-{cfg.objective}"
    run_dir = Path(cfg.logs) / name
    if cfg.resume == "latest":
        resume = run_dir / "checkpoints" / "latest.pt"
        if not resume.is_file():
            raise RunError(f"--resume latest: no checkpoint at {resume}")
        return run_dir, resume
    if cfg.resume is not None:
        return run_dir, Path(cfg.resume)
    if any((run_dir / "checkpoints").glob("*.pt")):
        raise RunError(f"run {run_dir} has checkpoints: pick another --name or --resume latest")
    return run_dir, None


# flags that change how a run is operated, not what it computes: free to differ on resume
# (--steps and --epochs set the cosine horizon and the data order: not among them)
OPERATIONAL = (
    "resume", "name", "logs", "workers", "threads", "device", "save_frequency",
    "save_every_steps", "val_frequency", "log_every_n_steps",
)  # fmt: skip


def changed_settings(stored: dict, cfg: TrainConfig) -> list[str]:
    """'--flag: stored → now' for every setting that differs from a checkpoint's config, except
    the OPERATIONAL ones (a resumed run continues the same computation)."""
    stored = json.loads(json.dumps(stored))  # tuples and lists alike on both sides
    now = json.loads(json.dumps(asdict(cfg)))
    return [
        f"{flag_name(k)}: {stored.get(k)!r} → {now[k]!r}"
        for k in now
        if k not in OPERATIONAL and stored.get(k) != now[k]
    ]


def report(run_dir: Path, metrics: dict[str, float]) -> None:
    """Print where the run's checkpoints, logs and export are, and how to load the export."""
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    logs = [str(run_dir / n) for n in ("train.csv", "val.csv", RUN_LOG) if (run_dir / n).exists()]
    export = run_dir / "export"
    print(
        f"run:          {run_dir}\n"
        f"checkpoints:  {run_dir / 'checkpoints'}: {', '.join(ckpts)} (resume: --name "
        f"{run_dir.name} --resume latest; export one: python -m smartclip.export --checkpoint "
        "PATH)\n"
        f"logs:         {', '.join(logs)}; tensorboard --logdir {run_dir / 'tensorboard'}\n"
        f"open_clip:    {export / EXPORT_WEIGHTS_NAME} "
        f"(open_clip.create_model('local-dir:{export}'))\n"
        f"evaluate:     python -m smartclip.eval --pretrained {export / EXPORT_WEIGHTS_NAME} "
        "--data CAPTIONS.csv"
    )
    if metrics:
        print("retrieval:    " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))


class WarningsFile(logging.Handler):
    """The run's warnings, held until the run folder exists, then appended to its run.log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.held: list[logging.LogRecord] = []
        self.path: Path | None = None

    def open(self, path: Path) -> None:
        """Write the held warnings to `path` (created even if there are none) and every
        later one."""
        path.touch()
        self.path, held, self.held = path, self.held, []
        for record in held:
            self.emit(record)

    def emit(self, record: logging.LogRecord) -> None:
        if self.path is None:
            self.held.append(record)
            return
        with self.path.open("a") as fh:
            fh.write(self.format(record) + "\n")


@contextmanager
def captured_warnings() -> Iterator[WarningsFile]:
    """A `WarningsFile` on the root logger for the duration of the block; an exception that
    ends the block is written to the file too (not to the terminal: the caller reports it)."""
    handler = WarningsFile()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    except BaseException as err:
        reason = str(err) or type(err).__name__
        handler.emit(logging.makeLogRecord({"levelname": "ERROR", "msg": f"stopped: {reason}"}))
        raise
    finally:
        root.removeHandler(handler)


@contextmanager
def discarded_on_error(run_dir: Path) -> Iterator[None]:
    """Remove the run folder if the block fails before any checkpoint was written: a run with
    nothing to resume leaves nothing behind (no log that looks like a result, no blocked name)."""
    try:
        yield
    except BaseException:
        if dist.rank() == 0 and not any((run_dir / "checkpoints").glob("*.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
