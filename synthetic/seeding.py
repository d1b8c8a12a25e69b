"""Independent random streams, one per purpose, so that samples drawn for different purposes
can never coincide, whatever the number of steps or evaluations.

    stream(seed, purpose, *index) = torch.Generator seeded with
        SeedSequence([seed, PURPOSES.index(purpose), len(index), *index]).generate_state(1, uint64)

`numpy.random.SeedSequence` hashes its whole entropy list, so two different keys give unrelated
64-bit seeds. It pads the list with zero words and splits numbers ≥ 2**32 into several words, so
the key carries the number of indices ((s, p) and (s, p, 0) would otherwise meet) and every
number must fit one 32-bit word. The training batch of step s (`"train", s`) and the evaluation
set (`"eval"`) come from different keys for every s, unlike offsets such as `seed + step` and
`10_000 + seed`, which meet once `step` reaches the gap.
"""

from __future__ import annotations

import numpy as np
import torch

PURPOSES: tuple[str, ...] = ("world", "init", "train", "eval", "check")
WORD = 2**32


def seed_for(seed: int, purpose: str, *index: int) -> int:
    """The 64-bit seed of stream (seed, purpose, *index); seeds and indices are in [0, 2**32)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; choose from {PURPOSES}")
    if not all(0 <= i < WORD for i in (seed, *index)):
        raise ValueError(
            f"seeds and indices must be non-negative and below 2**32, got {seed}, {index}"
        )
    key = np.random.SeedSequence([seed, PURPOSES.index(purpose), len(index), *index])
    return int(key.generate_state(1, np.uint64)[0])


def stream(seed: int, purpose: str, *index: int) -> torch.Generator:
    """A fresh CPU `torch.Generator` for (seed, purpose, *index) (see `seed_for`)."""
    return torch.Generator().manual_seed(seed_for(seed, purpose, *index))
