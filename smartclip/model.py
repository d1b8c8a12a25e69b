"""open_clip towers plus SmartCLIP's mask network, with Long-CLIP's stretched text context.

    u = f_I(x)                        unnormalised image features (the open_clip image tower)
    H = LN_final(Transformer(E[x_t] + P)),  t = W_p pool(H) / ‖W_p pool(H)‖    text tower
    m = MaskNet(sg(H))                mask from all context positions' token states, detached

Any open_clip config with open_clip's own text transformer works by name (`create_clip`), plus
the CPU-sized "smartclip-tiny", registered in open_clip's config registry on import. Weights come
from local files only (`pretrained=PATH`); nothing is downloaded.

Context stretch (Long-CLIP): a positional table P ∈ R^{L×W} (L = 77) becomes P' ∈ R^{L'×W}
(L' = 248) with the first `keep` = 20 rows copied bitwise and rows k ≥ keep read at the source
coordinate s_k = keep + (k − keep)/r, r = (L' − keep)/(L − keep) (= 228/57 = 4):

    P'_k = (1 − w) P_j + w P_{j+1},   j = min(⌊s_k⌋, L − 2),  w = s_k − j

so rows 20..243 linearly interpolate source rows 20..76 four to a gap (P'_{20+4i} = P_{20+i}),
row 244 is P_76, and rows 245..247 extrapolate along the last gap: P_76 + ¼·{1,2,3}(P_76 − P_75).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import open_clip
import torch
import torch.nn.functional as F
from open_clip import factory as open_clip_factory
from torch import nn

from smartclip.losses import Features
from smartclip.masknet import MaskNet

TINY_MODEL = "smartclip-tiny"
TINY_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 96, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
LONG_CONTEXT = 248
KEEP_POSITIONS = 20


def register_model_config(name: str, config: dict) -> None:
    """Add `config` to open_clip's registry (`open_clip.factory._MODEL_CONFIGS`) under `name`.

    `open_clip.add_model_config` only takes JSON files; the registry dict survives its rescans.
    """
    open_clip_factory._MODEL_CONFIGS[name] = copy.deepcopy(config)


register_model_config(TINY_MODEL, TINY_CONFIG)


def stretch_positional_embedding(
    pos: torch.Tensor, new_len: int = LONG_CONTEXT, keep: int = KEEP_POSITIONS
) -> torch.Tensor:
    """[L, W] → [new_len, W]: rows < keep copied, the rest interpolated (see the module doc)."""
    length = pos.shape[0]
    if not 0 <= keep <= length - 2:
        raise ValueError(f"keep must lie in 0..{length - 2} for {length} positions, got {keep}")
    if new_len < length:
        raise ValueError(f"can only stretch the context: new_len={new_len} < {length} positions")
    ratio = (new_len - keep) / (length - keep)
    src = keep + torch.arange(new_len - keep, dtype=torch.float64) / ratio
    j = src.floor().long().clamp_max(length - 2)
    w = (src - j).to(pos.dtype)[:, None]
    stretched = (1 - w) * pos[j] + w * pos[j + 1]
    return torch.cat([pos[:keep], stretched]).detach().clone()


def _positional_key(state_dict: dict[str, torch.Tensor]) -> str | None:
    for key in ("positional_embedding", "text.positional_embedding"):
        if key in state_dict:
            return key
    return None


def text_positional_embedding(clip: nn.Module) -> nn.Parameter:
    """The text tower's positional table ([L, W]) of an open_clip CLIP or CustomTextCLIP."""
    tower = getattr(clip, "text", clip)
    pos = getattr(tower, "positional_embedding", None)
    if not isinstance(pos, nn.Parameter):
        raise ValueError(f"{type(tower).__name__} has no learnable text positional embedding")
    return pos


