"""Interleaved A/B benchmark of each hand-written fast path against the plain model path.

    python -m bench.fast_paths                 # 9 rounds of 20,000 calls per path
    python -m bench.fast_paths --rounds 15 --calls 50000 --json docs/bench/fast-paths.json

The project keeps a path that departs from pydantic models or the standard library only where
it is faster beyond run-to-run noise (docs/benchmarks.md). For each pair, rounds alternate
A (fast) and B (plain) — A B A B … — so a machine that speeds up or slows down moves both;
each round times ``--calls`` calls. Reports the per-call time of each, and the ratio fast/plain
per round with its min and max: a ratio whose max is below 1 is a gain beyond the noise of
this run. tests/unit/test_fast_paths.py holds each pair equal (bytes, and refusals).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from services.reconciliation import domain as recon
from services.reconciliation.handlers import settled_json, statement_json
from shared import events as ev
from shared.envelope import encode_event, event_to_bytes, new_event, state_change_json
from shared.events import OrderStateChanged
from shared.ids import uuid5_str
from shared.money import from_cents
from tests import examples as ex

NAMESPACE = uuid.UUID("6f1c1d0e-2b7a-4c53-9a43-3f0f2f6d1a10")
MOMENT = datetime(2026, 12, 1, 9, 15, tzinfo=UTC)


@dataclass
class Pair:
    name: str
    fast_us: float  # median per call over the rounds
    plain_us: float
    ratio_median: float  # fast / plain, per round
    ratio_min: float
    ratio_max: float


def _time(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def measure(
    name: str, fast: Callable[[], object], plain: Callable[[], object], rounds: int, calls: int
) -> Pair:
    assert fast() == plain(), f"{name}: the two paths disagree"
    _time(fast, calls // 10)  # warm-up, not counted
    _time(plain, calls // 10)
    fast_times, plain_times = [], []
    for _ in range(rounds):
        fast_times.append(_time(fast, calls))
        plain_times.append(_time(plain, calls))
    ratios = [f / p for f, p in zip(fast_times, plain_times, strict=True)]
    return Pair(
        name,
        round(statistics.median(fast_times), 3),
        round(statistics.median(plain_times), 3),
        round(statistics.median(ratios), 3),
        round(min(ratios), 3),
        round(max(ratios), 3),
    )


def pairs() -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    shipment = ex.shipment("o-1", "INV-1", gross="119.00")

    def envelope_fast() -> bytes:
        return encode_event(shipment, id="e-1", source="/shipping", time=MOMENT, subject="o-1")

    def envelope_plain() -> bytes:
        event = new_event(shipment, id="e-1", source="/shipping", time=MOMENT, subject="o-1")
        return event_to_bytes(event)

    statement = recon.PaymentAllocated(
        "tx-1",
        "DE89370400440532013000",
        1,
        30_000,
        (recon.AllocationLine("INV-1", 30_000, "invoice_number"),),
        0,
        0,
        0,
        "EUR",
    )

    def statement_plain() -> str:
        return ev.PaymentAllocated.model_construct(
            transaction_id=statement.transaction_id,
            creditor_iban=statement.creditor_iban,
            allocations=[
                ev.Allocation.model_construct(
                    invoice_number=a.invoice_number,
                    amount=from_cents(a.amount),
                    matched_by=a.matched_by,
                )
                for a in statement.allocations
            ],
            overpayment=from_cents(0),
            unallocated=from_cents(0),
            currency="EUR",
            restatement=statement.restatement,
        ).model_dump_json(by_alias=True)

    settlement = recon.InvoiceSettled(
        "DE89370400440532013000", "INV-1", "o-1", date(2027, 7, 2), 30_000
    )

    def settlement_plain() -> str:
        return ev.InvoiceSettled.model_construct(
            invoice_number=settlement.invoice_number,
            order_id="o-1",
            settled_on=settlement.settled_on,
            paid_total=from_cents(30_000),
            currency="EUR",
        ).model_dump_json(by_alias=True)

    return [
        ("envelope: encode_event vs CloudEvent model", envelope_fast, envelope_plain),
        (
            "reconciliation statement: statement_json vs model_construct and dump",
            lambda: statement_json(statement),
            statement_plain,
        ),
        (
            "reconciliation settlement: settled_json vs model_construct and dump",
            lambda: settled_json(settlement),
            settlement_plain,
        ),
        (
            "state change data: state_change_json vs building the model and dumping it",
            lambda: state_change_json("order_id", "o-1", None, "created", "partially_shipped"),
            lambda: OrderStateChanged(
                order_id="o-1", from_="created", to="partially_shipped"
            ).model_dump_json(by_alias=True),
        ),
        (
            "event id: uuid5_str vs str(uuid.uuid5)",
            lambda: uuid5_str(NAMESPACE, "shipping/e-1/0"),
            lambda: str(uuid.uuid5(NAMESPACE, "shipping/e-1/0")),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="fast paths against the plain model path, A/B")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args()
    results = [measure(n, f, p, args.rounds, args.calls) for n, f, p in pairs()]
    for r in results:
        print(
            f"{r.name}: fast {r.fast_us:.2f} µs, plain {r.plain_us:.2f} µs, "
            f"ratio {r.ratio_median:.2f} ({r.ratio_min:.2f}–{r.ratio_max:.2f})"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
