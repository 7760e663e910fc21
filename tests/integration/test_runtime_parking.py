"""Parking on real Kafka and MongoDB: a parked event whose retry raises is dead-lettered
alone while the others resolve, and a batch holding several ticks retries each parked event
once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import topics
from shared.events import CommandRejected, OrderCanceled
from shared.runtime.settings import WorkerSettings
from tests.harness import Bus, headers_of
from tests.integration.toy import build_toy, effects

pytestmark = pytest.mark.integration


async def _parked_count_is(worker: Any, expected: int, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await worker.db["parked"].count_documents({})) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{got} parked, not {expected}"
        await asyncio.sleep(0.1)


async def test_a_poison_parked_event_is_dead_lettered_while_the_others_resolve(
    bus: Bus, run_worker: Any
) -> None:
    worker = await run_worker(build_toy, WorkerSettings, park_ttl_seconds=600)
    await bus.send(OrderCanceled(order_id="pb", reason="park-boom"))
    await bus.send(OrderCanceled(order_id="p1", reason="park-once"))
    await bus.send(OrderCanceled(order_id="p2", reason="park-once"))
    await _parked_count_is(worker, 3)

    await bus.tick(datetime.now(UTC))
    resolved = await bus.events(topics.COMMANDS_REJECTED, count=2, timeout=60)
    reasons = {
        e.data.order_id: e.data.reason for e in resolved if isinstance(e.data, CommandRejected)
    }
    assert reasons == {"p1": "resolved", "p2": "resolved"}
    dead = await bus.records(topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 1)
    assert len(dead) == 1
    assert headers_of(dead[0])["dlq-error-kind"] == "processing"
    assert "poison on retry" in headers_of(dead[0])["dlq-error"]
    assert b'"pb"' in dead[0].value  # the parked event's original record
    await _parked_count_is(worker, 0)
    assert await effects(worker) == {"p1": 1, "p2": 1, "retry:p1": 1, "retry:p2": 1}

    # The worker goes on: a later event and tick are handled as usual.
    await bus.send(OrderCanceled(order_id="later"))
    await bus.tick(datetime.now(UTC))
    await bus.events(topics.COMMANDS_REJECTED, count=3, timeout=60)
    assert worker.fatal is None


async def test_several_ticks_in_one_batch_retry_a_parked_event_once(
    bus: Bus, run_worker: Any
) -> None:
    """Five ticks wait in Kafka while the worker is down, so that they arrive in one batch:
    the parked event is retried once (at the latest tick), not five times; the latest tick
    is past its deadline, so it is rejected exactly once."""
    worker = await run_worker(build_toy, WorkerSettings, park_ttl_seconds=60)
    await bus.send(OrderCanceled(order_id="p", reason="park"))
    await _parked_count_is(worker, 1)
    await worker.stop()

    now = datetime.now(UTC)
    for seconds in (1, 2, 3, 4, 120):
        await bus.tick(now + timedelta(seconds=seconds))
    again = await run_worker(build_toy, WorkerSettings, park_ttl_seconds=60)
    rejected = await bus.events(topics.COMMANDS_REJECTED, count=1, timeout=60, settle=2.0)
    assert [e.data.reason for e in rejected if isinstance(e.data, CommandRejected)] == ["expired"]
    assert await effects(again) == {"p": 1, "retry:p": 1}
    await _parked_count_is(again, 0)


async def test_a_dead_lettered_parked_event_is_not_handled_so_its_replay_is_taken_again(
    bus: Bus, run_worker: Any
) -> None:
    """A parked event writes an inbox record under its id; once its retry raises and it is
    dead-lettered it was never handled. Re-sending its dead-lettered bytes (what ``dlq
    replay`` does) must be taken as a new input (parked again), not dropped as a duplicate."""
    worker = await run_worker(build_toy, WorkerSettings, park_ttl_seconds=600)
    await bus.send(OrderCanceled(order_id="pb", reason="park-boom"), event_id="ev-pb")
    await _parked_count_is(worker, 1)
    await bus.tick(datetime.now(UTC))
    dead = await bus.records(topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 1)
    await _parked_count_is(worker, 0)
    assert await worker.db["inbox"].find_one({"_id": "ev-pb"}) is None

    await bus.send_raw(topics.ORDERS_CANCELED, dead[0].value, key=dead[0].key)
    await _parked_count_is(worker, 1)
    duplicates = worker.metrics.events.labels("toy", topics.ORDERS_CANCELED, "duplicate")
    assert duplicates._value.get() == 0
