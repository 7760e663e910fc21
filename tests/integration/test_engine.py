"""The worker runtime on real Kafka and MongoDB, through a toy service with one rule per
behaviour: ``reason="park"`` parks until a tick past the deadline, ``reason="boom"`` raises,
anything else is answered with one ``commands.rejected`` and counted in MongoDB."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pymongo.asynchronous.database import AsyncDatabase

from shared import topics
from shared.events import OrderCanceled
from shared.runtime.app import Worker
from shared.runtime.engine import Batch
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.settings import WorkerSettings
from tests.harness import T0, Bus, headers_of

pytestmark = pytest.mark.integration


class EchoService:
    name = "echo"
    input_topics: tuple[str, ...] = (topics.ORDERS_CANCELED, topics.CLOCK_TICKS)

    def __init__(self) -> None:
        self.db: AsyncDatabase[dict[str, Any]] | None = None
        self.handled_batches = 0

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None
        self.handled_batches += 1
        for item in batch.items:
            data = item.data
            if not isinstance(data, OrderCanceled):
                continue
            if data.reason == "boom":
                raise RuntimeError("poison: this event always fails")
            if data.reason == "park" and not item.park_expired:
                batch.park(item, "waiting for something")
                continue
            await self.db["effects"].update_one(
                {"_id": data.order_id}, {"$inc": {"count": 1}}, upsert=True, session=batch.session
            )
            batch.reject(item, data.order_id, "expired" if item.park_expired else "echo")


def build_echo(settings: WorkerSettings) -> Worker:
    return Worker(EchoService(), settings, WorkerMetrics())


async def effects(worker: Worker) -> dict[str, int]:
    return {d["_id"]: d["count"] async for d in worker.db["effects"].find()}


async def _wait_for(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 30
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await probe()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{got!r} != {expected!r}"
        await asyncio.sleep(0.1)


async def test_redelivered_event_has_one_effect_and_republishes_same_output(
    bus: Bus, run_worker: Any
) -> None:
    worker = await run_worker(build_echo, WorkerSettings)
    await bus.send(OrderCanceled(order_id="o-1"), event_id="ev-1")
    first = await bus.events(topics.COMMANDS_REJECTED, count=1)

    # Kafka redelivers after a crash between commit and publish: same event id again.
    await bus.send(OrderCanceled(order_id="o-1"), event_id="ev-1")
    await bus.send(OrderCanceled(order_id="o-2"), event_id="ev-2")
    out = await bus.events(topics.COMMANDS_REJECTED, count=3)

    assert await effects(worker) == {"o-1": 1, "o-2": 1}
    o1 = [e for e in out if e.data.key() == "o-1"]
    assert len(o1) == 2
    assert o1[0].id == o1[1].id == first[0].id  # the replay is the same event, not a new one
    assert (
        worker.metrics.events.labels("echo", topics.ORDERS_CANCELED, "duplicate")._value.get() == 1
    )


async def test_invalid_records_are_dead_lettered_with_headers_and_worker_goes_on(
    bus: Bus, run_worker: Any
) -> None:
    worker = await run_worker(build_echo, WorkerSettings)
    bad = {
        "json": b"{not json",
        "envelope": b'{"specversion":"0.3","id":"x","source":"/t","type":"order.canceled.v1",'
        b'"time":"2026-11-20T09:00:00Z","data":{"order_id":"o"}}',
        "unknown_type": b'{"specversion":"1.0","id":"x","source":"/t","type":"order.cancelled.v9",'
        b'"time":"2026-11-20T09:00:00Z","data":{"order_id":"o"}}',
        "schema": b'{"specversion":"1.0","id":"x","source":"/t","type":"order.canceled.v1",'
        b'"time":"2026-11-20T09:00:00Z","data":{}}',
    }
    for kind, value in bad.items():
        await bus.send_raw(
            topics.ORDERS_CANCELED, value, key=kind.encode(), headers=[("origin", b"test")]
        )
    await bus.send(OrderCanceled(order_id="after-the-bad-ones"))

    await bus.events(topics.COMMANDS_REJECTED, count=1)
    dead = await bus.records(topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 4)
    by_key = {r.key.decode(): r for r in dead}
    assert set(by_key) == set(bad)
    for kind, record in by_key.items():
        headers = headers_of(record)
        assert record.value == bad[kind]  # original bytes
        assert headers["origin"] == "test"  # original headers kept
        assert headers["dlq-error-kind"] == kind
        assert headers["dlq-source-topic"] == bus.topic(topics.ORDERS_CANCELED)
        assert int(headers["dlq-source-offset"]) >= 0
        assert headers["dlq-source-partition"].isdigit()
        assert headers["dlq-error"]
    assert "data.order_id" in headers_of(by_key["schema"])["dlq-error"]
    assert await effects(worker) == {"after-the-bad-ones": 1}


async def test_poison_event_is_isolated_and_the_rest_of_its_batch_processed(
    bus: Bus, run_worker: Any
) -> None:
    worker = await run_worker(build_echo, WorkerSettings)
    await bus.send_many(
        [
            OrderCanceled(order_id="k", reason="fine"),
            OrderCanceled(order_id="k", reason="boom"),
            OrderCanceled(order_id="k2", reason="fine"),
        ]
    )
    await bus.events(topics.COMMANDS_REJECTED, count=2)
    dead = await bus.records(topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 1)
    assert [headers_of(r)["dlq-error-kind"] for r in dead] == ["processing"]
    assert "poison" in headers_of(dead[0])["dlq-error"]
    assert await effects(worker) == {"k": 1, "k2": 1}


async def test_parked_event_waits_for_ticks_then_expires(bus: Bus, run_worker: Any) -> None:
    """The park window counts from when the worker parked the event (its wall clock), not
    from the event's own ``time``, which here is days in the past."""
    worker = await run_worker(build_echo, WorkerSettings, park_ttl_seconds=60)
    await bus.send(OrderCanceled(order_id="p", reason="park"), time=T0)
    await _wait_for(lambda: worker.db["parked"].count_documents({}), 1)
    parked_at = datetime.now(UTC)
    await bus.tick(parked_at + timedelta(seconds=30))  # still inside the park window
    await asyncio.sleep(1.0)
    assert await effects(worker) == {}
    assert await worker.db["parked"].count_documents({}) == 1

    await bus.tick(parked_at + timedelta(seconds=61))
    out = await bus.events(topics.COMMANDS_REJECTED, count=1)
    assert out[0].data.reason == "expired"  # type: ignore[attr-defined]
    assert await effects(worker) == {"p": 1}
    assert await worker.db["parked"].count_documents({}) == 0


