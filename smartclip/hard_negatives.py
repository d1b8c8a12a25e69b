"""Hard-negative caption benchmarks: does an embedding tell a caption from a minimally edited one?

Two sources become one item model, ``HardNegative``:

- SugarCrepe (NeurIPS 2023 datasets track; CLIP_benchmark's ``sugar_crepe/<c>``):
  one JSON file per category, ``{"0": {"filename", "caption", "negative_caption"}, ...}``, over
  COCO val2017 images found in a separate folder (``load_sugarcrepe``).
- Our own ``hard_negatives.csv`` for the built-in scenes, with columns ``filepath, caption,
  negative, category, k, negative_filepath``: ``k`` is how many times the edit was applied and
  ``negative_filepath`` (may be empty) a rendered image of the negative caption; paths are
  relative to the CSV's folder (``load_hard_negatives_csv``).

Text-side accuracy counts an item right when cos(image, caption) > cos(image, negative);
image-side accuracy, for items with a negative image, when cos(caption, image) >
cos(caption, negative image) (``wins``, ``hard_negative_report``). Malformed entries are skipped
and counted as the caption loaders of ``smartclip.data`` do; items with an unreadable image are
dropped and counted up front.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from smartclip.data import _csv_rows, _open_image, _read_json, _Skips, _text

logger = logging.getLogger(__name__)

SUGARCREPE_CATEGORIES: tuple[str, ...] = (
    "add_obj",
    "add_att",
    "replace_obj",
    "replace_att",
    "replace_rel",
    "swap_obj",
    "swap_att",
)
# SugarCrepe's paper reports its categories under these three headings
SUGARCREPE_GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(c for c in SUGARCREPE_CATEGORIES if c.startswith(f"{group}_"))
    for group in ("add", "replace", "swap")
}
CSV_COLUMNS: tuple[str, ...] = ("filepath", "caption", "negative", "category", "k")
CSV_OPTIONAL_COLUMNS: tuple[str, ...] = ("negative_filepath",)


@dataclass(frozen=True)
class HardNegative:
    """An image, its caption, a negative caption of the same words edited, the edit's category;
    optionally an image of the negative caption and how many times the edit was applied."""

    image: Path
    caption: str
    negative: str
    category: str
    negative_image: Path | None = None
    k: int | None = None


@dataclass(frozen=True)
class HardNegatives:
    """The usable items of one benchmark, the malformed entries skipped and the items dropped
    for an unreadable image."""

    items: tuple[HardNegative, ...]
    n_malformed: int
    n_bad_images: int


def load_sugarcrepe(
    folder: str | Path,
    image_root: str | Path,
    categories: Sequence[str] = SUGARCREPE_CATEGORIES,
) -> HardNegatives:
    """The items of ``folder/<category>.json`` for each of ``categories`` whose file is there
    (the others are logged), images under ``image_root``.

    Raises ValueError for an unknown category, when none of the files is there, for a file that
    is not a JSON object, and when no item is left.
    """
    folder, image_root = Path(folder), Path(image_root)
    unknown = sorted(set(categories) - set(SUGARCREPE_CATEGORIES))
    if unknown:
        raise ValueError(f"unknown SugarCrepe categories {unknown}; known: {SUGARCREPE_CATEGORIES}")
    present = [c for c in categories if (folder / f"{c}.json").is_file()]
    if not present:
        names = ", ".join(f"{c}.json" for c in categories)
        raise ValueError(f"{folder}: none of SugarCrepe's files ({names}) is there")
    for category in categories:
        if category not in present:
            logger.warning("%s: no %s.json; category %s left out", folder, category, category)
    items, n_malformed = [], 0
    for category in present:
        path = folder / f"{category}.json"
        data = _read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: SugarCrepe files are JSON objects of entries")
        skip = _Skips(path)
        for key, entry in data.items():
            fields = [
                _text(entry.get(name)) if isinstance(entry, dict) else None
                for name in ("filename", "caption", "negative_caption")
            ]
            if None in fields:
                skip(f"entry {key!r}", "needs 'filename', 'caption' and 'negative_caption'")
            else:
                filename, caption, negative = fields
                items.append(HardNegative(image_root / filename, caption, negative, category))
        n_malformed += skip.summary()
    return _readable(items, n_malformed, folder)


def load_hard_negatives_csv(path: str | Path) -> HardNegatives:
    """The items of a ``hard_negatives.csv`` (columns in CSV_COLUMNS, optionally
    ``negative_filepath``), paths relative to its folder.

    Rows with an empty required field or a ``k`` that is not a positive integer are skipped and
    counted. Raises ValueError for a missing column and when no item is left.
    """
    path = Path(path)
    skip, items = _Skips(path), []
    for line, row in _csv_rows(path, CSV_COLUMNS, skip, optional=CSV_OPTIONAL_COLUMNS):
        k = row["k"]
        if not (k.isdecimal() and int(k) >= 1):
            skip(f"row at line {line}", f"k must be a positive integer, not {k!r}")
            continue
        negative_image = row["negative_filepath"]
        items.append(
            HardNegative(
                image=path.parent / row["filepath"],
                caption=row["caption"],
                negative=row["negative"],
                category=row["category"],
                negative_image=None if negative_image is None else path.parent / negative_image,
                k=int(k),
            )
        )
    return _readable(items, skip.summary(), path)


def _readable(items: list[HardNegative], n_malformed: int, source: Path) -> HardNegatives:
    """The items whose image and negative image (if any) decode, each file tried once; raises
    ValueError when none is left."""
    paths = dict.fromkeys(p for x in items for p in (x.image, x.negative_image) if p is not None)
    bad = {p for p in paths if _open_image(p, f"{source}: {p}") is None}
    kept = tuple(item for item in items if item.image not in bad and item.negative_image not in bad)
    if not kept:
        raise ValueError(
            f"{source}: no usable items ({n_malformed} malformed entries, "
            f"{len(items)} with unreadable images)"
        )
    return HardNegatives(kept, n_malformed, len(items) - len(kept))


def wins(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per row: 1 where cos(anchor, positive) > cos(anchor, negative), ½ where they are equal
    (a tie counts as half right), 0 where it is smaller."""
    anchor, positive, negative = (
        torch.nn.functional.normalize(x.float(), dim=-1) for x in (anchor, positive, negative)
    )
    to_positive, to_negative = (anchor * positive).sum(-1), (anchor * negative).sum(-1)
    return (to_positive > to_negative).float() + 0.5 * (to_positive == to_negative).float()


