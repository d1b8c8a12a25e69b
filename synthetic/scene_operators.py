"""Hard negatives of the rendered scenes' captions, with the image each one describes.

Three composition operators (SWAP, REPLACE, ADD, as in the token-level compositionality analysis
of CLIP, arXiv 2510.26302, and SugarCrepe) act on a scene and one of its captions
(``synthetic.scenes.Caption``). Each edits the scene latents and words the caption of the edited
scene, so ``render(negative.scene)`` is the image-side negative. Categories follow SugarCrepe:
colour and size words are attributes (``_att``), shapes are objects (``_obj``).

``swap``     swap_att, swap_obj  exchange one mentioned attribute (colour, size or shape) between
                                 two described objects whose words for it differ
``replace``  replace_att,        set one mentioned attribute of a described object to a value absent
             replace_obj         from the scene: a colour no object has and not the background, a
                                 shape no object has, another size word (the middle of its third)
``add``      add_obj             add an object whose shape or colour no object has, placed without
                                 overlap in its left-to-right slot, and insert "a <colour> <shape>"
                                 into the caption: a list item (short, medium) or a sentence (long)

Applying an operator k times (k = 1..3) makes k distinct operations of one category, each on
attribute entries (object, attribute) no earlier one touched, so none undoes another: SWAP k
changes 2k entries, REPLACE k changes k entries, ADD k adds k objects (up to ``max_objects``). SWAP
and REPLACE redraw the caption with ``describe`` from the caption's own generator state, so the
words of the edited entries (and their article a/an) change and nothing else; ADD keeps the
caption's words and inserts the new phrases. A negative is valid by construction: the negative
caption is false of the original scene, and for SWAP and REPLACE the original caption is false of
the negative scene (an ADD negative scene still shows everything the original caption says). An
operator that cannot apply k times returns ``None``.

Truth of a caption for a scene (``holds``): its described objects' phrases (mentioned shape,
colour, size, horizontal and vertical words) match distinct objects of the scene, and a mentioned
background is the scene's.

Public API
----------
``Negative``                                                  dataclass; ``render(neg.scene)``
``swap | replace | add(scene, caption, rng, k, config, *, category) -> Negative | None``
``OPERATORS``: name -> operator; ``CATEGORIES``: name -> SugarCrepe categories; ``MAX_K = 3``
``holds(described, mentioned, scene, config) -> bool``
``image_negatives(example, config, max_k) -> list[(Caption, Negative)]``
``write_hard_negatives(root, examples, config, max_k) -> Path``    (``synthetic.render_scenes``)

This module depends on numpy, Pillow and ``synthetic.scenes`` only.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthetic.scenes import (
    _UNPOSED,
    COLOR_NAMES,
    COLORS,
    LEVELS,
    OBJECT_ATTRIBUTES,
    SHAPES,
    SIZE_WORDS,
    Caption,
    Example,
    Scene,
    SceneConfig,
    SceneObject,
    _capitalize,
    _clear_of,
    _join_and,
    _place_object,
    _with_article,
    describe,
    h_word,
    latent_columns,
    render,
    size_word,
    v_word,
)

MAX_K = 3
CATEGORIES: dict[str, tuple[str, ...]] = {
    "swap": ("swap_att", "swap_obj"),
    "replace": ("replace_att", "replace_obj"),
    "add": ("add_obj",),
}
NEGATIVE_COLUMNS: tuple[str, ...] = (
    "filepath",
    "caption",
    "negative",
    "category",
    "k",
    "negative_filepath",
)
_EDITED = {"swap_att": ("color", "size"), "swap_obj": ("shape",)}
_EDITED |= {"replace_att": ("color", "size"), "replace_obj": ("shape",)}
_ADD_TRIES = 20  # objects drawn per added object before giving up on a novel shape or colour
_STREAM = 1  # tags the negatives' generators apart from the images' [seed, image_id]

_Edit = tuple[int, str, str | float]  # (slot, attribute, new value)


@dataclass(frozen=True)
class Negative:
    """A hard negative of a caption: the edited scene, the negative caption and what it mentions
    (slots in the edited scene), the operator, its SugarCrepe category, the number k of operations,
    and ``changed``: the ``latent_columns`` entries whose values the operations changed (for ADD,
    ``n_objects`` and every column of the added slots; objects right of an added one move one slot
    right per added object, and deleting the added slots gives back the original latents)."""

    scene: Scene
    caption: str
    mentioned: frozenset[str]
    operator: str
    category: str
    k: int
    changed: frozenset[str]


def swap(
    scene: Scene,
    caption: Caption,
    rng: np.random.Generator,
    k: int = 1,
    config: SceneConfig = SceneConfig(),
    *,
    category: str | None = None,
) -> Negative | None:
    """SWAP k times: exchange k mentioned attributes, each between two described objects whose
    words for it differ, all on distinct entries; ``None`` if no such k swaps give a valid negative.

    The category is ``category`` or drawn uniformly from those that apply; the swaps uniformly
    from the valid ones of that category."""

    def options(cat: str) -> list[tuple[_Edit, ...]]:
        pairs = [
            (a, i, j)
            for a in _EDITED[cat]
            for i, j in itertools.combinations(range(len(scene.objects)), 2)
            if {f"obj{i}.{a}", f"obj{j}.{a}"} <= caption.mentioned
            and _word(scene.objects[i], a, config) != _word(scene.objects[j], a, config)
        ]
        found = []
        for chosen in itertools.combinations(pairs, k):
            entries = [(a, s) for a, i, j in chosen for s in (i, j)]
            if len(set(entries)) == len(entries):
                found.append(
                    tuple(
                        (s, a, getattr(scene.objects[t], a))
                        for a, i, j in chosen
                        for s, t in ((i, j), (j, i))
                    )
                )
        return found

    return _edit_search(scene, caption, rng, k, config, "swap", category, options, lambda e: e)


def replace(
    scene: Scene,
    caption: Caption,
    rng: np.random.Generator,
    k: int = 1,
    config: SceneConfig = SceneConfig(),
    *,
    category: str | None = None,
) -> Negative | None:
    """REPLACE k times: give k distinct mentioned entries of described objects new values absent
    from the scene (colours no object has and not the background, shapes no object has, all
    distinct; another size word, the middle of its third); ``None`` if no valid negative exists.

    The category is ``category`` or drawn uniformly from those that apply; the entries and size
    words uniformly from the valid ones, then the colours and shapes uniformly."""
    absent = {
        "color": [
            c
            for c in COLOR_NAMES
            if c != scene.background and all(o.color != c for o in scene.objects)
        ],
        "shape": [s for s in SHAPES if all(o.shape != s for o in scene.objects)],
    }

    def options(cat: str) -> list[tuple[_Edit, ...]]:
        entries = [
            (s, a)
            for s in range(len(scene.objects))
            for a in _EDITED[cat]
            if f"obj{s}.{a}" in caption.mentioned
        ]
        found = []
        for chosen in itertools.combinations(entries, k):
            if any(sum(a == b for _, a in chosen) > len(absent[b]) for b in absent):
                continue
            sizes = [s for s, a in chosen if a == "size"]
            others = [
                [w for w in SIZE_WORDS if w != size_word(scene.objects[s].size, config)]
                for s in sizes
            ]
            for words in itertools.product(*others):
                new_sizes = [
                    (s, "size", _size_of(w, config)) for s, w in zip(sizes, words, strict=True)
                ]
                found.append((*new_sizes, *((s, a, "") for s, a in chosen if a != "size")))
        return found

    def realise(option: tuple[_Edit, ...]) -> tuple[_Edit, ...]:
        """Fill the colour and shape edits with distinct absent values, drawn uniformly."""
        values = {}
        for attribute, pool in absent.items():
            slots = [s for s, a, _ in option if a == attribute]
            drawn = rng.choice(len(pool), size=len(slots), replace=False)
            values |= {(s, attribute): pool[int(i)] for s, i in zip(slots, drawn, strict=True)}
        return tuple((s, a, values.get((s, a), v)) for s, a, v in option)

    return _edit_search(scene, caption, rng, k, config, "replace", category, options, realise)


def add(
    scene: Scene,
    caption: Caption,
    rng: np.random.Generator,
    k: int = 1,
    config: SceneConfig = SceneConfig(),
    *,
    category: str | None = None,
) -> Negative | None:
    """ADD k times: place k objects, each with a shape or a colour no object has yet (not the
    background colour), without overlap, and insert "a <colour> <shape>" for each at a random
    place of the caption: an item of its list (short, medium) or a sentence before any background
    sentence (long). ``None`` beyond ``config.max_objects`` or when no such object can be placed."""
    _categories("add", k, category)
    if len(scene.objects) + k > config.max_objects:
        return None
    added: list[SceneObject] = []
    for _ in range(k):
        present = [*scene.objects, *added]
        for _ in range(_ADD_TRIES):
            obj = _place_object(rng, present, scene.background, config)
            if obj is not None and (
                all(o.shape != obj.shape for o in present)
                or all(o.color != obj.color for o in present)
            ):
                added.append(obj)
                break
        else:
            return None
    objects = [*scene.objects, *added]
    order = sorted(range(len(objects)), key=lambda i: objects[i].x)
    slot = {old: new for new, old in enumerate(order)}
    text = caption.text
    for obj in added:
        text = _insert_phrase(text, _with_article(f"{obj.color} {obj.shape}"), caption, scene, rng)
    mentioned = {_move(key, slot) for key in caption.mentioned}
    new_slots = [slot[len(scene.objects) + i] for i in range(k)]
    mentioned |= {f"obj{s}.{a}" for s in new_slots for a in ("shape", "color")}
    changed = {"n_objects"} | {
        c for s in new_slots for c in latent_columns(config.max_objects) if c.startswith(f"obj{s}_")
    }
    new_scene = Scene(scene.background, tuple(objects[i] for i in order))
    return Negative(new_scene, text, frozenset(mentioned), "add", "add_obj", k, frozenset(changed))


Operator = Callable[[Scene, Caption, np.random.Generator, int, SceneConfig], Negative | None]
OPERATORS: dict[str, Operator] = {"swap": swap, "replace": replace, "add": add}


def holds(
    described: Scene,
    mentioned: frozenset[str],
    scene: Scene,
    config: SceneConfig = SceneConfig(),
) -> bool:
    """Whether a caption of ``described`` that mentions ``mentioned`` is true of ``scene``: the
    phrases of its described objects match distinct objects of ``scene`` and a mentioned
    background is ``scene``'s."""
    if "background" in mentioned and described.background != scene.background:
        return False
    phrases = [
        {a: _word(obj, a, config) for a in OBJECT_ATTRIBUTES if f"obj{k}.{a}" in mentioned}
        for k, obj in enumerate(described.objects)
        if f"obj{k}.shape" in mentioned  # describe names the shape of every object it describes
    ]
    fits = [
        [all(_word(o, a, config) == w for a, w in phrase.items()) for o in scene.objects]
        for phrase in phrases
    ]
    owner: dict[int, int] = {}  # object -> phrase, grown by augmenting paths (Kuhn's matching)

    def augment(p: int, seen: set[int]) -> bool:
        for o, fit in enumerate(fits[p]):
            if fit and o not in seen:
                seen.add(o)
                if o not in owner or augment(owner[o], seen):
                    owner[o] = p
                    return True
        return False

    return all(augment(p, set()) for p in range(len(phrases)))


