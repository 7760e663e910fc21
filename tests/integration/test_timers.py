"""Timers on real Kafka and MongoDB, through the toy in tests/timer_toy.py: timers are
scheduled by events, fired by ticks, and acted on by the owner of the entity's key. The
oracle is the toy's ``effects`` collection (one count per act, with the tick time) and what
it announces on ``commands.rejected``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from shared import topics
from shared.envelope import event_to_bytes, new_event
from shared.events import OrderCanceled, TimerFired
from shared.runtime.app import Worker
from shared.runtime.timers import Timers, command_id
from tests.harness import T0, Bus
from tests.timer_toy import TimerToySettings, build_timer_toy

pytestmark = pytest.mark.integration


async def effects(worker: Worker) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d async for d in worker.db["effects"].find()}


async def processed(worker: Worker, event_id: str, timeout: float = 30.0) -> None:
    """Until the worker has committed its handling of ``event_id`` (its inbox record)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await worker.db["inbox"].count_documents({"_id": event_id}) == 0:
        assert asyncio.get_running_loop().time() < deadline, f"{event_id} never handled"
        await asyncio.sleep(0.05)


async def until(check: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.1)


async def send_timer_command(bus: Bus, data: TimerFired) -> str:
    """A timer command as the tick would have published it (its derived id)."""
    event_id = command_id("timertoy", data.action, data.entity, data.due_at)
    event = new_event(data, id=event_id, source="/timertoy/timers", time=data.fired_at)
    await bus.send_raw(
        topics.timer_topic("timertoy"), event_to_bytes(event), key=data.entity_key.encode()
    )
    return event_id


def gauge(worker: Worker, name: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, {"service": "timertoy"})
    assert value is not None
    return value


async def test_due_at_t_acts_once_at_first_tick_at_or_after_t_whatever_the_ticks(
    bus: Bus, run_worker: Any
) -> None:
    """An entity due at T: nothing on a tick before T; one act at the first tick >= T (at that
    tick's time); nothing more for the same tick again (same id), a new tick at T, a tick from
    the past (reordered) or one three days later."""
    worker = await run_worker(build_timer_toy, TimerToySettings)
    due = T0 + timedelta(hours=1)
    scheduled = await bus.send(OrderCanceled(order_id="o-1", reason=due.isoformat()), time=T0)
    await processed(worker, scheduled)

    await processed(worker, await bus.tick(due - timedelta(seconds=1)))
    assert await effects(worker) == {}

    first = await bus.tick(due + timedelta(seconds=2))
    announced = await bus.events(topics.COMMANDS_REJECTED, count=1)
    assert announced[0].data.order_id == "o-1"  # type: ignore[attr-defined]
    await until(lambda: _count(worker, "o-1", 1))

    again = [
        await bus.send(OrderCanceled(order_id="probe"), time=T0),  # unrelated traffic
        await bus.tick(due + timedelta(seconds=2)),  # the same time, a new tick id
        await bus.tick(due - timedelta(minutes=5)),  # reordered: from the past
        await bus.tick(due + timedelta(days=3)),  # the clock jumped days
    ]
    await bus.send_raw(  # the very same tick record again (a redelivery)
        topics.CLOCK_TICKS,
        (await bus.records(topics.CLOCK_TICKS, until=lambda r: len(r) >= 2))[1].value,
        key=b"clock",
    )
    for event_id in [first, *again]:
        await processed(worker, event_id)
    await bus.events(topics.COMMANDS_REJECTED, count=1, settle=2.0)
    out = await bus.events(topics.COMMANDS_REJECTED)
    # The redelivered firing tick re-publishes its stored command and so the act's stored
    # announcement: copies of one event under one id, never a second act.
    assert {e.id for e in out} == {announced[0].id}
    found = await effects(worker)
    assert found["o-1"]["count"] == 1
    assert [t.replace(tzinfo=due.tzinfo) for t in found["o-1"]["fired_at"]] == [
        due + timedelta(seconds=2)
    ]
    assert await worker.db["timers"].count_documents({}) == 0  # acted: the timer is gone


