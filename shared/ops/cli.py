"""Look at and act on a service's timers and external jobs, straight in its MongoDB database,
and on its dead letters (kept in the ops store; replays and corrections go through Kafka).

    python -m shared.ops shipping timers due
    python -m shared.ops einvoice_status jobs list --state failed
    python -m shared.ops einvoice_status jobs requeue <job-id>
    python -m shared.ops shipping dlq list
    python -m shared.ops shipping dlq replay <dead-letter-id>

The database is the service's (``<SERVICE>_MONGODB_DATABASE``, else its default name) at
``MONGODB_URI``; ``--mongodb-uri`` and ``--database`` override both. Output is one JSON object
per line, so it reads on a terminal and pipes into ``jq``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

from shared.ops.dead_letters import add_dead_letter_commands
from shared.runtime import jobs, timers

Doc = dict[str, Any]
_DEFAULT_URI = "mongodb://127.0.0.1:27017/?replicaSet=rs0"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _print(doc: Doc) -> None:
    print(json.dumps(_jsonable(doc), ensure_ascii=False))


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time with its offset, e.g. 2026-12-01T09:00Z")
    return moment


Handler = Callable[[argparse.Namespace, Database[Doc]], int]


class ServiceCommands:
    """A service's command group. Subclass and extend ``add_commands`` for more."""

    def __init__(self, name: str, default_database: str | None = None) -> None:
        self.name = name
        self.default_database = default_database or name

    def database_name(self) -> str:
        return os.environ.get(f"{self.name.upper()}_MONGODB_DATABASE", self.default_database)

    def add_commands(self, groups: Any) -> None:
        timers_group = groups.add_parser("timers", help="timers of this service")
        timer_commands = timers_group.add_subparsers(dest="command", required=True)
        due = timer_commands.add_parser(
            "due", help="timers due and not fired yet, earliest first, then fired ones waiting"
        )
        due.add_argument("--at", type=_moment, help="due at this time (default: now)")
        due.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        due.set_defaults(handler=self.timers_due)

        jobs_group = groups.add_parser("jobs", help="external jobs of this service")
        job_commands = jobs_group.add_subparsers(dest="command", required=True)
        listing = job_commands.add_parser("list", help="jobs by state, oldest change first")
        listing.add_argument(
            "--state",
            action="append",
            choices=["pending", "running", "failed", "succeeded"],
            help="repeatable (default: pending, running and failed)",
        )
        listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        listing.set_defaults(handler=self.jobs_list)
        requeue = job_commands.add_parser(
            "requeue", help="run a failed job again, with a fresh set of attempts"
        )
        requeue.add_argument("job_id", help="the job's id, as listed")
        requeue.set_defaults(handler=self.jobs_requeue)

        add_dead_letter_commands(groups, self)

    # -- the commands ---------------------------------------------------------------------

    def timers_due(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        at = args.at or datetime.now(UTC)
        collection = db[timers.COLLECTION]
        query = {"state": "scheduled", "due_at": {"$lte": at}}
        total = collection.count_documents(query)
        for doc in collection.find(query).sort("due_at", ASCENDING).limit(args.limit):
            _print(_timer_line(doc))
        fired = collection.count_documents({"state": "fired"})
        _print({"summary": {"due_not_fired": total, "fired_not_handled": fired, "at": at}})
        return 0

    def jobs_list(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        states = args.state or ["pending", "running", "failed"]
        collection = db[jobs.COLLECTION]
        query = {"state": {"$in": states}}
        found = collection.find(query).sort("updated_at", ASCENDING).limit(args.limit)
        for doc in found:
            _print(_job_line(doc))
        counts = {
            row["_id"]: row["n"]
            for row in collection.aggregate(
                [{"$match": query}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
            )
        }
        _print({"summary": {state: counts.get(state, 0) for state in states}})
        return 0

    def jobs_requeue(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        now = datetime.now(UTC)
        result = db[jobs.COLLECTION].update_one(
            jobs.requeue_filter(args.job_id), jobs.requeue_update(now)
        )
        if result.modified_count != 1:
            print(f"no failed job {args.job_id!r} in {db.name}", file=sys.stderr)
            return 1
        _print({"requeued": args.job_id, "at": now})
        return 0


def _timer_line(doc: Doc) -> Doc:
    return {
        "timer": doc["_id"],
        "due_at": doc.get("due_at"),
        "state": doc.get("state"),
        "key": doc.get("key"),
        "payload": doc.get("payload", {}),
    }


def _job_line(doc: Doc) -> Doc:
    return {
        "job": doc["_id"],
        "kind": doc.get("kind"),
        "target": doc.get("target"),
        "state": doc.get("state"),
        "key": doc.get("key"),
        "attempts": doc.get("attempts"),
        "generation": doc.get("generation", 0),
        "ready_at": doc.get("ready_at"),
        "updated_at": doc.get("updated_at"),
        "last_error": doc.get("last_error"),
    }


SERVICES: dict[str, ServiceCommands] = {}


def register(commands: ServiceCommands) -> None:
    SERVICES[commands.name] = commands


def _service_commands(name: str) -> ServiceCommands:
    """A service extends its group in ``services/<name>/ops.py`` (a ``COMMANDS`` object, a
    ``ServiceCommands`` subclass); without one it has the runtime's commands only."""
    module_name = f"services.{name}.ops"
    if importlib.util.find_spec(module_name) is None:
        return ServiceCommands(name)
    commands = importlib.import_module(module_name).COMMANDS
    assert isinstance(commands, ServiceCommands), f"{module_name}.COMMANDS"
    return commands


for _name in ("risk", "shipping", "dunning", "reconciliation", "einvoice_status"):
    register(_service_commands(_name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.ops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run '<service> --help' or '<service> <group> --help' for the commands.",
    )
    services = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    for name, commands in sorted(SERVICES.items()):
        sub = services.add_parser(name, help=f"{name}: timers, jobs, dead letters")
        sub.add_argument(
            "--mongodb-uri",
            default=os.environ.get("MONGODB_URI", _DEFAULT_URI),
            help="MongoDB to use (default: $MONGODB_URI)",
        )
        sub.add_argument(
            "--database",
            default=commands.database_name(),
            help=f"database (default: ${name.upper()}_MONGODB_DATABASE, else "
            f"{commands.default_database!r})",
        )
        commands.add_commands(sub.add_subparsers(dest="group", required=True, metavar="GROUP"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client: MongoClient[Doc] = MongoClient(
        args.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000
    )
    try:
        handler: Handler = args.handler
        return handler(args, client[args.database])
    finally:
        client.close()
