"""A toy service on the runtime's timers, for tests: in-process or as a process
(``python -m tests.timer_toy``, settings prefixed ``TIMERTOY_``).

- ``orders.canceled`` with ``reason`` an ISO time schedules the timer ``act`` for the order at
  that time (``reason="cancel"`` cancels it); such timers announce their act on
  ``commands.rejected`` (reason ``acted``);
- on each tick, the worker that owns the tick fires what is due;
- on a fired timer, the owner of the order claims it and counts one act in ``effects``
  (with the tick time it fired at). ``TIMERTOY_HANG_ON_ACT=1`` makes it record that it is
  about to act and then hang, so a test can kill it right there.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from pydantic_settings import SettingsConfigDict
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from shared import topics
from shared.events import OrderCanceled, TimerFired
from shared.runtime.app import Worker
from shared.runtime.engine import Batch
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.run import run_worker
from shared.runtime.settings import WorkerSettings
from shared.runtime.timers import Timers

NAME = "timertoy"


class TimerToySettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="TIMERTOY_", extra="ignore", frozen=True)

    mongodb_database: str = "timertoy"
    http_port: int = 8090
    hang_on_act: bool = False
    fire_limit: int = 1000


class TimerToyService:
    name = NAME
    input_topics: tuple[str, ...] = (
        topics.ORDERS_CANCELED,
        topics.CLOCK_TICKS,
        topics.timer_topic(NAME),
    )

    def __init__(self, metrics: WorkerMetrics, settings: TimerToySettings) -> None:
        self.timers = Timers(NAME, metrics.registry, fire_limit=settings.fire_limit)
        self.hang_on_act = settings.hang_on_act
        self.db: AsyncDatabase[dict[str, Any]] | None = None

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db
        await self.timers.setup(db)

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None
        await self.timers.fire_due_on_ticks(batch)
        fired = [i for i in batch.items if isinstance(i.data, TimerFired)]
        if fired and self.hang_on_act:
            # Outside the transaction on purpose: the test must see it before the kill.
            await self.db["about_to_act"].insert_one({"at": datetime.now(UTC)})
            await asyncio.sleep(3600)
        current = {id(i) for i in await self.timers.claim_all(batch, fired)}
        acts: list[UpdateOne] = []
        for item in batch.items:
            data = item.data
            if isinstance(data, OrderCanceled):
                if data.reason == "cancel":
                    await self.timers.cancel(batch.session, "act", data.order_id)
                elif data.reason:
                    await self.timers.schedule(
                        batch.session,
                        action="act",
                        entity=data.order_id,
                        key=data.order_id,
                        due_at=datetime.fromisoformat(data.reason),
                        now=item.now,
                        payload={"announce": True},
                    )
            elif isinstance(data, TimerFired) and id(item) in current:
                acts.append(
                    UpdateOne(
                        {"_id": data.entity},
                        {"$inc": {"count": 1}, "$push": {"fired_at": data.fired_at}},
                        upsert=True,
                    )
                )
                if data.payload.get("announce"):
                    batch.reject(item, data.entity, "acted")
        if acts:
            await self.db["effects"].bulk_write(acts, ordered=False, session=batch.session)


def build_timer_toy(settings: TimerToySettings | None = None) -> Worker:
    settings = settings or TimerToySettings()
    metrics = WorkerMetrics()
    return Worker(TimerToyService(metrics, settings), settings, metrics)


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    run_worker(build_timer_toy())
