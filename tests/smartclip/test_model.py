"""open_clip towers with the stretched context and the mask network wiring."""

from __future__ import annotations

import warnings
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smartclip.masknet import MaskNet
from smartclip.model import (
    OPENAI_METADATA,
    TINY_CONFIG,
    TINY_MODEL,
    build_model,
    create_clip,
    is_torchscript_archive,
    load_weights,
    stretch_positional_embedding,
)
from smartclip.optim import param_groups

CAPTIONS = [
    "a red circle",
    "A large blue square at the top left. There is a small green star on the right. "
    "The background is gray and everything else is quiet in this long caption of many words.",
    "an orange cross in the middle row",
]


def tokens(context_length: int = 248) -> torch.Tensor:
    return open_clip.get_tokenizer(TINY_MODEL, context_length=context_length)(CAPTIONS)


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def write_openai_archive(state: dict[str, torch.Tensor], path: Path) -> None:
    """`state` saved the way OpenAI's CLIP files are: a TorchScript module (torch.jit.save) whose
    state dict has OpenAI's key names (those of open_clip's CLIP) and OpenAI's integer entries."""
    root = nn.Module()
    for key, value in state.items():
        *owners, leaf = key.split(".")
        module = root
        for owner in owners:
            if owner not in dict(module.named_children()):
                module.add_module(owner, nn.Module())
            module = module.get_submodule(owner)
        module.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    size, length = (
        TINY_CONFIG["vision_cfg"]["image_size"],
        TINY_CONFIG["text_cfg"]["context_length"],
    )
    for key, value in zip(OPENAI_METADATA, (size, length, 49408), strict=True):
        root.register_buffer(key, torch.tensor(value))
    with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's files are jit archives
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(root), str(path))


