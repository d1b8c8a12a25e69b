"""P1 (preserve) and P2 (disentangle) on synthetic worlds: train each objective, measure R²/MCC.

    python experiments/synthetic_recovery.py                  # quick preset: 1 world, 1 seed
    python experiments/synthetic_recovery.py --preset paper   # 4 worlds × 3 seeds, same settings
    python experiments/synthetic_recovery.py --preset reference --out docs/results/reference
                                                              # the run CI repeats bit for bit

For every (world, objective, seed): fit a fresh model on fresh samples, then on held-out samples
  preserve_r2[_linear]   R²(z_k | u), u the unnormalised image embedding, per block k
  nuisance_r2            R²(s_img | u) for the image-only nuisance (reported, no claim: dims that
                         no mask selects never meet the loss and may keep it)
  nuisance_v_r2          R²(s_img | v), v the embedding the loss aligns with the caption (theory:
                         → 0); SmartCLIP: per caption subset S below; CLIP: v = u/‖u‖
  mcc, mcc_spearman      mean matched |corr| between z and u
  reverse_r2             R²(u | z, s_img) (low values flag a collapsed or noisy embedding)
  input_r2               R²(z_k | x) from the raw image: what the regressor recovers without
                         any encoder (x holds z exactly; below 1 = the generator is hard to invert
                         for kernel ridge on n_eval / 2 samples)
and, for SmartCLIP, with captions fixed to each subset S in the support of p(m) (up to a cap)
  disentangle_in_r2      R²(z_k | v) for k ∈ S, v = u⊙m̂(t)/‖u⊙m̂(t)‖
  disentangle_out_r2     R²(z_k | v) for k ∉ S (theory: → 0)
  mask_on                P(m̂_d = 1 | block k described) − P(m̂_d = 1 | not), per block k, dim d
  mask_dims              how many dims block k switches on (mask_on > 0.5): its share of the
                         embedding (0: a starved mask, the block cannot be kept in v)
  mask_shared_dims       how many of those another block switches on too
  block_r2               R²(z_j | u restricted to the dims block k switches on), per (j, k)
  final_loss, final_mask_on, final_mask_varying   means over the last 100 training steps
Evaluation samples come from the stream (seed, "eval", i), training batches from
(seed, "train", step): disjoint for any number of steps (`synthetic.seeding`).
Writes OUT/results.csv (long format), OUT/config.json, OUT/summary.md (the headline quantities
with their 95 % intervals over seeds, and the theory's claims (`predict`) decided on the seeds by
the rule of `identifiability.verdicts`; one seed: no verdict), PNG plots and each run's
training curves with the mask's health (OUT/logs/<run>/train.csv, TensorBoard); resumes an
interrupted OUT, and reruns what a changed flag affects (`sweep`).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from claims import claim_text, seed_values

from identifiability.conditions import (
    CAPACITY_FACTOR,
    decide_prediction,
    described_dims,
    near_capacity,
    predict,
)
from identifiability.metrics import mcc, r2, r2_scores
from identifiability.verdicts import HELD, NOT_HELD, UNDECIDED, overall
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import parse_config, require
from smartclip.fit import FitConfig, TrainSettings, fit, held_out_batch
from smartclip.losses import OBJECTIVES
from sweep import (
    Job,
    RunContext,
    begin,
    interval,
    markdown_table,
    plot_grouped_bars,
    plot_heatmap,
    run_sweep,
)
from synthetic.worlds import World, WorldConfig

NAMED_WORLDS: dict[str, dict] = {
    "k3-d3": {"block_dims": (3, 3, 3), "include_prob": (0.5,)},
    "k4-mixed": {"block_dims": (1, 2, 3, 2), "include_prob": (0.3, 0.5, 0.7, 0.5)},
    "k6-d1": {"block_dims": (1,) * 6, "include_prob": (0.4,)},
}


@dataclass(frozen=True)
class RecoveryConfig(TrainSettings):
    """A sweep over worlds × objectives × seeds. World "custom" is the one the world flags define;
    the others are NAMED_WORLDS (with the nuisance, noise and correlation flags applied)."""

    out: str = field(default="runs/synthetic_recovery", metadata={"help": "output folder"})
    objectives: tuple[str, ...] = field(
        default=("smartclip", "clip"), metadata={"help": "objectives"}
    )
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "seeds (world, model, data)"})
    worlds: tuple[str, ...] = field(
        default=("custom",), metadata={"help": f"custom or {', '.join(NAMED_WORLDS)}"}
    )
    n_blocks: int = field(default=4, metadata={"help": "custom world: number of concept blocks"})
    block_dim: int = field(default=2, metadata={"help": "custom world: dims per block"})
    include_prob: tuple[float, ...] = field(
        default=(0.5,), metadata={"help": "custom world: per-block caption inclusion probability"}
    )
    always: tuple[int, ...] = field(default=(), metadata={"help": "custom world: always-described"})
    img_nuisance_dim: int = field(default=2, metadata={"help": "image-only nuisance dims"})
    txt_nuisance_dim: int = field(default=2, metadata={"help": "text-only nuisance dims"})
    latent_corr: float = field(default=0.0, metadata={"help": "correlation between blocks"})
    noise: float = field(default=0.0, metadata={"help": "observation noise std"})
    mixing_layers: int = field(
        default=2, metadata={"help": "layers of the random generators (3 is much harder)"}
    )
    n_eval: int = field(default=2000, metadata={"help": "held-out samples per evaluation"})
    max_subsets: int = field(default=15, metadata={"help": "cap on evaluated caption subsets"})
    workers: int = field(default=2, metadata={"help": "parallel processes"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_blocks", "block_dim", "n_eval", "max_subsets", "workers", "mixing_layers"):
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        require(bool(self.objectives), "objectives", "give at least one objective")
        for o in self.objectives:
            require(
                o in OBJECTIVES,
                "objectives",
                f"unknown objective {o!r}; choose from " + ", ".join(OBJECTIVES),
            )
        require(bool(self.seeds), "seeds", "give at least one seed")
        require(all(s >= 0 for s in self.seeds), "seeds", "seeds must be non-negative integers")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "seeds must be distinct")
        for w in self.worlds:
            require(
                w == "custom" or w in NAMED_WORLDS,
                "worlds",
                f"unknown world {w!r}; choose from custom, {', '.join(NAMED_WORLDS)}",
            )
        try:
            self.world_config("custom", 0)
        except ValueError as err:
            raise ValueError(f"custom world: {err}") from None

    def world_config(self, name: str, seed: int) -> WorldConfig:
        shape = NAMED_WORLDS.get(name) or {
            "block_dims": (self.block_dim,) * self.n_blocks,
            "include_prob": self.include_prob,
            "always": self.always,
        }
        return WorldConfig(
            **shape,
            img_nuisance_dim=self.img_nuisance_dim,
            txt_nuisance_dim=self.txt_nuisance_dim,
            latent_corr=self.latent_corr,
            noise=self.noise,
            mixing_layers=self.mixing_layers,
            seed=seed,
        )


PRESETS: dict[str, dict] = {
    "quick": {},
    "paper": {"seeds": (0, 1, 2), "worlds": ("custom", *NAMED_WORLDS)},
    # the run committed under docs/results/reference/ that tests/experiments/test_reference.py
    # repeats bit for bit: both objectives, 300 steps, the quick world
    "reference": {"steps": 300, "warmup": 30, "n_eval": 500, "max_subsets": 2},
}


def block_names(world: WorldConfig) -> list[str]:
    return [f"z{k}" for k in range(world.n_blocks)]


def block_targets(world: WorldConfig, z: torch.Tensor) -> dict[str, np.ndarray]:
    """{"z0": z_0, …}: the concatenated latent split into its named blocks."""
    return {n: z[:, s].numpy() for n, s in zip(block_names(world), world.block_slices, strict=True)}


def embed(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> dict[str, np.ndarray]:
    """u (image embedding) and v = u⊙m̂/‖u⊙m̂‖, the embedding the loss aligns with the caption;
    for models with a mask network also m̂(t), for the others m̂ ≡ 1 (v = u/‖u‖)."""
    with torch.no_grad():
        u = model.encode_image(x)
        out = {"u": u.numpy()}
        m = torch.ones_like(u)
        if model.masknet is not None:
            m = model.masknet(model.encode_text(t)[1])
            out["m"] = m.numpy()
        out["v"] = torch.nn.functional.normalize(u * m, dim=-1).numpy()
    return out


def measure(
    world: World, model: torch.nn.Module, n_eval: int, max_subsets: int, seed: int
) -> list[dict]:
    """All quantities of the module docstring as rows (world/objective/seed filled by caller).

    Targets that the theory expects to be predictable (described blocks) and those it expects
    not to be (the nuisance, blocks outside S) get separate regressions: kernel ridge picks one
    (α, γ) per fit, and unpredictable targets in a joint fit pull it toward heavy regularisation,
    lowering the predictable targets' R² (tests/identifiability/test_metrics.py)."""
    c = world.config
    names = block_names(c)
    batch = held_out_batch(world, n_eval, seed)
    emb = embed(model, batch.x, batch.t)
    z = batch.z.numpy()
    blocks = block_targets(c, batch.z)
    rows: list[dict] = []

    def row(quantity: str, value: float, block: str = "", subset: str = "", dim: object = ""):
        rows.append(
            {
                "quantity": quantity,
                "block": block,
                "subset": subset,
                "dim": dim,
                "value": float(value),
            }
        )

    for name, value in r2_scores(batch.x.numpy(), blocks).items():
        row("input_r2", value, name)
    u = emb["u"]
    for kind, suffix in (("nonlinear", ""), ("linear", "_linear")):
        for name, value in r2_scores(u, blocks, kind).items():
            row("preserve_r2" + suffix, value, name)
        if c.img_nuisance_dim:
            value = r2_scores(u, {"s_img": batch.s_img.numpy()}, kind)["s_img"]
            row("nuisance_r2" + suffix, value, "s_img")
    if u.shape[1] >= z.shape[1]:  # a narrower embedding cannot match every latent dim
        row("mcc", mcc(z, u), "all")
        row("mcc_spearman", mcc(z, u, "spearman"), "all")
    row("reverse_r2", r2(np.concatenate([z, batch.s_img.numpy()], 1), u), "all")
    if "m" not in emb:
        if c.img_nuisance_dim:
            value = r2_scores(emb["v"], {"s_img": batch.s_img.numpy()})["s_img"]
            row("nuisance_v_r2", value, "s_img")
        return rows

    m, present = emb["m"], batch.m.numpy().astype(bool)
    switched: dict[str, np.ndarray] = {}
    for k, name in enumerate(names):
        if present[:, k].all() or not present[:, k].any():
            continue  # presence never varies: no contrast to measure
        on = m[present[:, k]].mean(0) - m[~present[:, k]].mean(0)
        for d, value in enumerate(on):
            row("mask_on", value, name, dim=d)
        switched[name] = on > 0.5
        dims = np.flatnonzero(switched[name])
        if len(dims):
            for target, value in r2_scores(u[:, dims], blocks).items():
                row("block_r2", value, target, subset=f"dims({name})")
    for name, own in switched.items():
        others = [v for n, v in switched.items() if n != name]
        shared = own & np.any(others, axis=0) if others else np.zeros_like(own)
        row("mask_dims", own.sum(), name)
        row("mask_shared_dims", shared.sum(), name)

    for i, subset in enumerate(c.support()[:max_subsets]):
        fixed = held_out_batch(world, n_eval, seed, 1 + i, mask=subset)
        v = embed(model, fixed.x, fixed.t)["v"]
        label = "+".join(names[k] for k in subset)
        targets = block_targets(c, fixed.z)
        if c.img_nuisance_dim:
            value = r2_scores(v, {"s_img": fixed.s_img.numpy()})["s_img"]
            row("nuisance_v_r2", value, "s_img", subset=label)
        for quantity, chosen in (
            ("disentangle_in_r2", [n for k, n in enumerate(names) if k in subset]),
            ("disentangle_out_r2", [n for k, n in enumerate(names) if k not in subset]),
        ):
            if chosen:
                for name, value in r2_scores(v, {n: targets[n] for n in chosen}).items():
                    row(quantity, value, name, subset=label)
    return rows


