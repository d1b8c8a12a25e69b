"""CLIP, Long-CLIP, MulCLIP and SmartCLIP with the same data, code and budget: learning curves,
the papers' orderings decided on seeds, and what a step of each costs.

    python experiments/compare_objectives.py           # 3 seeds (about 45 min, estimated)
    python experiments/compare_objectives.py --quick   # 1 seed, tiny budgets: no verdicts

On the built-in rendered scenes (`smartclip.builtin`): the tiny open_clip towers are first
pre-trained with CLIP's loss (one run, as the papers start from pre-trained CLIP), then
fine-tuned from that export with each objective for `--finetune-epochs` epochs (the
`tiny-smartclip` preset's rates and batch for all, so every objective has the same steps), for
every seed. Every run writes a checkpoint per epoch (42 steps of 128 pairs at the default 6,000
scenes), and each is measured: a learning curve per run with a point per epoch, the pre-trained
export its step 0. The points lie on one cosine schedule, so a point before the end is not what
a shorter run would reach, and a curve that flattens at the end flattens partly because the
learning rate decays to 0 there. CLIP and SmartCLIP train on a random first-k-sentence prefix of
one of a scene's captions (the recipe), Long-CLIP and MulCLIP on its longest caption whole with
their short caption and sub-captions (`smartclip.data.TextOptions`). Each export is measured on the
held-out scenes:
  retrieval     R@1/5/10 text→image and image→text with long captions (block "long": a scene's
                long-level caption) and short ones (block "short": the short caption by the
                release's rule, `short_caption`: the text before the first ". ", as Long-CLIP
                trains on)
  attribute_r2  kernel-ridge R² of scene attributes (colour, size, position, count) from the
                image embedding (`smartclip.eval.SCENE_ATTRIBUTES`)
Two settings fixed at ViT scale are scaled to the tiny towers (64-dim embedding, 64 patches,
⌊0.2 · 64⌋ = 12 calibrated tokens): Long-CLIP's coarse PCA keeps the release's share of the
embedding, 32/512 = 1/16, so 4 of 64 components (`--pca-components`; the trainer's default 32 is
the release's count, which here would keep half of the embedding), and MulCLIP's sub-caption
top-k keeps its assumed 16 of ViT-B/16's 39 calibrated patches as a share, 5 of 12
(`--sub-topk`; 16 would keep all 12, so the top-k would select nothing).

On the synthetic worlds, where an objective is defined on vectors (CLIP, Long-CLIP's coarse term
on short captions, SmartCLIP; MulCLIP's token and patch terms are not): each objective trains
from scratch with `smartclip.fit` (Long-CLIP built with its class defaults: the release's share
1/16 of the 16-dim embedding, 1 component), `synthetic_recovery`'s measures at the end, and the
preserve R² per block on the same held-out set at `--synthetic-curve-points` evenly spaced steps.

summary.md holds, as mean ± 95 % t-interval over seeds:
  the end point of every run (its last step);
  the papers' orderings (Long-CLIP above CLIP on long captions, SmartCLIP above Long-CLIP,
  MulCLIP above Long-CLIP) on long-caption R@1 (scenes) and worst-block preserve R²
  (synthetic), decided by the seed rule (`identifiability.verdicts`) on the per-seed
  differences A − B at the end point: held when the interval lies above 0, not held when it
  lies at or below 0, undecided when it contains 0, no verdict below 3 seeds. Where one is not
  held, the last interval of the curves: A's rise and the change of A − B over it, decided the
  same way; a gap that closes at the end suggests a budget effect, one that does not, none;
  the learning curves point by point;
  the step time per objective from the fine-tuning runs' `train.csv` (median over the logged
  intervals of all seeds), beside the analytic worst case of `smartclip.bench` (every
  sub-caption slot filled at the full 248 tokens: an upper bound on MulCLIP's step).

Budget (estimated, not run): the default was sized from the CPU time per step of a 4-step run
of each objective at batch 128 (one thread, AVX2 paths, the scenes' captions: CLIP 1.18 s,
Long-CLIP 1.19 s, MulCLIP 1.48 s, SmartCLIP 1.57 s), the evaluation of an export (about 5 s for
600 scenes), a synthetic step (CLIP 11, Long-CLIP 18, SmartCLIP 21 ms) and a kernel-ridge R² on
2,000 samples (9 s) with a synthetic run's end measures (SmartCLIP's about 150 s, the others'
45 s). On 2 workers: the pre-training (8 min) beside the synthetic runs (30 CPU minutes) takes
19 minutes, then 4 epochs × 3 seeds of fine-tuning with 4 curve points each 26 minutes: 45
minutes, plus 2 to render the scenes on a fresh clone. The same sums give 29 minutes for the
earlier budget (one epoch, no curves, the pre-training alone first), whose cold run took 26.9.
Writes OUT/results.csv (a `step` column: the step each measurement was taken at), OUT/summary.md,
OUT/curves.png, OUT/retrieval.png (the end point) and OUT/config.json; resumes and reruns what a
changed flag affects (`sweep`).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import open_clip
import pandas as pd
import torch
from synthetic_recovery import RecoveryConfig, block_targets, embed, measure
from synthetic_recovery import jobs as recovery_jobs

from identifiability.metrics import r2_scores
from identifiability.verdicts import HELD, NOT_HELD, decide, t_interval
from smartclip.bench import step_flops_per_sample
from smartclip.builtin import prepare_scenes
from smartclip.calibration import aggregated_tokens
from smartclip.checkpoint import atomic_write_text, load_checkpoint
from smartclip.cli import require
from smartclip.data.captions import short_caption
from smartclip.eval import MIN_LATENT_IMAGES, EvalConfig, evaluate_weights
from smartclip.export import EXPORT_WEIGHTS_NAME, default_out, export_open_clip
from smartclip.fit import FitConfig, fit, held_out_batch
from smartclip.reproducible import CPU_PATHS
from smartclip.train import run
from smartclip.train_config import PRESETS as TRAIN_PRESETS
from smartclip.train_config import TrainConfig
from sweep import (
    COLUMNS,
    Job,
    RunContext,
    begin,
    interval,
    markdown_table,
    parse_experiment,
    run_sweep,
)
from synthetic.worlds import World, WorldConfig

OBJECTIVES = ("clip", "longclip", "mulclip", "smartclip")
SYNTHETIC_OBJECTIVES = ("clip", "longclip", "smartclip")  # defined on vectors
RESULT_COLUMNS = [*COLUMNS[:3], "step", *COLUMNS[3:]]
FINETUNE_PRESET = "tiny-smartclip"
# MulCLIP's sub-caption top-k: assumed 16 (its paper is not reachable), at ViT-B/16's patches
ASSUMED_SUB_TOPK = next(f.default for f in fields(TrainConfig) if f.name == "sub_topk")
SUB_TOPK_MODEL = "ViT-B-16"


@dataclass(frozen=True)
class CompareConfig:
    """Every field is a flag."""

    out: str = field(default="runs/compare_objectives", metadata={"help": "output folder"})
    objectives: tuple[str, ...] = field(default=OBJECTIVES, metadata={"help": "objectives"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "fine-tuning seeds"})
    scenes_dir: str = field(default="runs/data/scenes", metadata={"help": "built-in scenes"})
    scenes_images: int = field(default=6000, metadata={"help": "scenes to render"})
    pretrain_epochs: int = field(default=10, metadata={"help": "CLIP pre-training epochs"})
    finetune_epochs: int = field(
        default=4,
        metadata={"help": "fine-tuning epochs, every objective; a curve point per epoch"},
    )
    steps: int | None = field(default=None, metadata={"help": "cap on each run's steps"})
    batch_size: int = field(default=128, metadata={"help": "scenes: batch of every run"})
    pca_components: int | None = field(
        default=None,
        metadata={
            "help": "longclip: principal components of its coarse term (None: the release's "
            "share of the embedding, 1/16: 4 of the tiny towers' 64)"
        },
    )
    sub_topk: int | None = field(
        default=None,
        metadata={
            "help": "mulclip: calibrated patches per sub-caption (None: the assumed 16 of "
            "ViT-B/16's 39 as a share: 5 of the tiny towers' 12)"
        },
    )
    synthetic_worlds: tuple[str, ...] = field(
        default=("custom",), metadata={"help": "synthetic worlds (empty: skip them)"}
    )
    synthetic_steps: int = field(default=5_000, metadata={"help": "steps per synthetic run"})
    synthetic_n_eval: int = field(default=2000, metadata={"help": "synthetic held-out samples"})
    synthetic_curve_points: int = field(
        default=5, metadata={"help": "synthetic: curve points, evenly spaced, the last at the end"}
    )
    workers: int = field(default=2, metadata={"help": "parallel processes"})
    cpu_paths: str = field(
        default="avx2",
        metadata={"help": f"CPU code paths of every run: {' or '.join(CPU_PATHS)} (see fit)"},
    )

    def __post_init__(self) -> None:
        require(self.cpu_paths in CPU_PATHS, "cpu_paths", f"one of {', '.join(CPU_PATHS)}")
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        require(not unknown, "objectives", f"unknown {unknown}; choose from {OBJECTIVES}")
        require(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds", "distinct")
        positive = ("scenes_images", "pretrain_epochs", "finetune_epochs", "synthetic_steps")
        positive += ("synthetic_n_eval", "synthetic_curve_points", "batch_size", "workers")
        for name in positive:
            require(getattr(self, name) >= 1, name, "must be at least 1")
        for name in ("steps", "pca_components", "sub_topk"):
            require(getattr(self, name) is None or getattr(self, name) >= 1, name, "at least 1")
        require(
            round(self.scenes_images * 0.1) >= MIN_LATENT_IMAGES,
            "scenes_images",
            f"the held-out tenth needs {MIN_LATENT_IMAGES} images for the attribute R²: "
            f"at least {10 * MIN_LATENT_IMAGES}",
        )

    def train_settings(self, stage: str, seed: int, pretrained: str | None) -> dict:
        """The trainer's settings of one run, as `TrainConfig` keyword arguments (the job builds
        the config once the pre-trained export exists, and sets its log folder). Fine-tuning
        runs save a checkpoint per epoch (the curve's points) and share every setting but the
        objective, the scaled Long-CLIP and MulCLIP settings included (the module docstring)."""
        base = {**TRAIN_PRESETS["tiny-clip" if stage == "pretrain" else FINETUNE_PRESET]}
        base |= {"scenes_dir": self.scenes_dir, "scenes_images": self.scenes_images, "seed": seed}
        base |= {"save_every_steps": 0, "val_frequency": 0, "steps": self.steps}
        base |= {"batch_size": self.batch_size}
        if stage == "pretrain":
            return {**base, "epochs": self.pretrain_epochs}
        model = base["model"]
        return {
            **base,
            "objective": stage,
            "pretrained": pretrained,
            "epochs": self.finetune_epochs,
            "save_frequency": 1,
            "pca_components": self.pca_components,
            "sub_topk": self.sub_topk or scaled_sub_topk(model),
        }


PRESETS: dict[str, dict] = {
    "quick": {
        "seeds": (0,), "scenes_images": 300, "pretrain_epochs": 2, "finetune_epochs": 2,
        "batch_size": 32, "synthetic_steps": 300, "synthetic_n_eval": 500,
    },
}  # fmt: skip


def patch_count(model: str) -> int:
    """P, the image patches of an open_clip config."""
    vision = open_clip.get_model_config(model)["vision_cfg"]
    return (vision["image_size"] // vision["patch_size"]) ** 2


def scaled_sub_topk(model: str) -> int:
    """MulCLIP's assumed top-k of 16 of ViT-B/16's m = 39 calibrated patches, as that share of
    `model`'s m (`calibration.aggregated_tokens`): max(1, round(16 · m / 39))."""
    reference = aggregated_tokens(patch_count(SUB_TOPK_MODEL))
    return max(1, round(ASSUMED_SUB_TOPK * aggregated_tokens(patch_count(model)) / reference))


# ------------------------------------------------------------------------------------ the scenes


def evaluation_files(scenes: Path, out: Path) -> dict[str, Path]:
    """val captions as two retrieval sets: each scene's long-level caption, and its short
    caption by the release's rule (`short_caption`); written under out/data with absolute
    image paths."""
    rows = list(csv.DictReader((scenes / "val" / "captions.csv").open(newline="")))
    files = {}
    for kind in ("long", "short"):
        path = out / "data" / f"val_{kind}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["filepath", "title", "image_id"])
            for row in rows:
                if row["level"] == "long":
                    text = row["title"] if kind == "long" else short_caption(row["title"])
                    image = (scenes / "val" / row["filepath"]).resolve()
                    writer.writerow([str(image), text, row["image_id"]])
        files[kind] = path
    return files


def curve_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, weights) of each point of a finished run's curve: every epoch checkpoint before the
    last step, exported beside the run (`export-epoch_<n>`), then the run's export."""
    checkpoints = run_dir / "checkpoints"
    last = load_checkpoint(checkpoints / "latest.pt")["progress"]["step"]
    points = []
    for path in sorted(checkpoints.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1])):
        step = load_checkpoint(path)["progress"]["step"]
        if step < last:
            points.append((step, export_open_clip(path, default_out(path))))
    return [*points, (last, run_dir / "export" / EXPORT_WEIGHTS_NAME)]


