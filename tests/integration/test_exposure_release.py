"""Risk and shipping together: what shipping cancels, credits or sees settled goes back to the
debtor's financing limit in risk (through the internal exposure topic), and never more."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.risk.app import build_worker as build_risk
from services.risk.settings import RiskSettings
from services.shipping.app import build_worker as build_shipping
from services.shipping.settings import ShippingSettings
from shared import topics
from shared.events import ExposureReleased, OrderDecided
from shared.runtime.app import Worker
from tests import examples as ex
from tests.harness import Bus, until_risk_holds

pytestmark = pytest.mark.integration


async def decision(bus: Bus, order_id: str) -> OrderDecided:
    events = await bus.events(
        topics.ORDERS_DECIDED, count=1, where=lambda e: e.subject == order_id, timeout=30
    )
    assert isinstance(events[0].data, OrderDecided)
    return events[0].data


async def exposure_of(
    mongo: AsyncMongoClient[dict[str, Any]], risk: Worker, company_id: str
) -> Decimal:
    doc = await mongo[risk.settings.mongodb_database]["exposure"].find_one({"_id": company_id})
    assert doc is not None
    return Decimal(doc["exposure_cents"]) / 100


async def test_cancel_and_credit_notes_give_the_limit_back(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    risk = await run_worker(build_risk, RiskSettings)
    await run_worker(build_shipping, ShippingSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("2000.00")))
    debtor = ex.debtor_of(ex.company("c-1"))

    await bus.send(ex.order("o-a", gross="1500.00", debtor=debtor))
    assert (await decision(bus, "o-a")).state == "created"
    await bus.send(ex.order("o-b", gross="1000.00", debtor=debtor))
    refused = await decision(bus, "o-b")
    assert (refused.state, refused.decline_reason) == ("declined", "debtor_limit_exceeded")

    # Ship part of A, credit part of that invoice, cancel the rest: all of A is given back.
    await bus.send(ex.shipment("o-a", "INV-A", gross="600.00"))
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=1, timeout=30)
    await bus.send(ex.credit_note("o-a", "INV-A", "CN-A", gross="100.00"))
    releases = await bus.events(topics.EXPOSURE_RELEASED, count=1, timeout=30)
    assert isinstance(releases[0].data, ExposureReleased)
    assert (releases[0].data.amount, releases[0].data.reason) == (Decimal("100.00"), "credit_note")

    # The release is on another topic than the orders: Kafka orders neither against the
    # other, so wait until risk has taken it before the next order is judged against it.
    await until_risk_holds(risk.db, "c-1", 140_000, what="risk taking the credit-note release")
    await bus.send(ex.order("o-c", gross="600.00", debtor=debtor))  # 1400 + 600 fits again
    assert (await decision(bus, "o-c")).state == "created"
    assert await exposure_of(mongo, risk, "c-1") == Decimal("2000.00")

    await bus.send(ex.cancellation("o-a"))
    releases = await bus.events(topics.EXPOSURE_RELEASED, count=2, timeout=30)
    cancel = releases[-1].data
    assert isinstance(cancel, ExposureReleased)
    assert (cancel.amount, cancel.reason) == (Decimal("1400.00"), "canceled")
    await until_risk_holds(risk.db, "c-1", 60_000, what="risk taking the cancel's release")
    await bus.send(ex.order("o-d", gross="1400.00", debtor=debtor))
    assert (await decision(bus, "o-d")).state == "created"
    assert await exposure_of(mongo, risk, "c-1") == Decimal("2000.00")

    # A release (new event id, new release id) for more than the order holds releases only
    # what it holds. (No event is replayed here: redeliveries are test_engine's and test_risk's.)
    await bus.send(
        ExposureReleased(
            release_id="rel_bogus",
            order_id="o-c",
            debtor_company_id="c-1",
            amount=Decimal("5000.00"),
            reason="canceled",
        ),
        source="/shipping",
    )
    await until_risk_holds(risk.db, "c-1", 140_000, what="risk taking the bogus release")
    # Capped at o-c's 600.00: 600.01 does not fit (it would, had 5000.00 been released) ...
    await bus.send(ex.order("o-e", gross="600.01", debtor=debtor))
    assert (await decision(bus, "o-e")).decline_reason == "debtor_limit_exceeded"
    # ... and 600.00 does. Held now: o-d 1400.00 + o-f 600.00.
    await bus.send(ex.order("o-f", gross="600.00", debtor=debtor))
    assert (await decision(bus, "o-f")).state == "created"
    assert await exposure_of(mongo, risk, "c-1") == Decimal("2000.00")


async def _until(check: Any, what: str, timeout: float = 30.0) -> None:
    """Polls ``check()`` (async, truthy when done) until it holds or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _replay_after_inbox_expiry(bus: Bus, risk: Worker, data: Any, event_id: str) -> None:
    """Forgets ``event_id`` as the inbox's TTL would, sends the very same event again, and
    returns once risk has processed it (its inbox record is back)."""
    inbox = risk.db["inbox"]
    assert (await inbox.delete_one({"_id": event_id})).deleted_count == 1
    await bus.send(data, event_id=event_id, source="/shipping")

    async def processed() -> bool:
        return await inbox.find_one({"_id": event_id}) is not None

    await _until(processed, f"risk to process the replayed {event_id}")


