"""Contrastive objectives, one class each, shared by the synthetic and full-scale paths.

An objective is called on this rank's `Features` (`local`) and, under DDP, on the features gathered
from all ranks with gradients (`gathered`), with `offset` = index of this rank's first row in the
global batch. Each rank computes its own rows of the global loss; averaging the ranks' gradients
(DDP, with the weight of `smartclip.distributed.local_weight`) gives exactly the gradient of the
single-process loss on the global batch. `OBJECTIVES` maps each name to its class; a class's
`consumes` names the `Features` fields it reads.

Hard negatives (NegCLIP): when `Features.t_neg` holds k negative captions per row, they join the
image→text direction as extra columns (they describe no image, so text→image is unchanged).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F

SPARSITY_FORMS = ("abs", "mean")


@dataclass
class Features:
    """What a model hands an objective for a batch of b pairs.

    u: [b, D] unnormalised image embedding; t: [b, D] normalised caption embedding;
    m: [b, D] caption masks (SmartCLIP); t_neg, m_neg: [b, k, D] hard-negative captions of each
    row (normalised) and their masks."""

    u: torch.Tensor
    t: torch.Tensor
    m: torch.Tensor | None = None
    t_neg: torch.Tensor | None = None
    m_neg: torch.Tensor | None = None
    t_short: torch.Tensor | None = None
    patches: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    subs: torch.Tensor | None = None
    sub_mask: torch.Tensor | None = None

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Features:
        """The same features with `fn` applied to every tensor that is present."""
        return type(self)(
            **{
                f.name: None if (x := getattr(self, f.name)) is None else fn(x)
                for f in fields(self)
            }
        )


@dataclass
class LossOutput:
    """Total loss and its named terms (detached, for logging)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def masked_similarity(
    u: torch.Tensor, m: torch.Tensor, t: torch.Tensor, floor: float = 1.0, eps: float = 1e-6
) -> torch.Tensor:
    """S[i, j] = (u_i ⊙ m_j) · t_j / max(‖u_i ⊙ m_j‖, floor · ‖u_i‖ / √D), without B×B×D tensors.

    Numerators U (M ⊙ T)ᵀ and squared norms (U ⊙ U)(M ⊙ M)ᵀ are two matmuls. `u` is the
    unnormalised image embedding, `m` the caption masks, `t` the normalised text embeddings.

    The floor decides what a (near-)empty mask contributes. Where the selected dimensions hold
    at least one average dimension's share of ‖u_i‖² (‖u_i ⊙ m_j‖² ≥ ‖u_i‖²/D at floor 1), S is
    the released formula. Below that S shrinks continuously to 0 at an all-zero mask, instead of
    jumping from a unit-norm direction to 0, and its straight-through gradient is bounded:
    |∂S_ij/∂m_jd| = |u_id t_jd| √D / (floor ‖u_i‖) ≤ √D |t_jd| / floor, the size of the true
    change from switching one typical dimension on. `floor=0` is the bare guard max(‖·‖, eps),
    whose gradient at an empty mask is u_id t_jd / eps (about 1e6 ×).
    """
    num = u @ (m * t).T
    sq_norm = (u * u) @ (m * m).T
    lower = (floor * floor / u.shape[-1]) * (u * u).sum(-1, keepdim=True)
    return num * torch.rsqrt(torch.maximum(sq_norm, lower).clamp_min(eps * eps))


def _global(local: Features, gathered: Features | None) -> Features:
    return local if gathered is None else gathered


def _targets(local: Features, offset: int) -> torch.Tensor:
    return torch.arange(local.u.shape[0], device=local.u.device) + offset


def mask_health(m: torch.Tensor) -> dict[str, torch.Tensor]:
    """mask_on: mean number of dimensions on per caption; mask_varying: how many dimensions
    are on for some captions of the batch and off for others (0 = the mask ignores the caption)."""
    hard = m.detach() > 0.5
    varying = (hard.any(0) & ~hard.all(0)).sum()
    return {"mask_on": m.detach().sum(1).mean(), "mask_varying": varying.to(m.dtype)}


