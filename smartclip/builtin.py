"""The built-in data: rendered scenes (`synthetic.scenes`) cached as CSV caption files, used by
the no-argument runs of `smartclip.train` and `smartclip.eval`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from smartclip import distributed as dist
from synthetic.scenes import SceneConfig, write_dataset

SCENES_IMAGE_SIZE = 64


def scenes_root(scenes_dir: str | Path, n_images: int) -> Path:
    """Where the built-in scenes of this size are cached (splits `train/`, `val/` inside)."""
    return Path(scenes_dir) / f"n{n_images}-px{SCENES_IMAGE_SIZE}"


def prepare_scenes(scenes_dir: str | Path, n_images: int, is_main: bool = True) -> tuple[str, str]:
    """Render the scenes once (on the main rank, into a temporary folder renamed when complete);
    return the train and val caption CSVs."""
    root = scenes_root(scenes_dir, n_images)
    train_csv, val_csv = root / "train" / "captions.csv", root / "val" / "captions.csv"
    if is_main and not train_csv.exists():
        if root.exists():
            raise SystemExit(f"{root} exists but has no train/captions.csv; remove it")
        tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"rendering {n_images} scenes into {root} ...", flush=True)
        write_dataset(tmp, n_images, ("csv",), SceneConfig(image_size=SCENES_IMAGE_SIZE))
        os.replace(tmp, root)
    dist.barrier()
    return str(train_csv), str(val_csv)
