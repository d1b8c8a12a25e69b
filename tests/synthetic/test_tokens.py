"""The token-level world: support (ρ included), captions, primitive operators and the repair π."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic.seeding import stream
from synthetic.tokens import (
    COLORS,
    MATERIALS,
    OPERATORS,
    SHAPES,
    Scene,
    TokenWorld,
    TokenWorldConfig,
)

WORLD = TokenWorld(TokenWorldConfig())
SEEDS = st.integers(0, 2**31 - 1)


def scene_of(seed: int):
    return WORLD.sample_scenes(1, torch.Generator().manual_seed(seed))[0]


def test_samples_lie_on_the_support_and_captions_round_trip():
    batch = WORLD.sample(300, stream(0, "eval"))
    assert all(WORLD.on_support(s) for s in batch.scenes)
    for scene, ids in zip(batch.scenes, batch.t, strict=True):
        assert WORLD.words(ids) == WORLD.caption(scene)
    assert batch.x.shape == (300, WORLD.x_dim) and batch.t.shape == (300, WORLD.max_len)
    assert len({tuple(s.shapes) for s in batch.scenes}) > 100  # shapes and order vary


def test_image_and_sentence_generators_invert_to_the_scene_code():
    sentence = TokenWorld(TokenWorldConfig(view="sentence"))
    batch = sentence.sample(50, stream(1, "eval"))
    assert batch.t.shape == (50, sentence.t_dim) and sentence.text_input == sentence.t_dim
    code = sentence.code(batch.scenes)
    for g, view in ((sentence.g_img, batch.x), (sentence.g_txt, batch.t)):
        recovered = g.inverse(view.double())[:, : sentence.code_dim].float()
        assert torch.allclose(recovered, code, atol=1e-4)


def test_word_order_carries_the_layout_order_and_colours_bind_to_the_next_shape():
    scene = scene_of(3)
    words = WORLD.caption(scene)
    shapes = [w for w in words if w in SHAPES]
    assert shapes == [SHAPES[s] for s in scene.shapes]
    for p, shape in enumerate(scene.shapes):
        i = words.index(SHAPES[shape])
        assert words[i - 1] == COLORS[scene.colors[p]]


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, operator=st.sampled_from(OPERATORS), k=st.integers(1, 3), draw=SEEDS)
def test_operators_leave_the_support_and_change_exactly_what_they_say(seed, operator, k, draw):
    scene = scene_of(seed)
    negative, changed = WORLD.apply_operator(
        scene, operator, k, torch.Generator().manual_seed(draw)
    )
    before, after = WORLD.caption(scene), WORLD.caption(negative)
    assert after != before and not WORLD.on_support(negative)
    assert all(w in WORLD.vocab for w in after)
    if operator == "swap":  # the same words, k + 1 colours moved along a cycle
        assert Counter(after) == Counter(before) and len(after) == len(before)
        moved = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
        assert len(moved) == k + 1 and all(before[i] in COLORS for i in moved)
    elif operator == "replace":  # k shape words, each now a shape absent from the scene
        diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert len(diff) == k and all(a in SHAPES and b in SHAPES for a, b in diff)
        assert not {b for _, b in diff} & {SHAPES[s] for s in scene.shapes}
    else:  # k material words inserted, everything else in order
        added = [w for w in after if w in MATERIALS]
        assert len(added) == k and [w for w in after if w not in MATERIALS] == before
    # the latents the operator names are exactly those that differ in the image's code
    c = WORLD.config
    code, neg = WORLD.code([scene])[0], WORLD.code([negative])[0]
    width = c.shape_dim + c.color_dim + 1
    bounds = (
        ("shape", 0, c.shape_dim),
        ("color", c.shape_dim, width - 1),
        ("material", width - 1, width),
    )
    touched = {
        f"{kind}{i // width}"
        for i in torch.nonzero(code != neg).flatten().tolist()
        for kind, lo, hi in bounds
        if lo <= i % width < hi
    }
    assert touched == set(changed) and len(changed) == (k + 1 if operator == "swap" else k)


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, operator=st.sampled_from(OPERATORS), k=st.integers(1, 3), draw=SEEDS)
def test_repair_is_the_identity_on_the_support_and_undoes_every_operator(seed, operator, k, draw):
    scene = scene_of(seed)
    caption = WORLD.caption(scene)
    assert WORLD.repair(caption) == caption
    negative, _ = WORLD.apply_operator(scene, operator, k, torch.Generator().manual_seed(draw))
    assert WORLD.repair(WORLD.caption(negative)) == caption


@pytest.mark.parametrize("view", ["tokens", "sentence"])
def test_hard_negative_captions_follow_the_negative_scenes(view):
    world = TokenWorld(TokenWorldConfig(view=view))
    batch = world.sample(5, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    negs = [world.hard_negatives(batch.scenes, [op] * 5, 2, gen) for op in OPERATORS]
    negs = [list(row) for row in zip(*negs, strict=True)]  # [scene][operator]
    captions = world.negative_captions(batch, negs)
    assert captions.shape == (5, 3, *batch.t.shape[1:])
    for i, row in enumerate(negs):
        for j, scene in enumerate(row):
            one = world.captions([scene], batch.s_txt[i : i + 1])[0]
            assert torch.allclose(captions[i, j].float(), one.float(), atol=1e-5)


def test_operator_limits():
    scenes = WORLD.sample_scenes(1, torch.Generator().manual_seed(0))
    assert [WORLD.config.max_k(op) for op in OPERATORS] == [3, 4, 4]
    with pytest.raises(ValueError, match="admits k"):
        WORLD.apply_operator(scenes[0], "swap", 4, torch.Generator())
    with pytest.raises(ValueError, match="n_objects"):
        TokenWorldConfig(n_objects=9)


# ----------------------------------------------------------------------------- parse, objects


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, operator=st.sampled_from(OPERATORS), k=st.integers(1, 3), draw=SEEDS)
def test_parse_inverts_the_caption_on_and_off_the_support(seed, operator, k, draw):
    scene = scene_of(seed)
    negative, _ = WORLD.apply_operator(scene, operator, k, torch.Generator().manual_seed(draw))
    for s in (scene, negative):
        assert WORLD.parse(WORLD.caption(s)) == s


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, operator=st.sampled_from(OPERATORS), draw=SEEDS, pair=st.integers(0, 5))
def test_operators_touch_only_the_objects_they_are_given(seed, operator, draw, pair):
    objects = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)][pair]
    scene = scene_of(seed)
    negative, changed = WORLD.apply_operator(
        scene, operator, 1, torch.Generator().manual_seed(draw), objects
    )
    differ = {
        p
        for p in range(WORLD.config.n_objects)
        if (scene.shapes[p], scene.colors[p], scene.materials[p])
        != (negative.shapes[p], negative.colors[p], negative.materials[p])
    }
    assert differ == {int("".join(filter(str.isdigit, name))) for name in changed}
    assert differ <= set(objects) and len(differ) == (2 if operator == "swap" else 1)
    with pytest.raises(ValueError, match="needs 3 objects"):
        WORLD.apply_operator(scene, "swap", 2, torch.Generator(), objects)


def test_only_scenes_of_n_objects_have_a_code():
    scene = scene_of(0)
    longer = Scene((*scene.shapes, scene.shapes[0]), (*scene.colors, scene.colors[0]), (-1,) * 5, 0)
    assert not WORLD.on_support(longer)  # four distinct shapes, but five objects
    for wrong in (longer, replace(scene, shapes=scene.shapes[:3], colors=scene.colors[:3])):
        with pytest.raises(ValueError, match="4 object slots"):
            WORLD.code([wrong])


# --------------------------------------------------------------------------------------- rho


def todays_sample(world: TokenWorld, n: int, gen: torch.Generator) -> tuple[list[Scene], ...]:
    """The scenes and nuisances `sample` drew before ρ existed, written out again."""
    c = world.config
    shapes = torch.rand(n, c.n_shapes, generator=gen).argsort(1)[:, : c.n_objects]
    pick = torch.randint(c.palette_size, (n, c.n_objects), generator=gen)
    layout = torch.randint(2, (n,), generator=gen)
    style = torch.randint(2, (n,), generator=gen)
    scenes = [
        Scene(
            tuple(shapes[i].tolist()),
            tuple((shapes[i] * c.palette_size + pick[i]).tolist()),
            (-1,) * c.n_objects,
            int(layout[i]),
            int(style[i]),
        )
        for i in range(n)
    ]
    s_img = torch.randn(n, c.img_nuisance_dim, generator=gen)
    return scenes, s_img, torch.randn(n, c.txt_nuisance_dim, generator=gen)


@pytest.mark.parametrize("view", ["tokens", "sentence"])
def test_rho_zero_samples_bitwise_what_the_world_sampled_before(view):
    world = TokenWorld(TokenWorldConfig(view=view, rho=0.0))
    batch = world.sample(200, torch.Generator().manual_seed(11))
    scenes, s_img, s_txt = todays_sample(world, 200, torch.Generator().manual_seed(11))
    assert batch.scenes == scenes
    assert torch.equal(batch.s_img, s_img) and torch.equal(batch.s_txt, s_txt)
    assert torch.equal(batch.x, world.g_img(torch.cat([world.code(scenes), s_img], dim=1)))
    if view == "tokens":
        assert torch.equal(batch.t, world.token_ids([world.caption(s) for s in scenes]))
    else:
        assert torch.equal(batch.t, world.g_txt(torch.cat([world.code(scenes), s_txt], dim=1)))


def own_palette(world: TokenWorld, scene: Scene) -> list[bool]:
    p = world.config.palette_size
    return [c // p == s for s, c in zip(scene.shapes, scene.colors, strict=True)]


@pytest.mark.parametrize("rho", [0.3, 1.0])
def test_a_share_rho_of_scenes_binds_colours_from_any_palette(rho):
    n = 20_000
    world = TokenWorld(TokenWorldConfig(rho=rho))
    scenes = world.sample_scenes(n, torch.Generator().manual_seed(5))
    redundant = WORLD.sample_scenes(n, torch.Generator().manual_seed(5))
    off = [not all(own_palette(world, s)) for s in scenes]
    share = sum(off) / n
    assert abs(share - rho) <= 4 * (rho * (1 - rho) / n) ** 0.5
    assert all(world.on_support(s) for s in scenes)
    assert all(len(set(s.colors)) == len(s.colors) for s in scenes)
    assert all(world.on_support(s) == (rho < 1) for s in redundant[:50])  # S_0 ⊂ S_ρ iff ρ < 1
    # shapes, layout and style are those of ρ = 0; a scene on its palettes keeps its colours
    for s, r, o in zip(scenes, redundant, off, strict=True):
        assert (s.shapes, s.layout, s.style) == (r.shapes, r.layout, r.style)
        assert o or s.colors == r.colors
    # the redrawn colours are uniform without repetition, given one off the palette: the mean
    # number of objects on their own palette, from the count of all injective assignments
    c = world.config
    k, total = c.n_objects, c.n_colors
    p_all = 1.0
    for i in range(k):
        p_all *= c.palette_size / (total - i)
    expected = (k * c.palette_size / total - k * p_all) / (1 - p_all)
    unbound = [s for s, o in zip(scenes, off, strict=True) if o]
    counts = torch.tensor([sum(own_palette(world, s)) for s in unbound]).float()
    assert abs(counts.mean() - expected) <= 4 * counts.std() / len(counts) ** 0.5
    assert {c for s in unbound for c in s.colors} == set(range(total))


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, k=st.integers(1, 3), draw=SEEDS)
def test_for_positive_rho_swap_and_replace_outputs_are_other_support_captions(seed, k, draw):
    """So a π that is the identity on the support leaves them as they are: it cannot repair
    them, and g** does not exist. ADD still leaves the support; `repair` rebinds."""
    world = TokenWorld(TokenWorldConfig(rho=0.5))
    scene = world.sample_scenes(1, torch.Generator().manual_seed(seed))[0]
    for operator in OPERATORS:
        negative, _ = world.apply_operator(scene, operator, k, torch.Generator().manual_seed(draw))
        assert world.caption(negative) != world.caption(scene)
        assert world.on_support(negative) == (operator != "add")
    if not all(own_palette(world, scene)):
        assert world.repair(world.caption(scene)) != world.caption(scene)


def test_rho_must_be_a_share():
    for rho in (-0.1, 1.5):
        with pytest.raises(ValueError, match="rho"):
            TokenWorldConfig(rho=rho)
