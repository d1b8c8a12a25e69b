"""The built-in data: rendered scenes (`synthetic.scenes`) cached as CSV caption files, with
their SWAP, REPLACE and ADD hard negatives (`synthetic.scene_operators`, k = 1..3), used by the
no-argument runs of `smartclip.train` and `smartclip.eval`.

Each split folder holds `captions.csv` (filepath, title, image_id, level), `latents.npz` and
`hard_negatives.csv` (filepath, caption, negative, category, k, negative_filepath) with the
negatives' images in `negatives/`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from smartclip import distributed as dist
from synthetic.render_scenes import write_dataset_with_negatives
from synthetic.scenes import SceneConfig

SCENES_IMAGE_SIZE = 64
NEGATIVE_STEPS = 3  # hard negatives with k = 1..3 operator applications


def scenes_root(scenes_dir: str | Path, n_images: int) -> Path:
    """Where the built-in scenes of this size are cached (splits `train/`, `val/` inside)."""
    return Path(scenes_dir) / f"n{n_images}-px{SCENES_IMAGE_SIZE}-neg{NEGATIVE_STEPS}"


def prepare_scenes(scenes_dir: str | Path, n_images: int, is_main: bool = True) -> Path:
    """Render the scenes and their hard negatives once (on the main rank, into a temporary folder
    renamed when complete); return the folder holding `train/` and `val/`."""
    root = scenes_root(scenes_dir, n_images)
    if is_main and not (root / "train" / "captions.csv").exists():
        if root.exists():
            raise SystemExit(f"{root} exists but has no train/captions.csv; remove it")
        tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"rendering {n_images} scenes and their hard negatives into {root} ...", flush=True)
        config = SceneConfig(image_size=SCENES_IMAGE_SIZE)
        write_dataset_with_negatives(tmp, n_images, ("csv",), config, negatives=NEGATIVE_STEPS)
        os.replace(tmp, root)
    dist.barrier()
    return root
