"""CLIP, Long-CLIP, MulCLIP and SmartCLIP with the same data, code and budget.

    python experiments/compare_objectives.py           # 3 seeds (about 29 min cold on 2 cores)
    python experiments/compare_objectives.py --quick   # 1 seed, tiny budgets

On the built-in rendered scenes (`smartclip.builtin`): the tiny open_clip towers are first
pre-trained with CLIP's loss (one run, as the papers start from pre-trained CLIP), then
fine-tuned from that export with each objective for one epoch (the `tiny-smartclip` preset's
rates and batch for all, so every objective has the same steps; the long caption is all
sentences of a scene, the short caption its first), for every seed. With these budgets (one
fine-tuning epoch, 5,000 synthetic steps) a cold default run took 26.9 minutes on 2 cores, plus
2 minutes to render the scenes on a fresh clone; MulCLIP's runs dominate (a step costs about
2.2 CLIP steps on the CPU: a text-tower pass per sub-caption, at the batch's longest sentence).
Each export is measured on the held-out scenes:
  retrieval     R@1/5/10 text→image and image→text with long captions (block "long": a scene's
                long-level caption) and short ones (block "short": its first sentence)
  attribute_r2  kernel-ridge R² of scene attributes (colour, size, position, count) from the
                image embedding (`smartclip.eval.SCENE_ATTRIBUTES`)
On the synthetic worlds, where an objective is defined on vectors (CLIP, Long-CLIP's coarse term
on short captions, SmartCLIP; MulCLIP's token and patch terms are not): the preserve and
disentangle R² of `synthetic_recovery`, same settings for all.
Writes OUT/results.csv, OUT/summary.md (mean ± 95% CI over seeds), OUT/retrieval.png and
OUT/config.json; resumes and reruns what a changed flag affects (`sweep`).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from synthetic_recovery import RecoveryConfig
from synthetic_recovery import jobs as recovery_jobs

from smartclip.builtin import prepare_scenes
from smartclip.checkpoint import atomic_write_text
from smartclip.cli import require
from smartclip.data import sentences
from smartclip.eval import MIN_LATENT_IMAGES, EvalConfig, evaluate_weights
from smartclip.export import EXPORT_WEIGHTS_NAME
from smartclip.reproducible import CPU_PATHS
from smartclip.train import run
from smartclip.train_config import PRESETS as TRAIN_PRESETS
from smartclip.train_config import TrainConfig
from sweep import Job, RunContext, begin, interval, markdown_table, parse_experiment, run_sweep

OBJECTIVES = ("clip", "longclip", "mulclip", "smartclip")
SYNTHETIC_OBJECTIVES = ("clip", "longclip", "smartclip")  # defined on vectors


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
        default=1, metadata={"help": "fine-tuning epochs, every objective"}
    )
    steps: int | None = field(default=None, metadata={"help": "cap on each run's steps"})
    batch_size: int = field(default=128, metadata={"help": "scenes: batch of every run"})
    synthetic_worlds: tuple[str, ...] = field(
        default=("custom",), metadata={"help": "synthetic worlds (empty: skip them)"}
    )
    synthetic_steps: int = field(default=5_000, metadata={"help": "steps per synthetic run"})
    synthetic_n_eval: int = field(default=2000, metadata={"help": "synthetic held-out samples"})
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
        positive += ("synthetic_n_eval",)
        for name in (*positive, "batch_size"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.steps is None or self.steps >= 1, "steps", "must be at least 1")
        require(self.workers >= 1, "workers", "must be at least 1")
        require(
            round(self.scenes_images * 0.1) >= MIN_LATENT_IMAGES,
            "scenes_images",
            f"the held-out tenth needs {MIN_LATENT_IMAGES} images for the attribute R²: "
            f"at least {10 * MIN_LATENT_IMAGES}",
        )

    def train_settings(self, stage: str, seed: int, pretrained: str | None) -> dict:
        """The trainer's settings of one run, as `TrainConfig` keyword arguments (the job builds
        the config once the pre-trained export exists, and sets its log folder)."""
        base = {**TRAIN_PRESETS["tiny-clip" if stage == "pretrain" else "tiny-smartclip"]}
        base |= {"scenes_dir": self.scenes_dir, "scenes_images": self.scenes_images, "seed": seed}
        base |= {"save_every_steps": 0, "val_frequency": 0, "steps": self.steps}
        base |= {"batch_size": self.batch_size}
        if stage == "pretrain":
            return {**base, "epochs": self.pretrain_epochs}
        return {
            **base,
            "objective": stage,
            "pretrained": pretrained,
            "epochs": self.finetune_epochs,
        }


PRESETS: dict[str, dict] = {
    "quick": {
        "seeds": (0,), "scenes_images": 300, "pretrain_epochs": 2, "finetune_epochs": 1,
        "batch_size": 32, "synthetic_steps": 300, "synthetic_n_eval": 500,
    },
}  # fmt: skip


# ------------------------------------------------------------------------------------ the scenes


def evaluation_files(scenes: Path, out: Path) -> dict[str, Path]:
    """val captions as two retrieval sets: each scene's long-level caption, and its first
    sentence; written under out/data with absolute image paths."""
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
                    text = row["title"] if kind == "long" else sentences(row["title"])[0]
                    image = (scenes / "val" / row["filepath"]).resolve()
                    writer.writerow([str(image), text, row["image_id"]])
        files[kind] = path
    return files


def train_and_measure(
    ctx: RunContext, meta: dict, train_settings: dict, evaluation: dict[str, str]
) -> list[dict]:
    """One trainer run into the job's log folder, then its export measured on the val scenes."""
    cfg = TrainConfig(**train_settings, logs=str(ctx.log_dir.parent), name=ctx.log_dir.name)
    run_dir = run(cfg)
    ctx.progress(1)
    weights = str(run_dir / "export" / EXPORT_WEIGHTS_NAME)
    device = torch.device("cpu")
    rows = []
    for kind in ("long", "short"):
        eval_cfg = EvalConfig(
            model=cfg.model,
            pretrained=(weights,),
            data=evaluation[kind],
            csv_id_key="image_id",
            latents=evaluation["latents"] if kind == "long" else None,
            device="cpu",
        )
        result = evaluate_weights(eval_cfg, weights, device, {})
        for name, value in result["retrieval"].items():
            if "_r" in name:
                rows.append(
                    {**meta, "quantity": "retrieval", "block": kind, "subset": name, "value": value}
                )
        for name, value in result.get("latent_r2", {}).items():
            rows.append({**meta, "quantity": "attribute_r2", "block": name, "value": value})
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
            },
            cpu_paths=cfg.cpu_paths,
        )
        for name in names
        for seed in seeds
    ]


