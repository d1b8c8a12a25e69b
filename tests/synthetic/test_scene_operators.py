"""Tests for the SWAP / REPLACE / ADD hard negatives of the rendered scenes.

The truth of a caption for a scene is checked here by brute force over assignments of described
objects to scene objects, independently of ``holds``'s matching."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic.scene_operators import (
    CATEGORIES,
    MAX_K,
    OPERATORS,
    Negative,
    add,
    holds,
    replace,
    swap,
)
from synthetic.scenes import (
    _GAP,
    COLOR_NAMES,
    OBJECT_ATTRIBUTES,
    SHAPES,
    SIZE_WORDS,
    Caption,
    Scene,
    SceneConfig,
    SceneObject,
    describe,
    h_word,
    latent_columns,
    sample_example,
    scene_to_latents,
    size_word,
    v_word,
)

seeds = st.integers(0, 2**32 - 1)
EDITED = {"swap_att": {"color", "size"}, "swap_obj": {"shape"}}
EDITED |= {"replace_att": {"color", "size"}, "replace_obj": {"shape"}}


def _word(obj: SceneObject, attribute: str, config: SceneConfig) -> str:
    words = {"size": size_word(obj.size, config), "x": h_word(obj.x), "y": v_word(obj.y)}
    return words.get(attribute) or str(getattr(obj, attribute))


def _true_of(
    described: Scene, mentioned: frozenset[str], scene: Scene, config: SceneConfig
) -> bool:
    """Brute force: some injective assignment of the described objects' phrases fits ``scene``."""
    if "background" in mentioned and described.background != scene.background:
        return False
    phrases = [
        [(a, _word(o, a, config)) for a in OBJECT_ATTRIBUTES if f"obj{k}.{a}" in mentioned]
        for k, o in enumerate(described.objects)
    ]
    phrases = [p for p in phrases if p]
    return any(
        all(
            _word(scene.objects[i], a, config) == w
            for p, i in zip(phrases, pick, strict=True)
            for a, w in p
        )
        for pick in itertools.permutations(range(len(scene.objects)), len(phrases))
    )


def _words(text: str) -> list[str]:
    """Lower-case words with the article normalised ("an" -> "a")."""
    return ["a" if w == "an" else w for w in re.findall(r"[a-z]+", text.lower())]


def _differing(a: np.ndarray, b: np.ndarray, config: SceneConfig) -> set[str]:
    columns = latent_columns(config.max_objects)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return {c for c, s in zip(columns, same, strict=True) if not s}


def _entries(changed: frozenset[str]) -> set[tuple[int, str]]:
    """(slot, attribute) of changed object columns; colour ids and RGB channels are one entry."""
    entries = set()
    for column in changed:
        slot, field = re.fullmatch(r"obj(\d+)_(\w+)", column).groups()
        entries.add((int(slot), "color" if field in ("r", "g", "b") else field))
    return entries


def _assert_well_formed(negative: Negative, config: SceneConfig) -> None:
    """Objects left to right, inside the image, apart, not the background colour; the caption's
    colour, shape and size words are those ``negative.mentioned`` names in ``negative.scene``."""
    scene = negative.scene
    assert len(scene.objects) <= config.max_objects
    assert [o.x for o in scene.objects] == sorted(o.x for o in scene.objects)
    for i, a in enumerate(scene.objects):
        assert a.color != scene.background
        assert a.size / 2 <= a.x <= 1 - a.size / 2 and a.size / 2 <= a.y <= 1 - a.size / 2
        for b in scene.objects[i + 1 :]:
            assert max(abs(a.x - b.x), abs(a.y - b.y)) >= (a.size + b.size) / 2
    words = set(_words(negative.caption))
    for attribute, vocabulary in (("color", COLOR_NAMES), ("shape", SHAPES), ("size", SIZE_WORDS)):
        named = {
            _word(o, attribute, config)
            for k, o in enumerate(scene.objects)
            if f"obj{k}.{attribute}" in negative.mentioned
        }
        if attribute == "color" and "background" in negative.mentioned:
            named.add(scene.background)
        assert words & set(vocabulary) == named, attribute


