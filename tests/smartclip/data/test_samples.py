"""Tests for samples and batches: unreadable images, collation, truncated captions."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import ToTensor

from smartclip.data import (
    Batch,
    Sample,
    TextOptions,
    build_eval_set,
    build_train_loader,
    collate_skipping,
)
from synthetic.scenes import SceneConfig, SplitFiles, write_dataset
from tests.smartclip.data.helpers import byte_tokenizer


def corrupt_images(files: SplitFiles) -> list[Path]:
    """Truncate one PNG, overwrite one with random bytes, delete one; return their paths."""
    truncated, garbage, missing = files.images[:3]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    missing.unlink()
    return [truncated, garbage, missing]


def test_unreadable_images_are_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = write_dataset(
        tmp_path, 10, ("csv", "coco"), SceneConfig(image_size=16), val_fraction=0.0
    )["train"]
    bad = corrupt_images(files)
    caplog.set_level(logging.WARNING, logger="smartclip.data")
    data = build_train_loader(
        files.annotations["csv"], ToTensor(), byte_tokenizer, batch_size=4, drop_last=False
    )
    batches = list(data.loader)
    assert all(isinstance(b, Batch) for b in batches)
    assert sum(b.n_dropped for b in batches) == 3
    assert sum(b.images.shape[0] for b in batches) == 7
    assert all(b.images.shape[0] == b.texts.shape[0] for b in batches)
    for path in bad:
        assert any(str(path) in r.getMessage() for r in caplog.records)
    evalset = build_eval_set(files.annotations["coco"])
    assert evalset.n_bad_images == 3 and len(evalset.images) == 7
    assert len(evalset.captions) == 21 and int(evalset.text_to_image.max()) == 6
    assert not set(bad) & set(evalset.images)


def test_collate_skipping_counts_none_and_truncated_and_survives_all_failures() -> None:
    cut = Sample(torch.ones(3, 2, 2), torch.arange(4), truncated=True)
    whole = Sample(torch.zeros(3, 2, 2), torch.arange(4))
    batch = collate_skipping([cut, None, whole, None, cut, None])
    assert batch.images.shape == (3, 3, 2, 2) and batch.texts.shape == (3, 4)
    assert batch.images[:, 0, 0, 0].tolist() == [1, 0, 1]
    assert batch.n_dropped == 3 and batch.n_truncated == 2
    empty = collate_skipping([None, None])
    assert empty.images.shape[0] == 0 and empty.texts.shape[0] == 0 and empty.n_dropped == 2
    assert empty.n_truncated == 0


def write_captions(path: Path, images: list[Path], captions: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "title"])
        writer.writerows(zip(images, captions, strict=True))
    return path


def test_truncated_captions_reach_the_batch(
    scenes: dict[str, SplitFiles], tmp_path: Path, clip_tokenizer
) -> None:
    one_long_sentence = " ".join(["a red circle"] * 100)
    many_sentences = " ".join(["A red circle."] * 40)  # 120 words, every sentence short
    captions = [one_long_sentence, many_sentences, many_sentences, "a red circle", "a star"]
    path = write_captions(tmp_path / "c.csv", scenes["train"].images[:5], captions)
    for mode, n_truncated in (("truncate", 3), ("sentences", 1)):
        data = build_train_loader(
            path, ToTensor(), clip_tokenizer, batch_size=2, drop_last=False,
            text=TextOptions(sentence_sampling=False, caption_fit=mode),
        )  # fmt: skip
        batches = list(data.loader)
        assert sum(b.images.shape[0] for b in batches) == 5
        assert sum(b.n_truncated for b in batches) == n_truncated, mode
    with pytest.raises(ValueError, match="caption_fit"):
        TextOptions(caption_fit="words")
