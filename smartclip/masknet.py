"""SmartCLIP's mask network: which embedding dimensions a caption talks about.

    h = Block(states)                    one CLIP residual attention block, no causal mask
    a = softmax_tokens(w_a · h)          attention pooling with a Linear(W, 1) score per token
    p = sigmoid(W_o Σ_l a_l h_l + b_o)   Linear(W, D) to the joint embedding size
    m = 1[p > ½] + p − sg(p)             hard mask, straight-through gradient (or m = p if soft)

The input is the text tower's token states after its final LayerNorm, all context positions,
detached from the text graph. The synthetic path feeds its text encoder's hidden vector as a
sequence of one token, so both paths run this same module.
"""

from __future__ import annotations

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, threshold: float) -> torch.Tensor:
        return (p > threshold).to(p.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def straight_through_threshold(p: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Forward exactly 1[p > threshold] (0/1 values, no rounding residue), backward the identity
    on p, so the mask's gradient is the sigmoid's."""
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
