"""The image side of claim 4: π_I is the identity on support images and maps operated images back
to their originals, f** = f* ∘ π_I has f*'s objective bit for bit and ties on operated images up
to the rounding of g_I⁻¹; the world's semantics (an ADD image satisfies its caption); the imposed
shift, the modality gap and the agreement of the two sides' errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smartclip.fit import FitConfig, fit, training_batch
from smartclip.image_side import (
    MappedImage,
    false_of_caption,
    gap_shift,
    image_pseudo_optimal,
    item_wins,
    modality_gap,
    repair_images,
    satisfies,
    side_agreement,
    side_scores,
)
from smartclip.pseudo_optimal import (
    decode_scenes,
    operator_negatives,
    operator_scores,
    pseudo_optimal,
    share_right,
    training_objective,
)
from synthetic.seeding import stream
from synthetic.token_operators import compositions, negatives
from synthetic.tokens import OPERATORS, Scene, TokenWorld, TokenWorldConfig

WORLD = TokenWorld(TokenWorldConfig())
ALL = tuple(n for d in (1, 2, 3) for n in compositions(WORLD.config, d))
WITH_IMAGES = ALL + ("object_swap", "relation_replace")
SMALL = {"batch_size": 48, "hidden": 32, "text_width": 16, "warmup": 1}
PURE_ADD = re.compile(r"add(\^\d+)?")


def config(objective: str = "clip", mined: tuple[str, ...] = (), steps: int = 4) -> FitConfig:
    return FitConfig(
        **SMALL, steps=steps, objective=objective, text_encoder="transformer", hard_negatives=mined
    )


@pytest.fixture(scope="module")
def trained():
    """A CLIP model trained for 40 steps, its held-out batch and the operators' negatives."""
    model = fit(WORLD, config(steps=40)).eval()
    batch = WORLD.sample(300, stream(0, "eval", 0))
    names = ("swap", "replace", "add", "swap∘add", "add^2", "object_swap", "object_add")
    return model, batch, operator_negatives(WORLD, batch, names, stream(0, "eval", 1))


def operated(batch, name: str, seed: int = 1):
    scenes = negatives(WORLD, batch.scenes, [name] * len(batch.scenes), stream(seed, "eval", 1))
    return scenes, WORLD.images(scenes, batch.s_img)


def test_pi_i_returns_support_images_bit_for_bit_which_rerendering_would_not():
    batch = WORLD.sample(200, stream(0, "eval", 0))
    assert torch.equal(repair_images(WORLD)(batch.x), batch.x)
    latent = WORLD.g_img.inverse(batch.x.double())
    scenes = decode_scenes(WORLD, latent[:, : WORLD.code_dim])
    assert [(s.shapes, s.colors, s.layout) for s in scenes] == [
        (s.shapes, s.colors, s.layout) for s in batch.scenes
    ]
    rendered = WORLD.images(scenes, latent[:, WORLD.code_dim :].float())
    assert not torch.equal(rendered, batch.x)  # why π_I keeps the rows it does not repair
    torch.testing.assert_close(rendered, batch.x, rtol=0, atol=1e-4)


def test_pi_i_maps_every_composition_output_back_to_its_original_and_keeps_the_rest():
    batch = WORLD.sample(60, stream(2, "eval", 0))
    repair = repair_images(WORLD)
    for name in WITH_IMAGES:
        _, x_neg = operated(batch, name)
        repaired = repair(x_neg)
        if name in ALL:
            assert (repaired != x_neg).any(1).all(), name
            torch.testing.assert_close(repaired, batch.x, rtol=0, atol=1e-4, msg=name)
        else:  # the in-vocabulary outputs are support images: left as they are
            assert torch.equal(repaired, x_neg), name


def test_at_rho_above_zero_pi_i_changes_support_images():
    world = TokenWorld(TokenWorldConfig(rho=1.0))
    batch = world.sample(50, stream(5, "eval", 0))
    assert all(world.on_support(s) for s in batch.scenes)
    assert (repair_images(world)(batch.x) != batch.x).any(1).all()  # off-palette: π rebinds


