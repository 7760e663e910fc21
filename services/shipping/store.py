"""The shipping service's MongoDB documents.

One document per order holds its invoices, so a capture, a cancel or a credit note is one
document write. Writes are guarded by the order's version inside the batch's transaction:
two workers that both read version n cannot both write n+1. Beside the orders, two ledgers
(``payouts``, ``clawbacks``) hold one document per instruction under its deterministic id
(the unique ``_id``, and for payouts the unique (merchant, invoice number), make a second
payout for an invoice impossible even if the domain were wrong), each naming the event that
caused it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING, InsertOne, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.shipping.domain import Invoice, MerchantTerms, Money3, Order
from shared.runtime.timers import COLLECTION as TIMERS
from shared.runtime.timers import Timers
from shared.runtime.transient import ConcurrencyConflict

Doc = dict[str, Any]
LATE_ACTION = "mark_late"


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    # Orders with an invoice that may turn late: the earliest due date among paid-out ones.
    await db["orders"].create_index([("next_due_on", ASCENDING)], sparse=True)
    # One payout per invoice number per merchant, whichever order claims it: the ledger is
    # also the registry that refuses an invoice number reused across orders.
    await db["payouts"].create_index(
        [("merchant_id", ASCENDING), ("invoice_number", ASCENDING)], unique=True
    )


def invoice_to_doc(invoice: Invoice) -> Doc:
    return {
        "invoice_number": invoice.invoice_number,
        "gross_cents": invoice.amount.gross,
        "net_cents": invoice.amount.net,
        "tax_cents": invoice.amount.tax,
        "shipped_at": invoice.shipped_at,
        "issued_on": invoice.issued_on.isoformat(),
        "due_on": invoice.due_on.isoformat(),
        "fee_cents": invoice.fee,
        "payout_cents": invoice.payout,
        "payout_id": invoice.payout_id,
        "capture_fingerprint": invoice.capture_fingerprint,
        "state": invoice.state,
        "credited_cents": invoice.credited,
        "clawed_back_cents": invoice.clawed_back,
        "handed_over": invoice.handed_over,
        "credit_notes": invoice.credit_notes,
    }


def invoice_from_doc(doc: Doc) -> Invoice:
    return Invoice(
        invoice_number=doc["invoice_number"],
        amount=Money3(doc["gross_cents"], doc["net_cents"], doc["tax_cents"]),
        shipped_at=doc["shipped_at"],
        issued_on=date.fromisoformat(doc["issued_on"]),
        due_on=date.fromisoformat(doc["due_on"]),
        fee=doc["fee_cents"],
        payout=doc["payout_cents"],
        payout_id=doc["payout_id"],
        capture_fingerprint=doc["capture_fingerprint"],
        state=doc["state"],
        credited=doc["credited_cents"],
        clawed_back=doc["clawed_back_cents"],
        handed_over=doc["handed_over"],
        credit_notes=dict(doc["credit_notes"]),
    )


def late_at(order: Order) -> datetime | None:
    """When the order's late timer is due: the start (UTC) of the day after the earliest due
    date among its paid-out invoices; None when it has none."""
    due = [i.due_on for i in order.invoices if i.state == "paid_out"]
    if not due:
        return None
    return datetime.combine(min(due) + timedelta(days=1), time(0), tzinfo=UTC)


async def backfill_late_timers(db: AsyncDatabase[Doc]) -> None:
    """Once per database: a late timer for every order stored before late marking ran on
    timers. Only missing timers are created; a timer that fires for an order already late
    changes nothing (mark_late is a no-op then)."""
    marker = {"_id": "late_timers_backfilled"}
    if await db["migrations"].find_one(marker) is not None:
        return
    batch: list[Any] = []
    async for doc in db["orders"].find({"next_due_on": {"$exists": True}}):
        due = late_at(order_from_doc(doc))
        if due is not None:
            batch.append(
                Timers.schedule_op(
                    action=LATE_ACTION,
                    entity=doc["_id"],
                    key=doc["_id"],
                    due_at=due,
                    only_if_missing=True,
                )
            )
        if len(batch) >= 1000:
            await db[TIMERS].bulk_write(batch, ordered=False)
            batch = []
    if batch:
        await db[TIMERS].bulk_write(batch, ordered=False)
    await db["migrations"].update_one(marker, {"$set": {"done": True}}, upsert=True)


def order_to_doc(order: Order) -> Doc:
    due = [i.due_on for i in order.invoices if i.state == "paid_out"]
    doc: Doc = {
        "_id": order.order_id,
        "merchant_id": order.merchant_id,
        "approved_gross_cents": order.approved_gross,
        "duration_days": order.duration_days,
        "currency": order.currency,
        "decision": order.decision,
        "decline_reason": order.decline_reason,
        "viban": order.viban,
        "company_id": order.company_id,
        "state": order.state,
        "invoices": [invoice_to_doc(i) for i in order.invoices],
        "released_cents": order.released,
        "pending_cancels": order.pending_cancels,
        "reduced_cents": order.reduced,
        "reductions": order.reductions,
        "version": order.version,
    }
    if due:
        doc["next_due_on"] = min(due).isoformat()
    return doc


def order_from_doc(doc: Doc) -> Order:
    return Order(
        order_id=doc["_id"],
        merchant_id=doc["merchant_id"],
        approved_gross=doc["approved_gross_cents"],
        duration_days=doc["duration_days"],
        currency=doc["currency"],
        decision=doc["decision"],
        decline_reason=doc["decline_reason"],
        viban=doc["viban"],
        company_id=doc["company_id"],
        state=doc["state"],
        invoices=[invoice_from_doc(i) for i in doc["invoices"]],
        released=doc.get("released_cents", 0),
        pending_cancels=list(doc.get("pending_cancels", [])),
        reduced=doc.get("reduced_cents", 0),
        reductions=list(doc.get("reductions", [])),
        version=doc["version"],
    )


def merchant_from_doc(doc: Doc) -> MerchantTerms:
    return MerchantTerms(
        merchant_id=doc["_id"],
        payout_iban=doc["payout_iban"],
        fee_percent=Decimal(doc["fee_percent"]),
        fee_fixed=doc["fee_fixed_cents"],
    )


def merchant_to_doc(merchant: MerchantTerms) -> Doc:
    return {
        "_id": merchant.merchant_id,
        "payout_iban": merchant.payout_iban,
        "fee_percent": str(merchant.fee_percent),
        "fee_fixed_cents": merchant.fee_fixed,
    }


@dataclass
class ShippingView:
    """What one batch reads and writes, loaded with a few ``$in`` queries."""

    session: AsyncClientSession
    db: AsyncDatabase[Doc]
    orders: dict[str, Order] = field(default_factory=dict)
    loaded_versions: dict[str, int] = field(default_factory=dict)
    merchants: dict[str, MerchantTerms] = field(default_factory=dict)
    # (merchant, invoice number) -> order it was captured on
    invoice_owners: dict[tuple[str, str], str] = field(default_factory=dict)
    dirty_orders: set[str] = field(default_factory=set)
    dirty_merchants: set[str] = field(default_factory=set)
    # order -> when its late timer was due as loaded (None: no paid-out invoice, no timer)
    loaded_late_at: dict[str, datetime | None] = field(default_factory=dict)
    # orders whose late timer this batch acted on (and so removed)
    late_timer_claimed: set[str] = field(default_factory=set)
    payouts: list[Doc] = field(default_factory=list)
    clawbacks: list[Doc] = field(default_factory=list)

    async def load_orders(self, order_ids: Iterable[str]) -> None:
        wanted = list(set(order_ids) - self.orders.keys())
        if not wanted:
            return
        async for doc in self.db["orders"].find({"_id": {"$in": wanted}}, session=self.session):
            self._keep_loaded(order_from_doc(doc))

    def _keep_loaded(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self.loaded_versions[order.order_id] = order.version
        self.loaded_late_at[order.order_id] = late_at(order)

    async def load_merchants(self, merchant_ids: Iterable[str]) -> None:
        wanted = list(set(merchant_ids) - self.merchants.keys())
        if not wanted:
            return
        async for doc in self.db["merchants"].find({"_id": {"$in": wanted}}, session=self.session):
            self.merchants[doc["_id"]] = merchant_from_doc(doc)

    async def load_invoice_owners(self, keys: Iterable[tuple[str, str]]) -> None:
        """Which order each (merchant, invoice number) was captured on, if any."""
        wanted = set(keys) - self.invoice_owners.keys()
        if not wanted:
            return
        by_merchant: dict[str, list[str]] = {}
        for merchant_id, number in wanted:
            by_merchant.setdefault(merchant_id, []).append(number)
        query = {
            "$or": [
                {"merchant_id": m, "invoice_number": {"$in": numbers}}
                for m, numbers in by_merchant.items()
            ]
        }
        projection = {"merchant_id": 1, "invoice_number": 1, "order_id": 1}
        async for doc in self.db["payouts"].find(query, projection, session=self.session):
            self.invoice_owners[(doc["merchant_id"], doc["invoice_number"])] = doc["order_id"]

    def order(self, order_id: str) -> Order:
        return self.orders.get(order_id) or Order(order_id=order_id)

    def put_order(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self.dirty_orders.add(order.order_id)

    def put_merchant(self, merchant: MerchantTerms) -> None:
        self.merchants[merchant.merchant_id] = merchant
        self.dirty_merchants.add(merchant.merchant_id)

    def claim_invoice_number(self, merchant_id: str, invoice_number: str, order_id: str) -> None:
        self.invoice_owners.setdefault((merchant_id, invoice_number), order_id)

    def record_payout(self, doc: Doc) -> None:
        self.payouts.append(doc)

    def record_clawback(self, doc: Doc) -> None:
        self.clawbacks.append(doc)

    async def flush(self) -> None:
        s = self.session
        if self.dirty_merchants:
            await self.db["merchants"].bulk_write(
                [
                    ReplaceOne({"_id": m}, merchant_to_doc(self.merchants[m]), upsert=True)
                    for m in sorted(self.dirty_merchants)
                ],
                ordered=False,
                session=s,
            )
        ops: list[Any] = []
        guarded = 0
        for order_id in sorted(self.dirty_orders):
            order = self.orders[order_id]
            read = self.loaded_versions.get(order_id)
            order.version = (read or 0) + 1
            if read is None:
                ops.append(InsertOne(order_to_doc(order)))
            else:
                guarded += 1
                ops.append(ReplaceOne({"_id": order_id, "version": read}, order_to_doc(order)))
        if ops:
            result = await self.db["orders"].bulk_write(ops, ordered=False, session=s)
            if result.matched_count != guarded:
                raise ConcurrencyConflict("an order changed since it was read")
        timer_ops: list[Any] = []
        for order_id in sorted(self.dirty_orders):
            due = late_at(self.orders[order_id])
            claimed = order_id in self.late_timer_claimed
            if due == self.loaded_late_at.get(order_id) and not claimed:
                continue  # the timer already says so (or there is none to have)
            if due is None:
                timer_ops.append(Timers.cancel_op(LATE_ACTION, order_id))
            else:
                timer_ops.append(
                    Timers.schedule_op(
                        action=LATE_ACTION, entity=order_id, key=order_id, due_at=due
                    )
                )
        if timer_ops:
            await self.db[TIMERS].bulk_write(timer_ops, ordered=False, session=s)
        if self.payouts:
            await self.db["payouts"].insert_many(self.payouts, ordered=False, session=s)
        if self.clawbacks:
            await self.db["clawbacks"].insert_many(self.clawbacks, ordered=False, session=s)