def measure_export(model: str, weights: str, evaluation: dict[str, str], meta: dict) -> list[dict]:
    """Retrieval with the long and the short captions and the attribute R² of one export."""
    rows = []
    for kind in ("long", "short"):
        eval_cfg = EvalConfig(
            model=model,
            pretrained=(weights,),
            data=evaluation[kind],
            csv_id_key="image_id",
            latents=evaluation["latents"] if kind == "long" else None,
            device="cpu",
        )
        result = evaluate_weights(eval_cfg, weights, torch.device("cpu"), {})
        for name, value in result["retrieval"].items():
            if "_r" in name:
                rows.append(
                    {**meta, "quantity": "retrieval", "block": kind, "subset": name, "value": value}
                )
        for name, value in result.get("latent_r2", {}).items():
            rows.append({**meta, "quantity": "attribute_r2", "block": name, "value": value})
    return rows


def train_and_measure(
    ctx: RunContext, meta: dict, train_settings: dict, evaluation: dict[str, str], curve: bool
) -> list[dict]:
    """One trainer run into the job's log folder, then each point of its curve measured on the
    val scenes (`curve_checkpoints`); without `curve` its export alone, as step 0 (the
    pre-training run: the start of every fine-tuning curve)."""
    cfg = TrainConfig(**train_settings, logs=str(ctx.log_dir.parent), name=ctx.log_dir.name)
    run_dir = run(cfg)
    ctx.progress(1)
    points = (
        curve_checkpoints(run_dir) if curve else [(0, run_dir / "export" / EXPORT_WEIGHTS_NAME)]
    )
    rows = []
    for step, weights in points:
        rows += measure_export(cfg.model, str(weights), evaluation, {**meta, "step": step})
    return rows


