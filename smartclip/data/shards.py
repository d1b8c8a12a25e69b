"""Webdataset shards: shard patterns, reading a shard, and its samples as records.

``load_wds(pattern)``                              all samples of webdataset shards, images as bytes
``expand_shards(pattern) -> list[str]``            ``"a/{000..009}.tar::b/{x,y}.tar"``

Shards are read with the webdataset library: local paths, ``pipe:command`` URLs (e.g.
``pipe:aws s3 cp s3://bucket/{000..009}.tar -``) and whatever else its ``gopen`` opens. Malformed
samples and unreadable shards are counted in ``Annotations.n_malformed`` and logged.
"""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from webdataset.tariterators import tarfile_samples

from smartclip.data.records import Annotations, Record, _Skips, _text

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")
# tar and gzip damage, failed reads and pipe commands, unknown URL schemes, repeated member names
_SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)


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
