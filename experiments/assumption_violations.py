"""P5: break the theory's assumptions on purpose; predict before training, then measure.

    python experiments/assumption_violations.py           # 11 worlds × 3 seeds (≈ 80 min, 2 cores)
    python experiments/assumption_violations.py --quick   # 1 seed, short runs (≤ 3 min)

One world per row (`WORLDS`). For each: `identifiability.conditions.predict` BEFORE any training
(assumption verdicts, guarantee holds/void, expected value per measured quantity), then SmartCLIP
trained and measured by `synthetic_recovery.run_one` for every seed (through `sweep.run_sweep`),
then every claim decided on the seeds by the rule of `identifiability.verdicts` (held / not held /
undecided by where the 95 % interval of the seed mean lies; fewer than 3 seeds: no verdict):
  held      every claim the theory still makes (basis theorem, capacity or information bound) is
            held; "capacity": the theorem's claim where the width is near capacity (the last
            row, which breaks no assumption: `identifiability.conditions.near_capacity`)
  NOT held  some such claim is not held; undecided: none is not held, some are undecided
  failure   the guarantee is void and some claim that it would have made, and that the baseline
            holds, is not held (P5's symptom)
Writes OUT/results.csv (long format), OUT/predictions.json, OUT/table.csv, OUT/table.md and
OUT/violations.png; resumes an interrupted OUT.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from claims import PREDICTED, claim_text, label_of, measured_values, seed_values
from synthetic_recovery import tag_rows

from identifiability.conditions import (
    BOUND,
    CAPACITY,
    THEOREM,
    VOID,
    Decision,
    Expectation,
    Prediction,
    decide_prediction,
    predict,
)
from identifiability.verdicts import HELD, MIN_SEEDS, NOT_HELD, UNDECIDED, overall
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import require
from smartclip.fit import FitConfig, TrainSettings
from sweep import Job, begin, interval, markdown_table, parse_experiment, run_sweep, write_json
from synthetic.worlds import WorldConfig

ATOMS_01_2_3 = ((0, 1), (2,), (3,), (0, 1, 2), (0, 1, 3), (2, 3), (0, 1, 2, 3))


@dataclass(frozen=True)
class Violation:
    """One row: what is broken, as WorldConfig overrides and changes to the training run."""

    change: str
    world: dict = field(default_factory=dict)
    sparsity: bool = True
    embed_dim: int | None = None


WORLDS: dict[str, Violation] = {
    "baseline": Violation("nothing: every assumption holds"),
    "together": Violation("z0, z1 always described together", {"subsets": ATOMS_01_2_3}),
    "rare": Violation("z3 rarely described: p 0.5 → 0.01", {"include_prob": (0.5,) * 3 + (0.01,)}),
    "undescribed": Violation("z3 never described: p 0.5 → 0", {"include_prob": (0.5,) * 3 + (0,)}),
    "non_invertible": Violation("g_I rank-deficient: rank 5 of 10", {"img_rank": 5}),
    "correlated": Violation("dependent blocks: latent_corr 0 → 0.9", {"latent_corr": 0.9}),
    "noisy": Violation("observation noise σ 0 → 0.5", {"noise": 0.5}),
    "no_sparsity": Violation("no sparsity term: its loss weight → 0", sparsity=False),
    "narrow": Violation("embedding width → 4 < 8 described dims", embed_dim=4),
    "selection": Violation("captions depend on z: selection 0 → 2", {"selection": 2.0}),
    "near_capacity": Violation("none; embedding width → 8 = described dims", embed_dim=8),
}


@dataclass(frozen=True)
class ViolationConfig(TrainSettings):
    """Training settings shared by all rows (a row may change the sparsity weight or width)."""

    steps: int = field(default=6000, metadata={"help": "training steps per run"})
    out: str = field(default="runs/assumption_violations", metadata={"help": "output folder"})
    worlds: tuple[str, ...] = field(default=tuple(WORLDS), metadata={"help": "rows to run"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "model and data seeds"})
    world_seed: int = field(default=0, metadata={"help": "seed of every world's generators"})
    n_eval: int = field(default=2000, metadata={"help": "held-out samples per evaluation"})
    max_subsets: int = field(default=15, metadata={"help": "cap on evaluated caption subsets"})
    workers: int = field(default=2, metadata={"help": "parallel processes"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_eval", "max_subsets", "workers"):
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        require(bool(self.seeds), "seeds", "give at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "seeds must be distinct")
        unknown = [w for w in self.worlds if w not in WORLDS]
        require(not unknown, "worlds", f"unknown {unknown}; choose from {', '.join(WORLDS)}")

    def world_config(self, name: str) -> WorldConfig:
        return WorldConfig(**WORLDS[name].world, seed=self.world_seed)

    def fit_config(self, name: str, seed: int) -> FitConfig:
        row, settings = WORLDS[name], self.settings()
        if not row.sparsity:
            settings["loss_weights"] = (*self.loss_weights[:2], 0.0)
        if row.embed_dim is not None:
            settings["embed_dim"] = row.embed_dim
        return FitConfig(**settings, objective="smartclip", seed=seed)


PRESETS: dict[str, dict] = {
    "quick": {"seeds": (0,), "steps": 500, "n_eval": 500, "max_subsets": 4, "warmup": 50},
}


def predictions(cfg: ViolationConfig) -> dict[str, Prediction]:
    """The theory's prediction for every row, from the world and training settings alone."""
    out = {}
    for name in cfg.worlds:
        fit = cfg.fit_config(name, cfg.seeds[0])
        out[name] = predict(
            cfg.world_config(name),
            "smartclip",
            embed_dim=fit.embed_dim,
            sparsity_weight=fit.loss_weights[2],
            n_samples=fit.steps * fit.batch_size,
        )
    return out


