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
retried with backoff and never skipped. A record that makes the service raise anything else,
or whose outputs are too large to publish, is isolated by re-running the batch one event at a
time and dead-lettered alone. A record the decoder cannot take, whatever it raises, is
dead-lettered; one too large to dead-letter whole keeps its full bytes in the worker's
``dead_letter_bodies`` collection and goes to the dead-letter topic truncated, pointing there.
Whatever escapes ``store_batch`` or ``publish`` is a failure the caller must not commit past:
it stops consuming (see ``shared/runtime/app.py``) and a restart redelivers the batch.

Events that refer to something not seen yet (a merchant not yet configured, an order whose
decision is still in flight on another partition) can be *parked* by the service, with a
deadline it chooses, counted from when the worker parked the event. Parked events are retried
once per batch, at the batch's latest ``clock.tick``; once past their deadline the service is
told so and rejects them with a reason. A parked event whose retry raises is dead-lettered
alone; the tick and the other parked events go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Counter
from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.envelope import CloudEvent, ContractError, encode_wire, parse_event
from shared.events import ClockTick, CommandRejected, EventData
from shared.ids import uuid5_str
from shared.outcomes import Park, Rejection
from shared.runtime.dead_letters import DeadLetterStore, NewDeadLetter
from shared.runtime.logging import get_logger
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.transient import (
    DUPLICATE_KEY_RETRIES,
    RecordTooLarge,
    backoff_seconds,
    is_transient,
)

# Output event ids are uuid5 of the cause, so a re-run of the same decision names its
# outputs identically.
_OUTPUT_NAMESPACE = uuid.UUID("6f1c1d0e-2b7a-4c53-9a43-3f0f2f6d1a10")


def output_event_id(service: str, cause_id: str, n: int) -> str:
    return uuid5_str(_OUTPUT_NAMESPACE, f"{service}/{cause_id}/{n}")


_PARKED_RETRIES_PER_TICK = 1000
# What the broker adds around a record's key, value and headers, generously.
_RECORD_OVERHEAD_BYTES = 512
# An oversized dead letter goes out with this much of its value (the rest is in MongoDB).
_TRUNCATED_VALUE_BYTES = 64 * 1024
_TRUNCATED_KEY_BYTES = 1024

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
    kind: str  # json | envelope | unknown_type | schema | undecodable | processing
    error: str
    # Set when the record was too large to dead-letter whole: ``record`` is then a truncated
    # copy, and the full one is at ``<database>.dead_letter_bodies/<topic>/<partition>/<offset>``
    # (the collection, then the document's ``_id``).
    full_record_at: str | None = None
    original_bytes: int | None = None


class Stopping(Exception):
    """The worker was asked to stop while retrying: the batch is left unfinished."""


def record_bytes(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """The size the broker counts for one record (key, value, headers, framing)."""
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(k) + len(v) for k, v in headers)
        + _RECORD_OVERHEAD_BYTES
    )


