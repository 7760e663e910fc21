"""The per-payment scale benchmark (bench/reconciliation_scale.py), small: it seeds, feeds
payments through the worker's engine into real MongoDB, and reports a time per payment for
each size. (Timings are the benchmark's business, not a test's: only the run is checked.)"""

from __future__ import annotations

from typing import Any

import pytest

from bench.reconciliation_scale import measure, parse_args
from tests.infra import Infra

pytestmark = pytest.mark.integration


async def test_the_scale_benchmark_runs_at_two_sizes(infra: Infra, monkeypatch: Any) -> None:
    monkeypatch.setenv("MONGODB_URI", infra.mongodb_uri)
    args = parse_args(["--sizes", "1000", "3000", "--payments", "20", "--batch", "10"])
    args.repeat = 2
    report = await measure(args)
    assert [s["invoices"] for s in report["sizes"]] == [1000, 3000]
    assert [s["debtors"] for s in report["sizes"]] == [100, 300]
    for size in report["sizes"]:
        assert len(size["per_payment_ms"]) == 2
        assert all(ms > 0 for ms in size["per_payment_ms"])
    assert report["ratio_largest_to_smallest"] > 0
