"""Image-text data for full-scale training: four annotation formats behind one record model.

Public API
----------
``Record(image, captions, image_id)``  an image (path or encoded bytes) with its captions
``Annotations(records, n_malformed)``  what every loader returns; malformed entries are counted
``load_csv(path, *, img_key="filepath", caption_key="title", sep=",", id_key=None, ...)``
``load_sharegpt4v(path, *, image_root=None)``        caption = the gpt turn
``load_coco(path, *, image_root=None, split=None)``  official COCO captions or Karpathy layout
``load_wds(pattern)``                              all samples of webdataset shards, images as bytes
``load_annotations(source, fmt=None, **options)``  dispatch on ``fmt`` or on the file extension
``expand_shards(pattern) -> list[str]``            ``"a/{000..009}.tar::b/{x,y}.tar"``
``sample_sentence_prefix(caption, rng) -> str``    first k sentences, k uniform in 1..n
``caption_overflows(text, tokenizer) -> bool | None``  whether the tokenizer will cut the text
``fit_caption(caption, tokenizer, mode) -> (text, truncated)``  fit a caption to the text context
``count_long_captions(records, tokenizer, context_length) -> LongCaptions``  how many overflow
``Sample(image, tokens, truncated)``  one training item
``ImageTextDataset``  map-style ``Sample`` s over records (``None`` for unreadable images)
``ShardDataset``      iterable ``Sample`` s over shards, split by rank, then by worker, or resampled
``Batch(images, texts, n_dropped, n_truncated)``, ``collate_skipping(samples) -> Batch``
``build_train_loader(source, transform, tokenizer, *, batch_size, ...) -> TrainData``
``TrainData(loader, sampler, n_malformed, num_samples)``, ``.set_epoch(epoch)`` before each epoch
``build_eval_set(source, fmt=None, **options) -> EvalSet``  images, captions, text->image index

``transform`` maps a RGB ``PIL.Image`` to a tensor (open_clip's preprocess); ``tokenizer`` maps a
list of strings to a ``[n, context]`` tensor (open_clip's tokenizer); with open_clip's
``encode`` and ``context_length`` captions longer than the context are counted
(``Batch.n_truncated``) and, with ``caption_fit="sentences"``, shortened by whole sentences.
Relative image paths are resolved against ``image_root``, which defaults to the annotation file's
directory. Shards are read with the webdataset library: local paths, ``pipe:command`` URLs (e.g.
``pipe:aws s3 cp s3://bucket/{000..009}.tar -``) and whatever else its ``gopen`` opens. Nothing bad
in the data crashes a run: malformed annotation entries are counted in ``Annotations.n_malformed``,
unreadable images, malformed shard samples and unreadable shards become ``None`` samples that
``collate_skipping`` drops and counts in ``Batch.n_dropped``; all are logged through ``logging``.

Retrieval benchmarks map onto the loaders: COCO 5k and Flickr30k (``load_coco``, Karpathy
``split="test"``, five captions per image); ShareGPT4V-1k (``load_sharegpt4v``); Urban1k, DCI and
DOCCI with one long caption per image (a CSV/TSV of image path and caption, or ShareGPT4V JSON).
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import json
import logging
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    get_worker_info,
)
from webdataset.tariterators import tarfile_samples

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "tsv", "sharegpt4v", "coco", "wds")
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
CAPTION_FITS: tuple[str, ...] = ("truncate", "sentences")

Transform = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]

_MAX_LOGGED = 5  # malformed entries logged one by one per file; the rest only in the summary
_BOUNDARY = re.compile(r"[.!?]+(?=\s)")
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
# tar and gzip damage, failed reads and pipe commands, unknown URL schemes, repeated member names
_SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)
_SPECIAL_TOKENS = 2  # open_clip adds start- and end-of-text tokens around ``encode``'s ids
_MEASURED_CAPTIONS = 20_000  # captions measured at start-up by ``count_long_captions``


@dataclass(frozen=True)
class Record:
    """One image (a file path or encoded bytes), all of its captions and, when the source has
    them, one hard-negative caption per caption (aligned with ``captions``)."""

    image: Path | bytes
    captions: tuple[str, ...]
    image_id: str
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Annotations:
    """Records of one annotation source and how many malformed entries were skipped."""

    records: list[Record]
    n_malformed: int


class _Skips:
    """Counts skipped entries of one source; logs the first few and a summary."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.count = 0

    def __call__(self, where: str, why: str) -> None:
        self.count += 1
        if self.count <= _MAX_LOGGED:
            logger.warning("%s: skipping malformed %s: %s", self.source, where, why)

    def summary(self) -> int:
        if self.count:
            logger.warning("%s: skipped %d malformed entries", self.source, self.count)
        return self.count


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


