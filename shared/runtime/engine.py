"""The batch engine every service runs on.

A consumed batch of Kafka records becomes, in order:

1. decoding: each record is parsed against the contract; what fails goes to ``<topic>.dlq``;
2. one MongoDB transaction: the inbox is asked which event ids were already processed, the
   service handles the rest (load, decide, store), and an inbox record per event is written
   holding the events it caused. State change and inbox commit together or not at all
   (``store_batch``);
3. publishing: the outputs of this batch, plus the stored outputs of any redelivered event
   (a crash may have hit between commit and publish), are published and awaited
   (``publish``; the worker overlaps it with storing the next batch);
4. only then does the caller commit the Kafka offsets.

So an event redelivered by Kafka has no second effect, and an effect never goes unpublished.
Transient failures (MongoDB or Kafka unreachable, write conflicts with another worker) are
retried with backoff and never skipped. A record that makes the service raise anything else
is isolated by re-running the batch one event at a time and dead-lettered alone.

Events that refer to something not seen yet (a merchant not yet configured, an order whose
decision is still in flight on another partition) can be *parked* by the service. Parked
events are retried on every ``clock.tick``; once past their deadline the service is told so
and rejects them with a reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from shared.envelope import CloudEvent, ContractError, encode_wire, parse_event
from shared.events import ClockTick, CommandRejected, EventData
from shared.ids import uuid5_str
from shared.runtime.logging import get_logger
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.transient import backoff_seconds, is_transient

# Output event ids are uuid5 of the cause, so a re-run of the same decision names its
# outputs identically.
_OUTPUT_NAMESPACE = uuid.UUID("6f1c1d0e-2b7a-4c53-9a43-3f0f2f6d1a10")


def output_event_id(service: str, cause_id: str, n: int) -> str:
    return uuid5_str(_OUTPUT_NAMESPACE, f"{service}/{cause_id}/{n}")


_PARKED_RETRIES_PER_TICK = 1000

log = get_logger("worker")


@dataclass(frozen=True)
class RawRecord:
    """A consumed Kafka record, kept byte for byte for the dead-letter topic."""

    topic: str  # the physical topic name, prefix included
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Inbound:
    """One event for the service to handle, with the time the handling happens at."""

    event: CloudEvent[EventData]
    topic: str  # the contract's topic name
    record: RawRecord
    now: datetime
    inbox_id: str
    trigger_id: str
    parked_since: datetime | None = None
    park_expired: bool = False
    # The event's data, looked up once: handlers read it several times per event.
    data: EventData = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", self.event.data)

    @property
    def is_retry(self) -> bool:
        return self.parked_since is not None


@dataclass(frozen=True)
class Outbound:
    topic: str  # the contract's topic name
    key: bytes
    value: bytes
    event_type: str
    inbox_id: str


@dataclass(frozen=True)
class DeadLetter:
    record: RawRecord
    kind: str  # json | envelope | unknown_type | schema | processing
    error: str


@dataclass
class Batch:
    """What a service's ``handle`` receives: the events, the open transaction, and the two
    effects it may ask for besides its own writes: emit an event, park an event."""

    service: str
    session: AsyncClientSession
    items: list[Inbound]
    outputs: list[Outbound] = field(default_factory=list)
    parked: dict[str, tuple[Inbound, str]] = field(default_factory=dict)
    # Run once the transaction has committed: a retried transaction must not count twice.
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    _emitted_per_cause: dict[str, int] = field(default_factory=dict)

    def emit(self, cause: Inbound, data: EventData) -> str:
        """Queue an output caused by ``cause``; returns its event id."""
        return self.emit_wire(
            cause,
            topic=data.TOPIC,
            event_type=data.EVENT_TYPE,
            key=data.key(),
            data_json=data.model_dump_json(by_alias=True),
        )

    def emit_wire(
        self, cause: Inbound, *, topic: str, event_type: str, key: str, data_json: str
    ) -> str:
        """``emit`` for data already encoded as the contract's JSON (hot paths only)."""
        n = self._emitted_per_cause.get(cause.event.id, 0)
        self._emitted_per_cause[cause.event.id] = n + 1
        event_id = output_event_id(self.service, cause.event.id, n)
        value = encode_wire(
            event_type=event_type,
            data_json=data_json,
            id=event_id,
            source=f"/{self.service}",
            time=cause.now,
            subject=key,
        )
        self.outputs.append(
            Outbound(
                topic=topic,
                key=key.encode(),
                value=value,
                event_type=event_type,
                inbox_id=cause.inbox_id,
            )
        )
        return event_id

    def reject(self, cause: Inbound, order_id: str, reason: str) -> str:
        """Refuse ``cause``: a ``commands.rejected`` naming it and the reason."""
        return self.emit(
            cause,
            CommandRejected(
                command_id=cause.event.id,
                command_type=cause.event.type,
                order_id=order_id,
                reason=reason,
            ),
        )

    def park(self, item: Inbound, reason: str) -> None:
        self.parked[item.event.id] = (item, reason)


