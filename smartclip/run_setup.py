"""`smartclip.train`'s set-up: the model with its locked towers, the data and evaluation set,
the run's length in steps, and the wrappers (DDP, torch.compile) the loop calls.

    steps per epoch = loader batches // accumulation;  total = min(epochs × that, --steps)
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from smartclip import distributed as dist
from smartclip.builtin import prepare_scenes
from smartclip.cli import flag_name
from smartclip.data import (
    EvalSet,
    TextOptions,
    TrainData,
    annotation_options,
    build_eval_set,
    build_train_loader,
    count_long_captions,
)
from smartclip.model import SmartCLIPModel, build_model, preprocess
from smartclip.run_folder import RunError
from smartclip.step import Objective, text_views
from smartclip.train_config import TrainConfig

PROBED_IMAGES = 32  # training images read at start-up: a run whose every one fails stops at once
logger = logging.getLogger(__name__)


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


def probe_images(dataset: torch.utils.data.Dataset) -> None:
    """Read the first few training samples; raise if none of them can be read."""
    n = min(PROBED_IMAGES, len(dataset))
    if n and all(dataset[i] is None for i in range(n)):
        first = dataset.records[0].image
        where = first if isinstance(first, Path) else "the first sample"
        raise RunError(f"none of the first {n} training images can be read (first: {where})")


def seed_everything(seed: int) -> None:
    """Python, numpy and torch generators from one seed: the same initial weights on every rank."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_model(cfg: TrainConfig, objective: Objective, env: dist.DistEnv) -> SmartCLIPModel:
    """The open_clip towers (with the mask network or calibration layers the objective reads),
    their locked towers frozen, on the run's device."""
    try:
        model = build_model(
            cfg.model,
            cfg.pretrained,
            cfg.context_length,
            cfg.keep_positions,
            with_mask="m" in objective.consumes,
            mask_heads=cfg.mask_heads,
            with_calibration="patches" in objective.consumes,
            calibration_share=cfg.calibration_share,
            logit_scale=cfg.logit_scale,
            learn_logit_scale=cfg.learn_logit_scale,
        ).to(env.device)
    except ValueError as err:  # weights that are no weights or do not fit --model
        raise RunError(str(err)) from None
    if cfg.lock_image:
        model.clip.lock_image_tower()
    if cfg.lock_text:
        model.clip.lock_text_tower()
    if cfg.grad_checkpointing:
        model.clip.set_grad_checkpointing()
    return model


def build_data(
    cfg: TrainConfig, env: dist.DistEnv, model: SmartCLIPModel, tokenizer, objective: Objective
) -> tuple[str, TrainData, EvalSet | None]:
    """(training source, training loader, evaluation set on the main rank): --train-data and
    --val-data, or the built-in scenes (their mined negatives with --hard-negatives)."""
    train_source, val_source = cfg.train_data, cfg.val_data
    keys = {"negative_key": cfg.csv_negative_key}
    if train_source is None:
        scenes = prepare_scenes(cfg.scenes_dir, cfg.scenes_images, env.is_main)
        val_source = val_source or str(scenes / "val" / "captions.csv")
        train_source = str(scenes / "train" / "captions.csv")
        if cfg.hard_negatives:  # the mined negatives' file: filepath, caption, negative, ...
            train_source = str(scenes / "train" / "hard_negatives.csv")
            keys = {"negative_key": "negative", "caption_key": "caption"}
    try:
        fmt, options = data_options(cfg, train_source, **keys)
        data = build_train_loader(
            train_source,
            preprocess(model.clip),
            tokenizer,
            batch_size=cfg.batch_size,
            fmt=fmt,
            num_workers=cfg.loader_workers(),
            seed=cfg.seed,
            rank=env.rank,
            world_size=env.world_size,
            text=TextOptions(
                cfg.sentence_sampling,
                cfg.caption_fit,
                text_views(objective),
                cfg.short_caption,
                cfg.max_sentences,
            ),
            resampled=cfg.wds_resampled,
            pin_memory=env.device.type == "cuda",
            **options,
        )
        eval_set = None
        if val_source is not None and env.is_main:
            val_fmt, val_options = data_options(cfg, val_source, cfg.val_split)
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
    return train_source, data, eval_set


@dataclass(frozen=True)
class Plan:
    """The run's length: loader batches per epoch, micro-batches per step, optimizer steps."""

    accum: int
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epoch_samples: int  # images one epoch reads over all ranks


def plan_steps(cfg: TrainConfig, data: TrainData, source: str, world_size: int) -> Plan:
    """Steps per epoch = loader batches // accumulation; total = epochs × that, capped by
    --steps. Refuses data smaller than one step's batch; warns of a warm-up as long as the run."""
    accum = cfg.accumulation(world_size)
    if data.num_samples is None:
        batches_per_epoch = cfg.train_num_samples // (cfg.batch_size * world_size)
    else:
        batches_per_epoch = len(data.loader)
    steps_per_epoch = batches_per_epoch // accum
    if steps_per_epoch < 1:
        per_rank = data.num_samples if data.num_samples is not None else cfg.train_num_samples
        raise RunError(
            f"{source}: {per_rank} training samples per rank, fewer than one step's "
            f"--batch-size × accumulation = {cfg.batch_size} × {accum} = {cfg.batch_size * accum}"
        )
    total_steps = cfg.epochs * steps_per_epoch
    total_steps = min(total_steps, cfg.steps) if cfg.steps else total_steps
    for name in ("warmup", "mask_warmup"):
        if getattr(cfg, name) >= total_steps:
            logger.warning(
                "%s %d is not shorter than the run (%d steps): the learning rate never reaches "
                "its peak and never decays",
                flag_name(name),
                getattr(cfg, name),
                total_steps,
            )
    epoch_samples = batches_per_epoch * cfg.batch_size * world_size
    return Plan(accum, batches_per_epoch, steps_per_epoch, total_steps, epoch_samples)


def wrap(model: SmartCLIPModel, cfg: TrainConfig, env: dist.DistEnv):
    """(the module the loop calls, the DDP wrapper or None): DDP over ranks, torch.compile."""
    ddp = None
    if env.world_size > 1:
        ddp = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    forward = ddp or model
    return (torch.compile(forward) if cfg.torchcompile else forward), ddp