async def test_offsets_are_committed_once_outputs_are_acknowledged_and_resume_there(
    bus: Bus, run_worker: Any
) -> None:
    """Offsets are committed per batch, after its outputs are acknowledged (the publish of
    one batch overlaps with storing the next); a restarted worker resumes after them."""
    worker = await run_worker(build_echo, WorkerSettings)
    for i in range(30):
        await bus.send(OrderCanceled(order_id=f"o-{i}"), wait=False)
    assert bus.producer is not None
    await bus.producer.flush()
    await bus.events(topics.COMMANDS_REJECTED, count=30)

    admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap)
    await admin.start()
    try:
        topic = bus.topic(topics.ORDERS_CANCELED)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            committed = await admin.list_consumer_group_offsets(worker.group_id)
            done = sum(m.offset for tp, m in committed.items() if tp.topic == topic)
            if done == 30 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert done == 30  # every record's offset, with nothing left in flight
    finally:
        await admin.close()

    await worker.stop()
    again = await run_worker(build_echo, WorkerSettings)
    await bus.send(OrderCanceled(order_id="o-last"))
    await bus.events(topics.COMMANDS_REJECTED, count=31)
    await asyncio.sleep(0.5)
    # The second worker saw only the new record: no duplicates replayed from the inbox.
    assert (
        again.metrics.events.labels("echo", topics.ORDERS_CANCELED, "duplicate")._value.get() == 0
    )
    assert await effects(again) == {f"o-{i}": 1 for i in range(30)} | {"o-last": 1}
