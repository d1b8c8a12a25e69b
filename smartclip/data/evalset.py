"""Retrieval evaluation sets: every image, every caption, and the image each caption describes.

``build_eval_set(source, fmt=None, **options) -> EvalSet``  images, captions, text->image index
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from smartclip.data.formats import load_annotations
from smartclip.data.samples import Transform, _open_image


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