def image_negatives(
    example: Example, config: SceneConfig = SceneConfig(), max_k: int = MAX_K
) -> list[tuple[Caption, Negative]]:
    """Every hard negative ``write_hard_negatives`` writes for one image, in its row order: per
    caption, operator (``OPERATORS`` order) and k = 1..``max_k``, the negative where the operator
    applies, drawn from ``np.random.default_rng([seed, image_id, 1, level, operator, k])`` (level
    and operator as indices into ``LEVELS`` and ``OPERATORS``)."""
    negatives = []
    for caption in example.captions:
        for o, operator in enumerate(OPERATORS.values()):
            for k in range(1, max_k + 1):
                key = [config.seed, example.image_id, _STREAM, LEVELS.index(caption.level), o, k]
                negative = operator(example.scene, caption, np.random.default_rng(key), k, config)
                if negative is not None:
                    negatives.append((caption, negative))
    return negatives


def write_hard_negatives(
    root: Path, examples: Sequence[Example], config: SceneConfig, max_k: int = MAX_K
) -> Path:
    """Write ``root/hard_negatives.csv`` (columns ``NEGATIVE_COLUMNS``, one row per negative of
    ``image_negatives``: image path, caption, negative caption, category, k, negative image path,
    paths relative to ``root``) and render each negative scene to
    ``root/negatives/<image>_<level>_<operator><k>.png``."""
    (root / "negatives").mkdir(exist_ok=True)
    path = root / "hard_negatives.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(NEGATIVE_COLUMNS)
        for example in examples:
            stem = Path(example.file_name).stem
            for caption, negative in image_negatives(example, config, max_k):
                name = f"negatives/{stem}_{caption.level}_{negative.operator}{negative.k}.png"
                image = render(negative.scene, config.image_size, config.supersample)
                image.save(root / name, format="PNG")
                row = [example.file_name, caption.text, negative.caption, negative.category]
                writer.writerow([*row, negative.k, name])
    return path


