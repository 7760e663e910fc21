"""The ops store of dead letters: one MongoDB document per dead letter, written by the worker.

A worker that dead-letters a record writes it here, full bytes included, *before* it commits
the offset past it (``Engine._dead_letter``). So a dead letter is in MongoDB before Kafka could
delete it from ``<topic>.dlq``: the pending list never loses one to the topic's retention.
The document is keyed by where the record was read (service, physical source topic, partition,
offset); a record dead-lettered twice from the same place (a crash before the offset commit)
is the same document. Its ``state`` is ``pending`` until an operator replays, corrects or
discards it (``python -m shared.ops <service> dlq ...``, ``shared/ops/dead_letters.py``); every
change appends to its ``history``.

A replayed or corrected record carries ``dlq-replay-of: <id>``: if it is dead-lettered again,
the new document names the one it came from (``replay_of``) and the old one lists it
(``dead_lettered_again``), so the store shows both.

The ops database is ``OPS_MONGODB_DATABASE`` (default ``ops``), shared by every service and
the ``dlq`` commands; the collection is ``dead_letters``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "dead_letters"
STATES = ("pending", "replayed", "corrected", "discarded")
ACTIONS = ("replayed", "corrected", "discarded")
# Headers a replay adds; a record dead-lettered again drops them and the worker's dlq-* ones,
# so the document keeps only the producer's own headers.
REPLAY_OF_HEADER = "dlq-replay-of"
REPLAY_ID_HEADER = "dlq-replay-id"
REPLAY_BY_HEADER = "dlq-replay-by"
INTERNAL_HEADER_PREFIX = "dlq-"

Doc = dict[str, Any]


def dead_letter_id(service: str, physical_topic: str, partition: int, offset: int) -> str:
    """Where the record was read, by which service: ``shipping:orders.shipped/0/17``."""
    return f"{service}:{physical_topic}/{partition}/{offset}"


@dataclass(frozen=True)
class NewDeadLetter:
    """What the worker knows of a record it dead-letters (its full bytes)."""

    service: str
    topic: str  # the contract's topic name
    physical_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    kind: str
    error: str
    # When it was dead-lettered, if not now (``dlq sync``: the dead-letter record's time).
    arrived_at: datetime | None = None
    # Where ``dlq sync`` found it (``<topic>.dlq/<partition>/<offset>``), for the history.
    synced_from: str | None = None


def producer_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The record's headers without the ones the runtime and the dlq commands add."""
    return [(k, v) for k, v in headers if not k.startswith(INTERNAL_HEADER_PREFIX)]


def _event_fields(value: bytes | None) -> Doc:
    """The event id and type, when the bytes are JSON enough to have them."""
    try:
        raw = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: Doc = {}
    if isinstance(raw.get("id"), str):
        out["event_id"] = raw["id"]
    if isinstance(raw.get("type"), str):
        out["event_type"] = raw["type"]
    return out


class DeadLetterStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db[COLLECTION]

    async def setup(self) -> None:
        await self.collection.create_index(
            [("service", ASCENDING), ("state", ASCENDING), ("arrived_at", ASCENDING)]
        )
        await self.collection.create_index([("replay_of", ASCENDING)], sparse=True)

    async def record(self, letters: Sequence[NewDeadLetter]) -> int:
        """Idempotent: a letter already stored (same place) is left as it is. Returns how
        many were new."""
        if not letters:
            return 0
        now = datetime.now(UTC)
        ops: list[UpdateOne] = []
        for letter in letters:
            id_ = dead_letter_id(
                letter.service, letter.physical_topic, letter.partition, letter.offset
            )
            replay_of = next(
                (v.decode(errors="replace") for k, v in letter.headers if k == REPLAY_OF_HEADER),
                None,
            )
            doc: Doc = {
                "service": letter.service,
                "topic": letter.topic,
                "source": {
                    "topic": letter.physical_topic,
                    "partition": letter.partition,
                    "offset": letter.offset,
                },
                "key": letter.key,
                "value": letter.value,
                "headers": [[k, v] for k, v in producer_headers(letter.headers)],
                "kind": letter.kind,
                "error": letter.error,
                "arrived_at": letter.arrived_at or now,
                "state": "pending",
                "history": [
                    {
                        "at": letter.arrived_at or now,
                        "action": "dead_lettered",
                        "by": letter.service,
                    }
                    | ({"synced_from": letter.synced_from} if letter.synced_from else {})
                ],
                **_event_fields(letter.value),
            }
            if replay_of is not None:
                doc["replay_of"] = replay_of
                ops.append(
                    UpdateOne({"_id": replay_of}, {"$addToSet": {"dead_lettered_again": id_}})
                )
            ops.append(UpdateOne({"_id": id_}, {"$setOnInsert": doc}, upsert=True))
        result = await self.collection.bulk_write(ops, ordered=False)
        return result.upserted_count

    async def pending_counts(
        self, service: str
    ) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
        """Pending dead letters per (topic, kind), and the age in seconds of the oldest
        pending one per topic."""
        now = datetime.now(UTC)
        counts: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        rows = await self.collection.aggregate(
            [
                {"$match": {"service": service, "state": "pending"}},
                {
                    "$group": {
                        "_id": {"topic": "$topic", "kind": "$kind"},
                        "n": {"$sum": 1},
                        "oldest": {"$min": "$arrived_at"},
                    }
                },
            ]
        )
        async for row in rows:
            topic, kind = row["_id"]["topic"], row["_id"]["kind"]
            counts[(topic, kind)] = row["n"]
            first = row["oldest"]
            first = first if first.tzinfo is not None else first.replace(tzinfo=UTC)
            oldest[topic] = max(oldest.get(topic, 0.0), (now - first).total_seconds())
        return counts, oldest

    async def action_counts(self, service: str) -> dict[str, int]:
        """How many replays, corrections and discards the store holds for the service (it
        never deletes one, so each count only grows)."""
        rows = await self.collection.aggregate(
            [
                {"$match": {"service": service, "history.1": {"$exists": True}}},
                {"$unwind": "$history"},
                {"$match": {"history.action": {"$in": list(ACTIONS)}}},
                {"$group": {"_id": "$history.action", "n": {"$sum": 1}}},
            ]
        )
        counts = dict.fromkeys(ACTIONS, 0)
        async for row in rows:
            counts[row["_id"]] = row["n"]
        return counts
