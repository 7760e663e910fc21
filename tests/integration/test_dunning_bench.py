"""A small run of bench/dunning_tick.py in the suite: a tick over 20,000 stored open
invoices, none due, stays far under the issue's 0.2 s (the full run is over 1,000,000;
docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from bench.dunning_tick import bench_tick
from tests.infra import Infra

pytestmark = pytest.mark.integration


async def test_a_tick_over_stored_invoices_none_due_is_cheap(infra: Infra) -> None:
    result = await bench_tick(20_000, 10, write=False, mongodb_uri=infra.mongodb_uri)
    assert result["open_invoices"] == 20_000
    assert result["scheduled_step_timers"] == 20_000
    assert result["tick_batch_in_worker"]["median_s"] < 0.2
