"""MulCLIP's local level: the calibration of patch and token features and the two terms that
read them (token reconstruction, sub-caption aggregated patches; `losses.MulCLIPLoss`).

Calibration, FineLIP's adaptive token refinement module (ATRM): n tokens X [b, n, D] become m
learned convex combinations of them,

    A = softmax_n(γ · (W₂ GELU(W₁ LN(X)))ᵀ) ∈ [b, m, n],   Y = A X ∈ [b, m, D]

with W₁: D → ⌊0.2 D⌋, W₂: → m, γ a learned scalar from 1, padded tokens weighted 0, and
m = ⌊0.2 P⌋ for P image patches (39 of ViT-B/16's 196), the same m for the image's patches
and the caption's tokens, one module each. Source: FineLIP (arXiv 2504.01916; "retaining 20 %
of the tokens"), its released `model/cross_net.py` (`TokenAggregation`, `dim_ratio` 0.2;
`CrossSparseAggrNet_v2`, m = int(num_patches · aggr_ratio 0.4 · sparse_ratio 0.5), applied by
`forward_dual_aggr`), read in the copy in gaodz-111/my_research (`FineLIP-main/`), as the
snapshot of tiiuae/FineLIP holds only its README. MulCLIP (arXiv 2512.07128) calibrates patch
and token features before its token-level and sub-caption terms; its text is not reachable here
and its reviewers describe the calibration as FineLIP's ATRM, which is what this is. FineLIP
sets the [CLS] and end-of-text tokens beside the aggregated ones; MulCLIP's terms read local
features only ([v_cls, v_loc]), so ours pass on the m aggregated tokens alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CALIBRATION_SHARE = 0.2  # m / P: FineLIP's aggr_ratio 0.4 × sparse_ratio 0.5
HIDDEN_SHARE = 0.2  # W₁'s width / D: FineLIP's dim_ratio


def aggregated_tokens(patches: int, share: float = CALIBRATION_SHARE) -> int:
    """m = max(1, ⌊share · P⌋): the tokens each side is aggregated into, for P image patches."""
    return max(1, int(share * patches))


class TokenAggregation(nn.Module):
    """Y = A X with A = softmax_n(γ · (W₂ GELU(W₁ LN(X)))ᵀ): [b, n, D] → [b, m, D] (module doc)."""

    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        hidden = max(1, int(dim * HIDDEN_SHARE))
        self.weight = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, tokens)
        )
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """The m aggregates of x [b, n, D]; `real` [b, n] (True for real tokens, at least one per
        row) keeps the padding out of every aggregate."""
        logits = (self.scale * self.weight(x)).transpose(1, 2)  # [b, m, n]
        if real is not None:
            logits = logits.masked_fill(~real[:, None, :], float("-inf"))
        return logits.softmax(-1) @ x


class LocalCalibration(nn.Module):
    """One `TokenAggregation` for the image's P patches and one for the caption's tokens, each
    to m = `aggregated_tokens(P, share)` tokens."""

    def __init__(self, dim: int, patches: int, share: float = CALIBRATION_SHARE) -> None:
        super().__init__()
        if not 0.0 < share <= 1.0:
            raise ValueError(f"calibration share must lie in (0, 1], got {share}")
        self.tokens_out = aggregated_tokens(patches, share)
        self.patches = TokenAggregation(dim, self.tokens_out)
        self.tokens = TokenAggregation(dim, self.tokens_out)

    def forward(
        self, patches: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(calibrated patches [b, m, D], calibrated tokens [b, m, D]) from the patches
        [b, P, D] and the tokens [b, L, D] whose real ones `token_mask` [b, L] marks."""
        return self.patches(patches), self.tokens(tokens, token_mask.bool())


def row_mean(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Σ_j real_ij values_ij / Σ_j real_ij: each row's mean over its real entries ([b, n] → [b])."""
    return torch.where(real, values, 0.0).sum(1) / real.sum(1)


def _self_retrieval(
    recon: torch.Tensor, originals: torch.Tensor, real: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per row, mean over real j of −log softmax_{j′ real}(cos(recon_j, originals_j′) / τ)_j: each
    reconstruction must pick out its own original among the row's real entries. recon,
    originals (row-normalised): [b, n, D]; real: [b, n] → [b]."""
    logits = F.normalize(recon, dim=-1) @ originals.transpose(1, 2) / temperature
    logits = logits.masked_fill(~real[:, None, :], float("-inf"))
    return row_mean(-logits.log_softmax(-1).diagonal(dim1=1, dim2=2), real)


def token_reconstruction_loss(
    patches: torch.Tensor,
    tokens: torch.Tensor,
    token_mask: torch.Tensor,
    attn_temperature: float,
    word_temperature: float,
) -> torch.Tensor:
    """MulCLIP's L_word of each pair: L_recon,text + L_recon,image ([b, P, D], [b, L, D], [b, L]
    boolean → [b]).

    With V the row-normalised patches and T the row-normalised real tokens of a pair,
    T̃ = softmax_rows(T Vᵀ / τ_a) V rebuilds each token from the patches and
    Ṽ = softmax_rows(V Tᵀ / τ_a) T each patch from the tokens;
    L_recon,text = mean_j CE_{j′}(cos(T̃_j, T_j′) / τ_w, j) and
    L_recon,image = mean_p CE_{p′}(cos(Ṽ_p, V_p′) / τ_w, p) (`_self_retrieval`). Padded tokens
    take part in neither softmax nor either mean. Every row needs at least one real token."""
    v, t = F.normalize(patches, dim=-1), F.normalize(tokens, dim=-1)
    sim = t @ v.transpose(1, 2) / attn_temperature  # [b, L, P]
    t_rec = sim.softmax(-1) @ v
    v_rec = sim.transpose(1, 2).masked_fill(~token_mask[:, None, :], float("-inf")).softmax(-1) @ t
    every_patch = torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)
    return _self_retrieval(t_rec, t, token_mask, word_temperature) + _self_retrieval(
        v_rec, v, every_patch, word_temperature
    )


def subcaption_patch_similarity(
    subs: torch.Tensor,
    patches: torch.Tensor,
    topk: int,
    attn_temperature: float,
    eps: float = 1e-6,
) -> torch.Tensor:
    """cos(v̄_{n|c}, t_c) for every sentence c of `subs` [b, S, D] and every image n of `patches`
    [B, P, D] → [b, S, B].

    With V_n the row-normalised patches of image n, t̂_c = t_c / ‖t_c‖ and
    a_{n,p} = cos(V_{n,p}, t_c) = V_{n,p} · t̂_c, K = the top min(k, P) patches by a_{n,p},
    w = softmax_{p∈K}(a_{n,p} / τ_a) and v̄_{n|c} = normalise(Σ_{p∈K} w_p V_{n,p}). Computed as
    Σ_p w_p a_{n,p} / √(wᵀ G_n w) with the Gram matrix G_n = V_n V_nᵀ, so no [b, S, B, D] tensor
    is formed."""
    v = F.normalize(patches, dim=-1)
    a = torch.einsum("isd,npd->isnp", F.normalize(subs, dim=-1), v)
    top = a.topk(min(topk, a.shape[-1]), dim=-1).indices
    keep = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, top, True)
    w = (a / attn_temperature).masked_fill(~keep, float("-inf")).softmax(-1)
    sq_norm = torch.einsum("isnp,npq,isnq->isn", w, v @ v.transpose(1, 2), w)
    return (w * a).sum(-1) * torch.rsqrt(sq_norm.clamp_min(eps * eps))
