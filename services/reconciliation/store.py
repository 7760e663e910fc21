"""The reconciliation service's MongoDB documents.

``accounts``: one document per VIBAN (one merchant + debtor) holding its orders, invoices,
transactions and merchant debits, so matching a payment reads one document by ``_id``: that
debtor's invoices and nothing else, however many are stored. Writes are guarded by the
account's version inside the batch's transaction (two workers that both read version n cannot
both write n+1). The multikey index on ``order_ids`` finds the account of events keyed by
order (invoices, credit notes, cancels, reports, collections).

Beside it, read models and ledgers, written in the same transaction:

- ``transactions``: one document per transaction id (its unique ``_id`` is the registry that
  tells a transaction id already received on another VIBAN), with its split as it stands and
  the event that last changed it; the partial index on ``unmatched_at`` is the unmatched list;
- ``overpayments``: one document per forwarding under its deterministic event id, indexed by
  (merchant, forwarded_at): the overpayment report;
- ``merchants``: payout IBANs from ``merchants.configured``.

Held credit is forwarded on the runtime's timers: one timer per account, due at
``next_action_at(account)``, kept in step by ``flush``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pymongo import ASCENDING, InsertOne, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.reconciliation.domain import (
    Account,
    Holding,
    Invoice,
    Line,
    MerchantDebit,
    Payee,
    Transaction,
    next_action_at,
)
from shared.runtime.timers import COLLECTION as TIMERS
from shared.runtime.timers import Timers
from shared.runtime.transient import ConcurrencyConflict

Doc = dict[str, Any]
FORWARD_ACTION = "forward_credit"
ACCOUNTS = "accounts"
TRANSACTIONS = "transactions"
OVERPAYMENTS = "overpayments"
MERCHANTS = "merchants"


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    await db[ACCOUNTS].create_index([("order_ids", ASCENDING)], name="order_ids")
    # Only accounts holding credit: the held-credit and overdue-credit gauges read these.
    await db[ACCOUNTS].create_index(
        [("next_action_at", ASCENDING)], name="next_action_at", sparse=True
    )
    await db[TRANSACTIONS].create_index(
        [("unmatched_at", ASCENDING)],
        name="unmatched",
        partialFilterExpression={"unmatched_cents": {"$gt": 0}},
    )
    await db[OVERPAYMENTS].create_index(
        [("merchant_id", ASCENDING), ("forwarded_at", ASCENDING)], name="merchant_forwarded_at"
    )


def account_query(viban: str) -> Doc:
    """How a payment finds its account: by ``_id``, one document."""
    return {"_id": viban}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def invoice_to_doc(i: Invoice) -> Doc:
    return {
        "invoice_number": i.invoice_number,
        "order_id": i.order_id,
        "gross_cents": i.gross,
        "issued_on": i.issued_on.isoformat(),
        "due_on": i.due_on.isoformat(),
        "credited_cents": i.credited,
        "allocated_cents": i.allocated,
        "status": i.status,
        "credit_notes": [[k, v] for k, v in i.credit_notes.items()],
    }


def invoice_from_doc(d: Doc) -> Invoice:
    return Invoice(
        invoice_number=d["invoice_number"],
        order_id=d["order_id"],
        gross=d["gross_cents"],
        issued_on=date.fromisoformat(d["issued_on"]),
        due_on=date.fromisoformat(d["due_on"]),
        credited=d["credited_cents"],
        allocated=d["allocated_cents"],
        status=d["status"],
        credit_notes=dict(d["credit_notes"]),
    )


def transaction_to_doc(t: Transaction) -> Doc:
    return {
        "transaction_id": t.transaction_id,
        "kind": t.kind,
        "amount_cents": t.amount,
        "currency": t.currency,
        "booked_on": t.booked_on.isoformat(),
        "received_at": t.received_at,
        "fingerprint": t.fingerprint,
        "remittance": t.remittance,
        "lines": [[x.invoice_number, x.amount, x.matched_by, x.seq] for x in t.lines],
        "holdings": [[h.amount, h.since, h.until] for h in t.holdings],
        "forwarded_cents": t.forwarded,
        "unmatched_cents": t.unmatched,
        "unmatched_reason": t.unmatched_reason,
        "statements": t.statements,
        "forwardings": t.forwardings,
        "creditor_iban": t.creditor_iban,
        "allocated_by_command": t.allocated_by_command,
    }


def transaction_from_doc(d: Doc) -> Transaction:
    return Transaction(
        transaction_id=d["transaction_id"],
        kind=d["kind"],
        amount=d["amount_cents"],
        currency=d["currency"],
        booked_on=date.fromisoformat(d["booked_on"]),
        received_at=_aware(d["received_at"]),
        fingerprint=d["fingerprint"],
        remittance=d["remittance"],
        lines=[Line(n, a, m, s) for n, a, m, s in d["lines"]],
        holdings=[Holding(a, _aware(s), _aware(u)) for a, s, u in d["holdings"]],
        forwarded=d["forwarded_cents"],
        unmatched=d["unmatched_cents"],
        unmatched_reason=d["unmatched_reason"],
        statements=d["statements"],
        forwardings=d["forwardings"],
        creditor_iban=d.get("creditor_iban", ""),
        allocated_by_command=d.get("allocated_by_command"),
    )


def account_to_doc(a: Account) -> Doc:
    doc: Doc = {
        "_id": a.viban,
        "merchant_id": a.merchant_id,
        "debtor_id": a.debtor_id,
        "orders": [[k, v] for k, v in a.orders.items()],
        "order_ids": sorted({*a.orders, *(i.order_id for i in a.invoices.values())}),
        "invoices": [invoice_to_doc(i) for i in a.invoices.values()],
        "transactions": [transaction_to_doc(t) for t in a.transactions.values()],
        "debits": [
            [d.debit_id, d.order_id, d.invoice_number, d.amount, d.collected]
            for d in a.debits.values()
        ],
        "moved_out": [[k, v] for k, v in a.moved_out.items()],
        "next_seq": a.next_seq,
        "version": a.version,
        "held_cents": a.held,
    }
    due = next_action_at(a)
    if due is not None:
        doc["next_action_at"] = due
    return doc


def account_from_doc(d: Doc) -> Account:
    return Account(
        viban=d["_id"],
        merchant_id=d["merchant_id"],
        debtor_id=d["debtor_id"],
        orders=dict(d["orders"]),
        invoices={i["invoice_number"]: invoice_from_doc(i) for i in d["invoices"]},
        transactions={t["transaction_id"]: transaction_from_doc(t) for t in d["transactions"]},
        debits={
            debit_id: MerchantDebit(debit_id, order_id, number, amount, collected)
            for debit_id, order_id, number, amount, collected in d["debits"]
        },
        moved_out=dict(d.get("moved_out", [])),
        next_seq=d["next_seq"],
        version=d["version"],
    )


def ledger_doc(account: Account, tx: Transaction, caused_by: str, at: datetime) -> Doc:
    """The transaction as it stands, for the ops commands and the unmatched list."""
    doc: Doc = {
        "_id": tx.transaction_id,
        "viban": account.viban,
        "received_on": tx.creditor_iban or account.viban,
        "merchant_id": account.merchant_id,
        "debtor_id": account.debtor_id,
        "kind": tx.kind,
        "fingerprint": tx.fingerprint,
        "amount_cents": tx.amount,
        "currency": tx.currency,
        "booked_on": tx.booked_on.isoformat(),
        "received_at": tx.received_at,
        "remittance": tx.remittance,
        "allocations": [
            {
                "invoice_number": x.invoice_number,
                "amount_cents": x.amount,
                "matched_by": x.matched_by,
            }
            for x in tx.lines
        ],
        "allocated_cents": tx.allocated,
        "held_cents": tx.held,
        "forwarded_cents": tx.forwarded,
        "unmatched_cents": tx.unmatched,
        "unmatched_reason": tx.unmatched_reason,
        "statements": tx.statements,
        "allocated_by_command": tx.allocated_by_command,
        "last_caused_by": caused_by,
        "updated_at": at,
    }
    if tx.unmatched:
        doc["unmatched_at"] = tx.received_at
    return doc


@dataclass
class ReconciliationView:
    """What one batch reads and writes, loaded with a few ``$in`` queries."""

    session: AsyncClientSession
    db: AsyncDatabase[Doc]
    accounts: dict[str, Account] = field(default_factory=dict)
    loaded_versions: dict[str, int] = field(default_factory=dict)
    loaded_due: dict[str, datetime | None] = field(default_factory=dict)
    order_vibans: dict[str, str] = field(default_factory=dict)
    # transaction id -> VIBAN it is recorded on (from the ledger, then this batch)
    transaction_vibans: dict[str, str] = field(default_factory=dict)
    payees: dict[str, Payee] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    dirty_merchants: set[str] = field(default_factory=set)
    forward_timer_claimed: set[str] = field(default_factory=set)
    ledger: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    # transactions of the accounts as loaded: their ledger documents exist
    loaded_transactions: set[str] = field(default_factory=set)
    overpayments: list[Doc] = field(default_factory=list)

    async def load_accounts(self, vibans: Iterable[str]) -> None:
        wanted = list(set(vibans) - self.accounts.keys())
        if not wanted:
            return
        found = self.db[ACCOUNTS].find({"_id": {"$in": wanted}}, session=self.session)
        async for doc in found:
            self._keep(account_from_doc(doc))

    async def load_accounts_of_orders(self, order_ids: Iterable[str]) -> None:
        wanted = list(set(order_ids) - self.order_vibans.keys())
        if not wanted:
            return
        found = self.db[ACCOUNTS].find({"order_ids": {"$in": wanted}}, session=self.session)
        async for doc in found:
            if doc["_id"] not in self.accounts:
                self._keep(account_from_doc(doc))
            for order_id in doc["order_ids"]:
                self.order_vibans[order_id] = doc["_id"]

    def _keep(self, account: Account) -> None:
        self.accounts[account.viban] = account
        self.loaded_versions[account.viban] = account.version
        self.loaded_due[account.viban] = next_action_at(account)
        self.loaded_transactions.update(account.transactions)
        for order_id in (*account.orders, *(i.order_id for i in account.invoices.values())):
            self.order_vibans[order_id] = account.viban

    async def load_transaction_vibans(self, transaction_ids: Iterable[str]) -> None:
        wanted = list(set(transaction_ids) - self.transaction_vibans.keys())
        if not wanted:
            return
        found = self.db[TRANSACTIONS].find(
            {"_id": {"$in": wanted}}, {"viban": 1}, session=self.session
        )
        async for doc in found:
            self.transaction_vibans[doc["_id"]] = doc["viban"]

    async def load_payees(self, merchant_ids: Iterable[str]) -> None:
        wanted = list(set(merchant_ids) - self.payees.keys())
        if not wanted:
            return
        found = self.db[MERCHANTS].find({"_id": {"$in": wanted}}, session=self.session)
        async for doc in found:
            self.payees[doc["_id"]] = Payee(doc["_id"], doc["payout_iban"])

    def account(self, viban: str) -> Account:
        return self.accounts.get(viban) or Account(viban=viban)

    def viban_of_order(self, order_id: str) -> str | None:
        return self.order_vibans.get(order_id)

    def put(self, account: Account) -> None:
        self.accounts[account.viban] = account
        self.dirty.add(account.viban)
        for order_id in (*account.orders, *(i.order_id for i in account.invoices.values())):
            self.order_vibans[order_id] = account.viban

    def put_payee(self, payee: Payee) -> None:
        self.payees[payee.merchant_id] = payee
        self.dirty_merchants.add(payee.merchant_id)

    def touch_transaction(
        self, viban: str, transaction_id: str, caused_by: str, at: datetime
    ) -> None:
        self.ledger[transaction_id] = (viban, caused_by, at)
        self.transaction_vibans[transaction_id] = viban

    def record_overpayment(self, doc: Doc) -> None:
        self.overpayments.append(doc)

    async def flush(self) -> None:
        s = self.session
        if self.dirty_merchants:
            await self.db[MERCHANTS].bulk_write(
                [
                    ReplaceOne(
                        {"_id": m}, {"_id": m, "payout_iban": self.payees[m].payout_iban}, True
                    )
                    for m in sorted(self.dirty_merchants)
                ],
                ordered=False,
                session=s,
            )
        ops: list[Any] = []
        guarded = 0
        for viban in sorted(self.dirty):
            account = self.accounts[viban]
            read = self.loaded_versions.get(viban)
            account.version = (read or 0) + 1
            if read is None:
                ops.append(InsertOne(account_to_doc(account)))
            else:
                guarded += 1
                ops.append(ReplaceOne({"_id": viban, "version": read}, account_to_doc(account)))
        if ops:
            result = await self.db[ACCOUNTS].bulk_write(ops, ordered=False, session=s)
            if result.matched_count != guarded:
                raise ConcurrencyConflict("an account changed since it was read")
        timer_ops: list[Any] = []
        for viban in sorted(self.dirty):
            due = next_action_at(self.accounts[viban])
            claimed = viban in self.forward_timer_claimed
            if due == self.loaded_due.get(viban) and not claimed:
                continue
            if due is None:
                timer_ops.append(Timers.cancel_op(FORWARD_ACTION, viban))
            else:
                timer_ops.append(
                    Timers.schedule_op(action=FORWARD_ACTION, entity=viban, key=viban, due_at=due)
                )
        if timer_ops:
            await self.db[TIMERS].bulk_write(timer_ops, ordered=False, session=s)
        if self.ledger:
            ledger_ops: list[Any] = []
            for transaction_id, (viban, caused_by, at) in sorted(self.ledger.items()):
                account = self.accounts[viban]
                tx = account.transactions[transaction_id]
                new = transaction_id not in self.loaded_transactions
                if new and tx.allocated_by_command is None:
                    # New (not moved here by ops): a plain insert; the unique _id refuses the
                    # same id on two VIBANs (two workers at once: one retries, then finds
                    # the other's and refuses).
                    ledger_ops.append(InsertOne(ledger_doc(account, tx, caused_by, at)))
                    continue
                ledger_ops.append(
                    # Guarded by where it was received: a second VIBAN's transaction under the
                    # same id would be a duplicate key, never an overwrite.
                    ReplaceOne(
                        {"_id": transaction_id, "received_on": tx.creditor_iban or viban},
                        ledger_doc(account, tx, caused_by, at),
                        upsert=True,
                    )
                )
            await self.db[TRANSACTIONS].bulk_write(ledger_ops, ordered=False, session=s)
        if self.overpayments:
            await self.db[OVERPAYMENTS].insert_many(self.overpayments, ordered=False, session=s)
