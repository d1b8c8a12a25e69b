"""The rendered scenes written to disk with their hard negatives, and the command line for both.

This module sits above the two it combines, so neither imports the other back:
``synthetic.scenes`` (scenes, captions, ``write_dataset``) and ``synthetic.scene_operators``
(SWAP, REPLACE and ADD hard negatives, built on the scenes).

Public API
----------
``write_dataset_with_negatives(out_dir, n_images, formats, config, *, negatives, ...)``
    ``-> dict[str, SplitFiles]``
``main(argv)``

CLI: ``python -m synthetic.render_scenes --out DIR --n-images N --formats csv,coco,wds --seed S
[--negatives K]``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from synthetic.scene_operators import MAX_K, write_hard_negatives
from synthetic.scenes import (
    FORMATS,
    Example,
    SceneConfig,
    SplitFiles,
    sample_example,
    write_dataset,
)


def write_dataset_with_negatives(
    out_dir: str | Path,
    n_images: int,
    formats: Sequence[str] = ("csv",),
    config: SceneConfig = SceneConfig(),
    *,
    negatives: int = 0,
    val_fraction: float = 0.1,
    shard_size: int = 100,
) -> dict[str, SplitFiles]:
    """``write_dataset``, and for ``negatives = K > 0`` each split's hard negatives as well.

    The hard negatives are ``hard_negatives.csv`` and ``negatives/*.png`` in each split: SWAP,
    REPLACE and ADD hard negatives of every caption with k = 1..K composition steps (K <= ``MAX_K``;
    see ``synthetic.scene_operators.write_hard_negatives``), listed as the split's
    ``annotations["negatives"]``. Every other file is the one ``write_dataset`` writes.
    """
    if not 0 <= negatives <= MAX_K:
        raise ValueError(f"negatives must be in 0..{MAX_K}, got {negatives}")
    written = write_dataset(
        out_dir, n_images, formats, config, val_fraction=val_fraction, shard_size=shard_size
    )
    if negatives == 0:
        return written
    return {split: _add_negatives(files, config, negatives) for split, files in written.items()}


def _add_negatives(files: SplitFiles, config: SceneConfig, max_k: int) -> SplitFiles:
    """Write one split's hard negatives; its ``files`` with them as ``annotations["negatives"]``."""
    path = write_hard_negatives(files.root, _examples(files, config), config, max_k)
    return dataclasses.replace(files, annotations=files.annotations | {"negatives": str(path)})


def _examples(files: SplitFiles, config: SceneConfig) -> list[Example]:
    """The examples of one written split, drawn again by ``sample_example`` (seeded per image,
    hence the scenes and captions ``write_dataset`` rendered), with their relative image paths."""
    return [
        Example(
            image_id, *sample_example(image_id, config), path.relative_to(files.root).as_posix()
        )
        for image_id, path in zip(files.image_ids, files.images, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; see ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m synthetic.render_scenes",
        description="Render seeded toy scenes with ground-truth latents and captions.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--n-images", type=int, required=True, help="images over all splits")
    parser.add_argument(
        "--formats",
        default="csv",
        help=f"comma-separated annotation formats from {','.join(FORMATS)} (default: csv)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--min-objects", type=int, default=1, help="fewest objects per image")
    parser.add_argument("--max-objects", type=int, default=3, help="most objects per image")
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="fraction of images held out as val/"
    )
    parser.add_argument("--shard-size", type=int, default=100, help="images per webdataset shard")
    parser.add_argument(
        "--negatives",
        type=int,
        default=0,
        choices=range(MAX_K + 1),
        help="also write hard_negatives.csv and negatives/*.png per split: SWAP, REPLACE and ADD "
        f"hard negatives of every caption with up to K composition steps (0..{MAX_K}; default: 0, "
        "none)",
        metavar="K",
    )
    args = parser.parse_args(argv)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    try:
        config = SceneConfig(
            image_size=args.image_size,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            seed=args.seed,
        )
        written = write_dataset_with_negatives(
            args.out,
            args.n_images,
            formats,
            config,
            negatives=args.negatives,
            val_fraction=args.val_fraction,
            shard_size=args.shard_size,
        )
    except ValueError as err:  # the scenes' own checks of the flags' values: one line
        parser.error(str(err))
    for split, files in written.items():
        print(f"{split}: {len(files.images)} images in {files.root}")
        for fmt, path in files.annotations.items():
            print(f"  {fmt}: {path}")


if __name__ == "__main__":
    main()
