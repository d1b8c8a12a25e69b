"""The hard-negative report: per-category and per-k accuracies and their unweighted means, from
known per-item wins (the embedding side is tested through `smartclip.eval` in test_eval.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from smartclip.hard_negatives import HardNegative, hard_negative_report


def item(category: str, k: int | None, with_image: bool) -> HardNegative:
    """An item of `category` edited `k` times, with a negative image or without."""
    negative_image = Path(f"{category}-negative.png") if with_image else None
    return HardNegative(
        Path(f"{category}.png"), "a caption", "a negative", category, negative_image, k
    )


def test_report_means_cover_the_categories_that_have_each_side():
    """Items interleaved across categories: A (k 1, 1, 2; two with a negative image), B (no k, no
    negative image), C (k 3, both with one). Means are unweighted over categories; the image-side
    mean covers only the categories with an image side (A and C; in group ab, A alone)."""
    items = [
        item("A", 1, True), item("B", None, False), item("C", 3, True),
        item("A", 1, False), item("C", 3, True), item("A", 2, True),
    ]  # fmt: skip
    text_wins = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.5])
    image_wins = torch.tensor([1.0, math.nan, 1.0, math.nan, 0.5, 0.0])
    report = hard_negative_report(items, text_wins, image_wins, {"ab": ("A", "B"), "z": ("Z",)})
    expected = {
        "A": {"text": 50.0, "items": 3, "image": 50.0, "image_items": 2},
        "A@k1": {"text": 50.0, "items": 2, "image": 100.0, "image_items": 1},
        "A@k2": {"text": 50.0, "items": 1, "image": 0.0, "image_items": 1},
        "B": {"text": 100.0, "items": 1},
        "C": {"text": 0.0, "items": 2, "image": 75.0, "image_items": 2},
        "C@k3": {"text": 0.0, "items": 2, "image": 75.0, "image_items": 2},
        "mean": {"text": 50.0, "categories": 3, "image": 62.5, "image_categories": 2},
        "mean_ab": {"text": 75.0, "categories": 2, "image": 50.0, "image_categories": 1},
    }
    assert list(report) == list(expected)  # no group mean without a category present
    for key, value in expected.items():
        assert report[key] == pytest.approx(value), key