def create_clip(
    name: str,
    pretrained: str | None = None,
    context_length: int | None = None,
    keep: int = KEEP_POSITIONS,
) -> nn.Module:
    """An open_clip model by config name, weights from the local file `pretrained` (or random).

    Without weights the model is built at `context_length` directly. With weights whose context
    is shorter, the positional table is stretched (`stretch_positional_embedding`) and the model
    rebuilt with `force_context_length`, which also sizes the causal attention mask. A checkpoint
    is loaded at its own length first, so open_clip never silently resamples it.
    """
    if open_clip.get_model_config(name) is None:
        raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
    if pretrained is None:
        return open_clip.create_model(name, force_context_length=context_length)
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"--pretrained must be a local weights file; {pretrained} is not")
    stored = open_clip_factory.load_state_dict(pretrained)
    key = _positional_key(stored)
    stored_len = None if key is None else stored[key].shape[0]
    del stored
    base = open_clip.create_model(name, pretrained=pretrained, force_context_length=stored_len)
    if context_length is None or context_length == base.context_length:
        return base
    if context_length < base.context_length:
        raise ValueError(
            f"context length {context_length} is shorter than the model's {base.context_length}"
        )
    state = base.state_dict()
    key = _positional_key(state)
    state[key] = stretch_positional_embedding(state[key], context_length, keep)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns of random weights; they are replaced next
    try:
        clip = open_clip.create_model(name, force_context_length=context_length)
    finally:
        logging.disable(previous)
    clip.load_state_dict(state)
    return clip


def _text_width_and_embed_dim(clip: nn.Module) -> tuple[int, int]:
    tower = getattr(clip, "text", clip)
    proj = getattr(tower, "text_projection", None)
    if isinstance(proj, nn.Linear):
        return proj.in_features, proj.out_features
    if isinstance(proj, nn.Parameter):
        return proj.shape[0], proj.shape[1]
    raise ValueError(f"{type(tower).__name__} has no text projection to read widths from")


class SmartCLIPModel(nn.Module):
    """An open_clip model (`self.clip`) and, for the smartclip objective, a `MaskNet`."""

    def __init__(self, clip: nn.Module, with_mask: bool = True, mask_heads: int = 8) -> None:
        super().__init__()
        self.clip = clip
        self.clip.logit_scale.requires_grad_(False)  # SmartCLIP uses a fixed scale
        text_width, embed_dim = _text_width_and_embed_dim(clip)
        if with_mask and text_width % mask_heads:
            raise ValueError(f"mask heads {mask_heads} must divide the text width {text_width}")
        self.masknet = MaskNet(text_width, embed_dim, mask_heads) if with_mask else None

    def text_features(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised text embedding [B, D], token states after ln_final [B, L, W])."""
        out = self.clip.forward_intermediates(
            text=tokens, text_indices=1, normalize_intermediates=True, normalize=True
        )
        return out["text_features"], out["text_intermediates"][-1]

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> Features:
        t, states = self.text_features(tokens)
        m = self.masknet(states) if self.masknet is not None else None  # MaskNet detaches
        return Features(u=self.clip.encode_image(images), t=t, m=m)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unmasked, normalised image embeddings (for evaluation)."""
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings (for evaluation)."""
        return F.normalize(self.clip.encode_text(tokens), dim=-1)


def build_model(
    name: str,
    pretrained: str | None = None,
    context_length: int | None = LONG_CONTEXT,
    keep: int = KEEP_POSITIONS,
    with_mask: bool = True,
    mask_heads: int = 8,
) -> SmartCLIPModel:
    """`create_clip` + `SmartCLIPModel` (the kept positions are frozen by the optimizer,
    `smartclip.optim.pin_rows`)."""
    return SmartCLIPModel(
        create_clip(name, pretrained, context_length, keep), with_mask, mask_heads
    )


def open_clip_config(name: str, context_length: int) -> dict:
    """The model's open_clip config with `text_cfg.context_length` set to `context_length`."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"unknown open_clip model {name!r}")
    config["text_cfg"]["context_length"] = context_length
    return config


def preprocess(clip: torch.nn.Module) -> Callable:
    """The model's deterministic (evaluation) image preprocessing."""
    pp = open_clip.get_model_preprocess_cfg(clip)
    keys = ("mean", "std", "resize_mode", "interpolation", "fill_color")
    return open_clip.image_transform(pp["size"], is_train=False, **{k: pp[k] for k in keys})


def autocast_context(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A factory of autocast contexts: none for fp32, float16 for amp, bfloat16 for amp_bf16."""
    if precision == "fp32":
        return nullcontext
    dtype = torch.float16 if precision == "amp" else torch.bfloat16
    return partial(torch.autocast, device.type, dtype=dtype)
