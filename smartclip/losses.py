"""Contrastive objectives on `[B, D]` embeddings; shared by the synthetic and full-scale paths.

Every loss takes this rank's rows (`*_local`) and, optionally, the features gathered from all ranks
(`*_all`, gathered with gradients) with `offset` = index of this rank's first row in the global
batch. Each rank then computes its own rows of the global loss; averaging the ranks' gradients
(DDP) gives exactly the gradient of the single-process loss on the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_similarity(
    u: torch.Tensor, m: torch.Tensor, t: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """S[i, j] = (u_i ⊙ m_j) · t_j / max(‖u_i ⊙ m_j‖, eps), without materialising B×B×D.

    Numerators U @ (M ⊙ T)ᵀ and squared norms (U ⊙ U) @ (M ⊙ M)ᵀ are two matmuls. `u` is the
    unnormalised image embedding, `m` the caption masks, `t` the L2-normalised text embeddings.
    An all-zero mask gives S = 0 (guarded by eps) instead of NaN.
    """
    num = u @ (m * t).T
    sq_norm = (u * u) @ (m * m).T
    return num * torch.rsqrt(sq_norm.clamp_min(eps * eps))


@dataclass
class Embeddings:
    """What the objectives consume: u unnormalised image, t normalised text, m mask (or None)."""

    u: torch.Tensor
    t: torch.Tensor
    m: torch.Tensor | None = None


@dataclass
class LossOutput:
    """Total loss and its named terms (detached copies are for logging)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def smartclip_loss(
    u: torch.Tensor,
    t: torch.Tensor,
    m: torch.Tensor,
    logit_scale: torch.Tensor | float = 100.0,
    u_all: torch.Tensor | None = None,
    t_all: torch.Tensor | None = None,
    m_all: torch.Tensor | None = None,
    offset: int = 0,
    weights: tuple[float, float, float] = (10.0, 10.0, 2.0),
) -> LossOutput:
    """SmartCLIP's objective: w₁ L_sidm + w₂ L_dism + w₃ mean(m).

    With S from `masked_similarity`, L_sidm = CE over captions j of s·S[i, :] with target i
    (same image, different masks) and L_dism = CE over images i of s·S[:, j] with target j
    (different images, same mask); s is the logit scale. u is unnormalised, t normalised.
    """
    u_g, t_g, m_g = (x if x is not None else y for x, y in ((u_all, u), (t_all, t), (m_all, m)))
    target = torch.arange(u.shape[0], device=u.device) + offset
    rows = logit_scale * masked_similarity(u, m_g, t_g)  # [b, B]: local images × all captions
    gathered = any(x is not None for x in (u_all, t_all, m_all))
    # [B, b]: all images × local captions; the same matrix as `rows` on a single process
    cols = logit_scale * masked_similarity(u_g, m, t) if gathered else rows
    sidm = F.cross_entropy(rows, target)
    dism = F.cross_entropy(cols.T, target)
    sparsity = m.mean()
    w_sidm, w_dism, w_sparse = weights
    total = w_sidm * sidm + w_dism * dism + w_sparse * sparsity
    terms = {"sidm": sidm, "dism": dism, "sparsity": sparsity}
    return LossOutput(total, {k: v.detach() for k, v in terms.items()})


def clip_loss(
    u: torch.Tensor,
    t: torch.Tensor,
    logit_scale: torch.Tensor | float = 100.0,
    u_all: torch.Tensor | None = None,
    t_all: torch.Tensor | None = None,
    offset: int = 0,
) -> LossOutput:
    """Symmetric InfoNCE: ½ [CE(s·û t̂ᵀ, I) + CE(s·t̂ ûᵀ, I)] on L2-normalised embeddings."""
    u_n, t_n = F.normalize(u, dim=-1), F.normalize(t, dim=-1)
    u_g = u_n if u_all is None else F.normalize(u_all, dim=-1)
    t_g = t_n if t_all is None else F.normalize(t_all, dim=-1)
    target = torch.arange(u.shape[0], device=u.device) + offset
    i2t = F.cross_entropy(logit_scale * u_n @ t_g.T, target)
    t2i = F.cross_entropy(logit_scale * t_n @ u_g.T, target)
    total = (i2t + t2i) / 2
    return LossOutput(total, {"i2t": i2t.detach(), "t2i": t2i.detach()})


OBJECTIVES = ("smartclip", "clip")


def objective_loss(
    name: str,
    local: Embeddings,
    logit_scale: torch.Tensor | float,
    gathered: Embeddings | None = None,
    offset: int = 0,
    weights: tuple[float, float, float] = (10.0, 10.0, 2.0),
) -> LossOutput:
    """The named objective on this rank's embeddings (and all ranks', if gathered)."""
    u_all, t_all, m_all = (gathered.u, gathered.t, gathered.m) if gathered else (None,) * 3
    if name == "smartclip":
        if local.m is None:
            raise ValueError("the smartclip objective needs masks: build the model with a MaskNet")
        return smartclip_loss(
            local.u, local.t, local.m, logit_scale, u_all, t_all, m_all, offset, weights
        )
    if name == "clip":
        return clip_loss(local.u, local.t, logit_scale, u_all, t_all, offset)
    raise ValueError(f"unknown objective {name!r}; choose from {OBJECTIVES}")