async def test_a_replayed_release_after_inbox_expiry_changes_nothing(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """A release of 500.00 on an order of 1500.00 (limit 2000.00) is applied, its inbox
    record deleted, and the same event (same id) sent again: the debtor's exposure stays
    1000.00, so a following order of 1000.01 is declined and one of 1000.00 fits, exactly
    as if the release had arrived once; the release ledger holds it once."""
    risk = await run_worker(build_risk, RiskSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("2000.00")))
    debtor = ex.debtor_of(ex.company("c-1"))
    await bus.send(ex.order("o-a", gross="1500.00", debtor=debtor))
    assert (await decision(bus, "o-a")).state == "created"

    release = ExposureReleased(
        release_id="rel_credit_1",
        order_id="o-a",
        debtor_company_id="c-1",
        amount=Decimal("500.00"),
        reason="credit_note",
    )
    event_id = await bus.send(release, source="/shipping")

    async def released_once() -> bool:
        return await exposure_of(mongo, risk, "c-1") == Decimal("1000.00")

    await _until(released_once, "the first release")
    await _replay_after_inbox_expiry(bus, risk, release, event_id)
    assert await exposure_of(mongo, risk, "c-1") == Decimal("1000.00")

    await bus.send(ex.order("o-b", gross="1000.01", debtor=debtor))
    refused = await decision(bus, "o-b")
    assert (refused.state, refused.decline_reason) == ("declined", "debtor_limit_exceeded")
    await bus.send(ex.order("o-c", gross="1000.00", debtor=debtor))
    assert (await decision(bus, "o-c")).state == "created"
    assert await exposure_of(mongo, risk, "c-1") == Decimal("2000.00")
    ledger = await risk.db["releases"].find({"order_id": "o-a"}).to_list()
    assert [(r["_id"], r["amount_cents"], r["caused_by"]) for r in ledger] == [
        ("rel_credit_1", 50000, event_id)
    ]


async def test_a_replayed_order_after_inbox_expiry_reserves_nothing(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """An order of 1500.00 (limit 2000.00) is decided, its inbox record deleted, and the same
    orders.requested (same id) sent again: exposure stays 1500.00, no second decision is
    published, and a following order of 500.01 is declined while 500.00 fits."""
    risk = await run_worker(build_risk, RiskSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("2000.00")))
    debtor = ex.debtor_of(ex.company("c-1"))
    the_order = ex.order("o-a", gross="1500.00", debtor=debtor)
    event_id = await bus.send(the_order)
    assert (await decision(bus, "o-a")).state == "created"

    await _replay_after_inbox_expiry(bus, risk, the_order, event_id)
    assert await exposure_of(mongo, risk, "c-1") == Decimal("1500.00")

    await bus.send(ex.order("o-b", gross="500.01", debtor=debtor))
    refused = await decision(bus, "o-b")
    assert (refused.state, refused.decline_reason) == ("declined", "debtor_limit_exceeded")
    await bus.send(ex.order("o-c", gross="500.00", debtor=debtor))
    assert (await decision(bus, "o-c")).state == "created"
    decided_a = await bus.events(
        topics.ORDERS_DECIDED, count=1, where=lambda e: e.subject == "o-a", settle=1.0
    )
    assert len(decided_a) == 1
    assert await exposure_of(mongo, risk, "c-1") == Decimal("2000.00")
