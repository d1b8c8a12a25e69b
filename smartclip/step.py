"""One optimizer step of `smartclip.train`: the gradient of the global-batch objective,
accumulated over micro-batches and ranks, and the guarded optimizer update.

Accumulation (a micro-batches): the step's micro-batches are first embedded without gradients,
then each is re-embedded with gradients and the loss of the WHOLE accumulated batch is
back-propagated with that micro-batch's rows live (open_clip's feature cache). The summed
gradient is exactly that of one batch of a × batch_size rows, at the price of a second forward.

Each micro-batch's features first pass `losses.before_gather` (Long-CLIP's per-rank PCA, which
the release takes over each GPU's 128 rows before gathering: here over each micro-batch).

Ranks: each rank gathers every rank's features (with gradients, or as constants with
`gather_with_grad=False`) and computes its own rows of the global loss (`local_loss`), scaled by
W·b_r/B, so DDP's averaged gradient equals the single-process gradient on the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from smartclip import distributed as dist
from smartclip.data import Batch
from smartclip.losses import Features, LossOutput, before_gather, build_objective
from smartclip.train_config import TrainConfig

Objective = Callable[..., LossOutput]


def objective_from_config(cfg: TrainConfig) -> Objective:
    """The configured objective with its settings (`TrainConfig.objective_settings`)."""
    return build_objective(cfg.objective, **cfg.objective_settings())


def logit_scale(model: torch.nn.Module, cfg: TrainConfig) -> torch.Tensor | float:
    """s: the fixed --logit-scale, or with --learn-logit-scale the model's learned one (through
    the torch.compile and DDP wrappers)."""
    if not cfg.learn_logit_scale:
        return cfg.logit_scale
    inner = getattr(model, "_orig_mod", model)
    return getattr(inner, "module", inner).logit_scale


def text_views(objective: Objective) -> tuple[str, ...]:
    """The extra caption views (`smartclip.data.TextOptions.views`) an objective reads."""
    fields = {"short": "t_short", "subs": "subs"}
    return tuple(view for view, name in fields.items() if name in objective.consumes)


def _cat(parts: Sequence[Features]) -> Features:
    first = parts[0]
    return Features(
        **{
            name: None
            if getattr(first, name) is None
            else torch.cat([getattr(p, name) for p in parts])
            for name in first.__dataclass_fields__
        }
    )


def rank_loss(
    objective: Objective,
    cfg: TrainConfig,
    local: Features,
    global_rows: int,
    scale: torch.Tensor | float,
) -> tuple[LossOutput, float]:
    """This rank's part of the global-batch objective (in fp32) at logit scale `scale` and its
    DDP weight W·b_r/B."""
    local = local.map(lambda x: x.float() if x.is_floating_point() else x)
    if dist.world_size() == 1:
        return objective(local, scale), 1.0
    gather = dist.gather_with_grad if cfg.gather_with_grad else dist.gather_without_grad
    offset = gather(local.u)[1]
    gathered = local.map(lambda x: gather(x)[0])
    if not cfg.local_loss:
        return objective(gathered, scale), 1.0
    out = objective(local, scale, gathered, offset)
    return out, dist.local_weight(local.u.shape[0], global_rows)


def embed(
    model: Callable[..., Features],
    inputs: Sequence[torch.Tensor | None],
    objective: Objective,
    autocast: Callable[[], AbstractContextManager],
) -> Features:
    """One micro-batch's features (under autocast), then what the objective computes on them
    before the gather (`losses.before_gather`, outside autocast)."""
    with autocast():
        out = model(*inputs)
    return before_gather(objective, out)


@dataclass
class StepResult:
    """Global-batch loss terms (None if the step was skipped), rows trained on, images dropped."""

    losses: dict[str, float] | None
    rows: int
    dropped: int


def forward_backward(
    model: Callable[[torch.Tensor, torch.Tensor], Features],
    ddp: DistributedDataParallel | None,
    batches: Sequence[Batch],
    objective: Objective,
    cfg: TrainConfig,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    autocast: Callable[[], AbstractContextManager],
) -> StepResult:
    """Accumulate the gradient of the objective on the step's micro-batches (all ranks' rows).

    A step where some rank's micro-batch lost every image is skipped on every rank.
    """
    counts = torch.tensor([[len(b.texts), b.n_dropped] for b in batches], device=device)
    counts = dist.all_gather_sizes(counts)  # [W, a, (rows, dropped)]
    dropped, global_rows = int(counts[..., 1].sum()), int(counts[..., 0].sum())
    if (counts[..., 0] == 0).any():
        return StepResult(None, 0, dropped)
    micro = [
        (
            b.images.to(device, non_blocking=True),
            *(None if x is None else x.to(device) for x in b.text_inputs()),
        )
        for b in batches
    ]
    cached = []
    if len(micro) > 1:
        with torch.no_grad():
            cached = [embed(model, inputs, objective, autocast) for inputs in micro]
    for j, inputs in enumerate(micro):
        last = j == len(micro) - 1
        with nullcontext() if ddp is None or last else ddp.no_sync():
            fresh = embed(model, inputs, objective, autocast)
            local = _cat([*cached[:j], fresh, *cached[j + 1 :]]) if cached else fresh
            out, weight = rank_loss(objective, cfg, local, global_rows, logit_scale(model, cfg))
            scaler.scale(out.total * weight).backward()
    values = torch.stack([out.total.detach(), *out.terms.values()]) * weight
    if dist.world_size() > 1:
        torch.distributed.all_reduce(values)
        values /= dist.world_size()
    names = ["loss", *out.terms]
    return StepResult(dict(zip(names, values.tolist(), strict=True)), global_rows, dropped)


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    losses: dict[str, float] | None,
    clip_norm: float | None = None,
) -> bool:
    """Apply the accumulated gradient unless the loss or a gradient is not finite; True if the
    parameters moved. With `clip_norm` the gradient g is first scaled to
    g · min(1, clip_norm / ‖g‖₂) over all parameters (after unscaling under fp16 AMP). With
    fp16 AMP the grad scaler makes the call (it skips steps with inf/NaN gradients and lowers
    its scale); bf16 and fp32 have no scaler, so the loss and the total gradient norm are
    checked here (gradients are identical on every rank after DDP's all-reduce, so every rank
    decides alike)."""
    if losses is None:
        return False
    if clip_norm is not None:
        scaler.unscale_(optimizer)  # a no-op without fp16 AMP
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    if scaler.is_enabled():
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        return scaler.get_scale() >= before and math.isfinite(losses["loss"])
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    finite = math.isfinite(losses["loss"]) and bool(
        torch.stack([g.isfinite().all() for g in grads]).all()
    )
    if finite:
        optimizer.step()
    return finite