def openai_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny CLIP's weights with matrices in float16, as in OpenAI's archives."""
    torch.manual_seed(seed)
    state = open_clip.create_model(TINY_MODEL).state_dict()
    return {k: v.half() if v.ndim >= 2 else v for k, v in state.items()}


def test_stretch_matches_a_hand_computation() -> None:
    # 5 positions with value k², keep 1: 1 + 4·4 = 17 rows; anchors every 4th row, then
    # extrapolation along the last gap (16 − 9 = 7) in quarter steps.
    pos = (torch.arange(5, dtype=torch.float64) ** 2)[:, None]
    out = stretch_positional_embedding(pos, new_len=17, keep=1)
    expected = [0, 1, 1.75, 2.5, 3.25, 4, 5.25, 6.5, 7.75, 9, 10.75, 12.5, 14.25, 16,
                17.75, 19.5, 21.25]  # fmt: skip
    assert out[:, 0].tolist() == pytest.approx(expected, abs=1e-12)


def test_stretch_77_to_248_keeps_20_bitwise_and_interpolates_four_to_a_gap() -> None:
    pos = torch.randn(77, 16, generator=torch.Generator().manual_seed(1))
    out = stretch_positional_embedding(pos, 248, keep=20)
    assert out.shape == (248, 16)
    assert torch.equal(out[:20], pos[:20])
    for i in range(56):  # gaps between source rows 20+i and 21+i
        for r in range(4):
            want = pos[20 + i] + r / 4 * (pos[21 + i] - pos[20 + i])
            torch.testing.assert_close(out[20 + 4 * i + r], want, rtol=0, atol=1e-6)
        assert torch.equal(out[20 + 4 * i], pos[20 + i])
    for r in range(4):  # the last source row, then beyond it along the last gap
        torch.testing.assert_close(out[244 + r], pos[76] + r / 4 * (pos[76] - pos[75]))


def test_stretch_refuses_to_shrink_or_keep_everything() -> None:
    pos = torch.zeros(77, 4)
    with pytest.raises(ValueError, match="only stretch"):
        stretch_positional_embedding(pos, 50)
    with pytest.raises(ValueError, match="keep"):
        stretch_positional_embedding(pos, 248, keep=76)


def test_pretrained_weights_are_stretched_and_everything_else_kept(tmp_path) -> None:
    torch.manual_seed(0)
    short = open_clip.create_model(TINY_MODEL)  # the registered config has 77 positions
    path = tmp_path / "tiny77.pt"
    torch.save(short.state_dict(), path)
    clip = create_clip(TINY_MODEL, pretrained=str(path), context_length=248)
    assert clip.context_length == 248 and clip.attn_mask.shape == (248, 248)
    stretched = stretch_positional_embedding(short.positional_embedding.detach(), 248)
    assert torch.equal(clip.positional_embedding.detach(), stretched)
    for name, value in short.state_dict().items():
        if name != "positional_embedding":
            assert torch.equal(clip.state_dict()[name], value), name
    same = create_clip(TINY_MODEL, pretrained=str(path), context_length=77)
    assert torch.equal(same.positional_embedding, short.positional_embedding)


def test_an_openai_torchscript_archive_loads_as_the_same_state_dict(tmp_path) -> None:
    state = openai_state()
    archive, plain = tmp_path / "ViT-tiny.pt", tmp_path / "tiny.bin"
    write_openai_archive(state, archive)
    torch.save(state, plain)
    assert is_torchscript_archive(archive) and not is_torchscript_archive(plain)
    loaded = load_weights(str(archive))  # the integer entries dropped, nothing else touched
    assert loaded.keys() == state.keys()
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in state.items())
    for length in (77, 248):
        from_archive = create_clip(TINY_MODEL, str(archive), context_length=length).state_dict()
        from_plain = create_clip(TINY_MODEL, str(plain), context_length=length).state_dict()
        assert from_archive.keys() == from_plain.keys()
        for name, value in from_plain.items():
            assert value.dtype == from_archive[name].dtype == torch.float32, name
            assert torch.equal(from_archive[name], value), name
    pos = state["positional_embedding"].float()  # stretched after the exact upcast to float32
    assert torch.equal(from_archive["positional_embedding"], stretch_positional_embedding(pos))
    assert torch.equal(from_archive["visual.proj"], state["visual.proj"].float())


def wider_archive(path: Path) -> None:
    """An OpenAI-layout archive of a CLIP twice as wide as smartclip-tiny (as ViT-L is to B)."""
    torch.manual_seed(0)
    vision = {**TINY_CONFIG["vision_cfg"], "width": 192}
    text = {**TINY_CONFIG["text_cfg"], "width": 128}
    write_openai_archive(open_clip.CLIP(64, vision, text).state_dict(), path)


def wider_state_dict(path: Path) -> None:
    """An open_clip state dict (torch.save) of a CLIP whose text tower is twice as wide."""
    torch.manual_seed(0)
    text = {**TINY_CONFIG["text_cfg"], "width": 128}
    torch.save(open_clip.CLIP(64, TINY_CONFIG["vision_cfg"], text).state_dict(), path)


def no_clip_archive(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path))


def training_checkpoint(path: Path) -> None:
    torch.save({"step": 3, "model": openai_state()}, path)


@pytest.mark.parametrize(
    ("write", "says"),
    [
        (
            wider_archive,
            "shapes differ (file vs model): positional_embedding [77, 128] vs [77, 64]",
        ),
        (
            wider_state_dict,  # open_clip's loader asserts equal widths: no AssertionError
            "shapes differ (file vs model): positional_embedding [77, 128] vs [77, 64]",
        ),
        (no_clip_archive, "missing: positional_embedding, text_projection, logit_scale, ..."),
        (lambda path: path.write_bytes(b"<html>not found</html>"), "neither a state dict"),
        (training_checkpoint, "entry 'step' is of type int, not a tensor"),
    ],
)
def test_files_that_are_no_fitting_weights_raise_one_line_naming_them(tmp_path, write, says):
    path = tmp_path / "weights.pt"
    write(path)
    with pytest.raises(ValueError) as info:
        create_clip(TINY_MODEL, str(path), context_length=248)
    message = str(info.value)
    assert message.startswith(str(path)) and says in message and "\n" not in message, message


def test_weights_of_a_smaller_model_raise_one_line_naming_the_file_and_shapes(tmp_path) -> None:
    path = tmp_path / "tiny.bin"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(TINY_MODEL).state_dict(), path)
    with pytest.raises(ValueError) as info:
        create_clip("ViT-B-16", str(path))
    message = str(info.value)
    assert message.startswith(f"{path} does not fit open_clip model 'ViT-B-16': ") and (
        "positional_embedding [77, 64] vs [77, 512]" in message and "\n" not in message
    ), message


def test_the_mask_network_is_masknet_reading_detached_final_token_states() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, context_length=248, mask_heads=4)
    assert type(model.masknet) is MaskNet and model.masknet.detach
    seen = {}
    model.masknet.register_forward_pre_hook(lambda _, args: seen.update(states=args[0]))
    text = tokens()
    out = model(images(), text)
    clip = model.clip  # the text tower by hand: embeddings, transformer, ln_final, all positions
    x = clip.token_embedding(text) + clip.positional_embedding
    expected = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
    assert seen["states"].shape == (3, 248, 64)
    torch.testing.assert_close(seen["states"], expected)
    out.m.sum().backward()  # the mask's gradient must not reach the text tower
    assert all(p.grad is None for p in model.clip.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.masknet.parameters())


def test_forward_gives_raw_image_normalised_text_binary_mask_and_unmasked_eval() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, context_length=248, mask_heads=4)
    x, text = images(), tokens()
    out = model(x, text)
    assert not torch.allclose(out.u.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.t.norm(dim=-1), torch.ones(3))
    assert out.m.shape == (3, 64)
    assert torch.minimum(out.m, 1 - out.m).abs().max() < 1e-6  # hard (straight-through) mask
    torch.testing.assert_close(model.encode_image(x), F.normalize(out.u, dim=-1))
    torch.testing.assert_close(model.encode_text(text), out.t)
    assert build_model(TINY_MODEL, with_mask=False).masknet is None


def test_pooled_text_is_encoded_at_the_longest_caption_and_equals_the_full_context() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, context_length=248, mask_heads=4)
    text = tokens()
    lengths = []
    model.clip.transformer.register_forward_pre_hook(lambda _, a: lengths.append(a[0].shape[1]))
    pooled = model.pooled_text_features(text)
    assert lengths == [int((text[1] != 0).sum())] and lengths[0] < 248  # the long caption's
    full = model.text_features(text)[0]
    torch.testing.assert_close(pooled, full, atol=1e-6, rtol=1e-5)
    grads = [
        torch.autograd.grad(x.square().sum(), model.clip.token_embedding.weight)[0]
        for x in (model.pooled_text_features(text), model.text_features(text)[0])
    ]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_pooled_text_of_a_tower_without_causal_mask_keeps_the_full_context() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, context_length=248, mask_heads=4)
    model.clip.attn_mask = None  # bidirectional: the padding now changes the end token's state
    text = tokens()
    pooled = model.pooled_text_features(text)
    torch.testing.assert_close(pooled, model.text_features(text)[0])
    clip, end = model.clip, int(text[0].argmax())

    def end_state(length: int) -> torch.Tensor:  # the first caption's end token, `length` wide
        x = clip.token_embedding(text[:, :length]) + clip.positional_embedding[:length]
        return clip.ln_final(clip.transformer(x))[0, end]

    assert not torch.allclose(end_state(20), end_state(248))


def test_calibration_aggregates_patches_and_tokens_to_finelips_share() -> None:
    """MulCLIP's features arrive calibrated: the tiny towers' 8 × 8 = 64 patches and the captions'
    real tokens each aggregated into ⌊0.2 · 64⌋ = 12 tokens (all real), or into the share given;
    the aggregates are convex combinations of the projected patches and token states."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, context_length=248, with_mask=False, with_calibration=True)
    text = tokens()
    out = model(images(), text)
    assert out.patches.shape == out.tokens.shape == (3, 12, 64)
    assert out.token_mask.shape == (3, 12) and bool(out.token_mask.all())
    _, patches = model._image_and_patches(images())
    low, high = patches.min(1, keepdim=True).values, patches.max(1, keepdim=True).values
    assert ((out.patches >= low - 1e-5) & (out.patches <= high + 1e-5)).all()
    wide = build_model(TINY_MODEL, with_mask=False, with_calibration=True, calibration_share=0.5)
    assert wide(images(), text).tokens.shape == (3, 32, 64)
    assert build_model(TINY_MODEL, with_mask=False).calibration is None


