"""What a training run holds and saves: the optimizer, its schedules, the scaler and the
progress counters, restored from a checkpoint or written to one, for weights that pass the
finiteness check only (a diverged model has no checkpoint).

A checkpoint (`smartclip.checkpoint`) holds model, optimizer, scheduler and scaler states,
`progress` (step, epoch, data position, counters, the last validated step), `rng`, `model_name`,
`context_length` and `config` (the run's TrainConfig as a dict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from smartclip import distributed as dist
from smartclip.checkpoint import atomic_save, load_checkpoint, rng_state
from smartclip.data import Batch
from smartclip.model import SmartCLIPModel
from smartclip.optim import cosine_schedules, param_groups
from smartclip.run_folder import RunError, changed_settings
from smartclip.stream import BatchStream
from smartclip.train_config import TrainConfig


@dataclass
class RunState:
    """What the loop advances and a checkpoint holds."""

    model: SmartCLIPModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    progress: dict[str, int] = field(
        default_factory=lambda: {
            "step": 0,
            "epoch": 0,
            "position": 0,
            "seen_images": 0,
            "skipped_images": 0,
            "skipped_steps": 0,
            "nonfinite_steps": 0,
            "truncated_captions": 0,
            "validated_step": -1,
        }  # fmt: skip
    )
    last_good: Path | None = None  # the newest checkpoint that passed the finiteness check
    bad_in_a_row: int = 0  # consecutive steps with a non-finite loss or gradient


def new_state(model: SmartCLIPModel, cfg: TrainConfig, total_steps: int) -> RunState:
    """AdamW over `param_groups` (the backbone at --lr/--wd, the mask network at --mask-lr),
    one cosine schedule per group, and the fp16 grad scaler."""
    groups = param_groups(model, cfg.lr, cfg.wd, cfg.mask_lr, cfg.mask_wd, cfg.wd_skip_gain_bias)
    if not groups:
        raise RunError("nothing to train: every parameter is frozen (--lock-image --lock-text)")
    optimizer = torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    scheduler = cosine_schedules(optimizer, total_steps, cfg.warmup, cfg.mask_warmup)
    device_type = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type, enabled=cfg.precision == "amp")
    return RunState(model, optimizer, scheduler, scaler)


def restore(state: RunState, resume: Path, cfg: TrainConfig) -> dict:
    """Load a checkpoint into `state` after checking it was trained with `cfg`'s settings;
    returns it (its RNG state is restored last, after everything that draws at set-up)."""
    ckpt = load_checkpoint(resume)
    changed = changed_settings(ckpt["config"], cfg)
    if changed:
        raise RunError(f"{resume} was trained with other settings: {'; '.join(changed)}")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    state.progress.update(ckpt["progress"])
    state.last_good = resume
    return ckpt


@torch.no_grad()
def finite_model(model: SmartCLIPModel, batch: Batch, device: torch.device, autocast) -> bool:
    """True if every parameter is finite and so are the unmasked embeddings of `batch` (weights
    of ~1e12 are finite, but their embeddings are not); agreed over ranks; draws no random
    numbers from the training generators."""
    ok = all(bool(p.isfinite().all()) for p in model.parameters())
    if ok and len(batch.texts):
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]), autocast():
            images = model.encode_image(batch.images.to(device))
            texts = model.encode_text(batch.texts.to(device))
        model.train(was_training)
        ok = bool(images.isfinite().all()) and bool(texts.isfinite().all())
    if dist.world_size() > 1:
        flag = torch.tensor(int(ok), device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        ok = bool(flag)
    return ok


def save_checkpoint(
    state: RunState, stream: BatchStream, cfg: TrainConfig, path: Path, healthy: bool
) -> None:
    """Write an exact-resume checkpoint (main rank), or stop the run if the weights are not
    `healthy`: a diverged model has no checkpoint, and the error names the last good one."""
    step = state.progress["step"]
    if not healthy:
        raise RunError(
            f"step {step}: the weights or their embeddings are not finite (the run diverged; "
            f"try a lower --lr or --grad-clip-norm); nothing saved, {last_good(state)}"
        )
    state.progress.update(epoch=stream.epoch, position=stream.position)
    checkpoint = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "progress": dict(state.progress),
        "rng": rng_state(),
        "model_name": cfg.model,
        "context_length": cfg.context_length,
        "config": asdict(cfg),
    }
    if dist.rank() == 0:
        atomic_save(checkpoint, path)
    if path.name == "latest.pt":
        state.last_good = path


def last_good(state: RunState) -> str:
    """Where a stopped run can be resumed from, in words."""
    if state.last_good is None:
        return "no checkpoint was written"
    return f"the last good checkpoint is {state.last_good}"
