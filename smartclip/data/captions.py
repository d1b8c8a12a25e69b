"""Captions: their sentences, random sentence prefixes, fitting to the text context, counting.

``sample_sentence_prefix(caption, rng) -> str``    first k sentences, k uniform in 1..n
``short_caption(caption, rule) -> str``  Long-CLIP's short caption (the text before the first ". ")
``caption_overflows(text, tokenizer) -> bool | None``  whether the tokenizer will cut the text
``fit_caption(caption, tokenizer, mode) -> (text, truncated)``  fit a caption to the text context
``count_long_captions(records, tokenizer, context_length) -> LongCaptions``  how many overflow
``TextOptions``  how a training sample's caption is drawn and cut

With open_clip's tokenizer (``encode`` and ``context_length``) captions longer than the context
are counted and, with ``caption_fit="sentences"``, shortened by whole sentences.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smartclip.data.records import Record

CAPTION_FITS: tuple[str, ...] = ("truncate", "sentences")
TEXT_VIEWS: tuple[str, ...] = ("short", "subs")
SHORT_CAPTIONS: tuple[str, ...] = ("release", "sentence")
# sub-captions kept of a long caption: a cap of ours (MulCLIP uses every sentence), which fixes
# the sub-caption tensor's shape so that ranks can gather it
MAX_SENTENCES = 8

_BOUNDARY = re.compile(r"[.!?]+(?=\s)")
_SPECIAL_TOKENS = 2  # open_clip adds start- and end-of-text tokens around ``encode``'s ids
_MEASURED_CAPTIONS = 20_000  # captions measured at start-up by ``count_long_captions``


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


def sentences(caption: str) -> list[str]:
    """The caption's sentences (boundaries as in ``sample_sentence_prefix``), stripped."""
    text = caption.rstrip()
    ends = _sentence_ends(text)
    return [text[a:b].strip() for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def short_caption(caption: str, rule: str = "release") -> str:
    """The short caption of a long one. "release": newlines made spaces, then the text before the
    first ". " (Long-CLIP, `train/sharegpt4v.py`: `caption.replace("\\n", " ").split(". ")[0]`;
    no full stop kept; the whole caption where it has no ". "). "sentence": the first of
    ``sentences`` (a sentence also ends at "!" or "?", and keeps its stop)."""
    if rule not in SHORT_CAPTIONS:
        raise ValueError(f"short caption rule must be one of {SHORT_CAPTIONS}, got {rule!r}")
    if rule == "sentence":
        return sentences(caption)[0]
    return caption.replace("\n", " ").split(". ", 1)[0]


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


@dataclass(frozen=True)
class TextOptions:
    """How a training sample's caption is drawn and cut.

    ``sentence_sampling``: a random first-k-sentence prefix of a random caption (SmartCLIP's
    recipe). ``caption_fit``: "truncate" or "sentences" (``fit_caption``). ``views``: extra views
    of a long caption for objectives that read them: "short" (``short_caption`` by
    ``short_rule``, Long-CLIP's and MulCLIP's short caption) and "subs" (its first
    ``max_sentences`` sentences, MulCLIP's sub-captions, padded to ``max_sentences``); with views
    the record's longest caption is used whole.
    """

    sentence_sampling: bool = True
    caption_fit: str = "truncate"
    views: tuple[str, ...] = ()
    short_rule: str = "release"
    max_sentences: int = MAX_SENTENCES

    def __post_init__(self) -> None:
        _checked_caption_fit(self.caption_fit)
        unknown = set(self.views) - set(TEXT_VIEWS)
        if unknown:
            raise ValueError(f"unknown text views {sorted(unknown)}; choose from {TEXT_VIEWS}")
        if self.short_rule not in SHORT_CAPTIONS:
            raise ValueError(f"short_rule must be one of {SHORT_CAPTIONS}, got {self.short_rule!r}")
        if self.max_sentences < 1:
            raise ValueError(f"max_sentences must be at least 1, got {self.max_sentences}")

    def short(self, caption: str) -> str:
        """The caption's short caption (``short_caption`` by ``short_rule``)."""
        return short_caption(caption, self.short_rule)

    def sub_captions(self, caption: str) -> list[str]:
        """The caption's first ``max_sentences`` sentences (``sentences``)."""
        return sentences(caption)[: self.max_sentences]
