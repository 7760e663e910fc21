"""The risk worker as real processes: two of them in one consumer group racing for one
debtor's limit, a kill -9 mid-stream, and the /metrics endpoint."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from bench.run import wait_consumed
from scripts.processes import Fleet, Process
from shared import topics
from shared.events import OrderDecided
from tests import examples as ex
from tests.e2e.fleets import fleet_for, metrics_matching
from tests.harness import Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PROCESSED_ORDERS = re.compile(
    r'worker_events_total\{outcome="processed",service="risk",topic="orders.requested"\} (\S+)'
)


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = fleet_for(infra, namespace, tmp_path / "logs", "risk")
    yield fleet
    fleet.stop_all()


async def wait_for_partitions(worker: Process, topic: str, timeout: float = 60.0) -> None:
    pattern = rf'worker_consumer_lag_messages\{{[^}}]*topic="{re.escape(topic)}"'
    await metrics_matching(worker, pattern, timeout)


async def test_two_processes_never_exceed_a_debtor_limit(
    bus: Bus,
    fleet: Fleet,
    mongo: AsyncMongoClient[dict[str, Any]],
    namespace: str,
    infra: Infra,
) -> None:
    limit = Decimal("5000.00")
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=limit))
    # Orders keyed by order id spread over all partitions, so both processes decide some.
    await bus.send(ex.order("warmup", gross="1.00"))
    workers = [fleet.start_worker("risk"), fleet.start_worker("risk")]
    for w in workers:
        w.wait_ready()
    await bus.events(topics.ORDERS_DECIDED, count=1, timeout=60)
    for w in workers:  # both have joined the group and own part of the orders topic
        await wait_for_partitions(w, topics.ORDERS_REQUESTED)
    # The warm-up may have been fetched before the company record (another topic) and been
    # declined as not identified; the race below starts only once the registry is consumed.
    await wait_consumed(
        infra.kafka_bootstrap,
        f"{namespace}.risk",
        [
            f"{namespace}.{topics.MERCHANTS_CONFIGURED}",
            f"{namespace}.{topics.COMPANIES_REGISTERED}",
        ],
    )

    orders = [ex.order(f"race-{i}", gross="119.00") for i in range(200)]
    await bus.send_many(orders)
    events = await bus.events(topics.ORDERS_DECIDED, count=201, timeout=120)
    decided = {e.data.order_id: e.data for e in events if isinstance(e.data, OrderDecided)}
    assert len(decided) == 201

    gross = {o.order_id: o.amount.gross for o in orders} | {"warmup": Decimal("1.00")}
    created = [d.order_id for d in decided.values() if d.state == "created"]
    declined = [d for d in decided.values() if d.state == "declined" and d.order_id != "warmup"]
    approved_total = sum((gross[o] for o in created), Decimal("0.00"))
    assert approved_total <= limit
    # The limit is used up, not merely respected: nothing declined would still have fitted.
    assert all(d.decline_reason == "debtor_limit_exceeded" for d in declined)
    assert all(limit - approved_total < gross[d.order_id] for d in declined)
    assert len(created) >= 42
    exposure = await mongo[f"{namespace}_risk"]["exposure"].find_one({"_id": "c-1"})
    assert exposure is not None
    assert Decimal(exposure["exposure_cents"]) / 100 == approved_total

    # Both processes took part (each logs nothing at WARNING, so ask their metrics).
    processed = []
    for w in workers:
        _, text = w.get("/metrics")
        processed.append(sum(float(x) for x in PROCESSED_ORDERS.findall(text)))
    assert all(p > 0 for p in processed), processed


async def test_killed_worker_loses_nothing_and_repeats_nothing(
    bus: Bus, fleet: Fleet, namespace: str
) -> None:
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("1000000.00")))
    first = fleet.start_worker("risk")
    first.wait_ready()
    await bus.send_many([ex.order(f"k-{i}", gross="10.00") for i in range(300)])
    await bus.events(topics.ORDERS_DECIDED, count=50, timeout=60)
    first.kill()  # mid-stream, no graceful shutdown
    second = fleet.start_worker("risk")
    second.wait_ready()
    await bus.send_many([ex.order(f"k-{i}", gross="10.00") for i in range(300, 400)])
    events = await bus.events(topics.ORDERS_DECIDED, count=400, timeout=120, settle=2.0)
    by_order: dict[str, set[str]] = {}
    for e in events:
        assert isinstance(e.data, OrderDecided)
        by_order.setdefault(e.data.order_id, set()).add(e.id)
    assert len(by_order) == 400  # nothing lost
    # Redelivered records may re-publish a decision, but always the same event (same id).
    assert all(len(ids) == 1 for ids in by_order.values())


async def test_metrics_endpoint_shows_framework_business_and_lag_metrics(
    bus: Bus, fleet: Fleet
) -> None:
    worker = fleet.start_worker("risk")
    worker.wait_ready()
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1"))
    await bus.send_many(
        [
            ex.order("m1"),
            ex.order(
                "m2",
                debtor=ex.debtor_of(
                    ex.company(
                        "x",
                        name="Unbekannt",
                        registration_number=None,
                        vat_id=None,
                        address=ex.address(postal_code="01234"),
                    )
                ),
            ),
        ]
    )
    await bus.events(topics.ORDERS_DECIDED, count=2, timeout=60)
    lag = r'worker_consumer_lag_messages\{partition="\d+",service="risk",topic="orders.requested"\}'
    text = await metrics_matching(worker, lag + r" 0\.0")  # refreshed in the background
    assert "faststream_received_messages_total" in text
    assert re.search(r'risk_decisions_total\{reason="none",state="created"\} 1\.0', text)
    assert re.search(
        r'risk_decisions_total\{reason="debtor_not_identified",state="declined"\} 1\.0', text
    )
    assert re.search(lag + r" 0\.0", text)
    assert worker.get("/healthz")[0] == 200
    assert worker.get("/readyz")[0] == 200
