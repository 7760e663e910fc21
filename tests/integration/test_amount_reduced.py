"""Reduce an order's amount before it ships (orders.amount_reduced), with risk and shipping
on real Kafka and MongoDB: the difference goes back to the debtor's limit once, later
captures are bounded by the new total, and reaching it ships the order."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.risk.app import build_worker as build_risk
from services.risk.settings import RiskSettings
from services.shipping.app import build_worker as build_shipping
from services.shipping.handlers import ShippingService
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
from shared.runtime.metrics import WorkerMetrics
from tests import examples as ex
from tests.harness import T0, Bus, headers_of, until_risk_holds

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
    await until_risk_holds(risk.db, "c-1", 100_000, what="risk taking the reduction's release")
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
    assert reductions_counted(shipping) == {
        "applied": 2,
        "already_applied": 1,
        "amount_not_reduced": 1,
    }
    # Held: o-a 500.00 (shipped) + o-c 1000.00, once risk has taken both releases.
    deadline = loop.time() + 30
    while (held := await exposure_of(mongo, risk)) != Decimal("1500.00"):
        assert loop.time() < deadline, f"exposure stayed {held}"
        await asyncio.sleep(0.2)


def reductions_counted(shipping: Worker) -> dict[str, float]:
    """shipping_reductions_total by outcome, the non-zero ones, from the worker's registry."""
    return {
        sample.labels["outcome"]: sample.value
        for metric in shipping.metrics.registry.collect()
        if metric.name == "shipping_reductions"
        for sample in metric.samples
        if sample.name == "shipping_reductions_total" and sample.value
    }


async def until(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Polls ``check()`` (async) until it returns something truthy; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := await check()):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return found


def answers(command_id: str) -> Any:
    """Matches the rejection of the command ``command_id``."""
    return lambda e: isinstance(e.data, CommandRejected) and e.data.command_id == command_id


def moves_to(state: str, order_id: str | None = None) -> Any:
    """Matches an order's state change to ``state`` (of ``order_id``, when given)."""
    return lambda e: (
        isinstance(e.data, OrderStateChanged)
        and e.data.to == state
        and order_id in {None, e.data.order_id}
    )


async def rejection_of(bus: Bus, command_id: str) -> str:
    found = await bus.events(topics.COMMANDS_REJECTED, count=1, where=answers(command_id))
    assert isinstance(found[0].data, CommandRejected)
    return found[0].data.reason


