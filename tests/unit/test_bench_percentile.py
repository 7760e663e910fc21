"""The benchmark's percentiles, checked against counts written out by hand: the p99 it reports
must be a latency that at least 99 % of the inputs did not exceed, and an observed one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.run import percentile


def test_p99_of_a_hundred_latencies_is_the_99th_smallest() -> None:
    # 1..100 ms: 99 of them are at most 99 ms, and 98 % are below 99.
    latencies = list(range(1, 101))
    assert percentile(latencies, 0.99) == 99.0
    assert percentile(latencies, 0.5) == 50.0


def test_thirty_slow_records_of_three_thousand_are_not_the_p99() -> None:
    # 2,970 records at 30 ms and 30 at 90 ms (one stall): exactly 99 % are at 30 ms.
    latencies = [30] * 2970 + [90] * 30
    assert percentile(latencies, 0.99) == 30.0
    # One more slow record and the 99 % no longer fit under 30.
    assert percentile([30] * 2969 + [90] * 31, 0.99) == 90.0


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=400))
def test_at_least_99_percent_are_at_or_below_the_p99_and_it_was_observed(values: list[int]) -> None:
    # The rule, counted directly: the p99 is one of the values, at least 99 % of the values
    # are at or below it, and fewer than 99 % are strictly below it.
    ordered = sorted(values)
    p99 = percentile(ordered, 0.99)
    assert p99 in values
    assert sum(v <= p99 for v in values) >= 0.99 * len(values)
    assert sum(v < p99 for v in values) < 0.99 * len(values)


def test_no_latencies_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="no latencies"):
        percentile([], 0.99)
