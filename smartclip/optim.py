"""Optimisation for `smartclip.train`: parameter groups, AdamW, per-group cosine schedules and
the frozen positional rows of the stretched text context.

The released recipe: AdamW (betas 0.9/0.999, eps 1e-8); the backbone at lr 1e-6 with weight
decay 0.01 on every parameter and a cosine schedule after 200 warm-up steps; the mask network at
lr 1e-3, no weight decay, its own cosine schedule without warm-up; text positions 0-19 frozen.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Multiplier: linear warm-up to 1 over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


NEW_MODULES = ("masknet.", "calibration.")  # parameter names of modules trained from scratch


def param_groups(
    model: nn.Module,
    lr: float,
    wd: float,
    mask_lr: float,
    mask_wd: float,
    wd_skip_gain_bias: bool = False,
) -> list[dict]:
    """AdamW groups named "backbone" (lr, wd), "backbone_no_wd" (lr, no decay: only with
    `wd_skip_gain_bias`, for biases, norm gains, embeddings and what open_clip's
    `no_weight_decay()` names) and "mask" (the modules trained from scratch: the mask network and
    MulCLIP's calibration layers, at mask_lr, mask_wd). Parameters that do not require gradients
    (the fixed logit scale) are left out."""
    clip = getattr(model, "clip", None)
    no_wd_names = {f"clip.{n}" for n in clip.no_weight_decay()} if clip is not None else set()
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_no_wd": [], "mask": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(NEW_MODULES):
            groups["mask"].append(p)
        elif wd_skip_gain_bias and (p.ndim < 2 or name in no_wd_names or "embedding" in name):
            groups["backbone_no_wd"].append(p)
        else:
            groups["backbone"].append(p)
    settings = {"backbone": (lr, wd), "backbone_no_wd": (lr, 0.0), "mask": (mask_lr, mask_wd)}
    return [
        {"params": ps, "lr": settings[n][0], "weight_decay": settings[n][1], "name": n}
        for n, ps in groups.items()
        if ps
    ]


def cosine_schedules(
    optimizer: torch.optim.Optimizer, total: int, warmup: int, mask_warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """One cosine schedule per group: the backbone groups warm up over `warmup` steps, the mask
    network over `mask_warmup` (0 in the recipe), all decaying to 0 at `total`."""
    lambdas = [
        partial(cosine_lr, total=total, warmup=mask_warmup if g["name"] == "mask" else warmup)
        for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def pin_rows(optimizer: torch.optim.Optimizer, param: nn.Parameter, rows: int):
    """Keep rows < `rows` of `param` bitwise at their current values: after every optimizer step
    (gradient and decoupled weight decay included) they are copied back, as Long-CLIP keeps the
    first 20 text positions in a parameter that is never trained. Returns the hook's handle."""
    frozen = param.detach()[:rows].clone()

    def restore(*_: object) -> None:
        with torch.no_grad():
            param[:rows].copy_(frozen)

    return optimizer.register_step_post_hook(restore)
