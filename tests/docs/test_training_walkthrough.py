"""docs/training.md's "Fine-tune on your own images": every command of its CPU walk-through runs as
written on a small folder of own images, and every flag its GPU commands use exists."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from smartclip.cli import build_parser
from smartclip.eval import EvalConfig
from smartclip.export import ExportConfig
from smartclip.train_config import PRESETS, TrainConfig

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "training.md"
SECTION = "## Fine-tune on your own images"
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "grey": (128,) * 3}


def section_commands(subsection: str) -> list[list[str]]:
    """The commands of the ```bash blocks under `### subsection` of the own-images section."""
    text = PAGE.read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n## ", 1)[0]
    part = text.split(f"### {subsection}", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", part, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line) for line in lines if line.strip()]


def write_own_images(root: Path, n_train: int = 48, n_val: int = 16) -> None:
    """mine/images/*.png (a square of one colour on another) and mine/{train,val}.csv in
    open_clip's layout, paths relative to the CSV."""
    (root / "images").mkdir(parents=True)
    names = list(COLOURS)
    for split, n, offset in (("train", n_train, 0), ("val", n_val, n_train)):
        with (root / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["filepath", "title"])
            for i in range(offset, offset + n):
                shape, ground = names[i % 4], names[(i // 4) % 4]
                image = Image.new("RGB", (64, 64), COLOURS[ground])
                size = 16 + 8 * (i % 3)
                image.paste(COLOURS[shape], (8, 8, 8 + size, 8 + size))
                image.save(root / "images" / f"{i:04d}.png")
                caption = f"A {shape} square on a {ground} background. It is {size} pixels wide."
                writer.writerow([f"images/{i:04d}.png", caption])


def parser_for(argv: list[str]):
    """The parser of the command line `argv` names, and the arguments after the module."""
    module = argv[argv.index("-m") + 1]
    rest = argv[argv.index("-m") + 2 :]
    rest = rest[1:] if rest[:1] == ["--"] else rest
    configs = {
        "smartclip.train": (TrainConfig, PRESETS),
        "smartclip.eval": (EvalConfig, None),
        "smartclip.export": (ExportConfig, None),
    }
    cls, presets = configs[module]
    return build_parser(cls, presets), rest


def test_the_gpu_commands_use_only_flags_that_exist() -> None:
    commands = section_commands("The released recipe on 8 GPUs")
    assert [c[0] for c in commands] == ["torchrun", "python"]
    for argv in commands:
        parser, rest = parser_for(argv)
        _, unknown = parser.parse_known_args(rest)
        assert not unknown, unknown


@pytest.mark.slow
def test_the_cpu_walkthrough_runs_as_written(tmp_path: Path) -> None:
    write_own_images(tmp_path / "mine")
    commands = section_commands("On the CPU, with the tiny towers")
    assert len(commands) == 4 and all(c[:3] == ["python", "-m", c[2]] for c in commands)
    for argv in commands:
        proc = subprocess.run(
            [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    results = json.loads((tmp_path / "runs" / "mine" / "eval.json").read_text())["results"]
    recall = results[0]["retrieval"]
    assert recall["images"] == 16 and 0 <= recall["t2i_r1"] <= 100
    assert (tmp_path / "runs" / "mine" / "export-latest" / "open_clip_pytorch_model.bin").is_file()
    assert (tmp_path / "runs" / "mine" / "run.log").is_file()
