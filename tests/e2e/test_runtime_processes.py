"""The runtime's stop and restart bounds on workers as processes (the risk worker):
a permanent publish error fails the HTTP probes; SIGTERM during an outage ends the process
within 10 s; a worker restarted after kill -9 inside a transaction resumes within 15 s."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from scripts.processes import Fleet
from shared import topics
from shared.events import OrderDecided
from tests import examples as ex
from tests.e2e.fleets import fleet_for, metrics_matching
from tests.harness import Bus
from tests.infra import Infra
from tests.private_broker import PrivateBroker, available

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# The MongoDB transaction lifetime the shared test MongoDB must run with for the kill -9
# bound (scripts/infra.sh: --setParameter transactionLifetimeLimitSeconds=10).
TRANSACTION_LIFETIME_SECONDS = 10


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = fleet_for(infra, namespace, tmp_path / "logs", "risk")
    yield fleet
    fleet.stop_all()


def test_a_worker_runs_on_uvloop_unless_told_otherwise(fleet: Fleet) -> None:
    """Two risk worker processes: one with the default settings, one with
    RISK_EVENT_LOOP=asyncio, both logging at INFO. Each says in its worker_ready line which
    event loop it runs on."""
    default = fleet.start_worker("risk", LOG_LEVEL="INFO")
    default.wait_ready()
    plain = fleet.start_worker("risk", RISK_EVENT_LOOP="asyncio", LOG_LEVEL="INFO")
    plain.wait_ready()
    ready_lines = {
        name: [line for line in p.log_path.read_text().splitlines() if "worker_ready" in line]
        for name, p in (("default", default), ("plain", plain))
    }
    assert len(ready_lines["default"]) == 1 and "uvloop" in ready_lines["default"][0]
    assert len(ready_lines["plain"]) == 1 and "asyncio" in ready_lines["plain"][0]


async def test_a_permanent_publish_error_fails_both_probes(
    bus: Bus, fleet: Fleet, namespace: str
) -> None:
    """orders.decided takes records of at most 200 bytes: every decision is refused by the
    broker (MESSAGE_TOO_LARGE). The worker stops itself: /healthz 500, /readyz 503,
    worker_stopped 1, and one critical log line."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    bus.topic(topics.ORDERS_DECIDED),
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"max.message.bytes": "200"},
                )
            ]
        )
    finally:
        await admin.close()
    worker = fleet.start_worker("risk")
    worker.wait_ready()
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1"))
    await bus.send(ex.order("o-1"))
    await metrics_matching(worker, r'worker_stopped\{service="risk"\} 1\.0', timeout=60)
    assert worker.get("/healthz")[0] == 500
    assert worker.get("/readyz")[0] == 503
    await metrics_matching(worker, r'worker_ready\{service="risk"\} 0\.0', timeout=10)
    assert "worker_stopped_uncommitted_failure" in worker.log_path.read_text()


@pytest.mark.skipif(not available(), reason="no Kafka jars for a private broker")
async def test_sigterm_during_a_kafka_outage_ends_the_worker_within_ten_seconds(
    infra: Infra, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """The worker's broker (a private one) dies while decisions are being published; the
    worker, retrying, gets SIGTERM and must be gone within 10 s."""
    broker = PrivateBroker(tmp_path / "kafka")
    broker.format()
    await asyncio.to_thread(broker.start)
    bus = Bus(broker.bootstrap, f"{namespace}.")
    await bus.start()
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "MONGODB_URI": infra.mongodb_uri,
            "TOPIC_PREFIX": f"{namespace}.",
            "RISK_MONGODB_DATABASE": f"{namespace}_risk",
            "RISK_BATCH_TIMEOUT_MS": "5",
            "RISK_BATCH_MAX_RECORDS": "20",
            "LOG_LEVEL": "WARNING",
        },
        log_dir=tmp_path / "logs",
    )
    try:
        # Reference data first, and a ticker: what is read before it parks until a tick.
        await bus.send(ex.merchant("m-1"))
        await bus.send(ex.company("c-1", financing_limit=Decimal("1000000.00")))
        fleet.start_ticker(0.5)
        worker = fleet.start_worker("risk")
        worker.wait_ready()
        await bus.send_many([ex.order(f"o-{i}", gross="10.00") for i in range(300)])
        await bus.events(topics.ORDERS_DECIDED, count=10, timeout=60)
        await bus.stop()
        broker.stop(kill=True)
        await asyncio.sleep(3.0)  # the worker is now retrying against a dead broker
        started = time.monotonic()
        worker.stop(timeout=30)
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"{elapsed:.1f} s after SIGTERM:\n{worker.log_tail()}"
    finally:
        fleet.stop_all()
        broker.stop(kill=True)
        await mongo.drop_database(f"{namespace}_risk")


async def test_a_worker_killed_inside_a_transaction_resumes_within_fifteen_seconds(
    bus: Bus, fleet: Fleet, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Many orders against one debtor: nearly all of the worker's time is spent inside
    transactions on the same exposure document, so the kill -9 lands inside one, whose
    locks outlive the process. The restarted worker must decide new orders within 15 s
    (MongoDB aborts the dead transaction after its lifetime, set to 10 s here)."""
    await mongo.admin.command(
        {"setParameter": 1, "transactionLifetimeLimitSeconds": TRANSACTION_LIFETIME_SECONDS}
    )
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.company("c-1", financing_limit=Decimal("100000000.00")))
    first = fleet.start_worker("risk", RISK_BATCH_MAX_RECORDS="200")
    first.wait_ready()
    await bus.send_many([ex.order(f"k-{i}", gross="10.00") for i in range(3000)])
    await bus.events(topics.ORDERS_DECIDED, count=200, timeout=120)
    first.kill()
    killed_at = time.monotonic()
    second = fleet.start_worker("risk", RISK_BATCH_MAX_RECORDS="200")
    second.wait_ready()
    processed = re.compile(
        r'worker_events_total\{outcome="processed",service="risk",topic="orders.requested"\} '
        r"([1-9]\S*)"
    )
    await metrics_matching(second, processed.pattern, timeout=60)
    resumed_after = time.monotonic() - killed_at
    assert resumed_after < 15, f"resumed {resumed_after:.1f} s after the kill"
    events = await bus.events(topics.ORDERS_DECIDED, count=3000, timeout=240, settle=1.0)
    assert {e.data.order_id for e in events if isinstance(e.data, OrderDecided)} == {
        f"k-{i}" for i in range(3000)
    }