def run_one(
    ctx: RunContext,
    world_config: WorldConfig,
    fit_config: FitConfig,
    n_eval: int,
    max_subsets: int,
) -> list[dict]:
    """generate → train → evaluate, for one (world, objective, seed)."""
    world = World(world_config)
    tail: list[dict[str, float]] = []

    def on_step(step: int, terms: dict[str, float], model: torch.nn.Module) -> None:
        tail.append(terms)
        del tail[:-100]
        if (step + 1) % 100 == 0:
            ctx.progress(100)

    model = fit(world, fit_config, on_step, ctx.log_dir)
    ctx.progress(fit_config.steps % 100)
    rows = measure(world, model, n_eval, max_subsets, fit_config.seed)
    for name in ("loss", "mask_on", "mask_varying"):
        if name in tail[-1]:
            value = float(np.mean([t[name] for t in tail]))
            rows.append(
                {"quantity": f"final_{name}", "block": "", "subset": "", "dim": "", "value": value}
            )
    return rows


def jobs(cfg: RecoveryConfig) -> list[Job]:
    out = []
    for world in cfg.worlds:
        for objective in cfg.objectives:
            for seed in cfg.seeds:
                fit_config = FitConfig(**cfg.settings(), objective=objective, seed=seed)
                meta = {"world": world, "objective": objective, "seed": seed}
                out.append(
                    Job(
                        key=f"{world}-{objective}-seed{seed}",
                        fn=tag_rows,
                        kwargs={
                            "meta": meta,
                            "world_config": cfg.world_config(world, seed),
                            "fit_config": fit_config,
                            "n_eval": cfg.n_eval,
                            "max_subsets": cfg.max_subsets,
                        },
                        steps=cfg.steps,
                        cpu_paths=cfg.cpu_paths,
                    )
                )
    return out


