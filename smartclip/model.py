"""open_clip towers plus SmartCLIP's mask network, with Long-CLIP's stretched text context.

    u = f_I(x)                        unnormalised image features (the open_clip image tower)
    H = LN_final(Transformer(E[x_t] + P)),  t = W_p pool(H) / ‖W_p pool(H)‖    text tower
    m = MaskNet(sg(H))                mask from all context positions' token states, detached

Any open_clip config with open_clip's own text transformer works by name (`create_clip`), plus
the CPU-sized "smartclip-tiny", registered in open_clip's config registry on import. Weights come
from local files only (`pretrained=PATH`); nothing is downloaded. A file is an open_clip state dict
or checkpoint (loaded by open_clip's own `load_checkpoint`, `weights_only`) or one of OpenAI's
original TorchScript archives (`ViT-B-16.pt`, `ViT-L-14.pt`), converted in memory: OpenAI's key
names are open_clip's CLIP names, less the integer entries.

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
import math
import os
import warnings
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import open_clip
import torch
import torch.nn.functional as F
from open_clip import factory as open_clip_factory
from open_clip.transformer import text_global_pool
from torch import nn

from smartclip.calibration import CALIBRATION_SHARE, LocalCalibration
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
# the integer entries of an OpenAI TorchScript archive's state dict, beside the weights
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")


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


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Whether `path` is a TorchScript archive (torch.jit.save), as OpenAI's CLIP files are.

    The test torch.load itself uses: a zip whose top folder holds `constants.pkl`, which
    torch.save never writes. Only the zip's directory is read; nothing is unpickled.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/", 1)[-1] == "constants.pkl" for n in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _first_line(err: BaseException) -> str:
    """`Type: first line` of an exception; for torch.load's weights_only refusal, whose first
    lines are advice, the unpickler's reason instead."""
    text = str(err).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip().split("\n", 1)[0]
        return f"weights_only refused it: {reason.split('. ')[0]}"
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _torchscript_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive, without OpenAI's integer entries."""
    with warnings.catch_warnings():  # jit is deprecated, but it is how OpenAI's files are read
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
        try:
            module = torch.jit.load(path, map_location="cpu")
        except RuntimeError as err:
            raise ValueError(f"{path}: broken TorchScript archive ({_first_line(err)})") from None
    return {k: v for k, v in module.state_dict().items() if k not in OPENAI_METADATA}


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """A local weights file as a state dict of tensors, on the CPU: an OpenAI TorchScript
    archive's state dict without its integer entries, or what open_clip's `load_state_dict`
    reads (torch.load with `weights_only`, or safetensors; a checkpoint's "state_dict", a DDP
    "module." prefix stripped). Raises ValueError naming the file if it holds no such dict."""
    if is_torchscript_archive(path):
        state = _torchscript_state_dict(path)
    else:
        try:
            state = open_clip_factory.load_state_dict(path)
        except Exception as err:  # torch.load and safetensors fail on foreign files many ways
            raise ValueError(
                f"{path}: neither a state dict, an open_clip checkpoint nor an OpenAI TorchScript "
                f"archive ({_first_line(err)})"
            ) from None
    if not state:
        raise ValueError(f"{path}: holds no weights")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: entry {key!r} is of type {type(value).__name__}, not a tensor (export a "
                "training checkpoint's weights with `python -m smartclip.export`)"
            )
    return state


def _check_fits(clip: nn.Module, state: dict[str, torch.Tensor], path: str, name: str) -> None:
    """Raise one ValueError line if `state` does not load strictly into `clip`."""
    expected = clip.state_dict()
    mismatched = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = [
        f"{len(items)} {label}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
        for label, items in (
            ("shapes differ (file vs model)", mismatched),
            ("missing", missing),
            ("unexpected", unexpected),
        )
        if items
    ]
    if problems:
        raise ValueError(f"{path} does not fit open_clip model {name!r}: {'; '.join(problems)}")


