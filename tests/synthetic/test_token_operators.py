"""Operators on the token world: compositions and their depth, the in-vocabulary operators, the
edit depth read from a caption alone and the depth-d repair π_d."""

from __future__ import annotations

import re
from collections import Counter
from itertools import product

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic.token_operators import (
    IN_VOCABULARY,
    apply_in_vocabulary,
    compose,
    compositions,
    edit_depth,
    edit_depths,
    in_vocabulary,
    negatives,
    parse_composition,
    repair_beyond,
)
from synthetic.tokens import (
    COLORS,
    MATERIALS,
    OPERATORS,
    RELATION_WORDS,
    SHAPES,
    Scene,
    TokenWorld,
    TokenWorldConfig,
)

WORLD = TokenWorld(TokenWorldConfig())
SEEDS = st.integers(0, 2**31 - 1)
TRAINING_WORDS = set(COLORS) | set(SHAPES) | {w for ws in RELATION_WORDS.values() for w in ws}


def scene_of(seed: int, world: TokenWorld = WORLD) -> Scene:
    return world.sample_scenes(1, torch.Generator().manual_seed(seed))[0]


def powers(name: str) -> dict[str, int]:
    """The powers a composition's name states, read with a regular expression."""
    found = dict.fromkeys(OPERATORS, 0)
    for op, power in re.findall(r"(swap|replace|add)(?:\^(\d+))?", name):
        found[op] += int(power or 1)
    return found


def measured(scene: Scene, negative: Scene) -> dict[str, int]:
    """(SWAP, REPLACE, ADD) applications seen in a negative against its original: colours moved
    along one cycle, less one; shapes foreign to the original (keeping their colour); materials.
    Asserts that nothing else changed."""
    n = len(scene.shapes)
    replaced = [p for p in range(n) if negative.shapes[p] not in scene.shapes]
    assert all(negative.colors[p] == scene.colors[p] for p in replaced)
    assert all(negative.shapes[p] == scene.shapes[p] for p in range(n) if p not in replaced)
    moved = [p for p in range(n) if negative.colors[p] != scene.colors[p]]
    assert not set(moved) & set(replaced)
    if moved:  # p holds the colour object came_from[p] held; one cycle through all of moved
        came_from = {p: scene.colors.index(negative.colors[p]) for p in moved}
        assert set(came_from.values()) == set(moved)
        p, seen = moved[0], []
        while p not in seen:
            seen.append(p)
            p = came_from[p]
        assert sorted(seen) == sorted(moved)
    assert (negative.layout, negative.style) == (scene.layout, scene.style)
    return {
        "swap": max(len(moved) - 1, 0),
        "replace": len(replaced),
        "add": sum(m >= 0 for m in negative.materials),
    }


# ------------------------------------------------------------------------------ compositions


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_compositions_of_a_depth_are_every_multiset_of_primitives_once(depth):
    names = compositions(WORLD.config, depth)
    multisets = {tuple(sorted(c)) for c in product(OPERATORS, repeat=depth)}
    stated = [tuple(sorted(Counter(powers(n)).elements())) for n in names]
    assert sorted(stated) == sorted(multisets) and len(set(names)) == len(names)
    assert all(sum(powers(n).values()) == depth for n in names)


def test_compositions_are_exactly_those_every_scene_admits():
    world = TokenWorld(TokenWorldConfig(n_objects=3))
    scene, admitted = scene_of(0, world), compositions(world.config, 3)
    for combo in {tuple(sorted(c)) for c in product(OPERATORS, repeat=3)}:
        name = "∘".join(f"{op}^{k}" for op, k in Counter(combo).items())
        try:
            compose(world, scene, name, torch.Generator().manual_seed(0))
        except ValueError:
            assert not any(powers(a) == powers(name) for a in admitted)
        else:
            assert any(powers(a) == powers(name) for a in admitted)
    assert "swap^2∘replace" not in admitted and "swap∘replace∘add" in admitted


