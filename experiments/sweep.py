"""What every experiment script shares: a resumable parallel sweep keyed by configuration, CSV
and JSON output, plots.

A sweep is a list of `Job`s. A job's `run_id` is a hash of everything its function receives (the
function's name and its keyword arguments: world, training settings, evaluation sizes, ...), so
a result belongs to its configuration: `OUT/runs/<key>-<run_id>.csv` (rows) and `.json` (the
configuration) are written atomically when the job finishes, a sweep restarted with the same
settings skips finished jobs, and a changed setting runs anew (the old result stays on disk
under its own id and is never mixed in; the message names what changed). Jobs run in `workers`
spawned processes (one torch thread each); a single progress bar counts training steps across
all of them. Each job may log its training curves under `ctx.log_dir`
(`OUT/logs/<key>-<run_id>/`). Results are long-format rows:

    world, objective, seed, quantity, block, subset, dim, value, run

`begin(out, payload, jobs)` starts an output folder: it removes the derived files of an earlier
invocation and writes `config.json` (the payload, the machine, every job's run id), so
`config.json`, `results.csv` and what is derived from it always describe the same runs. Workers
compute on pinned CPU paths (`Job.cpu_paths`, `smartclip.reproducible`): by default the same
numbers on any x86-64 machine with AVX2, whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import queue
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from identifiability.verdicts import t_interval
from smartclip import reproducible
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import flag_name, parse_config

COLUMNS = ["world", "objective", "seed", "quantity", "block", "subset", "dim", "value", "run"]
DERIVED = ("results.csv", "summary.txt")


def parse_experiment(
    cls: type, argv: Sequence[str] | None, presets: Mapping[str, Mapping[str, Any]], doc: str
) -> Any:
    """`smartclip.cli.parse_config` for an experiment script: `--quick` is shorthand for
    `--preset quick`, and the script's first docstring line describes it in `--help`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in argv:
        argv = ["--preset", "quick", *(a for a in argv if a != "--quick")]
    return parse_config(cls, argv, presets, description=doc.split("\n")[0])


def interval(values: pd.Series) -> str:
    """mean ± half-width of the 95 % t-interval over seeds (± 0 for a single seed;
    `identifiability.verdicts.t_interval`)."""
    mean, half = t_interval(values.to_numpy())
    return f"{mean:.3f} ± {half:.3f}"


