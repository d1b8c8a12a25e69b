"""Tests for the training loader over annotation files."""

from __future__ import annotations

from pathlib import Path

import pytest
from torchvision.transforms import ToTensor

from smartclip.data import build_train_loader
from synthetic.scenes import SplitFiles
from tests.smartclip.data.helpers import N_TRAIN, byte_tokenizer


def test_distributed_sampler_splits_file_formats_across_ranks(
    scenes: dict[str, SplitFiles],
) -> None:
    path = scenes["train"].annotations["coco"]
    indices = []
    for rank in range(3):
        data = build_train_loader(
            path, ToTensor(), byte_tokenizer, batch_size=2, seed=1, rank=rank, world_size=3
        )
        assert data.num_samples == N_TRAIN // 3 and data.n_malformed == 0
        data.set_epoch(2)
        indices += list(data.sampler)
        assert sum(b.images.shape[0] for b in data.loader) == N_TRAIN // 3 // 2 * 2
    assert sorted(indices) == list(range(N_TRAIN))


def test_training_loader_rejects_empty_sources(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("filepath,title\n")
    with pytest.raises(ValueError, match="no usable records"):
        build_train_loader(path, ToTensor(), byte_tokenizer, batch_size=2)
