"""The token-level world: support, captions, composition operators and the repair map π."""

from __future__ import annotations

from collections import Counter

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
