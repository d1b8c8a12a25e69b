"""Train SmartCLIP (or CLIP) on open_clip towers: `python -m smartclip.train [--flag value ...]`.

    min_θ  10·(L_sidm + L_dism) + 2·mean|m|    (`losses.SmartCLIPLoss`; --objective clip: InfoNCE)

The defaults are the released recipe (`smartclip.train_config`; add --pretrained ViT-B-16.pt and
--train-data). Evaluation (image↔text recall@k) uses unmasked embeddings.

With no arguments it renders the built-in scenes (`smartclip.builtin`, cached under
--scenes-dir) and runs CPU presets on them: `tiny-clip` pre-trains "smartclip-tiny" with
CLIP's loss, then `tiny-smartclip` fine-tunes that export with SmartCLIP's recipe (stretched
context, frozen kept positions, separate rates and schedules), as SmartCLIP fine-tunes a
pre-trained CLIP, and `tiny-clip-ft` / `tiny-negclip` fine-tune it with CLIP's loss on the same
budget, without and with the scenes' mined hard negatives; it prints where logs, checkpoints and
the exports went.

Distributed: `torchrun --nproc_per_node N -m smartclip.train -- --flag value ...` (the `--` stops
torchrun reading --logs as its own --logs-specs); see `smartclip.step` for how ranks and
accumulated micro-batches make up the global batch.

Checkpoints (`<logs>/<name>/checkpoints/`, `latest.pt` and `epoch_<n>.pt`) are written atomically
and hold everything an exact resume needs; `--resume latest --name NAME` continues a run bitwise
on the CPU. Training reads images through the model's deterministic evaluation preprocessing, so
the data is a function of (seed, epoch, index) alone. A run that cannot produce a real result
(unreadable data, an empty evaluation set, non-finite losses that persist) stops with status 1
and one line naming the cause, and leaves no export; a run stopped before its first checkpoint
leaves no run folder.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from smartclip import distributed as dist
from smartclip.builtin import prepare_scenes
from smartclip.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from smartclip.cli import flag_name, parse_config
from smartclip.data import (
    TextOptions,
    annotation_options,
    build_eval_set,
    build_train_loader,
    count_long_captions,
)
from smartclip.eval import evaluate_retrieval
from smartclip.export import EXPORT_WEIGHTS_NAME, export_open_clip
from smartclip.masknet import CollapseWatch
from smartclip.model import autocast_context, build_model, preprocess, text_positional_embedding
from smartclip.optim import cosine_schedules, param_groups, pin_rows
from smartclip.runlog import RunLog
from smartclip.step import forward_backward, objective_from_config, optimizer_step, text_views
from smartclip.stream import BatchStream
from smartclip.train_config import DEMO_STAGES, PRESETS, TrainConfig

PROBED_IMAGES = 32  # training images read at start-up: a run whose every one fails stops at once


class RunError(Exception):
    """A run that cannot produce a real result; the message names the cause in one line."""


def data_options(
    cfg: TrainConfig,
    source: str,
    split: str | None = None,
    negative_key: str | None = None,
    caption_key: str | None = None,
) -> tuple[str | None, dict]:
    """(format, loader options) for an annotation source, from the --dataset-type/--csv-* flags
    (the hard-negative column only where asked: the training data; `caption_key` overrides
    --csv-caption-key for files of our own layout)."""
    return annotation_options(
        source,
        cfg.dataset_type,
        img_key=cfg.csv_img_key,
        caption_key=caption_key or cfg.csv_caption_key,
        sep=cfg.csv_separator,
        negative_key=negative_key,
        split=split,
    )


def run_directory(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from). A fresh run may not reuse the name of a run
    that has checkpoints; a folder left by a run that stopped before its first checkpoint is
    replaced."""
    name = cfg.name or time.strftime("%Y_%m_%d-%H_%M_%S") + f"-{cfg.model}-{cfg.objective}"
    run_dir = Path(cfg.logs) / name
    if cfg.resume == "latest":
        resume = run_dir / "checkpoints" / "latest.pt"
        if not resume.is_file():
            raise RunError(f"--resume latest: no checkpoint at {resume}")
        return run_dir, resume
    if cfg.resume is not None:
        return run_dir, Path(cfg.resume)
    if any((run_dir / "checkpoints").glob("*.pt")):
        raise RunError(f"run {run_dir} has checkpoints: pick another --name or --resume latest")
    return run_dir, None