def jobs(cfg: ViolationConfig) -> list[Job]:
    return [
        Job(
            key=f"{name}-seed{seed}",
            fn=tag_rows,
            kwargs={
                "meta": {"world": name, "objective": "smartclip", "seed": seed},
                "world_config": cfg.world_config(name),
                "fit_config": cfg.fit_config(name, seed),
                "n_eval": cfg.n_eval,
                "max_subsets": cfg.max_subsets,
            },
            steps=cfg.steps,
            cpu_paths=cfg.cpu_paths,
        )
        for name in cfg.worlds
        for seed in cfg.seeds
    ]


def describe(p: Prediction) -> str:
    """The prediction in a few words: atoms, dropped blocks, information bounds."""
    parts = ["atoms " + " ".join(label_of(a) for a in p.algebra.atoms)]
    if p.algebra.dropped:
        parts.append("dropped " + label_of(p.algebra.dropped))
    bounds = [e for e in p.expectations if e.basis == BOUND and e.quantity == "preserve_r2"]
    parts += [f"preserve({label_of(e.blocks)}) ≤ {e.bound:.2f}" for e in bounds]
    return "; ".join(parts)


def _key(e: Expectation) -> tuple:
    return e.quantity, e.blocks, e.subset, e.kind


def _seed_interval(results: pd.DataFrame, quantity: str) -> str:
    """The quantity averaged over blocks and subsets within each seed, as mean ± half-width of
    the 95 % interval over seeds."""
    per_seed = results[results.quantity == quantity].groupby("seed").value.mean()
    return interval(per_seed) if len(per_seed) else "—"


def row_summary(
    name: str,
    p: Prediction,
    decisions: list[Decision],
    results: pd.DataFrame,
    baseline: dict[tuple, str] | None = None,
) -> dict:
    """One table row: what was predicted, what was measured, and the verdict by the rule of
    `identifiability.verdicts` (each claim held / not held / undecided on its seeds' 95 %
    interval; the row is NOT held if any claim is, undecided if none is but some are undecided).
    A void claim that is not held counts as the violation's failure only if it is held in
    `baseline` (claim key → verdict), so failures that training shows anyway are not blamed on
    the violation."""
    seeds = results.seed.nunique()
    claims = [d for d in decisions if d.expectation.basis in (THEOREM, CAPACITY, BOUND)]
    void = [d for d in decisions if d.expectation.basis == VOID]
    wrong = sorted((d for d in claims if d.verdict == NOT_HELD), key=_miss, reverse=True)
    unsure = sorted((d for d in claims if d.verdict == UNDECIDED), key=_miss)
    broken = sorted((d for d in void if d.verdict == NOT_HELD), key=_miss, reverse=True)
    new = [d for d in broken if baseline is None or baseline.get(_key(d.expectation)) == HELD]
    verdict = overall((d.verdict for d in claims), seeds)
    if seeds >= MIN_SEEDS:
        verdict = verdict if claims else "no claim"
        if not p.guarantee:
            verdict += "; failure appeared" if new else "; no failure appeared"
    counts = Counter(d.verdict for d in claims)
    means = measured_values(results)
    preserve = " ".join(
        f"{means[('preserve_r2', b, None)]:.2f}"
        for b in range(len(p.block_dims))
        if ("preserve_r2", b, None) in means
    )
    return {
        "world": name,
        "change": WORLDS[name].change,
        "guarantee": p.status + (": " + ", ".join(p.failed) if p.failed else ""),
        "prediction": describe(p),
        "seeds": seeds,
        "preserve_r2 z0..": preserve,
        "nuisance_r2 (u, no claim)": _seed_interval(results, "nuisance_r2"),
        "nuisance_v_r2": _seed_interval(results, "nuisance_v_r2"),
        "in_r2": _seed_interval(results, "disentangle_in_r2"),
        "out_r2": _seed_interval(results, "disentangle_out_r2"),
        "claims held / not / undecided": (
            f"{counts[HELD]} / {counts[NOT_HELD]} / {counts[UNDECIDED]} of {len(claims)}"
        ),
        "void claims not held (held in baseline)": (
            f"{len(broken)}/{len(void)} ({len(new)})" if void else ""
        ),
        "worst claims": "; ".join(claim_text(d) for d in (wrong or unsure or new or broken)[:3]),
        "verdict": verdict,
    }


