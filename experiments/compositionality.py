"""Token-level compositionality: CLIP identifies the invariant latent, yet composition is not
identified; operator-mined hard negatives restore it (arXiv 2510.26302; our precise world and
operators are in `synthetic.tokens` and `synthetic.token_operators`, the pseudo-optimal encoders
and the per-operator measures in `smartclip.pseudo_optimal`).

    python experiments/compositionality.py           # 10 models + 2 × 2 at ρ > 0, × 3 seeds
    python experiments/compositionality.py --quick   # 1 seed, short runs, every part

Time on 2 cores, not measured without other load: the default run is estimated at about 30
minutes and `--quick` at about 1.5 minutes, from per-step and evaluation timings of a tiny run on
the 2-core machine beside another job (wall times halved: the process had about half a core).

Models (`MODELS`): caption view × text tower × objective × mined negatives N (one per caption,
NegCLIP-style, a name drawn uniformly from N, `smartclip.fit.training_batch`):
  mining "depth1"  N = the primitives SWAP, REPLACE, ADD (applied once)
         "powers"  N = every primitive to every power 1..max_depth (swap, swap^2, …, add^3)
         "mixed"   N = every composition of depth 1..max_depth, mixed ones included
and "swapblind/clip", the order-aware tower reading κ(caption): its colour words sorted, so it
sees the ordered shape words and an unordered bag of colour words, is loss-equivalent on S_0 and
at chance on SWAP by construction (`pseudo_optimal.SortedColourWorld`).

Every model is trained at ρ = 0 (the support S_0, binding redundant); the `rho_models` also at
each ρ of `rhos` (`TokenWorldConfig.rho`: a share ρ of the training scenes binds colours to any
shape). Per model and seed, on held-out samples of its world:
  invariant_r2     R² (kernel ridge) of z_inv — per object slot its shape and colour, and the
                   layout — from the image embedding u (block "image") and the text embedding t
                   (block "text"); at ρ = 0 only
  infonce          ½[CE(s·ûtᵀ) + CE(s·tûᵀ)] at the model's logit scale, on held-out batches
  modality_gap     ‖mean û − mean t̂‖
  final_loss       the training objective, mean of the last 100 steps
  train_objective  (1/n_check) Σ_{s < n_check} L(g; B_s) on the training batches B_s, mined
                   negatives included (`pseudo_optimal.training_objective`)
  accuracy, image_accuracy, text_cosine
                   per operator name O (block: O; subset: its group "d<depth>", "d<depth> mixed"
                   or "in-vocabulary"), for every composition of depth 1..max_depth and every
                   in-vocabulary operator: share of images closer to their caption than to O's
                   negative (ties ½), share of captions closer to their image than to O's image
                   (not object_add, which has n + 1 objects and no image), and the hardness
                   (1/n) Σ cos(g(c), g(O c)) (`pseudo_optimal.operator_scores`)
  invariance       the invariance index cos(g(c), g(O c)) on n_probe held-out captions, for the
                   primitives and the in-vocabulary operators, after 0 (the initial weights), …,
                   `steps` training steps (subset: the step; `track_points` points)
For every model trained at ρ = 0, its pseudo-optimal encoder g**_N = g* ∘ π_N of its own objective
(objective + "/g**") is measured the same way, R² aside (on the support it embeds as g* does).

summary.md (every number: mean ± half-width of the 95 % t-interval over seeds; every verdict by
`identifiability.verdicts`, none below 3 seeds):
  1. pseudo-optimal encoders, a CHECK of the construction: L(g**_N) = L(g*) on training batches,
     accuracy ½ on every composition outside N, g*'s accuracy elsewhere
  2. claim 2, findings: (a) does the SWAP-blind tower reach the order-aware tower's held-out loss
     at ρ = 0, (b) as ρ grows, does the order-aware tower's SWAP accuracy rise and the SWAP-blind
     tower's loss fall behind, (c) does training drift toward g** (invariance index → 1)
  3. claim 3, findings: accuracy and hardness per depth and mix for every mining regime; does a
     depth-1-mined model sit at chance on deeper and mixed negatives as g**_1 does, does deeper
     mining close the gap, does accuracy fall with depth
Writes OUT/results.csv, OUT/summary.md, OUT/accuracy.png, OUT/invariance.png, OUT/rho.png and
OUT/config.json; resumes an interrupted OUT and reruns what a changed flag affects (`sweep`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from identifiability.metrics import r2_scores
from identifiability.verdicts import Decided, t_interval
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import require
from smartclip.fit import FitConfig, TrainSettings, build_model, fit, held_out_batch
from smartclip.pseudo_optimal import (
    Negatives,
    SortedColourWorld,
    blind_to,
    operator_negatives,
    operator_scores,
    profile_of,
    pseudo_optimal,
    reader,
    training_objective,
)
from sweep import Job, RunContext, begin, markdown_table, parse_experiment, run_sweep
from synthetic.seeding import stream
from synthetic.token_operators import IN_VOCABULARY, compositions, in_vocabulary
from synthetic.tokens import OPERATORS, TokenBatch, TokenWorld, TokenWorldConfig


@dataclass(frozen=True)
class Model:
    """A trained model: caption view, text tower, objective, mining regime (`mined_names`), and
    whether the tower reads κ(caption) (the SWAP-blind tower)."""

    view: str
    encoder: str
    objective: str
    mining: str = "none"
    swap_blind: bool = False


MODELS: dict[str, Model] = {
    "transformer/clip": Model("tokens", "transformer", "clip"),
    "transformer/clip+mined": Model("tokens", "transformer", "clip", "depth1"),
    "transformer/clip+mined1-3": Model("tokens", "transformer", "clip", "powers"),
    "transformer/clip+mixed": Model("tokens", "transformer", "clip", "mixed"),
    "transformer/smartclip": Model("tokens", "transformer", "smartclip"),
    "bag/clip": Model("tokens", "bag", "clip"),
    "bag/clip+mined": Model("tokens", "bag", "clip", "depth1"),
    "sentence/clip": Model("sentence", "mlp", "clip"),
    "sentence/clip+mined": Model("sentence", "mlp", "clip", "depth1"),
    "swapblind/clip": Model("tokens", "transformer", "clip", swap_blind=True),
}
AWARE, BLIND = "transformer/clip", "swapblind/clip"  # the pair claim 2 (a, b) compares
CHECK_TOLERANCE = 1e-5  # 1 − cos on a chance cell: float32 rounding (g_T⁻¹ in the sentence view)


def mined_names(mining: str, config: TokenWorldConfig, max_depth: int) -> tuple[str, ...]:
    """N of a mining regime (module docstring); "depth1" is `OPERATORS` itself."""
    if mining == "none":
        return ()
    if mining == "depth1":
        return OPERATORS
    if mining == "powers":
        depths = range(1, max_depth + 1)
        return tuple(op if k == 1 else f"{op}^{k}" for op in OPERATORS for k in depths)
    return tuple(n for d in range(1, max_depth + 1) for n in compositions(config, d))


def evaluated_names(config: TokenWorldConfig, max_depth: int) -> tuple[str, ...]:
    """Every composition of depth 1..max_depth, then the in-vocabulary operators `config` admits."""
    return mined_names("mixed", config, max_depth) + in_vocabulary(config)


def group_of(name: str) -> str:
    """ "d<depth>" for a primitive's power, "d<depth> mixed" for a composition of several
    primitives, "in-vocabulary" for the in-vocabulary operators."""
    if name in IN_VOCABULARY:
        return "in-vocabulary"
    profile = profile_of(name)
    return f"d{sum(profile)}" + (" mixed" if sum(p > 0 for p in profile) > 1 else "")


def world_label(view: str, rho: float) -> str:
    """The `world` column: the view, with "ρ=<rho>" for ρ > 0."""
    return view if rho == 0 else f"{view} ρ={rho:g}"


def rho_of(label: str) -> float:
    return float(label.split("ρ=")[1]) if "ρ=" in label else 0.0


@dataclass(frozen=True)
class CompositionalityConfig(TrainSettings):
    """Training settings shared by every model; the world's sizes; what to run and decide."""

    steps: int = field(default=1000, metadata={"help": "training steps per run"})
    batch_size: int = 256
    out: str = field(default="runs/compositionality", metadata={"help": "output folder"})
    models: tuple[str, ...] = field(default=tuple(MODELS), metadata={"help": "models to train"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "model and data seeds"})
    world_seed: int = field(default=0, metadata={"help": "seed of the world's generators"})
    n_objects: int = field(default=4, metadata={"help": "objects per scene"})
    n_eval: int = field(default=2000, metadata={"help": "held-out samples"})
    workers: int = field(default=2, metadata={"help": "parallel processes"})
    max_depth: int = field(
        default=3, metadata={"help": "deepest composition evaluated and mined (powers, mixed)"}
    )
    rhos: tuple[float, ...] = field(
        default=(0.5, 1.0),
        metadata={"help": "shares ρ > 0 of scenes with non-redundant binding (the ρ sweep)"},
    )
    rho_models: tuple[str, ...] = field(
        default=(AWARE, BLIND), metadata={"help": "models trained at every ρ of --rhos"}
    )
    track_points: int = field(
        default=5, metadata={"help": "evaluation points of the invariance index, init and end"}
    )
    n_probe: int = field(default=500, metadata={"help": "captions of the invariance index"})
    n_check: int = field(
        default=4, metadata={"help": "training batches on which g* and g** objectives are compared"}
    )
    chance_margin: float = field(
        default=0.05, metadata={"help": "'at chance' means accuracy ≤ 0.5 + this (our bound)"}
    )
    loss_margin: float = field(
        default=0.02,
        metadata={"help": "'reaches a loss' means held-out InfoNCE within this (nats; our bound)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("models", "rho_models"):
            unknown = [m for m in getattr(self, name) if m not in MODELS]
            require(not unknown, name, f"unknown {unknown}; choose from {', '.join(MODELS)}")
        require(bool(self.seeds), "seeds", "give at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", "seeds must be distinct")
        require(self.n_eval >= 100, "n_eval", "must be at least 100")
        require(self.workers >= 1, "workers", "must be at least 1")
        require(self.negative_k == 1, "negative_k", "the mining regimes name their powers")
        require(all(0 < r <= 1 for r in self.rhos), "rhos", "every ρ must lie in (0, 1]")
        require(len(set(self.rhos)) == len(self.rhos), "rhos", "values must be distinct")
        require(self.track_points >= 2, "track_points", "needs at least init and end")
        require(self.n_probe >= 50, "n_probe", "must be at least 50")
        require(1 <= self.n_check <= self.steps, "n_check", "must lie in 1..steps")
        require(0 < self.chance_margin < 0.5, "chance_margin", "must lie in (0, 0.5)")
        require(self.loss_margin > 0, "loss_margin", "must be positive")
        try:
            config = self.world_config("tokens")
        except ValueError as err:
            raise ValueError(f"world: {err}") from None
        require(self.max_depth >= 1, "max_depth", "must be at least 1")
        require(
            self.max_depth <= min(config.max_k(op) for op in OPERATORS),
            "n_objects",
            f"every primitive must apply {self.max_depth} times (--max-depth)",
        )

    def world_config(self, view: str, rho: float = 0.0) -> TokenWorldConfig:
        return TokenWorldConfig(n_objects=self.n_objects, view=view, seed=self.world_seed, rho=rho)

    def fit_config(self, model: str, seed: int) -> FitConfig:
        m = MODELS[model]
        settings = {**self.settings(), "text_encoder": m.encoder}
        settings["hard_negatives"] = mined_names(
            m.mining, self.world_config(m.view), self.max_depth
        )
        return FitConfig(**settings, objective=m.objective, seed=seed)

    def track(self) -> tuple[int, ...]:
        """The steps after which the invariance index is measured, 0 (init) and `steps` included."""
        points = np.linspace(0, self.steps, self.track_points).round().astype(int)
        return tuple(sorted(set(points.tolist())))


PRESETS: dict[str, dict] = {
    "quick": {
        "seeds": (0,),
        "steps": 200,
        "n_eval": 400,
        "batch_size": 128,
        "rhos": (1.0,),
        "n_probe": 200,
        "n_check": 2,
        "track_points": 3,
    },
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


@torch.no_grad()
def measure(
    model: torch.nn.Module,
    world: TokenWorld,
    batch: TokenBatch,
    negs: Negatives,
    chunk: int,
    with_r2: bool,
) -> list[dict]:
    """infonce, modality_gap, invariant_r2 (with `with_r2`) and the operator scores on the
    held-out `batch` and its negatives `negs` (module docstring), as rows (model, seed filled by
    the caller)."""
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
    scores = operator_scores(model, batch, negs)
    return rows + [{**r, "subset": group_of(r["block"])} for r in scores]


def run_model(
    ctx: RunContext,
    meta: dict,
    world_config: TokenWorldConfig,
    fit_config: FitConfig,
    swap_blind: bool,
    names: tuple[str, ...],
    probes: tuple[str, ...],
    track: tuple[int, ...],
    n_eval: int,
    n_probe: int,
    n_check: int,
) -> list[dict]:
    """generate → train (tracking the invariance index) → measure one model g* and, at ρ = 0,
    its pseudo-optimal encoder g**_N (with R² of z_inv for g* only: on the support g** embeds as
    g* does). Held-out set 0 of the seed with its negatives from stream (seed, "eval", 1) for the
    final measures, set 2 with negatives from (seed, "eval", 3) for the invariance index."""
    world = TokenWorld(world_config)
    train_world = SortedColourWorld(world_config) if swap_blind else world
    seed, at_zero = fit_config.seed, world_config.rho == 0
    probe = held_out_batch(world, n_probe, seed, index=2)
    probe_negs = operator_negatives(world, probe, probes, stream(seed, "eval", 3), False)
    rows: list[dict] = []
    tail: list[float] = []

    def record(model: torch.nn.Module, step: int) -> None:
        model.eval()
        for r in operator_scores(reader(model, world, swap_blind), probe, probe_negs):
            if r["quantity"] == "text_cosine":
                rows.append({**meta, **r, "quantity": "invariance", "subset": str(step)})
        model.train()

    def on_step(step: int, terms: dict[str, float], model: torch.nn.Module) -> None:
        tail.append(terms["loss"])
        del tail[:-100]
        if (step + 1) % 100 == 0:
            ctx.progress(100)
        if step + 1 in track:
            record(model, step + 1)

    if 0 in track:
        record(build_model(train_world, fit_config), 0)
    model = fit(train_world, fit_config, on_step, ctx.log_dir).eval()
    ctx.progress(fit_config.steps % 100)
    rows.append({**meta, "quantity": "final_loss", "value": float(np.mean(tail))})
    batch = held_out_batch(world, n_eval, seed)
    negs = operator_negatives(world, batch, names, stream(seed, "eval", 1))
    encoders = {meta["objective"]: reader(model, world, swap_blind)}
    if at_zero:
        g2 = pseudo_optimal(model, world, fit_config.hard_negatives, swap_blind)
        encoders[meta["objective"] + "/g**"] = g2
    for label, g in encoders.items():
        tagged = {**meta, "objective": label}
        with_r2 = at_zero and label == meta["objective"]
        measured = measure(g, world, batch, negs, fit_config.batch_size, with_r2)
        objective = training_objective(g, world, fit_config, range(n_check))
        rows += [{**tagged, **r} for r in measured]
        rows.append({**tagged, "quantity": "train_objective", "value": objective})
    return rows


def jobs(cfg: CompositionalityConfig) -> list[Job]:
    """One job per (model, seed) at ρ = 0 and per (ρ model, ρ, seed) for the ρ sweep."""
    plan = [(name, 0.0) for name in cfg.models]
    plan += [(name, rho) for rho in cfg.rhos for name in cfg.rho_models]
    out = []
    for name, rho in plan:
        m = MODELS[name]
        world_config = cfg.world_config(m.view, rho)
        for seed in cfg.seeds:
            tail = f"-rho{rho:g}" if rho else ""
            out.append(
                Job(
                    key=f"{name.replace('/', '-')}-seed{seed}{tail}",
                    fn=run_model,
                    kwargs={
                        "meta": {
                            "world": world_label(m.view, rho),
                            "objective": name,
                            "seed": seed,
                        },
                        "world_config": world_config,
                        "fit_config": cfg.fit_config(name, seed),
                        "swap_blind": m.swap_blind,
                        "names": evaluated_names(world_config, cfg.max_depth),
                        "probes": OPERATORS + in_vocabulary(world_config),
                        "track": cfg.track(),
                        "n_eval": cfg.n_eval,
                        "n_probe": cfg.n_probe,
                        "n_check": cfg.n_check,
                    },
                    steps=cfg.steps,
                    cpu_paths=cfg.cpu_paths,
                )
            )
    return out


# ---------------------------------------------------------------------------------- reporting


def cell(values: Sequence[float], digits: int = 3) -> str:
    """mean ± half-width of the 95 % t-interval over seeds (± 0 for one seed); — for none."""
    if len(values) == 0:
        return "—"
    mean, half = t_interval(list(values))
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def select(results: pd.DataFrame, **where: str) -> pd.DataFrame:
    """The rows whose columns equal the given values."""
    keep = np.ones(len(results), dtype=bool)
    for column, value in where.items():
        keep &= (results[column] == value).to_numpy()
    return results[keep]


def per_seed(frame: pd.DataFrame) -> pd.Series:
    """One value per seed: the mean of the seed's rows."""
    return frame.groupby("seed").value.mean()


def worst(frame: pd.DataFrame, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """One value per seed: the largest fn(value) of the seed's rows."""
    return frame.assign(value=fn(frame.value)).groupby("seed").value.max()


def decided(
    claim: str, kind: str, bound: float, values: pd.Series, role: str, digits: int = 3
) -> dict:
    """A verdict row: the claim, its seed values' 95 % interval against the bound, the verdict of
    the seed rule (`identifiability.verdicts`), and whether it checks the construction or is a
    finding."""
    d = Decided(kind, bound, tuple(values.dropna().tolist()))
    measured = d.text(digits) if len(d.values) else "no seeds"
    return {"claim": claim, "measured": measured, "verdict": d.verdict, "role": role}


def model_order(results: pd.DataFrame) -> list[str]:
    present = set(results.objective)
    return [m for name in MODELS for m in (name, name + "/g**") if m in present]


def trained(results: pd.DataFrame) -> list[str]:
    """The trained models (not g**) present, in `MODELS` order."""
    return [m for m in MODELS if m in set(results.objective)]


def headline(results: pd.DataFrame) -> pd.DataFrame:
    """Per model and g**: losses, R² of z_inv and the modality gap."""
    columns = {
        "held-out InfoNCE": ("infonce", None),
        "train loss (last 100 steps)": ("final_loss", None),
        "objective on training batches": ("train_objective", None),
        "R² z_inv (image)": ("invariant_r2", "image"),
        "R² z_inv (text)": ("invariant_r2", "text"),
        "modality gap": ("modality_gap", None),
    }
    table = {}
    for label, (quantity, block) in columns.items():
        r = select(results, quantity=quantity)
        r = r if block is None else select(r, block=block)
        table[label] = r.groupby("objective").apply(lambda f: cell(per_seed(f)))
    return pd.DataFrame(table).reindex(model_order(results)).rename_axis("model")


def pseudo_check(results: pd.DataFrame, cfg: CompositionalityConfig) -> tuple[pd.DataFrame, list]:
    """Part 1, a check of the construction: per model, L(g*) and L(g**_N) on its training
    batches, g**'s accuracy and 1 − cos on the compositions outside N (½ and 0 by construction)
    and |accuracy(g**) − accuracy(g*)| elsewhere (0); with the verdicts."""
    rows, claims = {}, []
    for name in trained(results):
        star, pseudo = select(results, objective=name), select(results, objective=name + "/g**")
        if pseudo.empty:
            continue
        mined = cfg.fit_config(name, 0).hard_negatives
        acc = select(pseudo, quantity="accuracy")
        at_chance = np.array([blind_to(b, mined) for b in acc.block], dtype=bool)
        chance, kept = acc[at_chance], acc[~at_chance]
        cos = select(pseudo, quantity="text_cosine")
        cos = cos[cos.block.isin(set(chance.block))]
        star_acc = select(star, quantity="accuracy").set_index(["seed", "block"]).value
        baseline = star_acc[kept.set_index(["seed", "block"]).index].to_numpy()
        kept = kept.assign(value=kept.value.to_numpy() - baseline)
        l_star = per_seed(select(star, quantity="train_objective"))
        l_pseudo = per_seed(select(pseudo, quantity="train_objective"))
        gap = (l_pseudo - l_star).abs()
        off_half, off_one = worst(chance, lambda v: (v - 0.5).abs()), worst(cos, lambda v: 1 - v)
        off_star = worst(kept, lambda v: v.abs())
        n_comp = sum(b not in IN_VOCABULARY for b in acc.block.unique())
        rows[name] = {
            "mining (|N|)": f"{MODELS[name].mining} ({len(mined)})",
            "L(g*), training batches": cell(l_star, 6),
            "L(g**)": cell(l_pseudo, 6),
            "abs(L(g**) − L(g*))": cell(gap, 6),
            "held-out InfoNCE g* / g**": " / ".join(
                cell(per_seed(select(f, quantity="infonce"))) for f in (star, pseudo)
            ),
            "chance cells": f"{chance.block.nunique()} of {n_comp} compositions",
            "g** accuracy there": cell(per_seed(chance)),
            "max abs(acc − ½) there": cell(off_half),
            "max 1 − cos there": cell(off_one, 7),
            "max abs(acc g** − g*) elsewhere": cell(off_star),
        }
        claims += [
            decided(f"{name}: L(g**) = L(g*) on training batches", "low", 0, gap, "check", 6),
            decided(
                f"{name}: g** keeps g*'s accuracy outside its chance cells",
                "low",
                0.0,
                off_star,
                "check",
            ),
        ]
        if len(chance):
            claims.append(
                decided(
                    f"{name}: g**(O c) = g**(c) on its chance cells (max 1 − cos)",
                    "low",
                    CHECK_TOLERANCE,
                    off_one,
                    "check",
                    7,
                )
            )
        if len(chance) and MODELS[name].view == "tokens":  # sentence: ties up to rounding
            claims.append(
                decided(f"{name}: g** at chance on its chance cells", "low", 0.0, off_half, "check")
            )
    blind = select(results, objective=BLIND, world="tokens", quantity="accuracy")
    swaps = blind[blind.block.str.fullmatch(r"swap(\^\d+)?")]
    if len(swaps):
        claims.append(
            decided(
                f"{BLIND} at chance on SWAP^k (max abs(acc − ½))",
                "low",
                0.0,
                worst(swaps, lambda v: (v - 0.5).abs()),
                "check",
            )
        )
    return pd.DataFrame(rows).T.rename_axis("model"), claims


def invariance_table(results: pd.DataFrame) -> pd.DataFrame:
    """Claim 2 (c): per model (ρ = 0) and operator, the invariance index after each tracked step
    (4 digits: the initial towers are already near 1), and two drifts with the verdict of
    "training drifts toward g**" (drift ≥ 0): from the initial weights to the end, and from the
    first tracked step after them to the end (the drift of training proper, once the initial
    near-invariance of a random tower is gone)."""
    r = select(results, quantity="invariance")
    steps = sorted(set(r.subset.astype(int)))
    rows = {}
    for (model, op), f in r.groupby(["objective", "block"], sort=False):
        at = {s: per_seed(f[f.subset == str(s)]) for s in steps}
        row = {f"step {s}": cell(at[s], 4) for s in steps}
        for label, start in (("from init", steps[0]), (f"from step {steps[1]}", steps[1])):
            d = decided("", "high", 0.0, at[steps[-1]] - at[start], "finding")
            row[f"drift {label}"] = f"{d['measured']}: {d['verdict']}"
        rows[(model, op)] = row
    table = pd.DataFrame(rows).T
    if len(table):
        table.index.names = ["model", "operator"]
    return table


def rho_table(results: pd.DataFrame, cfg: CompositionalityConfig) -> tuple[pd.DataFrame, list]:
    """Claim 2 (a, b): per ρ model and ρ, held-out InfoNCE, training loss, SWAP accuracy and the
    SWAP invariance index at the end; the verdicts comparing the order-aware and SWAP-blind
    towers."""
    rows = {}
    for model in (m for m in cfg.rho_models if m in set(results.objective)):
        for rho in (0.0, *cfg.rhos):
            r = select(results, objective=model, world=world_label(MODELS[model].view, rho))
            if r.empty:
                continue
            swap = select(r, quantity="accuracy")
            end = select(r, quantity="invariance", block="swap")
            end = end[end.subset == str(cfg.steps)]
            rows[(model, f"{rho:g}")] = {
                "held-out InfoNCE": cell(per_seed(select(r, quantity="infonce"))),
                "train loss": cell(per_seed(select(r, quantity="final_loss"))),
                "SWAP accuracy": cell(per_seed(select(swap, block="swap"))),
                "SWAP^k accuracy, k ≤ max_depth": cell(
                    per_seed(swap[swap.block.str.fullmatch(r"swap(\^\d+)?")])
                ),
                "SWAP invariance index (end)": cell(per_seed(end)),
            }
    table = pd.DataFrame(rows).T
    if len(table):
        table.index.names = ["model", "ρ"]

    def of(model: str, rho: float, quantity: str, **where: str) -> pd.Series:
        world = world_label(MODELS[model].view, rho)
        return per_seed(select(results, objective=model, world=world, quantity=quantity, **where))

    claims = [
        decided(
            f"ρ=0: {BLIND} reaches {AWARE}'s held-out InfoNCE (InfoNCE blind − aware)",
            "low",
            cfg.loss_margin,
            of(BLIND, 0, "infonce") - of(AWARE, 0, "infonce"),
            "finding",
        )
    ]
    for rho in cfg.rhos:
        claims += [
            decided(
                f"ρ={rho:g}: {BLIND}'s loss falls behind (InfoNCE blind − aware)",
                "high",
                cfg.loss_margin,
                of(BLIND, rho, "infonce") - of(AWARE, rho, "infonce"),
                "finding",
            ),
            decided(
                f"ρ={rho:g}: {AWARE}'s SWAP accuracy rises (acc(ρ) − acc(0))",
                "high",
                0.0,
                of(AWARE, rho, "accuracy", block="swap") - of(AWARE, 0, "accuracy", block="swap"),
                "finding",
            ),
            decided(
                f"ρ={rho:g}: {AWARE}'s SWAP accuracy near 1",
                "high",
                1 - cfg.chance_margin,
                of(AWARE, rho, "accuracy", block="swap"),
                "finding",
            ),
        ]
    return table, claims


def by_group(results: pd.DataFrame, quantity: str, digits: int = 3) -> pd.DataFrame:
    """Rows: models and their g**; columns: the composition groups and the in-vocabulary
    operators; cell: per seed the mean over the group's names, then the interval."""
    r = select(results, quantity=quantity)
    column = r.block.where(r.subset == "in-vocabulary", r.subset)
    per = r.assign(column=column).groupby(["objective", "column", "seed"]).value.mean()
    table = per.groupby(["objective", "column"]).apply(lambda v: cell(v, digits)).unstack("column")
    groups = sorted((c for c in table.columns if c not in IN_VOCABULARY), key=lambda c: (c[:2], c))
    order = groups + [c for c in IN_VOCABULARY if c in table.columns]
    return table.reindex(index=model_order(results), columns=order).rename_axis("model")


def per_name(results: pd.DataFrame, quantity: str, digits: int = 3) -> pd.DataFrame:
    """Rows: operator names with their group; columns: the trained models (not g**)."""
    r = select(results, quantity=quantity)
    r = r[r.objective.isin(MODELS)]
    per = r.groupby(["block", "objective", "seed"]).value.mean()
    table = (
        per.groupby(["block", "objective"]).apply(lambda v: cell(v, digits)).unstack("objective")
    )
    names = list(dict.fromkeys(r.block))
    table = table.reindex(index=names, columns=trained(r))
    table.insert(0, "group", [group_of(n) for n in names])
    return table.rename_axis("operator")


def depth_claims(results: pd.DataFrame, cfg: CompositionalityConfig) -> list[dict]:
    """Claim 3: a depth-1-mined model at chance on deeper and mixed groups (as g**_1 is); deeper
    mining closes the gap (accuracy of a model mined with powers or mixed − its depth-1-mined
    twin); accuracy falls from O to O^max_depth (compounding)."""
    acc = select(results, quantity="accuracy")
    deeper = sorted({g for g in acc.subset if g.startswith("d") and not g.startswith("d1")})

    def group(model: str, g: str) -> pd.Series:
        return per_seed(select(acc, objective=model, subset=g))

    claims = []
    models = trained(acc)
    for model in (m for m in models if MODELS[m].mining == "depth1"):
        claims += [
            decided(
                f"{model} at chance on {g}, as g**_1",
                "low",
                0.5 + cfg.chance_margin,
                group(model, g),
                "finding",
            )
            for g in deeper
        ]
    for model in (m for m in models if MODELS[m].mining in ("powers", "mixed")):
        spec = MODELS[model]
        twin = next(
            (
                m
                for m in models
                if MODELS[m] == Model(spec.view, spec.encoder, spec.objective, "depth1")
            ),
            None,
        )
        if twin is not None:
            claims += [
                decided(
                    f"{model} − {twin} on {g}: deeper mining closes the gap",
                    "high",
                    0.0,
                    group(model, g) - group(twin, g),
                    "finding",
                )
                for g in deeper
            ]
    top = cfg.max_depth
    for model in models:
        for op in OPERATORS if top > 1 else ():
            deep = per_seed(select(acc, objective=model, block=f"{op}^{top}"))
            once = per_seed(select(acc, objective=model, block=op))
            claims.append(
                decided(
                    f"{model}: accuracy falls from {op} to {op}^{top} (compounding)",
                    "degraded",
                    0.0,
                    deep - once,
                    "finding",
                )
            )
    return claims


def section(title: str, text: str, *tables: pd.DataFrame) -> str:
    """A markdown section: heading, text (if any), tables."""
    lead = [text, ""] if text else []
    return "\n".join([f"## {title}", "", *lead, *(markdown_table(t) for t in tables)])


def report(results: pd.DataFrame, cfg: CompositionalityConfig) -> str:
    """summary.md: the tables and verdicts of the module docstring."""
    main = results[results.world.map(rho_of) == 0]
    check, check_claims = pseudo_check(main, cfg)
    rho, rho_claims = rho_table(results, cfg)
    parts = [
        "# Compositionality",
        "",
        f"Every number: mean ± half-width of the 95 % t-interval over {len(cfg.seeds)} seed(s); "
        "every verdict by the seed rule (held / not held / undecided, no verdict below 3 "
        "seeds). Chance is 0.5.",
        "",
        section("Losses, z_inv and the modality gap (ρ = 0)", "", headline(main)),
        section(
            "1. Pseudo-optimal encoders g**_N = g* ∘ π_N (a check of the construction)",
            "L: each model's own objective on its first training batches (mined negatives "
            "included). Chance cells: the compositions outside N, where g** must score ½ (in "
            "the sentence view only up to the rounding of g_T⁻¹: no verdict on its ties).",
            check,
            pd.DataFrame(check_claims),
        ),
        section(
            "2a-b. The SWAP-blind tower and the share ρ of non-redundant binding (findings)",
            f"{BLIND} reads the ordered shape words and an unordered bag of colour words.",
            rho,
            pd.DataFrame(rho_claims),
        ),
        section(
            "2c. Invariance index cos(g(c), g(O c)) during training (findings)",
            "1 = the encoder ignores O, as g** does; the verdict is on drift ≥ 0.",
            invariance_table(main),
        ),
        section(
            "3. Accuracy per depth and mix (text side)",
            "d<k>: primitives applied k times; d<k> mixed: compositions of several primitives.",
            by_group(main, "accuracy"),
        ),
        section("3. Hardness: text cosine cos(g(c), g(O c))", "", by_group(main, "text_cosine", 4)),
        section("3. Image side (object_add has no image)", "", by_group(main, "image_accuracy")),
        section("3. Accuracy per operator", "", per_name(main, "accuracy")),
        section("3. Text cosine per operator", "", per_name(main, "text_cosine", 4)),
        section(
            "3. Compounding under mining (findings)", "", pd.DataFrame(depth_claims(main, cfg))
        ),
    ]
    return "\n".join(parts)


def draw_lines(ax: object, frame: pd.DataFrame, x: str, label: str) -> None:
    """One line: per x the seeds' mean with its 95 % t-interval as error bars."""
    per = frame.groupby([x, "seed"]).value.mean().groupby(x)
    points = {k: t_interval(v.to_numpy()) for k, v in per}
    xs = sorted(points)
    ax.errorbar(
        xs,
        [points[k][0] for k in xs],
        yerr=[np.nan_to_num(points[k][1]) for k in xs],
        marker="o",
        capsize=2,
        label=label,
    )


def plot(results: pd.DataFrame, cfg: CompositionalityConfig, out: Path) -> None:
    """accuracy.png: accuracy against depth, one panel per primitive (its powers) and one for the
    mixed compositions (their mean), one line per model at ρ = 0; invariance.png: the invariance
    index against training steps, one panel per tracked operator; rho.png: SWAP accuracy and
    held-out InfoNCE against ρ for the ρ models. Mean and 95 % t-interval over seeds; dashed:
    chance."""
    import matplotlib.pyplot as plt

    main = results[(results.world.map(rho_of) == 0) & results.objective.isin(MODELS)]
    acc = select(main, quantity="accuracy").copy()
    acc = acc[acc.subset != "in-vocabulary"]
    acc["depth"] = acc.subset.str.extract(r"d(\d+)", expand=False).astype(int)
    panels = [(op, acc[acc.block.str.fullmatch(rf"{op}(\^\d+)?")]) for op in OPERATORS]
    panels.append(("mixed", acc[acc.subset.str.endswith("mixed")]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), sharey=True)
    for ax, (title, frame) in zip(axes, panels, strict=True):
        for model, f in frame.groupby("objective", sort=False):
            draw_lines(ax, f, "depth", model)
        ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set_title(title.upper() if title in OPERATORS else "mixed compositions (mean)")
        ax.set_xlabel("depth (primitive applications)")
        ax.set_xticks(range(1, cfg.max_depth + 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("image → caption vs. negative: accuracy")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    inv = select(main, quantity="invariance").assign(step=lambda f: f.subset.astype(int))
    ops = list(dict.fromkeys(inv.block))
    fig, axes = plt.subplots(1, len(ops), figsize=(3.6 * len(ops), 3.6), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        for model, f in select(inv, block=op).groupby("objective", sort=False):
            draw_lines(ax, f, "step", model)
        ax.set_title(op)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("cos(g(c), g(O c))")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "invariance.png", dpi=120)
    plt.close(fig)

    sweep = results[results.objective.isin(cfg.rho_models)]
    sweep = sweep.assign(rho=sweep.world.map(rho_of))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (quantity, where, ylabel) in zip(
        axes,
        [("accuracy", {"block": "swap"}, "SWAP accuracy"), ("infonce", {}, "held-out InfoNCE")],
        strict=True,
    ):
        for model, f in select(sweep, quantity=quantity, **where).groupby("objective", sort=False):
            draw_lines(ax, f, "rho", model)
        ax.set_xlabel("ρ: share of scenes with non-redundant binding")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.5, color="grey", ls="--", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rho.png", dpi=120)
    plt.close(fig)


FIGURES = ("accuracy.png", "invariance.png", "rho.png")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_experiment(CompositionalityConfig, argv, PRESETS, __doc__)
    out = Path(cfg.out)
    todo = jobs(cfg)
    begin(out, {"config": cfg}, todo, derived=("results.csv", "summary.md", *FIGURES))
    results = run_sweep(todo, out, cfg.workers, desc="compositionality")
    results = results.fillna({"block": "", "subset": ""})
    text = report(results, cfg)
    atomic_write_text(out / "summary.md", text)
    plot(results, cfg, out)
    print(text)
    print(f"table: {out / 'summary.md'}")


if __name__ == "__main__":
    sys.exit(main())
