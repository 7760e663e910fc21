"""The ``dlq`` command group every service has: find dead letters, see why, act on each once.

    python -m shared.ops shipping dlq list
    python -m shared.ops shipping dlq show 'shipping:orders.shipped/0/17'
    python -m shared.ops shipping dlq correct 'shipping:orders.shipped/0/17' \\
        --set data.shipped_at=2026-11-20T10:00:00Z --reason "ERP sent a time without zone"
    python -m shared.ops shipping dlq replay --all-pending --topic orders.shipped

Dead letters are read from the ops store (``shared/runtime/dead_letters.py``), where the
worker writes each one, full bytes included, before it commits past it. Every action writes
only two things: a record on Kafka (the replayed or corrected one, back to its source topic
with its original key) and the dead letter's document in the ops store. Nothing here edits a
service's own state: the consuming worker takes the record like any input, and its inbox
(keyed by event id) gives it one effect however often it is replayed.

Two operators at once: an action first takes a short lease on the document (a conditional
update); the one who gets it sends, then records the new state and lets go. The other skips
it ("being replayed by ..."). If the sender dies between the two, the lease runs out and the
dead letter is still ``pending``: replaying it again is safe (same event id, the inbox
dedupes), losing it is not possible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import json
import os
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pymongo import ASCENDING, AsyncMongoClient, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from shared.envelope import ContractError, decode_json, parse_event
from shared.ids import uuid5_str
from shared.runtime.dead_letters import (
    COLLECTION,
    REPLAY_BY_HEADER,
    REPLAY_ID_HEADER,
    REPLAY_OF_HEADER,
    STATES,
    DeadLetterStore,
    NewDeadLetter,
    producer_headers,
)
from shared.topics import dlq_topic

if TYPE_CHECKING:
    from shared.ops.cli import ServiceCommands

Doc = dict[str, Any]
# An event id for a corrected record whose own id was unreadable: derived from where the
# record was read, so two corrections of it are the same event to the consuming inbox.
_CORRECTED_ID_NAMESPACE = uuid.UUID("0c9a3f5e-54a1-4c0e-9d7b-9b0f6e1d2a77")
LEASE = timedelta(minutes=5)

EXIT_OK = 0
EXIT_NOTHING_DONE = 1  # unknown id, wrong state, not confirmed, someone else acting on it
EXIT_BAD_INPUT = 2  # the correction is not JSON or fails the contract (argparse also uses 2)

DESCRIPTION = """\
Dead letters of this service: records its worker could not take (undecodable, failing the
contract, or making the handler raise). Each is kept in the ops store with its bytes until an
operator replays, corrects or discards it; 'list' shows pending ones first.

