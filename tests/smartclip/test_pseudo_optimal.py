"""Pseudo-optimal encoders: π_N keeps exactly the mined edit profiles, g**_N = g* ∘ π_N has g*'s
objective on every (mined) training batch and sits at chance exactly on the compositions outside
N; the SWAP-blind reading κ; the per-operator measures."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from smartclip.fit import FitConfig, build_model, fit, training_batch
from smartclip.pseudo_optimal import (
    SortedColourWorld,
    blind_to,
    decode_scenes,
    kept_profiles,
    operator_negatives,
    operator_scores,
    profile_of,
    pseudo_optimal,
    reader,
    repair_outside,
    share_right,
    sorted_colour_ids,
    training_objective,
)
from synthetic.seeding import stream
from synthetic.token_operators import (
    IN_VOCABULARY,
    compositions,
    in_vocabulary,
    negatives,
    repair_beyond,
)
from synthetic.tokens import COLORS, OPERATORS, TokenWorld, TokenWorldConfig

WORLD = TokenWorld(TokenWorldConfig())
SENTENCES = TokenWorld(TokenWorldConfig(view="sentence"))
ALL = tuple(n for d in (1, 2, 3) for n in compositions(WORLD.config, d))
NAMES = ALL + IN_VOCABULARY
SMALL = {"batch_size": 48, "hidden": 32, "text_width": 16, "steps": 4, "warmup": 1}
MINING = {
    "none": (),
    "depth1": OPERATORS,
    "powers": ("swap", "swap^2", "replace^3", "add^2"),
    "mixed": ALL,
    "in-vocabulary": ("swap∘add", "object_swap", "object_add"),
}


def powers(name: str) -> tuple[int, int, int]:
    """(S, R, A) a composition's name states, read with a regular expression."""
    found = dict.fromkeys(OPERATORS, 0)
    for op, power in re.findall(r"(swap|replace|add)(?:\^(\d+))?", name):
        found[op] += int(power or 1)
    return tuple(found[op] for op in OPERATORS)


def texts_of(world: TokenWorld, seed: int, name: str) -> list[str]:
    """The caption of a fresh support scene with `name` applied ("" for the caption itself)."""
    scene = world.sample_scenes(1, torch.Generator().manual_seed(seed))[0]
    if name:
        scene = negatives(world, [scene], [name], torch.Generator().manual_seed(seed + 1))[0]
    return world.caption(scene)


def test_profiles_and_blindness_follow_the_names():
    assert profile_of("swap^2∘add") == (2, 0, 1) and profile_of("object_swap") == (0, 0, 0)
    assert kept_profiles(OPERATORS) == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}
    assert kept_profiles(("object_add", "replace^2")) == {(0, 2, 0)}
    for name in NAMES:
        assert profile_of(name) == (powers(name) if name not in IN_VOCABULARY else (0, 0, 0))
        assert blind_to(name, ()) == (name not in IN_VOCABULARY)
        assert blind_to(name, OPERATORS) == (sum(powers(name)) > 1 and name not in IN_VOCABULARY)
        assert not blind_to(name, ALL + IN_VOCABULARY)


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**30), name=st.sampled_from(("", *NAMES)))
def test_repair_outside_n_is_pi_d_for_every_depth_d_and_pi_without_mining(seed, name):
    words = texts_of(WORLD, seed, name)
    assert repair_outside(WORLD, words, kept_profiles(())) == WORLD.repair(words)
    assert repair_outside(WORLD, words, kept_profiles(OPERATORS)) == repair_beyond(WORLD, words, 1)
    assert repair_outside(WORLD, words, kept_profiles(ALL)) == repair_beyond(WORLD, words, 3)
    if name in ("", *IN_VOCABULARY):  # the support and the in-vocabulary outputs: kept by all
        assert repair_outside(WORLD, words, frozenset()) == words


# ------------------------------------------------------------------------ the training objective


def models(world: TokenWorld, mining: str) -> list[FitConfig]:
    encoders = ("transformer", "bag") if world.config.view == "tokens" else ("mlp",)
    return [
        FitConfig(**SMALL, text_encoder=e, objective=o, hard_negatives=MINING[mining], seed=3)
        for e in encoders
        for o in ("clip", "smartclip")
    ]


@pytest.mark.parametrize("mining", list(MINING))
def test_pseudo_optimal_encoder_has_g_star_objective_on_every_mined_training_batch(mining):
    """L(g**_N) = L(g*) bit for bit on training batches, mined negatives included; the naive
    g* ∘ π maps every mined negative onto its caption and so has another objective."""
    for cfg in models(WORLD, mining):
        model = build_model(WORLD, cfg).eval()
        star = training_objective(model, WORLD, cfg, [0, 1])
        g2 = pseudo_optimal(model, WORLD, MINING[mining])
        assert training_objective(g2, WORLD, cfg, [0, 1]) == star, cfg
        if mining not in ("none", "in-vocabulary"):
            naive = training_objective(pseudo_optimal(model, WORLD, ()), WORLD, cfg, [0, 1])
            assert abs(naive - star) > 1e-4, cfg