def _text(value: object) -> str | None:
    """A stripped non-empty string, or None."""
    return (value.strip() or None) if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------- loaders


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


def load_wds(pattern: str | Sequence[str]) -> Annotations:
    """Every sample of the shards (e.g. for an eval set); unreadable shards count as one entry."""
    urls = expand_shards(pattern) if isinstance(pattern, str) else list(pattern)
    records = []
    skip = _Skips(pattern)
    for url in urls:
        for sample in _read_shard(url):
            if isinstance(sample, Exception):
                skip(f"shard {url}", f"unreadable, rest skipped: {sample}")
                continue
            try:
                records.append(_parse_sample(sample))
            except ValueError as err:
                skip(f"sample {url}:{sample['__key__']}", str(err))
    skip.summary()
    return Annotations(records, skip.count)


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


# ------------------------------------------------------------------------------------ webdataset


def expand_shards(pattern: str) -> list[str]:
    """Expand ``{000..009}`` ranges (zero padding kept) and ``{a,b}`` lists; ``::`` joins patterns.

    Braces do not nest.
    """
    urls: list[str] = []
    for part in pattern.split("::"):
        urls += _expand(part)
    return urls


def _expand(pattern: str) -> list[str]:
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    span = _RANGE.fullmatch(match.group(1))
    if span:
        lo, hi = span.groups()
        if int(lo) > int(hi):
            raise ValueError(f"empty range {{{lo}..{hi}}} in {pattern!r}")
        width = len(lo) if lo.startswith("0") else 0
        options = [f"{i:0{width}d}" for i in range(int(lo), int(hi) + 1)]
    else:
        options = match.group(1).split(",")
    head, tails = pattern[: match.start()], _expand(pattern[match.end() :])
    return [head + option + tail for option in options for tail in tails]


def _read_shard(url: str) -> Iterator[dict[str, Any] | Exception]:
    """Samples of one shard, read by webdataset (``gopen`` opens the URL, ``tarfile_samples``
    groups consecutive members sharing a key, the name up to the first dot of the basename, into
    ``{"__key__": key, extension: bytes}``), then the error if the shard broke off.

    A shard that cannot be opened or read further ends there: the samples grouped so far are kept
    (webdataset's convention, so a sample cut in the middle reaches the caller incomplete and
    usually fails to parse) and the error comes last. Other exceptions propagate.
    """
    errors: list[Exception] = []

    def stop_shard(err: Exception) -> bool:
        if not isinstance(err, _SHARD_ERRORS):
            raise err
        errors.append(err)
        return False  # webdataset's handler protocol: False stops reading this shard

    yield from tarfile_samples([{"url": url}], handler=stop_shard)
    yield from errors[:1]


def _parse_sample(sample: dict[str, Any]) -> Record:
    """A record from a shard sample: image from jpg/jpeg/png/webp, captions from the ``json``
    ``captions``/``caption`` field, else ``txt``. Raises ValueError when either is missing."""
    image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
    if image is None:
        raise ValueError(f"no image among {sorted(k for k in sample if not k.startswith('__'))}")
    captions: list[Any] = []
    if "json" in sample:
        meta = json.loads(sample["json"])
        value = meta.get("captions", meta.get("caption")) if isinstance(meta, dict) else None
        captions = value if isinstance(value, list) else [value]
    if not any(_text(c) for c in captions) and "txt" in sample:
        captions = [sample["txt"].decode("utf-8")]
    texts = tuple(t for t in (_text(c) for c in captions) if t is not None)
    if not texts:
        raise ValueError("no caption in 'json' or 'txt'")
    return Record(image, texts, sample["__key__"])


