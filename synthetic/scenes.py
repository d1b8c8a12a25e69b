"""Rendered toy scenes with ground-truth latents and captions at several granularities.

Each image shows ``min_objects..max_objects`` coloured shapes on a coloured background. Every drawn
attribute is kept as a numeric latent vector with named columns, and every caption carries the set
of attributes it mentions, so downstream code can regress attributes from image embeddings and know
exactly what each caption could have taught. Objects never overlap and are stored left to right
(slot ``k`` is the ``k``-th object from the left), so every slot is a function of the pixels.

Public API
----------
``SceneConfig``, ``SceneObject``, ``Scene``, ``Caption``, ``Example``   dataclasses
``sample_scene(rng, config) -> Scene``
``render(scene, size, supersample) -> PIL.Image.Image``
``describe(scene, rng, level) -> (caption, mentioned)``       mentioned: ``{"obj0.color", ...}``
``sample_example(image_id, config) -> (Scene, tuple[Caption, ...])``   as ``write_dataset`` draws
``latent_columns(max_objects) -> tuple[str, ...]``
``scene_to_latents(scene, max_objects) -> np.ndarray``; ``scene_from_latents(vector) -> Scene``
``write_dataset(out_dir, n_images, formats, config, ...) -> dict[str, SplitFiles]``
``load_latents(path) -> (image_ids, latents, columns)``

Hard negatives (SWAP, REPLACE, ADD) of the captions and their images: ``synthetic.scene_operators``,
which builds on this module. The dataset with its hard negatives, and the command line, live above
both: ``synthetic.render_scenes``.
Everything is seeded per image (``np.random.default_rng([seed, image_id])``): the same seed gives
byte-identical files. This module depends on numpy and Pillow only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "pink": (240, 130, 180),
    "brown": (130, 80, 40),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZE_WORDS: tuple[str, ...] = ("small", "medium", "large")
H_WORDS: tuple[str, ...] = ("left", "center", "right")
V_WORDS: tuple[str, ...] = ("top", "middle", "bottom")
LEVELS: tuple[str, ...] = ("short", "medium", "long")
FORMATS: tuple[str, ...] = ("csv", "tsv", "coco", "karpathy", "sharegpt4v", "wds")
OBJECT_ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "x", "y")  # as in "obj{k}.{a}"

_SLOT_FIELDS = ("present", "shape", "color", "r", "g", "b", "size", "x", "y")
_SCENE_FIELDS = ("n_objects", "bg_color", "bg_r", "bg_g", "bg_b")
_PLACEMENT_TRIES = 200
_SCENE_RESTARTS = 100
_GAP = 0.02  # minimum free space between object bounding boxes, as a fraction of the image side


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn and rendered. Sizes are bounding-box sides as fractions of the image."""

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    seed: int = 0
    min_size: float = 0.18
    max_size: float = 0.42
    supersample: int = 4
    caption_levels: tuple[str, ...] = LEVELS

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0.0 < self.min_size <= self.max_size < 1.0:
            raise ValueError(
                f"need 0 < min_size <= max_size < 1, got {self.min_size}, {self.max_size}"
            )
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")
        unknown = set(self.caption_levels) - set(LEVELS)
        if unknown or not self.caption_levels:
            raise ValueError(f"caption_levels must be a non-empty subset of {LEVELS}")


@dataclass(frozen=True)
class SceneObject:
    """One shape: centre ``(x, y)`` in [0, 1] (y grows downwards) and bounding-box side ``size``."""

    shape: str
    color: str
    size: float
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    """A background colour and objects ordered left to right."""

    background: str
    objects: tuple[SceneObject, ...]


def size_word(size: float, config: SceneConfig = SceneConfig()) -> str:
    """``small``/``medium``/``large``: the third of ``[min_size, max_size]`` that ``size`` is in."""
    frac = (size - config.min_size) / (config.max_size - config.min_size)
    return SIZE_WORDS[min(2, max(0, int(frac * 3)))]


def h_word(x: float) -> str:
    """``left``/``center``/``right``: the third of the image the centre is in."""
    return H_WORDS[min(2, max(0, int(x * 3)))]


def v_word(y: float) -> str:
    """``top``/``middle``/``bottom``: the third of the image the centre is in."""
    return V_WORDS[min(2, max(0, int(y * 3)))]


# --------------------------------------------------------------------------------------- sampling


