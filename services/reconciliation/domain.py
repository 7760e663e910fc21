"""Reconciliation: where the money a debtor pays goes. Pure and synchronous: every function
takes an account's state (and the time, where it matters) and returns the new state with the
effects to publish, or a refusal, or a park. Amounts are integer cents.

One ``Account`` per VIBAN, which names one (merchant, debtor). The rules, in one place:

- an invoice's open amount is gross - accepted credit notes - what is allocated to it; at
  zero (with something to pay) it is settled, once, with ``paid_total`` = what it took;
- new money (a bank transfer, or a collected merchant debit) goes, in this order, to
  (1) the invoices its remittance text names (``matching.py``), in the order named;
  (2) one open invoice whose open amount equals what is left exactly; (3) the open invoices
  oldest due date first, then oldest issue date, then invoice number. A collected merchant
  debit goes first to the invoice it was reported for. Each allocation says how it was
  matched (``matched_by``);
- what no open invoice can take is held as the debtor's credit for ``grace`` (default three
  days) from the moment it became credit; money paid toward an invoice that is later
  canceled, or credited below what was already paid (newest allocation first), becomes
  credit the same way. Credit is never held while one of the account's open invoices could
  take it: it is applied at once (the invoice its transfer's text named first, then oldest
  credit first), so invoices issued meanwhile take it before it is forwarded; past its grace
  period it is forwarded to the merchant's payout IBAN;
- every change to a transaction's split restates the whole transaction in a
  ``PaymentAllocated`` (numbered, with a derived event id): amount = allocations +
  forwarded + held + unmatched, to the cent;
- a transfer to an unknown VIBAN, in a currency other than EUR, or to the VIBAN of orders that
  were never accepted is unmatched, with a reason, and restated as wholly unallocated;
- a payment the merchant reports instructs a direct debit from the merchant (``debit_id``
  derived from the report); its collection is new money as above. A report above what is
  still open (less debits not yet collected) or for a settled or canceled invoice is refused;
- the same transaction id with the same content is one payment; with different content, or
  already seen on another VIBAN, it is refused and changes nothing.

Every function works on a copy: a refused command changes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal

from services.reconciliation.matching import named_invoices
from shared.ids import uuid5_hex, uuid5_str
from shared.outcomes import Park as Park  # noqa: PLC0414 - part of this domain's answers
from shared.outcomes import Rejection as Rejection  # noqa: PLC0414 - likewise

MatchedBy = Literal["invoice_number", "exact_amount", "oldest_due", "held_credit", "merchant_debit"]
OrderDecision = Literal["created", "declined", "waiting"]
InvoiceStatus = Literal["open", "settled", "canceled"]
TransactionKind = Literal["bank_transfer", "merchant_debit"]
UnmatchedReason = Literal[
    "unknown_viban", "unsupported_currency", "order_declined", "unknown_order"
]

DEFAULT_GRACE = timedelta(days=3)
SUPPORTED_CURRENCY = "EUR"

# Derived ids: the same cause always names the same event or debit, so a re-run after a crash
# publishes under the same id and consumers deduplicate it.
_NAMESPACE = uuid.UUID("3d0f9a52-8f1e-4c61-b7a4-2e9c5d7b1f08")


def statement_event_id(transaction_id: str, restatement: int) -> str:
    """The event id of the ``restatement``-th (0 = first) payments.allocated of a transaction."""
    return uuid5_str(_NAMESPACE, f"payments.allocated/{transaction_id}/{restatement}")


def forwarded_event_id(transaction_id: str, forwarding: int) -> str:
    return uuid5_str(_NAMESPACE, f"payments.overpayment_forwarded/{transaction_id}/{forwarding}")


def unmatched_event_id(transaction_id: str) -> str:
    return uuid5_str(_NAMESPACE, f"payments.unmatched/{transaction_id}")


def settled_event_id(viban: str, invoice_number: str) -> str:
    return uuid5_str(_NAMESPACE, f"invoices.settled/{viban}/{invoice_number}")


def debit_id_for(order_id: str, invoice_number: str, report_id: str) -> str:
    """One debit per payment report (``report_id``: the report's event id)."""
    return f"md_{uuid5_hex(_NAMESPACE, f'merchant_debit/{order_id}/{invoice_number}/{report_id}')}"


def transfer_fingerprint(
    *,
    creditor_iban: str,
    amount: int,
    currency: str,
    booking_date: date,
    debtor_name: str,
    debtor_iban: str,
    remittance_information: str,
) -> str:
    content = [
        creditor_iban,
        amount,
        currency,
        booking_date.isoformat(),
        debtor_name,
        debtor_iban,
        remittance_information,
    ]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


# -- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payee:
    """Where forwarded credit goes: the merchant's payout account."""

    merchant_id: str
    payout_iban: str


@dataclass
class Invoice:
    invoice_number: str
    order_id: str
    gross: int
    issued_on: date
    due_on: date
    credited: int = 0  # accepted credit notes
    allocated: int = 0  # what transactions have allocated to it
    status: InvoiceStatus = "open"
    credit_notes: dict[str, int] = field(default_factory=dict)  # number -> amount

    @property
    def amount_due(self) -> int:
        """What the invoice is worth: nothing once canceled."""
        return 0 if self.status == "canceled" else self.gross - self.credited

    @property
    def open_amount(self) -> int:
        return self.amount_due - self.allocated if self.status == "open" else 0

    @property
    def order_key(self) -> tuple[date, date, str]:
        return (self.due_on, self.issued_on, self.invoice_number)


@dataclass(frozen=True)
class Line:
    """Part of a transaction allocated to an invoice. ``seq`` orders allocations across the
    account, so what is freed from an invoice is taken from its newest allocations."""

    invoice_number: str
    amount: int
    matched_by: MatchedBy
    seq: int


@dataclass(frozen=True)
class Holding:
    """Part of a transaction held as the debtor's credit since ``since``."""

    amount: int
    since: datetime
    until: datetime


@dataclass
class Transaction:
    transaction_id: str
    kind: TransactionKind
    amount: int
    currency: str
    booked_on: date
    received_at: datetime
    fingerprint: str
    remittance: str = ""
    lines: list[Line] = field(default_factory=list)
    holdings: list[Holding] = field(default_factory=list)
    forwarded: int = 0
    unmatched: int = 0
    unmatched_reason: UnmatchedReason | None = None
    statements: int = 0  # payments.allocated published so far
    forwardings: int = 0  # payments.overpayment_forwarded published so far
    # The VIBAN it was paid to, once ops moved it to another account (empty: this one's).
    creditor_iban: str = ""
    # The ops command that allocated it by hand, if one did.
    allocated_by_command: str | None = None

    @property
    def allocated(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.holdings)

    def clone(self) -> Transaction:
        twin = copy.copy(self)
        twin.lines, twin.holdings = list(self.lines), list(self.holdings)
        return twin


@dataclass
class MerchantDebit:
    debit_id: str
    order_id: str
    invoice_number: str
    amount: int
    collected: bool = False


@dataclass
class Account:
    """Everything reconciliation knows about one VIBAN. A VIBAN nobody issued still gets an
    account (``merchant_id`` None) so its transactions are recorded once."""

    viban: str
    merchant_id: str | None = None
    debtor_id: str | None = None
    orders: dict[str, OrderDecision] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    debits: dict[str, MerchantDebit] = field(default_factory=dict)
    # Unmatched transactions ops moved to another VIBAN's account: id -> fingerprint, so the
    # same transfer imported again here is still one payment.
    moved_out: dict[str, str] = field(default_factory=dict)
    next_seq: int = 0
    version: int = 0  # the store's guard against two writers; the rules never read it

    def clone(self) -> Account:
        twin = copy.copy(self)
        twin.orders = dict(self.orders)
        twin.invoices = {
            k: replace(v, credit_notes=dict(v.credit_notes)) for k, v in self.invoices.items()
        }
        twin.transactions = {k: v.clone() for k, v in self.transactions.items()}
        twin.debits = {k: replace(v) for k, v in self.debits.items()}
        twin.moved_out = dict(self.moved_out)
        return twin

    @property
    def held(self) -> int:
        return sum(t.held for t in self.transactions.values())

    def open_invoices(self) -> list[Invoice]:
        """Invoices that can still take money, in the order oldest-due-first takes them."""
        found = [i for i in self.invoices.values() if i.open_amount > 0]
        return sorted(found, key=lambda i: i.order_key)


def next_action_at(account: Account) -> datetime | None:
    """When held credit next falls due for forwarding; None when nothing is held."""
    return min((h.until for t in account.transactions.values() for h in t.holdings), default=None)


# -- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocationLine:
    invoice_number: str
    amount: int
    matched_by: MatchedBy


@dataclass(frozen=True)
class PaymentAllocated:
    """The whole transaction as it stands: amount = Σ allocations + overpayment + unallocated
    where unallocated = held + unmatched."""

    transaction_id: str
    creditor_iban: str
    restatement: int
    amount: int
    allocations: tuple[AllocationLine, ...]
    overpayment: int  # forwarded to the merchant so far
    held: int
    unmatched: int
    currency: str

    @property
    def unallocated(self) -> int:
        return self.held + self.unmatched

    @property
    def event_id(self) -> str:
        return statement_event_id(self.transaction_id, self.restatement)


@dataclass(frozen=True)
class InvoiceSettled:
    viban: str
    invoice_number: str
    order_id: str
    settled_on: date
    paid_total: int

    @property
    def event_id(self) -> str:
        return settled_event_id(self.viban, self.invoice_number)


@dataclass(frozen=True)
class OverpaymentForwarded:
    transaction_id: str
    forwarding: int
    merchant_id: str
    amount: int
    payout_iban: str

    @property
    def event_id(self) -> str:
        return forwarded_event_id(self.transaction_id, self.forwarding)


@dataclass(frozen=True)
class PaymentUnmatched:
    transaction_id: str
    creditor_iban: str
    reason: UnmatchedReason

    @property
    def event_id(self) -> str:
        return unmatched_event_id(self.transaction_id)


@dataclass(frozen=True)
class MerchantDebitInstructed:
    debit_id: str
    merchant_id: str
    order_id: str
    invoice_number: str
    amount: int


Effect = (
    PaymentAllocated
    | InvoiceSettled
    | OverpaymentForwarded
    | PaymentUnmatched
    | MerchantDebitInstructed
)


@dataclass(frozen=True)
class Result:
    account: Account
    effects: tuple[Effect, ...] = ()
    rejection: Rejection | None = None
    park: Park | None = None

    @property
    def changed(self) -> bool:
        return self.rejection is None and self.park is None


def _refuse(account: Account, code: str, detail: str) -> Result:
    return Result(account, rejection=Rejection(code, detail))


def _park(account: Account, code: str, detail: str) -> Result:
    return Result(account, park=Park(code, detail))


def _fmt(value: int) -> str:
    sign, value = ("-", -value) if value < 0 else ("", value)
    return f"{sign}{value // 100}.{value % 100:02d}"


# -- moving money inside one account ----------------------------------------------------------


class _Change:
    """One command's work on a copy of the account: which transactions it restated and which
    invoices it settled, turned into effects in the order they happened."""

    def __init__(self, account: Account, now: datetime, grace: timedelta) -> None:
        self.account = account.clone()
        self.now, self.grace = now, grace
        self.touched: dict[str, None] = {}
        self.effects: list[Effect] = []
        self.settled: list[InvoiceSettled] = []

    def allocate(
        self, tx: Transaction, invoice: Invoice, amount: int, matched_by: MatchedBy, on: date
    ) -> None:
        assert 0 < amount <= invoice.open_amount
        invoice.allocated += amount
        tx.lines.append(Line(invoice.invoice_number, amount, matched_by, self.account.next_seq))
        self.account.next_seq += 1
        self.touched[tx.transaction_id] = None
        if invoice.open_amount == 0:
            self.settle(invoice, on)

    def settle(self, invoice: Invoice, on: date) -> None:
        invoice.status = "settled"
        self.settled.append(
            InvoiceSettled(
                self.account.viban, invoice.invoice_number, invoice.order_id, on, invoice.allocated
            )
        )

    def hold(self, tx: Transaction, amount: int) -> None:
        if amount > 0:
            tx.holdings.append(Holding(amount, self.now, self.now + self.grace))
            self.touched[tx.transaction_id] = None

    def place(
        self,
        tx: Transaction,
        amount: int,
        *,
        first: list[tuple[Invoice, MatchedBy]],
        on: date,
    ) -> None:
        """New money: the invoices ``first`` names, an exact amount, oldest due; rest held."""
        remaining = amount
        for invoice, matched_by in first:
            take = min(remaining, invoice.open_amount)
            if take > 0:
                self.allocate(tx, invoice, take, matched_by, on)
                remaining -= take
        if remaining > 0:
            exact = [i for i in self.account.open_invoices() if i.open_amount == remaining]
            if exact:
                self.allocate(tx, exact[0], remaining, "exact_amount", on)
                remaining = 0
        for invoice in self.account.open_invoices():
            if remaining == 0:
                break
            take = min(remaining, invoice.open_amount)
            self.allocate(tx, invoice, take, "oldest_due", on)
            remaining -= take
        self.hold(tx, remaining)

    def free(self, invoice: Invoice, amount: int) -> None:
        """Take ``amount`` back off the invoice, newest allocation first, as credit."""
        lines = sorted(
            (
                (line, tx)
                for tx in self.account.transactions.values()
                for line in tx.lines
                if line.invoice_number == invoice.invoice_number
            ),
            key=lambda pair: -pair[0].seq,
        )
        for line, tx in lines:
            if amount == 0:
                break
            take = min(amount, line.amount)
            tx.lines.remove(line)
            if take < line.amount:
                tx.lines.append(replace(line, amount=line.amount - take))
                tx.lines.sort(key=lambda kept: kept.seq)
            invoice.allocated -= take
            amount -= take
            self.hold(tx, take)
        assert amount == 0, "never free more than was allocated"

    def apply_held(self) -> None:
        """Credit goes to any open invoice at once: to the one its transfer named first,
        then oldest credit first."""
        on = self.now.date()
        for invoice in self.account.open_invoices():
            holders = [t for t in self.account.transactions.values() if t.holdings]
            if not holders:
                return
            naming = {
                t.transaction_id
                for t in holders
                if invoice.invoice_number in named_invoices(t.remittance, self.account.invoices)
            }
            pieces = sorted(
                (
                    (t.transaction_id not in naming, h.since, t.transaction_id, n, t)
                    for t in holders
                    for n, h in enumerate(t.holdings)
                ),
                key=lambda piece: piece[:4],
            )
            for _, _, _, n, tx in pieces:
                if invoice.open_amount == 0:
                    break
                holding = tx.holdings[n]
                take = min(holding.amount, invoice.open_amount)
                if take == 0:
                    continue
                tx.holdings[n] = replace(holding, amount=holding.amount - take)
                matched_by: MatchedBy = (
                    "invoice_number" if tx.transaction_id in naming else "held_credit"
                )
                self.allocate(tx, invoice, take, matched_by, on)
            for tx in holders:
                tx.holdings = [h for h in tx.holdings if h.amount > 0]

    def statement(self, tx: Transaction) -> PaymentAllocated:
        assert tx.allocated + tx.forwarded + tx.held + tx.unmatched == tx.amount, (
            f"transaction {tx.transaction_id} does not add up"
        )
        restated = PaymentAllocated(
            transaction_id=tx.transaction_id,
            creditor_iban=tx.creditor_iban or self.account.viban,
            restatement=tx.statements,
            amount=tx.amount,
            allocations=_merged(tx.lines),
            overpayment=tx.forwarded,
            held=tx.held,
            unmatched=tx.unmatched,
            currency=tx.currency,
        )
        tx.statements += 1
        return restated

    def result(self) -> Result:
        for transaction_id in self.touched:
            self.effects.append(self.statement(self.account.transactions[transaction_id]))
        self.effects.extend(self.settled)
        return Result(self.account, tuple(self.effects))


def _merged(lines: list[Line]) -> tuple[AllocationLine, ...]:
    """Lines for the same invoice matched the same way are one allocation, in the order
    they were first made."""
    totals: dict[tuple[str, MatchedBy], int] = {}
    for line in sorted(lines, key=lambda kept: kept.seq):
        key = (line.invoice_number, line.matched_by)
        totals[key] = totals.get(key, 0) + line.amount
    return tuple(AllocationLine(number, amount, how) for (number, how), amount in totals.items())


# -- what arrives from risk and shipping ------------------------------------------------------


def record_order(
    account: Account, *, order_id: str, merchant_id: str, debtor_id: str, decision: OrderDecision
) -> Result:
    """An order decided under this VIBAN (orders.decided)."""
    if (conflict := _owner_conflict(account, merchant_id, debtor_id)) is not None:
        return conflict
    new = account.clone()
    new.merchant_id, new.debtor_id = merchant_id, debtor_id
    new.orders[order_id] = decision
    return Result(new)


def _owner_conflict(account: Account, merchant_id: str, debtor_id: str) -> Result | None:
    if account.merchant_id is not None and (account.merchant_id, account.debtor_id) != (
        merchant_id,
        debtor_id,
    ):
        return _refuse(
            account,
            "viban_owner_mismatch",
            f"VIBAN {account.viban} belongs to merchant {account.merchant_id}, "
            f"debtor {account.debtor_id}",
        )
    return None


def issue_invoice(
    account: Account,
    *,
    invoice_number: str,
    order_id: str,
    merchant_id: str,
    debtor_id: str,
    gross: int,
    issued_on: date,
    due_on: date,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> Result:
    """An invoice issued on this VIBAN (invoices.issued): held credit goes to it at once."""
    if (conflict := _owner_conflict(account, merchant_id, debtor_id)) is not None:
        return conflict
    known = account.invoices.get(invoice_number)
    if known is not None:
        if (known.order_id, known.gross, known.issued_on, known.due_on) == (
            order_id,
            gross,
            issued_on,
            due_on,
        ):
            return Result(account)
        return _refuse(
            account,
            "invoice_number_reused",
            f"invoice {invoice_number} was already issued with different content",
        )
    if gross <= 0:
        return _refuse(account, "empty_invoice", "an invoice must have a positive gross amount")
    change = _Change(account, now, grace)
    new = change.account
    new.merchant_id, new.debtor_id = merchant_id, debtor_id
    new.orders[order_id] = "created"  # an issued invoice means its order was accepted
    new.invoices[invoice_number] = Invoice(invoice_number, order_id, gross, issued_on, due_on)
    change.apply_held()
    return change.result()


def apply_credit_note(
    account: Account,
    *,
    invoice_number: str,
    credit_note_number: str,
    amount: int,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> Result:
    """A credit note shipping accepted: the invoice is worth ``amount`` less. What was paid
    above its new worth becomes credit; credited to zero, the invoice is canceled."""
    invoice = account.invoices.get(invoice_number)
    if invoice is None:
        return _park(account, "unknown_invoice", f"no invoice {invoice_number} on this VIBAN yet")
    known = invoice.credit_notes.get(credit_note_number)
    if known is not None:
        if known == amount:
            return Result(account)
        return _refuse(
            account,
            "credit_note_number_reused",
            f"credit note {credit_note_number} was already applied with a different amount",
        )
    if invoice.status == "canceled":
        return _refuse(account, "invoice_canceled", f"invoice {invoice_number} is canceled")
    if amount <= 0:
        return _refuse(account, "empty_credit_note", "a credit note must reduce by more than 0")
    if amount > invoice.gross - invoice.credited:
        return _refuse(
            account,
            "credit_exceeds_invoice",
            f"credit {_fmt(amount)} exceeds the remaining {_fmt(invoice.gross - invoice.credited)} "
            f"of invoice {invoice_number}",
        )
    change = _Change(account, now, grace)
    target = change.account.invoices[invoice_number]
    target.credited += amount
    target.credit_notes[credit_note_number] = amount
    if target.gross == target.credited:
        target.status = "canceled"
    if target.allocated > target.amount_due:
        change.free(target, target.allocated - target.amount_due)
    if target.status == "open" and target.open_amount == 0:
        change.settle(target, now.date())  # credited down to what was paid
    change.apply_held()
    return change.result()


def cancel_invoice(
    account: Account, *, invoice_number: str, now: datetime, grace: timedelta = DEFAULT_GRACE
) -> Result:
    """Shipping canceled the invoice (even one reconciliation had settled: shipping decides
    whether it stands). Everything paid toward it becomes credit."""
    invoice = account.invoices.get(invoice_number)
    if invoice is None:
        return _park(account, "unknown_invoice", f"no invoice {invoice_number} on this VIBAN yet")
    if invoice.status == "canceled":
        return Result(account)
    change = _Change(account, now, grace)
    target = change.account.invoices[invoice_number]
    target.status = "canceled"
    change.free(target, target.allocated)
    change.apply_held()
    return change.result()


# -- money arriving ---------------------------------------------------------------------------


def _unmatched_reason(account: Account, currency: str) -> UnmatchedReason | None:
    if account.merchant_id is None:
        return "unknown_viban"
    if currency != SUPPORTED_CURRENCY:
        return "unsupported_currency"
    if "created" in account.orders.values():
        return None
    if "declined" in account.orders.values():
        return "order_declined"
    return "unknown_order"


def receive_transfer(
    account: Account,
    *,
    transaction_id: str,
    amount: int,
    currency: str,
    booking_date: date,
    debtor_name: str,
    debtor_iban: str,
    remittance_information: str,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
    transaction_id_seen_on: str | None = None,
    may_wait: bool = False,
) -> Result:
    """A credit transfer to this VIBAN (bank.transactions). ``transaction_id_seen_on`` is the
    VIBAN a transaction with this id was already recorded on, if any. ``may_wait``: a VIBAN
    no order was decided under may be one whose decision is still on its way (another topic,
    read separately), so the transfer waits for it (parked) before it is unmatched."""
    fingerprint = transfer_fingerprint(
        creditor_iban=account.viban,
        amount=amount,
        currency=currency,
        booking_date=booking_date,
        debtor_name=debtor_name,
        debtor_iban=debtor_iban,
        remittance_information=remittance_information,
    )
    moved = account.moved_out.get(transaction_id)
    if moved is not None:
        if moved == fingerprint:
            return Result(account)  # allocated by hand elsewhere; the same transfer again
        return _refuse(
            account,
            "transaction_conflict",
            f"transaction {transaction_id} was already received with different content",
        )
    if transaction_id_seen_on is not None and transaction_id_seen_on != account.viban:
        return _refuse(
            account,
            "transaction_conflict",
            f"transaction {transaction_id} was already received on another VIBAN",
        )
    known = account.transactions.get(transaction_id)
    if known is not None:
        if known.fingerprint == fingerprint:
            return Result(account)  # the same transfer again: one payment
        return _refuse(
            account,
            "transaction_conflict",
            f"transaction {transaction_id} was already received with different content",
        )
    if amount <= 0:
        return _refuse(account, "empty_transaction", "a transfer must bring more than 0")
    reason = _unmatched_reason(account, currency)
    if may_wait and reason == "unknown_viban":
        return _park(account, "unknown_viban", "no order was decided under this VIBAN yet")
    change = _Change(account, now, grace)
    tx = Transaction(
        transaction_id=transaction_id,
        kind="bank_transfer",
        amount=amount,
        currency=currency,
        booked_on=booking_date,
        received_at=now,
        fingerprint=fingerprint,
        remittance=remittance_information,
    )
    change.account.transactions[transaction_id] = tx
    if reason is not None:
        tx.unmatched, tx.unmatched_reason = amount, reason
        change.touched[transaction_id] = None
        change.effects.append(PaymentUnmatched(transaction_id, account.viban, reason))
        return change.result()
    invoices = change.account.invoices
    named = named_invoices(remittance_information, invoices)
    change.place(
        tx, amount, first=[(invoices[n], "invoice_number") for n in named], on=booking_date
    )
    return change.result()


def report_payment(
    account: Account,
    *,
    report_id: str,
    order_id: str,
    invoice_number: str,
    amount: int,
    currency: str = SUPPORTED_CURRENCY,
) -> Result:
    """The merchant says the debtor paid them directly (payments.reported): debit the
    merchant for it. ``report_id`` (the report's event id) names the debit."""
    invoice = account.invoices.get(invoice_number)
    if invoice is None or invoice.order_id != order_id:
        return _park(
            account, "unknown_invoice", f"no invoice {invoice_number} on order {order_id} yet"
        )
    debit_id = debit_id_for(order_id, invoice_number, report_id)
    if debit_id in account.debits:
        return Result(account)
    if currency != SUPPORTED_CURRENCY:
        return _refuse(account, "unsupported_currency", f"payments in {currency} are not handled")
    if invoice.status != "open":
        return _refuse(
            account, f"invoice_{invoice.status}", f"invoice {invoice_number} is {invoice.status}"
        )
    if amount <= 0:
        return _refuse(account, "empty_report", "a reported payment must be more than 0")
    pending = sum(
        d.amount
        for d in account.debits.values()
        if d.invoice_number == invoice_number and not d.collected
    )
    available = invoice.open_amount - pending
    if amount > available:
        return _refuse(
            account,
            "report_exceeds_open_amount",
            f"reported {_fmt(amount)} exceeds the open {_fmt(available)} of invoice "
            f"{invoice_number}",
        )
    assert account.merchant_id is not None, "an issued invoice names its merchant"
    new = account.clone()
    new.debits[debit_id] = MerchantDebit(debit_id, order_id, invoice_number, amount)
    instructed = MerchantDebitInstructed(
        debit_id, account.merchant_id, order_id, invoice_number, amount
    )
    return Result(new, (instructed,))


def collect_debit(
    account: Account,
    *,
    debit_id: str,
    order_id: str,
    invoice_number: str,
    amount: int,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> Result:
    """The direct debit arrived (merchant_debits.collected): new money, first for the invoice
    it was reported for."""
    debit = account.debits.get(debit_id)
    if debit is None:
        return _refuse(account, "unknown_debit", f"no debit {debit_id} was instructed")
    if (debit.order_id, debit.invoice_number, debit.amount) != (order_id, invoice_number, amount):
        return _refuse(
            account,
            "debit_mismatch",
            f"debit {debit_id} was instructed for {_fmt(debit.amount)} on invoice "
            f"{debit.invoice_number}",
        )
    if debit.collected:
        return Result(account)
    change = _Change(account, now, grace)
    change.account.debits[debit_id].collected = True
    tx = Transaction(
        transaction_id=debit_id,
        kind="merchant_debit",
        amount=amount,
        currency=SUPPORTED_CURRENCY,
        booked_on=now.date(),
        received_at=now,
        fingerprint=debit_id,
    )
    change.account.transactions[debit_id] = tx
    target = change.account.invoices[invoice_number]
    change.place(tx, amount, first=[(target, "merchant_debit")], on=now.date())
    return change.result()


# -- by hand ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualResult:
    """Ops allocated an unmatched transaction: the account it was received on (``source``)
    and the account of the invoice (``target``; the same object when they are one)."""

    source: Account
    target: Account
    effects: tuple[Effect, ...] = ()
    rejection: Rejection | None = None


def allocate_unmatched(
    source: Account,
    target: Account,
    *,
    transaction_id: str,
    invoice_number: str,
    command_id: str,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> ManualResult:
    """Ops names the invoice an unmatched transfer pays (an internal command). The whole
    amount becomes new money on the invoice's account: that invoice first (``invoice_number``:
    ops named it), then as any transfer; the transaction moves there, its statements go on
    numbered where they were. The same command again changes nothing."""

    def refuse(code: str, detail: str) -> ManualResult:
        return ManualResult(source, target, rejection=Rejection(code, detail))

    tx = source.transactions.get(transaction_id)
    if tx is None:
        moved_to = target.transactions.get(transaction_id)
        if moved_to is not None and moved_to.allocated_by_command == command_id:
            return ManualResult(source, target)
        return refuse("unknown_transaction", f"no transaction {transaction_id} on {source.viban}")
    if tx.allocated_by_command == command_id:
        return ManualResult(source, target)
    if tx.unmatched == 0:
        return refuse("transaction_not_unmatched", f"transaction {transaction_id} is matched")
    if tx.currency != SUPPORTED_CURRENCY:
        return refuse("unsupported_currency", f"payments in {tx.currency} are not handled")
    invoice = target.invoices.get(invoice_number)
    if invoice is None:
        return refuse("unknown_invoice", f"no invoice {invoice_number} on {target.viban}")
    if invoice.status != "open":
        return refuse(f"invoice_{invoice.status}", f"invoice {invoice_number} is {invoice.status}")
    same = source.viban == target.viban
    change = _Change(target, now, grace)
    moved = tx.clone() if not same else change.account.transactions[transaction_id]
    moved.creditor_iban = tx.creditor_iban or source.viban
    moved.unmatched = 0
    moved.allocated_by_command = command_id
    change.account.transactions[transaction_id] = moved
    first = change.account.invoices[invoice_number]
    change.place(moved, tx.amount, first=[(first, "invoice_number")], on=now.date())
    result = change.result()
    if same:
        return ManualResult(result.account, result.account, result.effects)
    new_source = source.clone()
    del new_source.transactions[transaction_id]
    new_source.moved_out[transaction_id] = tx.fingerprint
    return ManualResult(new_source, result.account, result.effects)


# -- time -------------------------------------------------------------------------------------


def forward_due_credit(account: Account, *, now: datetime, payee: Payee | None) -> Result:
    """Forward to the merchant every credit whose grace period has ended by ``now``."""
    due = [
        t
        for t in sorted(account.transactions.values(), key=lambda t: t.transaction_id)
        if any(h.until <= now for h in t.holdings)
    ]
    if not due:
        return Result(account)
    if payee is None:
        return _park(account, "merchant_not_configured", f"no payout IBAN for {account.viban}")
    if payee.merchant_id != account.merchant_id:
        return _refuse(
            account, "merchant_mismatch", f"VIBAN {account.viban} is not {payee.merchant_id}'s"
        )
    change = _Change(account, now, DEFAULT_GRACE)
    for original in due:
        tx = change.account.transactions[original.transaction_id]
        amount = sum(h.amount for h in tx.holdings if h.until <= now)
        tx.holdings = [h for h in tx.holdings if h.until > now]
        tx.forwarded += amount
        change.effects.append(
            OverpaymentForwarded(
                tx.transaction_id, tx.forwardings, payee.merchant_id, amount, payee.payout_iban
            )
        )
        tx.forwardings += 1
        change.touched[tx.transaction_id] = None
    return change.result()
