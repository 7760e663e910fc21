"""One writer per order state, on real Kafka and MongoDB with both workers: risk owns an order
until it is created, shipping from then on. A cancel of a waiting order ends its review."""

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
from shared.envelope import CloudEvent
from shared.events import (
    CommandRejected,
    EventData,
    ExposureReleased,
    OrderDecided,
    OrderStateChanged,
)
from shared.runtime.app import Worker
from tests import examples as ex
from tests.harness import Bus, until_risk_holds

pytestmark = pytest.mark.integration


def about(order_id: str) -> Any:
    return lambda e: e.subject == order_id


def transitions(events: list[CloudEvent[EventData]]) -> list[tuple[str | None, str]]:
    return [(e.data.from_, e.data.to) for e in events if isinstance(e.data, OrderStateChanged)]


async def start_both(run_worker: Any) -> Worker:
    """Risk and shipping; returns risk."""
    risk: Worker = await run_worker(build_risk, RiskSettings)
    await run_worker(build_shipping, ShippingSettings)
    return risk


async def test_cancel_while_waiting_then_review(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """An order of 1500.00 waits for review (limit 2000.00); it is canceled, then approved by
    a reviewer. Exactly one orders.state_changed says canceled (waiting -> canceled), no
    waiting -> created and no VIBAN follow, the review is refused with a reason, shipping
    refuses nothing, and the reservation is back: a following 2000.00 order fits the limit."""
    await start_both(run_worker)
    await bus.send(ex.merchant("m-1", manual_review=True))
    await bus.send(ex.company("c-mid", score=50, financing_limit=Decimal("2000.00")))
    debtor = ex.debtor_of(ex.company("c-mid"))
    await bus.send(ex.order("w1", gross="1500.00", debtor=debtor))
    waiting = await bus.events(topics.ORDERS_DECIDED, count=1, where=about("w1"))
    assert isinstance(waiting[0].data, OrderDecided)
    assert waiting[0].data.state == "waiting"

    cancel_id = await bus.send(ex.cancellation("w1"))
    canceled = await bus.events(
        topics.ORDERS_STATE_CHANGED,
        count=2,
        where=about("w1"),
    )
    assert transitions(canceled) == [(None, "waiting"), ("waiting", "canceled")]

    review_id = await bus.send(ex.review("w1", "approve"))
    rejected = await bus.events(topics.COMMANDS_REJECTED, count=1, where=about("w1"), settle=3.0)
    assert len(rejected) == 1  # the review's; shipping did not answer the cancel
    refusal = rejected[0].data
    assert isinstance(refusal, CommandRejected)
    assert (refusal.command_id, refusal.command_type) == (review_id, "order.reviewed.v1")
    assert refusal.command_id != cancel_id
    assert "canceled" in refusal.reason

    # The reservation was released: 2000.00 fits a 2000.00 limit only if w1 holds nothing.
    await bus.send(ex.order("w2", gross="2000.00", debtor=debtor))
    after = await bus.events(topics.ORDERS_DECIDED, count=1, where=about("w2"))
    assert isinstance(after[0].data, OrderDecided)
    assert after[0].data.state == "waiting"

    changes = await bus.events(topics.ORDERS_STATE_CHANGED, count=2, where=about("w1"), settle=2.0)
    assert transitions(changes) == [(None, "waiting"), ("waiting", "canceled")]
    decided = await bus.events(topics.ORDERS_DECIDED, count=1, where=about("w1"), settle=1.0)
    assert [e.data.state for e in decided if isinstance(e.data, OrderDecided)] == ["waiting"]
    assert all(isinstance(e.data, OrderDecided) and e.data.viban is None for e in decided)
    # Risk released its own reservation; shipping had nothing to release for an order it
    # never saw created.
    releases = await bus.events(topics.EXPOSURE_RELEASED, count=0, where=about("w1"), settle=1.0)
    assert releases == []


async def test_review_then_cancel_is_shippings_cancel(bus: Bus, run_worker: Any) -> None:
    """Approved first, canceled after: risk leaves the cancel to shipping, which cancels the
    created order (one created -> canceled) and gives the whole gross back to the limit."""
    risk = await start_both(run_worker)
    await bus.send(ex.merchant("m-1", manual_review=True))
    await bus.send(ex.company("c-mid", score=50, financing_limit=Decimal("2000.00")))
    debtor = ex.debtor_of(ex.company("c-mid"))
    await bus.send(ex.order("w1", gross="1500.00", debtor=debtor))
    await bus.events(topics.ORDERS_DECIDED, count=1, where=about("w1"))
    await bus.send(ex.review("w1", "approve"))
    created = await bus.events(topics.ORDERS_DECIDED, count=2, where=about("w1"))
    assert isinstance(created[-1].data, OrderDecided)
    assert created[-1].data.state == "created"
    assert created[-1].data.viban is not None

    await bus.send(ex.cancellation("w1"))
    releases = await bus.events(topics.EXPOSURE_RELEASED, count=1, where=about("w1"))
    assert isinstance(releases[0].data, ExposureReleased)
    assert releases[0].data.amount == Decimal("1500.00")
    await until_risk_holds(risk.db, "c-mid", 0, what="risk taking the cancel's release")
    await bus.send(ex.order("w2", gross="2000.00", debtor=debtor))
    after = await bus.events(topics.ORDERS_DECIDED, count=1, where=about("w2"))
    assert isinstance(after[0].data, OrderDecided)
    assert after[0].data.state == "waiting"  # the limit is free again

    changes = await bus.events(topics.ORDERS_STATE_CHANGED, count=3, where=about("w1"), settle=2.0)
    assert transitions(changes) == [
        (None, "waiting"),
        ("waiting", "created"),
        ("created", "canceled"),
    ]
    assert await bus.events(topics.COMMANDS_REJECTED, count=0, settle=1.0) == []
