"""Time to reach preserve R² 0.9 and 0.95 on the quick world (a benchmark, not a test).

    python experiments/benchmark_convergence.py [--steps 10000 --eval-every 500 --out DIR]

Trains each objective with the quick preset's settings, schedule included (one process each,
one thread), and every `eval_every` steps measures the worst block's held-out nonlinear
R²(z_k | u). Wall-clock time
counts training only (evaluation time is excluded). Writes OUT/results.csv, OUT/convergence.png
and prints the steps and seconds at which each threshold was first reached (or "not reached").
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from synthetic_recovery import RecoveryConfig, block_targets

from identifiability.metrics import r2_scores
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import parse_config, require
from smartclip.fit import FitConfig, fit, held_out_batch
from sweep import Job, RunContext, begin, markdown_table, run_sweep
from synthetic.worlds import World

THRESHOLDS = (0.9, 0.95)


@dataclass(frozen=True)
class BenchmarkConfig(RecoveryConfig):
    out: str = field(default="runs/benchmark_convergence", metadata={"help": "output folder"})
    eval_every: int = field(default=500, metadata={"help": "steps between evaluations"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.eval_every > 0, "eval_every", f"must be positive, got {self.eval_every}")


def trace(
    ctx: RunContext, world_config, fit_config: FitConfig, eval_every: int, n_eval: int
) -> list[dict]:
    """Train once; every `eval_every` steps record (steps, train seconds, min block R²)."""
    world = World(world_config)
    held_out = held_out_batch(world, n_eval, fit_config.seed)
    targets = block_targets(world_config, held_out.z)
    rows, clock = [], {"train": 0.0, "since": time.perf_counter()}

    def on_step(step: int, terms: dict[str, float], model: torch.nn.Module) -> None:
        if (step + 1) % eval_every:
            return
        clock["train"] += time.perf_counter() - clock["since"]
        with torch.no_grad():
            u = model.encode_image(held_out.x).numpy()
        scores = r2_scores(u, targets)
        rows.append(
            {
                "objective": fit_config.objective,
                "step": step + 1,
                "seconds": clock["train"],
                "min_r2": min(scores.values()),
                "mean_r2": sum(scores.values()) / len(scores),
                "loss": terms["loss"],
            }
        )
        ctx.progress(eval_every)
        clock["since"] = time.perf_counter()

    fit(world, fit_config, on_step, ctx.log_dir)
    return rows


def first_reached(frame: pd.DataFrame) -> pd.DataFrame:
    out = []
    for objective, g in frame.groupby("objective"):
        for threshold in THRESHOLDS:
            hit = g[g.min_r2 >= threshold]
            first = hit.iloc[0] if len(hit) else None
            out.append(
                {
                    "objective": objective,
                    "threshold": threshold,
                    "steps": None if first is None else int(first.step),
                    "seconds": None if first is None else round(float(first.seconds), 1),
                    "best_min_r2": round(float(g.min_r2.max()), 3),
                }
            )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(BenchmarkConfig, argv, description=__doc__.split("\n")[0])
    out = Path(cfg.out)
    world = cfg.world_config(cfg.worlds[0], cfg.seeds[0])
    jobs = [
        Job(
            key=o,
            fn=trace,
            steps=cfg.steps - cfg.steps % cfg.eval_every,
            kwargs={
                "world_config": world,
                "eval_every": cfg.eval_every,
                "n_eval": cfg.n_eval,
                "fit_config": FitConfig(**cfg.settings(), objective=o, seed=cfg.seeds[0]),
            },
            cpu_paths=cfg.cpu_paths,
        )
        for o in cfg.objectives
    ]
    begin(out, {"config": cfg}, jobs, derived=("results.csv", "convergence.png", "summary.md"))
    frames = run_sweep(jobs, out, cfg.workers, desc="benchmark", columns=None)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for objective, g in frames.groupby("objective"):
        axes[0].plot(g.step, g.min_r2, marker="o", label=objective)
        axes[1].plot(g.seconds, g.min_r2, marker="o", label=objective)
    for ax, xlabel in zip(
        axes, ("training steps", "training seconds (one CPU thread)"), strict=True
    ):
        for threshold in THRESHOLDS:
            ax.axhline(threshold, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("worst block's held-out R²(z_k | u)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=120)
    table = first_reached(frames)
    atomic_write_text(out / "summary.md", markdown_table(table))
    print(table.to_string(index=False))


if __name__ == "__main__":
    sys.exit(main())
