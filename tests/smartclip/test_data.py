"""Tests for the real-data loaders, on files written by the synthetic scenes generator."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

from smartclip.data import (
    Batch,
    ImageTextDataset,
    LongCaptions,
    Record,
    Sample,
    ShardDataset,
    TextOptions,
    annotation_options,
    build_eval_set,
    build_train_loader,
    caption_overflows,
    collate_skipping,
    count_long_captions,
    detect_format,
    expand_shards,
    fit_caption,
    load_annotations,
    load_coco,
    load_csv,
    load_sharegpt4v,
    load_wds,
    sample_sentence_prefix,
)
from smartclip.stream import BatchStream
from synthetic.scenes import FORMATS, SceneConfig, SplitFiles, write_dataset

N_TRAIN, N_VAL, SHARD_SIZE = 18, 6, 3
CONTEXT = 512


def byte_tokenizer(texts: list[str]) -> torch.Tensor:
    """Stand-in tokenizer: UTF-8 bytes, zero padded, so tests can decode what was sampled."""
    tokens = torch.zeros(len(texts), CONTEXT, dtype=torch.long)
    for i, text in enumerate(texts):
        encoded = list(text.encode())[:CONTEXT]
        tokens[i, : len(encoded)] = torch.tensor(encoded, dtype=torch.long)
    return tokens


def decode(tokens: torch.Tensor) -> str:
    return bytes(t for t in tokens.tolist() if t).decode()


class WordTokenizer:
    """Stand-in for open_clip's tokenizer as ``fit_caption`` measures it: one id per word."""

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length

    def encode(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]


