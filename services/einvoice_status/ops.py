"""``python -m shared.ops einvoice_status einvoice ...``: what happened to an invoice in
Billit, which Billit jobs failed, and re-queueing them (the runtime's ``jobs requeue``).

    python -m shared.ops einvoice_status einvoice history INV-1
    python -m shared.ops einvoice_status einvoice failed
    python -m shared.ops einvoice_status einvoice requeue <job-id>
"""

from __future__ import annotations

import argparse
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from shared.ops.cli import ServiceCommands, _job_line, _print
from shared.runtime import jobs

Doc = dict[str, Any]


class EinvoiceCommands(ServiceCommands):
    def add_commands(self, groups: Any) -> None:
        super().add_commands(groups)
        group = groups.add_parser("einvoice", help="invoices in Billit")
        commands = group.add_subparsers(dest="command", required=True)
        history = commands.add_parser(
            "history", help="an invoice's Billit calls, delivery status and receiver responses"
        )
        history.add_argument("invoice", help="invoice number, or <order_id>/<invoice_number>")
        history.set_defaults(handler=self.history)
        failed = commands.add_parser("failed", help="Billit jobs that failed for good")
        failed.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        failed.set_defaults(handler=self.failed)
        requeue = commands.add_parser(
            "requeue", help="run a failed Billit job again (same as: jobs requeue)"
        )
        requeue.add_argument("job_id", help="the job's id, as listed by 'einvoice failed'")
        requeue.set_defaults(handler=self.jobs_requeue)

    def history(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        found = list(
            db["einvoices"].find({"$or": [{"_id": args.invoice}, {"invoice_number": args.invoice}]})
        )
        if not found:
            print(f"no e-invoice {args.invoice!r} in {db.name}")
            return 1
        for doc in found:
            _print(
                {
                    "invoice": doc["invoice_number"],
                    "order_id": doc["order_id"],
                    "merchant_id": doc["merchant_id"],
                    "party_id": doc["party_id"],
                    "receiver": doc["customer"]["peppol_id"],
                }
            )
            for document in doc["documents"]:
                _print(
                    {
                        "document": document["key"],
                        "type": document["order_type"],
                        "billit_order_id": document.get("billit_order_id"),
                        "stage": document["stage"],
                        "delivery_status": document.get("delivery_status"),
                        "receiver_status": document.get("receiver_status"),
                        "detail": document.get("detail"),
                        "polls": document.get("polls", 0),
                        "receiver_responses": document.get("responses", []),
                    }
                )
            for step in doc["steps"]:
                _print({"report": step["kind"], **{k: v for k, v in step.items() if k != "kind"}})
            for entry in doc["history"]:
                _print({"at": entry["at"], "what": entry["what"], "detail": entry["detail"]})
            calls = db[jobs.COLLECTION].find({"key": doc["order_id"]}).sort("created_at", ASCENDING)
            for job in calls:
                if job["_id"] in doc.get("waiting_on", {}) or _is_of(job, doc):
                    _print(_job_line(job))
        return 0

    def failed(self, args: argparse.Namespace, db: Database[Doc]) -> int:
        count = 0
        query = {"state": "failed"}
        for job in db[jobs.COLLECTION].find(query).sort("updated_at", ASCENDING).limit(args.limit):
            owner = db["einvoices"].find_one({f"waiting_on.{job['_id']}": {"$exists": True}})
            line = _job_line(job)
            line["invoice"] = owner["_id"] if owner is not None else _invoice_of_cause(job)
            _print(line)
            count += 1
        _print({"summary": {"failed": db[jobs.COLLECTION].count_documents(query), "shown": count}})
        return 0


def _invoice_of_cause(job: Doc) -> str | None:
    """A document job's cause is ``<event id>/<order id>/<invoice number>/<document>``."""
    parts = str(job.get("cause", "")).split("/")
    return "/".join(parts[1:3]) if len(parts) >= 4 else None


def _is_of(job: Doc, doc: Doc) -> bool:
    cause = str(job.get("cause", ""))
    return f"/{doc['_id']}/" in cause or cause.startswith(tuple(s["id"] for s in doc["steps"]))


COMMANDS = EinvoiceCommands("einvoice_status")