@pytest.mark.parametrize("mining", ["none", "depth1", "mixed"])
def test_sentence_view_pseudo_optimal_encoder_has_g_star_objective(mining):
    for cfg in models(SENTENCES, mining):
        model = build_model(SENTENCES, cfg).eval()
        star = training_objective(model, SENTENCES, cfg, [0, 1])
        g2 = pseudo_optimal(model, SENTENCES, MINING[mining])
        assert training_objective(g2, SENTENCES, cfg, [0, 1]) == star


@pytest.mark.parametrize(
    "cfg", models(WORLD, "powers"), ids=lambda c: f"{c.text_encoder}-{c.objective}"
)
def test_training_objective_is_what_fit_minimised_at_its_first_step(cfg):
    """fit logs step 0's loss with the initial weights: the objective of `build_model`'s model on
    training batch 0, mined negatives included."""
    logged: list[float] = []
    fit(WORLD, replace(cfg, steps=1), lambda s, terms, m: logged.append(terms["loss"]))
    value = training_objective(build_model(WORLD, cfg), WORLD, cfg, [0])
    assert value == pytest.approx(logged[0], rel=1e-6)


def test_training_objective_of_clip_is_infonce_with_the_negatives_as_extra_columns():
    """An independent computation of CLIP's objective on a mined batch: image → text over the
    captions and the negatives, text → image over the images."""
    cfg = FitConfig(**SMALL, text_encoder="transformer", objective="clip", hard_negatives=ALL)
    model = build_model(WORLD, cfg).eval()
    batch = training_batch(WORLD, cfg, 2)
    with torch.no_grad():
        u = F.normalize(model.encode_image(batch.x), dim=-1)
        t = model.encode_text(batch.t)[0]
        t_neg = model.encode_text(batch.t_neg[:, 0])[0]
        s = model.logit_scale
        target = torch.arange(len(u))
        i2t = F.cross_entropy(s * u @ torch.cat([t, t_neg]).T, target)
        t2i = F.cross_entropy(s * t @ u.T, target)
    got = training_objective(model, WORLD, cfg, [2])
    assert got == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-5)


# --------------------------------------------------------------------------- chance by construction


@pytest.mark.parametrize("mining", ["none", "depth1", "powers", "in-vocabulary"])
def test_pseudo_optimal_encoder_sits_at_chance_exactly_outside_n_and_is_g_star_inside(mining):
    cfg = FitConfig(**SMALL, text_encoder="transformer", objective="clip")
    model = build_model(WORLD, cfg).eval()
    batch = WORLD.sample(64, torch.Generator().manual_seed(5))
    names = ALL + in_vocabulary(WORLD.config)
    negs = operator_negatives(WORLD, batch, names, torch.Generator().manual_seed(6))

    def scores(g: torch.nn.Module) -> dict[tuple[str, str], float]:
        return {(r["quantity"], r["block"]): r["value"] for r in operator_scores(g, batch, negs)}

    star, pseudo = scores(model), scores(pseudo_optimal(model, WORLD, MINING[mining]))
    mined = {powers(n) for n in MINING[mining] if n not in IN_VOCABULARY}
    for name in names:
        assert star[("text_cosine", name)] < 1 - 1e-6  # g* tells every negative apart
        if name not in IN_VOCABULARY and powers(name) not in mined:
            assert pseudo[("accuracy", name)] == 0.5
            assert pseudo[("text_cosine", name)] == pytest.approx(1.0, abs=1e-6)
        else:
            assert pseudo[("accuracy", name)] == star[("accuracy", name)]
            assert pseudo[("text_cosine", name)] == star[("text_cosine", name)]
        if name != "object_add":  # the image side reads the true caption: g*'s own
            assert pseudo[("image_accuracy", name)] == star[("image_accuracy", name)]
    assert ("image_accuracy", "object_add") not in star


def test_sentence_view_repairs_through_the_inverse_generator():
    """The scene is read back exactly from g_T⁻¹; a repaired negative equals its caption up to
    rounding; every other row is returned as it is."""
    batch = SENTENCES.sample(200, torch.Generator().manual_seed(7))
    latent = SENTENCES.g_txt.inverse(batch.t.double())[:, : SENTENCES.code_dim]
    for got, want in zip(decode_scenes(SENTENCES, latent), batch.scenes, strict=True):
        assert (got.shapes, got.colors, got.materials, got.layout) == (
            want.shapes,
            want.colors,
            want.materials,
            want.layout,
        )
    cfg = FitConfig(**SMALL, text_encoder="mlp", objective="clip")
    model = build_model(SENTENCES, cfg).eval()
    g2 = pseudo_optimal(model, SENTENCES, OPERATORS)
    gen = torch.Generator().manual_seed(8)
    for name in ("swap^2", "replace∘add", "swap"):
        scenes = negatives(SENTENCES, batch.scenes, [name] * 200, gen)
        t_neg = SENTENCES.negative_captions(batch, [[s] for s in scenes])[:, 0]
        mapped = g2.text_map(t_neg)
        if name == "swap":  # mined at depth 1: kept, bit for bit
            assert torch.equal(mapped, t_neg)
        else:
            assert torch.allclose(mapped, batch.t, atol=1e-4) and not torch.equal(mapped, t_neg)
    assert torch.equal(g2.text_map(batch.t), batch.t)