async def _count(worker: Worker, entity: str, expected: int) -> bool:
    doc = await worker.db["effects"].find_one({"_id": entity})
    return doc is not None and doc["count"] == expected


async def test_rescheduled_or_canceled_timer_does_not_act_on_its_old_firing(
    bus: Bus, run_worker: Any
) -> None:
    """A command for a firing that is no longer current is stale: an entity rescheduled to
    later before its command is handled acts only at the new time; a canceled one never.
    The stale command is delivered by hand (as a late redelivery would be)."""
    worker = await run_worker(build_timer_toy, TimerToySettings)
    due = T0 + timedelta(hours=1)
    later = due + timedelta(days=1)
    for order_id in ("moved", "dropped"):
        await processed(
            worker, await bus.send(OrderCanceled(order_id=order_id, reason=due.isoformat()))
        )
    await processed(
        worker, await bus.send(OrderCanceled(order_id="moved", reason=later.isoformat()))
    )
    await processed(worker, await bus.send(OrderCanceled(order_id="dropped", reason="cancel")))
    for order_id in ("moved", "dropped"):  # the old firings arrive anyway
        stale = TimerFired(
            entity_key=order_id, action="act", entity=order_id, due_at=due, fired_at=due
        )
        await processed(worker, await send_timer_command(bus, stale))
    await processed(worker, await bus.tick(due + timedelta(minutes=1)))
    assert await effects(worker) == {}
    handled = worker.metrics.registry.get_sample_value(
        "worker_timers_handled_total",
        {"service": "timertoy", "action": "act", "outcome": "stale"},
    )
    assert handled == 2

    await processed(worker, await bus.tick(later))
    await until(lambda: _count(worker, "moved", 1))
    assert set(await effects(worker)) == {"moved"}


async def test_backlog_drains_in_bounded_chunks_visible_in_metrics(
    bus: Bus, run_worker: Any
) -> None:
    """2,500 timers due at once with a limit of 1,000 per tick: the first tick fires 1,000
    (its inbox record holds 1,000 commands), the metrics show 1,500 still due and the lag
    behind the clock; two more ticks drain the rest; each entity acts once."""
    worker = await run_worker(build_timer_toy, TimerToySettings, fire_limit=1000)
    due = T0 + timedelta(minutes=1)
    ops = [
        Timers.schedule_op(action="act", entity=f"e-{i}", key=f"e-{i}", due_at=due, now=T0)
        for i in range(2500)
    ]
    await worker.db["timers"].bulk_write(ops, ordered=False)

    now = due + timedelta(minutes=10)
    first = await bus.tick(now)
    await processed(worker, first)
    record = await worker.db["inbox"].find_one({"_id": first})
    assert record is not None
    assert len(record["outputs"]) == 1000
    assert gauge(worker, "worker_timers_due") == 1500
    assert gauge(worker, "worker_timers_lag_seconds") == 600.0

    await processed(worker, await bus.tick(now + timedelta(seconds=1)))
    await processed(worker, await bus.tick(now + timedelta(seconds=2)))
    assert gauge(worker, "worker_timers_due") == 0
    assert gauge(worker, "worker_timers_lag_seconds") == 0

    async def all_acted() -> bool:
        acted: int = await worker.db["effects"].count_documents({"count": 1})
        return acted == 2500

    await until(all_acted)
    await processed(worker, await bus.tick(now + timedelta(seconds=3)))
    assert await worker.db["effects"].count_documents({"count": {"$ne": 1}}) == 0
    fired = worker.metrics.registry.get_sample_value(
        "worker_timers_fired_total", {"service": "timertoy", "action": "act"}
    )
    assert fired == 2500


def test_command_id_derives_from_entity_action_and_due_time() -> None:
    """The same firing is the same command; any other entity, action or due time is not."""
    base = command_id("s", "act", "e", T0)
    assert base == command_id("s", "act", "e", T0)
    assert len({base, command_id("s", "act", "f", T0), command_id("s", "other", "e", T0)}) == 3
    assert base != command_id("s", "act", "e", T0 + timedelta(milliseconds=1))
