"""Contrastive objectives, one class each, shared by the synthetic and full-scale paths.

An objective is called on this rank's `Features` (`local`) and, under DDP, on the features gathered
from all ranks with gradients (`gathered`), with `offset` = index of this rank's first row in the
global batch. Each rank computes its own rows of the global loss; averaging the ranks' gradients
(DDP, with the weight of `smartclip.distributed.local_weight`) gives exactly the gradient of the
single-process loss on the global batch. `OBJECTIVES` maps each name to its class; a class's
`consumes` names the `Features` fields it reads.

Hard negatives (NegCLIP): when `Features.t_neg` holds k negative captions per row, they join the
image→text direction as extra columns (they describe no image, so text→image is unchanged).

Long-caption objectives: `LongCLIPLoss` (fine-grained long captions plus a coarse match of the
short caption with a PCA-reduced image embedding) and `MulCLIPLoss` (global, token-reconstruction
and sub-caption patch alignment) read the further `Features` fields their `consumes` names.
What an objective computes on each rank's own rows before they are gathered (Long-CLIP's
per-rank PCA, as released) is `before_gather`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
import torch.nn.functional as F

from smartclip.calibration import (
    row_mean,
    subcaption_patch_similarity,
    token_reconstruction_loss,
)

SPARSITY_FORMS = ("abs", "mean")
PCA_SCOPES = ("rank", "global")


@dataclass
class Features:
    """What a model hands an objective for a batch of b pairs.

    u: [b, D] unnormalised image embedding; t: [b, D] normalised caption embedding;
    m: [b, D] caption masks (SmartCLIP); t_neg, m_neg: [b, k, D] hard-negative captions of each
    row (normalised) and their masks.
    Long captions: t_short: [b, D] normalised embedding of the short caption (the long caption's
    first sentence); patches: [b, P, D] the image's patch tokens in the joint space; tokens:
    [b, L, D] the caption's token features in the joint space; token_mask: [b, L] True for real
    (non-padding) tokens; subs: [b, S, D] normalised embeddings of the caption's sentences,
    padded; sub_mask: [b, S] True for real sentences; u_coarse: [b, D] Long-CLIP's coarse image
    features of these rows, set by `before_gather`. Masks may be boolean or 0/1 floats (a float
    copy, e.g. for an fp32 loss, keeps its meaning: nonzero is real)."""

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
    u_coarse: torch.Tensor | None = None

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


def _require(objective: object, local: Features) -> None:
    """Raise if a field the objective `consumes` is missing from `local`."""
    missing = sorted(f for f in objective.consumes if getattr(local, f) is None)
    if missing:
        raise ValueError(f"{type(objective).__name__} needs the Features fields {missing}")


def info_nce(
    x_local: torch.Tensor,
    y_local: torch.Tensor,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    logit_scale: torch.Tensor | float,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of both InfoNCE directions between paired embeddings x and y:
    (CE(s·x_local y_allᵀ, target), CE(s·y_local x_allᵀ, target)), `target` = the global index
    of each local row, every cross entropy with `label_smoothing` ε:
    CE_ε(z, i) = −(1 − ε) log softmax(z)_i − ε · mean_j log softmax(z)_j."""
    x2y = F.cross_entropy(logit_scale * x_local @ y_all.T, target, label_smoothing=label_smoothing)
    y2x = F.cross_entropy(logit_scale * y_local @ x_all.T, target, label_smoothing=label_smoothing)
    return x2y, y2x


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
        i2t, t2i = info_nce(u_n, local.t, u_g, texts, logit_scale, _targets(local, offset))
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


def pca_reconstruct(x: torch.Tensor, k: int) -> torch.Tensor:
    """PCA_k(X) = (X − μ) V_k V_kᵀ + μ for the rows of X [n, D]: μ is the mean row and V_k the top
    k right singular vectors of X − μ, so each row is projected onto the batch's top k principal
    components and mapped back to D dimensions (not re-normalised); gradients flow through the SVD.

    The centred rows span at most r = min(n − 1, D) dimensions, so for k ≥ r PCA_k(X) = X exactly
    and X is returned as is (this also covers batches of fewer than k + 1 rows)."""
    if k >= min(x.shape[0] - 1, x.shape[1]):
        return x
    mu = x.mean(0, keepdim=True)
    centred = x - mu
    top = torch.linalg.svd(centred, full_matrices=False).Vh[:k]
    return centred @ top.T @ top + mu


