"""A failure the worker must not commit past stops it (real Kafka and MongoDB): consumption
stops with the offsets where they were, the probes fail, worker_stopped is 1, and a restart
redelivers the batch, whose stored outputs the inbox replays. Stopping is bounded even inside
a retry loop. A worker whose inbox would forget ids Kafka still keeps refuses to start."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared import topics
from shared.events import OrderCanceled
from shared.runtime.app import RetentionMismatch, Worker
from shared.runtime.settings import WorkerSettings
from tests.harness import Bus
from tests.integration.toy import ToyService, build_toy, effects

pytestmark = pytest.mark.integration


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _committed(bus: Bus, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(m.offset for tp, m in offsets.items() if tp.topic == bus.topic(topic))


async def _create_topic(bus: Bus, name: str, **config: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    bus.topic(name), num_partitions=1, replication_factor=1, topic_configs=config
                )
            ]
        )
        # Created is not yet described: wait until the broker reports the topic's config.
        resource = ConfigResource(ConfigResourceType.TOPIC, bus.topic(name))
        deadline = asyncio.get_running_loop().time() + 30
        while any(r[0] != 0 for d in await admin.describe_configs([resource]) for r in d.resources):
            assert asyncio.get_running_loop().time() < deadline, f"{name} not described"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _stopped(worker: Worker) -> float:
    value: float = worker.metrics.stopped.labels(worker.service.name)._value.get()
    return value


async def test_a_raising_tick_stops_the_worker_uncommitted_and_a_restart_handles_everything(
    bus: Bus, run_worker: Any
) -> None:
    """Orders and a tick whose own work raises arrive together; an order sent after the
    failure must not move the offsets past it. After the restart (tick fixed), every order
    has exactly one effect and one answer."""
    worker = await run_worker(build_toy, WorkerSettings)
    await worker.db["flags"].insert_one({"_id": "tick_raises"})
    before = [f"o-{i}" for i in range(6)]
    await bus.send_many([OrderCanceled(order_id=o) for o in before[:3]])
    await bus.tick(datetime.now(UTC))
    await bus.send_many([OrderCanceled(order_id=o) for o in before[3:]])
    service = worker.service
    assert isinstance(service, ToyService)
    await _until(lambda: service.tick_attempts > 0)
    await bus.send(OrderCanceled(order_id="o-after"))
    await _until(lambda: worker.fatal is not None, timeout=15)
    await asyncio.sleep(2.0)  # would o-after's batch commit past the failure?

    assert _stopped(worker) == 1
    assert not await worker.ready()
    assert worker.metrics.ready.labels("toy")._value.get() == 0 or await _ready_gauge_drops(worker)
    # Not even the orders' topic moved past what was unfinished: o-after is offset 6.
    assert await _committed(bus, worker.group_id, topics.ORDERS_CANCELED) < 7
    assert "o-after" not in await effects(worker)

    await worker.db["flags"].delete_many({})
    await worker.stop()
    again = await run_worker(build_toy, WorkerSettings)
    answered = await bus.events(topics.COMMANDS_REJECTED, count=7, timeout=60, settle=1.0)
    assert sorted({e.data.key() for e in answered}) == sorted([*before, "o-after"])
    assert await effects(again) == dict.fromkeys([*before, "o-after"], 1)
    assert again.fatal is None


async def _ready_gauge_drops(worker: Worker) -> bool:
    await _until(lambda: worker.metrics.ready.labels("toy")._value.get() == 0, timeout=10)
    return True


async def test_a_permanent_publish_error_stops_the_worker(bus: Bus, run_worker: Any) -> None:
    """The output topic takes records of at most 200 bytes: the broker refuses every answer
    with MESSAGE_TOO_LARGE, which no retry fixes. The worker stops instead of retrying for
    ever, with the order's offset uncommitted; its stored answer is not lost."""
    await _create_topic(bus, topics.COMMANDS_REJECTED, **{"max.message.bytes": "200"})
    worker = await run_worker(build_toy, WorkerSettings)
    await bus.send(OrderCanceled(order_id="o-1"))
    await _until(lambda: worker.fatal is not None, timeout=30)
    assert _stopped(worker) == 1
    assert not await worker.ready()
    assert worker.metrics.permanent_errors.labels("toy", "publish")._value.get() >= 1
    assert await _committed(bus, worker.group_id, topics.ORDERS_CANCELED) == 0
    stored = await worker.db["inbox"].count_documents({"outputs.0": {"$exists": True}})
    assert stored == 1  # replayed by the restart once the topic takes it