@settings(max_examples=150, deadline=None)
@given(seed=SEEDS, depth=st.integers(1, 3), pick=st.integers(0, 9), draw=SEEDS)
def test_composed_operators_have_the_depth_their_names_say_and_leave_the_support(
    seed, depth, pick, draw
):
    names = compositions(WORLD.config, depth)
    name = names[pick % len(names)]
    scene = scene_of(seed)
    negative, changed = compose(WORLD, scene, name, torch.Generator().manual_seed(draw))
    counts = measured(scene, negative)
    assert counts == powers(name) and sum(counts.values()) == depth
    before, after = WORLD.caption(scene), WORLD.caption(negative)
    assert edit_depths(WORLD, after) == counts and edit_depth(WORLD, after) == depth
    assert after != before and not WORLD.on_support(negative)
    assert all(w in WORLD.vocab for w in after) and len(after) <= WORLD.max_len
    assert WORLD.repair(after) == before
    differ = {
        f"{kind}{p}"
        for p in range(WORLD.config.n_objects)
        for kind, a, b in (
            ("shape", scene.shapes, negative.shapes),
            ("color", scene.colors, negative.colors),
            ("material", scene.materials, negative.materials),
        )
        if a[p] != b[p]
    }
    assert set(changed) == differ


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, operator=st.sampled_from(OPERATORS), k=st.integers(1, 3), draw=SEEDS)
def test_a_single_primitive_composes_to_what_apply_operator_draws(seed, operator, k, draw):
    scene = scene_of(seed)
    name = operator if k == 1 else f"{operator}^{k}"
    assert compose(WORLD, scene, name, torch.Generator().manual_seed(draw)) == (
        WORLD.apply_operator(scene, operator, k, torch.Generator().manual_seed(draw))
    )


def test_names_read_right_to_left_and_bad_names_are_refused():
    assert parse_composition("swap^2∘replace∘add") == (("add", 1), ("replace", 1), ("swap", 2))
    scene = scene_of(1)
    negative, _ = compose(WORLD, scene, "replace∘swap", torch.Generator().manual_seed(2))
    assert measured(scene, negative) == {"swap": 1, "replace": 1, "add": 0}
    for bad in ("swap∘replace∘swap", "spin", "swap^0", "swap^x", "swap∘"):
        with pytest.raises(ValueError, match="bad composition"):
            parse_composition(bad)


# ------------------------------------------------------------------------- edit depth and π_d


def test_edit_depth_counts_cycles_material_words_and_orphan_shapes_by_hand():
    # palettes: cube red/orange, ball yellow/lime, cone green/teal, ring cyan/blue, star navy/…
    two_swaps = "yellow cube left_of red ball left_of cyan cone left_of green ring".split()
    assert edit_depths(WORLD, two_swaps) == {"swap": 2, "replace": 0, "add": 0}
    three_cycle = "yellow cube above green ball above red cone above cyan ring".split()
    assert edit_depths(WORLD, three_cycle) == {"swap": 2, "replace": 0, "add": 0}
    orphan = "red star left_of yellow shiny ball left_of green cone left_of cyan ring".split()
    assert edit_depths(WORLD, orphan) == {"swap": 0, "replace": 1, "add": 1}


@settings(max_examples=100, deadline=None)
@given(seed=SEEDS, depth=st.integers(1, 3), pick=st.integers(0, 9), draw=SEEDS)
def test_repair_beyond_d_keeps_depth_up_to_d_and_undoes_deeper_outputs(seed, depth, pick, draw):
    names = compositions(WORLD.config, depth)
    scene = scene_of(seed)
    negative, _ = compose(
        WORLD, scene, names[pick % len(names)], torch.Generator().manual_seed(draw)
    )
    caption, edited = WORLD.caption(scene), WORLD.caption(negative)
    assert repair_beyond(WORLD, edited, 0) == WORLD.repair(edited)  # π_0 = π
    for d in range(4):
        assert repair_beyond(WORLD, caption, d) == caption
        assert repair_beyond(WORLD, edited, d) == (edited if depth <= d else caption)


