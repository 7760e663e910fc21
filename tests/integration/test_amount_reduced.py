"""Reduce an order's amount before it ships (orders.amount_reduced), with risk and shipping
on real Kafka and MongoDB: the difference goes back to the debtor's limit once, later
captures are bounded by the new total, and reaching it ships the order."""

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
from shared.events import (
    CommandRejected,
    ExposureReleased,
    OrderAmountReduced,
    OrderDecided,
    OrderStateChanged,
)
from shared.runtime.app import Worker
from tests import examples as ex
from tests.harness import Bus

pytestmark = pytest.mark.integration


def reduction(order_id: str, gross: str) -> OrderAmountReduced:
    return OrderAmountReduced(order_id=order_id, amount=ex.amount(gross))


async def decided(bus: Bus, order_id: str) -> OrderDecided:
    events = await bus.events(topics.ORDERS_DECIDED, count=1, where=lambda e: e.subject == order_id)
    assert isinstance(events[0].data, OrderDecided)
    return events[0].data


async def exposure_of(mongo: AsyncMongoClient[dict[str, Any]], risk: Worker) -> Decimal:
    doc = await mongo[risk.settings.mongodb_database]["exposure"].find_one({"_id": "c-1"})
    assert doc is not None
    return Decimal(doc["exposure_cents"]) / 100


async def test_reduce_amount_frees_the_limit_once_and_bounds_captures(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """o-a 1500.00 on a 2000.00 limit, 500.00 shipped. Reduced to 1000.00: 500.00 released,
    so a 1000.00 order fits. A 600.00 capture is now refused; reduced to 500.00 the order is
    shipped (one state change). The same reduction replayed after shipping's inbox forgot it
    releases nothing more; raising an order's total is refused with a reason."""
    risk = await run_worker(build_risk, RiskSettings)
    shipping = await run_worker(build_shipping, ShippingSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("2000.00")))
    await bus.send(ex.order("o-a", gross="1500.00"))
    assert (await decided(bus, "o-a")).state == "created"
    await bus.send(ex.shipment("o-a", "INV-1", gross="500.00"))
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)

    first_id = await bus.send(reduction("o-a", "1000.00"))
    releases = await bus.events(topics.EXPOSURE_RELEASED, count=1)
    assert isinstance(releases[0].data, ExposureReleased)
    assert releases[0].data.amount == Decimal("500.00")
    await bus.send(ex.order("o-c", gross="1000.00"))  # 1000.00 + 1000.00 fits 2000.00
    assert (await decided(bus, "o-c")).state == "created"

    await bus.send(ex.shipment("o-a", "INV-2", gross="600.00"))
    over = await bus.events(topics.COMMANDS_REJECTED, count=1)
    assert isinstance(over[0].data, CommandRejected)
    assert over[0].data.reason.startswith("over_capture")
    assert "reduced total 1000.00" in over[0].data.reason

    await bus.send(reduction("o-a", "500.00"))
    changes = await bus.events(
        topics.ORDERS_STATE_CHANGED, count=3, where=lambda e: e.subject == "o-a"
    )
    steps = [(c.data.from_, c.data.to) for c in changes if isinstance(c.data, OrderStateChanged)]
    assert steps == [
        (None, "created"),
        ("created", "partially_shipped"),
        ("partially_shipped", "shipped"),
    ]

    # The first reduction again, with its inbox record gone: the order's own ledger of
    # reductions knows it, so nothing is released twice.
    inbox = shipping.db["inbox"]
    assert (await inbox.delete_one({"_id": first_id})).deleted_count == 1
    await bus.send(reduction("o-a", "1000.00"), event_id=first_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await inbox.find_one({"_id": first_id}) is None:
        assert loop.time() < deadline, "shipping did not process the replayed reduction"
        await asyncio.sleep(0.2)

    raise_id = await bus.send(reduction("o-c", "1500.00"))
    refused = await bus.events(
        topics.COMMANDS_REJECTED, count=1, where=lambda e: e.subject == "o-c"
    )
    assert isinstance(refused[0].data, CommandRejected)
    assert refused[0].data.command_id == raise_id
    assert refused[0].data.reason == (
        "amount_not_reduced: the new total 1500.00 is not below the current total 1000.00"
    )

    all_releases = await bus.events(
        topics.EXPOSURE_RELEASED, count=2, where=lambda e: e.subject == "o-a", settle=2.0
    )
    amounts = [r.data.amount for r in all_releases if isinstance(r.data, ExposureReleased)]
    assert amounts == [Decimal("500.00"), Decimal("500.00")]
    changes = await bus.events(
        topics.ORDERS_STATE_CHANGED, count=3, where=lambda e: e.subject == "o-a", settle=1.0
    )
    assert len(changes) == 3
    # Held: o-a 500.00 (shipped) + o-c 1000.00, once risk has taken both releases.
    deadline = loop.time() + 30
    while (held := await exposure_of(mongo, risk)) != Decimal("1500.00"):
        assert loop.time() < deadline, f"exposure stayed {held}"
        await asyncio.sleep(0.2)