Ids look like 'shipping:orders.shipped/0/17' (service, source topic, partition, offset).
Exit codes: 0 done; 1 nothing done (unknown id, wrong state, not confirmed, another operator
is acting on it); 2 bad input (not JSON, fails the contract, wrong options).
"""


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_NOTHING_DONE) -> None:
        super().__init__(message)
        self.code = code


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time with its offset, e.g. 2026-12-01T09:00Z")
    return moment


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _operator(args: argparse.Namespace) -> str:
    name: str = args.operator or os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    if not name:
        raise CommandError("say who you are: --operator NAME (or set $USER)", EXIT_BAD_INPUT)
    return name


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _text(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", errors="replace")


def _pretty(value: bytes | None) -> str:
    """The bytes as an operator reads them: indented JSON when they are JSON, else text."""
    if value is None:
        return "(no value)"
    try:
        return json.dumps(json.loads(bytes(value)), indent=2, ensure_ascii=False) + "\n"
    except (ValueError, UnicodeDecodeError, RecursionError):
        return bytes(value).decode("utf-8", errors="replace") + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return _text(value)
    return value


def _print(doc: Doc) -> None:
    print(json.dumps(_jsonable(doc), ensure_ascii=False))


# -- the parser ------------------------------------------------------------------------------


def add_dead_letter_commands(groups: Any, commands: ServiceCommands) -> None:
    """The ``dlq`` group, for ``commands.name``; its handlers take ``(args, db)``."""
    handlers = DeadLetterCommands(commands.name)
    group = groups.add_parser(
        "dlq",
        help="dead letters: list, show, summary, replay, correct, discard, sync",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = group.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = sub.add_parser(
        "list",
        help="dead letters, pending first, oldest first, the error in one line",
        description="One JSON line per dead letter: id, state, topic, kind, arrival, event "
        "id and the error in one line; pending ones first. Ends with a count line.",
    )
    _filters(listing)
    listing.add_argument(
        "--state",
        action="append",
        choices=STATES,
        help="only this state; repeatable (default: every state, pending first)",
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _stores(listing)
    listing.set_defaults(handler=handlers.listing)

    show = sub.add_parser(
        "show",
        help="one dead letter: bytes decoded, key, headers, where from, error, history",
        description="Everything about one dead letter: the original bytes (as JSON when they "
        "are), key, headers, source topic/partition/offset, error kind and message, when it "
        "arrived, its state and what was done with it (history).",
    )
    show.add_argument("id", help="the dead letter's id, as listed")
    _stores(show)
    show.set_defaults(handler=handlers.show)

    summary = sub.add_parser(
        "summary",
        help="counts per topic, kind and state",
        description="How many dead letters per source topic, error kind and state.",
    )
    _stores(summary)
    summary.set_defaults(handler=handlers.summary)

    sync = sub.add_parser(
        "sync",
        help="copy dead letters from the <topic>.dlq topics into the ops store (backfill)",
        description="Read the dead-letter topics from the beginning and add to the ops store "
        "every dead letter of this service it does not hold yet (idempotent; a truncated one "
        "with its full bytes from the worker's dead_letter_bodies). Workers write each dead "
        "letter to the ops store themselves; this is for records dead-lettered before they "
        "did, or by a worker pointed at another ops database.",
    )
    sync.add_argument(
        "--topic",
        action="append",
        help="a source topic whose .dlq to read, e.g. orders.shipped; repeatable (default: "
        "every <prefix>*.dlq topic)",
    )
    sync.add_argument(
        "--topic-prefix",
        default=os.environ.get("TOPIC_PREFIX", ""),
        help="the deployment's topic prefix (default: $TOPIC_PREFIX, else none)",
    )
    _stores(sync, kafka=True)
    sync.set_defaults(handler=handlers.sync)
    _add_actions(sub, handlers)


def _add_actions(sub: Any, handlers: DeadLetterCommands) -> None:
    replay = sub.add_parser(
        "replay",
        help="send dead letters back to their source topic unchanged (after a fix)",
        description="Send the original bytes back to the source topic with the original key "
        "and headers, plus dlq-replay-of/-id/-by naming the dead letter. Do it once the cause "
        "is fixed in the consuming service: the worker takes it like any input, and an event "
        "id it already handled has no second effect. Still failing, it is dead-lettered again "
        "as a new dead letter that names this one. By id, any dead letter but a discarded one "
        "(a corrected one goes out as last corrected); --all-pending takes pending ones only.",
    )
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="one dead letter's id")
    target.add_argument(
        "--all-pending",
        action="store_true",
        help="every pending dead letter matching the filters below",
    )
    _filters(replay)
    _who(replay)
    replay.add_argument("--reason", help="why (optional, kept in the history)")
    _stores(replay, kafka=True)
    replay.set_defaults(handler=handlers.replay)

    correct = sub.add_parser(
        "correct",
        help="replace a dead letter's payload, show the diff, confirm, send",
        description="Replace the payload of a dead letter its producer sent wrong, then send "
        "it to the source topic with the original key. The corrected event keeps the "
        "original event id (or, when that is unreadable, one derived from topic, partition "
        "and offset), so only the first correction handled has an effect. The correction "
        "is checked against the contract before anything is sent; the diff is shown and "
        "must be confirmed (or --yes).",
    )
    correct.add_argument("id", help="the dead letter's id")
    correct.add_argument(
        "--file", help="the whole corrected event (CloudEvents JSON); '-' reads stdin"
    )
    correct.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="set one field to a string, e.g. data.shipped_at=2026-11-20T10:00:00Z; repeatable",
    )
    correct.add_argument(
        "--set-json",
        action="append",
        default=[],
        metavar="PATH=JSON",
        help="set one field to a JSON value, e.g. 'data.amount={...}'; repeatable",
    )
    correct.add_argument("--reason", required=True, help="why the payload was wrong (required)")
    _who(correct)
    correct.add_argument("--yes", action="store_true", help="send without asking")
    _stores(correct, kafka=True)
    correct.set_defaults(handler=handlers.correct)

    discard = sub.add_parser(
        "discard",
        help="mark a pending dead letter dealt with, without sending anything",
        description="Mark a pending dead letter as dealt with (e.g. a test record, or one "
        "re-sent by its producer). Nothing is sent; it is never replayed by a filter after.",
    )
    discard.add_argument("id", help="the dead letter's id")
    discard.add_argument("--reason", required=True, help="why it needs no replay (required)")
    _who(discard)
    _stores(discard)
    discard.set_defaults(handler=handlers.discard)


def _stores(parser: argparse.ArgumentParser, *, kafka: bool = False) -> None:
    parser.add_argument(
        "--ops-database",
        default=os.environ.get("OPS_MONGODB_DATABASE", "ops"),
        help="the ops store's database (default: $OPS_MONGODB_DATABASE, else 'ops')",
    )
    if kafka:
        parser.add_argument(
            "--kafka-bootstrap-servers",
            default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            help="Kafka to send to (default: $KAFKA_BOOTSTRAP_SERVERS)",
        )


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", help="only this source topic, e.g. orders.shipped")
    parser.add_argument(
        "--kind",
        choices=["json", "envelope", "unknown_type", "schema", "undecodable", "processing"],
        metavar="KIND",
        help="only this error kind: json, envelope, unknown_type, schema, undecodable, "
        "processing (the handler raised)",
    )
    parser.add_argument(
        "--since", type=_moment, metavar="TIME", help="arrived at or after this time"
    )
    parser.add_argument("--until", type=_moment, metavar="TIME", help="arrived before this time")


def _who(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", help="who does this (default: $USER)")


# -- the commands ----------------------------------------------------------------------------


class _Sender:
    """One idempotent producer for the whole command, waiting for every acknowledgement."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.runner = asyncio.Runner()
        self.producer: AIOKafkaProducer | None = None

    def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> tuple[int, int]:
        async def go() -> tuple[int, int]:
            if self.producer is None:
                self.producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    enable_idempotence=True,
                    acks="all",
                    request_timeout_ms=30_000,
                )
                await self.producer.start()
            meta = await self.producer.send_and_wait(
                topic, value=value, key=key, headers=headers, partition=partition
            )
            return meta.partition, meta.offset

        return self.runner.run(go())

    def close(self) -> None:
        if self.producer is not None:
            self.runner.run(self.producer.stop())
        self.runner.close()


