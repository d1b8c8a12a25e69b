"""Capacity: where P1 and P2 start to fail as the embedding narrows toward the described latents.

    python experiments/capacity.py --long-factor 0   # the committed map: 72 runs, 1 h 55 min
    python experiments/capacity.py                   # + a longer run per undecided cell
    python experiments/capacity.py --quick           # 2 worlds × 2 widths, 1 seed, 300 steps

A cell is (world shape, embedding width D, sparsity weight λ); every cell trains SmartCLIP with the
released loss (logit scale 100, weights 10/10/λ, mean|m|) for the same number of steps on every
seed and is measured by `synthetic_recovery.run_one` (through `sweep.run_sweep`: a run is keyed by
everything it receives, so an interrupted map resumes and a changed flag reruns what it changes).

World shapes (`WORLD_SHAPES`, 2-dim image and text nuisances, 2-layer generators; the seed draws
the world's generators as well as the model and data, as in synthetic_recovery): middle 5 × 3
dims (the world where, measured earlier at 10k steps with D = 16, one block fell to R² 0.82 while
the others kept 0.98) and many-small 8 × 2 by default; few-large 3 × 5 and middle-graded (5 × 3
with inclusion probabilities 0.3-0.7: is the rarest block the one that fails?) on request
(`--worlds`), left out of the default to keep the map near an hour and a half on 2 cores.
Widths, from the described dims d = Σ_{k described} d_k (what `predict`'s "width" assumption needs):

    D ∈ {d + o : o ∈ width_offsets} ∪ {⌈f·d⌉ : f ∈ width_factors}    default d, d+1, ⌈1.5d⌉, 2d

(below d the theorem's own width assumption fails and `predict` already voids its claims; add
`--width-offsets -1 0 1` to map it). Sparsity weights 0 (the control: no sparsity term), the
release's 2 and 4 (add 1 with `--sparsity-weights 0 1 2 4`).

Per run (stage-1 runs: every seed at `steps`):
    worst preserve   min_k preserve_r2(z_k | u)                    P1: ≥ high (0.9)
    worst in         min over subsets S, k ∈ S of R²(z_k | v_S)    P2: ≥ high
    worst out        max over subsets S, k ∉ S of R²(z_k | v_S)    P2: ≤ low (0.2)
    mask dims        how many dims block k's mask switches on (`mask_dims`), mean and min over k;
    shared dims      how many of them another block switches on too, mean over k
A cell's claims "worst preserve ≥ high", "worst in ≥ high" and "worst out ≤ low" are decided on
its seeds by the rule of `identifiability.verdicts` (held / not held / undecided by where the
95 % t-interval of the seed mean lies; fewer than 3 seeds: no verdict). P1 is the first; P2, the
mask keeping what its caption describes and nothing else (`predict`'s disentangle_in and _out
claims), is the other two: not held if either is, held if both are, undecided otherwise.

Borderline rule (stage 2): a cell whose verdict on either claim is undecided gets one longer run,
the first seed trained for long_factor × steps (a new run with its own cosine schedule, not a
continuation). Its key and run id carry its steps, so it never stands in for a stage-1 run;
stage 2 is chosen from stage 1's stored results, and a rerun reuses both stages' finished runs.
The longer run is one seed: reported beside the cell, never a verdict.

Which block fails: in every stage-1 run whose worst block misses the bar, is that block the one
with the fewest mask dims, the most shared dims, the rarest (lowest inclusion probability)? A
predictor counts only where it names some blocks but not all (a tie over every block says
nothing); hits are compared with what a block drawn at random would score, Σ |named| / K.

Outputs in OUT: results.csv (long format with world, width, sparsity_weight, steps), config.json,
summary.md (per cell the quantities above with their 95 % intervals, both verdicts, the failing
block and the longer run; per world and sparsity weight the width from which each claim holds;
the suggested c of "near capacity: D < c·d"; the failing-block predictors) and phase.png (one
panel per world: width/d × sparsity weight, colour = worst preserve, markers = not held /
undecided).

Training length: 6000 steps per run. At 3000 steps (tried first) the middle world's worst block
at 2d was 0.855-0.915 over three seeds, where 10k steps had given 0.982-0.986 at D = 32: a
3000-step map would have read the budget as a width limit. The block that failed at D = 16
after 10k steps fell further at 20k (0.82 → 0.66): a failure can grow with training, so a map at
6000 steps bounds the needed width from below. Time, measured on the 2-core machine: the 72
stage-1 runs took about 1 h 55 min (about 95 training steps a second over both workers, plus the
evaluations; 14 minutes of it beside the test suite); the committed map's 12 undecided cells
would add 12 runs of 12,000 steps (about 26 minutes). --quick: 35 s on idle cores.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from synthetic_recovery import tag_rows

from identifiability.conditions import described_dims
from identifiability.verdicts import (
    HELD,
    MIN_SEEDS,
    NO_VERDICT,
    NOT_HELD,
    UNDECIDED,
    combine,
    decide,
)
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import require
from smartclip.fit import FitConfig, TrainSettings
from sweep import COLUMNS, Job, begin, interval, markdown_table, parse_experiment, run_sweep
from synthetic.worlds import WorldConfig

WORLD_SHAPES: dict[str, dict] = {
    "few-large": {"block_dims": (5,) * 3, "include_prob": (0.5,)},
    "middle": {"block_dims": (3,) * 5, "include_prob": (0.5,)},
    "many-small": {"block_dims": (2,) * 8, "include_prob": (0.5,)},
    "middle-graded": {"block_dims": (3,) * 5, "include_prob": (0.3, 0.4, 0.5, 0.6, 0.7)},
}
CELL = ["world", "width", "sparsity_weight"]
RESULT_COLUMNS = [*COLUMNS[:1], "width", "sparsity_weight", "steps", *COLUMNS[1:]]
DERIVED = ("results.csv", "summary.md", "phase.png")
PREDICTORS = ("fewest mask dims", "most shared dims", "rarest")


@dataclass(frozen=True)
class CapacityConfig(TrainSettings):
    """The map: world shapes × widths × sparsity weights × seeds, SmartCLIP only. Each cell sets
    the embedding width (`--embed-dim` is not used) and the third loss weight (`--loss-weights`
    gives the first two)."""

    steps: int = field(default=6000, metadata={"help": "training steps of every stage-1 run"})
    out: str = field(default="runs/capacity", metadata={"help": "output folder"})
    worlds: tuple[str, ...] = field(
        default=("middle", "many-small"),
        metadata={"help": f"world shapes: {', '.join(WORLD_SHAPES)}"},
    )
    width_offsets: tuple[int, ...] = field(
        default=(0, 1),
        metadata={"help": "widths d + o, d the described dims"},
    )
    width_factors: tuple[float, ...] = field(
        default=(1.5, 2.0), metadata={"help": "widths ⌈f·d⌉, d the described dims"}
    )
    sparsity_weights: tuple[float, ...] = field(
        default=(0.0, 2.0, 4.0),
        metadata={"help": "weights of the sparsity term (the release's: 2)"},
    )
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds per cell"})
    long_factor: int = field(
        default=2,
        metadata={"help": "a borderline cell's one longer run trains this × steps (0: none)"},
    )
    high: float = field(default=0.9, metadata={"help": "P1's bar: worst preserve ≥ high"})
    low: float = field(default=0.2, metadata={"help": "P2's bar: worst out-of-subset ≤ low"})
    n_eval: int = field(default=2000, metadata={"help": "held-out samples per evaluation"})
    max_subsets: int = field(
        default=8,
        metadata={"help": "evaluated caption subsets (8: every single-block caption of 8 blocks)"},
    )
    workers: int = field(default=2, metadata={"help": "parallel processes"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_eval", "max_subsets", "workers"):
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        unknown = [w for w in self.worlds if w not in WORLD_SHAPES]
        require(not unknown, "worlds", f"unknown {unknown}; choose from {', '.join(WORLD_SHAPES)}")
        require(bool(self.worlds), "worlds", "give at least one world")
        require(len(set(self.worlds)) == len(self.worlds), "worlds", "worlds must be distinct")
        require(bool(self.seeds), "seeds", "give at least one seed")
        require(all(s >= 0 for s in self.seeds), "seeds", "seeds must be non-negative integers")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "seeds must be distinct")
        require(bool(self.sparsity_weights), "sparsity_weights", "give at least one weight")
        require(
            all(w >= 0 for w in self.sparsity_weights)
            and len(set(self.sparsity_weights)) == len(self.sparsity_weights),
            "sparsity_weights",
            f"must be distinct and non-negative, got {self.sparsity_weights}",
        )
        require(all(f > 0 for f in self.width_factors), "width_factors", "factors must be positive")
        require(bool(self.width_offsets or self.width_factors), "width_offsets", "give some widths")
        for w in self.worlds:
            d = described_dims(self.world_config(w, 0))
            require(min(self.widths(w)) >= 1, "width_offsets", f"{w}: width below 1 (d = {d})")
        require(
            self.long_factor == 0 or self.long_factor >= 2,
            "long_factor",
            f"must be 0 (no longer runs) or at least 2, got {self.long_factor}",
        )
        require(0 <= self.low < self.high <= 1, "high", "need 0 ≤ low < high ≤ 1")

    def world_config(self, name: str, seed: int) -> WorldConfig:
        return WorldConfig(**WORLD_SHAPES[name], seed=seed)

    def widths(self, name: str) -> tuple[int, ...]:
        """The world's widths, ascending: d + o and ⌈f·d⌉ (f·d within 1e-9 of an integer is
        that integer), duplicates merged."""
        d = described_dims(self.world_config(name, 0))
        found = {d + o for o in self.width_offsets}
        found |= {math.ceil(f * d - 1e-9) for f in self.width_factors}
        return tuple(sorted(found))

    def cells(self) -> list[tuple[str, int, float]]:
        return [
            (w, width, weight)
            for w in self.worlds
            for width in self.widths(w)
            for weight in self.sparsity_weights
        ]


PRESETS: dict[str, dict] = {
    "quick": {
        "worlds": ("few-large", "many-small"),
        "width_offsets": (-1,),
        "width_factors": (2.0,),
        "sparsity_weights": (2.0,),
        "seeds": (0,),
        "steps": 300,
        "warmup": 30,
        "n_eval": 500,
        "max_subsets": 3,
    },
}


def job(cfg: CapacityConfig, world: str, width: int, weight: float, seed: int, steps: int) -> Job:
    """One run of a cell: width, sparsity weight and steps set in its FitConfig, and named in
    its key and its result rows."""
    settings = cfg.settings() | {
        "embed_dim": width,
        "loss_weights": (*cfg.loss_weights[:2], weight),
        "steps": steps,
    }
    meta = {
        "world": world,
        "width": width,
        "sparsity_weight": weight,
        "steps": steps,
        "objective": "smartclip",
        "seed": seed,
    }
    return Job(
        key=f"{world}-w{width}-sp{weight:g}-seed{seed}-{steps}steps",
        fn=tag_rows,
        kwargs={
            "meta": meta,
            "world_config": cfg.world_config(world, seed),
            "fit_config": FitConfig(**settings, objective="smartclip", seed=seed),
            "n_eval": cfg.n_eval,
            "max_subsets": cfg.max_subsets,
        },
        steps=steps,
        cpu_paths=cfg.cpu_paths,
    )


def jobs(cfg: CapacityConfig) -> list[Job]:
    """Stage 1: every cell × seed at `steps`, the release's sparsity weight (the loss weights'
    third) first, so that a map cut short has the released loss's row whole."""
    release = cfg.loss_weights[2]
    cells = sorted(cfg.cells(), key=lambda cell: cell[2] != release)
    return [job(cfg, *cell, seed, cfg.steps) for cell in cells for seed in cfg.seeds]


