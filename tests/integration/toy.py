"""A toy service for the runtime's tests: one rule per behaviour, chosen by an
``orders.canceled`` event's ``reason``. Every effect is counted in MongoDB inside the batch's
transaction, so a count is what was committed, never what was merely attempted.

- ``boom``: the handler raises (a poison event);
- ``big``: answered with a rejection whose reason repeats the order id three times;
- ``park``: parked until a tick past its deadline, then rejected ``expired``;
- ``park-once``: parked; its first retry resolves it (rejected ``resolved``);
- ``park-boom``: parked; every retry raises;
- ``conflict``: always a ``ConcurrencyConflict`` (a transient failure, retried for ever);
- anything else: answered with one ``commands.rejected`` (reason ``echo``).

A tick raises while the ``tick_raises`` flag document exists.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared import topics
from shared.events import ClockTick, OrderCanceled
from shared.runtime.app import Worker
from shared.runtime.engine import Batch
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.settings import WorkerSettings
from shared.runtime.transient import ConcurrencyConflict


class ToyService:
    name = "toy"
    input_topics: tuple[str, ...] = (topics.ORDERS_CANCELED, topics.CLOCK_TICKS)

    def __init__(self) -> None:
        self.db: AsyncDatabase[dict[str, Any]] | None = None
        self.tick_attempts = 0

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db

    async def _count(self, batch: Batch, key: str) -> None:
        assert self.db is not None
        await self.db["effects"].update_one(
            {"_id": key}, {"$inc": {"count": 1}}, upsert=True, session=batch.session
        )

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None
        for item in batch.items:
            data = item.data
            if isinstance(data, ClockTick):
                self.tick_attempts += 1
                if await self.db["flags"].find_one({"_id": "tick_raises"}, session=batch.session):
                    raise RuntimeError("the tick's own work fails")
                continue
            if not isinstance(data, OrderCanceled):
                continue
            reason = data.reason
            if item.is_retry:
                await self._count(batch, f"retry:{data.order_id}")
            if reason == "boom":
                raise RuntimeError("poison: this event always fails")
            if reason == "conflict":
                raise ConcurrencyConflict("always changed since read")
            if reason == "park-boom" and item.is_retry:
                raise RuntimeError("poison on retry")
            if reason in ("park", "park-boom") and not item.park_expired:
                batch.park(item, "waiting for something")
                continue
            if reason == "park-once" and not item.is_retry:
                batch.park(item, "waiting once")
                continue
            await self._count(batch, data.order_id)
            if reason == "big":
                batch.reject(item, data.order_id, data.order_id * 3)
            elif reason == "park-once":
                batch.reject(item, data.order_id, "resolved")
            else:
                batch.reject(item, data.order_id, "expired" if item.park_expired else "echo")


def build_toy(settings: WorkerSettings) -> Worker:
    return Worker(ToyService(), settings, WorkerMetrics())


async def effects(worker: Worker) -> dict[str, int]:
    return {d["_id"]: d["count"] async for d in worker.db["effects"].find()}