@pytest.mark.parametrize("objective", ["clip", "smartclip"])
@pytest.mark.parametrize("mined", [(), OPERATORS])
def test_f_star_star_has_f_stars_training_objective_bit_for_bit(objective, mined):
    cfg = config(objective, mined)
    model = fit(WORLD, cfg).eval()
    steps = range(2)
    reference = training_objective(model, WORLD, cfg, steps)
    f2 = image_pseudo_optimal(model, WORLD)
    assert training_objective(f2, WORLD, cfg, steps) == reference
    both = image_pseudo_optimal(pseudo_optimal(model, WORLD, mined), WORLD)
    assert training_objective(both, WORLD, cfg, steps) == reference

    batch = training_batch(WORLD, cfg, 0)
    with torch.no_grad():
        assert torch.equal(f2.encode_image(batch.x), model.encode_image(batch.x))
        latent = WORLD.g_img.inverse(batch.x.double())  # rendering again changes the bits
        scenes = decode_scenes(WORLD, latent[:, : WORLD.code_dim])
        again = WORLD.images(scenes, latent[:, WORLD.code_dim :].float())
        assert not torch.equal(model.encode_image(again), model.encode_image(batch.x))


def test_f_star_star_ties_on_operated_images_up_to_rounding_where_f_star_does_not(trained):
    model, batch, _ = trained
    f2 = image_pseudo_optimal(model, WORLD)
    with torch.no_grad():
        t = model.encode_text(batch.t)[0]
        u_star = F.normalize(model.encode_image(batch.x), dim=-1)
        u_two = F.normalize(f2.encode_image(batch.x), dim=-1)
        assert torch.equal(u_star, u_two)
        for name in ("swap", "replace", "add", "swap^2∘replace", "replace∘add^2"):
            _, x_neg = operated(batch, name)
            neg_star = F.normalize(model.encode_image(x_neg), dim=-1)
            neg_two = F.normalize(f2.encode_image(x_neg), dim=-1)
            gap_two = ((t * u_two).sum(1) - (t * neg_two).sum(1)).abs()
            gap_star = ((t * u_star).sum(1) - (t * neg_star).sum(1)).abs()
            assert gap_two.max() < 1e-5 and (u_two * neg_two).sum(1).min() > 1 - 1e-5, name
            assert gap_star.max() > 1e-3, name  # f* itself sees the operator
        for name in ("object_swap", "relation_replace"):
            _, x_neg = operated(batch, name)
            assert torch.equal(f2.encode_image(x_neg), model.encode_image(x_neg))


def test_the_semantics_on_a_hand_built_scene():
    scene = Scene(shapes=(0, 1, 2, 3), colors=(0, 2, 4, 6), materials=(-1,) * 4, layout=0)
    words = WORLD.caption(scene)  # red cube left_of yellow ball left_of green cone …
    assert satisfies(WORLD, words, scene)
    striped = Scene(scene.shapes, scene.colors, (-1, 0, -1, -1), 0)
    assert satisfies(WORLD, words, striped)  # ADD: the caption names no material
    assert satisfies(WORLD, WORLD.caption(striped), striped)
    assert not satisfies(WORLD, WORLD.caption(striped), scene)  # names one the image lacks
    dotted = Scene(scene.shapes, scene.colors, (-1, 1, -1, -1), 0)
    assert not satisfies(WORLD, WORLD.caption(striped), dotted)
    assert not satisfies(WORLD, words, Scene(scene.shapes, (2, 0, 4, 6), scene.materials, 0))
    assert not satisfies(WORLD, words, Scene((5, 1, 2, 3), scene.colors, scene.materials, 0))
    assert not satisfies(WORLD, words, Scene(scene.shapes, scene.colors, scene.materials, 1))
    other_word = Scene(scene.shapes, scene.colors, scene.materials, 0, style=1)
    assert satisfies(WORLD, WORLD.caption(other_word), scene)  # a synonym asserts the same
    five = Scene((0, 1, 2, 3, 4), (0, 2, 4, 6, 8), (-1,) * 5, 0)
    assert not satisfies(WORLD, WORLD.caption(five), scene)


