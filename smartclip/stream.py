"""Training batches epoch after epoch, with an exact, resumable data position."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from torch.utils.data import DataLoader, Sampler

from smartclip.data import Batch, TrainData


class _SkipFirst(Sampler[int]):
    """The wrapped sampler's indices after the first `skip`."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class BatchStream:
    """Training batches epoch after epoch; (epoch, position) is the exact, resumable data position.

    An epoch is `batches_per_epoch` loader batches (fewer if shards run dry). Resuming at
    `position` skips that many batches: map-style data by skipping sampler indices (nothing is
    read), shards by reading and discarding them. The next epoch's iterator is opened as soon
    as an epoch ends, so the RNG draws of opening it fall inside the step that ended it.
    """

    def __init__(self, data: TrainData, batches_per_epoch: int, epoch: int = 0, position: int = 0):
        self.data, self.batches_per_epoch = data, batches_per_epoch
        self.epoch, self.position = epoch, position
        self._iterator = self._open()

    def _open(self) -> Iterator[Batch]:
        self.data.set_epoch(self.epoch)
        loader = self.data.loader
        if self.position == 0:
            return iter(loader)
        if self.data.sampler is None:
            iterator = iter(loader)
            for _ in range(self.position):
                next(iterator)
            return iterator
        resumed = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=_SkipFirst(self.data.sampler, self.position * loader.batch_size),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            drop_last=loader.drop_last,
            pin_memory=loader.pin_memory,
        )
        return iter(resumed)

    def _next_epoch(self) -> None:
        self.epoch, self.position = self.epoch + 1, 0
        self._iterator = self._open()

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self.position == 0:
                raise RuntimeError(f"epoch {self.epoch} yielded no batches") from None
            logging.warning(
                "epoch %d ended after %d of %d batches (unreadable shards?)",
                self.epoch,
                self.position,
                self.batches_per_epoch,
            )
            self._next_epoch()
            return next(self)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self._next_epoch()
        return batch
