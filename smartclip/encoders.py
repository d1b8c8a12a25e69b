"""Small MLP towers for synthetic worlds: an image encoder and a text encoder with a mask network.

u = f_I(x)                              unnormalised image embedding, [B, D]
h = LayerNorm(f_T(t)),  t̂ = W h / ‖W h‖  text states [B, W] and normalised embedding [B, D]
m = MaskNet(h)                          SmartCLIP only
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smartclip.losses import Features
from smartclip.masknet import MaskNet


def mlp(sizes: list[int], slope: float = 0.2) -> nn.Sequential:
    """Linear layers of the given sizes with LeakyReLU(slope) between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class SyntheticCLIP(nn.Module):
    """Two MLP towers, an optional mask network and a (fixed or learnable) logit scale."""

    def __init__(
        self,
        x_dim: int,
        t_dim: int,
        embed_dim: int = 16,
        hidden: int = 128,
        depth: int = 3,
        text_width: int = 64,
        mask_heads: int = 4,
        with_mask: bool = True,
        mask_hard: bool = True,
        mask_detach: bool = True,
        logit_scale: float = 10.0,
        learn_logit_scale: bool = False,
    ) -> None:
        super().__init__()
        self.image = mlp([x_dim, *[hidden] * depth, embed_dim])
        self.text = nn.Sequential(
            mlp([t_dim, *[hidden] * depth, text_width]), nn.LayerNorm(text_width)
        )
        self.text_proj = nn.Linear(text_width, embed_dim, bias=False)
        self.masknet = (
            MaskNet(text_width, embed_dim, mask_heads, hard=mask_hard, detach=mask_detach)
            if with_mask
            else None
        )
        log_scale = torch.tensor(math.log(logit_scale))
        if learn_logit_scale:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x)

    def encode_text(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised text embedding, text states the mask network reads)."""
        h = self.text(t)
        return nn.functional.normalize(self.text_proj(h), dim=-1), h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> Features:
        t_emb, states = self.encode_text(t)
        m = self.masknet(states) if self.masknet is not None else None
        return Features(u=self.encode_image(x), t=t_emb, m=m)
