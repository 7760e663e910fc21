"""The shipping service on real Kafka and MongoDB: every transition, rejections, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.shipping.app import build_worker
from services.shipping.domain import payout_id_for
from services.shipping.settings import ShippingSettings
from shared import topics
from shared.events import (
    CommandRejected,
    CreditNoteAccepted,
    EventData,
    InvoiceIssued,
    InvoiceStateChanged,
    OrderStateChanged,
    PayoutClawbackInstructed,
    PayoutInstructed,
)
from shared.runtime.app import Worker
from tests import examples as ex
from tests.harness import T0, Bus, headers_of

pytestmark = pytest.mark.integration


async def start_shipping(run_worker: Any, **overrides: Any) -> Worker:
    worker: Worker = await run_worker(build_worker, ShippingSettings, **overrides)
    return worker


async def approved_order(bus: Bus, order_id: str, gross: str = "1190.00") -> None:
    await bus.send(ex.order(order_id, gross=gross))
    await bus.send(ex.decided(order_id))


async def data_on(bus: Bus, topic: str, count: int, **kw: Any) -> list[EventData]:
    return [e.data for e in await bus.events(topic, count=count, **kw)]


def transitions(events: list[EventData], key: str) -> dict[str, list[tuple[str | None, str]]]:
    out: dict[str, list[tuple[str | None, str]]] = {}
    for e in events:
        assert isinstance(e, OrderStateChanged | InvoiceStateChanged)
        out.setdefault(getattr(e, key), []).append((e.from_, e.to))
    return out


async def test_partial_shipments_each_invoice_paid_out_once_then_complete(
    bus: Bus, run_worker: Any
) -> None:
    await start_shipping(run_worker)
    await bus.send(ex.merchant("m-1"))
    await approved_order(bus, "o-1", gross="1190.00")
    await bus.send(ex.shipment("o-1", "INV-1", gross="500.00"))
    await bus.send(ex.shipment("o-1", "INV-2", gross="690.00"))

    issued = await data_on(bus, topics.INVOICES_ISSUED, 2)
    assert all(isinstance(i, InvoiceIssued) for i in issued)
    first = next(i for i in issued if isinstance(i, InvoiceIssued) and i.invoice_number == "INV-1")
    assert first.due_on.isoformat() == "2026-12-20"  # shipped 2026-11-20 + 30 days
    assert first.viban == ex.VIBAN and first.debtor_company_id == "c-1"

    payouts = await data_on(bus, topics.PAYOUTS_INSTRUCTED, 2, settle=1.0)
    assert len(payouts) == 2
    by_invoice = {p.invoice_number: p for p in payouts if isinstance(p, PayoutInstructed)}
    # fee = 1.90 % x 500.00 + 0.25 = 9.75; 1.90 % x 690.00 + 0.25 = 13.36
    assert (by_invoice["INV-1"].fee, by_invoice["INV-1"].payout_amount) == (
        Decimal("9.75"),
        Decimal("490.25"),
    )
    assert (by_invoice["INV-2"].fee, by_invoice["INV-2"].payout_amount) == (
        Decimal("13.36"),
        Decimal("676.64"),
    )
    assert by_invoice["INV-1"].payout_id == payout_id_for("o-1", "INV-1")

    await bus.send(ex.settled("o-1", "INV-1", "500.00"))
    await bus.send(ex.settled("o-1", "INV-2", "690.00"))
    orders = transitions(await data_on(bus, topics.ORDERS_STATE_CHANGED, 3), "order_id")
    assert orders["o-1"] == [
        ("created", "partially_shipped"),
        ("partially_shipped", "shipped"),
        ("shipped", "complete"),
    ]
    invoices = transitions(await data_on(bus, topics.INVOICES_STATE_CHANGED, 6), "invoice_number")
    assert invoices["INV-1"] == [(None, "new"), ("new", "paid_out"), ("paid_out", "complete")]


async def test_cancel_before_capture_is_free_after_capture_claws_back(
    bus: Bus, run_worker: Any
) -> None:
    await start_shipping(run_worker)
    await bus.send(ex.merchant("m-1"))
    await approved_order(bus, "o-free")
    await approved_order(bus, "o-shipped")
    await bus.send(ex.shipment("o-shipped", "INV-S", gross="1000.00"))
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)
    await bus.send(ex.cancellation("o-free"))
    await bus.send(ex.cancellation("o-shipped"))

    orders = transitions(await data_on(bus, topics.ORDERS_STATE_CHANGED, 3), "order_id")
    assert orders["o-free"] == [("created", "canceled")]
    assert orders["o-shipped"][-1] == ("partially_shipped", "canceled")
    clawbacks = await data_on(bus, topics.PAYOUTS_CLAWBACK_INSTRUCTED, 1, settle=1.0)
    assert len(clawbacks) == 1
    clawback = clawbacks[0]
    assert isinstance(clawback, PayoutClawbackInstructed)
    # paid out 1000.00 - (19.00 + 0.25); the fee is kept
    assert (clawback.invoice_number, clawback.amount, clawback.reason) == (
        "INV-S",
        Decimal("980.75"),
        "canceled",
    )
    invoices = transitions(await data_on(bus, topics.INVOICES_STATE_CHANGED, 3), "invoice_number")
    assert invoices["INV-S"][-1] == ("paid_out", "canceled")


async def test_credit_notes_before_and_after_payout(bus: Bus, run_worker: Any) -> None:
    await start_shipping(run_worker, park_ttl_seconds=600)
    await bus.send(ex.merchant("m-1"))
    await approved_order(bus, "o-1", gross="1190.00")
    # Before: the credit note arrives before its capture has been paid out; it waits.
    await bus.send(ex.credit_note("o-1", "INV-1", "CN-0", gross="10.00"))
    await bus.send(ex.shipment("o-1", "INV-1", gross="1000.00"))
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)
    await bus.tick(T0)  # parked events retry on ticks
    # The tick and the next credit notes are on different topics, so the worker may take them
    # in either order; wait until the parked CN-0 is accepted so that CN-1 comes after it.
    await bus.events(topics.CREDIT_NOTES_ACCEPTED, count=1)
    # After: reduces the paid-out invoice below what was paid out.
    await bus.send(ex.credit_note("o-1", "INV-1", "CN-1", gross="100.00"))
    # Fully credited: canceled, everything paid out is back.
    await bus.send(ex.credit_note("o-1", "INV-1", "CN-2", gross="890.00"))

    clawbacks = await data_on(bus, topics.PAYOUTS_CLAWBACK_INSTRUCTED, 2, settle=1.0)
    amounts = [c.amount for c in clawbacks if isinstance(c, PayoutClawbackInstructed)]
    # payout 980.75. CN-0: worth 990.00, nothing back. CN-1: worth 890.00, 90.75 back.
    # CN-2: worth 0, the remaining 890.00 back. In total exactly the payout.
    assert amounts == [Decimal("90.75"), Decimal("890.00")]
    assert sum(amounts) == Decimal("980.75")
    invoices = transitions(await data_on(bus, topics.INVOICES_STATE_CHANGED, 3), "invoice_number")
    assert invoices["INV-1"][-1] == ("paid_out", "canceled")
    # Each accepted credit note is published once on the internal topic, with what the
    # invoice is worth after it: 1000.00 - 10.00 = 990.00, - 100.00 = 890.00, - 890.00 = 0.
    accepted = await data_on(bus, topics.CREDIT_NOTES_ACCEPTED, 3, settle=1.0)
    assert [
        (a.credit_note_number, a.amount.gross, a.invoice_gross)
        for a in accepted
        if isinstance(a, CreditNoteAccepted)
    ] == [
        ("CN-0", Decimal("10.00"), Decimal("990.00")),
        ("CN-1", Decimal("100.00"), Decimal("890.00")),
        ("CN-2", Decimal("890.00"), Decimal("0.00")),
    ]


async def test_refused_commands_are_rejected_with_reasons_and_change_nothing(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    worker = await start_shipping(run_worker, park_ttl_seconds=1)
    await bus.send(ex.merchant("m-1"))
    await approved_order(bus, "o-1", gross="100.00")
    await bus.send(ex.order("o-declined"))
    await bus.send(ex.decided("o-declined", "declined"))
    await bus.send(ex.shipment("o-1", "INV-1", gross="60.00"))
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)

    over = await bus.send(ex.shipment("o-1", "INV-2", gross="40.01"))
    reused = await bus.send(ex.shipment("o-1", "INV-1", gross="50.00"))
    declined = await bus.send(ex.shipment("o-declined", "INV-D", gross="10.00"))
    too_much = await bus.send(ex.credit_note("o-1", "INV-1", "CN-1", gross="60.01"))
    unknown_invoice = await bus.send(ex.credit_note("o-1", "INV-404", "CN-2", gross="1.00"))
    unknown_order = await bus.send(ex.shipment("o-404", "INV-X", gross="1.00"))
    await bus.send(ex.handed_over("o-1", "INV-1"))
    after_hand_over = await bus.send(ex.cancellation("o-1"))
    immediate = await bus.events(topics.COMMANDS_REJECTED, count=5, timeout=30)
    assert len(immediate) == 5
    # The parked ones (unknown order, unknown invoice) are rejected on the first tick past
    # their deadline.
    await bus.tick(datetime.now(UTC) + timedelta(seconds=5))

    rejected = await data_on(bus, topics.COMMANDS_REJECTED, 7, timeout=30, settle=1.0)
    reasons = {
        r.command_id: r.reason.split(":")[0] for r in rejected if isinstance(r, CommandRejected)
    }
    assert reasons == {
        over: "over_capture",
        reused: "invoice_number_reused",
        declined: "order_declined",
        too_much: "credit_exceeds_open_amount",
        unknown_invoice: "unknown_invoice",
        unknown_order: "unknown_order",
        after_hand_over: "handed_over_to_collection",
    }
    assert len(rejected) == 7
    # Nothing partial: one invoice, one payout, no clawback, the order still shipped in part.
    db = mongo[worker.settings.mongodb_database]
    order = await db["orders"].find_one({"_id": "o-1"})
    assert order is not None
    assert [i["invoice_number"] for i in order["invoices"]] == ["INV-1"]
    assert order["state"] == "partially_shipped"
    assert order["invoices"][0]["credited_cents"] == 0
    assert await db["payouts"].count_documents({}) == 1
    assert await db["clawbacks"].count_documents({}) == 0
    # A refused credit note is not published as accepted.
    assert await data_on(bus, topics.CREDIT_NOTES_ACCEPTED, 0, settle=1.0) == []
    assert await db["orders"].count_documents({"_id": "o-404"}) == 0


async def test_bad_records_are_dead_lettered_and_leave_no_state(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    worker = await start_shipping(run_worker)
    await bus.send(ex.merchant("m-1"))
    await approved_order(bus, "o-1")
    good = ex.shipment("o-1", "INV-1", gross="100.00").model_dump(mode="json")
    cases = [
        ("json", b"{not json"),
        ("json", ex_envelope("order.shipped.v1", good, "float").replace(b'"100.00"', b"100.0")),
        ("envelope", b'{"specversion": "1.0", "data": {}}'),
        ("unknown_type", ex_envelope("order.teleported.v1", good)),
        (
            "schema",
            ex_envelope(
                "order.shipped.v1",
                good | {"amount": {"gross": "100.00", "net": "80.00", "tax": "15.97"}},
            ),
        ),
        (
            "schema",
            ex_envelope(
                "order.shipped.v1", {k: v for k, v in good.items() if k != "invoice_number"}
            ),
        ),
    ]
    for _, value in cases:
        await bus.send_raw(topics.ORDERS_SHIPPED, value, key=b"o-1")
    await bus.send(ex.shipment("o-1", "INV-2", gross="10.00"))  # the worker keeps going

    await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)
    letters = await bus.records(
        topics.ORDERS_SHIPPED + ".dlq", until=lambda rs: len(rs) >= len(cases), timeout=30
    )
    kinds = sorted(headers_of(r)["dlq-error-kind"] for r in letters)
    assert kinds == sorted(kind for kind, _ in cases)
    for record in letters:
        headers = headers_of(record)
        assert headers["dlq-source-topic"] == bus.topic(topics.ORDERS_SHIPPED)
        assert headers["dlq-error"]
        assert record.value in [value for _, value in cases]
    db = mongo[worker.settings.mongodb_database]
    order = await db["orders"].find_one({"_id": "o-1"})
    assert order is not None
    assert [i["invoice_number"] for i in order["invoices"]] == ["INV-2"]


def ex_envelope(event_type: str, data: dict[str, Any], tag: str = "") -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"bad-{event_type}-{tag}-{len(json.dumps(data))}",
            "source": "/tests",
            "type": event_type,
            "time": "2026-11-20T09:00:00Z",
            "subject": "o-1",
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


async def test_an_invoice_unpaid_the_day_after_its_due_date_turns_late(
    bus: Bus, run_worker: Any
) -> None:
    await start_shipping(run_worker)
    await bus.send(ex.merchant("m-1"))
    await approved_order(bus, "o-1")
    await bus.send(ex.shipment("o-1", "INV-1", gross="1190.00"))  # due 2026-12-20
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)
    await bus.tick(datetime(2026, 12, 20, 23, 0, tzinfo=UTC))  # the due date itself: not yet
    await bus.tick(datetime(2026, 12, 21, 0, 5, tzinfo=UTC))
    await data_on(bus, topics.INVOICES_STATE_CHANGED, 3)  # late, before it is paid
    await bus.send(ex.settled("o-1", "INV-1", "1190.00"))

    changes = await data_on(bus, topics.INVOICES_STATE_CHANGED, 4, settle=1.0)
    assert transitions(changes, "invoice_number")["INV-1"] == [
        (None, "new"),
        ("new", "paid_out"),
        ("paid_out", "late"),
        ("late", "complete"),
    ]
