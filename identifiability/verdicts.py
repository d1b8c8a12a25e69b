"""Held, not held or undecided: one rule, stated once, for every claim decided on seeds.

A claim compares a quantity with a bound: "high" (value ≥ b), "low" (value ≤ b) or "degraded"
(value < b). Measured on n seeds with values v_1 … v_n, its 95 % interval is the t-interval of
the seed mean,

    v̄ ± h,   h = t_{0.975, n−1} · s / √n,   s the seeds' sample standard deviation,

and the verdict is

    held        the whole interval lies on the claim's side of b  (v̄ − h ≥ b for "high",
                v̄ + h ≤ b for "low", v̄ + h < b for "degraded")
    not held    the whole interval lies on the other side          (v̄ + h < b for "high", …)
    undecided   the interval contains b
    no verdict  fewer than `MIN_SEEDS` seeds: one run is an anecdote, whatever its value

A NaN among the values (a metric that could not be computed) makes the claim undecided: a broken
run never counts for or against a claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 3
HELD, NOT_HELD, UNDECIDED, NO_VERDICT = "held", "not held", "undecided", "no verdict"
SIDES = {"high": "≥", "low": "≤", "degraded": "<"}


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the `level` t-interval of the mean; half-width 0 for one value and
    NaN if any value is NaN."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        raise ValueError("an interval needs at least one value")
    if np.isnan(v).any():
        return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), 0.0
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def decide(kind: str, bound: float, values: Sequence[float]) -> str:
    """The verdict of the claim "value <kind> bound" on per-seed `values` (module docstring)."""
    if kind not in SIDES:
        raise ValueError(f"kind must be one of {', '.join(SIDES)}, got {kind!r}")
    if len(values) < MIN_SEEDS:
        return NO_VERDICT
    mean, half = t_interval(values)
    if math.isnan(half) or math.isnan(bound):
        return UNDECIDED
    low, high = mean - half, mean + half
    if kind == "high":
        return HELD if low >= bound else NOT_HELD if high < bound else UNDECIDED
    if kind == "low":
        return HELD if high <= bound else NOT_HELD if low > bound else UNDECIDED
    return HELD if high < bound else NOT_HELD if low >= bound else UNDECIDED


def combine(verdicts: Iterable[str]) -> str:
    """The verdict of claims that must all hold: not held if any is, held if all are (none
    counts as all), no verdict if none has one, undecided otherwise."""
    found = set(verdicts)
    if found == {NO_VERDICT}:
        return NO_VERDICT
    return NOT_HELD if NOT_HELD in found else HELD if found <= {HELD} else UNDECIDED


def overall(verdicts: Iterable[str], seeds: int) -> str:
    """A table row's verdict from its claims' verdicts: "<n> seed(s): no verdict" below
    `MIN_SEEDS` seeds, else `combine`'s, with "NOT held" in capitals."""
    if seeds < MIN_SEEDS:
        return f"{seeds} seed{'s' * (seeds > 1)}: no verdict"
    verdict = combine(verdicts)
    return "NOT held" if verdict == NOT_HELD else verdict


@dataclass(frozen=True)
class Decided:
    """A claim decided on seeds: its per-seed values, their interval and the verdict."""

    kind: str
    bound: float
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return t_interval(self.values)[0]

    @property
    def half(self) -> float:
        return t_interval(self.values)[1]

    @property
    def verdict(self) -> str:
        return decide(self.kind, self.bound, self.values)

    def text(self, digits: int = 2) -> str:
        """ "0.93 ± 0.02 ≥ 0.90" (or the one value with "one seed")."""
        if len(self.values) == 1:
            shown = f"{self.values[0]:.{digits}f} (one seed)"
        else:
            shown = f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"
        return f"{shown} {SIDES[self.kind]} {self.bound:.{digits}f}"