def _examples(seed: int, max_objects: int) -> tuple[SceneConfig, Scene, tuple[Caption, ...]]:
    config = SceneConfig(seed=seed, max_objects=max_objects)
    return (config, *sample_example(0, config))


def _check_edit(
    scene: Scene, caption: Caption, negative: Negative, k: int, config: SceneConfig
) -> None:
    """What SWAP and REPLACE negatives share: a re-described caption, exactly the named latents
    changed, on mentioned entries of the category, each caption false of the other's scene."""
    assert negative.k == k and negative.mentioned == caption.mentioned
    assert negative.caption != caption.text
    assert (negative.caption, negative.mentioned) == describe(
        negative.scene, caption.rng(), caption.level, config
    )
    before, after = (scene_to_latents(s, config.max_objects) for s in (scene, negative.scene))
    assert _differing(before, after, config) == negative.changed
    assert all(f"obj{s}.{a}" in caption.mentioned for s, a in _entries(negative.changed))
    assert {a for _, a in _entries(negative.changed)} <= EDITED[negative.category]
    assert not _true_of(negative.scene, caption.mentioned, scene, config)
    assert not _true_of(scene, caption.mentioned, negative.scene, config)
    _assert_well_formed(negative, config)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, max_objects=st.integers(1, 5))
def test_swap_exchanges_the_words_of_k_disjoint_pairs_of_entries(
    seed: int, max_objects: int
) -> None:
    config, scene, captions = _examples(seed, max_objects)
    for caption, k in itertools.product(captions, range(1, MAX_K + 1)):
        negative = swap(scene, caption, np.random.default_rng(k), k, config)
        if negative is None:
            continue
        _check_edit(scene, caption, negative, k, config)
        assert negative.operator == "swap" and negative.category in CATEGORIES["swap"]
        old, new = _words(caption.text), _words(negative.caption)
        assert len(old) == len(new) and Counter(old) == Counter(new)
        assert sum(a != b for a, b in zip(old, new, strict=True)) == 2 * k
        entries = _entries(negative.changed)
        assert len(entries) == 2 * k
        for attribute in {a for _, a in entries}:
            slots = [s for s, a in entries if a == attribute]
            values = Counter(getattr(scene.objects[s], attribute) for s in slots)
            assert values == Counter(getattr(negative.scene.objects[s], attribute) for s in slots)


def _well_placed(scene: Scene) -> bool:
    """Inside the image and keeping the generator's gap between boxes."""
    return all(
        max(abs(a.x - b.x), abs(a.y - b.y)) >= (a.size + b.size) / 2 + _GAP
        and a.size / 2 <= a.x <= 1 - a.size / 2
        and a.size / 2 <= a.y <= 1 - a.size / 2
        for a, b in itertools.permutations(scene.objects, 2)
    )


@settings(max_examples=60, deadline=None)
@given(seed=seeds, max_objects=st.integers(2, 5))
def test_swap_applies_once_exactly_when_a_valid_single_swap_exists(
    seed: int, max_objects: int
) -> None:
    config, scene, captions = _examples(seed, max_objects)
    for caption in captions:
        valid = []
        for attribute in ("color", "size", "shape"):
            for i, j in itertools.combinations(range(len(scene.objects)), 2):
                a, b = scene.objects[i], scene.objects[j]
                keys = {f"obj{i}.{attribute}", f"obj{j}.{attribute}"}
                if keys <= caption.mentioned and getattr(a, attribute) != getattr(b, attribute):
                    objects = list(scene.objects)
                    objects[i] = dataclasses.replace(a, **{attribute: getattr(b, attribute)})
                    objects[j] = dataclasses.replace(b, **{attribute: getattr(a, attribute)})
                    edited = dataclasses.replace(scene, objects=tuple(objects))
                    valid.append(
                        not _true_of(edited, caption.mentioned, scene, config)
                        and not _true_of(scene, caption.mentioned, edited, config)
                        and _well_placed(edited)
                    )
        negative = swap(scene, caption, np.random.default_rng(0), 1, config)
        assert (negative is not None) == any(valid)
        if caption.level == "short":
            assert negative is None  # one described object: nothing to swap with