@pytest.fixture(scope="module")
def clip_tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's BPE tokenizer at CLIP's own 77-token context."""
    return open_clip.get_tokenizer("ViT-B-16", context_length=77)


def digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SplitFiles]:
    root = tmp_path_factory.mktemp("scenes")
    n = N_TRAIN + N_VAL
    return write_dataset(
        root, n, FORMATS, SceneConfig(image_size=32), val_fraction=N_VAL / n, shard_size=SHARD_SIZE
    )


def captions_by_id(files: SplitFiles) -> dict[int, list[str]]:
    entries = json.loads(files.scenes.read_text())
    return {e["image_id"]: [c["text"] for c in e["captions"]] for e in entries}


def image_bytes(files: SplitFiles) -> dict[int, bytes]:
    return {i: p.read_bytes() for i, p in zip(files.image_ids, files.images, strict=True)}


LOADS = {
    "csv": ({"id_key": "image_id"}, 3),
    "tsv": ({"id_key": "image_id"}, 3),
    "coco": ({}, 3),
    "sharegpt4v": ({}, 1),
    "wds": ({}, 3),
    "karpathy": ({"split": "train"}, 3),
}


@pytest.mark.parametrize("fmt", sorted(LOADS))
def test_every_format_loads_all_records_and_captions(
    scenes: dict[str, SplitFiles], fmt: str
) -> None:
    files = scenes["train"]
    options, n_captions = LOADS[fmt]
    annotations = load_annotations(files.annotations[fmt], **options)
    assert annotations.n_malformed == 0
    assert len(annotations.records) == N_TRAIN
    expected, images = captions_by_id(files), image_bytes(files)
    for record in annotations.records:
        image_id = int(record.image_id)
        assert len(record.captions) == n_captions
        if n_captions == 1:  # ShareGPT4V keeps the long caption only
            assert record.captions == (max(expected[image_id], key=len),)
        else:
            assert list(record.captions) == expected[image_id]
        stored = record.image if isinstance(record.image, bytes) else record.image.read_bytes()
        assert stored == images[image_id]


def test_detect_format_by_extension_and_json_shape(scenes: dict[str, SplitFiles]) -> None:
    annotations = scenes["train"].annotations
    expected = {"csv": "csv", "tsv": "tsv", "coco": "coco", "karpathy": "coco", "wds": "wds"}
    expected["sharegpt4v"] = "sharegpt4v"
    assert {fmt: detect_format(path) for fmt, path in annotations.items()} == expected
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format("captions.parquet")


def test_karpathy_split_filter_and_official_layout_rejects_split(
    scenes: dict[str, SplitFiles],
) -> None:
    karpathy = scenes["train"].annotations["karpathy"]
    assert len(load_coco(karpathy, split="val").records) == N_VAL
    assert len(load_coco(karpathy, split=("train", "val")).records) == N_TRAIN + N_VAL
    assert len(load_coco(karpathy).records) == N_TRAIN + N_VAL
    with pytest.raises(ValueError, match="no splits"):
        load_coco(scenes["train"].annotations["coco"], split="test")


@pytest.mark.parametrize("fmt", ["coco", "csv", "wds"])
def test_eval_set_indexes_every_caption_to_its_image(
    scenes: dict[str, SplitFiles], fmt: str
) -> None:
    files = scenes["val"]
    options = {"id_key": "image_id"} if fmt == "csv" else {}
    evalset = build_eval_set(files.annotations[fmt], **options)
    expected = captions_by_id(files)
    assert len(evalset.images) == N_VAL and len(evalset.captions) == 3 * N_VAL
    assert evalset.n_malformed == 0 and evalset.n_bad_images == 0
    for t, caption in enumerate(evalset.captions):
        assert caption in expected[int(evalset.image_ids[evalset.text_to_image[t]])]
    groups = evalset.image_to_texts()
    assert sorted(t for g in groups for t in g) == list(range(3 * N_VAL))
    for i, texts in enumerate(groups):
        assert [evalset.captions[t] for t in texts] == expected[int(evalset.image_ids[i])]
    batches = list(evalset.image_loader(ToTensor(), batch_size=4))
    loaded = torch.cat(batches)
    originals = image_bytes(files)
    for image_id, tensor in zip(evalset.image_ids, loaded, strict=True):
        original = ToTensor()(Image.open(io.BytesIO(originals[int(image_id)])).convert("RGB"))
        assert torch.equal(tensor, original)


@settings(max_examples=60, deadline=None)
@given(
    sentences=st.lists(
        st.text(alphabet="abc xyz,", min_size=1, max_size=12).map(lambda s: s.strip() or "a"),
        min_size=1,
        max_size=6,
    ),
    separators=st.lists(st.sampled_from([" ", "  ", "\n", " \n "]), min_size=6, max_size=6),
    ends=st.lists(st.sampled_from([".", "!", "?", "..."]), min_size=6, max_size=6),
)
def test_sentence_prefix_is_whole_sentences_and_covers_every_k(
    sentences: list[str], separators: list[str], ends: list[str]
) -> None:
    full = [s + e for s, e in zip(sentences, ends, strict=False)]
    caption = "".join(s + sep for s, sep in zip(full, separators, strict=False))
    prefixes = {
        "".join(s + sep for s, sep in zip(full[:k], separators, strict=False)).rstrip()
        for k in range(1, len(full) + 1)
    }
    rng = np.random.default_rng(0)
    drawn = [sample_sentence_prefix(caption, rng) for _ in range(300)]
    assert all(caption.startswith(d) for d in drawn)
    assert set(drawn) == prefixes


def test_sentence_prefix_keeps_text_without_final_punctuation() -> None:
    rng = np.random.default_rng(1)
    drawn = {sample_sentence_prefix("One. Two. and three", rng) for _ in range(100)}
    assert drawn == {"One.", "One. Two.", "One. Two. and three"}


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


def test_malformed_csv_rows_are_counted(scenes: dict[str, SplitFiles], tmp_path: Path) -> None:
    image = scenes["train"].images[0]
    good = f"{image},a red circle\n"
    rows = [
        good,
        f"{image},\n",  # empty caption
        f"{image}\n",  # missing field
        f"{image},a,b\n",  # one field too many
        ",a caption without image\n",
        good.replace("a red", "another red"),
        f"{image},caf\xe9 in latin-1\n",  # not UTF-8
    ]
    path = tmp_path / "captions.csv"
    path.write_bytes(("filepath,title\n" + "".join(rows)).encode("latin-1"))
    annotations = load_csv(path)
    assert annotations.n_malformed == 5
    assert annotations.records == [
        Record(image, ("a red circle", "another red circle"), str(image))
    ]
    path.write_text("path,text\nx.png,y\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_csv(path)
    assert load_csv(path, img_key="path", caption_key="text").records[0].captions == ("y",)


def test_malformed_sharegpt4v_entries_are_counted(tmp_path: Path) -> None:
    gpt = {"from": "gpt", "value": "A long caption. Two sentences."}
    human = {"from": "human", "value": "<image>\nDescribe."}
    entries = [
        {"image": "a.jpg", "conversations": [human, gpt]},
        {"image": "b.jpg", "conversations": [human]},  # no gpt turn
        {"conversations": [human, gpt]},  # no image
        {"image": "c.jpg", "conversations": [human, {"from": "gpt", "value": "  "}]},
        "not an object",
        {"image": "d.jpg", "conversations": "not a list"},
    ]
    path = tmp_path / "share.json"
    path.write_text(json.dumps(entries))
    annotations = load_sharegpt4v(path, image_root="/data")
    assert annotations.n_malformed == 5
    assert annotations.records == [Record(Path("/data/a.jpg"), (gpt["value"],), "a.jpg")]
    path.write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_sharegpt4v(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="must be a JSON list"):
        load_sharegpt4v(path)


def test_malformed_coco_entries_are_counted(tmp_path: Path) -> None:
    official = {
        "images": [
            {"id": 1, "file_name": "1.jpg"},
            {"id": 2},  # no file name
            {"id": 3, "file_name": "3.jpg"},  # no captions
        ],
        "annotations": [
            {"image_id": 1, "caption": "one"},
            {"image_id": 1, "caption": "uno"},
            {"image_id": 9, "caption": "unknown image"},
            {"image_id": 1},  # no caption
            {"image_id": [1], "caption": "unhashable id"},
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(official))
    annotations = load_coco(path)
    assert annotations.n_malformed == 5
    assert annotations.records == [Record(tmp_path / "1.jpg", ("one", "uno"), "1")]
    karpathy = {
        "images": [
            {
                "filepath": "val",
                "filename": "a.jpg",
                "split": "test",
                "imgid": 0,
                "sentences": [{"raw": "first"}, {"tokens": []}, {"raw": "second"}],
            },
            {"filename": "b.jpg", "split": "test", "sentences": []},  # no captions
            {"filename": "c.jpg", "split": "test"},  # no sentences list
            {"filename": "d.jpg", "split": "train", "sentences": [{"raw": "not in split"}]},
        ]
    }
    path.write_text(json.dumps(karpathy))
    annotations = load_coco(path, split="test")
    assert annotations.n_malformed == 3
    assert annotations.records == [Record(tmp_path / "val/a.jpg", ("first", "second"), "0")]


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


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


def test_training_loader_rejects_empty_sources(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("filepath,title\n")
    with pytest.raises(ValueError, match="no usable records"):
        build_train_loader(path, ToTensor(), byte_tokenizer, batch_size=2)


def test_annotation_options_give_each_format_only_its_own_options(tmp_path):
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": []}))
    flags = {"img_key": "path", "caption_key": "text", "sep": ";", "image_root": "/img"}
    assert annotation_options("a.csv", **flags) == (
        None,
        {"img_key": "path", "caption_key": "text", "sep": ";", "image_root": "/img"},
    )
    assert annotation_options(str(coco), split="test", **flags) == (
        None,
        {"image_root": "/img", "split": "test"},
    )
    assert annotation_options("s/{00..03}.tar", "wds", **flags) == ("wds", {})
    with pytest.raises(ValueError, match="split"):
        annotation_options("a.tsv", split="test")


def test_caption_overflow_matches_what_the_tokenizer_cuts(clip_tokenizer) -> None:
    for n_words in range(70, 80):
        text = " ".join(["red"] * n_words)
        n_ids = len(clip_tokenizer.encode(text))
        kept = int((clip_tokenizer([text])[0] != 0).sum()) - 2  # without start and end tokens
        assert caption_overflows(text, clip_tokenizer) == (kept < n_ids)
    long = " ".join(["a red circle"] * 100)  # 300 words, one sentence
    assert caption_overflows(long, clip_tokenizer, context_length=400) is False
    for mode in ("truncate", "sentences"):
        assert fit_caption(long, clip_tokenizer, mode) == (long, True)
        assert fit_caption("a red circle.", clip_tokenizer, mode) == ("a red circle.", False)
    assert caption_overflows(long, byte_tokenizer) is None  # no encode: cannot tell
    assert fit_caption(long, byte_tokenizer, "sentences") == (long, False)
    with pytest.raises(ValueError, match="caption_fit"):
        fit_caption(long, clip_tokenizer, "words")


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8),
    separators=st.lists(st.sampled_from([" ", "  ", "\n"]), min_size=8, max_size=8),
    ends=st.lists(st.sampled_from([".", "!", "?", "..."]), min_size=8, max_size=8),
    context_length=st.integers(3, 40),
)
def test_sentence_fit_keeps_the_longest_whole_sentence_prefix_that_fits(
    lengths: list[int], separators: list[str], ends: list[str], context_length: int
) -> None:
    sentences = [" ".join(["w"] * n) + end for n, end in zip(lengths, ends, strict=False)]
    caption = "".join(s + sep for s, sep in zip(sentences, separators, strict=False))
    prefixes = [
        "".join(s + sep for s, sep in zip(sentences[:k], separators, strict=False)).rstrip()
        for k in range(1, len(sentences) + 1)
    ]
    tokenizer = WordTokenizer(context_length)
    too_long = len(caption.split()) + 2 > context_length  # start and end tokens count
    fitting = [p for p in prefixes if len(p.split()) + 2 <= context_length]
    expected = (fitting[-1], False) if fitting else (prefixes[0], True)
    assert fit_caption(caption, tokenizer, "sentences") == (
        expected if too_long else (caption, False)
    )
    assert fit_caption(caption, tokenizer, "truncate") == (caption, too_long)


def test_sentence_fit_with_open_clip_keeps_whole_sentences(clip_tokenizer) -> None:
    sentences = [f"The {colour} circle sits above the square." for colour in ["red"] * 30]
    caption = " ".join(sentences)
    text, truncated = fit_caption(caption, clip_tokenizer, "sentences")
    assert not truncated and caption.startswith(text) and text.endswith(".")
    k = len(text.split(". "))
    assert text == " ".join(sentences[:k])
    assert not caption_overflows(text, clip_tokenizer)
    assert caption_overflows(" ".join(sentences[: k + 1]), clip_tokenizer)


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


def test_shard_samples_report_truncation(scenes: dict[str, SplitFiles], tmp_path: Path) -> None:
    png = scenes["train"].images[0].read_bytes()
    with tarfile.open(tmp_path / "0.tar", "w") as tar:
        for key, caption in (("long", " ".join(["red"] * 300)), ("short", "red")):
            add(tar, f"{key}.png", png)
            add(tar, f"{key}.txt", caption.encode())
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=77)
    dataset = ShardDataset(str(tmp_path / "0.tar"), ToTensor(), tokenizer, train=False)
    assert [s.truncated for s in dataset] == [True, False]


def test_count_long_captions_counts_all_or_a_seeded_sample() -> None:
    tokenizer = WordTokenizer(12)  # 10 words fit
    records = [
        Record(Path(f"{i}.png"), (" ".join(["w"] * (20 if i % 4 == 0 else 5)), "w w"), str(i))
        for i in range(40)
    ]  # 80 captions, 10 of them long
    everything = count_long_captions(records, tokenizer, 12)
    assert everything == LongCaptions(10, 80, 80, 12)
    assert str(everything) == "captions over the 12-token context: 10 of 80 (12.5%)"
    assert count_long_captions(records, tokenizer, 30).n_long == 0  # the given context counts
    sample = count_long_captions(records, tokenizer, 12, limit=75, seed=1)
    assert (sample.n_checked, sample.n_total) == (75, 80) and 5 <= sample.n_long <= 10
    assert count_long_captions(records, tokenizer, 12, limit=75, seed=1) == sample
    share = f"{sample.n_long / 75:.1%}"
    assert str(sample) == (
        f"captions over the 12-token context: {sample.n_long} of a random 75 of 80 ({share})"
    )
    assert count_long_captions(records, byte_tokenizer, 12) is None