# --------------------------------------------------------------------------------------- samples


def _sentence_ends(text: str) -> list[int]:
    """Where each sentence of ``text`` (no trailing whitespace) ends, the last at ``len(text)``.

    Sentences end at ``.``, ``!`` or ``?`` followed by whitespace (so "e.g. x" splits too).
    """
    ends = [m.end() for m in _BOUNDARY.finditer(text)]
    if not ends or ends[-1] < len(text):
        ends.append(len(text))
    return ends


def sample_sentence_prefix(caption: str, rng: np.random.Generator) -> str:
    """The caption's first k sentences, k uniform in 1..n (a literal prefix, trailing space cut)."""
    text = caption.rstrip()
    ends = _sentence_ends(text)
    return text[: ends[int(rng.integers(len(ends)))]]


def caption_overflows(text: str, tokenizer: Any, context_length: int | None = None) -> bool | None:
    """Whether the tokenizer cuts ``text`` to fit ``context_length`` tokens (default: the
    tokenizer's ``context_length``), counting open_clip's start and end tokens around the ids of
    its ``encode``; None when the tokenizer has no ``encode`` or no context length to tell."""
    encode = getattr(tokenizer, "encode", None)
    context_length = context_length or getattr(tokenizer, "context_length", None)
    if encode is None or context_length is None:
        return None
    return len(encode(text)) + _SPECIAL_TOKENS > context_length


def _checked_caption_fit(mode: str) -> str:
    """``mode`` if it is one of ``CAPTION_FITS``; else ValueError."""
    if mode not in CAPTION_FITS:
        raise ValueError(f"caption_fit must be one of {CAPTION_FITS}, got {mode!r}")
    return mode


def fit_caption(caption: str, tokenizer: Any, mode: str = "truncate") -> tuple[str, bool]:
    """(the text to tokenize, whether the tokenizer will cut it) for the tokenizer's context.

    ``truncate`` leaves the caption to the tokenizer, which cuts it. ``sentences`` keeps the
    longest prefix of whole sentences that fits; when even the first sentence does not fit, that
    sentence alone is returned, to be cut. A tokenizer that cannot measure text
    (``caption_overflows`` is None) gets the caption unchanged, counted as not cut.
    """
    _checked_caption_fit(mode)
    if not caption_overflows(caption, tokenizer):
        return caption, False
    if mode == "truncate":
        return caption, True
    text = caption.rstrip()
    ends = _sentence_ends(text)
    # prefixes only grow in tokens, so the ones that fit come first
    n_fit = bisect.bisect_left(ends, True, key=lambda e: caption_overflows(text[:e], tokenizer))
    return (text[: ends[n_fit - 1]], False) if n_fit else (text[: ends[0]], True)


@dataclass(frozen=True)
class LongCaptions:
    """``n_long`` of ``n_checked`` measured captions (of ``n_total``) exceed the context."""

    n_long: int
    n_checked: int
    n_total: int
    context_length: int

    def __str__(self) -> str:
        head = f"captions over the {self.context_length}-token context: "
        share = f"{self.n_long / max(self.n_checked, 1):.1%}"
        checked = "" if self.n_checked == self.n_total else f"a random {self.n_checked:,} of "
        return head + f"{self.n_long:,} of {checked}{self.n_total:,} ({share})"


def count_long_captions(
    records: Sequence[Record],
    tokenizer: Any,
    context_length: int,
    limit: int = _MEASURED_CAPTIONS,
    seed: int = 0,
) -> LongCaptions | None:
    """How many of the records' captions exceed ``context_length`` tokens: all captions if there
    are at most ``limit``, else ``limit`` drawn without replacement with ``seed``. None when the
    tokenizer cannot measure text (no ``encode``)."""
    if caption_overflows("", tokenizer, context_length) is None:
        return None
    captions = [c for r in records for c in r.captions]
    if len(captions) > limit:
        chosen = np.random.default_rng(seed).choice(len(captions), limit, replace=False)
        measured = [captions[i] for i in chosen]
    else:
        measured = captions
    n_long = sum(bool(caption_overflows(c, tokenizer, context_length)) for c in measured)
    return LongCaptions(n_long, len(measured), len(captions), context_length)


