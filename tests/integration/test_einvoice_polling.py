"""Acceptance 2 in the suite, small: with 3,000 invoices followed and 60 due, one tick polls
exactly the 60 (the simulator counts its GET /v1/orders/{id} calls), no faster than the rate
limit allows (20/s after a burst of 20: at least 2 s, less the 50 ms sampling at each end),
and every timer not due is left as it was. The full-size run is
``python -m bench.einvoice_polling`` (docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from bench.einvoice_polling import one_round
from tests.billit_sandbox import billit_sim_url
from tests.infra import Infra

pytestmark = pytest.mark.integration
__all__ = ["billit_sim_url"]  # fixture


async def test_a_tick_polls_only_what_is_due_within_the_rate_limit(
    infra: Infra, billit_sim_url: str
) -> None:
    result = await one_round(
        3000,
        60,
        20.0,
        billit_sim_url,
        kafka=infra.kafka_bootstrap,
        mongodb_uri=infra.mongodb_uri,
    )
    assert result["calls"] == 60
    # The calls are timed by sampling the simulator's counters every 50 ms, so each end of
    # the interval is known to within about two samples.
    assert result["allowed_min_calls_s"] == 2.0
    assert result["calls_s"] >= 2.0 - 0.2
    assert result["untouched"] == result["expected_untouched"] == 2940