def _edit_search(
    scene: Scene,
    caption: Caption,
    rng: np.random.Generator,
    k: int,
    config: SceneConfig,
    operator: str,
    category: str | None,
    options: Callable[[str], list[tuple[_Edit, ...]]],
    realise: Callable[[tuple[_Edit, ...]], tuple[_Edit, ...]],
) -> Negative | None:
    """The first valid negative over the categories and each one's options, both in random order
    (so uniform over the categories that apply, then over their valid options); its caption is
    ``describe`` of the edited scene from the caption's generator state."""
    categories = _categories(operator, k, category)
    for c in rng.permutation(len(categories)):
        name = categories[int(c)]
        found = options(name)
        for i in rng.permutation(len(found)):
            edits = realise(found[int(i)])
            objects = list(scene.objects)
            for s, attribute, value in edits:
                objects[s] = dataclasses.replace(objects[s], **{attribute: value})
            edited = Scene(scene.background, tuple(objects))
            if _valid_edit(scene, edited, {s for s, _, _ in edits}, caption.mentioned, config):
                text, mentioned = describe(edited, caption.rng(), caption.level, config)
                changed = frozenset(
                    col for s, a, _ in edits for col in _columns(s, a, scene, edited)
                )
                return Negative(edited, text, mentioned, operator, name, k, changed)
    return None