async def test_stopping_inside_a_retry_loop_takes_under_ten_seconds(
    bus: Bus, run_worker: Any
) -> None:
    """A batch retried for ever (a conflict that never clears) must not hold up a stop."""
    worker = await run_worker(build_toy, WorkerSettings)
    await bus.send(OrderCanceled(order_id="stuck", reason="conflict"))
    retries = worker.metrics.transient_errors.labels("toy", "store")
    await _until(lambda: retries._value.get() >= 3)
    started = time.monotonic()
    await worker.stop()
    assert time.monotonic() - started < 10
    assert await _committed(bus, worker.group_id, topics.ORDERS_CANCELED) == 0


async def test_an_inbox_shorter_than_the_topic_retention_refuses_to_start(
    bus: Bus, run_worker: Any
) -> None:
    """orders.canceled keeps records 30 days and clock.ticks for ever: an inbox remembering
    14 days (or 31) would let a record redelivered after that act twice. The refusal names
    both topics and the setting to change. (Every other test starts workers on topics with
    the broker's default 7 days, under the default 14-day inbox.)"""
    await _create_topic(bus, topics.ORDERS_CANCELED, **{"retention.ms": str(30 * 86_400_000)})
    await _create_topic(bus, topics.CLOCK_TICKS, **{"retention.ms": "-1"})
    with pytest.raises(RetentionMismatch, match="INBOX_TTL_DAYS") as refused:
        await run_worker(build_toy, WorkerSettings, inbox_ttl_days=14)
    assert "orders.canceled: 30 days" in str(refused.value)
    assert "clock.ticks: forever" in str(refused.value)
    with pytest.raises(RetentionMismatch) as refused:
        await run_worker(build_toy, WorkerSettings, inbox_ttl_days=31)
    assert "orders.canceled" not in str(refused.value)
    assert "clock.ticks: forever" in str(refused.value)


@pytest.mark.parametrize(
    "fetch",
    [
        # Kafka's defaults: a fetch returns with the first record, the second waits behind it.
        {"fetch_min_bytes": 1, "fetch_max_wait_ms": 500},
        # Fetches held 20 ms (the workers' default): both records arrive in the batch that is
        # stuck, so the consumer's position is past both and the lag reads 0 while they wait.
        {"fetch_min_bytes": 1_000_000, "fetch_max_wait_ms": 20},
    ],
    ids=["kafka-fetch-defaults", "fetch-held-20ms"],
)
async def test_a_worker_holding_lag_without_progress_fails_readiness(
    bus: Bus, run_worker: Any, fetch: dict[str, int]
) -> None:
    """A batch retried for ever (a conflict that never clears) holds its records: with
    Kafka and MongoDB both answering, readiness still fails once nothing was committed for
    stall_seconds, and worker_ready drops to 0."""
    worker = await run_worker(build_toy, WorkerSettings, stall_seconds=2.0, **fetch)
    await bus.send(OrderCanceled(order_id="stuck", reason="conflict"))
    await bus.send(OrderCanceled(order_id="behind-it"))
    deadline = asyncio.get_running_loop().time() + 30
    while await worker.ready():
        assert asyncio.get_running_loop().time() < deadline, "still ready while stuck"
        await asyncio.sleep(0.2)
    await _until(lambda: worker.metrics.ready.labels("toy")._value.get() == 0, timeout=10)
    assert worker.fatal is None  # not stopped: still retrying, and visible as stuck