# ------------------------------------------------------------------------------------ reporting


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (world, objective): mean ± 95% CI over seeds of the headline quantities."""
    r = results.fillna({"block": "", "subset": ""})
    columns: dict[str, pd.Series] = {}

    def add(label: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        per_seed = frame.groupby(["world", "objective", "seed"]).value.mean()
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
    worst = r[r.quantity == "preserve_r2"].groupby(["world", "objective", "seed"]).value.min()
    if not worst.empty:
        columns["worst preserve_r2"] = worst.groupby(["world", "objective"]).apply(interval)
    return pd.DataFrame(columns)


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
    synthetic = []
    if cfg.synthetic_worlds:
        recovery = RecoveryConfig(
            steps=cfg.synthetic_steps,
            n_eval=cfg.synthetic_n_eval,
            objectives=tuple(o for o in cfg.objectives if o in SYNTHETIC_OBJECTIVES),
            seeds=cfg.seeds,
            worlds=cfg.synthetic_worlds,
            cpu_paths=cfg.cpu_paths,
        )
        synthetic = recovery_jobs(recovery)
    begin(
        out,
        {"config": asdict(cfg)},
        [*pretrain, *finetune, *synthetic],
        ("results.csv", "summary.md", "retrieval.png"),
    )
    first = run_sweep(pretrain, out, 1, desc="pre-training")
    rest = run_sweep([*finetune, *synthetic], out, cfg.workers, desc="compare_objectives")
    results = pd.concat([first, rest], ignore_index=True)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    table = summary(results)
    atomic_write_text(out / "summary.md", markdown_table(table))
    plot(results, out / "retrieval.png")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string())
    print(f"table: {out / 'summary.md'}")


if __name__ == "__main__":
    sys.exit(main())
