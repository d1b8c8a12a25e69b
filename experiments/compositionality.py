"""Token-level compositionality: CLIP identifies the invariant latent, yet composition is not
identified; operator-mined hard negatives restore it (arXiv 2510.26302; our precise world and
operators are in `synthetic.tokens`).

    python experiments/compositionality.py           # 7 models × 3 seeds (≤ 20 min on 2 cores)
    python experiments/compositionality.py --quick   # 1 seed, short runs (≤ 3 min)

For every model (caption view × text encoder × objective × mining) and seed: train on the token
world's support, then on held-out samples of the support measure
  invariant_r2        R² (kernel ridge) of z_inv — per object slot its shape and colour, and the
                      layout — from the image embedding u (block "image") and from the text
                      embedding t (block "text"): claim 1, InfoNCE identifies z_inv
  infonce             the symmetric InfoNCE of the model at its logit scale on held-out batches
  accuracy            per operator (block) and k (subset "k1".."k3"): share of images closer
                      (cosine) to their caption than to its hard negative (ties count half;
                      chance 0.5)
  image_accuracy      per operator and k: share of captions closer to their image than to the
                      image re-rendered from the operated scene (same image nuisance)
  modality_gap        ‖mean û − mean t̂‖ over the held-out pairs
and, for every order-aware (transformer) model g*, the same for g** = g* ∘ π (`objective` with
"/g**" appended), π = `TokenWorld.repair`: identity on the support, so g** has exactly g*'s
InfoNCE (and, on the support, the same embeddings, so its R² rows are not repeated), and it
maps every hard negative back to its caption, so g** sits at chance.
Writes OUT/results.csv, OUT/summary.md (mean ± 95% CI over seeds), OUT/accuracy.png and
OUT/config.json; resumes an interrupted OUT and reruns what a changed flag affects (`sweep`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats

from identifiability.metrics import r2_scores
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import require
from smartclip.encoders import PrecomposedText, SyntheticCLIP
from smartclip.fit import FitConfig, TrainSettings, fit, held_out_batch
from sweep import Job, RunContext, begin, interval, markdown_table, parse_experiment, run_sweep
from synthetic.seeding import stream
from synthetic.tokens import OPERATORS, TokenBatch, TokenWorld, TokenWorldConfig

# (caption view, text encoder, objective, mined hard negatives)
MODELS: dict[str, tuple[str, str, str, bool]] = {
    "transformer/clip": ("tokens", "transformer", "clip", False),
    "transformer/clip+mined": ("tokens", "transformer", "clip", True),
    "transformer/smartclip": ("tokens", "transformer", "smartclip", False),
    "bag/clip": ("tokens", "bag", "clip", False),
    "bag/clip+mined": ("tokens", "bag", "clip", True),
    "sentence/clip": ("sentence", "mlp", "clip", False),
    "sentence/clip+mined": ("sentence", "mlp", "clip", True),
}
KS = (1, 2, 3)


@dataclass(frozen=True)
class CompositionalityConfig(TrainSettings):
    """Training settings shared by every model; the world's sizes; what to run."""

    steps: int = field(default=1000, metadata={"help": "training steps per run"})
    batch_size: int = 256
    out: str = field(default="runs/compositionality", metadata={"help": "output folder"})
    models: tuple[str, ...] = field(default=tuple(MODELS), metadata={"help": "models to train"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "model and data seeds"})
    world_seed: int = field(default=0, metadata={"help": "seed of the world's generators"})
    n_objects: int = field(default=4, metadata={"help": "objects per scene"})
    n_eval: int = field(default=2000, metadata={"help": "held-out samples"})
    workers: int = field(default=2, metadata={"help": "parallel processes"})

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [m for m in self.models if m not in MODELS]
        require(not unknown, "models", f"unknown {unknown}; choose from {', '.join(MODELS)}")
        require(bool(self.seeds), "seeds", "give at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "seeds must be distinct")
        require(self.n_eval >= 100, "n_eval", "must be at least 100")
        require(self.workers >= 1, "workers", "must be at least 1")
        try:
            self.world_config("tokens")
        except ValueError as err:
            raise ValueError(f"world: {err}") from None
        require(
            max(KS) <= min(self.world_config("tokens").max_k(op) for op in OPERATORS),
            "n_objects",
            f"every operator must apply {max(KS)} times",
        )

    def world_config(self, view: str) -> TokenWorldConfig:
        return TokenWorldConfig(n_objects=self.n_objects, view=view, seed=self.world_seed)

    def fit_config(self, model: str, seed: int) -> FitConfig:
        _, encoder, objective, mined = MODELS[model]
        settings = {**self.settings(), "text_encoder": encoder}
        settings["hard_negatives"] = OPERATORS if mined else ()
        return FitConfig(**settings, objective=objective, seed=seed)


PRESETS: dict[str, dict] = {
    "quick": {"seeds": (0,), "steps": 300, "n_eval": 400, "batch_size": 128},
}


# --------------------------------------------------------------------------------- measuring


@torch.no_grad()
def infonce(model: torch.nn.Module, batch: TokenBatch, chunk: int) -> float:
    """Mean symmetric InfoNCE ½[CE(s·ûtᵀ) + CE(s·tûᵀ)] over held-out chunks of `chunk` pairs."""
    losses = []
    for i in range(0, len(batch.x) - chunk + 1, chunk):
        u = F.normalize(model.encode_image(batch.x[i : i + chunk]), dim=-1)
        t = model.encode_text(batch.t[i : i + chunk])[0]
        logits = model.logit_scale * u @ t.T
        target = torch.arange(len(u))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        losses.append(loss.item())
    return float(np.mean(losses))


def share_right(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Share of pairs with positive > negative similarity, ties counting half."""
    return float(((positive > negative).float() + 0.5 * (positive == negative).float()).mean())


@torch.no_grad()
def measure(
    world: TokenWorld,
    model: torch.nn.Module,
    n_eval: int,
    seed: int,
    chunk: int,
    with_r2: bool = True,
) -> list[dict]:
    """Every quantity of the module docstring as rows (model, seed filled by the caller)."""
    batch = held_out_batch(world, n_eval, seed)
    u_raw = model.encode_image(batch.x)
    u, t = F.normalize(u_raw, dim=-1), model.encode_text(batch.t)[0]
    rows = [
        {"quantity": "infonce", "value": infonce(model, batch, chunk)},
        {"quantity": "modality_gap", "value": float((u.mean(0) - t.mean(0)).norm())},
    ]
    targets = {k: v.numpy() for k, v in world.targets(batch.scenes).items()}
    for side, features in (("image", u_raw), ("text", t)) if with_r2 else ():
        for name, value in r2_scores(features.numpy(), targets).items():
            rows.append({"quantity": "invariant_r2", "block": side, "subset": name, "value": value})
    gen = stream(seed, "eval", 1)
    for op in OPERATORS:
        for k in KS:
            negatives = world.hard_negatives(batch.scenes, [op] * n_eval, k, gen)
            t_neg = model.encode_text(
                world.negative_captions(batch, [[s] for s in negatives])[:, 0]
            )[0]
            u_neg = F.normalize(model.encode_image(world.images(negatives, batch.s_img)), dim=-1)
            text_side = share_right((u * t).sum(1), (u * t_neg).sum(1))
            image_side = share_right((t * u).sum(1), (t * u_neg).sum(1))
            for quantity, value in (("accuracy", text_side), ("image_accuracy", image_side)):
                rows.append({"quantity": quantity, "block": op, "subset": f"k{k}", "value": value})
    return rows


def repair_ids(world: TokenWorld) -> Callable[[torch.Tensor], torch.Tensor]:
    """π on a batch of token ids: `TokenWorld.repair` row by row."""

    def apply(ids: torch.Tensor) -> torch.Tensor:
        return world.token_ids([world.repair(world.words(row)) for row in ids])

    return apply


def run_model(
    ctx: RunContext,
    meta: dict,
    world_config: TokenWorldConfig,
    fit_config: FitConfig,
    n_eval: int,
) -> list[dict]:
    """generate → train → measure one model (and its g** when it reads tokens in order)."""
    world = TokenWorld(world_config)
    tail: list[float] = []

    def on_step(step: int, terms: dict[str, float], model: torch.nn.Module) -> None:
        tail.append(terms["loss"])
        del tail[:-100]
        if (step + 1) % 100 == 0:
            ctx.progress(100)

    model: SyntheticCLIP = fit(world, fit_config, on_step, ctx.log_dir).eval()
    ctx.progress(fit_config.steps % 100)
    chunk = fit_config.batch_size
    rows = [{**meta, **r} for r in measure(world, model, n_eval, fit_config.seed, chunk)]
    rows.append({**meta, "quantity": "final_loss", "value": float(np.mean(tail))})
    if fit_config.text_encoder == "transformer":
        pseudo = PrecomposedText(model, repair_ids(world))
        star = {**meta, "objective": meta["objective"] + "/g**"}
        measured = measure(world, pseudo, n_eval, fit_config.seed, chunk, with_r2=False)
        rows += [{**star, **r} for r in measured]
    return rows


def jobs(cfg: CompositionalityConfig) -> list[Job]:
    out = []
    for name in cfg.models:
        view = MODELS[name][0]
        for seed in cfg.seeds:
            out.append(
                Job(
                    key=f"{name.replace('/', '-')}-seed{seed}",
                    fn=run_model,
                    kwargs={
                        "meta": {"world": view, "objective": name, "seed": seed},
                        "world_config": cfg.world_config(view),
                        "fit_config": cfg.fit_config(name, seed),
                        "n_eval": cfg.n_eval,
                    },
                    steps=cfg.steps,
                    cpu_paths=cfg.cpu_paths,
                )
            )
    return out


# ---------------------------------------------------------------------------------- reporting


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per model: mean ± 95% CI over seeds of every headline quantity."""
    r = results.fillna({"block": "", "subset": ""})
    columns: dict[str, pd.Series] = {}

    def add(label: str, frame: pd.DataFrame) -> None:
        per_seed = frame.groupby(["objective", "seed"]).value.mean()
        columns[label] = per_seed.groupby("objective").apply(interval)

    add("InfoNCE", r[r.quantity == "infonce"])
    add("train loss", r[r.quantity == "final_loss"])
    for side in ("image", "text"):
        add(f"R² z_inv ({side})", r[(r.quantity == "invariant_r2") & (r.block == side)])
    for op in OPERATORS:
        for k in KS:
            add(
                f"{op} k{k}",
                r[(r.quantity == "accuracy") & (r.block == op) & (r.subset == f"k{k}")],
            )
    for op in OPERATORS:
        add(
            f"image {op} k1",
            r[(r.quantity == "image_accuracy") & (r.block == op) & (r.subset == "k1")],
        )
    add("modality gap", r[r.quantity == "modality_gap"])
    table = pd.DataFrame(columns)
    order = [m for name in MODELS for m in (name, name + "/g**") if m in table.index]
    return table.reindex(order)


def plot(results: pd.DataFrame, path: Path) -> None:
    """Hard-negative accuracy against k, one panel per operator, one line per model (mean and
    95% CI over seeds); the dashed line is chance."""
    import matplotlib.pyplot as plt

    r = results[results.quantity == "accuracy"].copy()
    r["k"] = r.subset.str.slice(1).astype(int)
    fig, axes = plt.subplots(1, len(OPERATORS), figsize=(4.2 * len(OPERATORS), 3.8), sharey=True)
    for ax, op in zip(axes, OPERATORS, strict=True):
        for model, g in r[r.block == op].groupby("objective", sort=False):
            per_k = g.groupby("k").value
            mean, n = per_k.mean(), per_k.count()
            half = (
                stats.t.ppf(0.975, np.maximum(n - 1, 1)) * per_k.std(ddof=1).fillna(0) / np.sqrt(n)
            )
            ax.errorbar(mean.index, mean, yerr=half, marker="o", capsize=2, label=model)
        ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set_title(op.upper())
        ax.set_xlabel("operator applied k times")
        ax.set_xticks(KS)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("image → caption vs. hard negative: accuracy")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_experiment(CompositionalityConfig, argv, PRESETS, __doc__)
    out = Path(cfg.out)
    todo = jobs(cfg)
    begin(out, {"config": cfg}, todo, derived=("results.csv", "summary.md", "accuracy.png"))
    results = run_sweep(todo, out, cfg.workers, desc="compositionality")
    table = summary(results)
    atomic_write_text(out / "summary.md", markdown_table(table))
    plot(results, out / "accuracy.png")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string())
    print(f"table: {out / 'summary.md'}")


if __name__ == "__main__":
    sys.exit(main())