def _open_image(image: Path | bytes, where: str) -> Image.Image | None:
    """Decode to RGB, or log and return None if the file is missing or not a readable image."""
    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
            return opened.convert("RGB")
    except _IMAGE_ERRORS as err:
        logger.warning("skipping unreadable image %s: %s", where, err)
        return None


TEXT_VIEWS: tuple[str, ...] = ("short", "subs")
MAX_SENTENCES = 8  # sentences of a long caption kept as sub-captions


@dataclass(frozen=True)
class TextOptions:
    """How a training sample's caption is drawn and cut.

    ``sentence_sampling``: a random first-k-sentence prefix of a random caption (SmartCLIP's
    recipe). ``caption_fit``: "truncate" or "sentences" (``fit_caption``). ``views``: extra views
    of a long caption for objectives that read them: "short" (its first sentence, Long-CLIP's
    short caption) and "subs" (its first ``MAX_SENTENCES`` sentences, MulCLIP's sub-captions);
    with views the record's longest caption is used whole.
    """

    sentence_sampling: bool = True
    caption_fit: str = "truncate"
    views: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _checked_caption_fit(self.caption_fit)
        unknown = set(self.views) - set(TEXT_VIEWS)
        if unknown:
            raise ValueError(f"unknown text views {sorted(unknown)}; choose from {TEXT_VIEWS}")


def sentences(caption: str) -> list[str]:
    """The caption's sentences (boundaries as in ``sample_sentence_prefix``), stripped."""
    text = caption.rstrip()
    ends = _sentence_ends(text)
    return [text[a:b].strip() for a, b in zip([0, *ends[:-1]], ends, strict=True)]


class Sample(NamedTuple):
    """One item: the transformed image, its caption's tokens, whether the caption was cut to
    fit the text context (False when the tokenizer cannot tell), and the tokens of the caption's
    hard negative when the data has them."""

    image: torch.Tensor
    tokens: torch.Tensor
    truncated: bool = False
    negative: torch.Tensor | None = None
    short: torch.Tensor | None = None
    subs: torch.Tensor | None = None  # [MAX_SENTENCES, L], all-zero rows pad


def _make_sample(
    record: Record,
    transform: Transform,
    tokenizer: Tokenizer,
    rng: np.random.Generator | None,
    text: TextOptions,
) -> Sample | None:
    """A ``Sample``, or None if the image cannot be read. With views (``TextOptions``) the
    longest caption whole, with its short caption and sub-captions. Otherwise, with an ``rng``
    (training) a random caption, maybe a random sentence prefix of it (not when it has a hard
    negative, which was written for the whole caption). Every text is fitted to the context
    (``fit_caption``)."""
    where = str(record.image) if isinstance(record.image, Path) else record.image_id
    image = _open_image(record.image, where)
    if image is None:
        return None

    def tokens(caption: str) -> tuple[torch.Tensor, bool]:
        fitted, cut = fit_caption(caption, tokenizer, text.caption_fit)
        return tokenizer([fitted])[0], cut

    if text.views:
        caption = max(record.captions, key=len)
        ids, truncated = tokens(caption)
        parts = sentences(caption)
        short = tokens(parts[0])[0] if "short" in text.views else None
        subs = None
        if "subs" in text.views:
            subs = torch.zeros(MAX_SENTENCES, len(ids), dtype=ids.dtype)
            for i, part in enumerate(parts[:MAX_SENTENCES]):
                subs[i] = tokens(part)[0]
        return Sample(transform(image), ids, truncated, short=short, subs=subs)
    j = int(rng.integers(len(record.captions))) if rng is not None else 0
    caption, negative = record.captions[j], record.negatives[j] if record.negatives else None
    if rng is not None and text.sentence_sampling and negative is None:
        caption = sample_sentence_prefix(caption, rng)
    ids, truncated = tokens(caption)
    return Sample(
        transform(image), ids, truncated, None if negative is None else tokens(negative)[0]
    )