def sample_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> Scene:
    """Draw a background and non-overlapping objects whose colours differ from the background."""
    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    for _ in range(_SCENE_RESTARTS):
        objects: list[SceneObject] = []
        while len(objects) < n_objects:
            placed = _place_object(rng, objects, background, config)
            if placed is None:
                break
            objects.append(placed)
        else:
            return Scene(background, tuple(sorted(objects, key=lambda o: o.x)))
    raise RuntimeError(
        f"could not place {n_objects} objects without overlap; lower max_objects or max_size"
    )


def _place_object(
    rng: np.random.Generator,
    placed: list[SceneObject],
    background: str,
    config: SceneConfig,
) -> SceneObject | None:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colors = [c for c in COLOR_NAMES if c != background]
    color = colors[int(rng.integers(len(colors)))]
    for _ in range(_PLACEMENT_TRIES):
        size = float(rng.uniform(config.min_size, config.max_size))
        x, y = (float(v) for v in rng.uniform(size / 2, 1 - size / 2, 2))
        candidate = SceneObject(shape, color, size, x, y)
        if _clear_of(candidate, placed):
            return candidate
    return None


def _clear_of(obj: SceneObject, others: Iterable[SceneObject]) -> bool:
    """Whether ``obj``'s bounding box keeps the minimum gap to every box of ``others``."""
    return all(
        max(abs(obj.x - o.x), abs(obj.y - o.y)) >= (obj.size + o.size) / 2 + _GAP for o in others
    )


# -------------------------------------------------------------------------------------- rendering