# ------------------------------------------------------------------------------------ κ


def kappa(words: list[str]) -> list[str]:
    """κ on words: the colour words sorted by their index in COLORS, in the colour positions."""
    ordered = iter(sorted((w for w in words if w in COLORS), key=COLORS.index))
    return [next(ordered) if w in COLORS else w for w in words]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**30), name=st.sampled_from(NAMES))
def test_sorted_colours_ignore_every_swap_and_keep_everything_else_in_place(seed, name):
    sort = sorted_colour_ids(WORLD)
    words = texts_of(WORLD, seed, name)
    ids = WORLD.token_ids([words])
    assert WORLD.words(sort(ids)[0]) == kappa(words)
    swapped = texts_of(WORLD, seed + 7, "swap^2")
    original = texts_of(WORLD, seed + 7, "")
    assert torch.equal(sort(WORLD.token_ids([swapped])), sort(WORLD.token_ids([original])))


def test_sorted_colours_are_injective_on_the_support_only_at_rho_zero():
    """At ρ = 0 no two support captions share κ; at ρ = 1 a caption and its SWAP are two support
    captions with one κ."""
    captions = WORLD.sample(3000, torch.Generator().manual_seed(9)).t
    sort = sorted_colour_ids(WORLD)
    assert len({tuple(r) for r in sort(captions).tolist()}) == len(
        {tuple(r) for r in captions.tolist()}
    )
    free = TokenWorld(TokenWorldConfig(rho=1.0))
    batch = free.sample(50, torch.Generator().manual_seed(9))
    swapped = negatives(free, batch.scenes, ["swap"] * 50, torch.Generator().manual_seed(10))
    on_support = [s for s in swapped if free.on_support(s)]
    assert len(on_support) > 25  # most swaps of S_1 scenes stay in S_1
    ids = free.token_ids([free.caption(s) for s in swapped])
    assert not torch.equal(ids, batch.t) and torch.equal(sort(ids), sort(batch.t))


def test_the_sorted_colour_world_is_the_plain_world_read_through_kappa():
    plain, sorted_world = TokenWorld(WORLD.config), SortedColourWorld(WORLD.config)
    cfg = FitConfig(**SMALL, text_encoder="transformer", objective="clip", hard_negatives=ALL)
    a, b = training_batch(plain, cfg, 1), training_batch(sorted_world, cfg, 1)
    sort = sorted_colour_ids(plain)
    assert torch.equal(b.x, a.x) and torch.equal(b.t, sort(a.t))
    assert torch.equal(b.t_neg, sort(a.t_neg))
    model = build_model(sorted_world, cfg).eval()
    assert training_objective(reader(model, plain, True), plain, cfg, [1]) == training_objective(
        model, sorted_world, cfg, [1]
    )
    unmined = replace(cfg, hard_negatives=())
    g2 = pseudo_optimal(model, plain, (), swap_blind=True)
    star = training_objective(reader(model, plain, True), plain, unmined, [0])
    assert training_objective(g2, plain, unmined, [0]) == star
    with pytest.raises(ValueError, match="token view"):
        SortedColourWorld(SENTENCES.config)


def test_swap_blind_reader_ties_every_swap():
    cfg = FitConfig(**SMALL, text_encoder="transformer", objective="clip")
    model = build_model(WORLD, cfg).eval()
    batch = WORLD.sample(64, torch.Generator().manual_seed(10))
    negs = operator_negatives(WORLD, batch, ("swap", "swap^3", "add"), stream(0, "eval", 1))
    rows = operator_scores(reader(model, WORLD, True), batch, negs)
    got = {(r["quantity"], r["block"]): r["value"] for r in rows}
    assert got[("accuracy", "swap")] == got[("accuracy", "swap^3")] == 0.5
    assert got[("accuracy", "add")] != 0.5


def test_share_right_counts_ties_half():
    assert (
        share_right(torch.tensor([1.0, 0.0, 2.0, 1.0]), torch.tensor([0.0, 1.0, 2.0, 1.0])) == 0.5
    )
    assert share_right(torch.tensor([3.0, 3.0]), torch.tensor([1.0, 2.0])) == 1.0
