"""Torch datasets of ``Sample`` s: map-style over records, iterable over webdataset shards.

``ImageTextDataset``  map-style ``Sample`` s over records (``None`` for unreadable images)
``ShardDataset``      iterable ``Sample`` s over shards, split by rank, then by worker, or resampled

Malformed shard samples and unreadable shards become ``None`` samples (logged through
``logging``) that ``collate_skipping`` drops and counts in ``Batch.n_dropped``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import webdataset as wds
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from smartclip.data.captions import TextOptions
from smartclip.data.records import Record
from smartclip.data.samples import Sample, Tokenizer, Transform, _make_sample
from smartclip.data.shards import _parse_sample, _read_shard, expand_shards

logger = logging.getLogger(__name__)


class _SampleMaker:
    """What both datasets share: how a record becomes a ``Sample`` (transform, tokenizer, caption
    options), whether captions are drawn (``train``), the seed of those draws and the epoch that
    ``set_epoch`` moves on."""

    def __init__(
        self, transform: Transform, tokenizer: Tokenizer, train: bool, seed: int, text: TextOptions
    ) -> None:
        self.transform = transform
        self.tokenizer = tokenizer
        self.train = train
        self.seed = seed
        self.text = text
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ImageTextDataset(_SampleMaker, Dataset):
    """Map-style ``Sample`` s over records; ``None`` where the image cannot be read.

    With ``train=True`` each item draws one of the record's captions and, if
    ``sentence_sampling``, its first k sentences, from ``default_rng([seed, epoch, index])``: the
    same whatever the worker. Otherwise the first caption is used whole. Either way the caption is
    fitted to the context as ``caption_fit`` says (``fit_caption``). Call ``set_epoch`` before
    each epoch (the loader must not use persistent workers).
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Transform,
        tokenizer: Tokenizer,
        *,
        train: bool = True,
        seed: int = 0,
        text: TextOptions = TextOptions(),  # noqa: B008 (a frozen dataclass)
    ) -> None:
        super().__init__(transform, tokenizer, train, seed, text)
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample | None:
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        record = self.records[index]
        return _make_sample(record, self.transform, self.tokenizer, rng, self.text)


class ShardDataset(_SampleMaker, IterableDataset):
    """Iterable ``Sample`` s over webdataset shards; ``None`` for each bad sample or shard.

    Shards are read with the webdataset library (``_read_shard``: paths, ``pipe:`` and other
    URLs). By default the shards (reshuffled per epoch when ``train``, seeded by
    ``[seed, epoch]``) go round-robin to ``world_size * num_workers`` readers, so every sample is
    read exactly once per epoch when all ranks use the same number of workers; ranks with fewer
    shards than readers leave readers idle. With ``resampled`` each reader instead draws shards
    with replacement, without end, from webdataset's ``ResampledShards`` seeded by
    ``(seed, epoch, rank, worker)``: ranks stream independently and the loop ends epochs. With
    ``train`` samples pass a ``shuffle_buffer``-sized shuffle seeded the same way, and the
    captions of sample ``index`` of shard ``shard`` are drawn from
    ``default_rng([seed, epoch, shard, index])`` as in ``ImageTextDataset`` (a shard drawn twice
    in one resampled epoch repeats its draws). The data is a function of (seed, epoch, position).
    """

    def __init__(
        self,
        pattern: str | Sequence[str],
        transform: Transform,
        tokenizer: Tokenizer,
        *,
        train: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 256,
        resampled: bool = False,
        text: TextOptions = TextOptions(),  # noqa: B008 (a frozen dataclass)
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        self.urls = expand_shards(pattern) if isinstance(pattern, str) else list(pattern)
        if not self.urls:
            raise ValueError(f"no shards in {pattern!r}")
        super().__init__(transform, tokenizer, train, seed, text)
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled

    def shards_for(self, worker: int, num_workers: int) -> list[int]:
        """Indices into ``urls`` read by this rank's ``worker`` (of ``num_workers``) this epoch
        when not ``resampled``."""
        order = np.arange(len(self.urls))
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.urls))
        readers = self.world_size * num_workers
        return [int(i) for i in order[self.rank * num_workers + worker :: readers]]

    def __iter__(self) -> Iterator[Sample | None]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream_seed = _seed(self.seed, self.epoch, self.rank, worker)
        shuffle = []
        if self.train and self.shuffle_buffer > 1:
            shuffle = [wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, seed=stream_seed)]
        pipeline = wds.DataPipeline(
            functools.partial(self._shards, worker, num_workers, stream_seed),
            self._read,
            *shuffle,
            self._prepare,
        )
        return iter(pipeline)

    def _shards(self, worker: int, num_workers: int, stream_seed: int) -> Iterator[dict[str, Any]]:
        """The shards this reader reads, as ``{"url": url, "shard": index into urls}``."""
        if not self.resampled:
            shards = self.shards_for(worker, num_workers)
            if not shards:
                logger.warning("rank %d worker %d has no shards to read", self.rank, worker)
            return ({"url": self.urls[i], "shard": i} for i in shards)
        index = {url: i for i, url in enumerate(self.urls)}
        draws = wds.ResampledShards(
            self.urls, seed=stream_seed, worker_seed=lambda: 0, deterministic=True
        )  # the seed already names rank and worker: no seed from torch's view of them
        return ({"url": d["url"], "shard": index[d["url"]]} for d in draws)

    def _read(
        self, shards: Iterable[dict[str, Any]]
    ) -> Iterator[tuple[int, int, dict[str, Any]] | None]:
        """``(shard, index in the shard, sample)`` for every sample; one None per broken shard."""
        for source in shards:
            for index, sample in enumerate(_read_shard(source["url"])):
                if isinstance(sample, Exception):
                    logger.warning("%s: unreadable shard, rest skipped: %s", source["url"], sample)
                    yield None
                else:
                    yield source["shard"], index, sample

    def _prepare(
        self, items: Iterable[tuple[int, int, dict[str, Any]] | None]
    ) -> Iterator[Sample | None]:
        """The pipeline's last stage: ``_sample`` of each raw sample, None kept as None."""
        for item in items:
            yield None if item is None else self._sample(*item)

    def _sample(self, shard: int, index: int, sample: dict[str, Any]) -> Sample | None:
        """A ``Sample`` (or None if bad) of a raw sample: parsed, decoded, caption drawn, fitted."""
        try:
            record = _parse_sample(sample)
        except ValueError as err:
            logger.warning("%s: skipping sample %s: %s", self.urls[shard], sample["__key__"], err)
            return None
        rng = np.random.default_rng([self.seed, self.epoch, shard, index]) if self.train else None
        return _make_sample(record, self.transform, self.tokenizer, rng, self.text)


def _seed(*parts: int) -> int:
    """A 64-bit seed determined by ``parts``, for the standard-library generators of webdataset."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])
