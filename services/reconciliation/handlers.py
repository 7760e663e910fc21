"""Reconciliation: thin handling around the pure rules in :mod:`services.reconciliation.domain`.

Per batch: load the accounts the events refer to (by VIBAN, or by order id through the
accounts' ``order_ids`` index), apply each event in order in memory, store, emit. The engine
wraps it in one MongoDB transaction with the inbox, so an event redelivered after a crash
finds its effects stored and replays the stored outputs instead of deciding again.

Outputs the domain names (statements, forwardings, unmatched notices, settlements) go out
under the domain's derived event ids: a restatement is the same event whichever input or
worker caused it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge
from pymongo.asynchronous.database import AsyncDatabase

from services.reconciliation import domain
from services.reconciliation.store import (
    ACCOUNTS,
    TRANSACTIONS,
    ReconciliationView,
    ensure_indexes,
)
from shared import events as ev
from shared import topics
from shared.money import cents, from_cents
from shared.runtime.engine import Batch, Inbound
from shared.runtime.timers import Timers

# Kafka orders records within a partition, never across topics: apply what other events
# refer to first (the sort is stable, so each topic keeps its own order). What still arrives
# too early is parked.
_APPLY_ORDER = {
    topics.MERCHANTS_CONFIGURED: 0,
    topics.ORDERS_DECIDED: 1,
    topics.INVOICES_ISSUED: 2,
    topics.CREDIT_NOTES_ACCEPTED: 3,
    topics.INVOICES_STATE_CHANGED: 4,
    topics.BANK_TRANSACTIONS: 5,
    topics.PAYMENTS_REPORTED: 6,
    topics.MERCHANT_DEBITS_COLLECTED: 7,
    topics.RECONCILIATION_ALLOCATION_REQUESTED: 8,
}

_BY_ORDER = (
    ev.CreditNoteAccepted,
    ev.InvoiceStateChanged,
    ev.PaymentReported,
    ev.MerchantDebitCollected,
    ev.AllocationRequested,
)

TRANSACTION_OUTCOMES = ("allocated", "held", "unmatched", "duplicate", "refused")
REJECTION_CODES = (
    "transaction_conflict",
    "empty_transaction",
    "viban_owner_mismatch",
    "invoice_number_reused",
    "empty_invoice",
    "credit_note_number_reused",
    "invoice_canceled",
    "invoice_settled",
    "empty_credit_note",
    "credit_exceeds_invoice",
    "unknown_invoice",
    "unsupported_currency",
    "empty_report",
    "report_exceeds_open_amount",
    "unknown_debit",
    "debit_mismatch",
    "merchant_mismatch",
    "unknown_transaction",
    "transaction_not_unmatched",
)
GAUGE_REFRESH_SECONDS = 10.0


def _causes_first(item: Inbound) -> int:
    return _APPLY_ORDER.get(item.topic, 9)


class ReconciliationMetrics:
    """Labels from closed sets only (outcomes, tiers, reason codes), never an account."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.transactions = Counter(
            "reconciliation_transactions",
            "Transactions (bank transfers and collected merchant debits) by outcome when first "
            "handled: allocated in full, held (in part) as credit, unmatched, duplicate (the "
            "same transaction again) or refused.",
            ["outcome"],
            registry=registry,
        )
        self.allocated_amount = Counter(
            "reconciliation_allocated_amount",
            "Money allocated to invoices, in currency units, by how it was matched.",
            ["matched_by"],
            registry=registry,
        )
        self.forwarded = Counter(
            "reconciliation_overpayments_forwarded",
            "Held credit forwarded to merchants past its grace period (forwardings).",
            registry=registry,
        )
        self.forwarded_amount = Counter(
            "reconciliation_overpayments_forwarded_amount",
            "Sum of credit forwarded to merchants, in currency units.",
            registry=registry,
        )
        self.rejections = Counter(
            "reconciliation_commands_rejected",
            "Inputs the reconciliation rules refused, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.held = Gauge(
            "reconciliation_credit_held_amount",
            "Debtors' credit held, in currency units, all accounts (refreshed on ticks by the "
            "worker that reads the clock).",
            registry=registry,
        )
        self.overdue = Gauge(
            "reconciliation_credit_overdue_amount",
            "Held credit whose grace period has ended and that is not forwarded yet, in "
            "currency units (refreshed on ticks).",
            registry=registry,
        )
        self.unmatched = Gauge(
            "reconciliation_unmatched_payments",
            "Transactions unmatched and not allocated by hand yet (refreshed on ticks).",
            registry=registry,
        )
        self.unmatched_amount = Gauge(
            "reconciliation_unmatched_amount",
            "Sum of unmatched transactions, in currency units (refreshed on ticks).",
            registry=registry,
        )
        for outcome in TRANSACTION_OUTCOMES:
            self.transactions.labels(outcome)
        for tier in get_args(domain.MatchedBy):
            self.allocated_amount.labels(tier)
        for code in REJECTION_CODES:
            self.rejections.labels(code)