def scene_jobs(
    cfg: CompareConfig, stage: str, evaluation: dict[str, str], pretrained: str | None
) -> list[Job]:
    """The pre-training job (`stage` "pretrain") or the fine-tuning jobs of every objective and
    seed."""
    names = ["pretrain"] if stage == "pretrain" else list(cfg.objectives)
    seeds = [0] if stage == "pretrain" else list(cfg.seeds)
    return [
        Job(
            key=f"scenes-{name}-seed{seed}",
            fn=train_and_measure,
            kwargs={
                "meta": {"world": "scenes", "objective": name, "seed": seed},
                "train_settings": cfg.train_settings(name, seed, pretrained),
                "evaluation": evaluation,
                "curve": stage != "pretrain",
            },
            cpu_paths=cfg.cpu_paths,
        )
        for name in names
        for seed in seeds
    ]


# ---------------------------------------------------------------------------- synthetic worlds


def curve_steps(steps: int, points: int) -> list[int]:
    """`points` evenly spaced steps of a `steps`-step run, the last at its end."""
    return sorted({max(1, round(steps * i / points)) for i in range(1, points + 1)})


def synthetic_curve(
    ctx: RunContext,
    meta: dict,
    world_config: WorldConfig,
    fit_config: FitConfig,
    n_eval: int,
    max_subsets: int,
    points: int,
) -> list[dict]:
    """One synthetic run: `synthetic_recovery`'s world, fit and measures at the end, and before
    the end the preserve R² of each block on the same held-out set (`measure`'s) at
    `curve_steps`."""
    world = World(world_config)
    held_out = held_out_batch(world, n_eval, fit_config.seed)
    targets = block_targets(world.config, held_out.z)
    before_end = set(curve_steps(fit_config.steps, points)[:-1])
    rows: list[dict] = []

    def on_step(step: int, terms: dict[str, float], model: torch.nn.Module) -> None:
        if (step + 1) % 100 == 0:
            ctx.progress(100)
        if step + 1 in before_end:
            u = embed(model, held_out.x, held_out.t)["u"]
            for name, value in r2_scores(u, targets).items():
                rows.append(
                    {**meta, "step": step + 1, "quantity": "preserve_r2", "block": name,
                     "value": value}
                )  # fmt: skip

    model = fit(world, fit_config, on_step, ctx.log_dir)
    ctx.progress(fit_config.steps % 100)
    end = measure(world, model, n_eval, max_subsets, fit_config.seed)
    return rows + [{**meta, "step": fit_config.steps, **r} for r in end]


