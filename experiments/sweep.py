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


def write_rows(
    rows: Iterable[dict[str, Any]], path: Path, columns: list[str] | None = COLUMNS
) -> pd.DataFrame:
    """Rows as CSV (atomically); `columns=None` keeps the rows' own keys."""
    frame = pd.DataFrame(list(rows), columns=columns)
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
    """One thread per worker process, for torch and for numpy's BLAS (kernel ridge)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _run_job(job: Job, progress_queue: Any) -> list[dict[str, Any]]:
    return job.fn(lambda n: progress_queue.put(n), **job.kwargs)


def run_sweep(
    jobs: list[Job],
    out: Path,
    workers: int = 2,
    desc: str = "sweep",
    columns: list[str] | None = COLUMNS,
) -> pd.DataFrame:
    """Run the jobs not yet finished under `out/runs`, then return (and write to
    `out/results.csv`) all results; `columns=None` for rows that are not long-format results."""
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
                        write_rows(future.result(), runs / f"{job.key}.csv", columns)
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


def plot_grouped_bars(
    results: pd.DataFrame, quantities: list[str], path: Path, ylabel: str = "R²"
) -> None:
    """One panel per world: bars per block for each (objective, quantity), height = mean over
    seeds, whiskers = min-max over seeds."""
    import matplotlib.pyplot as plt

    r = results[results.quantity.isin(quantities)]
    worlds = list(dict.fromkeys(r.world))
    fig, axes = plt.subplots(1, len(worlds), figsize=(5 * len(worlds), 3.6), squeeze=False)
    for ax, world in zip(axes[0], worlds, strict=True):
        w = r[r.world == world]
        per_seed = w.groupby(["objective", "quantity", "block", "seed"]).value.mean()
        stats = per_seed.groupby(["objective", "quantity", "block"]).agg(["mean", "min", "max"])
        series = list(dict.fromkeys((o, q) for o, q, _ in stats.index))
        blocks = list(dict.fromkeys(b for _, _, b in stats.index))
        width = 0.8 / len(series)
        for i, (objective, quantity) in enumerate(series):
            s = stats.loc[(objective, quantity)].reindex(blocks)
            xs = [blocks.index(b) + (i - (len(series) - 1) / 2) * width for b in blocks]
            err = [s["mean"] - s["min"], s["max"] - s["mean"]]
            label = objective if len(quantities) == 1 else f"{objective}: {quantity}"
            ax.bar(xs, s["mean"], width, yerr=err, capsize=2, label=label)
        ax.set_xticks(range(len(blocks)), blocks)
        ax.set_ylim(min(0.0, float(stats["min"].min())) - 0.05, 1.05)
        ax.axhline(0.9, color="grey", lw=0.8, ls="--")
        ax.set_title(world)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmap(
    matrix: pd.DataFrame, path: Path, title: str, vmin: float = 0.0, vmax: float = 1.0
) -> None:
    """A labelled heatmap of a (rows × columns) frame, values printed in the cells."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * matrix.shape[1], 1.2 + 0.45 * matrix.shape[0]))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=45, ha="right")
    ax.set_yticks(range(matrix.shape[0]), [str(i) for i in matrix.index])
    if matrix.size <= 400:
        for (i, j), value in pd.DataFrame(matrix.to_numpy(dtype=float)).stack().items():
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value < (vmin + vmax) / 2 else "black",
            )
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