def _miss(d: Decision) -> float:
    return abs(d.decided.mean - d.expectation.bound)


def plot(margins: pd.DataFrame, verdicts: dict[str, str], path: Path) -> None:
    """Signed margin of every claim (value − bound for ≥ claims, bound − value for ≤ claims;
    > 0 means the claim held) per world; theorem claims in blue, capacity ones in purple, bound
    ones in green, void ones in orange."""
    import matplotlib.pyplot as plt

    worlds = list(verdicts)
    markers = dict(zip(PREDICTED, "os^vD", strict=True))
    colors = {THEOREM: "tab:blue", CAPACITY: "tab:purple", BOUND: "tab:green", VOID: "tab:orange"}
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(1.1 * len(worlds) + 5, 4.5))
    for (quantity, basis), group in margins.groupby(["quantity", "basis"]):
        xs = group.world.map(worlds.index) + rng.uniform(-0.3, 0.3, len(group))
        ax.scatter(
            xs,
            group.margin,
            s=12,
            marker=markers[quantity],
            color=colors[basis],
            alpha=0.6,
            label=f"{quantity} ({basis})",
        )
    ax.axhline(0, color="black", lw=0.8)
    labels = [f"{w}\n{verdicts[w].split(';')[0]}" for w in worlds]
    ax.set_xticks(range(len(worlds)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("margin to predicted bound (> 0: held)")
    ax.set_title("Predicted vs measured: one dot per claim (seed means)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(
    preds: dict[str, Prediction], results: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table with one row per world, every claim's seed-mean signed margin for the figure)."""
    decisions = {
        name: decide_prediction(p, seed_values(results[results.world == name]))
        for name, p in preds.items()
    }
    baseline = (
        {_key(d.expectation): d.verdict for d in decisions["baseline"]}
        if "baseline" in decisions
        else None
    )
    rows, margins = [], []
    for name, p in preds.items():
        rows.append(row_summary(name, p, decisions[name], results[results.world == name], baseline))
        for d in decisions[name]:
            e = d.expectation
            gap = d.decided.mean - e.bound if e.kind == "high" else e.bound - d.decided.mean
            margins.append({"world": name, "quantity": e.quantity, "basis": e.basis, "margin": gap})
    return pd.DataFrame(rows), pd.DataFrame(margins)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_experiment(ViolationConfig, argv, PRESETS, __doc__)
    out = Path(cfg.out)
    preds = predictions(cfg)  # before any training
    todo = jobs(cfg)
    derived = ("results.csv", "table.csv", "table.md", "violations.png")
    begin(
        out, {"config": cfg, "worlds": {n: cfg.world_config(n) for n in cfg.worlds}}, todo, derived
    )
    write_json(
        {
            n: {
                "guarantee": p.guarantee,
                "assumptions": p.assumptions,
                "algebra": p.algebra,
                "expectations": p.expectations,
            }
            for n, p in preds.items()
        },
        out / "predictions.json",
    )
    results = run_sweep(todo, out, cfg.workers, desc="assumption_violations")
    table, margins = compare(preds, results)
    table.to_csv(out / "table.csv", index=False)
    atomic_write_text(out / "table.md", markdown_table(table))
    plot(margins, dict(zip(table.world, table.verdict, strict=True)), out / "violations.png")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns=["prediction", "worst claims"]).to_string(index=False))
    print(f"table: {out / 'table.md'}")


if __name__ == "__main__":
    sys.exit(main())