# ---------------------------------------------------------------------- in-vocabulary operators


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, draw=SEEDS, rho=st.sampled_from([0.0, 0.5]))
def test_object_swap_and_relation_replace_give_another_valid_scene(seed, draw, rho):
    """On the support with a new caption and image: π cannot undo them and leaves them."""
    world = TokenWorld(TokenWorldConfig(rho=rho))
    scene = scene_of(seed, world)
    x = world.images([scene], torch.zeros(1, 2))
    for operator in ("object_swap", "relation_replace"):
        out, changed = apply_in_vocabulary(
            world, scene, operator, torch.Generator().manual_seed(draw)
        )
        before, after = world.caption(scene), world.caption(out)
        assert world.on_support(out) and after != before
        if rho == 0:  # π and every π_d leave it as it is
            assert world.repair(after) == after == repair_beyond(world, after, 3)
        assert not torch.allclose(world.images([out], torch.zeros(1, 2)), x)
        if operator == "object_swap":  # two objects exchange places, shape and colour together
            moved = [p for p in range(4) if out.shapes[p] != scene.shapes[p]]
            p, q = moved
            assert (out.shapes[p], out.colors[p]) == (scene.shapes[q], scene.colors[q])
            assert (out.shapes[q], out.colors[q]) == (scene.shapes[p], scene.colors[p])
            assert all(out.colors[r] == scene.colors[r] for r in range(4) if r not in moved)
            assert set(changed) == {f"{kind}{r}" for r in moved for kind in ("shape", "color")}
            assert Counter(after) == Counter(before)
        else:  # only the relation words change, each to the other layout's synonym
            diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
            assert len(diff) == 3 and changed == ("layout",)
            for a, b in diff:
                (layout_a,) = [n for n, ws in RELATION_WORDS.items() if a in ws]
                (layout_b,) = [n for n, ws in RELATION_WORDS.items() if b in ws]
                assert layout_a != layout_b
                assert RELATION_WORDS[layout_a].index(a) == RELATION_WORDS[layout_b].index(b)


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, draw=SEEDS)
def test_object_add_leaves_the_support_in_training_words_and_no_map_undoes_it(seed, draw):
    scene = scene_of(seed)
    out, changed = apply_in_vocabulary(
        WORLD, scene, "object_add", torch.Generator().manual_seed(draw)
    )
    p = int(changed[0].removeprefix("object"))
    n = len(scene.shapes)
    assert len(out.shapes) == n + 1 and not WORLD.on_support(out)
    drop = [
        Scene(
            out.shapes[:q] + out.shapes[q + 1 :],
            out.colors[:q] + out.colors[q + 1 :],
            out.materials[:q] + out.materials[q + 1 :],
            out.layout,
            out.style,
        )
        for q in range(n + 1)
    ]
    assert drop[p] == scene
    assert out.shapes[p] not in scene.shapes and out.colors[p] in WORLD.palette(out.shapes[p])
    # every drop is a support scene that object_add maps to this caption: no map undoes it
    assert all(WORLD.on_support(d) for d in drop) and len(set(drop)) == n + 1
    after = WORLD.caption(out)
    assert set(after) <= TRAINING_WORDS and not set(after) & set(MATERIALS)
    assert WORLD.words(WORLD.token_ids([after])[0]) == after
    assert WORLD.repair(after) == after != WORLD.caption(scene) and edit_depth(WORLD, after) == 0
    with pytest.raises(ValueError, match="object slots"):
        WORLD.images([out], torch.zeros(1, 2))


def test_in_vocabulary_draws_reach_every_pair_position_shape_and_colour():
    scene, gen = scene_of(9), torch.Generator().manual_seed(9)
    pairs, places, added = set(), set(), set()
    for _ in range(300):
        out, changed = apply_in_vocabulary(WORLD, scene, "object_swap", gen)
        pairs.add(tuple(sorted({int(c[-1]) for c in changed})))
        out, changed = apply_in_vocabulary(WORLD, scene, "object_add", gen)
        p = int(changed[0].removeprefix("object"))
        places.add(p)
        added.add((out.shapes[p], out.colors[p]))
    assert pairs == {(p, q) for p in range(4) for q in range(p + 1, 4)}
    assert places == set(range(5))
    absent = set(range(WORLD.config.n_shapes)) - set(scene.shapes)
    assert added == {(s, c) for s in absent for c in WORLD.palette(s)}


def test_object_add_needs_token_captions_room_and_an_absent_shape():
    assert in_vocabulary(WORLD.config) == IN_VOCABULARY
    for config in (
        TokenWorldConfig(view="sentence"),
        TokenWorldConfig(n_objects=2),
        TokenWorldConfig(n_shapes=4),
    ):
        world = TokenWorld(config)
        assert in_vocabulary(config) == ("object_swap", "relation_replace")
        with pytest.raises(ValueError, match="object_add"):
            apply_in_vocabulary(world, scene_of(0, world), "object_add", torch.Generator())


def test_negatives_apply_each_scenes_name_with_one_generator():
    scenes = WORLD.sample_scenes(6, torch.Generator().manual_seed(3))
    names = ["swap^2∘add", "object_swap", "replace", "relation_replace", "object_add", "add^3"]
    got = negatives(WORLD, scenes, names, torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    for scene, name, negative in zip(scenes, names, got, strict=True):
        apply = apply_in_vocabulary if name in IN_VOCABULARY else compose
        assert apply(WORLD, scene, name, gen)[0] == negative
    batch = WORLD.sample(6, torch.Generator().manual_seed(3))
    t_neg = WORLD.negative_captions(batch, [[s] for s in got])[:, 0]
    assert [WORLD.words(row) for row in t_neg] == [WORLD.caption(s) for s in got]
