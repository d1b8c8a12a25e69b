"""Tests for reading webdataset shards: patterns, bad samples, broken shards, pipe URLs."""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

from smartclip.data import (
    Batch,
    ShardDataset,
    build_train_loader,
    collate_skipping,
    expand_shards,
    load_wds,
)
from synthetic.scenes import SplitFiles
from tests.smartclip.data.helpers import N_TRAIN, add, byte_tokenizer, decode


def test_bad_shard_samples_and_truncated_shards_are_dropped_and_counted(
    scenes: dict[str, SplitFiles], tmp_path: Path
) -> None:
    png = scenes["train"].images[0].read_bytes()
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        add(tar, "good.png", png)
        add(tar, "good.txt", b"a caption")
        add(tar, "nocaption.png", png)
        add(tar, "noimage.txt", b"a caption")
        add(tar, "garbage.jpg", b"not a jpeg")
        add(tar, "garbage.txt", b"a caption")
        add(tar, "badjson.png", png)
        add(tar, "badjson.json", b"{oops")
        add(tar, "viajson.webp", png)  # extension need not match the bytes
        add(tar, "viajson.json", json.dumps({"caption": "from json"}).encode())
    whole = (tmp_path / "00000.tar").read_bytes()
    with tarfile.open(tmp_path / "00000.tar") as tar:
        cut = tar.getmember("badjson.png").offset_data + 10
    (tmp_path / "00001.tar").write_bytes(whole[:cut])  # ends inside badjson.png
    pattern = str(tmp_path / "{00000..00001}.tar")
    annotations = load_wds(pattern)  # images are not decoded here: garbage.jpg is a record
    kept = [(r.image_id, r.captions) for r in annotations.records]
    assert kept == [
        ("good", ("a caption",)),
        ("garbage", ("a caption",)),
        ("viajson", ("from json",)),
        ("good", ("a caption",)),
        ("garbage", ("a caption",)),
    ]
    assert annotations.n_malformed == 3 + 2 + 1  # nocaption, noimage, badjson; the cut
    dataset = ShardDataset(pattern, ToTensor(), byte_tokenizer, train=False)
    batches = list(DataLoader(dataset, batch_size=4, collate_fn=collate_skipping))
    assert [decode(t) for b in batches for t in b.texts] == ["a caption", "from json", "a caption"]
    assert sum(b.n_dropped for b in batches) == 4 + 4  # garbage.jpg fails to decode too


def test_unreadable_shards_and_corrupt_samples_are_counted_not_raised(
    scenes: dict[str, SplitFiles], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    png = scenes["train"].images[0].read_bytes()
    with tarfile.open(tmp_path / "good.tar", "w") as tar:
        for key, image in (("a", png), ("b", b"not an image"), ("c", png)):
            add(tar, f"{key}.png", image)
            add(tar, f"{key}.txt", b"a caption")
    (tmp_path / "garbage.tar").write_bytes(np.random.default_rng(0).bytes(3000))
    missing = tmp_path / "missing.tar"
    bad = [str(missing), str(tmp_path / "garbage.tar"), f"pipe:cat {missing} 2>/dev/null"]
    bad.append("nosuchscheme://host/x.tar")
    pattern = "::".join([str(tmp_path / "good.tar"), *bad])
    caplog.set_level(logging.WARNING, logger="smartclip.data")
    data = build_train_loader(pattern, ToTensor(), byte_tokenizer, batch_size=2, drop_last=False)
    for epoch in range(2):
        data.set_epoch(epoch)
        batches = list(data.loader)
        assert sum(b.images.shape[0] for b in batches) == 2
        assert sum(b.n_dropped for b in batches) == 1 + len(bad)
    for url in bad:
        assert any(f"{url}: unreadable shard" in r.getMessage() for r in caplog.records), url
    annotations = load_wds(pattern)  # images are not decoded here
    assert [r.image_id for r in annotations.records] == ["a", "b", "c"]
    assert annotations.n_malformed == len(bad)


def test_pipe_urls_read_the_same_samples_as_paths(scenes: dict[str, SplitFiles]) -> None:
    pattern = scenes["train"].annotations["wds"]
    piped = f"pipe:cat {pattern}"
    assert load_wds(piped) == load_wds(pattern)
    assert len(load_wds(piped).records) == N_TRAIN

    def batches(source: str) -> list[Batch]:
        data = build_train_loader(
            source, ToTensor(), byte_tokenizer, batch_size=4, num_workers=2, seed=5,
            drop_last=False,
        )  # fmt: skip
        data.set_epoch(1)
        return list(data.loader)

    from_paths, from_pipes = batches(pattern), batches(piped)
    assert sum(b.images.shape[0] for b in from_pipes) == N_TRAIN
    for a, b in zip(from_paths, from_pipes, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.texts, b.texts)


@settings(max_examples=100, deadline=None)
@given(lo=st.integers(0, 500), span=st.integers(0, 30), width=st.integers(1, 5))
def test_expand_shards_ranges_keep_padding(lo: int, span: int, width: int) -> None:
    hi = lo + span
    pattern = f"s3/{{{lo:0{width}d}..{hi:0{width}d}}}.tar"
    urls = expand_shards(pattern)
    assert len(urls) == span + 1
    if f"{lo:0{width}d}".startswith("0"):
        assert urls == [f"s3/{i:0{width}d}.tar" for i in range(lo, hi + 1)]
    else:
        assert urls == [f"s3/{i}.tar" for i in range(lo, hi + 1)]


def test_expand_shards_lists_products_and_joins() -> None:
    assert expand_shards("{a,b}/{0..1}.tar::c.tar") == [
        "a/0.tar",
        "a/1.tar",
        "b/0.tar",
        "b/1.tar",
        "c.tar",
    ]
    with pytest.raises(ValueError, match="empty range"):
        expand_shards("{5..3}.tar")