def synthetic_jobs(cfg: CompareConfig) -> list[Job]:
    """`synthetic_recovery`'s jobs for the objectives defined on vectors, run with curves."""
    recovery = RecoveryConfig(
        steps=cfg.synthetic_steps,
        n_eval=cfg.synthetic_n_eval,
        objectives=tuple(o for o in cfg.objectives if o in SYNTHETIC_OBJECTIVES),
        seeds=cfg.seeds,
        worlds=cfg.synthetic_worlds,
        cpu_paths=cfg.cpu_paths,
    )
    return [
        replace(j, fn=synthetic_curve, kwargs={**j.kwargs, "points": cfg.synthetic_curve_points})
        for j in recovery_jobs(recovery)
    ]


# ------------------------------------------------------------------------------------ reporting


@dataclass(frozen=True)
class Metric:
    """A curve's quantity: the rows of `quantity` (and of `block` and `subset` if given),
    reduced per run and step over blocks by `reduce`."""

    label: str
    quantity: str
    block: str | None = None
    subset: str | None = None
    reduce: str = "mean"


METRICS = (
    Metric("long t2i R@1", "retrieval", "long", "t2i_r1"),
    Metric("long i2t R@1", "retrieval", "long", "i2t_r1"),
    Metric("short t2i R@1", "retrieval", "short", "t2i_r1"),
    Metric("short i2t R@1", "retrieval", "short", "i2t_r1"),
    Metric("attribute R²", "attribute_r2"),
    Metric("worst preserve R²", "preserve_r2", reduce="min"),
)
# (A, B, the papers' claim "A above B"), decided on these metrics where both were measured
ORDERINGS = (
    ("longclip", "clip", "Long-CLIP above CLIP"),
    ("smartclip", "longclip", "SmartCLIP above Long-CLIP"),
    ("mulclip", "longclip", "MulCLIP above Long-CLIP"),
)
ORDERING_METRICS = ("long t2i R@1", "long i2t R@1", "worst preserve R²")
RUN = ["world", "objective", "seed"]