@settings(max_examples=60, deadline=None)
@given(seed=seeds, max_objects=st.integers(1, 5))
def test_replace_changes_one_word_per_application_to_a_value_absent_from_the_scene(
    seed: int, max_objects: int
) -> None:
    config, scene, captions = _examples(seed, max_objects)
    for caption, k in itertools.product(captions, range(1, MAX_K + 1)):
        negative = replace(scene, caption, np.random.default_rng(k), k, config)
        if negative is None:
            continue
        _check_edit(scene, caption, negative, k, config)
        assert negative.operator == "replace" and negative.category in CATEGORIES["replace"]
        old, new = _words(caption.text), _words(negative.caption)
        assert len(old) == len(new)
        assert sum(a != b for a, b in zip(old, new, strict=True)) == k
        entries = _entries(negative.changed)
        assert len(entries) == k
        new_values = [(a, getattr(negative.scene.objects[s], a)) for s, a in entries if a != "size"]
        assert len(set(new_values)) == len(new_values)  # new colours and shapes all differ
        for s, attribute in entries:
            before, after = scene.objects[s], negative.scene.objects[s]
            if attribute == "size":
                assert size_word(before.size, config) != size_word(after.size, config)
            else:
                present = {getattr(o, attribute) for o in scene.objects} | {scene.background}
                assert getattr(after, attribute) not in present


@settings(max_examples=60, deadline=None)
@given(seed=seeds, max_objects=st.integers(1, 5))
def test_add_inserts_a_phrase_per_new_object_into_the_unchanged_caption(
    seed: int, max_objects: int
) -> None:
    config, scene, captions = _examples(seed, max_objects)
    for caption, k in itertools.product(captions, range(1, MAX_K + 1)):
        negative = add(scene, caption, np.random.default_rng(k), k, config)
        if len(scene.objects) + k > max_objects:
            assert negative is None
        if negative is None:
            continue
        assert (negative.operator, negative.category, negative.k) == ("add", "add_obj", k)
        assert negative.caption != caption.text
        kept = [o for o in negative.scene.objects if o in scene.objects]
        assert tuple(kept) == scene.objects  # the original objects, in their order
        added = [s for s, o in enumerate(negative.scene.objects) if o not in scene.objects]
        assert len(added) == k
        phrases = Counter()
        for s in added:
            obj = negative.scene.objects[s]
            assert {f"obj{s}.shape", f"obj{s}.color"} <= negative.mentioned
            assert (obj.shape, obj.color) not in {(o.shape, o.color) for o in scene.objects}
            phrases[f"a {obj.color} {obj.shape}"] += 1
        assert len(phrases) == k
        _assert_inserted(caption, negative.caption, phrases)
        assert not _true_of(negative.scene, negative.mentioned, scene, config)
        slots = [c for c in latent_columns(max_objects) for s in added if c.startswith(f"obj{s}_")]
        assert negative.changed == {"n_objects", *slots}
        before = scene_to_latents(scene, max_objects)
        after = scene_to_latents(negative.scene, max_objects)
        assert after[0] == before[0] + k
        width = len(latent_columns(1)) - 5  # columns per slot
        kept_slots = np.delete(after[5:].reshape(max_objects, width), added, axis=0)
        padded = np.full((max_objects, width), np.nan)
        padded[: len(kept_slots)] = kept_slots
        padded[len(kept_slots) :, 0] = 0.0
        assert np.array_equal(padded.ravel(), before[5:], equal_nan=True)
        assert np.array_equal(after[1:5], before[1:5])
        _assert_well_formed(negative, config)


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    rest = iter(long)
    return all(item in rest for item in short)


