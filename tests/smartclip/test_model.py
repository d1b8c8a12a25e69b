"""open_clip towers with the stretched context and the mask network wiring."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from smartclip.masknet import MaskNet
from smartclip.model import TINY_MODEL, build_model, create_clip, stretch_positional_embedding

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