def metric_values(results: pd.DataFrame, metric: Metric) -> pd.Series:
    """The metric per (world, objective, seed, step); the pre-training run's value (step 0)
    is also step 0 of every fine-tuning run of its world."""
    r = results.fillna({"block": "", "subset": ""})
    r = r[r.quantity == metric.quantity]
    if metric.block is not None:
        r = r[(r.block == metric.block) & (r.subset == metric.subset)]
    values = r.groupby([*RUN, "step"]).value.agg(metric.reduce).reset_index()
    start = values[values.objective == "pretrain"].drop(columns=["objective", "seed"])
    values = values[values.objective != "pretrain"]
    starts = values[RUN].drop_duplicates().merge(start, on="world")
    return pd.concat([values, starts]).set_index([*RUN, "step"]).value.sort_index()


def curves(results: pd.DataFrame) -> pd.DataFrame:
    """Per (world, objective, step, metric): the mean over seeds, the half-width of its 95 %
    t-interval and the number of seeds."""
    frames = []
    for metric in METRICS:
        values = metric_values(results, metric)
        if values.empty:
            continue
        stats = values.groupby(["world", "objective", "step"]).agg(
            mean=lambda v: t_interval(v.to_numpy())[0],
            half=lambda v: t_interval(v.to_numpy())[1],
            seeds="size",
        )
        frames.append(stats.reset_index().assign(metric=metric.label))
    return pd.concat(frames, ignore_index=True)