def test_the_logit_scale_is_fixed_or_learned_from_its_start() -> None:
    """Fixed (SmartCLIP's release): the configured float, no gradient. Learned (Long-CLIP's):
    s = exp(log s) from the configured start, a parameter the loss's gradient reaches."""
    fixed = build_model(TINY_MODEL, with_mask=False, logit_scale=10.0)
    assert fixed.logit_scale == 10.0 and isinstance(fixed.logit_scale, float)
    assert not fixed.clip.logit_scale.requires_grad
    learned = build_model(TINY_MODEL, with_mask=False, logit_scale=100.0, learn_logit_scale=True)
    scale = learned.logit_scale
    assert scale.requires_grad and scale.item() == pytest.approx(100.0, rel=1e-6)
    out = learned(images(), tokens())
    logits = scale * F.normalize(out.u, dim=-1) @ out.t.T
    F.cross_entropy(logits, torch.arange(3)).backward()
    assert learned.clip.logit_scale.grad is not None and learned.clip.logit_scale.grad != 0
    # trained as the release trains it: by the backbone's AdamW group, weight decay included
    groups = {g["name"]: g for g in param_groups(learned, 1e-6, 0.01, 1e-3, 0.0)}
    assert any(p is learned.clip.logit_scale for p in groups["backbone"]["params"])
    assert groups["backbone"]["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="logit_scale"):
        build_model(TINY_MODEL, with_mask=False, logit_scale=0.0)
