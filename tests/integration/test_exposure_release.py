"""Risk and shipping together: what shipping cancels, credits or sees settled goes back to the
debtor's financing limit in risk (through the internal exposure topic), and never more."""

from __future__ import annotations

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
from tests.harness import Bus

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

    await bus.send(ex.order("o-c", gross="600.00", debtor=debtor))  # 1400 + 600 fits again
    assert (await decision(bus, "o-c")).state == "created"
    assert await exposure_of(mongo, risk, "c-1") == Decimal("2000.00")

    await bus.send(ex.cancellation("o-a"))
    releases = await bus.events(topics.EXPOSURE_RELEASED, count=2, timeout=30)
    cancel = releases[-1].data
    assert isinstance(cancel, ExposureReleased)
    assert (cancel.amount, cancel.reason) == (Decimal("1400.00"), "canceled")
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
    # Capped at o-c's 600.00: 600.01 does not fit (it would, had 5000.00 been released) ...
    await bus.send(ex.order("o-e", gross="600.01", debtor=debtor))
    assert (await decision(bus, "o-e")).decline_reason == "debtor_limit_exceeded"
    # ... and 600.00 does. Held now: o-d 1400.00 + o-f 600.00.
    await bus.send(ex.order("o-f", gross="600.00", debtor=debtor))
    assert (await decision(bus, "o-f")).state == "created"
    assert await exposure_of(mongo, risk, "c-1") == Decimal("2000.00")
