"""Timers with the toy of tests/timer_toy.py as real processes on the real broker: a worker
killed with SIGKILL between a timer's command and its handling acts once after restart; two
worker processes sharing the partitions act on each of many entities due on one tick exactly
once. Ticks are sent by the test, so the time is the test's."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from scripts.processes import Fleet, Process, free_port
from shared import topics
from shared.events import OrderCanceled
from shared.runtime.timers import Timers
from tests.e2e.fleets import fleet_for
from tests.harness import T0, Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# 100,000 in the issue; the shared test machine may ask for fewer (TIMERS_E2E_ENTITIES).
ENTITIES = int(os.environ.get("TIMERS_E2E_ENTITIES", "100000"))


@pytest.fixture
def database(namespace: str) -> str:
    return f"{namespace}_timertoy"


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    # The test publishes its own ticks; the database is ``database`` (<namespace>_timertoy).
    fleet = fleet_for(infra, namespace, tmp_path / "logs", "timertoy", ticker=False)
    yield fleet
    fleet.stop_all()


@pytest.fixture
async def db(
    mongo: AsyncMongoClient[dict[str, Any]], database: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    yield mongo[database]
    await mongo.drop_database(database)


def start_toy(fleet: Fleet, **env: str) -> Process:
    port = free_port()
    process = fleet._spawn(  # a test module, not a service: the fleet's own spawn
        "timertoy",
        [sys.executable, "-m", "tests.timer_toy"],
        {**fleet.env, "TIMERTOY_HTTP_PORT": str(port), **env},
    )
    process.http_port = port
    process.wait_ready()
    return process


async def create_topics(bus: Bus, names: list[str], partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(bus.topic(n), num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_worker_killed_between_command_and_handling_acts_once_after_restart(
    fleet: Fleet, bus: Bus, db: AsyncDatabase[dict[str, Any]]
) -> None:
    """The tick fires the timer (its command is on the topic); the worker that got the command
    is SIGKILLed before its transaction commits. A new worker handles the command again and
    acts once; later ticks do not act again."""
    hanging = start_toy(fleet, TIMERTOY_HANG_ON_ACT="1")
    due = T0 + timedelta(hours=1)
    await bus.send(OrderCanceled(order_id="k-1", reason=due.isoformat()), time=T0)

    async def scheduled() -> bool:
        return await db["timers"].count_documents({}) > 0

    # The tick is on another topic: sent at once, it can land in the same batch as the
    # schedule, and the toy fires what is due before it schedules (due timers then wait for
    # the next tick, which this test never sends).
    await wait_for(scheduled, 30, "the timer to be scheduled")
    await bus.tick(due)

    async def about_to_act() -> bool:
        return await db["about_to_act"].count_documents({}) > 0

    await wait_for(about_to_act, 60, "the worker to receive the timer command")
    hanging.kill()
    assert await db["effects"].count_documents({}) == 0  # it died before acting

    start_toy(fleet)

    async def acted() -> bool:
        return await db["effects"].count_documents({"_id": "k-1"}) == 1

    await wait_for(acted, 90, "the restarted worker to act")
    for seconds in (1, 2, 3):
        await bus.tick(due + timedelta(seconds=seconds))
    out = await bus.events(topics.COMMANDS_REJECTED, count=1, settle=3.0)
    assert {e.data.order_id for e in out} == {"k-1"}  # type: ignore[attr-defined]
    assert len({e.id for e in out}) == 1
    doc = await db["effects"].find_one({"_id": "k-1"})
    assert doc is not None and doc["count"] == 1


async def test_two_processes_act_on_each_of_many_entities_due_on_one_tick_exactly_once(
    fleet: Fleet, bus: Bus, db: AsyncDatabase[dict[str, Any]]
) -> None:
    """ENTITIES timers due at the same moment; two worker processes in one consumer group;
    the test ticks every 0.2 s until every entity acted. Each entity is acted on exactly once
    (its count in ``effects`` is 1), both processes acted, no timer is left."""
    # As a deployment would: the topics exist before the workers, so the group's first
    # assignment already spreads the timer topic's partitions over both processes.
    await create_topics(bus, [topics.CLOCK_TICKS, topics.timer_topic("timertoy")])
    workers = [start_toy(fleet, TIMERTOY_FIRE_LIMIT="5000") for _ in range(2)]
    due = T0 + timedelta(minutes=1)
    for start in range(0, ENTITIES, 10_000):
        ops = [
            Timers.schedule_op(action="act", entity=f"e-{i}", key=f"e-{i}", due_at=due, now=T0)
            for i in range(start, min(ENTITIES, start + 10_000))
        ]
        await db["timers"].bulk_write(ops, ordered=False)

    started = time.monotonic()
    deadline = started + 900
    tick = 0
    while await db["effects"].count_documents({}) < ENTITIES:
        assert time.monotonic() < deadline, "not drained in time"
        tick += 1
        await bus.tick(due + timedelta(seconds=tick))
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    # A few more ticks: nothing may act again.
    for extra in range(1, 4):
        await bus.tick(due + timedelta(seconds=tick + extra))
    await asyncio.sleep(3)

    assert await db["effects"].count_documents({"count": 1}) == ENTITIES
    assert await db["effects"].count_documents({"count": {"$ne": 1}}) == 0
    assert await db["timers"].count_documents({}) == 0
    for worker in workers:
        status, text = worker.get("/metrics")
        assert status == 200
        acted = [
            line
            for line in text.splitlines()
            if line.startswith("worker_timers_handled_total") and 'outcome="acted"' in line
        ]
        assert acted and float(acted[0].rsplit(" ", 1)[1]) > 0, f"{worker.name} never acted"
    print(f"{ENTITIES} entities acted on by two processes in {elapsed:.1f}s")