@dataclass
class Batch:
    """What a service's ``handle`` receives: the events, the open transaction, and the two
    effects it may ask for besides its own writes: emit an event, park an event."""

    service: str
    session: AsyncClientSession
    items: list[Inbound]
    outputs: list[Outbound] = field(default_factory=list)
    parked: dict[str, tuple[Inbound, str, timedelta | None]] = field(default_factory=dict)
    # Run once the transaction has committed: a retried transaction must not count twice.
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    _emitted_per_cause: dict[str, int] = field(default_factory=dict)

    def emit(self, cause: Inbound, data: EventData, *, event_id: str | None = None) -> str:
        """Queue an output caused by ``cause``; returns its event id: ``event_id`` when the
        domain derives one of its own (a notice per invoice and level, a statement per
        restatement), else one derived from the cause and the output's position."""
        return self.emit_wire(
            cause,
            topic=data.TOPIC,
            event_type=data.EVENT_TYPE,
            key=data.key(),
            data_json=data.model_dump_json(by_alias=True),
            event_id=event_id,
        )

    def emit_wire(
        self,
        cause: Inbound,
        *,
        topic: str,
        event_type: str,
        key: str,
        data_json: str,
        event_id: str | None = None,
    ) -> str:
        """``emit`` for data already encoded as the contract's JSON (hot paths only)."""
        if event_id is None:
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

    def refuse(
        self, cause: Inbound, order_id: str, rejection: Rejection, counted_by: Counter
    ) -> str:
        """``reject`` with the domain's refusal, counted by its code in ``counted_by`` (the
        service's rejections counter) once the batch commits."""
        event_id = self.reject(cause, order_id, rejection.reason)
        code = rejection.code
        self.after_commit.append(lambda: counted_by.labels(code).inc())
        return event_id

    def park_or_refuse(
        self,
        cause: Inbound,
        order_id: str,
        park: Park | None,
        rejection: Rejection | None,
        counted_by: Counter,
    ) -> bool:
        """The domain's "not yet" or "no" for ``cause``: park it (once its wait is over, refuse
        it with the park's code and detail), or refuse it. False when it said neither."""
        if park is not None:
            if cause.park_expired:
                self.refuse(cause, order_id, Rejection(park.code, park.detail), counted_by)
            else:
                self.park(cause, park.code)
            return True
        if rejection is not None:
            self.refuse(cause, order_id, rejection, counted_by)
            return True
        return False

    def park(self, item: Inbound, reason: str, *, wait: timedelta | None = None) -> None:
        """Retry ``item`` on later ticks until ``wait`` (default: the worker's park TTL) has
        passed since the worker first parked it; then it comes back with ``park_expired``."""
        self.parked[item.event.id] = (item, reason, wait)


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
        max_record_bytes: int = 1_000_000,
        dead_letter_store: DeadLetterStore | None = None,
    ) -> None:
        self.service = service
        self.db = db
        self.publisher = publisher
        self.metrics = metrics
        self.topic_prefix = topic_prefix
        self.inbox_ttl = inbox_ttl
        self.park_ttl = park_ttl
        self.max_record_bytes = max_record_bytes
        self.inbox = db["inbox"]
        self.parked = db["parked"]
        self.dead_letter_bodies = db["dead_letter_bodies"]
        self.dead_letter_store = dead_letter_store
        self._stop = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Retry loops give up at their next failure or pause instead of waiting it out."""
        self._stop.set()

    async def setup(self) -> None:
        # Only a parked event's retry has a trigger other than itself (the tick that retried
        # it); every other inbox record leaves the field out, and the sparse index skips it.
        await self.inbox.create_index([("trigger", ASCENDING)], sparse=True, name="trigger_sparse")
        await self.inbox.create_index("expire_at", expireAfterSeconds=0)
        await self.parked.create_index([("parked_since", ASCENDING)])
        if self.dead_letter_store is not None:
            await self.dead_letter_store.setup()
        await self.service.setup(self.db)

    def logical_topic(self, physical: str) -> str:
        return physical.removeprefix(self.topic_prefix)

    # -- the batch -------------------------------------------------------------------------

    async def store_batch(self, records: Sequence[RawRecord]) -> list[Outbound]:
        """Decode, dead-letter what is invalid, and commit the batch's effects in MongoDB.
        Returns the outputs still to publish: the caller must publish them before it
        commits the batch's offsets. Whatever this raises leaves the batch unfinished."""
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
            except Exception as exc:
                # e.g. RecursionError on deeply nested JSON: still this one record's fault.
                self.metrics.permanent_errors.labels(self.service.name, "decode").inc()
                dead.append(DeadLetter(record, "undecodable", _describe(exc)))
                continue
            decoded.append(_Decoded(event, topic, record))

        outputs, poisoned = await self._store_isolating_poison(decoded)
        dead.extend(poisoned)
        if dead:
            await self._dead_letter(dead)
        self.metrics.batch_size.labels(self.service.name).observe(len(records))
        self.metrics.batch_duration.labels(self.service.name).observe(time.perf_counter() - started)
        return outputs

    async def publish(self, outputs: Sequence[Outbound]) -> None:
        if outputs:
            await self._retry("publish", self.publisher.publish, outputs)

    async def _dead_letter(self, dead: Sequence[DeadLetter]) -> None:
        if self.dead_letter_store is not None:
            # Full bytes in the ops store before the offset is committed past the record: the
            # dead-letter topic's retention can then never drop it from the pending list.
            await self._retry(
                "store",
                self.dead_letter_store.record,
                [
                    NewDeadLetter(
                        service=self.service.name,
                        topic=self.logical_topic(d.record.topic),
                        physical_topic=d.record.topic,
                        partition=d.record.partition,
                        offset=d.record.offset,
                        key=d.record.key,
                        value=d.record.value,
                        headers=d.record.headers,
                        kind=d.kind,
                        error=d.error,
                    )
                    for d in dead
                ],
            )
        letters = [await self._fit_for_broker(letter) for letter in dead]
        await self._retry("publish", self.publisher.dead_letter, letters, self.service.name)
        for letter in letters:
            topic = self.logical_topic(letter.record.topic)
            self.metrics.dead_letters.labels(self.service.name, topic, letter.kind).inc()
            self.metrics.events.labels(self.service.name, topic, "dead_lettered").inc()
            log.warning(
                "dead_lettered",
                topic=topic,
                partition=letter.record.partition,
                offset=letter.record.offset,
                kind=letter.kind,
                error=letter.error[:300],
                full_record_at=letter.full_record_at,
            )

    async def _fit_for_broker(self, letter: DeadLetter) -> DeadLetter:
        """A dead letter too large for the broker once its headers are added keeps its full
        bytes in MongoDB (idempotently, keyed by where it was read) and goes out truncated."""
        record = letter.record
        size = record_bytes(record.key, record.value, record.headers) + len(letter.error) + 512
        if size <= self.max_record_bytes:
            return letter
        record_id = f"{record.topic}/{record.partition}/{record.offset}"
        await self._retry(
            "store",
            self.dead_letter_bodies.replace_one,
            {"_id": record_id},
            {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key,
                "value": record.value,
                "headers": [[k, v] for k, v in record.headers],
                "kind": letter.kind,
                "error": letter.error,
                "stored_at": datetime.now(UTC),
            },
            True,  # upsert
        )
        headers = record.headers
        if sum(len(k) + len(v) for k, v in headers) > _TRUNCATED_VALUE_BYTES:
            headers = ()  # kept in full in MongoDB
        truncated = RawRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=None if record.key is None else record.key[:_TRUNCATED_KEY_BYTES],
            value=None if record.value is None else record.value[:_TRUNCATED_VALUE_BYTES],
            headers=headers,
        )
        return DeadLetter(
            truncated,
            letter.kind,
            letter.error[:1000],
            full_record_at=f"{self.db.name}.dead_letter_bodies/{record_id}",
            original_bytes=size,
        )

    async def _retry(self, stage: str, func: Any, *args: Any) -> Any:
        """``func(*args)`` until it succeeds or fails permanently; transient failures wait
        with backoff. Once the worker is stopping, any failure (and any pause) ends the
        loop with ``Stopping``: nothing was finished, nothing is committed."""
        attempt = 0
        duplicates = 0
        while True:
            try:
                return await func(*args)
            except Exception as exc:
                if self.stopping:
                    raise Stopping(f"{stage}: {_describe(exc)}") from exc
                if isinstance(exc, DuplicateKeyError):
                    duplicates += 1
                transient = is_transient(exc) and duplicates <= DUPLICATE_KEY_RETRIES
                if not transient:
                    self.metrics.permanent_errors.labels(self.service.name, stage).inc()
                    raise
                self.metrics.transient_errors.labels(self.service.name, stage).inc()
                delay = backoff_seconds(attempt)
                log.warning(
                    "transient_failure_retrying",
                    stage=stage,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error=_describe(exc)[:300],
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                if self.stopping:
                    raise Stopping(f"{stage}: {_describe(exc)}") from exc
                attempt += 1

    async def _store_isolating_poison(
        self, decoded: list[_Decoded]
    ) -> tuple[list[Outbound], list[DeadLetter]]:
        if not decoded:
            return [], []
        try:
            return await self._retry("store", self._transact, decoded), []
        except Stopping:
            raise
        except Exception as exc:  # a bug, a poison event or an oversized output: find which
            if is_transient(exc) and not isinstance(exc, DuplicateKeyError):
                raise
            log.error("batch_failed_isolating", error=_describe(exc)[:300])
        outputs: list[Outbound] = []
        dead: list[DeadLetter] = []
        for one in decoded:
            try:
                outputs += await self._retry("store", self._transact, [one])
            except Stopping:
                raise
            except Exception as exc:
                if is_transient(exc) and not isinstance(exc, DuplicateKeyError):
                    raise
                if not isinstance(one.event.data, ClockTick):
                    dead.append(DeadLetter(one.record, "processing", _describe(exc)))
                    continue
                # The tick itself may be harmless; one of the parked events it retried not.
                outputs += await self._isolate_parked(one)
        return outputs, dead

    async def _isolate_parked(self, tick: _Decoded) -> list[Outbound]:
        """The tick alone, then each due parked event alone under that tick: one whose retry
        raises is dead-lettered (then unparked), the others resolve or stay parked. If the
        tick alone raises, that escapes (the worker stops; see below)."""
        # The tick's own work raising escapes: a tick is not bad input but the service's
        # time-driven work failing on its state, which every later tick would hit too.
        # Dead-lettering it would silently skip that work; stopping the worker shows it.
        outputs: list[Outbound] = await self._retry("store", self._transact, [tick], False, None)
        due = (
            await self.parked.find({}, {"_id": 1})
            .sort("parked_since", ASCENDING)
            .limit(_PARKED_RETRIES_PER_TICK)
            .to_list()
        )
        for doc in due:
            try:
                outputs += await self._retry("store", self._transact, [], False, (tick, doc["_id"]))
            except Stopping:
                raise
            except Exception as exc:
                if is_transient(exc) and not isinstance(exc, DuplicateKeyError):
                    raise
                record = await self.parked.find_one({"_id": doc["_id"]})
                if record is None:
                    continue
                # Dead-lettered before it is unparked: a crash in between retries it again.
                await self._dead_letter(
                    [DeadLetter(_record_of(record), "processing", _describe(exc))]
                )
                await self._retry("store", self._unpark_dead_lettered, doc["_id"])
        return outputs

    async def _unpark_dead_lettered(self, event_id: str) -> None:
        """Parking wrote an inbox record under the event's own id; a dead-lettered event was
        not handled, so that record goes with the parked one: the first replay after a fix
        must act, not be taken for a duplicate."""
        async with self.db.client.start_session() as session, await session.start_transaction():
            await self.inbox.delete_one({"_id": event_id}, session=session)
            await self.parked.delete_one({"_id": event_id}, session=session)

    async def _transact(
        self,
        decoded: list[_Decoded],
        retry_parked: bool = True,
        one_parked: tuple[_Decoded, str] | None = None,
    ) -> list[Outbound]:
        """One MongoDB transaction for the whole batch. ``retry_parked``: the batch's latest
        tick retries every due parked event (once, however many ticks the batch holds).
        ``one_parked``: (tick, parked id): retry just that parked event under that tick."""
        async with self.db.client.start_session() as session, await session.start_transaction():
            ids = list(dict.fromkeys(d.event.id for d in decoded))
            if one_parked is not None:
                ids.append(f"{one_parked[1]}@{one_parked[0].event.id}")
            # Only a tick triggers retries of parked events, whose inbox records name it:
            # a batch without ticks asks by id alone (one index, no $or to plan).
            ticks = [d.event.id for d in decoded if isinstance(d.event.data, ClockTick)]
            lookup: dict[str, Any] = {"_id": {"$in": ids}}
            if ticks:
                lookup = {"$or": [lookup, {"trigger": {"$in": ticks}}]}
            seen_docs = await self.inbox.find(lookup, {"outputs": 1}, session=session).to_list()
            seen = {doc["_id"] for doc in seen_docs}
            replay = [_outbound_of(o, doc["_id"]) for doc in seen_docs for o in doc["outputs"]]

            items: list[Inbound] = []
            taken: set[str] = set()
            duplicate_topics: list[str] = []
            latest_tick: Inbound | None = None
            for d in decoded:
                if d.event.id in seen or d.event.id in taken:
                    duplicate_topics.append(d.topic)
                    continue
                taken.add(d.event.id)
                item = _inbound(d)
                items.append(item)
                if isinstance(d.event.data, ClockTick) and (
                    latest_tick is None or item.now >= latest_tick.now
                ):
                    latest_tick = item
            if latest_tick is not None and retry_parked:
                items += await self._due_parked(session, latest_tick, None)
            if one_parked is not None:
                tick, parked_id = one_parked
                if f"{parked_id}@{tick.event.id}" not in seen:
                    items += await self._due_parked(session, _inbound(tick), [parked_id])

            batch = Batch(self.service.name, session, items)
            if items:
                await self.service.handle(batch)
                self._check_output_sizes(batch)
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

    def _check_output_sizes(self, batch: Batch) -> None:
        # Checked before the commit: an event whose outputs could never be published is
        # rolled back and dead-lettered, instead of being stored and retried for ever.
        for out in batch.outputs:
            size = record_bytes(out.key, out.value, ()) + 128  # + the two headers
            if size > self.max_record_bytes:
                raise RecordTooLarge(
                    f"output {out.event_type} of {out.inbox_id} is {size} bytes, over the "
                    f"{self.max_record_bytes} a record may have"
                )

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
        if only is None:
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
        # The wait counts from when this worker parked the event (its clock, like the
        # ticker's), not from the producer's ``time``: a late-delivered event still waits.
        parked_at = datetime.now(UTC)
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
                "parked_since": parked_at,
                "deadline": parked_at + (wait if wait is not None else self.park_ttl),
            }
            for item, reason, wait in batch.parked.values()
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


def _inbound(d: _Decoded) -> Inbound:
    return Inbound(
        event=d.event,
        topic=d.topic,
        record=d.record,
        now=_now_of(d.event),
        inbox_id=d.event.id,
        trigger_id=d.event.id,
    )


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
    "Stopping",
]