class Service(Protocol):
    name: str
    input_topics: tuple[str, ...]

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        """Create the service's collections and indexes (idempotent)."""

    async def handle(self, batch: Batch) -> None:
        """Load, decide, store within ``batch.session``; emit and park through ``batch``."""


class Publisher(Protocol):
    async def publish(self, messages: Sequence[Outbound]) -> None:
        """Publish and wait until the broker has every message."""

    async def dead_letter(self, letters: Sequence[DeadLetter], consumer_group: str) -> None:
        """Publish the original records to their dead-letter topics with error headers."""


@dataclass(frozen=True)
class _Decoded:
    event: CloudEvent[EventData]
    topic: str
    record: RawRecord


class Engine:
    def __init__(
        self,
        service: Service,
        db: AsyncDatabase[dict[str, Any]],
        publisher: Publisher,
        metrics: WorkerMetrics,
        *,
        topic_prefix: str = "",
        inbox_ttl: timedelta = timedelta(days=14),
        park_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self.service = service
        self.db = db
        self.publisher = publisher
        self.metrics = metrics
        self.topic_prefix = topic_prefix
        self.inbox_ttl = inbox_ttl
        self.park_ttl = park_ttl
        self.inbox = db["inbox"]
        self.parked = db["parked"]
        self.stopping = False

    async def setup(self) -> None:
        # Only a parked event's retry has a trigger other than itself (the tick that retried
        # it); every other inbox record leaves the field out, and the sparse index skips it.
        await self.inbox.create_index([("trigger", ASCENDING)], sparse=True, name="trigger_sparse")
        await self.inbox.create_index("expire_at", expireAfterSeconds=0)
        await self.parked.create_index([("parked_since", ASCENDING)])
        await self.service.setup(self.db)

    def logical_topic(self, physical: str) -> str:
        return physical.removeprefix(self.topic_prefix)

    # -- the batch -------------------------------------------------------------------------

    async def store_batch(self, records: Sequence[RawRecord]) -> list[Outbound]:
        """Decode, dead-letter what is invalid, and commit the batch's effects in MongoDB.
        Returns the outputs still to publish: the caller must publish them before it
        commits the batch's offsets."""
        started = time.perf_counter()
        decoded: list[_Decoded] = []
        dead: list[DeadLetter] = []
        for record in records:
            topic = self.logical_topic(record.topic)
            try:
                event = parse_event(topic, record.value if record.value is not None else b"")
            except ContractError as exc:
                dead.append(DeadLetter(record, exc.kind, exc.message))
                continue
            decoded.append(_Decoded(event, topic, record))

        outputs, poisoned = await self._store_isolating_poison(decoded)
        dead.extend(poisoned)
        if dead:
            await self._retry_forever("publish", self._dead_letter, dead)
        self.metrics.batch_size.labels(self.service.name).observe(len(records))
        self.metrics.batch_duration.labels(self.service.name).observe(time.perf_counter() - started)
        return outputs

    async def publish(self, outputs: Sequence[Outbound]) -> None:
        if outputs:
            await self._retry_forever("publish", self.publisher.publish, outputs)

    async def _dead_letter(self, dead: Sequence[DeadLetter]) -> None:
        await self.publisher.dead_letter(dead, self.service.name)
        for letter in dead:
            topic = self.logical_topic(letter.record.topic)
            self.metrics.dead_letters.labels(self.service.name, topic, letter.kind).inc()
            self.metrics.events.labels(self.service.name, topic, "dead_lettered").inc()
            log.warning(
                "dead_lettered",
                topic=topic,
                partition=letter.record.partition,
                offset=letter.record.offset,
                kind=letter.kind,
                error=letter.error,
            )

    async def _retry_forever(self, stage: str, func: Any, *args: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await func(*args)
            except Exception as exc:
                if not is_transient(exc) or self.stopping:
                    raise
                self.metrics.transient_errors.labels(self.service.name, stage).inc()
                delay = backoff_seconds(attempt)
                log.warning(
                    "transient_failure_retrying",
                    stage=stage,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(delay)
                attempt += 1

    async def _store_isolating_poison(
        self, decoded: list[_Decoded]
    ) -> tuple[list[Outbound], list[DeadLetter]]:
        if not decoded:
            return [], []
        try:
            return await self._retry_forever("store", self._transact, decoded, None), []
        except Exception as exc:  # a bug or a poison event: find which one
            if is_transient(exc):
                raise
            log.error("batch_failed_isolating", error=f"{type(exc).__name__}: {exc}")
        outputs: list[Outbound] = []
        dead: list[DeadLetter] = []
        for one in decoded:
            try:
                outputs += await self._retry_forever("store", self._transact, [one], None)
            except Exception as exc:
                if is_transient(exc):
                    raise
                if not isinstance(one.event.data, ClockTick):
                    dead.append(DeadLetter(one.record, "processing", _describe(exc)))
                    continue
                # The tick itself is harmless; one of the parked events it retried is not.
                outputs += await self._isolate_parked(one)
        return outputs, dead

    async def _isolate_parked(self, tick: _Decoded) -> list[Outbound]:
        outputs: list[Outbound] = await self._retry_forever("store", self._transact, [tick], [])
        async for doc in self.parked.find({}, {"_id": 1}):
            try:
                outputs += await self._retry_forever("store", self._transact, [tick], [doc["_id"]])
            except Exception as exc:
                if is_transient(exc):
                    raise
                record = await self.parked.find_one_and_delete({"_id": doc["_id"]})
                if record is not None:
                    await self._retry_forever(
                        "publish",
                        self._dead_letter,
                        [DeadLetter(_record_of(record), "processing", _describe(exc))],
                    )
        return outputs

    async def _transact(
        self, decoded: list[_Decoded], parked_only: list[str] | None
    ) -> list[Outbound]:
        """One MongoDB transaction for the whole batch. ``parked_only``: which parked events a
        tick retries (None: all that are due; []: none)."""
        async with self.db.client.start_session() as session, await session.start_transaction():
            ids = list(dict.fromkeys(d.event.id for d in decoded))
            seen_docs = await self.inbox.find(
                {"$or": [{"_id": {"$in": ids}}, {"trigger": {"$in": ids}}]},
                {"outputs": 1},
                session=session,
            ).to_list()
            seen = {doc["_id"] for doc in seen_docs}
            replay = [_outbound_of(o, doc["_id"]) for doc in seen_docs for o in doc["outputs"]]

            items: list[Inbound] = []
            taken: set[str] = set()
            duplicate_topics: list[str] = []
            for d in decoded:
                if d.event.id in seen or d.event.id in taken:
                    duplicate_topics.append(d.topic)
                    continue
                taken.add(d.event.id)
                item = Inbound(
                    event=d.event,
                    topic=d.topic,
                    record=d.record,
                    now=_now_of(d.event),
                    inbox_id=d.event.id,
                    trigger_id=d.event.id,
                )
                items.append(item)
                if isinstance(d.event.data, ClockTick) and parked_only != []:
                    items += await self._due_parked(session, item, parked_only)

            batch = Batch(self.service.name, session, items)
            if items:
                await self.service.handle(batch)
                await self._store_effects(batch)
        for callback in batch.after_commit:
            callback()
        # The callbacks close over the batch: drop them, or the batch (every event, model and
        # output it holds) lives on in a reference cycle until the cyclic collector runs.
        batch.after_commit.clear()
        for topic in duplicate_topics:
            self.metrics.events.labels(self.service.name, topic, "duplicate").inc()
        if duplicate_topics:
            log.info("duplicates_replayed", count=len(duplicate_topics), outputs=len(replay))
        return replay + batch.outputs

    async def _due_parked(
        self, session: AsyncClientSession, tick: Inbound, only: list[str] | None
    ) -> list[Inbound]:
        query: dict[str, Any] = {} if only is None else {"_id": {"$in": only}}
        docs = (
            await self.parked.find(query, session=session)
            .sort("parked_since", ASCENDING)
            .limit(_PARKED_RETRIES_PER_TICK)
            .to_list()
        )
        self.metrics.parked.labels(self.service.name).set(len(docs))
        retries: list[Inbound] = []
        for doc in docs:
            record = _record_of(doc)
            topic = self.logical_topic(record.topic)
            event = parse_event(topic, record.value or b"")
            retries.append(
                Inbound(
                    event=event,
                    topic=topic,
                    record=record,
                    now=tick.now,
                    inbox_id=f"{event.id}@{tick.event.id}",
                    trigger_id=tick.event.id,
                    parked_since=_aware(doc["parked_since"]),
                    park_expired=tick.now >= _aware(doc["deadline"]),
                )
            )
        return retries

    async def _store_effects(self, batch: Batch) -> None:
        # Wall-clock time on purpose: MongoDB's TTL monitor compares with its own clock.
        expire_at = datetime.now(UTC) + self.inbox_ttl
        outputs_by_inbox: dict[str, list[dict[str, Any]]] = {}
        for out in batch.outputs:
            outputs_by_inbox.setdefault(out.inbox_id, []).append(
                {"topic": out.topic, "key": out.key, "value": out.value, "type": out.event_type}
            )
        await self.inbox.insert_many(
            [
                {
                    "_id": item.inbox_id,
                    "outputs": outputs_by_inbox.get(item.inbox_id, []),
                    "expire_at": expire_at,
                }
                | ({"trigger": item.trigger_id} if item.trigger_id != item.inbox_id else {})
                for item in batch.items
            ],
            ordered=False,
            session=batch.session,
        )
        resolved = [
            i.event.id for i in batch.items if i.is_retry and i.event.id not in batch.parked
        ]
        if resolved:
            await self.parked.delete_many({"_id": {"$in": resolved}}, session=batch.session)
        fresh_parks = [
            {
                "_id": item.event.id,
                "topic": item.record.topic,
                "partition": item.record.partition,
                "offset": item.record.offset,
                "key": item.record.key,
                "value": item.record.value,
                "headers": [[k, v] for k, v in item.record.headers],
                "reason": reason,
                "parked_since": item.now,
                "deadline": item.now + self.park_ttl,
            }
            for item, reason in batch.parked.values()
            if not item.is_retry
        ]
        if fresh_parks:
            await self.parked.insert_many(fresh_parks, ordered=False, session=batch.session)

        def count() -> None:
            for item in batch.items:
                if not item.is_retry:
                    outcome = "parked" if item.event.id in batch.parked else "processed"
                    self.metrics.events.labels(self.service.name, item.topic, outcome).inc()

        batch.after_commit.append(count)


def _now_of(event: CloudEvent[EventData]) -> datetime:
    if isinstance(event.data, ClockTick):
        return event.data.now
    return event.time


def _aware(value: datetime) -> datetime:
    # MongoDB stores UTC; PyMongo returns naive datetimes unless the client is tz_aware.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _outbound_of(doc: dict[str, Any], inbox_id: str) -> Outbound:
    return Outbound(
        topic=doc["topic"],
        key=bytes(doc["key"]),
        value=bytes(doc["value"]),
        event_type=doc["type"],
        inbox_id=inbox_id,
    )


def _record_of(doc: dict[str, Any]) -> RawRecord:
    return RawRecord(
        topic=doc["topic"],
        partition=doc["partition"],
        offset=doc["offset"],
        key=None if doc.get("key") is None else bytes(doc["key"]),
        value=None if doc.get("value") is None else bytes(doc["value"]),
        headers=tuple((k, bytes(v)) for k, v in doc.get("headers", [])),
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


__all__ = [
    "Batch",
    "DeadLetter",
    "Engine",
    "Inbound",
    "Outbound",
    "Publisher",
    "RawRecord",
    "Service",
]
