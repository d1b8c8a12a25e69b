"""Tests for the scenes written with their hard negatives, and for their command line."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthetic.render_scenes import main, write_dataset_with_negatives
from synthetic.scene_operators import (
    CATEGORIES,
    MAX_K,
    NEGATIVE_COLUMNS,
    OPERATORS,
    image_negatives,
)
from synthetic.scenes import Example, SceneConfig, render, sample_example


def _contents(root: Path) -> dict[str, bytes]:
    """The bytes of every file under ``root``, keyed by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_written_negatives_are_reproducible_and_round_trip(tmp_path: Path) -> None:
    config = SceneConfig(seed=5, max_objects=4, image_size=32)
    for name, negatives in (("a", 3), ("b", 3), ("plain", 0)):
        written = write_dataset_with_negatives(
            tmp_path / name, 16, ("csv",), config, val_fraction=0.25, negatives=negatives
        )
    files = _contents(tmp_path / "a")
    assert files == _contents(tmp_path / "b")
    # negatives=0 writes no negatives, and asking for them leaves every other file as it was
    assert {n: b for n, b in files.items() if "negatives" not in n} == _contents(tmp_path / "plain")
    assert "negatives" not in written["train"].annotations
    name = r"negatives/\d{6}_(short|medium|long)_(swap|replace|add)[123]\.png"
    categories = Counter()
    for split, ids in (("train", range(12)), ("val", range(12, 16))):
        root = tmp_path / "a" / split
        with (root / "hard_negatives.csv").open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            assert tuple(reader.fieldnames) == NEGATIVE_COLUMNS
            rows = list(reader)
        expected = []
        for image_id in ids:
            scene, captions = sample_example(image_id, config)
            example = Example(image_id, scene, captions, f"images/{image_id:06d}.png")
            expected += [(example, c, n) for c, n in image_negatives(example, config)]
        assert len(rows) == len(expected) == len(list((root / "negatives").glob("*.png")))
        for row, (example, caption, negative) in zip(rows, expected, strict=True):
            assert row["filepath"] == example.file_name and (root / row["filepath"]).is_file()
            assert (row["caption"], row["negative"]) == (caption.text, negative.caption)
            assert (row["category"], int(row["k"])) == (negative.category, negative.k)
            found = re.fullmatch(name, row["negative_filepath"])
            assert found and found[1] == caption.level and found[2] == negative.operator
            pixels = np.asarray(Image.open(root / row["negative_filepath"]))
            rendered = render(negative.scene, config.image_size, config.supersample)
            assert np.array_equal(pixels, np.asarray(rendered))
            categories[row["category"]] += 1
    assert set(categories) == {c for cs in CATEGORIES.values() for c in cs}
    with pytest.raises(ValueError, match="negatives"):
        write_dataset_with_negatives(tmp_path / "bad", 4, ("csv",), config, negatives=MAX_K + 1)


def test_cli_writes_negatives_up_to_the_requested_k(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path), "--n-images", "10", "--max-objects", "4", "--negatives", "1"])
    with (tmp_path / "train" / "hard_negatives.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["k"] for r in rows} == {"1"}
    assert {r["category"].split("_")[0] for r in rows} == set(OPERATORS)
    assert "negatives:" in capsys.readouterr().out


def test_cli_writes_requested_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path), "--n-images", "12", "--formats", "csv,coco,sharegpt4v,wds"])
    for split in ("train", "val"):
        root = tmp_path / split
        for name in ("captions.csv", "coco_captions.json", "sharegpt4v.json", "latents.npz"):
            assert (root / name).is_file()
        assert list((root / "shards").glob("*.tar"))
    assert "train: 11 images" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--n-images" in capsys.readouterr().out


def test_cli_names_a_bad_value_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags, cause in (
        (["--negatives", str(MAX_K + 1)], "--negatives"),
        (["--min-objects", "3", "--max-objects", "2"], "min_objects"),
        (["--formats", "csv,parquet"], "parquet"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["--out", str(tmp_path / "out"), "--n-images", "4", *flags])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("python -m synthetic.render_scenes: error:") and cause in error
        assert not (tmp_path / "out").exists()
