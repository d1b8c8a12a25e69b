"""Fixtures of the data tests: open_clip's tokenizer and a scenes dataset in every format."""

from __future__ import annotations

import open_clip
import pytest

from synthetic.scenes import FORMATS, SceneConfig, SplitFiles, write_dataset
from tests.smartclip.data.helpers import N_TRAIN, N_VAL, SHARD_SIZE


@pytest.fixture(scope="module")
def clip_tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's BPE tokenizer at CLIP's own 77-token context."""
    return open_clip.get_tokenizer("ViT-B-16", context_length=77)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SplitFiles]:
    root = tmp_path_factory.mktemp("scenes")
    n = N_TRAIN + N_VAL
    return write_dataset(
        root, n, FORMATS, SceneConfig(image_size=32), val_fraction=N_VAL / n, shard_size=SHARD_SIZE
    )
