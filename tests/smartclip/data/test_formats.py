"""Tests for the annotation formats, on files written by the synthetic scenes generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartclip.data import (
    Record,
    annotation_options,
    detect_format,
    load_annotations,
    load_coco,
    load_csv,
    load_sharegpt4v,
)
from synthetic.scenes import SplitFiles
from tests.smartclip.data.helpers import N_TRAIN, N_VAL, captions_by_id, image_bytes

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
