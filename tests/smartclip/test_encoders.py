"""The synthetic towers: the bag of tokens is order-blind and the transformer is not; a
precomposed text map reaches every text the model reads, mined negatives included."""

from __future__ import annotations

import pytest
import torch

from smartclip.encoders import PrecomposedText, SyntheticCLIP

VOCAB, LENGTH = 12, 6


def ids(seed: int, n: int = 8) -> torch.Tensor:
    """Random captions: 3 to 6 non-padding tokens, then padding."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.randint(1, VOCAB, (n, LENGTH), generator=gen)
    lengths = torch.randint(3, LENGTH + 1, (n,), generator=gen)
    out[torch.arange(LENGTH) >= lengths[:, None]] = 0
    return out


def reversed_tokens(t: torch.Tensor) -> torch.Tensor:
    """Each row's non-padding tokens in reverse order, padding kept at the end."""
    out = t.clone()
    for row, orig in zip(out.view(-1, LENGTH), t.view(-1, LENGTH), strict=True):
        n = int((orig != 0).sum())
        row[:n] = orig[:n].flip(0)
    return out


def model(encoder: str, with_mask: bool = False) -> SyntheticCLIP:
    torch.manual_seed(0)
    return SyntheticCLIP(5, (VOCAB, LENGTH), hidden=16, text_width=8, text_encoder=encoder,
                         with_mask=with_mask).eval()  # fmt: skip


@pytest.mark.parametrize(("encoder", "blind"), [("bag", True), ("transformer", False)])
def test_the_bag_ignores_token_order_and_the_transformer_does_not(encoder, blind):
    m, t = model(encoder), ids(1)
    with torch.no_grad():
        same = torch.allclose(m.encode_text(t)[0], m.encode_text(reversed_tokens(t))[0], atol=1e-6)
    assert same == blind


@pytest.mark.parametrize("with_mask", [False, True])
def test_precomposed_text_maps_captions_and_mined_negatives_before_the_model(with_mask):
    m = model("transformer", with_mask)
    wrapped = PrecomposedText(m, reversed_tokens)
    x, t, t_neg = torch.randn(8, 5), ids(2), ids(3, 16).view(8, 2, LENGTH)
    with torch.no_grad():
        got = wrapped(x, t, t_neg)
        want = m(x, reversed_tokens(t), reversed_tokens(t_neg))
        plain = m(x, t, t_neg)
        assert torch.equal(wrapped.encode_text(t)[0], m.encode_text(reversed_tokens(t))[0])
        assert torch.equal(wrapped.encode_image(x), m.encode_image(x))
    for name in ("u", "t", "t_neg", "m", "m_neg"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None and b is None) or torch.equal(a, b), name
    assert not torch.allclose(got.t_neg, plain.t_neg)
    assert wrapped.logit_scale == m.logit_scale and wrapped.masknet is m.masknet