def markdown_table(table: pd.DataFrame) -> str:
    """A markdown table of `table`; a named index becomes the first column(s), NaN shows as —
    and "|" inside a cell is escaped."""
    if any(name is not None for name in table.index.names):
        table = table.reset_index()
    cells = table.astype(object).where(table.notna(), "—").astype(str)
    cells = cells.map(lambda text: text.replace("|", "\\|"))
    header = [str(c).replace("|", "\\|") for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def canonical(obj: Any) -> str:
    """Deterministic JSON of plain data and (nested) dataclasses: sorted keys, tuples as lists."""
    return json.dumps(obj, sort_keys=True, default=_plain)


@dataclass(frozen=True)
class RunContext:
    """What a running job may use besides its arguments: `progress(n)` advances the sweep's bar
    by n steps; `log_dir` is the job's own folder for training curves."""

    progress: Callable[[int], None]
    log_dir: Path


def function_name(fn: Callable) -> str:
    """`module.qualname`, the module named by its file when the script runs as `__main__`, so a
    job keys the same whether its script runs directly or is imported by another one."""
    module = fn.__module__
    path = getattr(sys.modules.get(module), "__file__", None)
    if module in ("__main__", "__mp_main__") and path:
        module = Path(path).stem
    return f"{module}.{fn.__qualname__}"


@dataclass(frozen=True)
class Job:
    """One unit of a sweep: `fn(ctx, **kwargs) -> rows`; `steps` sizes the progress bar.
    `fn` must be a module-level function (it is pickled into a worker process)."""

    key: str
    fn: Callable[..., list[dict[str, Any]]]
    kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 1
    cpu_paths: str = "avx2"

    @property
    def config(self) -> dict[str, Any]:
        """Everything that determines the job's result, as plain data: the function, its
        arguments and the CPU paths it computes on (`smartclip.reproducible`)."""
        return {
            "fn": function_name(self.fn),
            "kwargs": json.loads(canonical(self.kwargs)),
            "cpu_paths": self.cpu_paths,
        }

    @property
    def run_id(self) -> str:
        """12 hex digits of the SHA-256 of the canonical configuration."""
        return hashlib.sha256(canonical(self.config).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return f"{self.key}-{self.run_id}"


def cpu_paths(jobs: Sequence[Job]) -> str:
    """The one CPU paths setting of a sweep's jobs (its workers share one environment)."""
    paths = {j.cpu_paths for j in jobs} or {"avx2"}
    if len(paths) > 1:
        raise ValueError(f"one sweep computes on one set of CPU paths, got {sorted(paths)}")
    return paths.pop()


def write_rows(
    rows: Iterable[dict[str, Any]], path: Path, columns: list[str] | None = COLUMNS
) -> pd.DataFrame:
    """Rows as CSV (atomically); `columns=None` keeps the rows' own keys."""
    frame = pd.DataFrame(list(rows), columns=columns)
    atomic_write_text(path, frame.to_csv(index=False))
    return frame


def write_json(obj: Any, path: Path) -> None:
    """JSON dump of plain data and dataclasses (nested), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_plain) + "\n")


def begin(
    out: Path,
    payload: dict[str, Any],
    jobs: Sequence[Job],
    derived: Sequence[str] = DERIVED,
) -> None:
    """Start (or resume) an output folder: remove `derived` files of an earlier invocation and
    write `config.json` = payload + {"machine": the CPU, pins and library versions
    (`smartclip.reproducible.machine`), "runs": {key: run_id}}."""
    out.mkdir(parents=True, exist_ok=True)
    for name in derived:
        (out / name).unlink(missing_ok=True)
    write_json(
        {
            **payload,
            "machine": reproducible.machine(cpu_paths(jobs)),
            "runs": {j.key: j.run_id for j in jobs},
        },
        out / "config.json",
    )


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        items: dict[str, Any] = {}
        for k, v in obj.items():
            items |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return items
    return {prefix: obj}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences 'path (--flag): old → new' between two job configurations."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for path in sorted(a.keys() | b.keys()):
        if a.get(path) != b.get(path):
            flag = flag_name(path.rsplit(".", 1)[-1])
            out.append(f"{path} ({flag}): {a.get(path, '∅')} → {b.get(path, '∅')}")
    return out


def _report_changed(job: Job, runs: Path) -> None:
    earlier = [p for p in runs.glob(f"{job.key}-*.json") if p.stem != job.name]
    if not earlier:
        return
    newest = max(earlier, key=lambda p: p.stat().st_mtime)
    changes = config_diff(json.loads(newest.read_text()), job.config)
    shown = "; ".join(changes[:3]) + (f"; +{len(changes) - 3} more" if len(changes) > 3 else "")
    print(f"{job.key}: an earlier run in {runs} used other settings ({shown}); running anew")


def _init_worker() -> None:
    """One thread per worker process, for torch and for numpy's BLAS (kernel ridge)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _run_job(job: Job, progress_queue: Any, log_dir: Path) -> list[dict[str, Any]]:
    """The job, once the CPU paths that the parent pinned are verified in this worker."""
    reproducible.check(job.cpu_paths)
    ctx = RunContext(lambda n: progress_queue.put(n), log_dir)
    return job.fn(ctx, **job.kwargs)


def run_sweep(
    jobs: list[Job],
    out: Path,
    workers: int = 2,
    desc: str = "sweep",
    columns: list[str] | None = COLUMNS,
) -> pd.DataFrame:
    """Run the jobs without a result for their configuration under `out/runs`, then return (and
    write to `out/results.csv`) the results of exactly these jobs, each row tagged with its
    job's run id (`run`); `columns=None` for rows that are not long-format results.

    The workers are spawned with the environment of the jobs' `cpu_paths`
    (`smartclip.reproducible`; "avx2": the same numbers on any x86-64 machine with AVX2) and one
    thread each, so a job's result depends neither on the machine's vector width nor on the
    number of workers."""
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("job keys must be unique")
    todo = [j for j in jobs if not (runs / f"{j.name}.csv").exists()]
    if len(todo) < len(jobs):
        print(f"{desc}: {len(jobs) - len(todo)} of {len(jobs)} runs already done in {runs}")
    for job in todo:
        _report_changed(job, runs)
    paths = cpu_paths(jobs)
    if todo:
        reproducible.pin(paths)
        with mp.get_context("spawn").Manager() as manager:
            progress_queue = manager.Queue()
            bar = tqdm(total=sum(j.steps for j in todo), desc=desc, unit="step", smoothing=0.05)
            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
            ) as pool:
                pending = {
                    pool.submit(_run_job, j, progress_queue, out / "logs" / j.name): j for j in todo
                }
                while pending:
                    done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(progress_queue, bar)
                    for future in done:
                        job = pending.pop(future)
                        try:
                            rows = [{**r, "run": job.run_id} for r in future.result()]
                        except reproducible.UnpinnedProcess as err:
                            raise SystemExit(f"{job.key}: {err}") from None
                        write_rows(rows, runs / f"{job.name}.csv", columns)
                        write_json(job.config, runs / f"{job.name}.json")
                        bar.set_postfix_str(f"done {job.key}")
                _drain(progress_queue, bar)
            bar.close()
    frames = [
        pd.read_csv(runs / f"{j.name}.csv", dtype={"block": str, "subset": str, "run": str})
        for j in jobs
    ]
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
