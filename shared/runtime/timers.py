"""Timers: "act on this entity at that time", in the entity's own transaction.

A service schedules a timer per (action, entity) in its ``timers`` collection, inside the
transaction of whatever decided it (``schedule``/``cancel``). On each batch holding a clock
tick, the worker that owns the tick partition reads what is due through the partial index on
``due_at`` (a bounded cursor, never a scan), marks it ``fired`` and emits one
``runtime.timer_fired.v1`` command per timer to the service's own timer topic, keyed by the
entity's Kafka key (``fire_due_on_ticks``). The command id derives from (service, action,
entity, due time), so a repeated or re-delivered command is dropped by the inbox.

The worker that owns the key then handles the command in the key's transaction like any other
event: ``claim`` deletes the timer only if it is still the same firing (same due time, still
``fired``); a command for a timer that was rescheduled or canceled since is stale and a no-op.
A backlog drains ``limit`` timers per batch of ticks, so neither a transaction nor an inbox
record ever holds more than that; the metrics show what is still due and how far behind.

Timer documents:

    {_id: "<action>:<entity>", action, entity, key, due_at, state: scheduled|fired,
     payload, scheduled_at, fired_at?}
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pymongo import ASCENDING, DeleteOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from shared.envelope import encode_wire
from shared.events import ClockTick, TimerFired, register_internal_topics
from shared.ids import uuid5_str
from shared.runtime.engine import Batch, Inbound, Outbound
from shared.topics import timer_topic

COLLECTION = "timers"
DEFAULT_FIRE_LIMIT = 1000
_COMMAND_NAMESPACE = uuid.UUID("3d0b8f7e-5f7a-4b0e-8c55-2a9d6b1e4c07")
# Only timers still waiting for their tick are in the due-time index: fired and acted ones
# never slow down the tick that looks for what is due.
_DUE = {"state": "scheduled"}


def refuse_floats(value: Any, where: str = "payload") -> None:
    """A payload travels in an event, and the contract refuses JSON floats anywhere: say so
    where it is written (in the handler), not where it is read (a dead letter later)."""
    if isinstance(value, float):
        raise TypeError(f"{where} holds the float {value!r}: use a string or integer cents")
    if isinstance(value, Mapping):
        for k, v in value.items():
            refuse_floats(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            refuse_floats(v, f"{where}[{i}]")


def timer_id(action: str, entity: str) -> str:
    return f"{action}:{entity}"


def command_id(service: str, action: str, entity: str, due_at: datetime) -> str:
    """The id of the command that fires ``action`` on ``entity`` for ``due_at``: the same
    firing always has the same id, whichever tick or worker produced it."""
    return uuid5_str(_COMMAND_NAMESPACE, f"{service}/{action}/{entity}/{due_at.isoformat()}")


@dataclass(frozen=True)
class Fired:
    """A timer the tick found due: what the command will carry."""

    action: str
    entity: str
    key: str
    due_at: datetime
    payload: Mapping[str, Any]


class TimerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.due = Gauge(
            "worker_timers_due",
            "Timers due at the last tick and not yet fired (the backlog; 0 when caught up).",
            ["service"],
            registry=registry,
        )
        self.lag = Gauge(
            "worker_timers_lag_seconds",
            "How far behind the clock the oldest timer still waiting to fire is, at the last "
            "tick (0 when every due timer has fired).",
            ["service"],
            registry=registry,
        )
        self.fired = Counter(
            "worker_timers_fired",
            "Timers fired: one command published per timer due.",
            ["service", "action"],
            registry=registry,
        )
        self.handled = Counter(
            "worker_timers_handled",
            "Timer commands handled by the entity's owner: acted, or stale (the timer was "
            "rescheduled or canceled after it fired) and ignored.",
            ["service", "action", "outcome"],
            registry=registry,
        )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Timers:
    """One service's timers. Create once per service (its metrics live in ``registry``)."""

    def __init__(
        self,
        service: str,
        registry: CollectorRegistry,
        *,
        fire_limit: int = DEFAULT_FIRE_LIMIT,
    ) -> None:
        register_internal_topics(service)
        self.service = service
        self.topic = timer_topic(service)
        self.fire_limit = fire_limit
        self.metrics = TimerMetrics(registry)
        self._db: AsyncDatabase[dict[str, Any]] | None = None

    @property
    def collection(self) -> Any:
        assert self._db is not None, "setup() runs first"
        return self._db[COLLECTION]

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db
        await db[COLLECTION].create_index(
            [("due_at", ASCENDING)], name="due_at_scheduled", partialFilterExpression=_DUE
        )

    # -- scheduling, in the caller's transaction --------------------------------------------

    @staticmethod
    def schedule_op(
        *,
        action: str,
        entity: str,
        key: str,
        due_at: datetime,
        now: datetime | None = None,
        payload: Mapping[str, Any] | None = None,
        only_if_missing: bool = False,
    ) -> UpdateOne:
        """The write that (re)schedules a timer, for a service's own bulk write. A timer that
        already fired for another due time becomes scheduled again; its command in flight
        turns stale. ``only_if_missing`` leaves an existing timer as it is (backfills)."""
        refuse_floats(payload or {})
        fields: dict[str, Any] = {
            "action": action,
            "entity": entity,
            "key": key,
            "due_at": due_at,
            "state": "scheduled",
            "payload": dict(payload or {}),
        }
        if now is not None:
            fields["scheduled_at"] = now
        if only_if_missing:
            return UpdateOne(
                {"_id": timer_id(action, entity)}, {"$setOnInsert": fields}, upsert=True
            )
        return UpdateOne(
            {"_id": timer_id(action, entity)},
            {"$set": fields, "$unset": {"fired_at": ""}},
            upsert=True,
        )

    @staticmethod
    def cancel_op(action: str, entity: str) -> DeleteOne:
        return DeleteOne({"_id": timer_id(action, entity)})

    async def schedule(
        self,
        session: AsyncClientSession,
        *,
        action: str,
        entity: str,
        key: str,
        due_at: datetime,
        now: datetime,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        await self.collection.bulk_write(
            [
                self.schedule_op(
                    action=action, entity=entity, key=key, due_at=due_at, now=now, payload=payload
                )
            ],
            session=session,
        )

    async def cancel(self, session: AsyncClientSession, action: str, entity: str) -> None:
        await self.collection.delete_one({"_id": timer_id(action, entity)}, session=session)

    # -- firing, on the tick ----------------------------------------------------------------

    async def fire_due(
        self, session: AsyncClientSession, now: datetime, limit: int | None = None
    ) -> list[Fired]:
        """Mark at most ``limit`` timers due at ``now`` as fired (earliest first) and return
        them. In the tick's transaction: two ticks at once conflict and one retries."""
        limit = self.fire_limit if limit is None else limit
        query = {**_DUE, "due_at": {"$lte": now}}
        docs = (
            await self.collection.find(query, session=session)
            .sort("due_at", ASCENDING)
            .hint("due_at_scheduled")
            .limit(limit)
            .to_list()
        )
        if docs:
            await self.collection.update_many(
                {"_id": {"$in": [d["_id"] for d in docs]}, **_DUE},
                {"$set": {"state": "fired", "fired_at": now}},
                session=session,
            )
        backlog, oldest = 0, None
        if len(docs) == limit:  # there may be more: the metrics should say how many
            backlog = await self.collection.count_documents(query, session=session)
            first = await self.collection.find_one(
                query, {"due_at": 1}, sort=[("due_at", ASCENDING)], session=session
            )
            oldest = None if first is None else _aware(first["due_at"])
        self.metrics.due.labels(self.service).set(backlog)
        lag = timedelta(0) if oldest is None else max(timedelta(0), now - oldest)
        self.metrics.lag.labels(self.service).set(lag.total_seconds())
        return [
            Fired(
                action=d["action"],
                entity=d["entity"],
                key=d["key"],
                due_at=_aware(d["due_at"]),
                payload=d.get("payload", {}),
            )
            for d in docs
        ]

    def emit(self, batch: Batch, cause: Inbound, fired: list[Fired]) -> None:
        """Queue one command per fired timer as ``cause``'s outputs, each under its derived
        id (not the cause's: the same firing must be the same command whichever tick)."""
        for f in fired:
            data = TimerFired.model_construct(
                entity_key=f.key,
                action=f.action,
                entity=f.entity,
                due_at=f.due_at,
                fired_at=cause.now,
                payload=dict(f.payload),
            )
            batch.outputs.append(
                Outbound(
                    topic=self.topic,
                    key=f.key.encode(),
                    value=encode_wire(
                        event_type=TimerFired.EVENT_TYPE,
                        data_json=data.model_dump_json(by_alias=True),
                        id=command_id(self.service, f.action, f.entity, f.due_at),
                        source=f"/{self.service}/timers",
                        time=cause.now,
                        subject=f.key,
                    ),
                    event_type=TimerFired.EVENT_TYPE,
                    inbox_id=cause.inbox_id,
                )
            )
        counts: dict[str, int] = {}
        for f in fired:
            counts[f.action] = counts.get(f.action, 0) + 1

        def count() -> None:
            for action, n in counts.items():
                self.metrics.fired.labels(self.service, action).inc(n)

        batch.after_commit.append(count)

    async def fire_due_on_ticks(self, batch: Batch) -> int:
        """For a service's ``handle``: if the batch holds clock ticks, fire one chunk for the
        latest of them (one chunk per transaction, however many ticks queued up)."""
        ticks = [i for i in batch.items if isinstance(i.data, ClockTick) and not i.is_retry]
        if not ticks:
            return 0
        latest = max(ticks, key=lambda i: i.now)
        fired = await self.fire_due(batch.session, latest.now)
        self.emit(batch, latest, fired)
        return len(fired)

    # -- acting, in the entity's transaction ------------------------------------------------

    async def claim(self, batch: Batch, item: Inbound) -> bool:
        """True when ``item`` (a ``TimerFired``) is the timer's current firing: the timer is
        removed in this transaction and the caller acts. False when it is stale (rescheduled
        or canceled since it fired): the caller does nothing."""
        return item in await self.claim_all(batch, [item])

    async def claim_all(self, batch: Batch, items: list[Inbound]) -> list[Inbound]:
        """``claim`` for many commands with two queries: the ones to act on, in order."""
        commands = [(i, i.data) for i in items if isinstance(i.data, TimerFired)]
        if not commands:
            return []
        ids = list({timer_id(d.action, d.entity) for _, d in commands})
        current = {
            doc["_id"]: _aware(doc["due_at"])
            async for doc in self.collection.find(
                {"_id": {"$in": ids}, "state": "fired"}, {"due_at": 1}, session=batch.session
            )
        }
        acted: list[Inbound] = []
        outcomes: dict[tuple[str, str], int] = {}
        for item, data in commands:
            tid = timer_id(data.action, data.entity)
            fresh = current.get(tid) == data.due_at
            if fresh:
                del current[tid]  # a second copy of the command in this batch is stale
                acted.append(item)
            key = (data.action, "acted" if fresh else "stale")
            outcomes[key] = outcomes.get(key, 0) + 1
        if acted:
            await self.collection.delete_many(
                {"_id": {"$in": [timer_id(d.action, d.entity) for d in _data(acted)]}},
                session=batch.session,
            )

        def count() -> None:
            for (action, outcome), n in outcomes.items():
                self.metrics.handled.labels(self.service, action, outcome).inc(n)

        batch.after_commit.append(count)
        return acted


def _data(items: list[Inbound]) -> list[TimerFired]:
    return [i.data for i in items if isinstance(i.data, TimerFired)]
