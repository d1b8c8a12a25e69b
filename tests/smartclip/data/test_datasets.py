"""Tests for the datasets over records and over shards: seeded draws, splits, resampling."""

from __future__ import annotations

import hashlib
import itertools
import tarfile
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import ToTensor

from smartclip.data import ImageTextDataset, Record, ShardDataset, TextOptions, build_train_loader
from smartclip.stream import BatchStream
from synthetic.scenes import SplitFiles
from tests.smartclip.data.helpers import N_TRAIN, SHARD_SIZE, add, byte_tokenizer, decode


def digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


def test_training_items_draw_captions_per_epoch_and_eval_items_do_not(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(image)
    long = "First sentence. Second sentence. Third one."
    record = Record(image, ("short caption", long), "a")
    train = ImageTextDataset([record], ToTensor(), byte_tokenizer, seed=5)
    seen = []
    for epoch in range(60):
        train.set_epoch(epoch)
        item = train[0]
        assert item is not None and torch.equal(item[0], ToTensor()(Image.open(image)))
        seen.append(decode(item[1]))
    assert set(seen) == {"short caption", "First sentence.", long, long.rsplit(" ", 2)[0]}
    train.set_epoch(3)
    assert decode(train[0][1]) == seen[3]  # a function of (seed, epoch, index), not of history
    whole = ImageTextDataset(
        [record], ToTensor(), byte_tokenizer, text=TextOptions(sentence_sampling=False)
    )
    drawn = set()
    for epoch in range(30):
        whole.set_epoch(epoch)
        drawn.add(decode(whole[0][1]))
    assert drawn == {"short caption", long}
    evaluation = ImageTextDataset([record], ToTensor(), byte_tokenizer, train=False)
    assert {decode(evaluation[0][1]) for _ in range(5)} == {"short caption"}


@settings(max_examples=100, deadline=None)
@given(
    n_shards=st.integers(1, 40),
    world_size=st.integers(1, 4),
    num_workers=st.integers(1, 4),
    epoch=st.integers(0, 5),
)
def test_shard_assignment_partitions_the_shards(
    n_shards: int, world_size: int, num_workers: int, epoch: int
) -> None:
    urls = [f"{i}.tar" for i in range(n_shards)]
    assigned = []
    for rank in range(world_size):
        dataset = ShardDataset(urls, ToTensor(), byte_tokenizer, rank=rank, world_size=world_size)
        dataset.set_epoch(epoch)
        for worker in range(num_workers):
            assigned += dataset.shards_for(worker, num_workers)
    assert sorted(assigned) == list(range(n_shards))


def image_digests(files: SplitFiles) -> list[str]:
    return sorted(digest(ToTensor()(Image.open(p).convert("RGB"))) for p in files.images)


def epoch_orders(pattern: str, epoch: int, **options: Any) -> list[list[str]]:
    """For each of 2 ranks with 2 workers: image digests in the order its loader yields them."""
    orders = []
    for rank in range(2):
        data = build_train_loader(
            pattern,
            ToTensor(),
            byte_tokenizer,
            batch_size=2,
            num_workers=2,
            rank=rank,
            world_size=2,
            drop_last=False,
            shuffle_buffer=4,
            seed=3,
            **options,
        )
        data.set_epoch(epoch)
        batches = list(data.loader)
        assert all(b.n_dropped == 0 for b in batches)
        orders.append([digest(image) for b in batches for image in b.images])
    return orders


def test_shards_over_two_ranks_and_two_workers_cover_every_sample_once_per_epoch(
    scenes: dict[str, SplitFiles],
) -> None:
    files = scenes["train"]
    pattern = files.annotations["wds"]
    first, second = epoch_orders(pattern, 1), epoch_orders(pattern, 2)
    for orders in (first, second):
        assert sorted(orders[0] + orders[1]) == image_digests(files)
    assert first != second
    assert epoch_orders(pattern, 1) == first  # a function of (seed, epoch), not of history


def test_resampled_shards_stream_without_end_deterministically_per_seed(
    scenes: dict[str, SplitFiles],
) -> None:
    files = scenes["train"]

    def stream(seed: int, epoch: int = 0, rank: int = 0) -> list[tuple[str, str]]:
        dataset = ShardDataset(
            files.annotations["wds"],
            ToTensor(),
            byte_tokenizer,
            seed=seed,
            rank=rank,
            world_size=2,
            shuffle_buffer=4,
            resampled=True,
        )
        dataset.set_epoch(epoch)
        return [(digest(s.image), decode(s.tokens)) for s in itertools.islice(dataset, 3 * N_TRAIN)]

    drawn = stream(seed=1)
    assert len(drawn) == 3 * N_TRAIN  # more than the data holds: drawn with replacement
    assert {d for d, _ in drawn} <= set(image_digests(files))
    assert len({d for d, _ in drawn}) > 2 * SHARD_SIZE  # from several shards
    assert stream(seed=1) == drawn
    assert stream(seed=2) != drawn
    assert stream(seed=1, epoch=1) != drawn and stream(seed=1, rank=1) != drawn

    def loader_batches() -> list[torch.Tensor]:
        data = build_train_loader(
            files.annotations["wds"], ToTensor(), byte_tokenizer, batch_size=3, num_workers=2,
            resampled=True, seed=1,
        )  # fmt: skip
        return [b.images for b in itertools.islice(data.loader, 8)]

    first = loader_batches()
    assert all(torch.equal(a, b) for a, b in zip(first, loader_batches(), strict=True))
    assert not torch.equal(first[0], first[1])  # the two workers draw differently
    with pytest.raises(ValueError, match="resampling applies to webdataset shards"):
        build_train_loader(
            files.annotations["csv"], ToTensor(), byte_tokenizer, batch_size=2, resampled=True
        )


@pytest.mark.parametrize("resampled", [False, True])
def test_shard_streams_resume_exactly(scenes: dict[str, SplitFiles], resampled: bool) -> None:
    def stream(epoch: int, position: int) -> BatchStream:
        data = build_train_loader(
            scenes["train"].annotations["wds"], ToTensor(), byte_tokenizer, batch_size=2,
            num_workers=2, seed=4, shuffle_buffer=4, resampled=resampled,
        )  # fmt: skip
        return BatchStream(data, batches_per_epoch=4, epoch=epoch, position=position)

    whole = list(itertools.islice(stream(0, 0), 10))  # epochs 0 and 1, half of epoch 2
    resumed = list(itertools.islice(stream(1, 1), 5))  # from the second batch of epoch 1
    for a, b in zip(whole[5:], resumed, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.texts, b.texts)
    assert not torch.equal(whole[0].images, whole[4].images)  # epochs differ


def test_shard_samples_report_truncation(scenes: dict[str, SplitFiles], tmp_path: Path) -> None:
    png = scenes["train"].images[0].read_bytes()
    with tarfile.open(tmp_path / "0.tar", "w") as tar:
        for key, caption in (("long", " ".join(["red"] * 300)), ("short", "red")):
            add(tar, f"{key}.png", png)
            add(tar, f"{key}.txt", caption.encode())
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=77)
    dataset = ShardDataset(str(tmp_path / "0.tar"), ToTensor(), tokenizer, train=False)
    assert [s.truncated for s in dataset] == [True, False]