# Outputs are built with ``model_construct`` (and the two every payment makes, straight as
# JSON): every value comes from the typed domain (cents converted by ``from_cents``), as in
# shipping. tests/unit/test_reconciliation_wire.py holds the JSON equal to the models' own; the
# integration tests read every output back through the contract's validation.
_js: Callable[[str], str] = json.encoder.encode_basestring


def _money(cents: int) -> str:
    return f'"{from_cents(cents)}"'


def statement_json(s: domain.PaymentAllocated) -> str:
    """The ``data`` of ``payment.allocated.v1`` for a statement, as the model writes it."""
    allocations = ",".join(
        '{"invoice_number":'
        + _js(a.invoice_number)
        + ',"amount":'
        + _money(a.amount)
        + ',"matched_by":'
        + _js(a.matched_by)
        + "}"
        for a in s.allocations
    )
    return (
        '{"transaction_id":'
        + _js(s.transaction_id)
        + ',"creditor_iban":'
        + _js(s.creditor_iban)
        + ',"allocations":['
        + allocations
        + '],"overpayment":'
        + _money(s.overpayment)
        + ',"unallocated":'
        + _money(s.unallocated)
        + ',"currency":'
        + _js(s.currency)
        + ',"restatement":'
        + str(s.restatement)
        + "}"
    )


def settled_json(s: domain.InvoiceSettled) -> str:
    """The ``data`` of ``invoice.settled.v1``, as the model writes it."""
    return (
        '{"invoice_number":'
        + _js(s.invoice_number)
        + ',"order_id":'
        + _js(s.order_id)
        + ',"settled_on":"'
        + s.settled_on.isoformat()
        + '","paid_total":'
        + _money(s.paid_total)
        + ',"currency":"EUR"}'
    )


