"""What happens when events share a batch, on a real MongoDB: the engine is driven directly
with hand-made batches of records (a real broker cannot be told which records to put in one
batch), and its outputs, the ones a worker would publish, are read back through the contract.

- A payment in full in the same batch as its invoice's fired step: no notice, whichever comes
  first in the batch; without the payment the same batch sends the notice.
- A payment in full in the same batch as the tick that fires the step: the command the tick
  publishes finds its timer removed, so no notice.
- The same records redelivered (a crash before the offsets were committed): the stored
  outputs come back with the same ids, nothing is decided twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.dunning.domain import notice_id_for
from services.dunning.handlers import DunningService
from shared import topics
from shared.envelope import event_key, event_to_bytes, new_event, parse_event
from shared.events import ClockTick, DunningNotice, EventData, TimerFired
from shared.runtime.engine import DeadLetter, Engine, Outbound, RawRecord
from shared.runtime.metrics import WorkerMetrics
from tests.dunning_kit import berlin, canceled, issued, paid
from tests.infra import Infra

pytestmark = pytest.mark.integration

DUE = date(2027, 1, 10)


class Collecting:
    """A publisher that keeps what the engine asks it to publish."""

    def __init__(self) -> None:
        self.published: list[Outbound] = []

    async def publish(self, messages: Sequence[Outbound]) -> None:
        self.published.extend(messages)

    async def dead_letter(self, letters: Sequence[DeadLetter], consumer_group: str) -> None:
        raise AssertionError(f"nothing may be dead-lettered: {letters}")


_offsets = iter(range(1_000_000))


def record(data: EventData, topic: str | None = None) -> RawRecord:
    when = data.now if isinstance(data, ClockTick) else berlin(date(2026, 12, 1))
    event = new_event(data, id=str(uuid.uuid4()), source="/tests", time=when)
    return RawRecord(
        topic or data.TOPIC, 0, next(_offsets), event_key(event), event_to_bytes(event)
    )


def as_record(out: Outbound) -> RawRecord:
    return RawRecord(out.topic, 0, next(_offsets), out.key, out.value)


@pytest.fixture
async def engine(infra: Infra, mongo: AsyncMongoClient[dict[str, Any]], namespace: str) -> Any:
    db = mongo[f"{namespace}_dunning"]
    metrics = WorkerMetrics()
    service = DunningService(metrics.registry)
    engine = Engine(service, db, Collecting(), metrics)
    await engine.setup()
    yield engine
    await mongo.drop_database(db.name)


async def stored(engine: Engine, records: list[RawRecord]) -> list[Outbound]:
    outputs = await engine.store_batch(records)
    await engine.publish(outputs)
    return outputs


async def fired_step(engine: Engine, order_id: str) -> RawRecord:
    """Issue an invoice due DUE and tick day 1: the tick publishes the step's command."""
    await stored(engine, [record(issued(order_id, DUE))])
    out = await stored(engine, [record(ClockTick(now=berlin(date(2027, 1, 11))))])
    commands = [o for o in out if o.topic == topics.timer_topic("dunning")]
    assert len(commands) == 1
    return as_record(commands[0])


def notices(outputs: list[Outbound]) -> list[tuple[str, DunningNotice]]:
    found = []
    for out in outputs:
        if out.topic == topics.DUNNING_NOTICES:
            event = parse_event(out.topic, out.value)
            assert isinstance(event.data, DunningNotice)
            found.append((event.id, event.data))
    return found


async def test_a_fired_step_alone_sends_the_notice_and_a_redelivery_sends_the_same_one(
    engine: Engine,
) -> None:
    command = await fired_step(engine, "o-alone")
    first = await stored(engine, [command])
    assert [(i, n.level, n.days_overdue) for i, n in notices(first)] == [
        (notice_id_for("o-alone", "INV-o-alone", 1), 1, 1)
    ]
    again = await stored(engine, [command])  # redelivered: replayed, not decided again
    assert [o.value for o in again] == [o.value for o in first]
    assert await engine.db["notices"].count_documents({}) == 1


@pytest.mark.parametrize("payment_first", [True, False])
async def test_a_payment_in_the_batch_of_the_fired_step_wins(
    engine: Engine, payment_first: bool
) -> None:
    command = await fired_step(engine, "o-race")
    payment = record(paid("o-race", "1190.00", "tx-race"))
    batch = [payment, command] if payment_first else [command, payment]
    assert notices(await stored(engine, batch)) == []
    assert await engine.db["notices"].count_documents({}) == 0
    assert await engine.db["timers"].count_documents({}) == 0  # nothing more will go out


async def test_a_payment_in_the_batch_of_the_tick_that_fires_the_step_wins(
    engine: Engine,
) -> None:
    await stored(engine, [record(issued("o-tick", DUE))])
    tick = record(ClockTick(now=berlin(date(2027, 1, 11))))
    out = await stored(engine, [tick, record(paid("o-tick", "1190.00", "tx-tick"))])
    commands = [as_record(o) for o in out if o.topic == topics.timer_topic("dunning")]
    assert len(commands) == 1  # the tick fired the step before the payment removed it
    assert isinstance(parse_event(commands[0].topic, commands[0].value or b"").data, TimerFired)
    assert notices(await stored(engine, commands)) == []  # its command is stale
    assert await engine.db["notices"].count_documents({}) == 0


async def test_a_state_change_that_ends_nothing_is_not_parked_for_an_unknown_invoice(
    engine: Engine,
) -> None:
    """Shipping publishes new and paid_out with every capture, on another topic than the
    invoice itself: for an invoice not seen yet they are dropped (they change nothing), while
    a cancellation waits (parked) for its invoice."""
    ended, passing = canceled("o-unknown"), canceled("o-unknown")
    passing = passing.model_copy(update={"to": "paid_out"})
    await stored(engine, [record(passing)])
    assert await engine.db["parked"].count_documents({}) == 0
    await stored(engine, [record(ended)])
    assert await engine.db["parked"].count_documents({}) == 1
