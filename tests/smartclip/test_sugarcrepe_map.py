"""SugarCrepe's categories as our operators, and the edit depth of an item: hand-written items
with depths counted by hand, and the token world's operators, whose depth their names state."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from smartclip.hard_negatives import SUGARCREPE_CATEGORIES
from smartclip.sugarcrepe_map import (
    SUGARCREPE_MAP,
    category_of,
    edit_depth,
    max_cycles,
    our_word_depth,
    substitution_sets,
    words,
)
from synthetic.token_operators import IN_VOCABULARY, compositions, edit_depths, negatives
from synthetic.tokens import COLORS, OPERATORS, TokenWorld, TokenWorldConfig

WORLD = TokenWorld(TokenWorldConfig())

# (category, caption, negative caption, depth counted by hand, how)
ITEMS = [
    ("swap_att", "A red car parked beside a blue bike.", "A blue car parked beside a red bike.", 1,
     "red <-> blue: one swapped pair"),
    ("swap_obj", "A woman feeds a horse.", "A horse feeds a woman.", 1, "woman <-> horse"),
    ("swap_obj", "A dog chasing two cats", "Two dogs chasing a cat", 3,
     "a <-> two (one swap), dog -> dogs, cats -> cat"),
    ("replace_obj", "A cat sleeping on a sofa.", "A dog sleeping on a sofa.", 1, "cat -> dog"),
    ("replace_att", "A wooden table in a kitchen", "A glass table in a kitchen", 1, "one word"),
    ("replace_rel", "A cup on a table", "A cup under a table", 1, "on -> under"),
    ("replace_rel", "A man sitting on a bench", "A man lying under a bench", 2, "two words"),
    ("add_att", "A dog on the grass", "A small dog on the grass", 1, "small inserted"),
    ("add_obj", "A dog on the grass", "A dog and a cat on the grass", 3, "and a cat inserted"),
    ("replace_obj", "A big brown dog.", "A dog", 2, "big, brown deleted"),
    ("swap_att", "A red car.", "a  red car", 0, "the same words"),
    ("swap_att", "a big red car and a small blue bike", "a small blue car and a big red bike", 2,
     "big <-> small, red <-> blue"),
    # an insertion beside a swapped word: only the alignment that keeps red -> blue as a
    # substitution (not blue inserted, red -> striped) sees the swap
    ("mixed", "red cube left_of blue ball", "blue striped cube left_of red ball", 2,
     "red <-> blue, striped inserted"),
    ("mixed", "red cube left_of blue ball left_of green cone",
     "green cube left_of red ball left_of blue cone", 2, "a 3-cycle: two transpositions"),
]  # fmt: skip


def powers(name: str) -> int:
    """S + R + A of a composition's name, read with a regular expression."""
    return sum(int(p or 1) for p in re.findall(r"(?:swap|replace|add)(?:\^(\d+))?", name))


@pytest.mark.parametrize(("category", "caption", "negative", "depth", "how"), ITEMS)
def test_hand_written_items_have_the_depth_counted_by_hand(category, caption, negative, depth, how):
    assert edit_depth(caption, negative) == depth, how
    assert edit_depth(negative, caption) == depth  # swaps and indels read the same both ways


def test_words_are_lower_case_runs_without_punctuation():
    assert words("There's a Dog, left_of it.") == ["there's", "a", "dog", "left_of", "it"]


def test_substitution_sets_hold_every_optimal_alignment_and_the_distance():
    total, subs = substitution_sets(["red", "cube"], ["blue", "striped", "cube"])
    assert total == 2
    assert subs == {(("red", "blue"),), (("red", "striped"),)}
    assert substitution_sets(["a", "b"], ["a", "b"]) == (0, {()})
    assert substitution_sets([], ["a", "b"]) == (2, {()})


