"""The seed rule: held / not held / undecided by where the 95 % t-interval of the seed mean lies."""

import math

import pytest

from identifiability.verdicts import (
    HELD,
    NO_VERDICT,
    NOT_HELD,
    UNDECIDED,
    Decided,
    combine,
    decide,
    overall,
    t_interval,
)

T_975_2 = 4.302652729911275  # t quantile, 2 degrees of freedom (tables)


def test_the_interval_is_the_t_interval_of_the_mean():
    mean, half = t_interval([0.91, 0.93, 0.95])
    assert mean == pytest.approx(0.93)
    assert half == pytest.approx(T_975_2 * 0.02 / math.sqrt(3))  # s = 0.02
    assert t_interval([0.4]) == (0.4, 0.0)
    assert math.isnan(t_interval([0.4, math.nan, 0.5])[1])


@pytest.mark.parametrize(
    ("kind", "bound", "values", "verdict"),
    [
        ("high", 0.9, [0.95, 0.96, 0.97], HELD),  # [0.935, 0.985]
        ("high", 0.9, [0.91, 0.93, 0.95], UNDECIDED),  # [0.880, 0.980] contains 0.9
        ("high", 0.9, [0.80, 0.81, 0.82], NOT_HELD),
        ("low", 0.2, [0.10, 0.11, 0.12], HELD),
        ("low", 0.2, [0.10, 0.20, 0.30], UNDECIDED),
        ("low", 0.2, [0.30, 0.31, 0.32], NOT_HELD),
        ("degraded", 0.9, [0.80, 0.81, 0.82], HELD),
        ("degraded", 0.9, [0.95, 0.96, 0.97], NOT_HELD),
        ("high", 0.9, [0.99, 0.99], NO_VERDICT),  # two seeds are not enough
        ("high", 0.9, [0.99, math.nan, 0.99], UNDECIDED),  # a broken run decides nothing
        ("high", 0.9, [0.9, 0.9, 0.9], HELD),  # on the bound, no spread: "≥" holds
        ("degraded", 0.9, [0.9, 0.9, 0.9], NOT_HELD),  # "<" does not
    ],
)
def test_verdicts_by_hand(kind, bound, values, verdict):
    assert decide(kind, bound, values) == verdict


def test_more_seeds_can_turn_undecided_into_held():
    """The same spread around the same mean narrows with n, as a t-interval must."""
    few = [0.91, 0.93, 0.95]
    assert decide("high", 0.9, few) == UNDECIDED
    assert decide("high", 0.9, few * 4) == HELD


def test_decided_text_states_interval_and_bound():
    assert Decided("high", 0.9, (0.95, 0.96, 0.97)).text() == "0.96 ± 0.02 ≥ 0.90"
    assert Decided("low", 0.2, (0.05,)).text() == "0.05 (one seed) ≤ 0.20"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        decide("about", 0.5, [0.5, 0.5, 0.5])


def test_a_rows_verdict_is_its_worst_claims():
    assert overall([HELD, UNDECIDED, NOT_HELD], 3) == "NOT held"
    assert overall([HELD, UNDECIDED], 3) == "undecided"
    assert overall([HELD, HELD], 5) == "held"
    assert overall([NOT_HELD], 1) == "1 seed: no verdict"
    assert overall([HELD], 2) == "2 seeds: no verdict"
    assert overall([], 3) == "held"  # a row without claims has none that fails


def test_claims_that_must_all_hold_combine_to_the_worst():
    assert combine([HELD, UNDECIDED, NOT_HELD]) == NOT_HELD
    assert combine([NOT_HELD, NO_VERDICT]) == NOT_HELD
    assert combine([HELD, UNDECIDED]) == combine([HELD, NO_VERDICT]) == UNDECIDED
    assert combine([HELD, HELD]) == combine([]) == HELD
    assert combine([NO_VERDICT, NO_VERDICT]) == NO_VERDICT