def render(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw the scene at ``supersample`` times the resolution, then box-filter down to ``size``."""
    side = size * supersample
    image = Image.new("RGB", (side, side), COLORS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj, side)
    if supersample == 1:
        return image
    return image.resize((size, size), Image.Resampling.BOX)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, side: int) -> None:
    cx, cy, r = obj.x * side, obj.y * side, obj.size * side / 2
    fill = COLORS[obj.color]
    box = (cx - r, cy - r, cx + r, cy + r)
    if obj.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif obj.shape == "square":
        draw.rectangle(box, fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif obj.shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif obj.shape == "cross":
        arm = r / 3
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")


# --------------------------------------------------------------------------------------- captions

_POSED = ("{np} sits {pos}.", "{np} is {pos}.", "There is {np} {pos}.", "{pos}, there is {np}.")
_UNPOSED = ("There is {np}.", "The image shows {np}.", "{np} is visible.")
_BACKGROUND = ("The background is {color}.", "Everything is on {a_color} background.")
# probabilities of mentioning (size, color, x, y) of a described object, per level
_MENTION_P = {
    "short": (0.4, 0.7, 0.0, 0.0),
    "medium": (0.4, 0.6, 0.4, 0.4),
    "long": (0.7, 0.8, 0.7, 0.7),
}


def describe(
    scene: Scene,
    rng: np.random.Generator,
    level: str,
    config: SceneConfig = SceneConfig(),
) -> tuple[str, frozenset[str]]:
    """Caption a random subset of objects and attributes; return it with the attributes mentioned.

    ``short``: one noun phrase ("a red circle"). ``medium``: one sentence about some objects,
    maybe with positions and the background. ``long``: one sentence per described object plus maybe
    a background sentence. Mentioned attributes are ``"obj{k}.{shape|color|size|x|y}"`` (``k`` is
    the slot in ``scene.objects``) and ``"background"``. The random draws depend only on the number
    of objects, never on attribute values, so changing an unmentioned attribute leaves the caption
    unchanged.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown caption level {level!r}; expected one of {LEVELS}")
    n = len(scene.objects)
    if n == 0:
        raise ValueError("cannot describe a scene without objects")
    mentioned: set[str] = set()
    if level == "short":
        k = int(rng.integers(n))
        attrs = _draw_mentions(rng, level)
        mentioned |= {f"obj{k}.{a}" for a in attrs}
        return _noun_phrase(scene.objects[k], attrs, config), frozenset(mentioned)

    order = [int(i) for i in rng.permutation(n)]
    if level == "medium":
        chosen = order[: int(rng.integers(1, n + 1))]
    else:
        chosen = order if rng.random() < 0.6 else order[: int(rng.integers(1, n + 1))]
    parts = []
    for k in chosen:
        obj, attrs = scene.objects[k], _draw_mentions(rng, level)
        mentioned |= {f"obj{k}.{a}" for a in attrs}
        phrase, position = _noun_phrase(obj, attrs, config), _position_phrase(obj, attrs)
        if level == "medium":
            parts.append(f"{phrase} {position}" if position else phrase)
        elif position:
            template = _POSED[int(rng.integers(len(_POSED)))]
            parts.append(_capitalize(template.format(np=phrase, pos=position)))
        else:
            template = _UNPOSED[int(rng.integers(len(_UNPOSED)))]
            parts.append(_capitalize(template.format(np=phrase)))
    with_background = rng.random() < (0.3 if level == "medium" else 0.6)
    if with_background:
        mentioned.add("background")
    if level == "medium":
        text = _join_and(parts)
        if with_background:
            text += f" on {_with_article(scene.background)} background"
        return _capitalize(text) + ".", frozenset(mentioned)
    if with_background:
        template = _BACKGROUND[int(rng.integers(len(_BACKGROUND)))]
        color = scene.background
        parts.append(_capitalize(template.format(color=color, a_color=_with_article(color))))
    return " ".join(parts), frozenset(mentioned)


@dataclass(frozen=True)
class Caption:
    """A caption with its level, the attributes it mentions and the generator state it was drawn
    from: ``describe(scene, caption.rng(), caption.level)`` redraws it, and since the draws depend
    only on the number of objects, describing an edited scene with as many objects from
    ``caption.rng()`` changes exactly the words of the edited mentioned attributes (and the
    article "a"/"an" before a changed word)."""

    level: str
    text: str
    mentioned: frozenset[str]
    rng_state: dict[str, Any]  # ``np.random.Generator.bit_generator.state`` before ``describe``

    def rng(self) -> np.random.Generator:
        """A fresh generator in the state ``describe`` started from for this caption."""
        bit_generator = getattr(np.random, self.rng_state["bit_generator"])()
        bit_generator.state = self.rng_state
        return np.random.Generator(bit_generator)


def sample_example(
    image_id: int, config: SceneConfig = SceneConfig()
) -> tuple[Scene, tuple[Caption, ...]]:
    """The scene of image ``image_id`` and its captions (one per ``config.caption_levels``), drawn
    as ``write_dataset`` draws them: from ``np.random.default_rng([config.seed, image_id])``, the
    scene first, then the captions in level order from the same generator."""
    rng = np.random.default_rng([config.seed, image_id])
    scene = sample_scene(rng, config)
    captions = []
    for level in config.caption_levels:
        state = rng.bit_generator.state
        captions.append(Caption(level, *describe(scene, rng, level, config), state))
    return scene, tuple(captions)


def _draw_mentions(rng: np.random.Generator, level: str) -> frozenset[str]:
    """The shape is always named; each of size/color/x/y with the level's probability."""
    optional = OBJECT_ATTRIBUTES[1:]
    draws = rng.random(len(optional))
    return frozenset(
        {"shape"} | {a for a, u, p in zip(optional, draws, _MENTION_P[level], strict=True) if u < p}
    )


def _noun_phrase(obj: SceneObject, attrs: frozenset[str], config: SceneConfig) -> str:
    words = [size_word(obj.size, config)] if "size" in attrs else []
    words += [obj.color] if "color" in attrs else []
    return _with_article(" ".join([*words, obj.shape]))


def _position_phrase(obj: SceneObject, attrs: frozenset[str]) -> str:
    h = h_word(obj.x) if "x" in attrs else ""
    v = v_word(obj.y) if "y" in attrs else ""
    if h and v:
        return "in the center" if (v, h) == ("middle", "center") else f"at the {v} {h}"
    if h:
        return {"left": "on the left", "center": "in the center column", "right": "on the right"}[h]
    if v:
        return {"top": "at the top", "middle": "in the middle row", "bottom": "at the bottom"}[v]
    return ""


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join_and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ---------------------------------------------------------------------------------------- latents


def latent_columns(max_objects: int) -> tuple[str, ...]:
    """Names of the latent vector's entries: scene fields, then ``obj{k}_{field}`` per slot."""
    slots = tuple(f"obj{k}_{f}" for k in range(max_objects) for f in _SLOT_FIELDS)
    return _SCENE_FIELDS + slots


def scene_to_latents(scene: Scene, max_objects: int) -> np.ndarray:
    """Float64 vector over ``latent_columns(max_objects)``; RGB in [0, 1]; shape/colour as ids.

    Empty slots have ``present = 0`` and NaN elsewhere, so regressions must mask by ``present``.
    """
    if len(scene.objects) > max_objects:
        raise ValueError(f"scene has {len(scene.objects)} objects > max_objects={max_objects}")
    bg_rgb = [c / 255 for c in COLORS[scene.background]]
    vector = [len(scene.objects), COLOR_NAMES.index(scene.background), *bg_rgb]
    for k in range(max_objects):
        if k < len(scene.objects):
            o = scene.objects[k]
            rgb = [c / 255 for c in COLORS[o.color]]
            ids = [SHAPES.index(o.shape), COLOR_NAMES.index(o.color)]
            vector += [1.0, *ids, *rgb, o.size, o.x, o.y]
        else:
            vector += [0.0] + [math.nan] * (len(_SLOT_FIELDS) - 1)
    return np.asarray(vector, dtype=np.float64)


def scene_from_latents(vector: np.ndarray) -> Scene:
    """Inverse of ``scene_to_latents`` (the number of slots is inferred from the length)."""
    n_slots, rest = divmod(len(vector) - len(_SCENE_FIELDS), len(_SLOT_FIELDS))
    if rest or n_slots < 0:
        raise ValueError(f"latent vector of length {len(vector)} does not match the column layout")
    slots = np.asarray(vector[len(_SCENE_FIELDS) :]).reshape(n_slots, len(_SLOT_FIELDS))
    objects = []
    for values in slots:
        slot = dict(zip(_SLOT_FIELDS, values.tolist(), strict=True))
        if slot["present"] == 1.0:
            shape, color = SHAPES[int(slot["shape"])], COLOR_NAMES[int(slot["color"])]
            objects.append(SceneObject(shape, color, slot["size"], slot["x"], slot["y"]))
    return Scene(COLOR_NAMES[int(vector[1])], tuple(objects))


def load_latents(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read ``latents.npz``: image ids ``[N]``, latents ``[N, D]`` and the ``D`` column names."""
    with np.load(path) as data:
        return data["image_id"], data["latents"], tuple(str(c) for c in data["columns"])


# ---------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SplitFiles:
    """What ``write_dataset`` wrote for one split; annotation paths are keyed by format.

    For ``wds`` the value is a brace pattern over the shards; ``karpathy`` is one file for all
    splits (entries carry ``split``), stored next to the split directories; ``negatives`` is the
    split's ``hard_negatives.csv`` when ``synthetic.render_scenes`` wrote hard negatives.
    """

    root: Path
    image_ids: tuple[int, ...]
    images: tuple[Path, ...]
    latents: Path
    scenes: Path
    annotations: dict[str, str]


@dataclass(frozen=True)
class Example:
    """One written image: its id, scene, captions and PNG path relative to the split root."""

    image_id: int
    scene: Scene
    captions: tuple[Caption, ...]
    file_name: str


def write_dataset(
    out_dir: str | Path,
    n_images: int,
    formats: Sequence[str] = ("csv",),
    config: SceneConfig = SceneConfig(),
    *,
    val_fraction: float = 0.1,
    shard_size: int = 100,
) -> dict[str, SplitFiles]:
    """Render ``n_images`` scenes into ``out_dir/{train,val}/`` with annotations in ``formats``.

    Each split gets ``images/*.png``, ``latents.npz`` (ground truth aligned by image id),
    ``scenes.json`` (scenes, captions and the attributes each caption mentions) and the requested
    annotations: ``captions.csv``/``captions.tsv`` (``filepath``, ``title``, ``image_id``, ``level``
    columns; one row per caption), ``coco_captions.json`` (official COCO layout),
    ``sharegpt4v.json`` (longest caption as the gpt turn) and ``shards/{00000..}.tar``
    (webdataset: ``png``, ``txt`` = longest caption, ``json`` = all captions). ``karpathy`` writes
    ``out_dir/karpathy.json``. Image paths are relative to the annotation file's directory. The
    last ``round(n_images * val_fraction)`` image ids form ``val``; empty splits are not written.
    Hard negatives are added by ``synthetic.render_scenes.write_dataset_with_negatives``.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; expected a subset of {FORMATS}")
    if n_images < 1 or shard_size < 1 or not 0.0 <= val_fraction < 1.0:
        raise ValueError("need n_images >= 1, shard_size >= 1 and 0 <= val_fraction < 1")
    out = Path(out_dir)
    n_train = n_images - round(n_images * val_fraction)
    id_width = max(6, len(str(n_images - 1)))
    split_ids = {"train": range(n_train), "val": range(n_train, n_images)}
    items_by_split: dict[str, list[Example]] = {}
    for split, ids in split_ids.items():
        if len(ids) > 0:
            (out / split / "images").mkdir(parents=True, exist_ok=True)
            items_by_split[split] = [_write_image(out / split, i, id_width, config) for i in ids]
    shared = {}
    if "karpathy" in formats:
        shared["karpathy"] = str(_write_karpathy(out / "karpathy.json", items_by_split))
    written: dict[str, SplitFiles] = {}
    for split, items in items_by_split.items():
        root = out / split
        annotations = {
            fmt: str(_write_annotations(root, fmt, items, config, shard_size))
            for fmt in formats
            if fmt != "karpathy"
        }
        latents = np.stack([scene_to_latents(it.scene, config.max_objects) for it in items])
        _save_npz(
            root / "latents.npz",
            image_id=np.asarray(split_ids[split], dtype=np.int64),
            latents=latents,
            columns=np.asarray(latent_columns(config.max_objects)),
        )
        _write_json(root / "scenes.json", [_scene_record(it) for it in items])
        written[split] = SplitFiles(
            root=root,
            image_ids=tuple(split_ids[split]),
            images=tuple(root / it.file_name for it in items),
            latents=root / "latents.npz",
            scenes=root / "scenes.json",
            annotations=annotations | shared,
        )
    return written


def _write_image(root: Path, image_id: int, id_width: int, config: SceneConfig) -> Example:
    scene, captions = sample_example(image_id, config)
    file_name = f"images/{image_id:0{id_width}d}.png"
    render(scene, config.image_size, config.supersample).save(root / file_name, format="PNG")
    return Example(image_id, scene, captions, file_name)


def _longest(item: Example) -> str:
    return max((c.text for c in item.captions), key=len)


def _write_annotations(
    root: Path, fmt: str, items: list[Example], config: SceneConfig, shard_size: int
) -> Path | str:
    if fmt in ("csv", "tsv"):
        path = root / f"captions.{fmt}"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            writer.writerow(["filepath", "title", "image_id", "level"])
            for it in items:
                for c in it.captions:
                    writer.writerow([it.file_name, c.text, it.image_id, c.level])
        return path
    if fmt == "coco":
        images = [
            {
                "id": it.image_id,
                "file_name": it.file_name,
                "width": config.image_size,
                "height": config.image_size,
            }
            for it in items
        ]
        captions = [(it.image_id, c.text) for it in items for c in it.captions]
        annotations = [
            {"id": i, "image_id": image_id, "caption": text}
            for i, (image_id, text) in enumerate(captions)
        ]
        info = {"description": "smartclip synthetic scenes", "seed": config.seed}
        path = root / "coco_captions.json"
        _write_json(path, {"info": info, "images": images, "annotations": annotations})
        return path
    if fmt == "sharegpt4v":
        entries = [
            {
                "id": it.image_id,
                "image": it.file_name,
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe this image in detail."},
                    {"from": "gpt", "value": _longest(it)},
                ],
            }
            for it in items
        ]
        path = root / "sharegpt4v.json"
        _write_json(path, entries)
        return path
    if fmt == "wds":
        return _write_shards(root, items, shard_size)
    raise ValueError(f"no per-split writer for format {fmt!r}")


def _write_shards(root: Path, items: list[Example], shard_size: int) -> str:
    shard_dir = root / "shards"
    shard_dir.mkdir(exist_ok=True)
    n_shards = math.ceil(len(items) / shard_size)
    for s in range(n_shards):
        with tarfile.open(shard_dir / f"{s:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for it in items[s * shard_size : (s + 1) * shard_size]:
                key = Path(it.file_name).stem
                meta = {"image_id": it.image_id, "captions": [c.text for c in it.captions]}
                _add_member(tar, f"{key}.png", (root / it.file_name).read_bytes())
                _add_member(tar, f"{key}.txt", _longest(it).encode())
                _add_member(tar, f"{key}.json", json.dumps(meta).encode())
    return str(shard_dir / f"{{00000..{n_shards - 1:05d}}}.tar")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # mtime, uid and gid default to 0: reproducible archives
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_karpathy(path: Path, items_by_split: dict[str, list[Example]]) -> Path:
    images = [
        {
            "imgid": it.image_id,
            "filepath": str(Path(split) / Path(it.file_name).parent),
            "filename": Path(it.file_name).name,
            "split": split,
            "sentences": [{"raw": c.text} for c in it.captions],
        }
        for split, items in items_by_split.items()
        for it in items
    ]
    _write_json(path, {"dataset": "synthetic_scenes", "images": images})
    return path


def _scene_record(item: Example) -> dict[str, object]:
    return {
        "image_id": item.image_id,
        "file_name": item.file_name,
        "background": item.scene.background,
        "objects": [vars(o) for o in item.scene.objects],
        "captions": [
            {"level": c.level, "text": c.text, "mentioned": sorted(c.mentioned)}
            for c in item.captions
        ],
    }


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)