def _accuracy(text_wins: torch.Tensor, image_wins: torch.Tensor) -> dict[str, float | int]:
    """Percent right of the text side and, over the items with a negative image (non-NaN
    ``image_wins``), of the image side, with the item counts."""
    out: dict[str, float | int] = {"text": text_wins.mean().item() * 100, "items": len(text_wins)}
    with_image = image_wins[~image_wins.isnan()]
    if len(with_image):
        out |= {"image": with_image.mean().item() * 100, "image_items": len(with_image)}
    return out


def _mean(reports: Sequence[Mapping[str, float | int]]) -> dict[str, float | int]:
    """Mean text-side accuracy over ``reports`` and mean image-side accuracy over those that have
    one, with how many categories each mean covers."""
    out: dict[str, float | int] = {
        "text": sum(r["text"] for r in reports) / len(reports),
        "categories": len(reports),
    }
    with_image = [r["image"] for r in reports if "image" in r]
    if with_image:
        out |= {"image": sum(with_image) / len(with_image), "image_categories": len(with_image)}
    return out


def hard_negative_report(
    items: Sequence[HardNegative],
    text_wins: torch.Tensor,
    image_wins: torch.Tensor,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Accuracy in percent (mean of the per-item ``wins``, NaN in ``image_wins`` for items
    without a negative image) per category, then per category and k as ``"<category>@k<k>"`` for
    items that carry a k; ``"mean"``: the unweighted mean over categories; for each of ``groups``
    ({name: categories}) with a category present, ``"mean_<name>"`` over those present."""
    by_category: dict[str, dict[int | None, list[int]]] = {}
    for n, item in enumerate(items):
        by_category.setdefault(item.category, {}).setdefault(item.k, []).append(n)
    report = {}
    for category, by_k in by_category.items():
        rows = sorted(n for rows in by_k.values() for n in rows)
        report[category] = _accuracy(text_wins[rows], image_wins[rows])
        for k in sorted(k for k in by_k if k is not None):
            report[f"{category}@k{k}"] = _accuracy(text_wins[by_k[k]], image_wins[by_k[k]])
    report["mean"] = _mean([report[c] for c in by_category])
    for name, members in (groups or {}).items():
        present = [report[c] for c in members if c in by_category]
        if present:
            report[f"mean_{name}"] = _mean(present)
    return report