# flags that change how a run is operated, not what it computes: free to differ on resume
OPERATIONAL = (
    "resume", "name", "logs", "workers", "threads", "device", "save_frequency",
    "save_every_steps", "val_frequency", "log_every_n_steps", "steps", "epochs",
)  # fmt: skip


def changed_settings(stored: dict, cfg: TrainConfig) -> list[str]:
    """'--flag: stored → now' for every setting that differs from a checkpoint's config, except
    the OPERATIONAL ones (a resumed run continues the same computation)."""
    stored = json.loads(json.dumps(stored))  # tuples and lists alike on both sides
    now = json.loads(json.dumps(asdict(cfg)))
    return [
        f"{flag_name(k)}: {stored.get(k)!r} → {now[k]!r}"
        for k in now
        if k not in OPERATIONAL and stored.get(k) != now[k]
    ]


def probe_images(dataset: torch.utils.data.Dataset) -> None:
    """Read the first few training samples; raise if none of them can be read."""
    n = min(PROBED_IMAGES, len(dataset))
    if n and all(dataset[i] is None for i in range(n)):
        first = dataset.records[0].image
        where = first if isinstance(first, Path) else "the first sample"
        raise RunError(f"none of the first {n} training images can be read (first: {where})")


@contextmanager
def discarded_on_error(run_dir: Path) -> Iterator[None]:
    """Remove the run folder if the block fails before any checkpoint was written: a run with
    nothing to resume leaves nothing behind (no log that looks like a result, no blocked name)."""
    try:
        yield
    except BaseException:
        if dist.rank() == 0 and not any((run_dir / "checkpoints").glob("*.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def train(cfg: TrainConfig, run_dir: Path, resume: Path | None) -> Path:
    """Run training as configured into `run_dir` (resuming from `resume`); returns `run_dir`."""
    env = dist.init_distributed(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    ckpt_dir = run_dir / "checkpoints"
    accum = cfg.accumulation(env.world_size)
    objective = objective_from_config(cfg)

    # data and model
    train_source, val_source, val_split = cfg.train_data, cfg.val_data, cfg.val_split
    keys = {"negative_key": cfg.csv_negative_key}
    if train_source is None:
        scenes = prepare_scenes(cfg.scenes_dir, cfg.scenes_images, env.is_main)
        val_source = val_source or str(scenes / "val" / "captions.csv")
        train_source = str(scenes / "train" / "captions.csv")
        if cfg.hard_negatives:  # the mined negatives' file: filepath, caption, negative, ...
            train_source = str(scenes / "train" / "hard_negatives.csv")
            keys = {"negative_key": "negative", "caption_key": "caption"}
    try:
        model = build_model(
            cfg.model,
            cfg.pretrained,
            cfg.context_length,
            cfg.keep_positions,
            with_mask="m" in objective.consumes,
            mask_heads=cfg.mask_heads,
            with_calibration="patches" in objective.consumes,
        ).to(env.device)
    except ValueError as err:  # weights that are no weights or do not fit --model
        raise RunError(str(err)) from None
    if cfg.grad_checkpointing:
        model.clip.set_grad_checkpointing()
    tokenizer = open_clip.get_tokenizer(cfg.model, context_length=cfg.context_length)
    transform = preprocess(model.clip)
    try:
        fmt, options = data_options(cfg, train_source, **keys)
        data = build_train_loader(
            train_source,
            transform,
            tokenizer,
            batch_size=cfg.batch_size,
            fmt=fmt,
            num_workers=cfg.workers,
            seed=cfg.seed,
            rank=env.rank,
            world_size=env.world_size,
            text=TextOptions(cfg.sentence_sampling, cfg.caption_fit, text_views(objective)),
            resampled=cfg.wds_resampled,
            pin_memory=env.device.type == "cuda",
            **options,
        )
        eval_set = None
        if val_source is not None and env.is_main:
            val_fmt, val_options = data_options(cfg, val_source, val_split)
            eval_set = build_eval_set(val_source, val_fmt, **val_options)
    except ValueError as err:  # the loaders' word for data they cannot use
        raise RunError(str(err)) from None
    if data.sampler is not None:
        probe_images(data.loader.dataset)
        if env.is_main:
            records = data.loader.dataset.records
            long = count_long_captions(records, tokenizer, cfg.context_length, seed=cfg.seed)
            if long is not None:
                print(f"{long}; --caption-fit {cfg.caption_fit}")
    if data.num_samples is None:
        batches_per_epoch = cfg.train_num_samples // (cfg.batch_size * env.world_size)
    else:
        batches_per_epoch = len(data.loader)
    steps_per_epoch = batches_per_epoch // accum
    if steps_per_epoch < 1:
        raise RunError(f"{train_source}: fewer than batch_size × accumulation samples per rank")
    total_steps = cfg.epochs * steps_per_epoch
    total_steps = min(total_steps, cfg.steps) if cfg.steps else total_steps
    epoch_samples = batches_per_epoch * cfg.batch_size * env.world_size

    # optimisation
    groups = param_groups(model, cfg.lr, cfg.wd, cfg.mask_lr, cfg.mask_wd, cfg.wd_skip_gain_bias)
    optimizer = torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    scheduler = cosine_schedules(optimizer, total_steps, cfg.warmup, cfg.mask_warmup)
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.precision == "amp")
    autocast = autocast_context(cfg.precision, env.device)

    # resume
    progress = {
        "step": 0, "epoch": 0, "position": 0, "seen_images": 0, "skipped_images": 0,
        "skipped_steps": 0, "nonfinite_steps": 0, "truncated_captions": 0,
    }  # fmt: skip
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        changed = changed_settings(ckpt["config"], cfg)
        if changed:
            raise RunError(f"{resume} was trained with other settings: {'; '.join(changed)}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        progress.update(ckpt["progress"])
    if cfg.freeze_kept_positions:
        pin_rows(optimizer, text_positional_embedding(model.clip), cfg.keep_positions)
    ddp = None
    if env.world_size > 1:
        ddp = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    forward = ddp or model
    if cfg.torchcompile:
        forward = torch.compile(forward)
    stream = BatchStream(data, batches_per_epoch, progress["epoch"], progress["position"])
    if ckpt is not None:
        set_rng_state(ckpt["rng"])  # after everything that draws random numbers at setup

    # the run folder exists only once everything above has worked
    if env.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    log = RunLog(run_dir, env.is_main, progress["step"])
    watch = CollapseWatch()

    def checkpoint(path: Path) -> None:
        progress.update(epoch=stream.epoch, position=stream.position)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "progress": dict(progress),
            "rng": rng_state(),
            "model_name": cfg.model,
            "context_length": cfg.context_length,
            "config": asdict(cfg),
        }
        if env.is_main:
            atomic_save(state, path)

    def validate(step: int) -> dict[str, float]:
        metrics = evaluate_retrieval(model, eval_set, tokenizer, transform, env.device, autocast)
        log.write("val", step, metrics)
        tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
        return metrics

    if env.is_main:
        print(
            f"training {cfg.model} ({cfg.objective}) for {total_steps} steps "
            f"({steps_per_epoch}/epoch) on {env.world_size} × {env.device}, batch "
            f"{cfg.batch_size} × {accum} accumulated × {env.world_size} = "
            f"{cfg.batch_size * accum * env.world_size}; logs in {run_dir}"
        )
    with tqdm(total=total_steps, initial=progress["step"], disable=not env.is_main) as pbar:
        metrics: dict[str, float] = {}
        last_eval, bad_in_a_row = -1, 0
        tick, rows_since = time.perf_counter(), 0
        while progress["step"] < total_steps:
            epoch_before = stream.epoch
            batches = [next(stream) for _ in range(accum)]
            optimizer.zero_grad(set_to_none=True)
            result = forward_backward(
                forward, ddp, batches, objective, cfg, env.device, scaler, autocast
            )
            stepped = optimizer_step(optimizer, scaler, result.losses)
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}  # this step's rates
            scheduler.step()
            progress["step"] += 1
            step, rows_since = progress["step"], rows_since + result.rows
            progress["seen_images"] += result.rows + result.dropped
            progress["skipped_images"] += result.dropped
            progress["truncated_captions"] += sum(b.n_truncated for b in batches)
            if result.losses is None:
                progress["skipped_steps"] += 1
            elif not stepped:
                progress["nonfinite_steps"] += 1
            bad_in_a_row = 0 if stepped or result.losses is None else bad_in_a_row + 1
            pbar.update(1)

            seen, skipped = progress["seen_images"], progress["skipped_images"]
            if seen >= min(1000, epoch_samples) and skipped > cfg.max_skipped_share * seen:
                raise RunError(
                    f"{skipped} of the {seen} training images read so far were unreadable, more "
                    f"than --max-skipped-share {cfg.max_skipped_share:g} (see the warnings above)"
                )
            if bad_in_a_row >= cfg.max_nonfinite_steps:
                raise RunError(
                    f"{bad_in_a_row} consecutive steps up to step {step} had a non-finite loss or "
                    f"gradient (--max-nonfinite-steps); the last good checkpoint is "
                    f"{ckpt_dir / 'latest.pt'}"
                )
            logged = step % cfg.log_every_n_steps == 0 or step == total_steps
            if logged and result.losses is not None:  # a skipped step shows in the next row
                elapsed, tick = time.perf_counter() - tick, time.perf_counter()
                values = {
                    "epoch": step / steps_per_epoch,
                    "lr": lrs["backbone"],
                    **({"mask_lr": lrs["mask"]} if "mask" in lrs else {}),
                    **result.losses,
                    "samples_per_s": rows_since / elapsed,
                    "skipped_images": skipped + data.n_malformed,
                    "skipped_steps": progress["skipped_steps"],
                    "nonfinite_steps": progress["nonfinite_steps"],
                    "truncated_captions": progress["truncated_captions"],
                }
                rows_since = 0
                log.write("train", step, values)
                pbar.set_postfix(loss=f"{values['loss']:.3f}")
                warning = watch.update(step, result.losses) if env.is_main else None
                if warning:
                    tqdm.write(f"WARNING: {warning}")
            if stream.epoch > epoch_before:
                finished = stream.epoch
                if eval_set is not None and cfg.val_frequency and finished % cfg.val_frequency == 0:
                    metrics, last_eval = validate(step), step
                if cfg.save_frequency and finished % cfg.save_frequency == 0:
                    checkpoint(ckpt_dir / f"epoch_{finished}.pt")
            if (cfg.save_every_steps and step % cfg.save_every_steps == 0) or step == total_steps:
                checkpoint(ckpt_dir / "latest.pt")

    if eval_set is not None and last_eval != progress["step"]:
        metrics = validate(progress["step"])
    export = run_dir / "export" / EXPORT_WEIGHTS_NAME
    if env.is_main:
        export_open_clip(ckpt_dir / "latest.pt", export.parent)
        print(
            f"run:          {run_dir}\n"
            f"checkpoints:  {ckpt_dir} (resume: --name {run_dir.name} --resume latest; "
            "export any: python -m smartclip.export --checkpoint PATH)\n"
            f"logs:         {run_dir / 'train.csv'}, {run_dir / 'val.csv'}, "
            f"tensorboard --logdir {run_dir / 'tensorboard'}\n"
            f"open_clip:    {export} (open_clip.create_model('{cfg.model}', pretrained=PATH, "
            f"force_context_length={cfg.context_length}))"
        )
        if metrics:
            print("retrieval:    " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
    log.close()
    dist.barrier()
    dist.cleanup()
    return run_dir


def run(cfg: TrainConfig) -> Path:
    """`train` in its run folder, turning a `RunError` into one line on stderr and exit status 1;
    a run that stops before its first checkpoint leaves no folder."""
    try:
        run_dir, resume = run_directory(cfg)
        with discarded_on_error(run_dir):
            return train(cfg, run_dir, resume)
    except RunError as err:
        dist.cleanup()
        print(f"smartclip.train: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def demo() -> Path:
    """The no-argument run: preset tiny-clip, then from its open_clip export each stage of
    DEMO_STAGES (SmartCLIP, CLIP, CLIP with mined hard negatives: the same budget); returns
    the SmartCLIP run."""
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    stage1 = run(TrainConfig(**PRESETS["tiny-clip"], name=f"{stamp}-tiny-clip"))
    pretrained = str(stage1 / "export" / EXPORT_WEIGHTS_NAME)
    runs = [
        run(TrainConfig(**PRESETS[stage], pretrained=pretrained, name=f"{stamp}-{stage}"))
        for stage in DEMO_STAGES
    ]
    return runs[0]


def main(argv: Sequence[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        return demo()
    cfg = parse_config(
        TrainConfig,
        argv,
        presets=PRESETS,
        prog="python -m smartclip.train",
        description=__doc__.split("\n\n")[0],
    )
    return run(cfg)


if __name__ == "__main__":
    main()
