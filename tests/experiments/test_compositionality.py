"""The compositionality experiment: g** = g* ∘ π, the measurements, the sweep end to end."""

from __future__ import annotations

import compositionality as comp
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smartclip.encoders import PrecomposedText
from smartclip.fit import FitConfig, build_model
from synthetic.tokens import OPERATORS, TokenWorld, TokenWorldConfig

WORLD = TokenWorld(TokenWorldConfig())
G_STAR = build_model(WORLD, FitConfig(text_encoder="transformer", objective="clip")).eval()
G_STAR_STAR = PrecomposedText(G_STAR, comp.repair_ids(WORLD))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), operator=st.sampled_from(OPERATORS), k=st.integers(1, 3))
def test_pseudo_optimal_encoder_is_invariant_to_every_operator(seed, operator, k):
    """g**(negative) = g**(caption) exactly, while g* (any weights) tells them apart; on the
    support g** and g* embed identically."""
    batch = WORLD.sample(4, torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    negatives = WORLD.hard_negatives(batch.scenes, [operator] * 4, k, gen)
    t_neg = WORLD.negative_captions(batch, [[s] for s in negatives])[:, 0]
    with torch.no_grad():
        star, star_neg = G_STAR.encode_text(batch.t)[0], G_STAR.encode_text(t_neg)[0]
        pseudo, pseudo_neg = G_STAR_STAR.encode_text(batch.t)[0], G_STAR_STAR.encode_text(t_neg)[0]
    assert torch.equal(pseudo, star)
    assert torch.equal(pseudo_neg, pseudo)
    assert not torch.allclose(star_neg, star)


def test_share_right_counts_ties_half():
    assert (
        comp.share_right(torch.tensor([1.0, 0.0, 2.0, 1.0]), torch.tensor([0.0, 1.0, 2.0, 1.0]))
        == 0.5
    )
    assert comp.share_right(torch.tensor([3.0, 3.0]), torch.tensor([1.0, 2.0])) == 1.0


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--models", "gpt/clip"], "--models"),
        (["--n-objects", "3"], "--n-objects"),
        (["--seeds", "1,1"], "--seeds"),
    ],
)
def test_bad_flags_exit_with_one_line(argv, flag, one_line_error):
    one_line_error(comp.main, argv, flag)


@pytest.mark.slow
def test_sweep_measures_every_model_and_g_star_star_sits_at_chance(tmp_path):
    out = tmp_path / "comp"
    comp.main(
        ["--models", "transformer/clip,bag/clip+mined", "--seeds", "0", "--steps", "40"]
        + ["--batch-size", "64", "--n-eval", "200", "--workers", "1", "--out", str(out)]
    )
    results = pd.read_csv(out / "results.csv")
    models = set(results.objective)
    assert models == {"transformer/clip", "transformer/clip/g**", "bag/clip+mined"}
    accuracy = results[results.quantity == "accuracy"]
    assert len(accuracy) == 3 * len(OPERATORS) * len(comp.KS)
    pseudo = accuracy[accuracy.objective == "transformer/clip/g**"]
    assert (pseudo.value == 0.5).all()
    infonce = results[results.quantity == "infonce"].set_index("objective").value
    assert infonce["transformer/clip/g**"] == infonce["transformer/clip"]
    r2 = results[results.quantity == "invariant_r2"]
    assert set(r2.objective) == {"transformer/clip", "bag/clip+mined"} and set(r2.block) == {
        "image",
        "text",
    }
    summary = (out / "summary.md").read_text()
    assert "transformer/clip/g**" in summary and "0.500 ± 0.000" in summary
    assert (out / "accuracy.png").stat().st_size > 0
