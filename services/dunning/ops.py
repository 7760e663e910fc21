"""The ``dunning`` group of the ops command (``python -m shared.ops dunning ...``):

    python -m shared.ops dunning timeline INV-1 [--order o-1]
    python -m shared.ops dunning pause o-1 INV-1 --reason "debtor disputes delivery" [--by ops]
    python -m shared.ops dunning handovers due --days 7 [--at 2027-02-01T00:00Z]

``timeline`` and ``handovers`` read the service's database; ``pause`` only publishes a
``dunning.pause_requested`` event (to ``$TOPIC_PREFIX`` at ``$KAFKA_BOOTSTRAP_SERVERS``): the
worker judges it like any other request, and a refusal shows on ``commands.rejected``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import ASCENDING
from pymongo.database import Database

from services.dunning.domain import (
    HAND_OVER_STEP,
    DunningConfig,
    hand_over_id_for,
    notice_id_for,
)
from services.dunning.store import CLOCK_ID
from shared.envelope import event_key, event_to_bytes, new_event
from shared.events import DunningPauseRequested
from shared.money import from_cents
from shared.ops.cli import ServiceCommands, _moment, _print

Doc = dict[str, Any]
STEP_NAMES = {1: "notice level 1", 2: "notice level 2", 3: "notice level 3", 4: "hand-over"}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _local_day(instant: datetime) -> date:
    return _aware(instant).astimezone(DunningConfig(time_zone=_zone()).zone).date()


def _zone() -> str:
    return os.environ.get("DUNNING_TIME_ZONE", "Europe/Berlin")


def _clock(db: Database[Doc]) -> datetime | None:
    doc = db["clock"].find_one({"_id": CLOCK_ID})
    return None if doc is None else _aware(doc["now"])


def timeline_of(doc: Doc) -> Doc:
    due_on = date.fromisoformat(doc["due_on"])
    steps = [
        {
            "step": STEP_NAMES[s["step"]],
            "event_id": (
                hand_over_id_for(doc["order_id"], doc["invoice_number"])
                if s["step"] == HAND_OVER_STEP
                else notice_id_for(doc["order_id"], doc["invoice_number"], s["step"])
            ),
            "on": s["on"],
            "days_overdue": s["days_overdue"],
            "amount_due": str(from_cents(s["amount_due"])),
        }
        for s in doc["sent"]
    ]
    pauses = [
        {
            "from": p["first_day"],
            "to": (date.fromisoformat(p["first_day"]) + timedelta(days=p["days"] - 1)).isoformat(),
            "requested_by": p["requested_by"],
            "reason": p["reason"],
        }
        for p in doc["pauses"]
    ]
    line: Doc = {
        "order_id": doc["order_id"],
        "invoice_number": doc["invoice_number"],
        "status": doc["status"],
        "due_on": due_on.isoformat(),
        "amount_due": str(from_cents(doc["amount_due_cents"])),
        "sent": steps,
        "pauses": pauses,
        "next_step": None,
        "next_step_on": None,
    }
    if doc.get("next_action_at") is not None:
        line["next_step"] = STEP_NAMES[doc["next_step"]]
        line["next_step_on"] = _local_day(doc["next_action_at"]).isoformat()
    return line


class DunningCommands(ServiceCommands):
    def add_commands(self, groups: Any) -> None:
        super().add_commands(groups)
        timeline = groups.add_parser(
            "timeline", help="an invoice's dunning: notices sent, pauses, next step and its date"
        )
        timeline.add_argument("invoice_number")
        timeline.add_argument("--order", help="the order, when the number is not unique")
        timeline.set_defaults(handler=self.timeline)

        pause = groups.add_parser(
            "pause", help="request a pause for an invoice (publishes dunning.pause_requested)"
        )
        pause.add_argument("order_id")
        pause.add_argument("invoice_number")
        pause.add_argument("--reason", required=True, help="why (ops pauses need one)")
        pause.add_argument("--by", choices=["ops", "merchant"], default="ops")
        pause.add_argument(
            "--kafka",
            default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            help="Kafka to publish to (default: $KAFKA_BOOTSTRAP_SERVERS)",
        )
        pause.add_argument(
            "--topic-prefix",
            default=os.environ.get("TOPIC_PREFIX", ""),
            help="prepended to the topic (default: $TOPIC_PREFIX)",
        )
        pause.set_defaults(handler=self.pause)

        handovers = groups.add_parser("handovers", help="invoices going to collection")
        commands = handovers.add_subparsers(dest="command", required=True)
        due = commands.add_parser(
            "due", help="invoices whose next step is the hand-over, due within --days"
        )
        due.add_argument("--days", type=int, default=7)
        due.add_argument(
            "--at", type=_moment, help="counted from (default: the latest tick, else now)"
        )
        due.add_argument("--limit", type=int, default=100)
        due.set_defaults(handler=self.handovers_due)

    def timeline(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        query: Doc = {"invoice_number": args.invoice_number}
        if args.order:
            query["order_id"] = args.order
        found = 0
        for doc in db["invoices"].find(query).sort("order_id", ASCENDING):
            found += 1
            _print(timeline_of(doc))
        _print({"summary": {"invoices": found, "clock": _clock(db)}})
        return 0 if found else 1

    def pause(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        data = DunningPauseRequested(
            order_id=args.order_id,
            invoice_number=args.invoice_number,
            requested_by=args.by,
            reason=args.reason,
        )
        event = new_event(data, id=str(uuid.uuid4()), source="/ops", time=datetime.now(UTC))

        async def publish() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=args.kafka, enable_idempotence=True)
            await producer.start()
            try:
                await producer.send_and_wait(
                    args.topic_prefix + data.TOPIC, event_to_bytes(event), key=event_key(event)
                )
            finally:
                await producer.stop()

        asyncio.run(publish())
        _print({"published": data.TOPIC, "event_id": event.id, "data": data.model_dump()})
        return 0

    def handovers_due(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        at = args.at or _clock(db) or datetime.now(UTC)
        until = at + timedelta(days=args.days)
        query = {"next_step": HAND_OVER_STEP, "next_action_at": {"$lt": until}}
        total = db["invoices"].count_documents(query)
        cursor = db["invoices"].find(query).sort("next_action_at", ASCENDING).limit(args.limit)
        for doc in cursor:
            _print(
                {
                    "order_id": doc["order_id"],
                    "invoice_number": doc["invoice_number"],
                    "hand_over_on": _local_day(doc["next_action_at"]).isoformat(),
                    "amount_due": str(from_cents(doc["amount_due_cents"])),
                }
            )
        _print({"summary": {"due": total, "from": at, "until": until}})
        return 0


COMMANDS = DunningCommands("dunning")