def test_only_pure_add_images_satisfy_their_caption_and_every_negative_caption_is_false():
    gen = torch.Generator().manual_seed(3)
    scenes = WORLD.sample_scenes(15, gen)
    for name in WITH_IMAGES + ("object_add",):
        for scene, negative in zip(scenes, negatives(WORLD, scenes, [name] * 15, gen), strict=True):
            image_side = satisfies(WORLD, WORLD.caption(scene), negative)
            assert image_side == bool(PURE_ADD.fullmatch(name)), name
            assert not satisfies(WORLD, WORLD.caption(negative), scene), name


def test_false_of_caption_reads_the_scene_off_each_image():
    batch = WORLD.sample(40, stream(3, "eval", 0))
    for name in ("swap", "add", "add^3", "replace∘add", "relation_replace"):
        scenes, x_neg = operated(batch, name)
        expected = [
            not satisfies(WORLD, WORLD.caption(s), n)
            for s, n in zip(batch.scenes, scenes, strict=True)
        ]
        assert false_of_caption(WORLD, batch, x_neg).tolist() == expected
        assert expected == [not PURE_ADD.fullmatch(name)] * len(expected)


def test_the_shift_is_added_before_normalisation_and_nothing_without_it(trained):
    model, batch, _ = trained
    c = torch.randn(model.image[-1].out_features, generator=torch.Generator().manual_seed(0))
    shifted = MappedImage(model, shift=c)
    with torch.no_grad():
        u = model.encode_image(batch.x)
        torch.testing.assert_close(shifted.encode_image(batch.x), u + c, rtol=0, atol=0)
        assert torch.equal(shifted(batch.x, batch.t).u, u + c)
        assert torch.equal(MappedImage(model).encode_image(batch.x), u)
        assert torch.equal(MappedImage(model)(batch.x, batch.t).u, model(batch.x, batch.t).u)
    assert shifted.logit_scale == model.logit_scale


def test_modality_gap_and_the_gap_shift(trained):
    model, batch, _ = trained
    with torch.no_grad():
        u, t = model.encode_image(batch.x), model.encode_text(batch.t)[0]
    u_np, t_np = u.double().numpy(), t.double().numpy()
    u_hat = u_np / np.linalg.norm(u_np, axis=1, keepdims=True)
    mean_u, mean_t = u_hat.mean(0), t_np.mean(0)
    assert modality_gap(u, t) == pytest.approx(np.linalg.norm(mean_u - mean_t), rel=1e-5)
    assert torch.equal(gap_shift(model, batch, 0.0), torch.zeros(u.shape[1]))
    c = gap_shift(model, batch, 2.0).double().numpy()
    direction = (mean_t - mean_u) / np.linalg.norm(mean_t - mean_u)
    scale = np.linalg.norm(u_np, axis=1).mean()
    np.testing.assert_allclose(c, 2.0 * scale * direction, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # a huge shift sends every û to d: the gap becomes ‖d − mean t̂‖
        far = MappedImage(model, shift=gap_shift(model, batch, 1e6)).encode_image(batch.x)
    assert modality_gap(far, t) == pytest.approx(np.linalg.norm(direction - mean_t), rel=1e-4)
    with torch.no_grad():
        near = MappedImage(model, shift=gap_shift(model, batch, 0.3)).encode_image(batch.x)
    assert modality_gap(near, t) < modality_gap(u, t)  # toward the text cone: the gap shrinks


def test_item_wins_and_the_agreement_of_two_sides():
    positive, negative = torch.tensor([1.0, 0.2, 0.5, 0.3]), torch.tensor([0.5, 0.2, 0.6, 0.1])
    assert item_wins(positive, negative).tolist() == [1.0, 0.5, 0.0, 1.0]
    assert item_wins(positive, negative).mean().item() == share_right(positive, negative)
    a, b = torch.tensor([1.0, 1, 0, 0, 1]), torch.tensor([1.0, 0, 0, 1, 1])
    out = side_agreement(a, b)
    assert out["side_agreement"] == pytest.approx(0.6)
    assert out["side_agreement_chance"] == pytest.approx(0.6 * 0.6 + 0.4 * 0.4)
    assert out["side_correlation"] == pytest.approx((0.4 - 0.36) / 0.24)
    ties = side_agreement(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 1.0]))
    assert ties["side_agreement"] == pytest.approx(0.75) and np.isnan(ties["side_correlation"])
    same = side_agreement(a, a)
    assert same["side_agreement"] == 1 and same["side_correlation"] == pytest.approx(1)


