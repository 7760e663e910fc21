"""The payout invariant on the real broker: every input delivered twice, the shipping worker
killed with SIGKILL mid-stream and restarted gracefully later. Each invoice is paid out
exactly once, and what was paid and clawed back equals what the pure domain says."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from scripts.processes import Fleet
from services.shipping import domain as d
from shared import topics
from shared.envelope import parse_event
from shared.events import (
    EventData,
    OrderAmountReduced,
    PayoutClawbackInstructed,
    PayoutInstructed,
)
from shared.money import cents
from tests import examples as ex
from tests.e2e.fleets import fleet_for, metrics_matching
from tests.harness import Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ORDERS = 40
FEE = d.MerchantTerms("m-1", "DE89370400440532013000", Decimal("1.90"), 25)


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = fleet_for(
        infra,
        namespace,
        tmp_path / "logs",
        "shipping",
        # Small batches, so the kill lands between many commits, not after one.
        BATCH_MAX_RECORDS="20",
    )
    yield fleet
    fleet.stop_all()


async def send_twice(bus: Bus, items: Sequence[EventData]) -> None:
    """Every event, then every event again under the same id: a redelivery of each."""
    ids = [str(uuid.uuid4()) for _ in items]
    for _ in range(2):
        for event_id, data in zip(ids, items, strict=True):
            await bus.send(data, event_id=event_id, wait=False)
        assert bus.producer is not None
        await bus.producer.flush()


async def distinct(bus: Bus, topic: str, field: str, count: int, timeout: float = 120) -> None:
    """Until ``count`` different values of ``field`` are on the topic (a re-published event
    must not count twice)."""

    def enough(records: list[Any]) -> bool:
        values = {getattr(parse_event(topic, r.value).data, field) for r in records}
        return len(values) >= count

    await bus.records(topic, until=enough, timeout=timeout)


def captures(i: int) -> list[tuple[str, str]]:
    return [(f"INV-{i}-a", "100.00")] + ([(f"INV-{i}-b", "150.00")] if i % 3 else [])


def credit_notes(i: int) -> list[tuple[str, str, str]]:
    if i % 4 == 1:  # partly credited, then fully
        return [(f"INV-{i}-a", f"CN-{i}-1", "30.00"), (f"INV-{i}-a", f"CN-{i}-2", "70.00")]
    if i % 4 == 3:
        return [(f"INV-{i}-a", f"CN-{i}-1", "2.00")]  # below what the fee kept: nothing back
    return []


def canceled(i: int) -> bool:
    return i % 5 == 2


def expected_ledger() -> tuple[dict[str, int], dict[str, int]]:
    """Payout and clawback amounts by id, from the pure domain, phase by phase."""
    payouts: dict[str, int] = {}
    clawbacks: dict[str, int] = {}
    for i in range(ORDERS):
        order = d.record_terms(d.Order(f"o-{i}"), "m-1", 30_000, 30, "EUR").order
        order = d.record_decision(order, "created", None, ex.VIBAN, "c-1").order
        results = []
        for number, gross in captures(i):
            amount = ex.amount(gross)
            money = d.Money3(cents(amount.gross), cents(amount.net), cents(amount.tax))
            results.append(
                d.capture(
                    order,
                    FEE,
                    invoice_number=number,
                    amount=money,
                    shipped_at=ex.SHIPPED_AT,
                    currency="EUR",
                    fingerprint=number,
                )
            )
            order = results[-1].order
        for number, note, gross in credit_notes(i):
            amount = ex.amount(gross)
            money = d.Money3(cents(amount.gross), cents(amount.net), cents(amount.tax))
            results.append(
                d.credit_note(
                    order,
                    invoice_number=number,
                    credit_note_number=note,
                    amount=money,
                    fingerprint=note,
                )
            )
            order = results[-1].order
        if canceled(i):
            results.append(d.cancel(order))
        for result in results:
            assert result.rejection is None and result.park is None
            for effect in result.effects:
                if isinstance(effect, d.PayoutInstructed):
                    payouts[effect.payout_id] = effect.amount
                elif isinstance(effect, d.ClawbackInstructed):
                    clawbacks[effect.clawback_id] = effect.amount
    return payouts, clawbacks


async def test_replayed_inputs_and_a_killed_worker_pay_each_invoice_exactly_once(
    bus: Bus, fleet: Fleet, namespace: str, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    want_payouts, want_clawbacks = expected_ledger()
    first = fleet.start_worker("shipping")
    first.wait_ready()
    await send_twice(bus, [ex.merchant("m-1")])
    await send_twice(
        bus,
        [
            e
            for i in range(ORDERS)
            for e in (ex.order(f"o-{i}", gross="300.00"), ex.decided(f"o-{i}"))
        ],
    )
    shipments = [
        ex.shipment(f"o-{i}", number, gross=gross)
        for i in range(ORDERS)
        for number, gross in captures(i)
    ]
    await send_twice(bus, shipments)
    await distinct(bus, topics.PAYOUTS_INSTRUCTED, "payout_id", 10)
    first.kill()  # SIGKILL mid-stream: no graceful shutdown, offsets possibly uncommitted
    second = fleet.start_worker("shipping")
    second.wait_ready()
    await distinct(bus, topics.PAYOUTS_INSTRUCTED, "payout_id", len(want_payouts))

    await send_twice(
        bus,
        [
            ex.credit_note(f"o-{i}", number, note, gross=gross)
            for i in range(ORDERS)
            for number, note, gross in credit_notes(i)
        ],
    )
    await distinct(
        bus,
        topics.PAYOUTS_CLAWBACK_INSTRUCTED,
        "clawback_id",
        sum(1 for i in range(ORDERS) if i % 4 == 1) * 2,
    )
    second.stop()  # a graceful restart between the phases (uvicorn re-raises SIGTERM)
    assert "shut down gracefully" in second.log_tail()
    third = fleet.start_worker("shipping")
    third.wait_ready()
    await send_twice(bus, [ex.cancellation(f"o-{i}") for i in range(ORDERS) if canceled(i)])

    await distinct(bus, topics.PAYOUTS_CLAWBACK_INSTRUCTED, "clawback_id", len(want_clawbacks))
    payout_events = await bus.events(
        topics.PAYOUTS_INSTRUCTED, count=len(want_payouts), timeout=60, settle=2.0
    )
    clawback_events = await bus.events(
        topics.PAYOUTS_CLAWBACK_INSTRUCTED, count=len(want_clawbacks), timeout=60, settle=2.0
    )

    # Exactly one payout per invoice: a redelivery may re-publish one, but only as the same
    # event (same event id, same payout id, same amount), never as a second payout.
    got_payouts: dict[str, tuple[str, Decimal]] = {}
    for e in payout_events:
        assert isinstance(e.data, PayoutInstructed)
        seen = got_payouts.setdefault(e.data.payout_id, (e.id, e.data.payout_amount))
        assert seen == (e.id, e.data.payout_amount)
    assert {k: cents(v) for k, (_, v) in got_payouts.items()} == want_payouts
    invoices = {
        e.data.invoice_number for e in payout_events if isinstance(e.data, PayoutInstructed)
    }
    assert len(invoices) == len(got_payouts) == sum(len(captures(i)) for i in range(ORDERS))

    got_clawbacks: dict[str, tuple[str, Decimal]] = {}
    for e in clawback_events:
        assert isinstance(e.data, PayoutClawbackInstructed)
        seen = got_clawbacks.setdefault(e.data.clawback_id, (e.id, e.data.amount))
        assert seen == (e.id, e.data.amount)
    assert {k: cents(v) for k, (_, v) in got_clawbacks.items()} == want_clawbacks
    assert want_clawbacks  # the scenario does claw back

    # The ledgers in MongoDB say the same, one document per instruction.
    db = mongo[f"{namespace}_shipping"]
    ledger = {doc["_id"]: doc["amount_cents"] async for doc in db["payouts"].find({})}
    assert ledger == want_payouts
    clawed = {doc["_id"]: doc["amount_cents"] async for doc in db["clawbacks"].find({})}
    assert clawed == want_clawbacks


async def test_metrics_endpoint_shows_payouts_clawbacks_and_rejections(
    bus: Bus, fleet: Fleet
) -> None:
    """o-1 (300.00) shipped 100.00, over-captured, canceled; o-2 (300.00) reduced to 200.00
    (100.00 back to the limit), then to 0.00 (refused: that is a cancel). The worker's
    /metrics counts each, in euros where money moved; the reduction outcomes and rejection
    codes no event has hit yet are there at 0."""
    worker = fleet.start_worker("shipping")
    worker.wait_ready()
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.order("o-1", gross="300.00"))
    await bus.send(ex.decided("o-1"))
    await bus.send(ex.order("o-2", gross="300.00"))
    await bus.send(ex.decided("o-2"))
    await bus.send(ex.shipment("o-1", "INV-1", gross="100.00"))
    await bus.send(ex.shipment("o-1", "INV-2", gross="200.01"))  # over-capture
    await bus.send(ex.cancellation("o-1"))
    await bus.send(OrderAmountReduced(order_id="o-2", amount=ex.amount("200.00")))
    await distinct(bus, topics.EXPOSURE_RELEASED, "release_id", 2)  # o-1 canceled, o-2 reduced
    await bus.send(OrderAmountReduced(order_id="o-2", amount=ex.amount("0.00")))
    await distinct(bus, topics.PAYOUTS_CLAWBACK_INSTRUCTED, "clawback_id", 1)
    await bus.events(topics.COMMANDS_REJECTED, count=2, timeout=30)

    lag = 'worker_consumer_lag_messages{partition="0",service="shipping",topic="orders.shipped"}'
    await metrics_matching(worker, re.escape(lag))  # refreshed in the background
    refused = 'shipping_reductions_total{outcome="reduction_to_zero"} 1.0'
    text = await metrics_matching(worker, re.escape(refused))  # counted after its commit
    expected = [
        'shipping_payouts_instructed_total{currency="EUR"} 1.0',
        'shipping_payouts_instructed_amount_total{currency="EUR"} 97.85',
        'shipping_clawbacks_instructed_total{currency="EUR",reason="canceled"} 1.0',
        'shipping_clawbacks_instructed_amount_total{currency="EUR",reason="canceled"} 97.85',
        'shipping_commands_rejected_total{reason="over_capture"} 1.0',
        'shipping_commands_rejected_total{reason="reduction_to_zero"} 1.0',
        'shipping_commands_rejected_total{reason="reduction_below_captured"} 0.0',
        'shipping_reductions_total{outcome="applied"} 1.0',
        refused,
        'shipping_reductions_total{outcome="already_applied"} 0.0',
        'shipping_reductions_total{outcome="amount_not_reduced"} 0.0',
        'shipping_reductions_total{outcome="order_complete"} 0.0',
        'shipping_reductions_total{outcome="unknown_order"} 0.0',
        'shipping_reductions_released_amount_total{currency="EUR"} 100.0',
        "faststream_received_messages_total",
        lag,
    ]
    for line in expected:
        assert line in text, line
