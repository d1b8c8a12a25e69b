"""SmartCLIP's mask network: which embedding dimensions a caption talks about.

    h = Block(states)                    one CLIP residual attention block, no causal mask
    a = softmax_tokens(w_a · h)          attention pooling with a Linear(W, 1) score per token
    p = sigmoid(W_o Σ_l a_l h_l + b_o)   Linear(W, D) to the joint embedding size
    m = 1[p ≥ ½] + p − sg(p)             hard mask, straight-through gradient (or m = p if soft)

The input is the text tower's token states after its final LayerNorm, all context positions,
detached from the text graph. The synthetic path feeds its text encoder's hidden vector as a
sequence of one token, so both paths run this same module.
"""

from __future__ import annotations

import logging

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

logger = logging.getLogger(__name__)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, threshold: float) -> torch.Tensor:
        return (p >= threshold).to(p.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def straight_through_threshold(p: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Forward exactly 1[p ≥ threshold] (0/1 values, no rounding residue; the release keeps
    p ≥ 0.5), backward the identity on p, so the mask's gradient is the sigmoid's."""
    return _StraightThrough.apply(p, threshold)


class MaskNet(nn.Module):
    """Token states [B, L, W] (or [B, W]) → mask [B, D] in {0, 1} (hard) or (0, 1) (soft)."""

    def __init__(
        self, width: int, embed_dim: int, heads: int = 8, hard: bool = True, detach: bool = True
    ) -> None:
        super().__init__()
        self.block = ResidualAttentionBlock(width, heads)
        self.score = nn.Linear(width, 1)
        self.proj = nn.Linear(width, embed_dim)
        self.hard = hard
        self.detach = detach

    def probabilities(self, states: torch.Tensor) -> torch.Tensor:
        """p = sigmoid(Linear(attention-pooled Block(states)))."""
        if states.dim() == 2:
            states = states[:, None, :]
        if self.detach:
            states = states.detach()
        h = self.block(states)
        weights = torch.softmax(self.score(h), dim=1)
        return torch.sigmoid(self.proj((weights * h).sum(dim=1)))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        p = self.probabilities(states)
        return straight_through_threshold(p) if self.hard else p


class CollapseWatch:
    """Watches the mask-health terms of the smartclip loss (`losses.mask_health`) at logged steps
    and says when the mask has stopped depending on the caption: `mask_varying` = 0 (every
    dimension on for all captions of the batch or off for all) at `patience` consecutive logged
    steps. `update` returns the warning once per collapse (again only after a recovery) and
    logs it through `logging`."""

    def __init__(self, patience: int = 2) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience, self.constant_for, self.warned = patience, 0, False

    def update(self, step: int, terms: dict[str, float]) -> str | None:
        if "mask_varying" not in terms:
            return None
        if terms["mask_varying"] > 0:
            self.constant_for, self.warned = 0, False
            return None
        self.constant_for += 1
        if self.constant_for < self.patience or self.warned:
            return None
        self.warned = True
        message = (
            f"step {step}: the mask no longer depends on the caption (the same "
            f"{terms.get('mask_on', float('nan')):.1f} dimensions on for every caption at "
            f"{self.constant_for} logged steps in a row): SmartCLIP has collapsed to CLIP on a "
            "fixed subspace"
        )
        logger.warning(message)
        return message