def test_side_scores_count_only_real_image_negatives(trained):
    model, batch, negs = trained
    rows = side_scores(model, WORLD, batch, negs)
    table = {(r["quantity"], r["block"]): r["value"] for r in rows}
    reference = {
        (r["quantity"], r["block"]): r["value"] for r in operator_scores(model, batch, negs)
    }
    assert not any(block == "object_add" for _, block in table)  # no image
    for name in ("add", "add^2"):  # every ADD image satisfies its caption
        assert table[("image_negative_share", name)] == 0
        assert ("real_image_accuracy", name) not in table
    with torch.no_grad():
        u = F.normalize(model.encode_image(batch.x), dim=-1).double().numpy()
        t = model.encode_text(batch.t)[0].double().numpy()
    for name in ("swap", "replace", "swap∘add", "object_swap"):
        assert table[("image_negative_share", name)] == 1
        assert table[("real_image_accuracy", name)] == reference[("image_accuracy", name)]
        assert table[("real_text_accuracy", name)] == reference[("accuracy", name)]
        captions, images = negs[name]
        with torch.no_grad():
            t_neg = model.encode_text(captions)[0].double().numpy()
            u_neg = F.normalize(model.encode_image(images), dim=-1).double().numpy()
        text_right = np.sign(np.einsum("ij,ij->i", u, t - t_neg)) / 2 + 0.5
        image_right = np.sign(np.einsum("ij,ij->i", t, u - u_neg)) / 2 + 0.5
        agree = 1 - np.abs(text_right - image_right).mean()
        assert table[("side_agreement", name)] == pytest.approx(agree, abs=2 / len(u))
        if text_right.std() and image_right.std():
            r = np.corrcoef(text_right, image_right)[0, 1]
            assert table[("side_correlation", name)] == pytest.approx(r, abs=0.05)
    pairs = np.array(
        [
            [table[("real_text_accuracy", n)], table[("real_image_accuracy", n)]]
            for n in ("swap", "replace", "swap∘add", "object_swap")
        ]
    )
    expected = np.corrcoef(pairs.T)[0, 1]
    assert table[("operator_correlation", "")] == pytest.approx(expected)


def test_side_scores_of_f_star_star_show_an_image_side_blind_to_the_primitives(trained):
    model, batch, negs = trained
    rows = side_scores(image_pseudo_optimal(model, WORLD), WORLD, batch, negs)
    cosine = {r["block"]: r["value"] for r in rows if r["quantity"] == "image_cosine"}
    for name in ("swap", "replace", "add", "swap∘add", "add^2"):
        assert cosine[name] > 1 - 1e-6, name
    star = {
        r["block"]: r["value"]
        for r in side_scores(model, WORLD, batch, negs)
        if r["quantity"] == "image_cosine"
    }
    assert cosine["object_swap"] == star["object_swap"]  # a support image: f** = f* there
    assert all(star[name] < cosine[name] for name in ("swap", "replace", "add"))