class LongCLIPLoss:
    """Long-CLIP (ECCV 2024): w_fine L_fine + w_coarse L_coarse, every cross entropy with label
    smoothing ε (`info_nce`).

    L_fine = ½ [CE_ε(s·ûₙ tᵀ) + CE_ε(s·t ûₙᵀ)]: CLIP's symmetric InfoNCE between the
    L2-normalised image embedding û and the long caption t.
    L_coarse = ½ [CE_ε(s·C t_shortᵀ) + CE_ε(s·t_short Cᵀ)]: the same between the short caption
    and the coarse image features C = PCA_k(Û) (`pca_reconstruct` of the normalised embeddings,
    not re-normalised, as released).

    `pca_scope` "rank" (the release, `model/model_longclip.py`: `self.PCA(image_features_long,
    32)` before `all_gather`): PCA_k over the rows of each call of `before_gather`, which the
    trainer makes on every micro-batch a rank embeds, before gathering (one GPU's 128 rows in the
    release, which has no accumulation); the gathered C stacks the groups, so the loss depends
    on how the batch is split. One process without `before_gather`: the batch is one group.
    "global": PCA_k over the gathered batch, so each rank's rows are rows of one global loss.
    k = `pca_components`, or if None max(1, round(`pca_share` · D)): the release keeps 32 of
    ViT-B/16's 512 dimensions (and of ViT-L/14's 768), the default share 1/16, so a 16-dim
    synthetic embedding keeps 1 (32 would keep all, making L_coarse a second L_fine).
    Defaults are the release's: w = (1, 1), ε = 0.1, per-rank PCA.
    """

    consumes: ClassVar[frozenset[str]] = frozenset({"u", "t", "t_short"})

    def __init__(
        self,
        fine_weight: float = 1.0,
        coarse_weight: float = 1.0,
        pca_components: int | None = None,
        pca_share: float = 1 / 16,
        pca_scope: str = "rank",
        label_smoothing: float = 0.1,
    ) -> None:
        if pca_components is not None and pca_components < 1:
            raise ValueError(f"pca_components must be at least 1 (or None), got {pca_components}")
        if not 0.0 < pca_share <= 1.0:
            raise ValueError(f"pca_share must lie in (0, 1], got {pca_share}")
        if pca_scope not in PCA_SCOPES:
            raise ValueError(f"pca_scope must be one of {PCA_SCOPES}, got {pca_scope!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
        self.fine_weight, self.coarse_weight = fine_weight, coarse_weight
        self.pca_components, self.pca_share, self.pca_scope = pca_components, pca_share, pca_scope
        self.label_smoothing = label_smoothing

    def components(self, dim: int) -> int:
        """k, the principal components kept of a `dim`-dimensional embedding."""
        if self.pca_components is not None:
            return self.pca_components
        return max(1, round(self.pca_share * dim))

    def coarse(self, u: torch.Tensor) -> torch.Tensor:
        """C = PCA_k of the L2-normalised rows of u [n, D], over exactly these n rows, in fp32 or
        wider (the release casts to fp32 for its SVD, which has no half-precision kernel)."""
        u = F.normalize(u.to(torch.promote_types(u.dtype, torch.float32)), dim=-1)
        return pca_reconstruct(u, self.components(u.shape[-1]))

    def before_gather(self, local: Features) -> Features:
        """This group's rows with `u_coarse` = `coarse(u)` (per-rank PCA); unchanged if global."""
        return (
            local if self.pca_scope == "global" else replace(local, u_coarse=self.coarse(local.u))
        )

    def __call__(
        self,
        local: Features,
        logit_scale: torch.Tensor | float,
        gathered: Features | None = None,
        offset: int = 0,
    ) -> LossOutput:
        _require(self, local)
        glob = _global(local, gathered)
        target, eps = _targets(local, offset), self.label_smoothing
        u_n, u_g = F.normalize(local.u, dim=-1), F.normalize(glob.u, dim=-1)
        fine = sum(info_nce(u_n, local.t, u_g, glob.t, logit_scale, target, eps)) / 2
        if self.pca_scope == "global":
            coarse_all = self.coarse(glob.u)
            coarse_local = coarse_all[offset : offset + local.u.shape[0]]
        elif gathered is None:  # one process: the groups before_gather made, or the batch
            coarse_local = coarse_all = (
                local.u_coarse if local.u_coarse is not None else self.coarse(local.u)
            )
        elif local.u_coarse is None or gathered.u_coarse is None:
            raise ValueError(
                "per-rank PCA: call before_gather on each rank's rows before gathering"
            )
        else:
            coarse_local, coarse_all = local.u_coarse, gathered.u_coarse
        pairs = (coarse_local, local.t_short, coarse_all, glob.t_short)
        coarse = sum(info_nce(*pairs, logit_scale, target, eps)) / 2
        total = self.fine_weight * fine + self.coarse_weight * coarse
        return LossOutput(total, {"fine": fine.detach(), "coarse": coarse.detach()})


class MulCLIPLoss:
    """MulCLIP (arXiv 2512.07128): L_global + λ_W L_word + λ_S L_sub.

    L_global = InfoNCE(û, t) + w_short InfoNCE(û, t_short), each CLIP's symmetric InfoNCE
    ½ [CE(s·ûₙ yᵀ) + CE(s·y ûₙᵀ)] over the global batch, without label smoothing; w_short = 1
    (its reviewers: the long- and short-caption losses are summed).
    L_word (token reconstruction alignment): the mean over this rank's rows of
    `token_reconstruction_loss`, within each pair, so nothing is gathered. The paper's
    equation 6 contrasts a lowercase ṽ that its text never defines; we read it as the calibrated
    patches v′ (V here) contrasted with their reconstructions Ṽ from the tokens, the mirror
    image of the text side.
    L_sub (sub-caption aggregated patch alignment), text→image only: for each real sentence c of
    row i, ℓ_c = CE over the images n of the global batch of s·cos(v̄_{n|c}, t_c) with target i
    (`subcaption_patch_similarity`, top k = `sub_topk`, temperature τ_a); L_sub = the mean over
    this rank's rows of each row's mean ℓ_c over its real sentences. A per-row mean (rather than
    one mean over all sentences of the global batch) is what keeps the DDP contract: a rank
    averages its own rows without knowing how many sentences the other ranks hold.
    τ_a = `attn_temperature`, τ_w = `word_temperature`. ASSUMED, as the paper's text is not
    reachable here: λ_W = λ_S = 1, τ_a = τ_w = 0.1, k = 16. The patches and tokens arrive
    calibrated by the model (`smartclip.calibration`: aggregated into fewer tokens, FineLIP's
    adaptive token refinement) and are only row-normalised here.
    """

    consumes: ClassVar[frozenset[str]] = frozenset(
        {"u", "t", "t_short", "patches", "tokens", "token_mask", "subs", "sub_mask"}
    )

    def __init__(
        self,
        word_weight: float = 1.0,
        sub_weight: float = 1.0,
        attn_temperature: float = 0.1,
        word_temperature: float = 0.1,
        sub_topk: int = 16,
        short_weight: float = 1.0,
    ) -> None:
        if not (attn_temperature > 0 and word_temperature > 0):
            raise ValueError(
                f"temperatures must be positive, got {attn_temperature}, {word_temperature}"
            )
        if sub_topk < 1:
            raise ValueError(f"sub_topk must be at least 1, got {sub_topk}")
        self.word_weight, self.sub_weight, self.short_weight = word_weight, sub_weight, short_weight
        self.attn_temperature, self.word_temperature = attn_temperature, word_temperature
        self.sub_topk = sub_topk

    def __call__(
        self,
        local: Features,
        logit_scale: torch.Tensor | float,
        gathered: Features | None = None,
        offset: int = 0,
    ) -> LossOutput:
        _require(self, local)
        glob = _global(local, gathered)
        target = _targets(local, offset)
        u_n, u_g = F.normalize(local.u, dim=-1), F.normalize(glob.u, dim=-1)
        long = sum(info_nce(u_n, local.t, u_g, glob.t, logit_scale, target)) / 2
        short = sum(info_nce(u_n, local.t_short, u_g, glob.t_short, logit_scale, target)) / 2
        global_ = long + self.short_weight * short
        word = token_reconstruction_loss(
            local.patches,
            local.tokens,
            local.token_mask.bool(),
            self.attn_temperature,
            self.word_temperature,
        ).mean()
        sim = subcaption_patch_similarity(
            local.subs, glob.patches, self.sub_topk, self.attn_temperature
        )
        real = local.sub_mask.bool()
        nll = F.cross_entropy(
            (logit_scale * sim).transpose(1, 2), target[:, None].expand_as(real), reduction="none"
        )
        sub = row_mean(nll, real).mean()
        total = global_ + self.word_weight * word + self.sub_weight * sub
        terms = {"global": global_, "word": word, "sub": sub}
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


OBJECTIVES: dict[str, type] = {
    "smartclip": SmartCLIPLoss,
    "clip": ClipLoss,
    "longclip": LongCLIPLoss,
    "mulclip": MulCLIPLoss,
}


def before_gather(objective: object, local: Features) -> Features:
    """What `objective` computes on each group of rows (a rank's micro-batch) before the
    features are gathered: Long-CLIP's per-rank PCA; other objectives' features unchanged."""
    prepare = getattr(objective, "before_gather", None)
    return local if prepare is None else prepare(local)


def build_objective(
    name: str, **settings: object
) -> ClipLoss | SmartCLIPLoss | LongCLIPLoss | MulCLIPLoss:
    """The objective called `name`, built with the settings its class takes (others ignored)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {tuple(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    params = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in settings.items() if k in params})