class ImageTextDataset(Dataset):
    """Map-style ``Sample`` s over records; ``None`` where the image cannot be read.

    With ``train=True`` each item draws one of the record's captions and, if
    ``sentence_sampling``, its first k sentences, from ``default_rng([seed, epoch, index])``: the
    same whatever the worker. Otherwise the first caption is used whole. Either way the caption is
    fitted to the context as ``caption_fit`` says (``fit_caption``). Call ``set_epoch`` before
    each epoch (the loader must not use persistent workers).
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Transform,
        tokenizer: Tokenizer,
        *,
        train: bool = True,
        seed: int = 0,
        text: TextOptions = TextOptions(),
    ) -> None:
        self.records = records
        self.transform = transform
        self.tokenizer = tokenizer
        self.train = train
        self.seed = seed
        self.text = text
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample | None:
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        record = self.records[index]
        return _make_sample(record, self.transform, self.tokenizer, rng, self.text)


class ShardDataset(IterableDataset):
    """Iterable ``Sample`` s over webdataset shards; ``None`` for each bad sample or shard.

    Shards are read with the webdataset library (``_read_shard``: paths, ``pipe:`` and other
    URLs). By default the shards (reshuffled per epoch when ``train``, seeded by
    ``[seed, epoch]``) go round-robin to ``world_size * num_workers`` readers, so every sample is
    read exactly once per epoch when all ranks use the same number of workers; ranks with fewer
    shards than readers leave readers idle. With ``resampled`` each reader instead draws shards
    with replacement, without end, from webdataset's ``ResampledShards`` seeded by
    ``(seed, epoch, rank, worker)``: ranks stream independently and the loop ends epochs. With
    ``train`` samples pass a ``shuffle_buffer``-sized shuffle seeded the same way, and the
    captions of sample ``index`` of shard ``shard`` are drawn from
    ``default_rng([seed, epoch, shard, index])`` as in ``ImageTextDataset`` (a shard drawn twice
    in one resampled epoch repeats its draws). The data is a function of (seed, epoch, position).
    """

    def __init__(
        self,
        pattern: str | Sequence[str],
        transform: Transform,
        tokenizer: Tokenizer,
        *,
        train: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 256,
        resampled: bool = False,
        text: TextOptions = TextOptions(),
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        self.urls = expand_shards(pattern) if isinstance(pattern, str) else list(pattern)
        if not self.urls:
            raise ValueError(f"no shards in {pattern!r}")
        self.transform = transform
        self.tokenizer = tokenizer
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.text = text
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shards_for(self, worker: int, num_workers: int) -> list[int]:
        """Indices into ``urls`` read by this rank's ``worker`` (of ``num_workers``) this epoch
        when not ``resampled``."""
        order = np.arange(len(self.urls))
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.urls))
        readers = self.world_size * num_workers
        return [int(i) for i in order[self.rank * num_workers + worker :: readers]]

    def __iter__(self) -> Iterator[Sample | None]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream_seed = _seed(self.seed, self.epoch, self.rank, worker)
        shuffle = []
        if self.train and self.shuffle_buffer > 1:
            shuffle = [wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, seed=stream_seed)]
        pipeline = wds.DataPipeline(
            functools.partial(self._shards, worker, num_workers, stream_seed),
            self._read,
            *shuffle,
            self._prepare,
        )
        return iter(pipeline)

    def _shards(self, worker: int, num_workers: int, stream_seed: int) -> Iterator[dict[str, Any]]:
        """The shards this reader reads, as ``{"url": url, "shard": index into urls}``."""
        if not self.resampled:
            shards = self.shards_for(worker, num_workers)
            if not shards:
                logger.warning("rank %d worker %d has no shards to read", self.rank, worker)
            return ({"url": self.urls[i], "shard": i} for i in shards)
        index = {url: i for i, url in enumerate(self.urls)}
        draws = wds.ResampledShards(
            self.urls, seed=stream_seed, worker_seed=lambda: 0, deterministic=True
        )  # the seed already names rank and worker: no seed from torch's view of them
        return ({"url": d["url"], "shard": index[d["url"]]} for d in draws)

    def _read(
        self, shards: Iterable[dict[str, Any]]
    ) -> Iterator[tuple[int, int, dict[str, Any]] | None]:
        """``(shard, index in the shard, sample)`` for every sample; one None per broken shard."""
        for source in shards:
            for index, sample in enumerate(_read_shard(source["url"])):
                if isinstance(sample, Exception):
                    logger.warning("%s: unreadable shard, rest skipped: %s", source["url"], sample)
                    yield None
                else:
                    yield source["shard"], index, sample

    def _prepare(
        self, items: Iterable[tuple[int, int, dict[str, Any]] | None]
    ) -> Iterator[Sample | None]:
        """The pipeline's last stage: ``_sample`` of each raw sample, None kept as None."""
        for item in items:
            yield None if item is None else self._sample(*item)

    def _sample(self, shard: int, index: int, sample: dict[str, Any]) -> Sample | None:
        """A ``Sample`` (or None if bad) of a raw sample: parsed, decoded, caption drawn, fitted."""
        try:
            record = _parse_sample(sample)
        except ValueError as err:
            logger.warning("%s: skipping sample %s: %s", self.urls[shard], sample["__key__"], err)
            return None
        rng = np.random.default_rng([self.seed, self.epoch, shard, index]) if self.train else None
        return _make_sample(record, self.transform, self.tokenizer, rng, self.text)


