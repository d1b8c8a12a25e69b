"""The training loader: ``Batch`` es for one rank from any annotation format or from shards.

``build_train_loader(source, transform, tokenizer, *, batch_size, ...) -> TrainData``
``TrainData(loader, sampler, n_malformed, num_samples)``, ``.set_epoch(epoch)`` before each epoch
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler

from smartclip.data.captions import TextOptions
from smartclip.data.datasets import ImageTextDataset, ShardDataset
from smartclip.data.formats import detect_format, load_annotations
from smartclip.data.samples import Tokenizer, Transform, collate_skipping


@dataclass
class TrainData:
    """A training loader and its bookkeeping; call ``set_epoch(epoch)`` before each epoch.

    ``n_malformed``: annotation entries skipped at load time (shard problems show up per batch
    in ``Batch.n_dropped`` instead). ``num_samples``: images this rank sees per epoch (None for
    shards, whose size is unknown up front).
    """

    loader: DataLoader
    sampler: DistributedSampler | None
    n_malformed: int
    num_samples: int | None

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.loader.dataset.set_epoch(epoch)


def build_train_loader(
    source: str | Path,
    transform: Transform,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    fmt: str | None = None,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    text: TextOptions = TextOptions(),  # noqa: B008 (a frozen dataclass)
    shuffle_buffer: int = 256,
    resampled: bool = False,
    pin_memory: bool = False,
    **options: Any,
) -> TrainData:
    """A shuffling loader of ``Batch`` es for one rank.

    File formats use a ``DistributedSampler`` (also for one process, for seeded shuffling);
    shards are split by rank and worker, or with ``resampled`` drawn with replacement by every
    reader (``ShardDataset``). Captions are drawn and fitted as ``text`` says (``TextOptions``).
    ``options`` go to the format's loader (e.g. ``img_key``, ``caption_key``, ``sep``,
    ``image_root``, ``split``).
    """
    fmt = fmt or detect_format(source)
    common = {"train": True, "seed": seed, "text": text}
    loader_args = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate_skipping,
        "drop_last": drop_last,
        "pin_memory": pin_memory,
    }
    if fmt == "wds":
        if options:
            raise TypeError(f"shards take no loader options, got {sorted(options)}")
        shards = ShardDataset(
            str(source),
            transform,
            tokenizer,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=shuffle_buffer,
            resampled=resampled,
            **common,
        )
        return TrainData(DataLoader(shards, **loader_args), None, 0, None)
    if resampled:
        raise ValueError(f"{source}: resampling applies to webdataset shards, not {fmt}")
    annotations = load_annotations(source, fmt, **options)
    if not annotations.records:
        raise ValueError(f"{source}: no usable records ({annotations.n_malformed} malformed)")
    dataset = ImageTextDataset(annotations.records, transform, tokenizer, **common)
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=drop_last
    )
    loader = DataLoader(dataset, sampler=sampler, **loader_args)
    return TrainData(loader, sampler, annotations.n_malformed, len(sampler))
