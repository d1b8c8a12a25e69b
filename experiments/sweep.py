"""What every experiment script shares: a resumable parallel sweep, CSV/JSON output, plots.

A sweep is a list of `Job`s. Each job's rows are written to `OUT/runs/<key>.csv` atomically when
it finishes, so a sweep killed and restarted with the same `OUT` skips finished jobs. Jobs run in
`workers` spawned processes (one torch thread each); a single progress bar counts training steps
across all of them. Results are long-format rows:

    world, objective, seed, quantity, block, subset, dim, value
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import queue
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

COLUMNS = ["world", "objective", "seed", "quantity", "block", "subset", "dim", "value"]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Job:
    """One unit of a sweep: `fn(progress, **kwargs) -> rows`; `steps` sizes the progress bar.
    `fn` must be a module-level function (it is pickled into a worker process)."""

    key: str
    fn: Callable[..., list[dict[str, Any]]]
    kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rows(rows: Iterable[dict[str, Any]], path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=COLUMNS)
    atomic_write_text(path, frame.to_csv(index=False))
    return frame


def write_json(obj: Any, path: Path) -> None:
    """JSON dump of plain data and dataclasses (nested), atomically."""

    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    atomic_write_text(path, json.dumps(obj, indent=2, default=default) + "\n")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_job(job: Job, progress_queue: Any) -> list[dict[str, Any]]:
    return job.fn(lambda n: progress_queue.put(n), **job.kwargs)


def run_sweep(jobs: list[Job], out: Path, workers: int = 2, desc: str = "sweep") -> pd.DataFrame:
    """Run the jobs not yet finished under `out/runs`, then return (and write) all results."""
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("job keys must be unique")
    todo = [j for j in jobs if not (runs / f"{j.key}.csv").exists()]
    if len(todo) < len(jobs):
        print(f"{desc}: {len(jobs) - len(todo)} of {len(jobs)} runs already done in {runs}")
    if todo:
        with mp.get_context("spawn").Manager() as manager:
            progress_queue = manager.Queue()
            bar = tqdm(total=sum(j.steps for j in todo), desc=desc, unit="step", smoothing=0.05)
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
            ) as pool:
                pending = {pool.submit(_run_job, j, progress_queue): j for j in todo}
                while pending:
                    done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(progress_queue, bar)
                    for future in done:
                        job = pending.pop(future)
                        write_rows(future.result(), runs / f"{job.key}.csv")
                        bar.set_postfix_str(f"done {job.key}")
                _drain(progress_queue, bar)
            bar.close()
    frames = [pd.read_csv(runs / f"{k}.csv", dtype={"block": str, "subset": str}) for k in keys]
    results = pd.concat(frames, ignore_index=True)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    return results


def _drain(progress_queue: Any, bar: tqdm) -> None:
    while True:
        try:
            bar.update(progress_queue.get_nowait())
        except queue.Empty:
            return
