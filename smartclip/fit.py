"""Fit a small SmartCLIP or CLIP model on a synthetic world: fresh samples every step.

θ ← Adam(θ, clip(∇_θ L(f_θ(x), g_θ(t))))  with a cosine learning-rate decay after a linear warm-up,
clip(g) = g · min(1, c / (‖g‖₂ + 1e-6)) for a clip norm c (`grad_clip_norm`; off by default)

Every purpose draws from its own stream (`synthetic.seeding`): the model's initial weights from
("init"), step s's batch from ("train", s); evaluation code uses ("eval", ...), so no number of
steps makes a training batch coincide with an evaluation set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from smartclip.cli import require
from smartclip.encoders import TEXT_ENCODERS, SyntheticCLIP
from smartclip.losses import OBJECTIVES, SPARSITY_FORMS, LossOutput, build_objective
from smartclip.masknet import CollapseWatch
from smartclip.optim import cosine_lr
from smartclip.reproducible import CPU_PATHS, check
from smartclip.runlog import RunLog
from synthetic.continuous_tokens import ContinuousTokenWorld
from synthetic.seeding import seed_for, stream
from synthetic.token_operators import COMPOSE, IN_VOCABULARY, negatives, parse_composition
from synthetic.tokens import OPERATORS, TokenBatch, TokenWorld
from synthetic.worlds import Batch, World

AnyWorld = World | TokenWorld | ContinuousTokenWorld
Objective = Callable[..., LossOutput]


def _is_operator_name(name: str) -> bool:
    """Whether `name` names a composition of the primitives or an in-vocabulary operator
    (`synthetic.token_operators`)."""
    if name in IN_VOCABULARY:
        return True
    try:
        parse_composition(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TrainSettings:
    """Model and optimisation settings shared by every synthetic run of a sweep.

    The loss is the released recipe's: logit scale 100, weights 10/10/2, the sparsity mean|m|;
    the empty-mask norm floor is ours (`losses.masked_similarity`). With the bare eps guard and
    the sparsity mean(m), the mask network collapsed on two of four worlds at these values (logit
    scale 30 with sparsity weight 1 was used instead); with both changes 11 of the 12 runs of
    `--preset paper` train normally and one still collapses (docs/synthetic_identifiability.md,
    "The mask collapse")."""

    steps: int = 10_000
    batch_size: int = 512
    lr: float = 2e-3
    warmup: int = 200
    embed_dim: int = 16
    hidden: int = 128
    depth: int = 3
    text_width: int = 64
    logit_scale: float = 100.0
    learn_logit_scale: bool = False
    loss_weights: tuple[float, float, float] = (10.0, 10.0, 2.0)
    sparsity: str = "abs"
    mask_norm_floor: float = 1.0
    mask_hard: bool = True
    mask_detach: bool = True
    log_every: int = 100
    text_encoder: str = "mlp"
    hard_negatives: tuple[str, ...] = ()
    negative_k: int = 1
    grad_clip_norm: float | None = field(
        default=None,
        metadata={
            "help": "clip the total gradient norm to this before each step (none: no clipping, "
            "as the release)"
        },
    )
    pca_share: float = field(
        default=1 / 16,
        metadata={
            "help": "longclip: principal components kept as a share of the embedding (the "
            "release's 32 of 512; 1 of the default 16)"
        },
    )
    cpu_paths: str = field(
        default="avx2",
        metadata={
            "help": "CPU code paths of the computing processes: avx2 (the same numbers on any "
            "x86-64 machine with AVX2, set before torch loads) or native (this CPU's own, not "
            "portable); see smartclip.reproducible"
        },
    )

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "embed_dim",
            "hidden",
            "depth",
            "text_width",
            "log_every",
        )
        for name in positive:
            require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        require(self.warmup >= 0, "warmup", f"must be non-negative, got {self.warmup}")
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.logit_scale > 0, "logit_scale", f"must be positive, got {self.logit_scale}")
        require(len(self.loss_weights) == 3, "loss_weights", "needs 3 values: sidm,dism,sparsity")
        require(self.sparsity in SPARSITY_FORMS, "sparsity", f"choose one of {SPARSITY_FORMS}")
        require(self.mask_norm_floor >= 0, "mask_norm_floor", "must be non-negative")
        require(self.text_encoder in TEXT_ENCODERS, "text_encoder", f"one of {TEXT_ENCODERS}")
        unknown = [n for n in self.hard_negatives if not _is_operator_name(n)]
        require(
            not unknown,
            "hard_negatives",
            f"unknown {unknown}; give primitives {OPERATORS}, compositions such as "
            f"swap^2{COMPOSE}add, or in-vocabulary operators {IN_VOCABULARY}",
        )
        require(self.negative_k >= 1, "negative_k", "must be at least 1")
        require(0 < self.pca_share <= 1, "pca_share", f"must lie in (0, 1], got {self.pca_share}")
        require(
            self.negative_k == 1 or set(self.hard_negatives) <= set(OPERATORS),
            "negative_k",
            "applies bare primitives k times; write a composition's powers in its name",
        )
        require(self.cpu_paths in CPU_PATHS, "cpu_paths", f"choose one of {', '.join(CPU_PATHS)}")
        clip = self.grad_clip_norm
        require(
            clip is None or (math.isfinite(clip) and clip > 0),
            "grad_clip_norm",
            f"must be positive and finite (or none for no clipping), got {clip}",
        )

    def settings(self) -> dict:
        """The TrainSettings fields of this config (for building a FitConfig from a sweep's)."""
        return {f.name: getattr(self, f.name) for f in fields(TrainSettings)}


@dataclass(frozen=True)
class FitConfig(TrainSettings):
    """One run: shared settings plus the objective and the seed of model and data."""

    objective: str = "smartclip"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.objective in OBJECTIVES,
            "objective",
            f"unknown objective {self.objective!r}; choose from {', '.join(OBJECTIVES)}",
        )


