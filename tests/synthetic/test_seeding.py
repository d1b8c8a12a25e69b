"""Random streams keyed by (seed, purpose, *index): the same key gives the same stream, different
keys give unrelated ones, so no training batch can be an evaluation set."""

from __future__ import annotations

import itertools

import pytest
import torch

from synthetic.seeding import PURPOSES, seed_for, stream

SEEDS, STEPS, EVAL_SETS = range(8), range(500), range(8)


def test_the_same_key_gives_bitwise_the_same_stream():
    assert seed_for(3, "train", 7) == seed_for(3, "train", 7)
    a, b = stream(3, "train", 7), stream(3, "train", 7)
    assert a.initial_seed() == seed_for(3, "train", 7)
    assert torch.equal(torch.randn(100, generator=a), torch.randn(100, generator=b))


@pytest.mark.parametrize("arity", [0, 1, 2])
def test_keys_of_one_shape_never_share_a_seed(arity):
    """Every (seed, purpose, index) with `arity` indices has its own 64-bit seed and draws."""
    indices = list(itertools.product(range(12), repeat=arity))
    keys = [(s, p, *i) for s in SEEDS for p in PURPOSES for i in indices]
    seeds = {seed_for(*key) for key in keys}
    assert len(seeds) == len(keys)
    first = {torch.randn(4, generator=stream(*key)).sum().item() for key in keys[:50]}
    assert len(first) == min(50, len(keys))


def test_no_training_batch_of_any_seed_is_an_evaluation_set_of_another():
    """Offsets such as seed + step meet: seed s + 1's batch 0 would be seed s's evaluation set."""
    train = {seed_for(s, "train", step) for s in SEEDS for step in STEPS}
    evaluation = {seed_for(s, "eval", i) for s in SEEDS for i in EVAL_SETS}
    evaluation |= {seed_for(s, "eval") for s in SEEDS}
    assert not train & evaluation
    for s in SEEDS[:-1]:
        batch = torch.randn(64, generator=stream(s + 1, "train", 0))
        for held_out in (stream(s, "eval"), stream(s, "eval", 0), stream(s, "eval", 1)):
            assert not torch.equal(batch, torch.randn(64, generator=held_out))


def test_keys_of_different_shapes_never_share_a_seed():
    """SeedSequence pads its entropy with zero words: without the number of indices in the key,
    (s, p) and (s, p, 0) would be one stream."""
    assert seed_for(0, "eval") != seed_for(0, "eval", 0)
    assert seed_for(5, "train", 3) != seed_for(5, "train", 3, 0)
    shapes = [(7, "eval", *(0,) * arity) for arity in range(4)]
    assert len({seed_for(*key) for key in shapes}) == len(shapes)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ((0, "test"), "unknown purpose 'test'"),
        ((-1, "train"), "non-negative"),
        ((0, "train", -3), "non-negative"),
        ((2**32, "train"), "below 2\\*\\*32"),
        ((0, "init", 2**32), "below 2\\*\\*32"),
    ],
)
def test_unknown_purposes_and_negative_numbers_are_refused(key, message):
    with pytest.raises(ValueError, match=message):
        seed_for(*key)