def tag_rows(ctx: RunContext, meta: dict, **kwargs) -> list[dict]:
    return [{**meta, **r} for r in run_one(ctx, **kwargs)]


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(RecoveryConfig, argv, PRESETS, description=__doc__.split("\n")[0])
    out = Path(cfg.out)
    todo = jobs(cfg)
    payload = {"config": cfg, "worlds": {w: cfg.world_config(w, 0) for w in cfg.worlds}}
    begin(out, payload, todo, ("results.csv", "summary.md"))
    for warning in capacity_warnings(cfg):
        print(warning, file=sys.stderr)
    results = run_sweep(todo, out, cfg.workers, desc="synthetic_recovery")
    plot(results, out)
    atomic_write_text(out / "summary.md", summary_markdown(cfg, results))
    with pd.option_context("display.width", 250, "display.max_colwidth", 40):
        print(summary_table(results).to_string())
        print(claims_table(cfg, results).drop(columns="claims not held or undecided").to_string())
    print(f"summary: {out / 'summary.md'}; results: {out / 'results.csv'}")


def capacity_warnings(cfg: RecoveryConfig) -> list[str]:
    """One line per world whose SmartCLIP run is near capacity (`near_capacity`: d ≤ D < c·d),
    where the released loss was measured to lose part of a block (a mask with too few dims), with
    or without its sparsity term (docs/results/capacity)."""
    if "smartclip" not in cfg.objectives:
        return []
    lines = []
    for world in cfg.worlds:
        d = described_dims(cfg.world_config(world, 0))
        if near_capacity(cfg.embed_dim, d):
            wide = math.ceil(CAPACITY_FACTOR * d)
            lines.append(
                f"warning: {world}: embedding width {cfg.embed_dim} is near capacity for "
                f"{d} described dims ({d} ≤ D < {CAPACITY_FACTOR:g}·d): SmartCLIP was measured to "
                f"lose part of a block here, its mask given too few dimensions (docs/"
                f"synthetic_identifiability.md#capacity-how-wide-the-embedding-must-be); "
                f"--embed-dim {wide} leaves the band"
            )
    return lines