class ClipLoss:
    """Symmetric InfoNCE: ½ [CE(s·ûₙ tₙᵀ, I) + CE(s·tₙ ûₙᵀ, I)] on L2-normalised embeddings; hard
    negatives add columns s·ûₙ t_negᵀ to the image→text rows."""

    consumes: ClassVar[frozenset[str]] = frozenset({"u", "t"})

    def __call__(
        self,
        local: Features,
        logit_scale: torch.Tensor | float,
        gathered: Features | None = None,
        offset: int = 0,
    ) -> LossOutput:
        glob = _global(local, gathered)
        u_n, u_g = F.normalize(local.u, dim=-1), F.normalize(glob.u, dim=-1)
        texts = glob.t if glob.t_neg is None else torch.cat([glob.t, glob.t_neg.flatten(0, 1)])
        target = _targets(local, offset)
        i2t = F.cross_entropy(logit_scale * u_n @ texts.T, target)
        t2i = F.cross_entropy(logit_scale * local.t @ u_g.T, target)
        return LossOutput((i2t + t2i) / 2, {"i2t": i2t.detach(), "t2i": t2i.detach()})


class SmartCLIPLoss:
    """SmartCLIP: w₁ L_sidm + w₂ L_dism + w₃ L_sparsity with S from `masked_similarity`.

    L_sidm = CE over captions j of s·S[i, :] with target i (same image, different masks);
    L_dism = CE over images i of s·S[:, j] with target j (different images, same mask);
    L_sparsity = mean |m| (the release's form: with the hard straight-through mask its gradient
    is zero on entries that are off, so only entries that are on are pushed down) or, with
    `sparsity="mean"`, mean m (which also pushes every off entry further off).
    Hard negatives (each with its own mask) add columns to L_sidm's rows.
    """

    consumes: ClassVar[frozenset[str]] = frozenset({"u", "t", "m"})

    def __init__(
        self,
        weights: tuple[float, float, float] = (10.0, 10.0, 2.0),
        sparsity: str = "abs",
        norm_floor: float = 1.0,
    ) -> None:
        if len(weights) != 3:
            raise ValueError(
                f"smartclip needs 3 loss weights (sidm, dism, sparsity), got {weights}"
            )
        if sparsity not in SPARSITY_FORMS:
            raise ValueError(f"sparsity must be one of {SPARSITY_FORMS}, got {sparsity!r}")
        if not norm_floor >= 0 or math.isinf(norm_floor):
            raise ValueError(f"norm_floor must be finite and non-negative, got {norm_floor}")
        self.weights, self.sparsity, self.norm_floor = tuple(weights), sparsity, norm_floor

    def __call__(
        self,
        local: Features,
        logit_scale: torch.Tensor | float,
        gathered: Features | None = None,
        offset: int = 0,
    ) -> LossOutput:
        if local.m is None:
            raise ValueError("the smartclip objective needs masks: build the model with a MaskNet")
        glob = _global(local, gathered)
        target = _targets(local, offset)
        texts, masks = glob.t, glob.m
        if glob.t_neg is not None:
            texts = torch.cat([texts, glob.t_neg.flatten(0, 1)])
            masks = torch.cat([masks, glob.m_neg.flatten(0, 1)])
        floor = self.norm_floor
        rows = logit_scale * masked_similarity(local.u, masks, texts, floor)  # local images × all
        if gathered is None:  # one process: the same matrix, its first B columns
            cols = rows[:, : local.u.shape[0]]
        else:  # all images × local captions
            cols = logit_scale * masked_similarity(glob.u, local.m, local.t, floor)
        sidm = F.cross_entropy(rows, target)
        dism = F.cross_entropy(cols.T, target)
        sparsity = local.m.abs().mean() if self.sparsity == "abs" else local.m.mean()
        w_sidm, w_dism, w_sparse = self.weights
        total = w_sidm * sidm + w_dism * dism + w_sparse * sparsity
        terms = {"sidm": sidm, "dism": dism, "sparsity": sparsity}
        return LossOutput(
            total, {**{k: v.detach() for k, v in terms.items()}, **mask_health(glob.m)}
        )


OBJECTIVES: dict[str, type] = {"smartclip": SmartCLIPLoss, "clip": ClipLoss}


def build_objective(name: str, **settings: object) -> ClipLoss | SmartCLIPLoss:
    """The objective called `name`, built with the settings its class takes (others ignored)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {tuple(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    params = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in settings.items() if k in params})
