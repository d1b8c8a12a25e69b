"""Annotation formats behind one record model: CSV/TSV, ShareGPT4V JSON, COCO JSON, shards.

``load_csv(path, *, img_key="filepath", caption_key="title", sep=",", id_key=None, ...)``
``load_sharegpt4v(path, *, image_root=None)``        caption = the gpt turn
``load_coco(path, *, image_root=None, split=None)``  official COCO captions or Karpathy layout
``load_annotations(source, fmt=None, **options)``  dispatch on ``fmt`` or on the file extension
(webdataset shards through ``smartclip.data.shards.load_wds``)

Relative image paths are resolved against ``image_root``, which defaults to the annotation file's
directory. Malformed annotation entries are counted in ``Annotations.n_malformed`` and logged.

Retrieval benchmarks map onto the loaders: COCO 5k and Flickr30k (``load_coco``, Karpathy
``split="test"``, five captions per image); ShareGPT4V-1k (``load_sharegpt4v``); Urban1k, DCI and
DOCCI with one long caption per image (a CSV/TSV of image path and caption, or ShareGPT4V JSON).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from smartclip.data.records import Annotations, Record, _Skips, _text
from smartclip.data.shards import load_wds

FORMATS: tuple[str, ...] = ("csv", "tsv", "sharegpt4v", "coco", "wds")


def _group(entries: Iterable[tuple[str, Path | bytes, str, str | None]]) -> list[Record]:
    """Merge ``(image_id, image, caption, negative or None)`` entries into one record per image
    id, in order (negatives kept only when every entry has one)."""
    images: dict[str, Path | bytes] = {}
    captions: dict[str, list[tuple[str, str | None]]] = {}
    for image_id, image, caption, negative in entries:
        images.setdefault(image_id, image)
        captions.setdefault(image_id, []).append((caption, negative))
    out = []
    for i, pairs in captions.items():
        negatives = tuple(n for _, n in pairs) if all(n for _, n in pairs) else ()
        out.append(Record(images[i], tuple(c for c, _ in pairs), i, negatives))
    return out


def _root(path: Path, image_root: str | Path | None) -> Path:
    return path.parent if image_root is None else Path(image_root)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err


def load_csv(
    path: str | Path,
    *,
    img_key: str = "filepath",
    caption_key: str = "title",
    sep: str = ",",
    id_key: str | None = None,
    negative_key: str | None = None,
    image_root: str | Path | None = None,
) -> Annotations:
    """Rows of (image path, caption) with a header, as open_clip's ``--csv-*`` options read them.

    Rows sharing an image id (the ``id_key`` column, else the path as written) become one record
    with several captions. With ``negative_key`` (NegCLIP's training CSV has such a column) each
    row also carries a hard-negative caption. Rows with missing, empty, extra or undecodable
    fields are skipped.
    """
    path = Path(path)
    root, skip = _root(path, image_root), _Skips(path)
    keys = [img_key, caption_key] + [k for k in (id_key, negative_key) if k]
    entries = []
    for _, row in _csv_rows(path, keys, skip, sep=sep):
        image, negative = row[img_key], row[negative_key] if negative_key else None
        entries.append((row[id_key] if id_key else image, root / image, row[caption_key], negative))
    skip.summary()
    return Annotations(_group(entries), skip.count)


def _csv_rows(
    path: Path,
    required: Sequence[str],
    skip: _Skips,
    *,
    sep: str = ",",
    optional: Sequence[str] = (),
) -> Iterator[tuple[int, dict[str, str | None]]]:
    """The rows of a CSV/TSV file with a header: (line number, ``{column: stripped text}`` over
    the ``required`` and ``optional`` columns; an empty or absent optional field is None).

    Raises ValueError if a required column is not in the header. Rows that cannot be parsed, have
    more fields than the header, an empty or missing required field or invalid UTF-8 are passed to
    ``skip``.
    """
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh, delimiter=sep)
        missing = set(required) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; has {reader.fieldnames}")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                skip(f"row at line {reader.line_num}", str(err))
                continue
            values = {k: _text(row.get(k)) for k in (*required, *optional)}
            if None in row:
                skip(f"row at line {reader.line_num}", "more fields than the header")
            elif any(values[k] is None for k in required):
                skip(f"row at line {reader.line_num}", f"empty or missing {list(required)} field")
            elif any("\ufffd" in v for v in values.values() if v is not None):
                skip(f"row at line {reader.line_num}", "invalid UTF-8")
            else:
                yield reader.line_num, values


def load_sharegpt4v(path: str | Path, *, image_root: str | Path | None = None) -> Annotations:
    """A JSON list of ``{"image", "conversations": [{"from": "human"}, {"from": "gpt"}]}``.

    The caption is the first gpt turn; the image id is the entry's ``id``, else its image path.
    """
    path = Path(path)
    root, skip = _root(path, image_root), _Skips(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: ShareGPT4V annotations must be a JSON list")
    entries = []
    for i, item in enumerate(data):
        image = _text(item.get("image")) if isinstance(item, dict) else None
        turns = item.get("conversations") if isinstance(item, dict) else None
        turns = turns if isinstance(turns, list) else []
        gpt = (
            _text(t.get("value")) for t in turns if isinstance(t, dict) and t.get("from") == "gpt"
        )
        caption = next(gpt, None)
        if image is None or caption is None:
            skip(f"entry {i}", "needs an 'image' path and a non-empty gpt turn")
        else:
            entries.append((str(item.get("id", image)), root / image, caption, None))
    skip.summary()
    return Annotations(_group(entries), skip.count)


def load_coco(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    split: str | Sequence[str] | None = None,
) -> Annotations:
    """COCO/Flickr caption JSON, several captions per image, in either layout.

    Official COCO: ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``,
    ``caption``); image ids are ``id``. Karpathy: ``images`` with ``filename``, optional
    ``filepath``, ``split`` and ``sentences`` (``raw``); ``split`` (e.g. ``"test"`` or
    ``("train", "restval")``) keeps only those entries; ids are ``cocoid``, else ``imgid``, else
    the relative path.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: COCO-style JSON needs an 'images' list")
    root, skip = _root(path, image_root), _Skips(path)
    if "annotations" in data:
        if split is not None:
            raise ValueError(f"{path}: official COCO layout has no splits; pass split=None")
        records = _coco_official(data, root, skip)
    else:
        splits = None if split is None else {split} if isinstance(split, str) else set(split)
        records = _coco_karpathy(data["images"], root, splits, skip)
    skip.summary()
    return Annotations(records, skip.count)


