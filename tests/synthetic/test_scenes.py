"""Tests for the rendered-scenes generator: determinism, ground truth, captions, files."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from synthetic.scenes import (
    COLOR_NAMES,
    COLORS,
    FORMATS,
    H_WORDS,
    LEVELS,
    OBJECT_ATTRIBUTES,
    SHAPES,
    SIZE_WORDS,
    V_WORDS,
    Scene,
    SceneConfig,
    describe,
    h_word,
    latent_columns,
    load_latents,
    render,
    sample_example,
    sample_scene,
    scene_from_latents,
    scene_to_latents,
    size_word,
    v_word,
    write_dataset,
)

CONFIG = SceneConfig()
seeds = st.integers(0, 2**32 - 1)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    config = SceneConfig(seed=7)
    for name in ("a", "b"):
        write_dataset(tmp_path / name, 30, FORMATS, config, val_fraction=0.2, shard_size=7)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first == second
    assert any(name.endswith(".tar") for name in first)
    write_dataset(tmp_path / "c", 30, FORMATS, SceneConfig(seed=8), val_fraction=0.2, shard_size=7)
    other = _files(tmp_path / "c")
    assert other.keys() == first.keys()
    pngs = [name for name in first if name.endswith(".png")]
    assert sum(first[n] != other[n] for n in pngs) == len(pngs)


def test_saved_latents_rerender_to_the_saved_pixels(tmp_path: Path) -> None:
    config = SceneConfig(image_size=48, seed=3)
    written = write_dataset(tmp_path, 40, ("csv",), config, val_fraction=0.25)
    for files in written.values():
        image_ids, latents, columns = load_latents(files.latents)
        assert columns == latent_columns(config.max_objects)
        assert image_ids.tolist() == list(files.image_ids)
        scenes = json.loads(files.scenes.read_text())
        for image_id, vector, path, meta in zip(
            image_ids, latents, files.images, scenes, strict=True
        ):
            assert meta["image_id"] == image_id and int(path.stem) == image_id
            scene = scene_from_latents(vector)
            assert [dataclasses.asdict(o) for o in scene.objects] == meta["objects"]
            assert scene.background == meta["background"]
            expected = np.asarray(render(scene, config.image_size, config.supersample))
            assert np.array_equal(np.asarray(Image.open(path)), expected)


def test_splits_are_disjoint_and_sized_by_val_fraction(tmp_path: Path) -> None:
    written = write_dataset(tmp_path, 20, ("karpathy", "csv"), val_fraction=0.25)
    assert written["train"].image_ids == tuple(range(15))
    assert written["val"].image_ids == tuple(range(15, 20))
    karpathy = json.loads((tmp_path / "karpathy.json").read_text())["images"]
    assert [e["split"] for e in karpathy] == ["train"] * 15 + ["val"] * 5
    for entry in karpathy:
        assert (tmp_path / entry["filepath"] / entry["filename"]).is_file()
    with Path(written["val"].annotations["csv"]).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * len(LEVELS)
    assert {r["level"] for r in rows} == set(LEVELS)
    assert all((written["val"].root / r["filepath"]).is_file() for r in rows)
    assert "val" not in write_dataset(tmp_path / "all", 5, ("csv",), val_fraction=0.0)


@settings(max_examples=200, deadline=None)
@given(seed=seeds, max_objects=st.integers(1, 4))
def test_sampled_scenes_respect_the_config(seed: int, max_objects: int) -> None:
    config = SceneConfig(max_objects=max_objects)
    scene = sample_scene(np.random.default_rng(seed), config)
    assert config.min_objects <= len(scene.objects) <= max_objects
    xs = [o.x for o in scene.objects]
    assert xs == sorted(xs)
    for i, a in enumerate(scene.objects):
        assert a.color != scene.background
        assert config.min_size <= a.size <= config.max_size
        assert a.size / 2 <= a.x <= 1 - a.size / 2 and a.size / 2 <= a.y <= 1 - a.size / 2
        for b in scene.objects[i + 1 :]:
            assert max(abs(a.x - b.x), abs(a.y - b.y)) >= (a.size + b.size) / 2  # boxes disjoint
    vector = scene_to_latents(scene, max_objects)
    assert vector.shape == (len(latent_columns(max_objects)),)
    assert scene_from_latents(vector) == scene


@settings(max_examples=50, deadline=None)
@given(seed=seeds)
def test_render_paints_each_object_centre_in_its_colour(seed: int) -> None:
    scene = sample_scene(np.random.default_rng(seed))
    pixels = np.asarray(render(scene, 64))
    for obj in scene.objects:
        assert tuple(pixels[int(obj.y * 64), int(obj.x * 64)]) == COLORS[obj.color]
    assert pixels.shape == (64, 64, 3)


def _perturb(scene: Scene, keys: set[str], rng: np.random.Generator) -> Scene:
    """Move each attribute named in ``keys`` to a value with a different caption word."""

    def other(options: tuple[str, ...], current: str) -> str:
        return str(rng.choice([o for o in options if o != current]))

    def other_third(word: str, words: tuple[str, ...], lo: float, hi: float) -> float:
        third = (words.index(other(words, word)) + 0.5) / 3
        return lo + third * (hi - lo)

    objects = list(scene.objects)
    for k, obj in enumerate(objects):
        changes: dict[str, object] = {}
        if f"obj{k}.shape" in keys:
            changes["shape"] = other(SHAPES, obj.shape)
        if f"obj{k}.color" in keys:
            changes["color"] = other(COLOR_NAMES, obj.color)
        if f"obj{k}.size" in keys:
            size = size_word(obj.size)
            changes["size"] = other_third(size, SIZE_WORDS, CONFIG.min_size, CONFIG.max_size)
        if f"obj{k}.x" in keys:
            changes["x"] = other_third(h_word(obj.x), H_WORDS, 0.0, 1.0)
        if f"obj{k}.y" in keys:
            changes["y"] = other_third(v_word(obj.y), V_WORDS, 0.0, 1.0)
        objects[k] = dataclasses.replace(obj, **changes)
    background = other(COLOR_NAMES, scene.background) if "background" in keys else scene.background
    return Scene(background, tuple(objects))


def _all_keys(scene: Scene) -> set[str]:
    objects = range(len(scene.objects))
    return {f"obj{k}.{a}" for k in objects for a in OBJECT_ATTRIBUTES} | {"background"}


@settings(max_examples=150, deadline=None)
@given(scene_seed=seeds, caption_seed=seeds, level=st.sampled_from(LEVELS))
def test_captions_depend_exactly_on_the_mentioned_attributes(
    scene_seed: int, caption_seed: int, level: str
) -> None:
    rng = np.random.default_rng(scene_seed)
    scene = sample_scene(rng)
    caption, mentioned = describe(scene, np.random.default_rng(caption_seed), level)
    assert mentioned <= _all_keys(scene)
    unmentioned = _perturb(scene, _all_keys(scene) - mentioned, rng)
    assert describe(unmentioned, np.random.default_rng(caption_seed), level) == (caption, mentioned)
    for key in sorted(mentioned):
        changed = _perturb(scene, {key}, rng)
        assert describe(changed, np.random.default_rng(caption_seed), level)[0] != caption, key


@settings(max_examples=150, deadline=None)
@given(scene_seed=seeds, caption_seed=seeds, level=st.sampled_from(LEVELS))
def test_caption_words_come_from_mentioned_attributes(
    scene_seed: int, caption_seed: int, level: str
) -> None:
    scene = sample_scene(np.random.default_rng(scene_seed))
    caption, mentioned = describe(scene, np.random.default_rng(caption_seed), level)
    words = set(re.findall(r"[a-z]+", caption.lower()))

    def named(attribute: str, word_of) -> set[str]:
        objs = enumerate(scene.objects)
        return {word_of(o) for k, o in objs if f"obj{k}.{attribute}" in mentioned}

    colors = named("color", lambda o: o.color) | (
        {scene.background} if "background" in mentioned else set()
    )
    assert words & set(COLOR_NAMES) == colors
    assert words & set(SHAPES) == named("shape", lambda o: o.shape)
    assert words & set(SIZE_WORDS) == named("size", lambda o: size_word(o.size))
    assert words & set(H_WORDS) <= named("x", lambda o: h_word(o.x))
    assert words & set(V_WORDS) <= named("y", lambda o: v_word(o.y))
    assert ("background" in words) == ("background" in mentioned)
    n_sentences = caption.count(". ") + caption.endswith(".")
    if level == "short":
        assert n_sentences == 0 and len(named("shape", lambda o: o.shape)) == 1
    elif level == "medium":
        assert n_sentences == 1
    else:
        described = {k for k in mentioned if k.endswith(".shape")}
        assert n_sentences == len(described) + ("background" in mentioned)


def test_sample_example_redraws_the_written_captions(tmp_path: Path) -> None:
    config = SceneConfig(seed=9)
    written = write_dataset(tmp_path, 6, ("csv",), config, val_fraction=0.0)
    for record in json.loads(written["train"].scenes.read_text()):
        scene, captions = sample_example(record["image_id"], config)
        assert [c.text for c in captions] == [c["text"] for c in record["captions"]]
        assert [sorted(c.mentioned) for c in captions] == [
            c["mentioned"] for c in record["captions"]
        ]
        for caption in captions:
            assert describe(scene, caption.rng(), caption.level, config) == (
                caption.text,
                caption.mentioned,
            )
    assert [c.level for c in captions] == list(LEVELS)


def test_describe_and_config_reject_bad_arguments() -> None:
    scene = sample_scene(np.random.default_rng(0))
    with pytest.raises(ValueError, match="caption level"):
        describe(scene, np.random.default_rng(0), "huge")
    with pytest.raises(ValueError, match="min_objects"):
        SceneConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="formats"):
        write_dataset("unused", 3, ("parquet",))


def test_thousand_images_are_written_quickly(tmp_path: Path) -> None:
    start = time.perf_counter()
    write_dataset(tmp_path, 1000, ("csv",))
    assert time.perf_counter() - start < 15.0  # a few seconds on one core; generous for CI
    assert len(list((tmp_path / "train" / "images").glob("*.png"))) == 900
