"""Small towers for synthetic worlds: an image MLP and a text tower with a mask network.

u = f_I(x)                              unnormalised image embedding, [B, D]
h = text tower(t)                       text states: [B, W] (vector captions) or [B, L, W] (tokens)
t̂ = W pool(h) / ‖W pool(h)‖             normalised text embedding, [B, D]
m = MaskNet(h)                          SmartCLIP only

Text towers (`TEXT_ENCODERS`):
  mlp          a caption vector t ∈ ℝ^T: h = LayerNorm(MLP(t))
  transformer  token ids, order-aware: token + position embeddings, pre-norm transformer layers
               (no causal mask, padding masked), LayerNorm; pool = mean over non-padding tokens
  bag          token ids, order-blind: h = LayerNorm(MLP(mean of the non-padding token
               embeddings)), so any permutation of the tokens gives the same embedding
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from smartclip.losses import Features
from smartclip.masknet import MaskNet

TEXT_ENCODERS: tuple[str, ...] = ("mlp", "transformer", "bag")


def mlp(sizes: list[int], slope: float = 0.2) -> nn.Sequential:
    """Linear layers of the given sizes with LeakyReLU(slope) between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class VectorText(nn.Module):
    """h = LayerNorm(MLP(t)) for caption vectors; states [B, W], pooled = h."""

    def __init__(self, t_dim: int, width: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.net = nn.Sequential(mlp([t_dim, *[hidden] * depth, width]), nn.LayerNorm(width))

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(t)
        return h, h


class TransformerText(nn.Module):
    """Order-aware token encoder: states [B, L, W], pooled = mean over non-padding tokens."""

    def __init__(self, vocab_size: int, max_len: int, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = ids == 0
        h = self.norm(self.layers(self.token(ids) + self.position, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return h, (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class BagText(nn.Module):
    """Order-blind token encoder: h = LayerNorm(MLP(mean of non-padding embeddings)); [B, W]."""

    def __init__(self, vocab_size: int, width: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, width, padding_idx=0)
        self.net = nn.Sequential(mlp([width, *[hidden] * depth, width]), nn.LayerNorm(width))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = (ids != 0).unsqueeze(-1).float()
        h = self.net((self.token(ids) * keep).sum(1) / keep.sum(1).clamp_min(1.0))
        return h, h


class SyntheticCLIP(nn.Module):
    """An image MLP, a text tower, an optional mask network and a (fixed or learnable) logit
    scale. `text_input` is an int (the caption vector's size, for the mlp tower) or a pair
    (vocabulary size, caption length) for the token towers."""

    def __init__(
        self,
        x_dim: int,
        text_input: int | tuple[int, int],
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
        text_encoder: str = "mlp",
    ) -> None:
        super().__init__()
        if text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {text_encoder!r}")
        if (text_encoder == "mlp") != isinstance(text_input, int):
            raise ValueError(f"the {text_encoder} text tower cannot read input {text_input!r}")
        self.image = mlp([x_dim, *[hidden] * depth, embed_dim])
        if text_encoder == "mlp":
            self.text = VectorText(text_input, text_width, hidden, depth)
        elif text_encoder == "transformer":
            self.text = TransformerText(*text_input, text_width, depth=2, heads=mask_heads)
        else:
            self.text = BagText(text_input[0], text_width, hidden, depth)
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
        states, pooled = self.text(t)
        return nn.functional.normalize(self.text_proj(pooled), dim=-1), states

    def _text_and_mask(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        t_emb, states = self.encode_text(t)
        return t_emb, self.masknet(states) if self.masknet is not None else None

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        t_neg: torch.Tensor | None = None,
        t_short: torch.Tensor | None = None,
    ) -> Features:
        """Features of a batch; `t_neg` [B, k, ...] are k hard-negative captions per row,
        `t_short` short captions."""
        t_emb, m = self._text_and_mask(t)
        out = Features(u=self.encode_image(x), t=t_emb, m=m)
        if t_neg is not None:
            flat, m_flat = self._text_and_mask(t_neg.flatten(0, 1))
            out.t_neg = flat.view(*t_neg.shape[:2], -1)
            out.m_neg = None if m_flat is None else m_flat.view(*t_neg.shape[:2], -1)
        if t_short is not None:
            out.t_short = self.encode_text(t_short)[0]
        return out


class PrecomposedText(nn.Module):
    """g ∘ m: the wrapped model g with every text it reads, mined hard negatives included, first
    mapped by m (`text_map`, on a batch of text inputs [n, ...]); the image tower and everything
    else are the wrapped model's. With m = π_N this is the pseudo-optimal encoder g**_N of a model
    mined with the names N, with m = κ the SWAP-blind tower (`smartclip.pseudo_optimal`)."""

    def __init__(self, model: SyntheticCLIP, text_map: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model, self.text_map = model, text_map
        self.masknet = model.masknet

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_text(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_text(self.text_map(t))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, t_neg: torch.Tensor | None = None
    ) -> Features:
        mapped = None if t_neg is None else self.text_map(t_neg.flatten(0, 1)).view_as(t_neg)
        return self.model(x, self.text_map(t), mapped)
