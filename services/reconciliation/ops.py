"""The ``reconciliation`` group of ``python -m shared.ops``:

    python -m shared.ops reconciliation unmatched list
    python -m shared.ops reconciliation unmatched allocate <transaction-id> --order O --invoice I
    python -m shared.ops reconciliation transaction show <transaction-id>
    python -m shared.ops reconciliation overpayments report --merchant M [--from D] [--to D] [--csv]

Reading commands read the service's database (its ``transactions`` and ``overpayments``
ledgers). ``unmatched allocate`` changes nothing itself: it publishes an
``internal.reconciliation.allocation_requested`` command on Kafka (``KAFKA_BOOTSTRAP_SERVERS``,
``TOPIC_PREFIX``) that the worker handles like any input; a refusal comes back on
``commands.rejected``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import os
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import ASCENDING
from pymongo.database import Database

from shared.envelope import event_key, event_to_bytes, new_event
from shared.events import AllocationRequested
from shared.money import from_cents
from shared.ops.cli import ServiceCommands, _print

Doc = dict[str, Any]


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("give a date as YYYY-MM-DD") from exc


def _euros(value: int) -> str:
    return str(from_cents(value))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _publish(event: AllocationRequested, command_id: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        enable_idempotence=True,
    )
    await producer.start()
    try:
        envelope = new_event(event, id=command_id, source="/ops", time=datetime.now(UTC))
        topic = os.environ.get("TOPIC_PREFIX", "") + event.TOPIC
        await producer.send_and_wait(topic, event_to_bytes(envelope), key=event_key(envelope))
    finally:
        await producer.stop()


def overpayment_rows(db: Database[Doc], merchant_id: str, start: date, end: date) -> list[Doc]:
    """Every forwarding to ``merchant_id`` from ``start`` to ``end`` (both included), oldest
    first, through the (merchant, forwarded_at) index."""
    low = datetime.combine(start, time(0), tzinfo=UTC)
    high = datetime.combine(end + timedelta(days=1), time(0), tzinfo=UTC)
    query = {"merchant_id": merchant_id, "forwarded_at": {"$gte": low, "$lt": high}}
    found = (
        db["overpayments"]
        .find(query)
        .sort([("forwarded_at", ASCENDING), ("_id", ASCENDING)])
        .hint("merchant_forwarded_at")
    )
    return [
        {
            "date": _aware(doc["forwarded_at"]).date().isoformat(),
            "transaction_id": doc["transaction_id"],
            "debtor_id": doc.get("debtor_id") or "",
            "amount": _euros(doc["amount_cents"]),
            "currency": doc.get("currency", "EUR"),
            "amount_cents": doc["amount_cents"],
        }
        for doc in found
    ]


class ReconciliationCommands(ServiceCommands):
    def add_commands(self, groups: Any) -> None:
        super().add_commands(groups)
        unmatched = groups.add_parser("unmatched", help="payments no invoice was found for")
        unmatched_commands = unmatched.add_subparsers(dest="command", required=True)
        listing = unmatched_commands.add_parser("list", help="unmatched payments, oldest first")
        listing.add_argument("--limit", type=int, default=50, help="at most this many")
        listing.set_defaults(handler=self.unmatched_list)
        allocate = unmatched_commands.add_parser(
            "allocate",
            help="allocate an unmatched payment to an invoice (a command on Kafka)",
        )
        allocate.add_argument("transaction_id")
        allocate.add_argument("--order", required=True, help="the invoice's order id")
        allocate.add_argument("--invoice", required=True, help="the invoice number")
        allocate.add_argument("--reason", default="", help="why, for the record")
        allocate.add_argument("--by", default=None, help="who asks (default: your user name)")
        allocate.set_defaults(handler=self.unmatched_allocate)

        transaction = groups.add_parser("transaction", help="one transaction")
        transaction_commands = transaction.add_subparsers(dest="command", required=True)
        show = transaction_commands.add_parser("show", help="a transaction's split and cause")
        show.add_argument("transaction_id")
        show.set_defaults(handler=self.transaction_show)

        overpayments = groups.add_parser("overpayments", help="credit forwarded to merchants")
        overpayment_commands = overpayments.add_subparsers(dest="command", required=True)
        report = overpayment_commands.add_parser(
            "report", help="a merchant's forwarded overpayments: the daily financial report"
        )
        report.add_argument("--merchant", required=True)
        report.add_argument("--from", dest="start", type=_day, help="default: 30 days ago")
        report.add_argument("--to", dest="end", type=_day, help="default: today")
        report.add_argument("--csv", action="store_true", help="CSV instead of a table")
        report.set_defaults(handler=self.overpayments_report)

    # -- the commands ---------------------------------------------------------------------

    def unmatched_list(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        query = {"unmatched_cents": {"$gt": 0}}
        collection = db["transactions"]
        found = collection.find(query).sort("unmatched_at", ASCENDING).hint("unmatched")
        for doc in found.limit(args.limit):
            _print(
                {
                    "transaction_id": doc["_id"],
                    "creditor_iban": doc["received_on"],
                    "amount": _euros(doc["unmatched_cents"]),
                    "currency": doc["currency"],
                    "reason": doc.get("unmatched_reason"),
                    "booked_on": doc["booked_on"],
                    "remittance": doc.get("remittance", ""),
                }
            )
        _print({"summary": {"unmatched": collection.count_documents(query, hint="unmatched")}})
        return 0

    def unmatched_allocate(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        doc = db["transactions"].find_one({"_id": args.transaction_id})
        if doc is None or not doc.get("unmatched_cents"):
            print(f"no unmatched transaction {args.transaction_id!r} in {db.name}", file=sys.stderr)
            return 1
        command = AllocationRequested(
            transaction_id=args.transaction_id,
            creditor_iban=doc["received_on"],
            order_id=args.order,
            invoice_number=args.invoice,
            requested_by=args.by or getpass.getuser(),
            reason=args.reason,
        )
        command_id = str(uuid.uuid4())
        asyncio.run(_publish(command, command_id))
        _print({"requested": command.model_dump(mode="json"), "command_id": command_id})
        return 0

    def transaction_show(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        doc = db["transactions"].find_one({"_id": args.transaction_id})
        if doc is None:
            print(f"no transaction {args.transaction_id!r} in {db.name}", file=sys.stderr)
            return 1
        _print(
            {
                "transaction_id": doc["_id"],
                "kind": doc["kind"],
                "creditor_iban": doc["received_on"],
                "account": doc["viban"],
                "merchant_id": doc.get("merchant_id"),
                "debtor_id": doc.get("debtor_id"),
                "amount": _euros(doc["amount_cents"]),
                "currency": doc["currency"],
                "booked_on": doc["booked_on"],
                "remittance": doc.get("remittance", ""),
                "allocations": [
                    {
                        "invoice_number": a["invoice_number"],
                        "amount": _euros(a["amount_cents"]),
                        "matched_by": a["matched_by"],
                    }
                    for a in doc["allocations"]
                ],
                "allocated": _euros(doc["allocated_cents"]),
                "held": _euros(doc["held_cents"]),
                "forwarded": _euros(doc["forwarded_cents"]),
                "unmatched": _euros(doc["unmatched_cents"]),
                "unmatched_reason": doc.get("unmatched_reason"),
                "statements": doc["statements"],
                "allocated_by_command": doc.get("allocated_by_command"),
                "last_caused_by": doc.get("last_caused_by"),
                "updated_at": doc.get("updated_at"),
            }
        )
        return 0

    def overpayments_report(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        end = args.end or datetime.now(UTC).date()
        start = args.start or end - timedelta(days=30)
        rows = overpayment_rows(db, args.merchant, start, end)
        total = from_cents(sum(row["amount_cents"] for row in rows))
        fields = ["date", "transaction_id", "debtor_id", "amount", "currency"]
        if args.csv:
            writer = csv.DictWriter(
                sys.stdout, fieldnames=fields, lineterminator="\n", extrasaction="ignore"
            )
            writer.writeheader()
            writer.writerows(rows)
            return 0
        print(f"Overpayments forwarded to {args.merchant}, {start} to {end}")
        widths = {f: max([len(f), *(len(str(r[f])) for r in rows)]) for f in fields}
        print("  ".join(f.ljust(widths[f]) for f in fields).rstrip())
        print("  ".join("-" * widths[f] for f in fields))
        for row in rows:
            cells = (
                str(row[f]).rjust(widths[f]) if f == "amount" else str(row[f]).ljust(widths[f])
                for f in fields
            )
            print("  ".join(cells).rstrip())
        print(f"{len(rows)} forwarding(s), total {total} EUR")
        return 0


COMMANDS = ReconciliationCommands("reconciliation")