class ReconciliationService:
    name = "reconciliation"
    input_topics: tuple[str, ...] = (
        topics.MERCHANTS_CONFIGURED,
        topics.ORDERS_DECIDED,
        topics.INVOICES_ISSUED,
        topics.INVOICES_STATE_CHANGED,
        topics.CREDIT_NOTES_ACCEPTED,
        topics.BANK_TRANSACTIONS,
        topics.PAYMENTS_REPORTED,
        topics.MERCHANT_DEBITS_COLLECTED,
        topics.RECONCILIATION_ALLOCATION_REQUESTED,
        topics.CLOCK_TICKS,
        topics.timer_topic("reconciliation"),
    )

    def __init__(self, registry: CollectorRegistry, grace: timedelta) -> None:
        self.metrics = ReconciliationMetrics(registry)
        self.grace = grace
        # Forwarding: one timer per account holding credit, due when its oldest credit's
        # grace period ends (ReconciliationView.flush keeps it in step with the account).
        self.timers = Timers(self.name, registry)
        self.db: AsyncDatabase[dict[str, Any]] | None = None
        self._gauges_at = 0.0
        self._transaction_counters = {
            outcome: self.metrics.transactions.labels(outcome) for outcome in TRANSACTION_OUTCOMES
        }

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db
        await ensure_indexes(db)
        await self.timers.setup(db)

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None, "setup() runs first"
        await self.timers.fire_due_on_ticks(batch)
        view = ReconciliationView(batch.session, self.db)
        await self._preload(view, batch.items)
        due = await self.timers.claim_all(
            batch, [i for i in batch.items if isinstance(i.data, ev.TimerFired)]
        )
        for item in sorted(batch.items, key=_causes_first):
            self._handle_one(view, batch, item)
        for item in due:
            self._forward(view, batch, item)
        await view.flush()
        ticks = [i.now for i in batch.items if isinstance(i.data, ev.ClockTick)]
        if ticks:
            await self._refresh_gauges(max(ticks).astimezone(UTC))

    async def _preload(self, view: ReconciliationView, items: list[Inbound]) -> None:
        vibans: list[str] = []
        order_ids: list[str] = []
        transaction_ids: list[str] = []
        for item in items:
            data = item.data
            if isinstance(data, ev.BankTransactionReceived):
                vibans.append(data.creditor_iban)
                transaction_ids.append(data.transaction_id)
            elif isinstance(data, ev.OrderDecided | ev.InvoiceIssued) and data.viban:
                vibans.append(data.viban)
            elif isinstance(data, ev.TimerFired):
                vibans.append(data.entity)
            if isinstance(data, ev.AllocationRequested):
                vibans.append(data.creditor_iban)
            if isinstance(data, _BY_ORDER):
                order_ids.append(data.order_id)
        await view.load_accounts(vibans)
        await view.load_accounts_of_orders(order_ids)
        await view.load_transaction_vibans(transaction_ids)
        await view.load_payees(
            {view.accounts[d.entity].merchant_id or "" for d in _timers(items, view)}
        )

    # -- deciding -------------------------------------------------------------------------

    def _handle_one(self, view: ReconciliationView, batch: Batch, item: Inbound) -> None:
        data = item.data
        now = item.now.astimezone(UTC)
        match data:
            case ev.MerchantConfigured():
                view.put_payee(domain.Payee(data.merchant_id, data.payout_iban))
            case ev.OrderDecided(viban=str() as viban):
                result = domain.record_order(
                    view.account(viban),
                    order_id=data.order_id,
                    merchant_id=data.merchant_id,
                    debtor_id=data.debtor_company_id or "",
                    decision=data.state,
                )
                self._apply(view, batch, item, result, data.order_id)
            case ev.InvoiceIssued():
                result = domain.issue_invoice(
                    view.account(data.viban),
                    invoice_number=data.invoice_number,
                    order_id=data.order_id,
                    merchant_id=data.merchant_id,
                    debtor_id=data.debtor_company_id,
                    gross=cents(data.amount.gross),
                    issued_on=data.issued_on,
                    due_on=data.due_on,
                    now=now,
                    grace=self.grace,
                )
                self._apply(view, batch, item, result, data.order_id)
            case ev.CreditNoteAccepted():
                account = self._account_of_order(view, data.order_id)
                result = domain.apply_credit_note(
                    account,
                    invoice_number=data.invoice_number,
                    credit_note_number=data.credit_note_number,
                    amount=cents(data.amount.gross),
                    now=now,
                    grace=self.grace,
                )
                self._apply(view, batch, item, result, data.order_id)
            case ev.InvoiceStateChanged(to="canceled"):
                account = self._account_of_order(view, data.order_id)
                result = domain.cancel_invoice(
                    account, invoice_number=data.invoice_number, now=now, grace=self.grace
                )
                self._apply(view, batch, item, result, data.order_id)
            case ev.BankTransactionReceived():
                account = view.account(data.creditor_iban)
                result = domain.receive_transfer(
                    account,
                    transaction_id=data.transaction_id,
                    amount=cents(data.amount),
                    currency=data.currency,
                    booking_date=data.booking_date,
                    debtor_name=data.debtor_name,
                    debtor_iban=data.debtor_iban,
                    remittance_information=data.remittance_information,
                    now=now,
                    grace=self.grace,
                    transaction_id_seen_on=view.transaction_vibans.get(data.transaction_id),
                    # Once the park has expired the VIBAN is unknown for good: unmatched.
                    may_wait=not item.park_expired,
                )
                self._count_transaction(batch, account, result, data.transaction_id)
                self._apply(view, batch, item, result, _order_of(account))
            case ev.PaymentReported():
                account = self._account_of_order(view, data.order_id)
                result = domain.report_payment(
                    account,
                    report_id=item.event.id,
                    order_id=data.order_id,
                    invoice_number=data.invoice_number,
                    amount=cents(data.amount),
                    currency=data.currency,
                )
                self._apply(view, batch, item, result, data.order_id)
            case ev.MerchantDebitCollected():
                account = self._account_of_order(view, data.order_id)
                result = domain.collect_debit(
                    account,
                    debit_id=data.debit_id,
                    order_id=data.order_id,
                    invoice_number=data.invoice_number,
                    amount=cents(data.amount),
                    now=now,
                    grace=self.grace,
                )
                self._count_transaction(batch, account, result, data.debit_id)
                self._apply(view, batch, item, result, data.order_id)
            case ev.AllocationRequested():
                self._allocate_by_hand(view, batch, item, data, now)

    def _account_of_order(self, view: ReconciliationView, order_id: str) -> domain.Account:
        viban = view.viban_of_order(order_id)
        # An order nobody told us about yet: an empty account under no VIBAN, on which every
        # rule parks or refuses (and which is never stored: nothing changes on it).
        return view.account(viban) if viban else domain.Account(viban="")

    def _allocate_by_hand(
        self,
        view: ReconciliationView,
        batch: Batch,
        item: Inbound,
        data: ev.AllocationRequested,
        now: datetime,
    ) -> None:
        source = view.account(data.creditor_iban)
        target_viban = view.viban_of_order(data.order_id)
        if target_viban is None:
            rejection = domain.Rejection("unknown_invoice", f"no order {data.order_id} known")
            batch.refuse(item, data.order_id, rejection, self.metrics.rejections)
            return
        target = view.account(target_viban)
        if (data.invoice_number, data.order_id) not in {
            (i.invoice_number, i.order_id) for i in target.invoices.values()
        }:
            rejection = domain.Rejection(
                "unknown_invoice", f"no invoice {data.invoice_number} on order {data.order_id}"
            )
            batch.refuse(item, data.order_id, rejection, self.metrics.rejections)
            return
        manual = domain.allocate_unmatched(
            source,
            target,
            transaction_id=data.transaction_id,
            invoice_number=data.invoice_number,
            command_id=item.event.id,
            now=now,
            grace=self.grace,
        )
        if manual.rejection is not None:
            batch.refuse(item, data.order_id, manual.rejection, self.metrics.rejections)
            return
        if not manual.effects:
            return
        before = source.transactions.get(data.transaction_id)
        view.put(manual.source)
        view.put(manual.target)
        for effect in manual.effects:
            self._emit(view, batch, item, manual.target, effect, {data.transaction_id: before})

    def _forward(self, view: ReconciliationView, batch: Batch, item: Inbound) -> None:
        """The account's forwarding timer fired (at the first tick on or after its due time)."""
        fired = item.data
        assert isinstance(fired, ev.TimerFired)
        account = view.accounts.get(fired.entity)
        if account is None:
            return
        view.forward_timer_claimed.add(account.viban)
        payee = view.payees.get(account.merchant_id or "")
        result = domain.forward_due_credit(account, now=fired.fired_at.astimezone(UTC), payee=payee)
        if result.park is not None or result.rejection is not None:
            # No payout IBAN yet: the credit stays held and the timer is set again (due now,
            # so the next tick retries); the overdue-credit gauge and its alert show it.
            view.put(account)
            return
        self._apply(view, batch, item, result, _order_of(account))

    # -- storing and emitting -------------------------------------------------------------

    def _apply(
        self,
        view: ReconciliationView,
        batch: Batch,
        item: Inbound,
        result: domain.Result,
        order_id: str,
    ) -> None:
        if batch.park_or_refuse(
            item, order_id, result.park, result.rejection, self.metrics.rejections
        ):
            return
        account = result.account
        if account is view.accounts.get(account.viban) and not result.effects:
            return  # nothing changed
        if not account.viban:
            return  # nothing is stored for an order nobody knows
        previous = view.accounts.get(account.viban)
        before = dict(previous.transactions) if previous is not None else {}
        view.put(account)
        for effect in result.effects:
            self._emit(view, batch, item, account, effect, before)

    def _emit(
        self,
        view: ReconciliationView,
        batch: Batch,
        item: Inbound,
        account: domain.Account,
        effect: domain.Effect,
        before: Mapping[str, domain.Transaction | None],
    ) -> None:
        match effect:
            case domain.PaymentAllocated():
                if len(effect.allocations) > ev.MAX_ALLOCATIONS:
                    # The contract bounds a statement; past it the input goes to the DLQ
                    # (nothing stored) rather than an invalid event out.
                    raise ValueError(f"{effect.transaction_id}: more allocations than allowed")
                view.touch_transaction(
                    account.viban, effect.transaction_id, item.event.id, item.now
                )
                batch.emit_wire(
                    item,
                    topic=ev.PaymentAllocated.TOPIC,
                    event_type=ev.PaymentAllocated.EVENT_TYPE,
                    key=effect.creditor_iban,
                    data_json=statement_json(effect),
                    event_id=effect.event_id,
                )
                self._count_allocated(batch, before.get(effect.transaction_id), effect)
            case domain.InvoiceSettled():
                batch.emit_wire(
                    item,
                    topic=ev.InvoiceSettled.TOPIC,
                    event_type=ev.InvoiceSettled.EVENT_TYPE,
                    key=effect.order_id,
                    data_json=settled_json(effect),
                    event_id=effect.event_id,
                )
            case domain.OverpaymentForwarded():
                amount = from_cents(effect.amount)
                data: ev.EventData = ev.PaymentOverpaymentForwarded.model_construct(
                    transaction_id=effect.transaction_id,
                    merchant_id=effect.merchant_id,
                    amount=amount,
                    payout_iban=effect.payout_iban,
                )
                batch.emit(item, data, event_id=effect.event_id)
                view.record_overpayment(
                    {
                        "_id": effect.event_id,
                        "transaction_id": effect.transaction_id,
                        "merchant_id": effect.merchant_id,
                        "viban": account.viban,
                        "debtor_id": account.debtor_id,
                        "amount_cents": effect.amount,
                        "currency": domain.SUPPORTED_CURRENCY,
                        "payout_iban": effect.payout_iban,
                        "forwarded_at": item.now,
                        "caused_by": item.event.id,
                    }
                )

                def count_forwarded() -> None:
                    self.metrics.forwarded.inc()
                    self.metrics.forwarded_amount.inc(float(amount))

                batch.after_commit.append(count_forwarded)
            case domain.PaymentUnmatched():
                data = ev.PaymentUnmatched.model_construct(
                    transaction_id=effect.transaction_id,
                    creditor_iban=effect.creditor_iban,
                    reason=effect.reason,
                )
                batch.emit(item, data, event_id=effect.event_id)
            case domain.MerchantDebitInstructed():
                batch.emit(
                    item,
                    ev.MerchantDebitInstructed.model_construct(
                        debit_id=effect.debit_id,
                        merchant_id=effect.merchant_id,
                        order_id=effect.order_id,
                        invoice_number=effect.invoice_number,
                        amount=from_cents(effect.amount),
                    ),
                )

    # -- metrics --------------------------------------------------------------------------

    def _count_transaction(
        self, batch: Batch, before: domain.Account, result: domain.Result, transaction_id: str
    ) -> None:
        if result.park is not None:
            return
        outcome: str
        if result.rejection is not None:
            outcome = "refused"
        elif result.account is before:
            outcome = "duplicate"
        else:
            tx = result.account.transactions[transaction_id]
            outcome = "unmatched" if tx.unmatched else "held" if tx.held else "allocated"
        batch.after_commit.append(self._transaction_counters[outcome].inc)

    def _count_allocated(
        self,
        batch: Batch,
        before: domain.Transaction | None,
        statement: domain.PaymentAllocated,
    ) -> None:
        """What this restatement allocated beyond the transaction as it was, per tier (money
        freed by a cancel is not subtracted: the counter counts allocations made)."""
        now: dict[str, int] = {}
        for line in statement.allocations:
            now[line.matched_by] = now.get(line.matched_by, 0) + line.amount
        previous: dict[str, int] = {}
        for kept in before.lines if before is not None else []:
            previous[kept.matched_by] = previous.get(kept.matched_by, 0) + kept.amount
        grown = {k: v - previous.get(k, 0) for k, v in now.items() if v > previous.get(k, 0)}
        if not grown:
            return

        def count() -> None:
            for tier, amount in grown.items():
                self.metrics.allocated_amount.labels(tier).inc(float(from_cents(amount)))

        batch.after_commit.append(count)

    async def _refresh_gauges(self, now: datetime) -> None:
        """Totals for the held-credit and unmatched gauges as of the latest tick (the clock
        the grace periods run on), read through partial and sparse indexes (only accounts
        holding credit, only unmatched transactions), at most every
        ``GAUGE_REFRESH_SECONDS``, outside the batch's transaction."""
        if time.monotonic() - self._gauges_at < GAUGE_REFRESH_SECONDS:
            return
        self._gauges_at = time.monotonic()
        assert self.db is not None
        held = await _sum(self.db[ACCOUNTS], {"next_action_at": {"$ne": None}}, "held_cents")
        self.metrics.held.set(float(from_cents(held)))
        overdue = await _overdue(self.db, now)
        self.metrics.overdue.set(float(from_cents(overdue)))
        unmatched_filter = {"unmatched_cents": {"$gt": 0}}
        count = await self.db[TRANSACTIONS].count_documents(unmatched_filter, hint="unmatched")
        amount = await _sum(self.db[TRANSACTIONS], unmatched_filter, "unmatched_cents")
        self.metrics.unmatched.set(count)
        self.metrics.unmatched_amount.set(float(from_cents(amount)))


