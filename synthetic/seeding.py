"""Independent random streams, one per purpose, so that samples drawn for different purposes
can never coincide, whatever the number of steps or evaluations.

    stream(seed, purpose, *index) = torch.Generator seeded with
        SeedSequence([seed, PURPOSES.index(purpose), *index]).generate_state(1, uint64)

`numpy.random.SeedSequence` hashes its whole entropy list, so two different keys give unrelated
64-bit seeds: the training batch of step s (`"train", s`) and the evaluation set (`"eval"`) come
from different keys for every s, unlike offsets such as `seed + step` and `10_000 + seed`, which
meet once `step` reaches the gap.
"""

from __future__ import annotations

import numpy as np
import torch

PURPOSES: tuple[str, ...] = ("world", "init", "train", "eval", "check")


def seed_for(seed: int, purpose: str, *index: int) -> int:
    """The 64-bit seed of stream (seed, purpose, *index); seeds and indices are non-negative."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; choose from {PURPOSES}")
    if seed < 0 or any(i < 0 for i in index):
        raise ValueError(f"seeds and indices must be non-negative, got {seed}, {index}")
    key = np.random.SeedSequence([seed, PURPOSES.index(purpose), *index])
    return int(key.generate_state(1, np.uint64)[0])


def stream(seed: int, purpose: str, *index: int) -> torch.Generator:
    """A fresh CPU `torch.Generator` for (seed, purpose, *index) (see `seed_for`)."""
    return torch.Generator().manual_seed(seed_for(seed, purpose, *index))
