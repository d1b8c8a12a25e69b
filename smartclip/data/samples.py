"""One training item and a batch of them: an image decoded and transformed, a caption drawn,
fitted and tokenized.

``Sample(image, tokens, truncated)``  one training item
``Batch(images, texts, n_dropped, n_truncated)``, ``collate_skipping(samples) -> Batch``

``transform`` maps a RGB ``PIL.Image`` to a tensor (open_clip's preprocess); ``tokenizer`` maps a
list of strings to a ``[n, context]`` tensor (open_clip's tokenizer); with open_clip's
``encode`` and ``context_length`` captions longer than the context are counted
(``Batch.n_truncated``) and, with ``caption_fit="sentences"``, shortened by whole sentences.
Unreadable images become ``None`` samples that ``collate_skipping`` drops and counts in
``Batch.n_dropped``; they are logged through ``logging``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from smartclip.data.captions import TextOptions, fit_caption, sample_sentence_prefix
from smartclip.data.records import Record

logger = logging.getLogger(__name__)

Transform = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]

_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _open_image(image: Path | bytes, where: str) -> Image.Image | None:
    """Decode to RGB, or log and return None if the file is missing or not a readable image."""
    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
            return opened.convert("RGB")
    except _IMAGE_ERRORS as err:
        logger.warning("skipping unreadable image %s: %s", where, err)
        return None


class Sample(NamedTuple):
    """One item: the transformed image, its caption's tokens, whether the caption was cut to
    fit the text context (False when the tokenizer cannot tell), and the tokens of the caption's
    hard negative when the data has them."""

    image: torch.Tensor
    tokens: torch.Tensor
    truncated: bool = False
    negative: torch.Tensor | None = None
    short: torch.Tensor | None = None
    subs: torch.Tensor | None = None  # [max_sentences, L], all-zero rows pad


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
        short = tokens(text.short(caption))[0] if "short" in text.views else None
        subs = None
        if "subs" in text.views:
            subs = torch.zeros(text.max_sentences, len(ids), dtype=ids.dtype)
            for i, part in enumerate(text.sub_captions(caption)):
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


class Batch(NamedTuple):
    """Stacked images ``[B, ...]`` and tokens ``[B, L]``, how many failed samples were dropped
    and how many of the kept captions the tokenizer cut to fit the context; when the samples
    have them, hard negatives ``[B, 1, L]``, short captions ``[B, L]`` and sub-captions
    ``[B, max_sentences, L]`` (all-zero rows pad).

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