async def _sum(collection: Any, query: dict[str, Any], field: str) -> int:
    rows = await (
        await collection.aggregate(
            [{"$match": query}, {"$group": {"_id": None, "total": {"$sum": f"${field}"}}}]
        )
    ).to_list()
    return int(rows[0]["total"]) if rows else 0


async def _overdue(db: AsyncDatabase[dict[str, Any]], now: datetime) -> int:
    """Credit past its grace period still held: from the accounts whose next forwarding is
    due (the sparse ``next_action_at`` index), the holdings whose grace period has ended."""
    total = 0
    found = db[ACCOUNTS].find({"next_action_at": {"$lte": now}}, {"transactions.holdings": 1})
    async for doc in found:
        for tx in doc["transactions"]:
            for amount, _since, stored_until in tx["holdings"]:
                until = stored_until if stored_until.tzinfo else stored_until.replace(tzinfo=UTC)
                if until <= now:
                    total += amount
    return total


def _timers(items: list[Inbound], view: ReconciliationView) -> list[ev.TimerFired]:
    return [
        i.data
        for i in items
        if isinstance(i.data, ev.TimerFired) and i.data.entity in view.accounts
    ]


def _order_of(account: domain.Account) -> str:
    """The ``order_id`` a refusal carries when the input names no order (a bank transfer):
    the account's latest order, else its VIBAN."""
    return next(reversed(account.orders), None) or account.viban or "unknown"