def _assert_inserted(caption: Caption, text: str, phrases: Counter[str]) -> None:
    """``text`` is ``caption`` with the noun ``phrases`` inserted: as list items (the one "and"
    of a list moves to its new last item) or as sentences before any background sentence."""
    if caption.level == "long":
        old, new = (re.split(r"(?<=\.) ", t) for t in (caption.text, text))
        assert _is_subsequence(old, new) and len(new) == len(old) + phrases.total()
        if "background" in caption.mentioned:
            assert new[-1] == old[-1]
        pattern = r"(?:There is|The image shows) (an? \w+ \w+)\.|(An? \w+ \w+) is visible\."
        found = [re.fullmatch(pattern, s) for s in (Counter(new) - Counter(old)).elements()]
        assert all(found)
        assert Counter(" ".join(_words(m[1] or m[2])) for m in found) == phrases
        return
    old, new = ([w for w in _words(t) if w != "and"] for t in (caption.text, text))
    assert _is_subsequence(old, new)
    assert Counter(new) - Counter(old) == Counter(" ".join(phrases.elements()).split())
    assert _words(text).count("and") == 1


def test_a_swap_that_rewords_the_same_objects_is_no_negative() -> None:
    """'a red circle and a blue circle' with colours swapped says the same: no SWAP applies."""
    scene = Scene(
        "white",
        (
            SceneObject("circle", "red", 0.3, 0.25, 0.5),
            SceneObject("circle", "blue", 0.3, 0.75, 0.5),
        ),
    )
    wanted = frozenset({"obj0.shape", "obj0.color", "obj1.shape", "obj1.color"})
    for seed in range(10_000):
        state = np.random.default_rng(seed).bit_generator.state
        caption = Caption("medium", *describe(scene, np.random.default_rng(seed), "medium"), state)
        if caption.mentioned == wanted:
            break
    assert caption.mentioned == wanted
    assert swap(scene, caption, np.random.default_rng(0)) is None
    different = dataclasses.replace(
        scene, objects=(scene.objects[0], dataclasses.replace(scene.objects[1], shape="star"))
    )
    caption = dataclasses.replace(caption, text=describe(different, caption.rng(), "medium")[0])
    negative = swap(different, caption, np.random.default_rng(0), category="swap_att")
    assert negative is not None
    assert negative.caption in ("A blue circle and a red star.", "A red star and a blue circle.")


def test_operators_reject_bad_k_and_categories() -> None:
    config, scene, captions = _examples(0, 3)
    for operator in OPERATORS.values():
        for k in (0, MAX_K + 1):
            with pytest.raises(ValueError, match="k must be"):
                operator(scene, captions[0], np.random.default_rng(0), k, config)
    with pytest.raises(ValueError, match="replace_att"):
        swap(scene, captions[1], np.random.default_rng(0), category="replace_att")


@settings(max_examples=100, deadline=None)
@given(seed=seeds, data=st.data())
def test_holds_agrees_with_brute_force(seed: int, data: st.DataObject) -> None:
    config, scene, captions = _examples(seed, 4)
    pool = {a: [getattr(o, a) for o in scene.objects] for a in ("shape", "color", "size")}
    objects = [
        dataclasses.replace(o, **{a: data.draw(st.sampled_from(v)) for a, v in pool.items()})
        for o in data.draw(st.permutations(scene.objects))
    ]
    other = Scene(scene.background, tuple(objects))
    for caption in captions:
        for a, b in ((scene, other), (other, scene), (scene, scene)):
            assert holds(a, caption.mentioned, b, config) == _true_of(
                a, caption.mentioned, b, config
            )