def plot(results: pd.DataFrame, out: Path) -> None:
    """preserve.png, disentangle.png, mask_health.png, and per world (first seed) the SmartCLIP
    block × mask-dims R² matrix and the mask_on (block × embedding dim) matrix."""
    plot_grouped_bars(results, ["preserve_r2"], out / "preserve.png")
    smart = results[results.objective == "smartclip"]
    if smart.empty:
        return
    plot_mask_health(smart, out, out / "mask_health.png")
    plot_grouped_bars(smart, ["disentangle_in_r2", "disentangle_out_r2"], out / "disentangle.png")
    for world, w in smart.groupby("world", sort=False):
        first = w[w.seed == w.seed.min()]
        blocks = first[first.quantity == "block_r2"]
        if not blocks.empty:
            matrix = blocks.pivot(index="block", columns="subset", values="value")
            plot_heatmap(
                matrix,
                out / f"block_r2_{world}.png",
                f"{world}: R²(z_j | u on the dims block k switches on)",
            )
        on = first[first.quantity == "mask_on"]
        if not on.empty:
            matrix = on.pivot(index="block", columns="dim", values="value")
            matrix.columns = [int(float(c)) for c in matrix.columns]
            plot_heatmap(
                matrix.sort_index(axis=1),
                out / f"mask_on_{world}.png",
                f"{world}: P(mask on | block described) − P(mask on | not)",
                -1,
                1,
            )