def long_jobs(cfg: CapacityConfig, cells: list[tuple]) -> list[Job]:
    """Stage 2: one run per borderline cell, the first seed at long_factor × steps."""
    return [job(cfg, *cell, cfg.seeds[0], cfg.long_factor * cfg.steps) for cell in cells]


def per_run(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run, indexed (world, width, sparsity_weight, steps, seed): worst_preserve,
    worst_in, worst_out, mask_dims (mean over blocks), fewest_mask_dims, shared_dims (mean)."""
    keys = [*CELL, "steps", "seed"]

    def values(quantity: str):
        return results[results.quantity == quantity].groupby(keys).value

    return pd.DataFrame(
        {
            "worst_preserve": values("preserve_r2").min(),
            "worst_in": values("disentangle_in_r2").min(),
            "worst_out": values("disentangle_out_r2").max(),
            "mask_dims": values("mask_dims").mean(),
            "fewest_mask_dims": values("mask_dims").min(),
            "shared_dims": values("mask_shared_dims").mean(),
        }
    )


def cell_verdicts(cfg: CapacityConfig, runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell (stage-1 runs), in the config's order: seeds, P1 = "worst_preserve ≥ high" and
    P2 = "worst_in ≥ high" and "worst_out ≤ low", decided on the seeds
    (`identifiability.verdicts.decide`; P2's two joined by `combine`), and borderline = P1 or P2
    undecided (the rule that earns a cell its longer run)."""
    stage1 = runs.xs(cfg.steps, level="steps")
    rows = []
    for cell in cfg.cells():
        if cell not in stage1.index.droplevel("seed"):
            continue
        seeds = stage1.loc[cell]
        p1 = decide("high", cfg.high, seeds.worst_preserve.tolist())
        p2 = combine(
            (
                decide("high", cfg.high, seeds.worst_in.tolist()),
                decide("low", cfg.low, seeds.worst_out.tolist()),
            )
        )
        rows.append(
            dict(zip(CELL, cell, strict=True))
            | {"seeds": len(seeds), "P1": p1, "P2": p2, "borderline": UNDECIDED in (p1, p2)}
        )
    return pd.DataFrame(rows)


def borderline(cfg: CapacityConfig, runs: pd.DataFrame) -> list[tuple]:
    """The cells whose longer run stage 2 adds (none if long_factor is 0)."""
    if not cfg.long_factor:
        return []
    verdicts = cell_verdicts(cfg, runs)
    return [tuple(r) for r in verdicts[verdicts.borderline][CELL].itertuples(index=False)]


def _extremes(values: pd.Series, lowest: bool) -> set[str]:
    best = values.min() if lowest else values.max()
    return set(values[values == best].index)


def failing_blocks(cfg: CapacityConfig, results: pd.DataFrame) -> pd.DataFrame:
    """One row per stage-1 run whose worst block's preserve_r2 is below `high`: the block, and per
    predictor the blocks it names (fewest mask dims, most shared dims, lowest inclusion
    probability), whether it says anything (names some blocks, not all) and whether it names the
    worst block."""
    r = results[results.steps == cfg.steps]
    rows = []
    for (world, width, weight, seed), run in r.groupby([*CELL, "seed"], sort=False):
        preserve = run[run.quantity == "preserve_r2"].set_index("block").value
        if preserve.min() >= cfg.high:
            continue
        worst = str(preserve.idxmin())
        probs = cfg.world_config(world, int(seed)).probs
        named = {
            "fewest mask dims": _extremes(
                run[run.quantity == "mask_dims"].set_index("block").value, lowest=True
            ),
            "most shared dims": _extremes(
                run[run.quantity == "mask_shared_dims"].set_index("block").value, lowest=False
            ),
            "rarest": {f"z{k}" for k, p in enumerate(probs) if p == min(probs)},
        }
        row = {
            "world": world,
            "width": width,
            "sparsity_weight": weight,
            "seed": seed,
            "blocks": len(preserve),
            "worst_block": worst,
            "worst_preserve": preserve.min(),
        }
        for name, blocks in named.items():
            row[name] = " ".join(sorted(blocks))
            informative = 0 < len(blocks) < len(preserve)
            row[f"{name}: hit"] = (worst in blocks) if informative else None
            row[f"{name}: chance"] = len(blocks) / len(preserve) if informative else None
        rows.append(row)
    return pd.DataFrame(rows)


def predictor_table(failing: pd.DataFrame) -> pd.DataFrame:
    """Per predictor over the failing runs: how many it says something about, how often it names
    the worst block, and how often a block drawn at random would be named (Σ |named| / K)."""
    rows = []
    for name in PREDICTORS:
        hits = failing[f"{name}: hit"].dropna() if not failing.empty else pd.Series(dtype=bool)
        chance = failing[f"{name}: chance"].dropna().sum() if not failing.empty else 0.0
        rows.append(
            {
                "predictor": name,
                "failing runs it names a strict subset in": len(hits),
                "names the failing block": int(hits.sum()),
                "expected by chance": f"{chance:.1f}",
            }
        )
    return pd.DataFrame(rows)


def _failing_text(failing: pd.DataFrame) -> str:
    """ "z4 ×2, z1 ×1; fewest mask dims 2/3, most shared dims 0/3, rarest —" for one cell."""
    if failing.empty:
        return "—"
    counts = failing.worst_block.value_counts()
    parts = [", ".join(f"{b} ×{n}" for b, n in counts.items())]
    for name in PREDICTORS:
        hits = failing[f"{name}: hit"].dropna()
        parts.append(f"{name} {int(hits.sum())}/{len(hits)}" if len(hits) else f"{name} —")
    return parts[0] + "; " + ", ".join(parts[1:])


def cell_table(cfg: CapacityConfig, results: pd.DataFrame) -> pd.DataFrame:
    """summary.md's per-cell table: each quantity as mean ± half-width of its 95 % interval over
    the stage-1 seeds, the two verdicts, the failing block and the longer run if any."""
    runs = per_run(results)
    verdicts = cell_verdicts(cfg, runs).set_index(CELL)
    failing = failing_blocks(cfg, results)
    by_cell = dict(list(failing.groupby(CELL, sort=False))) if not failing.empty else {}
    long_steps = cfg.long_factor * cfg.steps
    rows = []
    for cell, v in verdicts.iterrows():
        world, width, weight = cell
        seeds = runs.xs(cfg.steps, level="steps").loc[cell]
        longer = "—"
        if long_steps and (*cell, long_steps) in runs.index.droplevel("seed"):
            one = runs.xs((*cell, long_steps), level=(*CELL, "steps")).iloc[0]
            longer = f"{one.worst_preserve:.3f} / {one.worst_out:.3f}"
        d = described_dims(cfg.world_config(world, 0))
        rows.append(
            {
                "world": world,
                "width": width,
                "width / d": f"{width / d:.2f}",
                "sparsity": f"{weight:g}",
                "seeds": v.seeds,
                "worst preserve": interval(seeds.worst_preserve),
                "worst in-subset": interval(seeds.worst_in),
                "worst out-of-subset": interval(seeds.worst_out),
                "mask dims / block": interval(seeds.mask_dims),
                "fewest mask dims": interval(seeds.fewest_mask_dims),
                "shared dims / block": interval(seeds.shared_dims),
                f"P1: worst ≥ {cfg.high:g}": v.P1,
                f"P2: in ≥ {cfg.high:g}, out ≤ {cfg.low:g}": v.P2,
                "failing block (runs < bar)": _failing_text(by_cell.get(cell, pd.DataFrame())),
            }
            | (
                {f"{long_steps} steps, seed {cfg.seeds[0]}: worst / out": longer}
                if long_steps
                else {}
            )
        )
    return pd.DataFrame(rows)


def _held_from(widths: list[int], verdicts: list[str]) -> int | None:
    """The smallest width from which every wider cell is held (None: the widest is not)."""
    start = None
    for width, verdict in sorted(zip(widths, verdicts, strict=True), reverse=True):
        if verdict != HELD:
            break
        start = width
    return start


def edge_table(cfg: CapacityConfig, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per world and sparsity weight: the width (and width/d) from which P1, P2 and both hold at
    every wider width, and the widest width where each is not held ("no verdict" where a cell
    has fewer than `MIN_SEEDS` seeds)."""
    rows = []
    for (world, weight), g in verdicts.groupby(["world", "sparsity_weight"], sort=False):
        d = described_dims(cfg.world_config(world, 0))
        widths = g.width.tolist()
        row = {"world": world, "d": d, "sparsity": f"{weight:g}"}
        if (g.seeds < MIN_SEEDS).any():
            texts = ("P1 held from", "P1 not held up to", "P2 held from", "P2 not held up to")
            rows.append(
                row | dict.fromkeys((*texts, "both held from"), NO_VERDICT) | {"c": math.nan}
            )
            continue
        starts = {}
        for claim in ("P1", "P2"):
            starts[claim] = _held_from(widths, g[claim].tolist())
            failed = [w for w, x in zip(widths, g[claim], strict=True) if x == NOT_HELD]
            row[f"{claim} held from"] = _width_text(starts[claim], d, max(widths))
            row[f"{claim} not held up to"] = _width_text(max(failed), d) if failed else "—"
        both = None if None in starts.values() else max(starts.values())
        row["both held from"] = _width_text(both, d, max(widths))
        row["c"] = both / d if both is not None else math.inf
        rows.append(row)
    return pd.DataFrame(rows)


def _width_text(width: int | None, d: int, widest: int | None = None) -> str:
    if width is None:
        return f"> {widest} ({widest / d:.2f}·d)"
    return f"{width} ({width / d:.2f}·d)"


def suggested_c(cfg: CapacityConfig, edges: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """The rule for `predict`: near capacity when D < c·d, c the largest "both held from" ratio
    over worlds and positive sparsity weights (the release's loss family; weight 0 voids the
    guarantee anyway)."""
    if (verdicts.seeds < MIN_SEEDS).any():
        return f"c: no verdict (fewer than {MIN_SEEDS} seeds in some cell)"
    positive = edges[edges.sparsity.astype(float) > 0]
    if positive.empty:
        return "c: no cell with a positive sparsity weight"
    worst = positive.loc[positive.c.idxmax()]
    if math.isinf(worst.c):
        return (
            f"c > {max(cfg.widths(worst.world)) / worst.d:.2f}: {worst.world} at sparsity "
            f"{worst.sparsity} is not held at its widest width"
        )
    return (
        f"c = {worst.c:.2f}: both claims held at every width ≥ c·d in every world and positive "
        f"sparsity weight (largest at {worst.world}, sparsity {worst.sparsity})"
    )


def summary_markdown(cfg: CapacityConfig, results: pd.DataFrame) -> str:
    """summary.md: the cell table, the capacity edges with c, the failing-block predictors."""
    verdicts = cell_verdicts(cfg, per_run(results))
    edges = edge_table(cfg, verdicts)
    failing = failing_blocks(cfg, results)
    longer = (
        f"Borderline cells (a verdict undecided) get one run of {cfg.long_factor * cfg.steps} "
        f"steps, seed {cfg.seeds[0]}."
        if cfg.long_factor
        else "No longer runs (--long-factor 0)."
    )
    return (
        f"SmartCLIP, {cfg.steps} steps per run; per cell the mean ± half-width of the 95 % "
        f"interval over seeds; verdicts by the seed rule (held / not held / undecided; fewer than "
        f"{MIN_SEEDS} seeds: no verdict). {longer}\n\n"
        + markdown_table(cell_table(cfg, results))
        + "\nWhere each claim holds: the smallest width from which every wider cell is held.\n\n"
        + markdown_table(edges.drop(columns="c"))
        + f"\nNear capacity (D < c·d): {suggested_c(cfg, edges, verdicts)}.\n\n"
        + f"Which block fails, over the {len(failing)} stage-1 runs whose worst block is below "
        f"{cfg.high:g}:\n\n" + markdown_table(predictor_table(failing))
    )


def plot_phase(cfg: CapacityConfig, results: pd.DataFrame, path: Path) -> None:
    """One panel per world: columns the widths (D and D/d), rows the sparsity weights, colour the
    stage-1 seed mean of the worst block's preserve_r2 (printed); a red x where a claim is not
    held, an open circle where one is undecided (and none is not held)."""
    import matplotlib.pyplot as plt

    runs = per_run(results).xs(cfg.steps, level="steps")
    means = runs.groupby(level=CELL).worst_preserve.mean()
    verdicts = cell_verdicts(cfg, per_run(results)).set_index(CELL)
    vmin = min(0.5, float(means.min()))
    fig, axes = plt.subplots(
        1,
        len(cfg.worlds),
        figsize=(4.2 * len(cfg.worlds) + 1, 1.8 + 0.6 * len(cfg.sparsity_weights)),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, world in zip(axes[0], cfg.worlds, strict=True):
        widths, weights = cfg.widths(world), cfg.sparsity_weights
        d = described_dims(cfg.world_config(world, 0))
        grid = np.full((len(weights), len(widths)), np.nan)
        for i, weight in enumerate(weights):
            for j, width in enumerate(widths):
                cell = (world, width, weight)
                if cell not in means.index:
                    continue
                grid[i, j] = means[cell]
                shade = "white" if grid[i, j] < (vmin + 1) / 2 else "black"
                ax.text(
                    j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color=shade
                )
                found = set(verdicts.loc[cell, ["P1", "P2"]])
                if NOT_HELD in found:
                    ax.scatter(j + 0.3, i - 0.3, marker="x", color="red", s=30)
                elif UNDECIDED in found:
                    ax.scatter(j + 0.3, i - 0.3, marker="o", facecolors="none", color="black", s=30)
        image = ax.imshow(grid, vmin=vmin, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(widths)), [f"{w}\n{w / d:.2f}·d" for w in widths], fontsize=7)
        ax.set_yticks(range(len(weights)), [f"{w:g}" for w in weights])
        ax.set_xlabel("embedding width D (D / described dims d)")
        ax.set_ylabel("sparsity weight")
        ax.set_title(f"{world}: blocks {WORLD_SHAPES[world]['block_dims']}", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03, label="worst block preserve R²")
    fig.suptitle(
        f"red x: P1 (worst ≥ {cfg.high:g}) or P2 (in ≥ {cfg.high:g}, out ≤ {cfg.low:g}) not held\n"
        "open circle: undecided (95 % interval over seeds)",
        fontsize=9,
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_experiment(CapacityConfig, argv, PRESETS, __doc__)
    out = Path(cfg.out)
    payload = {
        "config": cfg,
        "worlds": {w: cfg.world_config(w, 0) for w in cfg.worlds},
        "widths": {w: cfg.widths(w) for w in cfg.worlds},
    }
    first = jobs(cfg)
    begin(out, payload, first, DERIVED)
    results = run_sweep(first, out, cfg.workers, "capacity", RESULT_COLUMNS)
    second = long_jobs(cfg, borderline(cfg, per_run(results)))
    if second:
        print(f"capacity: {len(second)} borderline cells, one run of {second[0].steps} steps each")
        begin(out, payload, first + second, DERIVED)
        results = run_sweep(first + second, out, cfg.workers, "capacity, stage 2", RESULT_COLUMNS)
    summary = summary_markdown(cfg, results)
    atomic_write_text(out / "summary.md", summary)
    plot_phase(cfg, results, out / "phase.png")
    print(summary)
    print(f"summary: {out / 'summary.md'}; figure: {out / 'phase.png'}")


if __name__ == "__main__":
    sys.exit(main())