class DeadLetterCommands:
    def __init__(self, service: str) -> None:
        self.service = service
        # Tests swap the prompt; a terminal answers it.
        self.confirm: Callable[[str], bool] = _ask

    def _collection(self, args: argparse.Namespace, db: Database[Doc]) -> Collection[Doc]:
        client: MongoClient[Doc] = db.client
        return client[args.ops_database][COLLECTION]

    def _query(self, args: argparse.Namespace) -> Doc:
        query: Doc = {"service": self.service}
        if getattr(args, "topic", None):
            query["topic"] = args.topic
        if getattr(args, "kind", None):
            query["kind"] = args.kind
        arrived: Doc = {}
        if getattr(args, "since", None):
            arrived["$gte"] = args.since
        if getattr(args, "until", None):
            arrived["$lt"] = args.until
        if arrived:
            query["arrived_at"] = arrived
        return query

    def _load(self, collection: Collection[Doc], id_: str) -> Doc:
        doc = collection.find_one({"_id": id_, "service": self.service})
        if doc is None:
            raise CommandError(
                f"no dead letter {id_!r} for {self.service} in {collection.database.name}"
                f".{collection.name}; 'dlq list' shows the ids"
            )
        return doc

    def run(self, action: Callable[[], int]) -> int:
        try:
            return action()
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.code

    # list / show / summary -------------------------------------------------------------

    def listing(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        collection = self._collection(args, db)
        query = self._query(args)
        if args.state:
            query["state"] = {"$in": args.state}
        shown = 0
        for state in STATES:  # pending first
            if args.state and state not in args.state:
                continue
            remaining = args.limit - shown
            if remaining <= 0:
                break
            found = (
                collection.find(query | {"state": state}, {"value": 0, "history": 0})
                .sort([("arrived_at", ASCENDING), ("_id", ASCENDING)])
                .limit(remaining)
            )
            for doc in found:
                _print(
                    {
                        "id": doc["_id"],
                        "state": doc["state"],
                        "topic": doc["topic"],
                        "kind": doc["kind"],
                        "arrived_at": doc["arrived_at"],
                        "event_id": doc.get("event_id"),
                        "key": _text(doc.get("key")),
                        "error": _one_line(doc.get("error", "")),
                    }
                )
                shown += 1
        counts = {
            row["_id"]: row["n"]
            for row in collection.aggregate(
                [{"$match": query}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
            )
        }
        _print({"summary": {s: counts.get(s, 0) for s in STATES}, "shown": shown})
        return EXIT_OK

    def show(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        def go() -> int:
            doc = self._load(self._collection(args, db), args.id)
            value = doc.get("value")
            try:
                decoded: Any = json.loads(bytes(value)) if value is not None else None
            except (ValueError, UnicodeDecodeError, RecursionError):
                decoded = {"not_json": _text(value)}
            out = {
                "id": doc["_id"],
                "state": doc["state"],
                "service": doc["service"],
                "topic": doc["topic"],
                "source": doc["source"],
                "key": _text(doc.get("key")),
                "event_id": doc.get("event_id"),
                "event_type": doc.get("event_type"),
                "kind": doc["kind"],
                "error": doc.get("error"),
                "arrived_at": doc["arrived_at"],
                "headers": {k: _text(v) for k, v in doc.get("headers", [])},
                "value": decoded,
                "value_bytes": 0 if value is None else len(value),
                "replay_of": doc.get("replay_of"),
                "dead_lettered_again": doc.get("dead_lettered_again", []),
                "history": doc.get("history", []),
            }
            if "corrected_value" in doc:
                out["corrected_value"] = json.loads(bytes(doc["corrected_value"]))
            print(json.dumps(_jsonable(out), indent=2, ensure_ascii=False))
            return EXIT_OK

        return self.run(go)

    def summary(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        collection = self._collection(args, db)
        rows = collection.aggregate(
            [
                {"$match": {"service": self.service}},
                {
                    "$group": {
                        "_id": {"topic": "$topic", "kind": "$kind", "state": "$state"},
                        "n": {"$sum": 1},
                        "oldest": {"$min": "$arrived_at"},
                    }
                },
                {"$sort": {"_id.topic": 1, "_id.kind": 1}},
            ]
        )
        table: dict[tuple[str, str], Doc] = {}
        for row in rows:
            key = (row["_id"]["topic"], row["_id"]["kind"])
            line = table.setdefault(
                key, {"topic": key[0], "kind": key[1]} | dict.fromkeys(STATES, 0)
            )
            line[row["_id"]["state"]] = row["n"]
            if row["_id"]["state"] == "pending":
                line["oldest_pending"] = row["oldest"]
        for line in table.values():
            _print(line)
        _print({"summary": {s: sum(line[s] for line in table.values()) for s in STATES}})
        return EXIT_OK

    # replay / correct / discard --------------------------------------------------------

    def _claim(
        self, collection: Collection[Doc], id_: str, operator: str, states: list[str]
    ) -> tuple[Doc, str] | None:
        """A short lease on the document, taken only if it is in one of ``states`` and no
        one else holds one: the conditional step that makes two operators act once."""
        now = datetime.now(UTC)
        action_id = str(uuid.uuid4())
        doc = collection.find_one_and_update(
            {
                "_id": id_,
                "service": self.service,
                "state": {"$in": states},
                "$or": [{"lease": {"$exists": False}}, {"lease.until": {"$lt": now}}],
            },
            {"$set": {"lease": {"id": action_id, "by": operator, "until": now + LEASE}}},
        )
        return None if doc is None else (doc, action_id)

    def _why_not(self, collection: Collection[Doc], id_: str, verb: str) -> CommandError:
        doc = self._load(collection, id_)
        lease = doc.get("lease")
        if lease is not None and _aware(lease["until"]) > datetime.now(UTC):
            return CommandError(f"{id_} is being acted on by {lease['by']} right now; not {verb}")
        return CommandError(f"{id_} is {doc['state']}; not {verb}")

    def _finish(
        self,
        collection: Collection[Doc],
        id_: str,
        action_id: str,
        state: str,
        entry: Doc,
        extra: Doc | None = None,
    ) -> None:
        entry = {"at": datetime.now(UTC), "id": action_id} | entry
        update: Doc = {
            "$set": {"state": state, **(extra or {})},
            "$unset": {"lease": ""},
            "$push": {"history": entry},
        }
        result = collection.update_one({"_id": id_, "lease.id": action_id}, update)
        if result.matched_count == 0:
            # Our lease ran out while sending (and someone may have taken it): what we sent
            # is still recorded, the state is left to whoever holds the document now.
            collection.update_one({"_id": id_}, {"$push": {"history": entry | {"late": True}}})

    def _release(self, collection: Collection[Doc], id_: str, action_id: str) -> None:
        collection.update_one({"_id": id_, "lease.id": action_id}, {"$unset": {"lease": ""}})

    def _send(
        self, sender: _Sender, doc: Doc, value: bytes | None, action_id: str, operator: str
    ) -> Doc:
        try:
            return self._send_once(sender, doc, value, action_id, operator)
        except KafkaError as exc:
            # Maybe sent, maybe not: the state is left as it was, and sending it again is a
            # duplicate to the consuming inbox, never a second effect.
            raise CommandError(
                f"sending {doc['_id']} to {doc['source']['topic']} failed ({exc!r}); its state "
                f"is still {doc['state']}: run the command again once Kafka answers"
            ) from exc

    def _send_once(
        self, sender: _Sender, doc: Doc, value: bytes | None, action_id: str, operator: str
    ) -> Doc:
        key = None if doc.get("key") is None else bytes(doc["key"])
        headers = [(k, bytes(v)) for k, v in doc.get("headers", [])] + [
            (REPLAY_OF_HEADER, doc["_id"].encode()),
            (REPLAY_ID_HEADER, action_id.encode()),
            (REPLAY_BY_HEADER, operator.encode()),
        ]
        source = doc["source"]
        # A keyed record goes where its key goes (the producer's murmur2, as every producer
        # here), next to the key's other records; one without a key to its old partition.
        partition, offset = sender.send(
            source["topic"],
            key=key,
            value=value,
            headers=headers,
            partition=source["partition"] if key is None else None,
        )
        return {"topic": source["topic"], "partition": partition, "offset": offset}

    def replay(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        def go() -> int:
            operator = _operator(args)
            collection = self._collection(args, db)
            if args.all_pending:
                ids = [
                    d["_id"]
                    for d in collection.find(
                        self._query(args) | {"state": "pending"}, {"_id": 1}
                    ).sort("arrived_at", ASCENDING)
                ]
                states = ["pending"]
            else:
                self._load(collection, args.id)
                ids = [args.id]
                states = ["pending", "replayed", "corrected"]
            sender = _Sender(args.kafka_bootstrap_servers)
            replayed = skipped = 0
            try:
                for id_ in ids:
                    claimed = self._claim(collection, id_, operator, states)
                    if claimed is None:
                        if not args.all_pending:
                            raise self._why_not(collection, id_, "replayed")
                        skipped += 1
                        _print({"skipped": id_, "why": "taken by another operator meanwhile"})
                        continue
                    doc, action_id = claimed
                    try:
                        # A corrected one goes out as last corrected (its bytes were wrong).
                        latest = doc.get("corrected_value", doc.get("value"))
                        value = None if latest is None else bytes(latest)
                        sent = self._send(sender, doc, value, action_id, operator)
                    except BaseException:
                        self._release(collection, id_, action_id)
                        raise
                    entry = {"action": "replayed", "by": operator, "reason": args.reason}
                    self._finish(collection, id_, action_id, "replayed", entry | {"sent": sent})
                    replayed += 1
                    _print({"replayed": id_, "sent": sent, "by": operator})
            finally:
                sender.close()
            _print({"summary": {"replayed": replayed, "skipped": skipped}})
            return EXIT_OK

        return self.run(go)

    def correct(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        def go() -> int:
            operator = _operator(args)
            collection = self._collection(args, db)
            doc = self._load(collection, args.id)
            if doc["state"] == "discarded":
                raise CommandError(f"{args.id} is discarded; not corrected")
            original = None if doc.get("value") is None else bytes(doc["value"])
            corrected = self._corrected_bytes(args, doc, original)
            try:
                parse_event(doc["topic"], corrected)
            except ContractError as exc:
                raise CommandError(
                    f"the correction fails the contract of {doc['topic']}: {exc.kind}: "
                    f"{exc.message}; nothing was sent or changed",
                    EXIT_BAD_INPUT,
                ) from exc
            diff = list(
                difflib.unified_diff(
                    _pretty(original).splitlines(keepends=True),
                    _pretty(corrected).splitlines(keepends=True),
                    fromfile=f"{args.id} (dead letter)",
                    tofile=f"{args.id} (corrected)",
                )
            )
            sys.stdout.writelines(diff)
            if not diff:
                raise CommandError("the correction changes nothing; use 'dlq replay' instead")
            question = f"send the corrected record to {doc['source']['topic']}? [y/N] "
            if not args.yes and not self.confirm(question):
                raise CommandError("not confirmed; nothing was sent or changed")
            claimed = self._claim(
                collection, args.id, operator, ["pending", "replayed", "corrected"]
            )
            if claimed is None:
                raise self._why_not(collection, args.id, "corrected")
            doc, action_id = claimed
            sender = _Sender(args.kafka_bootstrap_servers)
            try:
                try:
                    sent = self._send(sender, doc, corrected, action_id, operator)
                except BaseException:
                    self._release(collection, args.id, action_id)
                    raise
            finally:
                sender.close()
            entry = {
                "action": "corrected",
                "by": operator,
                "reason": args.reason,
                "sent": sent,
                "diff": "".join(diff),
                "value": corrected,
            }
            self._finish(
                collection,
                args.id,
                action_id,
                "corrected",
                entry,
                {"corrected_value": corrected},
            )
            _print({"corrected": args.id, "sent": sent, "by": operator})
            return EXIT_OK

        return self.run(go)

    def _corrected_bytes(self, args: argparse.Namespace, doc: Doc, original: bytes | None) -> bytes:
        event_id = doc.get("event_id") or uuid5_str(
            _CORRECTED_ID_NAMESPACE,
            f"{doc['source']['topic']}/{doc['source']['partition']}/{doc['source']['offset']}",
        )
        if (args.file is None) == (not args.set and not args.set_json):
            raise CommandError(
                "give the corrected event with --file, or the changes with --set/--set-json "
                "(not both)",
                EXIT_BAD_INPUT,
            )
        if args.file is not None:
            try:
                text = sys.stdin.buffer.read() if args.file == "-" else _read(args.file)
            except OSError as exc:
                raise CommandError(f"cannot read {args.file}: {exc}", EXIT_BAD_INPUT) from exc
            event = _json_object(text, f"the correction in {args.file}")
        else:
            if original is None:
                raise CommandError(
                    "the dead letter has no value to edit; give the whole event with --file",
                    EXIT_BAD_INPUT,
                )
            try:
                event = _json_object(original, "the dead letter")
            except CommandError as exc:
                raise CommandError(
                    f"{exc}; give the whole corrected event with --file", EXIT_BAD_INPUT
                ) from exc
            for item in args.set:
                path, value = _assignment(item)
                _put(event, path, value)
            for item in args.set_json:
                path, text_value = _assignment(item)
                try:
                    _put(event, path, decode_json(text_value.encode()))
                except ContractError as exc:
                    raise CommandError(
                        f"--set-json {item!r}: not JSON ({exc.message}); nothing changed",
                        EXIT_BAD_INPUT,
                    ) from exc
        event["id"] = event_id  # the original's: only the first correction handled acts
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()

    def sync(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        def go() -> int:
            read, added = asyncio.run(self._sync(args))
            _print({"summary": {"read": read, "added": added}})
            return EXIT_OK

        return self.run(go)

    async def _sync(self, args: argparse.Namespace) -> tuple[int, int]:
        prefix: str = args.topic_prefix
        consumer = AIOKafkaConsumer(
            bootstrap_servers=args.kafka_bootstrap_servers, enable_auto_commit=False
        )
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            args.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000
        )
        await consumer.start()
        try:
            partitions = await _dead_letter_partitions(args, prefix)
            if not partitions:
                return 0, 0
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            letters: list[NewDeadLetter] = []
            read = 0
            remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
            deadline = asyncio.get_running_loop().time() + 300
            while remaining:
                if asyncio.get_running_loop().time() > deadline:
                    raise CommandError("the dead-letter topics did not read to their end in 5 min")
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        read += 1
                        letter = await self._letter_of(record, prefix, client)
                        if letter is not None:
                            letters.append(letter)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            store = DeadLetterStore(client[args.ops_database])
            await store.setup()
            added = 0
            for start in range(0, len(letters), 500):
                added += await store.record(letters[start : start + 500])
            return read, added
        finally:
            # aiokafka's group-less consumer may re-raise the cancellation of its own
            # background task when stopped soon after it started: nothing of ours.
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()
            await client.close()

    async def _letter_of(
        self, record: ConsumerRecord[bytes, bytes], prefix: str, client: AsyncMongoClient[Doc]
    ) -> NewDeadLetter | None:
        headers = {k: v.decode(errors="replace") for k, v in record.headers}
        if headers.get("dlq-consumer-group") != self.service or "dlq-source-topic" not in headers:
            return None
        key, value, kept = record.key, record.value, tuple(record.headers)
        full_at = headers.get("dlq-full-record")
        if headers.get("dlq-truncated") == "true" and full_at and "." in full_at:
            # "<database>.dead_letter_bodies/<id>": the worker kept the whole record there.
            database, _, rest = full_at.partition(".")
            collection, _, body_id = rest.partition("/")
            body = await client[database][collection].find_one({"_id": body_id})
            if body is not None:
                key = None if body.get("key") is None else bytes(body["key"])
                value = None if body.get("value") is None else bytes(body["value"])
                kept = tuple((k, bytes(v)) for k, v in body.get("headers", []))
        source = headers["dlq-source-topic"]
        return NewDeadLetter(
            service=self.service,
            topic=source.removeprefix(prefix),
            physical_topic=source,
            partition=int(headers.get("dlq-source-partition", "0")),
            offset=int(headers.get("dlq-source-offset", "0")),
            key=key,
            value=value,
            headers=tuple(producer_headers(kept)),
            kind=headers.get("dlq-error-kind", "unknown"),
            error=headers.get("dlq-error", ""),
            arrived_at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            synced_from=f"{record.topic}/{record.partition}/{record.offset}",
        )

    def discard(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        def go() -> int:
            operator = _operator(args)
            collection = self._collection(args, db)
            self._load(collection, args.id)
            claimed = self._claim(collection, args.id, operator, ["pending"])
            if claimed is None:
                raise self._why_not(collection, args.id, "discarded")
            _, action_id = claimed
            entry = {"action": "discarded", "by": operator, "reason": args.reason}
            self._finish(collection, args.id, action_id, "discarded", entry)
            _print({"discarded": args.id, "by": operator})
            return EXIT_OK

        return self.run(go)


async def _dead_letter_partitions(args: argparse.Namespace, prefix: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=args.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    wanted = {dlq_topic(prefix + t) for t in args.topic or ()}
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in sorted(described, key=lambda t: str(t["topic"]))
        if topic["error_code"] == 0
        and (
            topic["topic"] in wanted
            if wanted
            else topic["topic"].startswith(prefix) and topic["topic"].endswith(".dlq")
        )
        for partition in topic["partitions"]
    ]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _json_object(value: bytes, what: str) -> Doc:
    try:
        parsed = decode_json(value)
    except ContractError as exc:
        raise CommandError(
            f"{what} is not valid JSON: {exc.message}; nothing was sent or changed",
            EXIT_BAD_INPUT,
        ) from exc
    if not isinstance(parsed, dict):
        raise CommandError(f"{what} is not a JSON object; nothing was sent", EXIT_BAD_INPUT)
    return parsed


def _assignment(item: str) -> tuple[list[str], str]:
    path, sep, value = item.partition("=")
    if not sep or not path:
        raise CommandError(f"{item!r}: write PATH=VALUE, e.g. data.shipped_at=...", EXIT_BAD_INPUT)
    return path.split("."), value


def _put(event: Doc, path: list[str], value: Any) -> None:
    node: Any = event
    for i, name in enumerate(path[:-1]):
        child = node.get(name) if isinstance(node, dict) else None
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            raise CommandError(
                f"{'.'.join(path[: i + 1])} is not an object; cannot set {'.'.join(path)}",
                EXIT_BAD_INPUT,
            )
        node = child
    node[path[-1]] = value


def _ask(question: str) -> bool:
    print(question, end="", flush=True)
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
