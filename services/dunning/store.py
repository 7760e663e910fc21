"""The dunning service's MongoDB documents.

One document per invoice (``invoices``) holds its whole dunning state: amounts ledgered by
key, pauses, the steps sent, the latest day ticked. Writes are guarded by the document's
version inside the batch's transaction, so two workers that read the same version cannot both
send the next step. Beside it:

- the invoice's next step is a runtime timer (``step:<invoice id>``, due at the local midnight
  starting the day it falls due), written in the same transaction whenever that time changes,
  so a tick reads only what is due (``shared/runtime/timers.py``);
- ``notices``: a ledger with one document per notice and hand-over under its id derived from
  (order, invoice, level); the unique ``_id`` makes a second copy impossible even if the state
  were wrong, and names the event that caused it;
- ``clock``: the latest tick the service saw (``_id: "clock"``), the time pauses are judged at;
- ``merchants``: the names of configured merchants (for the operators' timeline).

Indexed fields kept on the invoice for cheap questions: ``next_step``/``next_action_at`` (the
hand-overs due soon) and ``overdue_from`` (the first overdue day, only while the invoice is
open with something due: the overdue gauge counts ranges of it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, InsertOne, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.dunning import domain
from shared.ids import uuid5_str
from shared.runtime.timers import COLLECTION as TIMERS
from shared.runtime.timers import Timers
from shared.runtime.transient import ConcurrencyConflict

Doc = dict[str, Any]
STEP_ACTION = "step"
CLOCK_ID = "clock"
_INVOICE_NAMESPACE = uuid.UUID("8a4f3c2e-6d1b-4e7a-9f05-2c3b4d5e6f70")


def invoice_id(order_id: str, invoice_number: str) -> str:
    """The invoice's document id (and timer entity): invoice numbers are unique per merchant,
    not globally, so the order is part of the name; a uuid5 keeps it within an id's bounds."""
    return uuid5_str(_INVOICE_NAMESPACE, f"{order_id}/{invoice_number}")


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    invoices = db["invoices"]
    # payments.allocated names the invoice by number under the debtor's VIBAN.
    await invoices.create_index([("viban", ASCENDING), ("invoice_number", ASCENDING)])
    await invoices.create_index([("invoice_number", ASCENDING)])
    await invoices.create_index([("overdue_from", ASCENDING)], sparse=True)
    await invoices.create_index(
        [("next_step", ASCENDING), ("next_action_at", ASCENDING)], sparse=True
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def invoice_to_doc(inv: domain.DunningInvoice, config: domain.DunningConfig) -> Doc:
    doc: Doc = {
        "_id": invoice_id(inv.order_id, inv.invoice_number),
        "order_id": inv.order_id,
        "invoice_number": inv.invoice_number,
        "viban": inv.viban,
        "gross_cents": inv.gross,
        "due_on": inv.due_on.isoformat(),
        "status": inv.status,
        "payments": [{"key": p.key, "cents": p.cents} for p in inv.payments],
        "credit_notes": [{"key": c.key, "cents": c.cents} for c in inv.credit_notes],
        "pauses": [
            {
                "first_day": p.first_day.isoformat(),
                "days": p.days,
                "requested_by": p.requested_by,
                "reason": p.reason,
            }
            for p in inv.pauses
        ],
        "sent": [
            {
                "step": s.step,
                "on": s.on.isoformat(),
                "days_overdue": s.days_overdue,
                "amount_due": s.amount_due,
            }
            for s in inv.sent
        ],
        "clock_on": None if inv.clock_on is None else inv.clock_on.isoformat(),
        "amount_due_cents": inv.amount_due,
    }
    nxt = domain.next_action_at(inv, config)
    if nxt is not None:
        doc["next_step"] = inv.next_step
        doc["next_action_at"] = nxt
    if inv.status == "open" and inv.amount_due > 0:
        doc["overdue_from"] = (inv.due_on + timedelta(days=1)).isoformat()
    return doc


def invoice_from_doc(doc: Doc) -> domain.DunningInvoice:
    return domain.DunningInvoice(
        order_id=doc["order_id"],
        invoice_number=doc["invoice_number"],
        viban=doc["viban"],
        gross=doc["gross_cents"],
        due_on=date.fromisoformat(doc["due_on"]),
        status=doc["status"],
        payments=tuple(domain.Ledgered(p["key"], p["cents"]) for p in doc["payments"]),
        credit_notes=tuple(domain.Ledgered(c["key"], c["cents"]) for c in doc["credit_notes"]),
        pauses=tuple(
            domain.Pause(
                date.fromisoformat(p["first_day"]), p["days"], p["requested_by"], p["reason"]
            )
            for p in doc["pauses"]
        ),
        sent=tuple(
            domain.SentStep(
                s["step"], date.fromisoformat(s["on"]), s["days_overdue"], s["amount_due"]
            )
            for s in doc["sent"]
        ),
        clock_on=None if doc["clock_on"] is None else date.fromisoformat(doc["clock_on"]),
    )


async def latest_tick(db: AsyncDatabase[Doc], session: AsyncClientSession) -> datetime | None:
    doc = await db["clock"].find_one({"_id": CLOCK_ID}, session=session)
    return None if doc is None else _aware(doc["now"])


async def record_tick(db: AsyncDatabase[Doc], session: AsyncClientSession, now: datetime) -> None:
    await db["clock"].update_one(
        {"_id": CLOCK_ID}, {"$max": {"now": now}}, upsert=True, session=session
    )


OVERDUE_BUCKETS = (("1-13", 1, 13), ("14-20", 14, 20), ("21-27", 21, 27), ("28+", 28, None))


async def count_overdue(
    db: AsyncDatabase[Doc], session: AsyncClientSession | None, today: date
) -> dict[str, int]:
    """Open invoices with something due, by calendar days overdue on ``today``: one range
    count per bucket on the ``overdue_from`` index (days overdue = today - overdue_from + 1),
    so the cost is the overdue invoices' index keys, never the others."""
    counts: dict[str, int] = {}
    for name, low, high in OVERDUE_BUCKETS:
        latest_first_day = today - timedelta(days=low - 1)
        query: Doc = {"$lte": latest_first_day.isoformat()}
        if high is not None:
            query["$gte"] = (today - timedelta(days=high - 1)).isoformat()
        counts[name] = await db["invoices"].count_documents(
            {"overdue_from": query}, session=session, hint="overdue_from_1"
        )
    return counts


@dataclass
class DunningView:
    """What one batch reads and writes, loaded with a few ``$in`` queries."""

    session: AsyncClientSession
    db: AsyncDatabase[Doc]
    config: domain.DunningConfig
    invoices: dict[str, domain.DunningInvoice] = field(default_factory=dict)
    loaded_versions: dict[str, int] = field(default_factory=dict)
    # invoice id -> its timer's due time as loaded (None: no step will go out)
    loaded_next: dict[str, datetime | None] = field(default_factory=dict)
    # invoice id -> the due time of the timer this batch acted on (and so removed)
    claimed: dict[str, datetime] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    by_viban: dict[tuple[str, str], str] = field(default_factory=dict)
    merchants: dict[str, str] = field(default_factory=dict)
    ledger: list[Doc] = field(default_factory=list)

    def _keep(self, doc: Doc) -> None:
        inv = invoice_from_doc(doc)
        self.invoices[doc["_id"]] = inv
        self.loaded_versions[doc["_id"]] = doc["version"]
        timer_due = doc.get("timer_due_at")
        self.loaded_next[doc["_id"]] = None if timer_due is None else _aware(timer_due)
        self.by_viban[(inv.viban, inv.invoice_number)] = doc["_id"]

    async def load(self, ids: Iterable[str], by_viban: Iterable[tuple[str, str]]) -> None:
        wanted = list(set(ids) - self.invoices.keys())
        if wanted:
            async for doc in self.db["invoices"].find(
                {"_id": {"$in": wanted}}, session=self.session
            ):
                self._keep(doc)
        pairs = set(by_viban) - self.by_viban.keys()
        if pairs:
            query = {"$or": [{"viban": viban, "invoice_number": number} for viban, number in pairs]}
            async for doc in self.db["invoices"].find(query, session=self.session):
                if doc["_id"] not in self.invoices:
                    self._keep(doc)

    def get(self, iid: str) -> domain.DunningInvoice | None:
        return self.invoices.get(iid)

    def put(self, inv: domain.DunningInvoice) -> None:
        iid = invoice_id(inv.order_id, inv.invoice_number)
        self.invoices[iid] = inv
        self.by_viban[(inv.viban, inv.invoice_number)] = iid
        self.dirty.add(iid)

    def put_merchant(self, merchant_id: str, name: str) -> None:
        self.merchants[merchant_id] = name

    def record_sent(self, doc: Doc) -> None:
        self.ledger.append(doc)

    async def flush(self) -> None:
        s = self.session
        if self.merchants:
            await self.db["merchants"].bulk_write(
                [
                    ReplaceOne({"_id": m}, {"_id": m, "name": name}, upsert=True)
                    for m, name in sorted(self.merchants.items())
                ],
                ordered=False,
                session=s,
            )
        ops: list[Any] = []
        timer_ops: list[Any] = []
        guarded = 0
        for iid in sorted(self.dirty):
            inv = self.invoices[iid]
            doc = invoice_to_doc(inv, self.config)
            due: datetime | None = doc.get("next_action_at")
            acted = self.claimed.get(iid)
            if acted is not None and due is not None and due <= acted:
                # Never the firing just acted on again: its command id would repeat and the
                # inbox would drop it. A later instant fires at the next tick instead, where
                # the schedule decides again (it never sends a step twice).
                due = acted + timedelta(seconds=1)
            if due is not None:
                doc["timer_due_at"] = due
            # The timer acted on was removed by the claim: it is written again whenever a
            # step is still to come.
            if due != self.loaded_next.get(iid) or acted is not None:
                if due is None:
                    timer_ops.append(Timers.cancel_op(STEP_ACTION, iid))
                else:
                    timer_ops.append(
                        Timers.schedule_op(
                            action=STEP_ACTION, entity=iid, key=inv.order_id, due_at=due
                        )
                    )
            read = self.loaded_versions.get(iid)
            doc["version"] = (read or 0) + 1
            if read is None:
                ops.append(InsertOne(doc))
            else:
                guarded += 1
                ops.append(ReplaceOne({"_id": iid, "version": read}, doc))
        if ops:
            result = await self.db["invoices"].bulk_write(ops, ordered=False, session=s)
            if result.matched_count != guarded:
                raise ConcurrencyConflict("an invoice changed since it was read")
        if timer_ops:
            await self.db[TIMERS].bulk_write(timer_ops, ordered=False, session=s)
        if self.ledger:
            # A notice already in the ledger raises DuplicateKeyError: the batch is retried
            # and, failing again, dead-lettered, never published a second time.
            await self.db["notices"].insert_many(self.ledger, ordered=False, session=s)


__all__ = [
    "CLOCK_ID",
    "OVERDUE_BUCKETS",
    "STEP_ACTION",
    "DunningView",
    "count_overdue",
    "ensure_indexes",
    "invoice_from_doc",
    "invoice_id",
    "invoice_to_doc",
    "latest_tick",
    "record_tick",
]