def objective_for(cfg: FitConfig) -> Objective:
    """The configured objective with the settings a synthetic run gives it (loss weights,
    sparsity form, norm floor, Long-CLIP's share of principal components)."""
    return build_objective(
        cfg.objective,
        weights=cfg.loss_weights,
        sparsity=cfg.sparsity,
        norm_floor=cfg.mask_norm_floor,
        pca_share=cfg.pca_share,
    )


def build_model(world: AnyWorld, cfg: FitConfig) -> SyntheticCLIP:
    """A fresh model, its weights drawn from the stream (cfg.seed, "init")."""
    torch.manual_seed(seed_for(cfg.seed, "init"))
    return SyntheticCLIP(
        world.x_dim,
        world.text_input,
        embed_dim=cfg.embed_dim,
        hidden=cfg.hidden,
        depth=cfg.depth,
        text_width=cfg.text_width,
        with_mask="m" in OBJECTIVES[cfg.objective].consumes,
        mask_hard=cfg.mask_hard,
        mask_detach=cfg.mask_detach,
        logit_scale=cfg.logit_scale,
        learn_logit_scale=cfg.learn_logit_scale,
        text_encoder=cfg.text_encoder,
    )


def training_batch(world: AnyWorld, cfg: FitConfig, step: int) -> Batch | TokenBatch:
    """The batch of training step `step`: `cfg.batch_size` samples from stream (seed, "train",
    step). With `cfg.hard_negatives` N, every caption also gets one mined hard negative,
    NegCLIP-style: a name drawn uniformly from N and applied to the caption's scene
    (`token_operators.negatives`), a bare primitive `cfg.negative_k` times (as primitive^k, which
    draws what `TokenWorld.apply_operator` draws), a composition or an in-vocabulary operator as
    named (worlds with composition operators only; the world must admit every name)."""
    gen = stream(cfg.seed, "train", step)
    batch = world.sample(cfg.batch_size, gen)
    if cfg.hard_negatives:
        if not isinstance(world, TokenWorld):
            raise ValueError("hard negatives need a world with composition operators")
        pick = torch.randint(len(cfg.hard_negatives), (cfg.batch_size,), generator=gen)
        k = cfg.negative_k
        names = [
            f"{name}^{k}" if k > 1 else name
            for name in (cfg.hard_negatives[i] for i in pick.tolist())
        ]
        mined = negatives(world, batch.scenes, names, gen)
        batch.t_neg = world.negative_captions(batch, [[s] for s in mined])
    return batch


def held_out_batch(
    world: AnyWorld, n: int, seed: int, index: int = 0, mask: tuple[int, ...] | None = None
) -> Batch | TokenBatch:
    """Evaluation set `index` of run `seed`: n samples from stream (seed, "eval", index), with
    every caption fixed to `mask` if given; never a training batch (`training_batch`)."""
    gen = stream(seed, "eval", index)
    return world.sample(n, gen) if mask is None else world.sample(n, gen, mask)


def clip_gradients(params: Sequence[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The total gradient norm ‖g‖₂ over `params` (their gradients viewed as one vector), taken
    before clipping; with `max_norm` = c the gradients are scaled in place by
    min(1, c / (‖g‖₂ + 1e-6)) (`torch.nn.utils.clip_grad_norm_`), without it they are untouched."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def fit(
    world: AnyWorld,
    cfg: FitConfig,
    on_step: Callable[[int, dict[str, float], SyntheticCLIP], None] | None = None,
    log_dir: Path | None = None,
) -> SyntheticCLIP:
    """Train a fresh model for cfg.steps; `on_step(step, losses, model)` runs after every step.

    With `log_dir`, every `cfg.log_every` steps the loss terms, the learning rate, the gradient
    norm before clipping (`grad_norm`, `clip_gradients`) and the mask's health
    (`losses.mask_health`) go to `log_dir/train.csv` and TensorBoard, and a warning is logged
    when the mask stops depending on the caption (`masknet.CollapseWatch`). Refuses to start in
    a process that does not compute on `cfg.cpu_paths` (`smartclip.reproducible.check`)."""
    check(cfg.cpu_paths)
    model = build_model(world, cfg)
    objective = objective_for(cfg)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup))
    log = RunLog(log_dir) if log_dir is not None else None
    watch = CollapseWatch()
    for step in range(cfg.steps):
        batch = training_batch(world, cfg, step)
        t_short = batch.t_short if "t_short" in objective.consumes else None
        out = objective(model(batch.x, batch.t, batch.t_neg, t_short), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        grad_norm = clip_gradients(params, cfg.grad_clip_norm)
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        terms = {"loss": out.total.item(), **{k: v.item() for k, v in out.terms.items()}}
        if log is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            log.write("train", step + 1, {**terms, "lr": lr, "grad_norm": grad_norm.item()})
            watch.update(step + 1, terms)
        if on_step is not None:
            on_step(step, terms, model)
    if log is not None:
        log.close()
    return model