def _random_clip(name: str, context_length: int | None) -> nn.Module:
    """`open_clip.create_model` without weights and without its random-weights warning (the
    caller loads weights next)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(name, force_context_length=context_length)
    finally:
        logging.disable(previous)


def create_clip(
    name: str,
    pretrained: str | None = None,
    context_length: int | None = None,
    keep: int = KEEP_POSITIONS,
) -> nn.Module:
    """An open_clip model by config name, weights from the local file `pretrained` (or random).

    Without weights the model is built at `context_length` directly. With weights (any file
    `load_weights` reads), the model is first built and loaded at the weights' own context, so
    nothing resamples it; for a longer `context_length` the positional table is then stretched
    (`stretch_positional_embedding`) and the model rebuilt with `force_context_length`, which
    also sizes the causal attention mask. Weights that do not fit the config raise ValueError.
    """
    if open_clip.get_model_config(name) is None:
        raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
    if pretrained is None:
        return open_clip.create_model(name, force_context_length=context_length)
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"--pretrained must be a local weights file; {pretrained} is not")
    state = load_weights(pretrained)
    key = _positional_key(state)
    stored_len = state[key].shape[0] if key is not None and state[key].ndim == 2 else None
    base = _random_clip(name, stored_len)  # None: the config's length
    if is_torchscript_archive(pretrained):  # OpenAI's layout is open_clip's CLIP layout
        _check_fits(base, state, pretrained, name)
        base.load_state_dict(state)
    else:  # open_clip's own loader, with its conversions of other layouts
        try:
            open_clip_factory.load_checkpoint(base, pretrained)
        except (RuntimeError, AssertionError) as err:  # its resizers assert equal widths
            _check_fits(base, state, pretrained, name)  # the mismatch, for open_clip's layout
            raise ValueError(
                f"{pretrained} does not fit open_clip model {name!r}: {_first_line(err)[:300]}"
            ) from None
    if context_length is None or context_length == base.context_length:
        return base
    if context_length < base.context_length:
        raise ValueError(
            f"context length {context_length} is shorter than the model's {base.context_length}"
        )
    state = base.state_dict()
    key = _positional_key(state)
    state[key] = stretch_positional_embedding(state[key], context_length, keep)
    clip = _random_clip(name, context_length)
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
    """An open_clip model (`self.clip`), a `MaskNet` for objectives that read masks and, for
    those that read patch and token features (MulCLIP), their `LocalCalibration`, which
    aggregates each side into `calibration_share` of the image's patch count.

    The logit scale s = `logit_scale` is fixed (SmartCLIP's release) or, with
    `learn_logit_scale`, learned as log s in `clip.logit_scale`, from log `logit_scale` (Long-CLIP's
    release, `train/train.py`: `logit_scale = Parameter(ones([]) * args.log_scale)`, 4.6052 =
    log 100, trained by the AdamW of every parameter)."""

    def __init__(
        self,
        clip: nn.Module,
        with_mask: bool = True,
        mask_heads: int = 8,
        with_calibration: bool = False,
        calibration_share: float = CALIBRATION_SHARE,
        logit_scale: float = 100.0,
        learn_logit_scale: bool = False,
    ) -> None:
        super().__init__()
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be positive, got {logit_scale}")
        self.clip = clip
        with torch.no_grad():
            self.clip.logit_scale.fill_(math.log(logit_scale))
        self.clip.logit_scale.requires_grad_(learn_logit_scale)
        self._fixed_scale = None if learn_logit_scale else logit_scale
        text_width, embed_dim = _text_width_and_embed_dim(clip)
        if with_mask and text_width % mask_heads:
            raise ValueError(f"mask heads {mask_heads} must divide the text width {text_width}")
        self.masknet = MaskNet(text_width, embed_dim, mask_heads) if with_mask else None
        self.calibration = (
            LocalCalibration(embed_dim, math.prod(clip.visual.grid_size), calibration_share)
            if with_calibration
            else None
        )

    @property
    def logit_scale(self) -> torch.Tensor | float:
        """s: the fixed value, or exp of the learned log scale (a tensor with gradient)."""
        return self.clip.logit_scale.exp() if self._fixed_scale is None else self._fixed_scale

    def text_features(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised text embedding [B, D], token states after ln_final [B, L, W])."""
        out = self.clip.forward_intermediates(
            text=tokens, text_indices=1, normalize_intermediates=True, normalize=True
        )
        return out["text_features"], out["text_intermediates"][-1]

    def pooled_text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The normalised text embedding [B, D] of `text_features`, the token states skipped.

        CLIP's text tower attends causally (position l sees positions ≤ l) and LayerNorm and the
        projection act per position, so the pooled state at a caption's end token does not depend
        on the padding after it: the batch is encoded at its longest caption's length n, with
        P[:n] and the mask's top-left n × n block, which equals the full-context result (up to
        float summation order) at n/L of its cost or less. Towers without a causal mask, an
        end-token pool or a text projection are encoded at full length."""
        clip = self.clip
        mask = getattr(clip, "attn_mask", None)
        exact = (
            isinstance(clip, open_clip.CLIP)
            and getattr(clip, "text_pool_type", None) in ("argmax", "eos")
            and clip.text_projection is not None
            and mask is not None
            and mask.dim() == 2
            and bool(torch.isneginf(mask.triu(1)).sum() == mask.shape[0] * (mask.shape[0] - 1) // 2)
        )
        if not exact or tokens.shape[0] == 0:
            return self.text_features(tokens)[0]
        used = (tokens != 0).any(0).nonzero()  # columns holding a token of some caption
        n = int(used[-1]) + 1 if len(used) else 1
        tokens = tokens[:, :n]
        x = clip.token_embedding(tokens).to(clip.transformer.get_cast_dtype())
        x = clip.transformer(x + clip.positional_embedding[:n].to(x.dtype), attn_mask=mask[:n, :n])
        x = text_global_pool(
            clip.ln_final(x), tokens, clip.text_pool_type, getattr(clip, "text_eos_id", None)
        )
        return F.normalize(self._project_tokens(x), dim=-1)

    def _text_and_mask(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        t, states = self.text_features(tokens)
        return t, self.masknet(states) if self.masknet is not None else None  # MaskNet detaches

    def _project_tokens(self, states: torch.Tensor) -> torch.Tensor:
        """Token states [B, L, W] in the joint space [B, L, D] (the text projection)."""
        proj = getattr(self.clip, "text_projection", None)
        return proj(states) if isinstance(proj, nn.Linear) else states @ proj

    def _image_and_patches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embedding [B, D], its patch tokens after ln_post and the projection [B, P, D])."""
        visual = self.clip.visual
        visual.output_tokens = True
        try:
            pooled, patches = visual(images)
        finally:
            visual.output_tokens = False
        return pooled, patches @ visual.proj

    def forward(
        self,
        images: torch.Tensor,
        tokens: torch.Tensor,
        negatives: torch.Tensor | None = None,
        short: torch.Tensor | None = None,
        subs: torch.Tensor | None = None,
    ) -> Features:
        """Features of a batch: `negatives` [B, k, L] are k hard-negative captions per row,
        `short` [B, L] the short captions, `subs` [B, S, L] the sentences (all-zero rows pad).
        With calibration the patch and token features come along, calibrated: m aggregated
        tokens each (`smartclip.calibration`), all of them real."""
        out = Features(u=None, t=None)
        if self.calibration is None:
            out.u = self.clip.encode_image(images)
            out.t, out.m = self._text_and_mask(tokens)
        else:
            out.u, patches = self._image_and_patches(images)
            out.t, states = self.text_features(tokens)
            out.m = self.masknet(states) if self.masknet is not None else None
            out.patches, out.tokens = self.calibration(
                patches, self._project_tokens(states), tokens != 0
            )
            out.token_mask = out.tokens.new_ones(out.tokens.shape[:2], dtype=torch.bool)
        if negatives is not None:
            flat, m_flat = self._text_and_mask(negatives.flatten(0, 1))
            out.t_neg = flat.view(*negatives.shape[:2], -1)
            out.m_neg = None if m_flat is None else m_flat.view(*negatives.shape[:2], -1)
        if short is not None:
            out.t_short = self.pooled_text_features(short)
        if subs is not None:
            out.sub_mask = subs[..., 0] != 0
            embedded = self.pooled_text_features(subs[out.sub_mask])
            out.subs = embedded.new_zeros(*subs.shape[:2], embedded.shape[-1])
            out.subs[out.sub_mask] = embedded
        return out

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unmasked, normalised image embeddings (for evaluation)."""
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings (for evaluation)."""
        return self.pooled_text_features(tokens)


def build_model(
    name: str,
    pretrained: str | None = None,
    context_length: int | None = LONG_CONTEXT,
    keep: int = KEEP_POSITIONS,
    with_mask: bool = True,
    mask_heads: int = 8,
    with_calibration: bool = False,
    calibration_share: float = CALIBRATION_SHARE,
    logit_scale: float = 100.0,
    learn_logit_scale: bool = False,
) -> SmartCLIPModel:
    """`create_clip` + `SmartCLIPModel` (the kept positions are frozen by the optimizer,
    `smartclip.optim.pin_rows`)."""
    clip = create_clip(name, pretrained, context_length, keep)
    return SmartCLIPModel(
        clip,
        with_mask,
        mask_heads,
        with_calibration,
        calibration_share,
        logit_scale,
        learn_logit_scale,
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