async def test_a_reduction_frees_exactly_the_difference_to_the_cent(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Limit 2000.00, o-a 1500.00 approved, so 500.01 more does not fit. o-a reduced to
    1000.00 (500.00 back): now an order of 1000.01 is declined debtor_limit_exceeded and one
    of exactly 1000.00 is created; the debtor holds 2000.00."""
    risk = await run_worker(build_risk, RiskSettings)
    await run_worker(build_shipping, ShippingSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("2000.00")))
    await bus.send(ex.order("o-a", gross="1500.00"))
    assert (await decided(bus, "o-a")).state == "created"
    await bus.send(ex.order("o-before", gross="500.01"))
    assert (await decided(bus, "o-before")).decline_reason == "debtor_limit_exceeded"

    await bus.send(reduction("o-a", "1000.00"))

    async def freed() -> bool:
        return await exposure_of(mongo, risk) == Decimal("1000.00")

    await until(freed, "risk to take the reduction's release")
    await bus.send(ex.order("o-cent-more", gross="1000.01"))
    refused = await decided(bus, "o-cent-more")
    assert (refused.state, refused.decline_reason) == ("declined", "debtor_limit_exceeded")
    await bus.send(ex.order("o-fits", gross="1000.00"))
    assert (await decided(bus, "o-fits")).state == "created"
    assert await exposure_of(mongo, risk) == Decimal("2000.00")


async def test_the_same_reduction_delivered_twice_frees_it_once(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """o-a 1500.00 on a 2000.00 limit, reduced to 1000.00 by one event published twice
    under the same id (a plain redelivery). A refused reduction on the same key follows it
    (so shipping has handled both copies when its rejection appears), then a second, new
    reduction to 900.00 on the same key (so risk has read every release before it). Every
    release for o-a names one of two release ids, one per reduction event; the debtor holds
    900.00, so 1100.01 more is declined and 1100.00 fits."""
    risk = await run_worker(build_risk, RiskSettings)
    shipping = await run_worker(build_shipping, ShippingSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("2000.00")))
    await bus.send(ex.order("o-a", gross="1500.00"))
    assert (await decided(bus, "o-a")).state == "created"

    first_id = await bus.send(reduction("o-a", "1000.00"))
    await bus.send(reduction("o-a", "1000.00"), event_id=first_id)
    marker = await bus.send(reduction("o-a", "1000.00"))  # not below 1000.00: refused
    assert (await rejection_of(bus, marker)).startswith("amount_not_reduced")
    await bus.send(reduction("o-a", "900.00"))

    async def settled() -> bool:
        return await exposure_of(mongo, risk) == Decimal("900.00")

    await until(settled, "risk to hold 900.00 for o-a")
    releases = await bus.events(
        topics.EXPOSURE_RELEASED, count=2, where=lambda e: e.subject == "o-a", settle=1.0
    )
    by_id: dict[str, Decimal] = {}
    for release in releases:
        assert isinstance(release.data, ExposureReleased)
        assert by_id.setdefault(release.data.release_id, release.data.amount) == (
            release.data.amount
        )
    assert sorted(by_id.values()) == [Decimal("100.00"), Decimal("500.00")]
    order = await shipping.db["orders"].find_one({"_id": "o-a"})
    assert order is not None
    assert (order["reduced_cents"], len(order["reductions"])) == (60_000, 2)

    await bus.send(ex.order("o-cent-more", gross="1100.01"))
    assert (await decided(bus, "o-cent-more")).decline_reason == "debtor_limit_exceeded"
    await bus.send(ex.order("o-fits", gross="1100.00"))
    assert (await decided(bus, "o-fits")).state == "created"


async def test_a_created_order_reduced_stays_created_and_ships_at_the_new_total(
    bus: Bus, run_worker: Any
) -> None:
    """o-1 1190.00 approved (risk's decision sent directly), reduced to 1000.00: no state
    change, the order stays created; a capture of 1000.01 is refused naming the reduced
    total, one of 1000.00 ships it (created -> shipped, nothing in between)."""
    shipping = await run_worker(build_shipping, ShippingSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.order("o-1", gross="1190.00"))
    await bus.send(ex.decided("o-1"))
    await bus.send(reduction("o-1", "1000.00"))
    releases = await bus.events(topics.EXPOSURE_RELEASED, count=1)
    assert isinstance(releases[0].data, ExposureReleased)
    assert (releases[0].data.amount, releases[0].data.reason) == (
        Decimal("190.00"),
        "amount_reduced",
    )
    order = await shipping.db["orders"].find_one({"_id": "o-1"})
    assert order is not None
    assert order["state"] == "created"
    assert await bus.events(topics.ORDERS_STATE_CHANGED, settle=1.0, timeout=2) == []

    over = await bus.send(ex.shipment("o-1", "INV-1", gross="1000.01"))
    assert await rejection_of(bus, over) == (
        "over_capture: captured 0.00 + 1000.01 exceeds the reduced total 1000.00"
    )
    await bus.send(ex.shipment("o-1", "INV-2", gross="1000.00"))
    changes = await bus.events(topics.ORDERS_STATE_CHANGED, count=1, settle=1.0)
    assert [
        (c.data.from_, c.data.to) for c in changes if isinstance(c.data, OrderStateChanged)
    ] == [("created", "shipped")]


async def test_each_refused_reduction_is_rejected_with_its_reason_and_changes_nothing(
    bus: Bus, run_worker: Any
) -> None:
    """On shipping alone (risk's decisions sent directly): a reduction that raises the total,
    one to 0.00, one below what is captured, one in another currency, and one of an order
    that is waiting, declined, canceled, shipped or complete are each rejected with the
    reason a merchant reads; one of an unknown order is parked, then rejected unknown_order
    on the first tick past park_ttl. A partially shipped order reduced to what it captured
    is shipped and refuses a further capture. No refused reduction releases anything or
    changes its order."""
    shipping = await run_worker(build_shipping, ShippingSettings, park_ttl_seconds=1)
    await bus.send(ex.merchant("m-1"))
    for order_id, state in [
        ("o-open", "created"),
        ("o-part", "created"),
        ("o-waiting", "waiting"),
        ("o-declined", "declined"),
        ("o-canceled", "created"),
        ("o-shipped", "created"),
        ("o-complete", "created"),
    ]:
        await bus.send(ex.order(order_id, gross="1000.00"))
        await bus.send(ex.decided(order_id, state))

    async def all_decided() -> bool:
        docs = await shipping.db["orders"].find({"state": {"$ne": None}}).to_list()
        return len(docs) == 7

    # Each step once the one it needs is stored: nothing parks but the unknown order.
    await until(all_decided, "shipping to store the seven decisions")
    await bus.send(ex.cancellation("o-canceled"))
    await bus.send(ex.shipment("o-part", "INV-P", gross="400.00"))
    await bus.send(ex.shipment("o-shipped", "INV-S", gross="1000.00"))
    await bus.send(ex.shipment("o-complete", "INV-C", gross="1000.00"))
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=3)
    await bus.send(ex.settled("o-complete", "INV-C", "1000.00"))
    await bus.events(topics.ORDERS_STATE_CHANGED, count=1, where=moves_to("canceled"))
    await bus.events(topics.ORDERS_STATE_CHANGED, count=1, where=moves_to("complete"))
    before = {doc["_id"]: doc async for doc in shipping.db["orders"].find({})}
    releases_before = len(await bus.events(topics.EXPOSURE_RELEASED, settle=1.0, timeout=2))

    cases = {
        "o-open 1000.01": "amount_not_reduced: the new total 1000.01 is not below the current "
        "total 1000.00",
        "o-open 1000.00": "amount_not_reduced: the new total 1000.00 is not below the current "
        "total 1000.00",
        "o-open 0.00": "reduction_to_zero: the new total must be above 0.00; cancel the order "
        "instead",
        "o-part 399.99": "reduction_below_captured: the new total 399.99 is below the 400.00 "
        "already shipped; lower a shipped invoice with a credit note",
        "o-waiting 500.00": "order_waiting: cannot reduce the amount of an order that is waiting",
        "o-declined 500.00": "order_declined: cannot reduce the amount of an order that is "
        "declined",
        "o-canceled 500.00": "order_canceled: cannot reduce the amount of an order that is "
        "canceled",
        "o-shipped 500.00": "order_shipped: cannot reduce the amount of an order that is "
        "shipped; lower its invoices with credit notes",
        "o-complete 500.00": "order_complete: cannot reduce the amount of an order that is "
        "complete; lower its invoices with credit notes",
    }
    sent: dict[str, str] = {}
    for case in cases:
        order_id, gross = case.split()
        sent[await bus.send(reduction(order_id, gross))] = case
    dollars = await bus.send(
        OrderAmountReduced(order_id="o-open", amount=ex.amount("500.00"), currency="USD")
    )
    unknown = await bus.send(reduction("o-404", "500.00"))

    rejected = await bus.events(topics.COMMANDS_REJECTED, count=len(cases) + 1)
    reasons = {
        r.data.command_id: r.data.reason for r in rejected if isinstance(r.data, CommandRejected)
    }
    assert {sent[i]: reason for i, reason in reasons.items() if i in sent} == cases
    assert reasons[dollars] == "currency_mismatch: reduction in USD, order in EUR"
    assert unknown not in reasons  # parked, not yet refused

    async def parked() -> bool:
        return await shipping.db["parked"].find_one({"_id": unknown}) is not None

    await until(parked, "the unknown order's reduction to be parked")
    early = await bus.tick(T0)  # before its deadline: retried, still parked, not counted

    async def retried() -> bool:
        return await shipping.db["inbox"].find_one({"_id": f"{unknown}@{early}"}) is not None

    await until(retried, "the early tick to retry the parked reduction")
    assert "unknown_order" not in reductions_counted(shipping)
    assert unknown not in {
        r.data.command_id
        for r in await bus.events(topics.COMMANDS_REJECTED)
        if isinstance(r.data, CommandRejected)
    }
    await bus.tick(datetime.now(UTC) + timedelta(seconds=5))  # past its 1 s park_ttl
    assert await rejection_of(bus, unknown) == "unknown_order: no order for order o-404 yet"

    after = {doc["_id"]: doc async for doc in shipping.db["orders"].find({})}
    assert after == before  # o-404 never became an order either
    assert len(await bus.events(topics.EXPOSURE_RELEASED, settle=1.0, timeout=2)) == (
        releases_before
    )

    assert reductions_counted(shipping) == {
        "amount_not_reduced": 2,
        "reduction_to_zero": 1,
        "reduction_below_captured": 1,
        "currency_mismatch": 1,
        "order_waiting": 1,
        "order_declined": 1,
        "order_canceled": 1,
        "order_shipped": 1,
        "order_complete": 1,
        "unknown_order": 1,  # once, when it expired: not on each retry while parked
    }

    # Reduced to what it captured, o-part is shipped: 600.00 given back, no further capture.
    await bus.send(reduction("o-part", "400.00"))
    shipped = await bus.events(
        topics.ORDERS_STATE_CHANGED,
        count=1,
        where=moves_to("shipped", "o-part"),
    )
    assert isinstance(shipped[0].data, OrderStateChanged)
    assert shipped[0].data.from_ == "partially_shipped"
    released = await bus.events(
        topics.EXPOSURE_RELEASED, count=1, where=lambda e: e.subject == "o-part"
    )
    assert isinstance(released[0].data, ExposureReleased)
    assert released[0].data.amount == Decimal("600.00")
    further = await bus.send(ex.shipment("o-part", "INV-P2", gross="0.01"))
    assert (await rejection_of(bus, further)).startswith("order_shipped")


def reduction_record(event_id: str, data: dict[str, Any]) -> bytes:
    """An order.amount_reduced.v1 envelope around ``data`` exactly as given."""
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/tests",
        "type": OrderAmountReduced.EVENT_TYPE,
        "time": "2026-11-20T09:00:00Z",
        "subject": "o-1",
        "datacontenttype": "application/json",
        "data": data,
    }
    return json.dumps(envelope).encode()


async def test_bad_reductions_are_dead_lettered_and_change_nothing(
    bus: Bus, run_worker: Any
) -> None:
    """Three records on orders.amount_reduced the contract refuses: the gross a JSON number
    (a float), gross not net + tax, no order_id. Each goes to orders.amount_reduced.dlq with
    its original bytes and the dlq-* headers naming the error and where it came from; then a
    valid reduction on the same key (so after them) is applied: the order holds that one
    reduction only, and it is the only release."""
    shipping = await run_worker(build_shipping, ShippingSettings)
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.order("o-1", gross="1190.00"))
    await bus.send(ex.decided("o-1"))
    amount = {"gross": "1000.00", "net": "840.34", "tax": "159.66"}
    bad = {
        "bad-float": (
            "json",
            reduction_record("bad-float", {"order_id": "o-1", "amount": amount}).replace(
                b'"gross": "1000.00"', b'"gross": 1000.0'
            ),
        ),
        "bad-sum": (
            "schema",
            reduction_record("bad-sum", {"order_id": "o-1", "amount": amount | {"tax": "159.67"}}),
        ),
        "bad-no-order": ("schema", reduction_record("bad-no-order", {"amount": amount})),
    }
    assert b"1000.0," in bad["bad-float"][1]
    for _, value in bad.values():
        await bus.send_raw(topics.ORDERS_AMOUNT_REDUCED, value, key=b"o-1")
    valid = await bus.send(reduction("o-1", "1000.00"))

    releases = await bus.events(topics.EXPOSURE_RELEASED, count=1, settle=1.0)
    assert [r.data.amount for r in releases if isinstance(r.data, ExposureReleased)] == [
        Decimal("190.00")
    ]
    letters = await bus.records(
        topics.ORDERS_AMOUNT_REDUCED + ".dlq", until=lambda rs: len(rs) >= len(bad), settle=1.0
    )
    assert len(letters) == len(bad)
    by_id = {json.loads(r.value)["id"]: r for r in letters}
    assert set(by_id) == set(bad)
    for event_id, (kind, value) in bad.items():
        record = by_id[event_id]
        headers = headers_of(record)
        assert record.value == value
        assert headers["dlq-error-kind"] == kind, (event_id, headers)
        assert headers["dlq-error"]
        assert headers["dlq-source-topic"] == bus.topic(topics.ORDERS_AMOUNT_REDUCED)
        assert headers["dlq-source-offset"].isdigit()
        assert headers["dlq-consumer-group"]
    assert "gross must equal net + tax" in headers_of(by_id["bad-sum"])["dlq-error"]
    assert "order_id" in headers_of(by_id["bad-no-order"])["dlq-error"]

    order = await shipping.db["orders"].find_one({"_id": "o-1"})
    assert order is not None
    assert (order["state"], order["reduced_cents"], order["reductions"]) == (
        "created",
        19_000,
        [valid],
    )
    assert await bus.events(topics.COMMANDS_REJECTED, settle=1.0, timeout=2) == []


class TwinShipping(ShippingService):
    """Shipping in a consumer group of its own, on the same database: it reads every record
    the first shipping worker reads, as a process still working on partitions a rebalance
    has already moved on would."""

    name = "shipping-twin"


def counted(workers: list[Worker], outcome: str) -> float:
    """orders.amount_reduced events with ``outcome`` in the workers' own registries."""
    total = 0.0
    for worker in workers:
        labels = {
            "service": worker.service.name,
            "topic": topics.ORDERS_AMOUNT_REDUCED,
            "outcome": outcome,
        }
        total += worker.metrics.registry.get_sample_value("worker_events_total", labels) or 0.0
    return total


async def test_a_reduction_handled_by_two_processes_frees_it_once(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Two shipping workers on one database, in different consumer groups, so both handle
    every event (at the same moment, when their transactions conflict and one is retried,
    or one after the other). o-a 1500.00 on a 2000.00 limit
    is reduced to 1000.00 by one event: between them the workers process it once and find
    it already done once; every release for o-a has one release id; the debtor holds
    1000.00, so 1000.01 more is declined and exactly 1000.00 fits."""
    risk = await run_worker(build_risk, RiskSettings)
    shipping = await run_worker(build_shipping, ShippingSettings)
    metrics = WorkerMetrics()
    twin = Worker(TwinShipping(metrics.registry), shipping.settings, metrics)
    await twin.start()
    try:
        workers = [shipping, twin]
        await bus.send(ex.merchant("m-1"))
        await bus.send(ex.company("c-1", financing_limit=Decimal("2000.00")))
        await bus.send(ex.order("o-a", gross="1500.00"))
        assert (await decided(bus, "o-a")).state == "created"
        await bus.send(reduction("o-a", "1000.00"))

        async def both_handled() -> bool:
            return counted(workers, "processed") + counted(workers, "duplicate") >= 2

        await until(both_handled, "both shipping workers to handle the reduction")
        assert (counted(workers, "processed"), counted(workers, "duplicate")) == (1.0, 1.0)

        async def freed() -> bool:
            return await exposure_of(mongo, risk) == Decimal("1000.00")

        await until(freed, "risk to take the release")
        releases = await bus.events(
            topics.EXPOSURE_RELEASED, count=1, where=lambda e: e.subject == "o-a", settle=1.0
        )
        ids = {r.data.release_id for r in releases if isinstance(r.data, ExposureReleased)}
        assert len(ids) == 1
        order = await shipping.db["orders"].find_one({"_id": "o-a"})
        assert order is not None
        assert (order["reduced_cents"], len(order["reductions"])) == (50_000, 1)

        await bus.send(ex.order("o-cent-more", gross="1000.01"))
        assert (await decided(bus, "o-cent-more")).decline_reason == "debtor_limit_exceeded"
        await bus.send(ex.order("o-fits", gross="1000.00"))
        assert (await decided(bus, "o-fits")).state == "created"
    finally:
        await twin.stop()