def end_point(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last step."""
    last = results.groupby(RUN).step.transform("max")
    return results[results.step == last]


def above(differences: Sequence[float]) -> str:
    """The seed rule on "A above B" from per-seed differences A − B: held when the whole 95 %
    interval of their mean lies above 0, not held when it lies at or below 0 (`decide`'s
    "degraded" claim on B − A < 0)."""
    return decide("degraded", 0.0, [-d for d in differences])


def _shown(differences: pd.Series, verdict: bool = True) -> str:
    """ "+1.000 ± 0.500 (held)": the mean difference, its 95 % t-half-width and `above`."""
    mean, half = t_interval(differences.to_numpy())
    return f"{mean:+.3f} ± {half:.3f}" + (f" ({above(list(differences))})" if verdict else "")


def orderings(results: pd.DataFrame) -> pd.DataFrame:
    """Each of the papers' orderings at the end point, per world and metric (`ORDERINGS`): the
    per-seed differences A − B and their verdict (`above`); where not held, over the curves'
    last interval (the last two points): A's rise and the change of A − B, each with its
    verdict, and whether a budget effect is suggested (the gap closing: held; not closing:
    not held)."""
    rows = []
    for metric in (m for m in METRICS if m.label in ORDERING_METRICS):
        values = metric_values(results, metric).unstack("objective")
        for world, table in values.groupby(level="world"):
            for a, b, claim in ORDERINGS:
                if a not in table or b not in table:
                    continue
                pair = table[[a, b]].dropna().droplevel("world")
                if pair.empty:
                    continue
                steps = sorted(pair.index.get_level_values("step").unique())
                end = pair.xs(steps[-1], level="step")
                gap = end[a] - end[b]
                row = {
                    "world": world, "ordering": claim, "metric": metric.label,
                    "step": steps[-1], "seeds": len(gap), "A − B": _shown(gap, verdict=False),
                    "verdict": above(list(gap)),
                }  # fmt: skip
                if row["verdict"] != HELD and len(steps) > 1:
                    before = pair.xs(steps[-2], level="step")
                    closing = gap - (before[a] - before[b])
                    budget = {HELD: "suggested", NOT_HELD: "not suggested"}
                    row |= {
                        "last interval": f"{steps[-2]} → {steps[-1]}",
                        "A's rise": _shown(end[a] - before[a]),
                        "gap change": _shown(closing),
                        "budget effect": budget.get(above(list(closing)), above(list(closing))),
                    }
                rows.append(row)
    return pd.DataFrame(rows)


def step_times(out: Path, results: pd.DataFrame) -> pd.DataFrame:
    """Per fine-tuning objective on the scenes: the median seconds per step over every logged
    interval of its runs' `train.csv` (rows per step / samples_per_s), its ratio to CLIP's, and
    the analytic worst case of `smartclip.bench` (`step_flops_per_sample` at the run's model,
    context and batch) as a ratio to CLIP's."""
    runs = results[(results.world == "scenes") & (results.objective != "pretrain")]
    seconds: dict[str, list[float]] = {}
    flops = {}
    for objective, run_id in runs[["objective", "run"]].drop_duplicates().itertuples(index=False):
        (log_dir,) = (out / "logs").glob(f"*-{run_id}")
        settings = json.loads((log_dir / "config.json").read_text())
        rows_per_step = settings["batch_size"] * settings["accum_freq"]
        log = pd.read_csv(log_dir / "train.csv")
        seconds.setdefault(objective, []).extend(rows_per_step / log.samples_per_s)
        config = open_clip.get_model_config(settings["model"])
        flops[objective] = {
            o: step_flops_per_sample(config, settings["context_length"], o, rows_per_step)
            for o in ("clip", objective)
        }
    table = pd.DataFrame(
        {
            "s/step (median)": {o: pd.Series(s).median() for o, s in seconds.items()},
            "logged intervals": {o: len(s) for o, s in seconds.items()},
            "bench worst case × CLIP": {o: f[o] / f["clip"] for o, f in flops.items()},
        }
    )
    clip = table["s/step (median)"].get("clip", math.nan)
    table.insert(1, "× CLIP", table["s/step (median)"] / clip)
    return table.reindex(pd.Index([o for o in OBJECTIVES if o in table.index], name="objective"))


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (world, objective): mean ± 95% CI over seeds of the headline quantities."""
    r = results.fillna({"block": "", "subset": ""})
    columns: dict[str, pd.Series] = {}

    def add(label: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        per_seed = frame.groupby(RUN).value.mean()
        columns[label] = per_seed.groupby(["world", "objective"]).apply(interval)

    for kind in ("long", "short"):
        for name in ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5"):
            add(
                f"{kind} {name}",
                r[(r.quantity == "retrieval") & (r.block == kind) & (r.subset == name)],
            )
    add("attribute R²", r[r.quantity == "attribute_r2"])
    for q in ("preserve_r2", "disentangle_in_r2", "disentangle_out_r2"):
        add(q, r[r.quantity == q])
    worst = r[r.quantity == "preserve_r2"].groupby(RUN).value.min()
    if not worst.empty:
        columns["worst preserve_r2"] = worst.groupby(["world", "objective"]).apply(interval)
    return pd.DataFrame(columns)


def curve_table(table: pd.DataFrame) -> pd.DataFrame:
    """`curves` as one row per (world, objective, step), a "mean ± half" column per metric."""
    shown = zip(table["mean"], table.half, strict=True)
    cells = table.assign(cell=[f"{m:.3f} ± {h:.3f}" for m, h in shown])
    return cells.pivot(index=["world", "objective", "step"], columns="metric", values="cell")[
        [m.label for m in METRICS if m.label in set(table.metric)]
    ]


def report(cfg: CompareConfig, results: pd.DataFrame, out: Path) -> str:
    """summary.md: the budget, the end point, the orderings, the curves, the step times."""
    ends = end_point(results)
    finetuned = ends[ends.objective != "pretrain"].groupby("world").step.max()
    budget = ", ".join(f"{world} {steps} steps" for world, steps in finetuned.items())
    pca = f"{cfg.pca_components} components"
    if cfg.pca_components is None:
        pca = "the release's share of the embedding, 1/16 (4 of the tiny towers' 64)"
    topk = cfg.sub_topk or scaled_sub_topk(TRAIN_PRESETS[FINETUNE_PRESET]["model"])
    ordered = orderings(results)
    parts = [
        "# CLIP, Long-CLIP, MulCLIP and SmartCLIP on one budget\n",
        f"Budget: {budget} at the end point, {len(cfg.seeds)} seed(s). The curves end there, at "
        "this run's budget limit, not at a measured plateau (their points lie on one cosine "
        "schedule; the last interval of each ordering that is not held says whether the "
        f"gap still closes there). Scenes: Long-CLIP's coarse PCA keeps {pca}; MulCLIP "
        f"aggregates the top {topk} calibrated patches per sub-caption; the short captions "
        '(training and retrieval) are the text before the first ". ".\n',
        "## End point (mean ± 95 % t-interval over seeds)\n",
        markdown_table(summary(ends)),
        "## The papers' orderings at the end point (the seed rule on A − B, paired by seed)\n",
        markdown_table(ordered) if not ordered.empty else "No ordering's objectives ran.\n",
        "## Learning curves (mean ± 95 % t-interval over seeds; scenes' step 0: the "
        "pre-trained export)\n",
        markdown_table(curve_table(curves(results))),
    ]
    scenes = results[(results.world == "scenes") & (results.objective != "pretrain")]
    if not scenes.empty:
        parts += [
            "## Step time per objective (fine-tuning logs) beside the bench's worst case\n",
            markdown_table(step_times(out, results).round(3)),
        ]
    return "\n".join(parts)


def plot_curves(table: pd.DataFrame, path: Path) -> None:
    """One panel per metric: mean over seeds against steps per (world, objective), the 95 %
    t-interval shaded, a colour per objective."""
    import matplotlib.pyplot as plt

    metrics = [m.label for m in METRICS if m.label in set(table.metric)]
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for (world, objective), line in table[table.metric == metric].groupby(
            ["world", "objective"]
        ):
            line = line.sort_values("step")
            colour = f"C{OBJECTIVES.index(objective)}"
            label = f"{objective} ({world})"
            ax.plot(line.step, line["mean"], marker="o", ms=3, color=colour, label=label)
            low, high = line["mean"] - line.half.fillna(0), line["mean"] + line.half.fillna(0)
            ax.fill_between(line.step, low, high, color=colour, alpha=0.2)
        ax.set_title(metric)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(results: pd.DataFrame, path: Path) -> None:
    """Long- and short-caption text→image R@1 per objective (mean, min-max over seeds)."""
    import matplotlib.pyplot as plt

    r = results[(results.quantity == "retrieval") & (results.subset == "t2i_r1")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, kind in zip(axes, ("long", "short"), strict=True):
        stats = r[r.block == kind].groupby("objective").value.agg(["mean", "min", "max"])
        stats = stats.reindex([o for o in ("pretrain", *OBJECTIVES) if o in stats.index])
        ax.bar(
            stats.index,
            stats["mean"],
            yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
            capsize=3,
        )
        ax.set_title(f"{kind} captions: text→image R@1")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("recall@1 (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_experiment(CompareConfig, argv, PRESETS, __doc__)
    out = Path(cfg.out)
    scenes = prepare_scenes(cfg.scenes_dir, cfg.scenes_images)
    evaluation = {k: str(v) for k, v in evaluation_files(scenes, out).items()}
    evaluation["latents"] = str(scenes / "val" / "latents.npz")
    pretrain = scene_jobs(cfg, "pretrain", evaluation, None)
    pretrained = str(out / "logs" / pretrain[0].name / "export" / EXPORT_WEIGHTS_NAME)  # its job's
    finetune = scene_jobs(cfg, "finetune", evaluation, pretrained)
    synthetic = synthetic_jobs(cfg) if cfg.synthetic_worlds else []
    begin(
        out,
        {"config": asdict(cfg)},
        [*pretrain, *finetune, *synthetic],
        ("results.csv", "summary.md", "curves.png", "retrieval.png"),
    )
    # the synthetic runs fill the second worker while the pre-training runs
    first = run_sweep([*pretrain, *synthetic], out, cfg.workers, "pre-training", RESULT_COLUMNS)
    rest = run_sweep(finetune, out, cfg.workers, "compare_objectives", RESULT_COLUMNS)
    results = pd.concat([first, rest], ignore_index=True)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    atomic_write_text(out / "summary.md", report(cfg, results, out))
    plot_curves(curves(results), out / "curves.png")
    plot(end_point(results), out / "retrieval.png")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(orderings(results).to_string())
    print(f"summary: {out / 'summary.md'}; curves: {out / 'curves.png'}")


if __name__ == "__main__":
    sys.exit(main())