def _coco_official(data: dict[str, Any], root: Path, skip: _Skips) -> list[Record]:
    files: dict[int | str, Path] = {}
    for i, image in enumerate(data["images"]):
        image_id = image.get("id") if isinstance(image, dict) else None
        file_name = _text(image.get("file_name")) if isinstance(image, dict) else None
        if not isinstance(image_id, int | str) or file_name is None:
            skip(f"images[{i}]", "needs an 'id' and a 'file_name'")
        else:
            files[image_id] = root / file_name
    annotations = data["annotations"]
    if not isinstance(annotations, list):
        raise ValueError("COCO 'annotations' must be a list")
    captions: dict[int | str, list[str]] = {image_id: [] for image_id in files}
    for i, ann in enumerate(annotations):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        caption = _text(ann.get("caption")) if isinstance(ann, dict) else None
        if not isinstance(image_id, int | str) or image_id not in files or caption is None:
            skip(f"annotations[{i}]", "needs a known 'image_id' and a non-empty 'caption'")
        else:
            captions[image_id].append(caption)
    for image_id in [i for i, caps in captions.items() if not caps]:
        skip(f"image {image_id}", "no captions")
    return [Record(files[i], tuple(caps), str(i)) for i, caps in captions.items() if caps]


def _coco_karpathy(
    images: list[Any], root: Path, splits: set[str] | None, skip: _Skips
) -> list[Record]:
    records = []
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            skip(f"images[{i}]", "not an object")
            continue
        if splits is not None and image.get("split") not in splits:
            continue
        filename, filepath = _text(image.get("filename")), image.get("filepath", "")
        sentences = image.get("sentences")
        if filename is None or not isinstance(filepath, str) or not isinstance(sentences, list):
            skip(f"images[{i}]", "needs 'filename', a string 'filepath' and a 'sentences' list")
            continue
        captions = []
        for j, sentence in enumerate(sentences):
            raw = _text(sentence.get("raw")) if isinstance(sentence, dict) else None
            if raw is None:
                skip(f"images[{i}].sentences[{j}]", "needs a non-empty 'raw'")
            else:
                captions.append(raw)
        relative = Path(filepath) / filename
        image_id = str(image.get("cocoid", image.get("imgid", relative)))
        if captions:
            records.append(Record(root / relative, tuple(captions), image_id))
        else:
            skip(f"images[{i}]", "no captions")
    return records


def detect_format(source: str | Path) -> str:
    """``wds`` for ``.tar``/``.tgz`` (brace patterns too), ``csv``/``tsv`` by extension, and for
    ``.json`` ``sharegpt4v`` (a list) or ``coco`` (an object), judged by the first character."""
    name = str(source)
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "wds"
    suffix = Path(name).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix == ".json":
        with open(name, encoding="utf-8") as fh:
            head = fh.read(4096).lstrip()
        if head.startswith("["):
            return "sharegpt4v"
        if head.startswith("{"):
            return "coco"
    raise ValueError(f"cannot tell the format of {name!r}; pass fmt= one of {FORMATS}")


def annotation_options(
    source: str,
    dataset_type: str = "auto",
    *,
    img_key: str = "filepath",
    caption_key: str = "title",
    sep: str | None = None,
    id_key: str | None = None,
    negative_key: str | None = None,
    image_root: str | None = None,
    split: str | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """(format or None for auto, the ``load_annotations`` options that apply to the source's
    format) from open_clip-style flags: CSV keys (a hard-negative column too) for csv/tsv,
    ``split`` for COCO JSON (Karpathy layout), ``image_root`` for everything but shards."""
    fmt = None if dataset_type == "auto" else dataset_type
    resolved = fmt or detect_format(source)
    options: dict[str, Any] = {}
    if resolved in ("csv", "tsv"):
        options = {"img_key": img_key, "caption_key": caption_key}
        given = (("sep", sep), ("id_key", id_key), ("negative_key", negative_key))
        options |= {k: v for k, v in given if v is not None}
    if image_root is not None and resolved != "wds":
        options["image_root"] = image_root
    if split is not None:
        if resolved != "coco":
            raise ValueError(f"{source}: a split applies to COCO/Karpathy JSON, not {resolved}")
        options["split"] = split
    return fmt, options


def load_annotations(source: str | Path, fmt: str | None = None, **options: Any) -> Annotations:
    """Load any supported format; ``options`` go to the format's loader (``tsv`` sets ``sep``)."""
    fmt = fmt or detect_format(source)
    if fmt == "csv":
        return load_csv(source, **options)
    if fmt == "tsv":
        return load_csv(source, **{"sep": "\t", **options})
    if fmt == "sharegpt4v":
        return load_sharegpt4v(source, **options)
    if fmt == "coco":
        return load_coco(source, **options)
    if fmt == "wds":
        return load_wds(str(source), **options)
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