def test_max_cycles_counts_edge_disjoint_cycles():
    assert max_cycles(()) == 0
    assert max_cycles((("a", "b"), ("b", "a"))) == 1
    assert max_cycles((("a", "b"), ("b", "c"), ("c", "a"))) == 1
    assert max_cycles(tuple(sorted([("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]))) == 2
    # two 2-cycles through b beat the one 3-cycle a greedy longest choice would take
    edges = tuple(sorted([("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]))
    assert max_cycles(edges) == 2
    assert max_cycles((("a", "b"), ("c", "d"))) == 0


def test_every_composition_of_the_token_world_has_the_depth_its_name_states():
    gen = torch.Generator().manual_seed(0)
    for depth in (1, 2, 3):
        for name in compositions(WORLD.config, depth):
            for scene in WORLD.sample_scenes(8, gen):
                negative = negatives(WORLD, [scene], [name], gen)[0]
                caption, edited = WORLD.caption(scene), WORLD.caption(negative)
                measured = edit_depth(" ".join(caption), " ".join(edited))
                assert measured == powers(name) == depth, (name, caption, edited)
                assert measured == sum(edit_depths(WORLD, edited).values())


@pytest.mark.parametrize("n_objects", [3, 4, 5])
def test_in_vocabulary_operators_have_their_documented_word_depth(n_objects):
    world = TokenWorld(TokenWorldConfig(n_objects=n_objects))
    gen = torch.Generator().manual_seed(n_objects)
    expected = {"object_swap": 2, "relation_replace": n_objects - 1, "object_add": 3}
    for name in IN_VOCABULARY:
        assert our_word_depth(name, n_objects) == expected[name]
        for scene in world.sample_scenes(10, gen):
            negative = negatives(world, [scene], [name], gen)[0]
            caption, edited = (" ".join(world.caption(s)) for s in (scene, negative))
            assert edit_depth(caption, edited) == expected[name], (caption, edited)
    assert all(our_word_depth(op, n_objects) == 1 for op in OPERATORS)
    with pytest.raises(ValueError):
        our_word_depth("paint", n_objects)


def test_the_map_covers_sugarcrepe_once_with_operators_of_ours():
    assert set(SUGARCREPE_MAP) == set(SUGARCREPE_CATEGORIES)
    for category, m in SUGARCREPE_MAP.items():
        assert m.category == category
        assert m.kind == ("primitive" if m.operator in OPERATORS else "in-vocabulary")
        assert m.operator in OPERATORS + IN_VOCABULARY
        assert m.same_edit or m.difference
    expected = {
        "swap": "swap_att",
        "replace": "replace_obj",
        "add": "add_att",
        "object_swap": "swap_obj",
        "relation_replace": "replace_rel",
        "object_add": "add_obj",
    }
    assert {op: category_of(op) for op in OPERATORS + IN_VOCABULARY} == expected
    with pytest.raises(ValueError):
        category_of("swap^2")


def test_a_replaced_colour_reads_as_replace_or_as_a_support_caption_in_the_token_world():
    """replace_att's entry: at ρ = 0 a colour replaced by one outside its shape's palette leaves
    the shape without a colour of its palette, REPLACE's edit profile; by the other colour of its
    own palette, a support caption (profile 0). Word depth 1 either way."""
    gen = torch.Generator().manual_seed(1)
    seen = set()
    for scene in WORLD.sample_scenes(20, gen):
        caption = " ".join(WORLD.caption(scene))
        for p, shape in enumerate(scene.shapes):
            for colour in (c for c in range(WORLD.config.n_colors) if c not in scene.colors):
                colours = list(scene.colors)
                colours[p] = colour
                recoloured = replace(scene, colors=tuple(colours))
                edited = WORLD.caption(recoloured)
                inside = colour in WORLD.palette(shape)
                profile = {"swap": 0, "replace": 0 if inside else 1, "add": 0}
                assert edit_depths(WORLD, edited) == profile
                assert WORLD.on_support(recoloured) == inside
                assert edit_depth(caption, " ".join(edited)) == 1
                assert COLORS[colour] in edited
                seen.add(inside)
    assert seen == {True, False}