def plot_mask_health(results: pd.DataFrame, out: Path, path: Path) -> None:
    """The mask's health during training, from each SmartCLIP run's log (OUT/logs/<run>/
    train.csv): how many mask dimensions vary across a batch's captions (0: the mask ignores the
    caption) and the mean number on, per logged step; one line per run, labelled by world, seed
    and the run's mean out-of-subset R² (high: the masked embedding carries absent blocks)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    leak = results[results.quantity == "disentangle_out_r2"].groupby("run").value.mean()
    runs = results.drop_duplicates("run")
    for _, r in runs.iterrows():
        logs = list((out / "logs").glob(f"*-{r.run}/train.csv"))
        if not logs:
            continue
        trace = pd.read_csv(logs[0])
        label = f"{r.world} seed {r.seed} (out {leak.get(r.run, float('nan')):.2f})"
        for ax, column in zip(axes, ("mask_varying", "mask_on"), strict=True):
            ax.plot(trace.step, trace[column], lw=1, label=label)
    axes[0].set_ylabel("mask dims varying across the batch")
    axes[1].set_ylabel("mask dims on, per caption")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


HEADLINE = (
    "input_r2",
    "preserve_r2",
    "worst_preserve_r2",
    "preserve_r2_linear",
    "nuisance_r2",
    "nuisance_v_r2",
    "mcc",
    "disentangle_in_r2",
    "disentangle_out_r2",
    "mask_dims",
)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± half-width of the 95 % interval over seeds (`sweep.interval`; ± 0 for one seed)
    of the headline quantities, per world and objective; each quantity is first averaged over
    blocks and subsets within a seed, except `worst_preserve_r2`, the lowest block's preserve_r2
    (the claim is per block)."""
    r = results[results.quantity.isin(HEADLINE)]
    keys = ["world", "objective", "quantity", "seed"]
    per_seed = pd.concat(
        [
            r.groupby(keys).value.mean(),
            r[r.quantity == "preserve_r2"]
            .assign(quantity="worst_preserve_r2")
            .groupby(keys)
            .value.min(),
        ]
    )
    table = per_seed.groupby(["world", "objective", "quantity"], sort=False).agg(interval)
    columns = [q for q in HEADLINE if q in per_seed.index.get_level_values("quantity")]
    table = table.unstack("quantity").reindex(columns=columns)
    seeds = results.groupby(["world", "objective"], sort=False).seed.nunique()
    return table.assign(seeds=seeds)[["seeds", *columns]]


def claims_table(cfg: RecoveryConfig, results: pd.DataFrame) -> pd.DataFrame:
    """The theory's claims for every world and objective (`identifiability.conditions.predict`,
    from the world and the training settings, made before looking at the results), decided on
    the seeds by the rule of `identifiability.verdicts`: counts of held / not held / undecided,
    the claims that decide the verdict, and the verdict (fewer than 3 seeds: none)."""
    rows = []
    for (world, objective), r in results.groupby(["world", "objective"], sort=False):
        world_config = cfg.world_config(world, int(r.seed.min()))
        prediction = predict(
            world_config,
            objective,
            embed_dim=cfg.embed_dim,
            sparsity_weight=cfg.loss_weights[2],
            n_samples=cfg.steps * cfg.batch_size,
            subsets=world_config.support()[: cfg.max_subsets],
        )
        decisions = decide_prediction(prediction, seed_values(r))
        counts = Counter(d.verdict for d in decisions)
        wrong = [d for d in decisions if d.verdict in (NOT_HELD, UNDECIDED)]
        verdict = overall((d.verdict for d in decisions), r.seed.nunique())
        rows.append(
            {
                "world": world,
                "objective": objective,
                "guarantee": prediction.status,
                "claims held / not / undecided": (
                    f"{counts[HELD]} / {counts[NOT_HELD]} / {counts[UNDECIDED]} of {len(decisions)}"
                ),
                "claims not held or undecided": "; ".join(claim_text(d) for d in wrong[:4]),
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def summary_markdown(cfg: RecoveryConfig, results: pd.DataFrame) -> str:
    """summary.md: the headline table and the claims table."""
    return (
        "Headline quantities: mean ± half-width of the 95 % interval over seeds.\n\n"
        + markdown_table(summary_table(results))
        + "\nThe theory's claims, decided on the seeds (held / not held / undecided by the 95 % "
        "interval of the seed mean; fewer than 3 seeds: no verdict).\n\n"
        + markdown_table(claims_table(cfg, results))
    )


if __name__ == "__main__":
    sys.exit(main())