def _seed(*parts: int) -> int:
    """A 64-bit seed determined by ``parts``, for the standard-library generators of webdataset."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


class Batch(NamedTuple):
    """Stacked images ``[B, ...]`` and tokens ``[B, L]``, how many failed samples were dropped
    and how many of the kept captions the tokenizer cut to fit the context; when the samples
    have them, hard negatives ``[B, 1, L]``, short captions ``[B, L]`` and sub-captions
    ``[B, MAX_SENTENCES, L]`` (all-zero rows pad).

    ``B`` may be smaller than the batch size, and 0 (empty tensors) if every sample failed.
    """

    images: torch.Tensor
    texts: torch.Tensor
    n_dropped: int
    n_truncated: int = 0
    negatives: torch.Tensor | None = None
    short: torch.Tensor | None = None
    subs: torch.Tensor | None = None

    def text_inputs(self) -> tuple[torch.Tensor | None, ...]:
        """(texts, negatives, short, subs): the model's text inputs after the images."""
        return self.texts, self.negatives, self.short, self.subs


def collate_skipping(samples: Sequence[Sample | None]) -> Batch:
    """Stack the good samples; count the ``None`` ones and the truncated captions."""
    good = [s for s in samples if s is not None]
    n_dropped = len(samples) - len(good)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), n_dropped)

    def stacked(name: str) -> torch.Tensor | None:
        values = [getattr(s, name) for s in good]
        return None if any(v is None for v in values) else torch.stack(values)

    negatives = stacked("negative")
    return Batch(
        torch.stack([s.image for s in good]),
        torch.stack([s.tokens for s in good]),
        n_dropped,
        sum(s.truncated for s in good),
        None if negatives is None else negatives[:, None],
        stacked("short"),
        stacked("subs"),
    )


# --------------------------------------------------------------------------------------- loaders


@dataclass
class TrainData:
    """A training loader and its bookkeeping; call ``set_epoch(epoch)`` before each epoch.

    ``n_malformed``: annotation entries skipped at load time (shard problems show up per batch
    in ``Batch.n_dropped`` instead). ``num_samples``: images this rank sees per epoch (None for
    shards, whose size is unknown up front).
    """

    loader: DataLoader
    sampler: DistributedSampler | None
    n_malformed: int
    num_samples: int | None

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.loader.dataset.set_epoch(epoch)


