"""The record model every annotation loader returns, and the bookkeeping of skipped entries.

``Record(image, captions, image_id)``  an image (path or encoded bytes) with its captions
``Annotations(records, n_malformed)``  what every loader returns; malformed entries are counted
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_MAX_LOGGED = 5  # malformed entries logged one by one per file; the rest only in the summary


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


def _text(value: object) -> str | None:
    """A stripped non-empty string, or None."""
    return (value.strip() or None) if isinstance(value, str) else None