def _categories(operator: str, k: int, category: str | None) -> tuple[str, ...]:
    """The categories an operator may draw from; raises on a bad ``k`` or ``category``."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be in 1..{MAX_K}, got {k}")
    if category is None:
        return CATEGORIES[operator]
    if category not in CATEGORIES[operator]:
        raise ValueError(f"{operator} has categories {CATEGORIES[operator]}, not {category!r}")
    return (category,)


def _valid_edit(
    scene: Scene, edited: Scene, slots: set[int], mentioned: frozenset[str], config: SceneConfig
) -> bool:
    """Edited objects inside the image and clear of the others; each caption false of the other's
    scene."""
    for s in slots:
        obj, others = edited.objects[s], edited.objects[:s] + edited.objects[s + 1 :]
        half = obj.size / 2
        if not (half <= obj.x <= 1 - half and half <= obj.y <= 1 - half):
            return False
        if not _clear_of(obj, others):
            return False
    return not holds(edited, mentioned, scene, config) and not holds(
        scene, mentioned, edited, config
    )


def _columns(slot: int, attribute: str, scene: Scene, edited: Scene) -> list[str]:
    """The latent columns of ``attribute`` in ``slot`` whose values differ between the scenes."""
    if attribute != "color":
        return [f"obj{slot}_{attribute}"]
    old, new = COLORS[scene.objects[slot].color], COLORS[edited.objects[slot].color]
    channels = [f"obj{slot}_{c}" for c, a, b in zip("rgb", old, new, strict=True) if a != b]
    return [f"obj{slot}_color", *channels]


def _word(obj: SceneObject, attribute: str, config: SceneConfig) -> str:
    """The caption word ``describe`` uses for ``attribute`` of ``obj``."""
    if attribute == "size":
        return size_word(obj.size, config)
    if attribute == "x":
        return h_word(obj.x)
    if attribute == "y":
        return v_word(obj.y)
    return str(getattr(obj, attribute))


def _size_of(word: str, config: SceneConfig) -> float:
    """The size in the middle of the third of ``[min_size, max_size]`` that ``word`` names."""
    frac = (SIZE_WORDS.index(word) + 0.5) / 3
    return config.min_size + frac * (config.max_size - config.min_size)


def _move(key: str, slot: dict[int, int]) -> str:
    """A mentioned key with its object slot renumbered by ``slot``."""
    found = re.fullmatch(r"obj(\d+)\.(\w+)", key)
    return key if found is None else f"obj{slot[int(found[1])]}.{found[2]}"


def _insert_phrase(
    text: str, phrase: str, caption: Caption, scene: Scene, rng: np.random.Generator
) -> str:
    """``text`` (``caption`` with earlier insertions) with ``phrase`` inserted at a random place
    of its grammar: a list item for short and medium captions, a sentence for long ones."""
    if caption.level == "long":
        sentences = re.split(r"(?<=\.) ", text)
        n_objects = len(sentences) - ("background" in caption.mentioned)
        template = _UNPOSED[int(rng.integers(len(_UNPOSED)))]
        sentences.insert(int(rng.integers(n_objects + 1)), _capitalize(template.format(np=phrase)))
        return " ".join(sentences)
    suffix = end = ""
    if caption.level == "medium":
        end = "."
        if "background" in caption.mentioned:
            suffix = f" on {_with_article(scene.background)} background"
    body = text.removesuffix(end).removesuffix(suffix)
    head, _, last = (body[:1].lower() + body[1:]).rpartition(" and ")
    items = [*(head.split(", ") if head else []), last]
    items.insert(int(rng.integers(len(items) + 1)), phrase)
    joined = _join_and(items)
    return (_capitalize(joined) if caption.level == "medium" else joined) + suffix + end