def build_train_loader(
    source: str | Path,
    transform: Transform,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    fmt: str | None = None,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    text: TextOptions = TextOptions(),
    shuffle_buffer: int = 256,
    resampled: bool = False,
    pin_memory: bool = False,
    **options: Any,
) -> TrainData:
    """A shuffling loader of ``Batch`` es for one rank.

    File formats use a ``DistributedSampler`` (also for one process, for seeded shuffling);
    shards are split by rank and worker, or with ``resampled`` drawn with replacement by every
    reader (``ShardDataset``). Captions are drawn and fitted as ``text`` says (``TextOptions``).
    ``options`` go to the format's loader (e.g. ``img_key``, ``caption_key``, ``sep``,
    ``image_root``, ``split``).
    """
    fmt = fmt or detect_format(source)
    common = {"train": True, "seed": seed, "text": text}
    loader_args = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate_skipping,
        "drop_last": drop_last,
        "pin_memory": pin_memory,
    }
    if fmt == "wds":
        if options:
            raise TypeError(f"shards take no loader options, got {sorted(options)}")
        shards = ShardDataset(
            str(source),
            transform,
            tokenizer,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=shuffle_buffer,
            resampled=resampled,
            **common,
        )
        return TrainData(DataLoader(shards, **loader_args), None, 0, None)
    if resampled:
        raise ValueError(f"{source}: resampling applies to webdataset shards, not {fmt}")
    annotations = load_annotations(source, fmt, **options)
    if not annotations.records:
        raise ValueError(f"{source}: no usable records ({annotations.n_malformed} malformed)")
    dataset = ImageTextDataset(annotations.records, transform, tokenizer, **common)
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=drop_last
    )
    loader = DataLoader(dataset, sampler=sampler, **loader_args)
    return TrainData(loader, sampler, annotations.n_malformed, len(sampler))


@dataclass(frozen=True)
class EvalSet:
    """A retrieval benchmark: every image, every caption, and the image each caption describes.

    ``text_to_image[t]`` is the index in ``images`` of caption ``t``'s image. ``n_malformed``
    annotation entries and ``n_bad_images`` unreadable images were left out.
    """

    images: tuple[Path | bytes, ...]
    image_ids: tuple[str, ...]
    captions: tuple[str, ...]
    text_to_image: torch.Tensor
    n_malformed: int
    n_bad_images: int

    def image_to_texts(self) -> list[list[int]]:
        """Caption indices of each image."""
        texts: list[list[int]] = [[] for _ in self.images]
        for t, i in enumerate(self.text_to_image.tolist()):
            texts[i].append(t)
        return texts

    def image_loader(
        self, transform: Transform, batch_size: int = 64, num_workers: int = 0
    ) -> DataLoader:
        """Batches of transformed images, in order."""
        return DataLoader(
            _EvalImages(self.images, transform), batch_size=batch_size, num_workers=num_workers
        )


class _EvalImages(Dataset):
    def __init__(self, images: Sequence[Path | bytes], transform: Transform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = _open_image(self.images[index], f"eval image {index}")
        if image is None:
            raise RuntimeError(f"eval image {index} is unreadable; build with check_images=True")
        return self.transform(image)


def build_eval_set(
    source: str | Path, fmt: str | None = None, *, check_images: bool = True, **options: Any
) -> EvalSet:
    """Load an eval set; with ``check_images`` unreadable images (and their captions) are dropped,
    counted and logged up front, so indices stay consistent during evaluation."""
    annotations = load_annotations(source, fmt, **options)
    records = annotations.records
    if check_images:
        records = [r for r in records if _open_image(r.image, f"{source}:{r.image_id}") is not None]
    if not records:
        raise ValueError(
            f"{source}: the evaluation set is empty ({len(annotations.records)} records, "
            f"{len(annotations.records) - len(records)} with unreadable images, "
            f"{annotations.n_malformed} malformed entries)"
        )
    index = [i for i, r in enumerate(records) for _ in r.captions]
    return EvalSet(
        images=tuple(r.image for r in records),
        image_ids=tuple(r.image_id for r in records),
        captions=tuple(c for r in records for c in r.captions),
        text_to_image=torch.tensor(index, dtype=torch.long),
        n_malformed=annotations.n_malformed,
        n_bad_images=len(annotations.records) - len(records),
    )
