"""The e-invoice rules, pure and synchronous: time is passed in, nothing here does I/O.

One ``EInvoice`` per issued invoice of a Billit merchant. It holds the Billit *documents* made
for it (the invoice itself, then a credit note per reduction after sending), each on its own
path ``checking → creating → sending → polling → following → done`` (or ``error``), and the
*steps* that report payments back (one per allocation, then the paid flag), taken one at a
time so that each can be checked against Billit's ``ToPay`` before it is posted.

A decision returns the new state and ``Effects``: the external jobs to record, the poll timers
to set or drop, the status changes to publish. The handler stores and emits them in one
transaction; a re-run of the same input makes the same jobs (ids from the cause) and the same
events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RESPONSE_RANK = {"AB": 0, "IP": 1, "UQ": 2, "CA": 3, "RE": 4, "AP": 5, "PD": 6}
FINAL_RESPONSES = frozenset({"RE", "PD"})
INVOICE = "invoice"

Stage = Literal["checking", "creating", "sending", "polling", "following", "done", "error"]
DeliveryStatus = Literal["pending", "delivered", "error"]


# ---------------------------------------------------------------------------------------------
# Lines: Billit computes each line's VAT as excl × rate rounded half-up per line; ours must add
# up to the invoice's net, tax and gross to the cent.


class Unrepresentable(Exception):
    """No set of Billit lines gives exactly the invoice's net and tax."""


@dataclass(frozen=True)
class Money3:
    gross: int
    net: int
    tax: int

    def minus(self, other: Money3) -> Money3:
        return Money3(self.gross - other.gross, self.net - other.net, self.tax - other.tax)


@dataclass(frozen=True)
class Item:
    description: str
    quantity: int
    unit_cents: int
    vat_rate: str  # as in the contract: "21", "5.5"


@dataclass(frozen=True)
class Line:
    description: str
    quantity: int
    unit_cents: int
    vat_rate: str

    @property
    def net(self) -> int:
        return self.quantity * self.unit_cents

    @property
    def tax(self) -> int:
        return billit_line_tax(self.net, self.vat_rate)


def billit_line_tax(net_cents: int, rate: str) -> int:
    """Billit's VAT of one line: excl × rate / 100, rounded half-up to the cent."""
    exact = Decimal(net_cents) * Decimal(rate) / 100
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def totals(lines: Sequence[Line]) -> Money3:
    net = sum(line.net for line in lines)
    tax = sum(line.tax for line in lines)
    return Money3(net + tax, net, tax)


def split_by_weights(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` in proportion to ``weights`` (largest remainder; ties to the earlier index),
    summing exactly to ``total``."""
    whole = sum(weights)
    if whole <= 0:
        raise Unrepresentable("no weights to split by")
    shares = [total * w // whole for w in weights]
    remainders = [(total * w % whole, -i) for i, w in enumerate(weights)]
    for _, negative_index in sorted(remainders, reverse=True)[: total - sum(shares)]:
        shares[-negative_index] += 1
    return shares


_MAX_SHIFT_CENTS = 2000
_MAX_SPLIT_CENTS = 200


def billit_lines(
    label: str, amount: Money3, order_amount: Money3 | None, items: Sequence[Item]
) -> list[Line]:
    """The lines for one Billit document worth ``amount``.

    The order's own line items when the document is the whole order and Billit's per-line
    VAT of them gives our tax. Otherwise one line per VAT rate, the net split pro rata to
    the order's net per rate; if Billit's VAT of those lines misses our tax by rounding, the
    remainder is placed deterministically: first by moving whole cents of net between two
    rates (smallest move, then lowest rates first), else by splitting a small line off one
    rate. Raises ``Unrepresentable`` rather than return lines whose totals differ."""
    if amount.net <= 0 or amount.gross != amount.net + amount.tax:
        raise Unrepresentable(f"{label}: nothing to invoice ({amount})")
    if order_amount == amount and items:
        own = [Line(i.description, i.quantity, i.unit_cents, i.vat_rate) for i in items]
        if totals(own) == amount:
            return own
    by_rate: dict[str, int] = {}
    for item in items:
        key = _rate_key(item.vat_rate)
        by_rate[key] = by_rate.get(key, 0) + item.quantity * item.unit_cents
    if not by_rate or sum(by_rate.values()) <= 0:
        by_rate = {_implied_rate(amount): 1}
    rates = sorted(by_rate, key=Decimal)
    nets = split_by_weights(amount.net, [by_rate[r] for r in rates])
    kept = [(r, n) for r, n in zip(rates, nets, strict=True) if n > 0]
    rates, nets = [r for r, _ in kept], [n for _, n in kept]

    def lines_of(values: Sequence[int], extra: Sequence[Line] = ()) -> list[Line]:
        made = [
            Line(f"{label}, VAT {r}%", 1, n, r) for r, n in zip(rates, values, strict=True) if n > 0
        ]
        return [*made, *extra]

    found = lines_of(nets)
    if totals(found) == amount:
        return found
    for shift in range(1, _MAX_SHIFT_CENTS + 1):
        for i in range(len(rates)):
            for j in range(len(rates)):
                if i == j or nets[i] - shift <= 0:
                    continue
                moved = list(nets)
                moved[i] -= shift
                moved[j] += shift
                candidate = lines_of(moved)
                if totals(candidate) == amount:
                    return candidate
    for i, rate in enumerate(rates):
        for small in range(1, min(_MAX_SPLIT_CENTS, nets[i] - 1) + 1):
            reduced = list(nets)
            reduced[i] -= small
            candidate = lines_of(
                reduced, [Line(f"{label}, VAT {rate}% (rounding)", 1, small, rate)]
            )
            if totals(candidate) == amount:
                return candidate
    billit = totals(found)
    raise Unrepresentable(
        f"{label}: tax {amount.tax} cents cannot be written as Billit lines "
        f"(per-line VAT gives {billit.tax} cents on net {amount.net})"
    )


def _rate_key(rate: str) -> str:
    return f"{Decimal(rate).normalize():f}"


def _implied_rate(amount: Money3) -> str:
    rate = (Decimal(amount.tax) * 100 / Decimal(amount.net)).quantize(Decimal("0.01"))
    return _rate_key(str(rate))


# ---------------------------------------------------------------------------------------------
# State


class _State(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Cents3(_State):
    gross: int
    net: int
    tax: int

    def money(self) -> Money3:
        return Money3(self.gross, self.net, self.tax)

    @staticmethod
    def of(m: Money3) -> Cents3:
        return Cents3(gross=m.gross, net=m.net, tax=m.tax)


class Customer(_State):
    name: str
    vat_number: str | None = None
    peppol_id: str  # what the participant check asks about
    street: str | None = None
    house_number: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country: str | None = None


class Response(_State):
    code: str
    file_id: str
    at: str | None = None
    taken: bool
    note: str = ""


class Document(_State):
    key: str  # "invoice", "cn:<credit note number>" or "cancel"
    order_type: Literal["Invoice", "CreditNote"]
    number: str  # Billit's OrderNumber
    amount: Cents3
    stage: Stage = "checking"
    billit_order_id: int | None = None
    delivery_status: DeliveryStatus | None = None
    receiver_status: str | None = None
    detail: str = ""
    seen_file_ids: list[str] = Field(default_factory=list)
    responses: list[Response] = Field(default_factory=list)
    sent_at: datetime | None = None
    phase_since: datetime | None = None  # backoff is counted from here (send, delivery)
    follow_until: datetime | None = None
    polls: int = 0

    @property
    def entity(self) -> str:
        return self.key


class Step(_State):
    """One report to Billit: a payment (``payment``) or the paid flag (``paid``)."""

    id: str
    kind: Literal["payment", "paid"]
    amount_cents: int = 0
    on: date
    state: Literal["queued", "reporting", "reported", "failed"] = "queued"
    job_id: str | None = None
    detail: str = ""


class JobRef(_State):
    kind: str
    document: str | None = None
    step: str | None = None
    state: Literal["running", "failed"] = "running"
    error: str | None = None


class HistoryEntry(_State):
    at: datetime
    what: str
    detail: str = ""


class EInvoice(_State):
    id: str  # "<order_id>/<invoice_number>"
    order_id: str
    merchant_id: str
    invoice_number: str
    party_id: str
    viban: str
    issued_on: date
    due_on: date
    amount: Cents3
    worth: Cents3  # what the invoice is still worth after credit notes
    order_amount: Cents3 | None = None
    items: list[dict[str, Any]] = Field(default_factory=list)
    customer: Customer
    documents: list[Document] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    reported_cents: int = 0
    credit_notes_seen: list[str] = Field(default_factory=list)
    waiting_on: dict[str, JobRef] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)
    version: int = 0

    def document(self, key: str) -> Document | None:
        return next((d for d in self.documents if d.key == key), None)

    @property
    def invoice(self) -> Document:
        found = self.document(INVOICE)
        assert found is not None
        return found

    def note(self, at: datetime, what: str, detail: str = "") -> None:
        self.history.append(HistoryEntry(at=at, what=what, detail=detail[:500]))

    def item_list(self) -> list[Item]:
        return [
            Item(i["description"], i["quantity"], i["unit_cents"], i["vat_rate"])
            for i in self.items
        ]


# ---------------------------------------------------------------------------------------------
# Effects


@dataclass(frozen=True)
class JobRequest:
    kind: str
    payload: dict[str, Any]
    ref: JobRef
    n: int = 0


@dataclass(frozen=True)
class PollAt:
    document: str
    due_at: datetime


@dataclass(frozen=True)
class StatusChange:
    document: str
    billit_order_id: int | None
    delivery_status: DeliveryStatus
    receiver_status: str | None
    detail: str


@dataclass
class Effects:
    jobs: list[JobRequest] = field(default_factory=list)
    polls: list[PollAt] = field(default_factory=list)
    stop_polls: list[str] = field(default_factory=list)
    changes: list[StatusChange] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)  # delivery outcomes, for metrics
    responses: list[str] = field(default_factory=list)  # receiver response codes taken


@dataclass(frozen=True)
class PollSchedule:
    """Polls every ``frequent`` for ``frequent_for`` after a phase starts, then hourly until
    ``hourly_for``, then daily. Delivery is followed for ``delivery_for`` after the send,
    receiver responses for ``follow_for`` after delivery."""

    frequent: timedelta = timedelta(minutes=1)
    frequent_for: timedelta = timedelta(minutes=15)
    hourly: timedelta = timedelta(hours=1)
    hourly_for: timedelta = timedelta(days=1)
    daily: timedelta = timedelta(days=1)
    delivery_for: timedelta = timedelta(days=30)
    follow_for: timedelta = timedelta(days=14)

    def next_after(self, since: datetime, now: datetime) -> datetime:
        elapsed = now - since
        if elapsed < self.frequent_for:
            return now + self.frequent
        if elapsed < self.hourly_for:
            return now + self.hourly
        return now + self.daily


# ---------------------------------------------------------------------------------------------
# Decisions


def start(invoice: EInvoice, now: datetime, document: Document, fx: Effects) -> None:
    """Begin a document's path: first the participant check."""
    invoice.documents.append(document)
    doc_type = "BISv3CreditNote" if document.order_type == "CreditNote" else "BISv3Invoice"
    fx.jobs.append(
        JobRequest(
            "participant",
            {
                "party_id": invoice.party_id,
                "identifier": invoice.customer.peppol_id,
                "document_type": doc_type,
            },
            JobRef(kind="participant", document=document.key),
        )
    )
    invoice.note(now, f"{document.key}: participant check", invoice.customer.peppol_id)


def new_invoice_document(invoice: EInvoice) -> Document:
    return Document(
        key=INVOICE,
        order_type="Invoice",
        number=invoice.invoice_number,
        amount=invoice.amount,
    )


def order_body(invoice: EInvoice, document: Document) -> dict[str, Any]:
    """``POST /v1/orders`` for a document, amounts as decimal strings (a job payload holds no
    floats). Raises ``Unrepresentable`` when the lines cannot match our totals."""
    is_invoice = document.order_type == "Invoice"
    order_amount = invoice.order_amount.money() if invoice.order_amount and is_invoice else None
    label = f"{'Invoice' if is_invoice else 'Credit note'} {document.number}"
    lines = billit_lines(label, document.amount.money(), order_amount, invoice.item_list())
    c = invoice.customer
    customer: dict[str, Any] = {"Name": c.name, "PartyType": "Customer"}
    if c.vat_number:
        customer["VATNumber"] = c.vat_number
    if c.street:
        customer["Addresses"] = [
            {
                "AddressType": "InvoiceAddress",
                "Name": c.name,
                "Street": c.street,
                "StreetNumber": c.house_number,
                "Zipcode": c.postal_code,
                "City": c.city,
                "CountryCode": c.country,
            }
        ]
    body: dict[str, Any] = {
        "OrderType": document.order_type,
        "OrderDirection": "Income",
        "OrderNumber": document.number,
        "OrderDate": invoice.issued_on.isoformat(),
        "ExpiryDate": invoice.due_on.isoformat(),
        "Currency": "EUR",
        "ExternalProviderID": external_id(invoice, document),
        "Customer": customer,
        "OrderLines": [
            {
                "Quantity": str(line.quantity),
                "UnitPriceExcl": _decimal_text(line.unit_cents),
                "Description": line.description,
                "VATPercentage": line.vat_rate,
            }
            for line in lines
        ],
    }
    if is_invoice:
        body["IBAN"] = invoice.viban
        body["PaymentReference"] = invoice.invoice_number
    return body


def external_id(invoice: EInvoice, document: Document) -> str:
    return invoice.id if document.key == INVOICE else f"{invoice.id}/{document.key}"


def _decimal_text(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def _fail(invoice: EInvoice, document: Document, now: datetime, detail: str, fx: Effects) -> None:
    document.stage = "error"
    document.detail = detail[:2000]
    document.delivery_status = "error"
    invoice.note(now, f"{document.key}: error", detail)
    if document.key == INVOICE:
        # Credit notes waiting for the invoice's send: there will be none to credit.
        for waiting in invoice.documents:
            if waiting.key != INVOICE and waiting.stage == "checking" and waiting.detail:
                waiting.stage = "done"
                waiting.detail = "the invoice was never sent: no credit note sent"
    fx.outcomes.append("not_sent")
    fx.changes.append(
        StatusChange(
            document.key,
            document.billit_order_id,
            "error",
            document.receiver_status,
            _detail(document, detail),
        )
    )


def _detail(document: Document, text: str) -> str:
    prefix = "" if document.key == INVOICE else f"credit note {document.number}: "
    return (prefix + text)[:2000]


def on_job_finished(
    invoice: EInvoice,
    job_id: str,
    status: str,
    result: dict[str, Any],
    error: str | None,
    now: datetime,
    schedule: PollSchedule,
) -> Effects:
    """A job of this invoice ended; an outcome for a job it does not wait on is a no-op."""
    fx = Effects()
    ref = invoice.waiting_on.get(job_id)
    if ref is None:
        return fx
    if status == "failed":
        ref.state = "failed"
        ref.error = (error or "")[:1000]
        invoice.note(now, f"{ref.kind} job failed", ref.error)
        if ref.kind == "poll" and ref.document is not None:
            del invoice.waiting_on[job_id]
            document = invoice.document(ref.document)
            if document is not None:
                _schedule_poll(document, now, schedule, fx)
        if ref.step is not None:
            step = _step(invoice, ref.step)
            if step is not None:
                step.state = "failed"
                step.detail = ref.error
        return fx
    del invoice.waiting_on[job_id]
    if ref.step is not None:
        _step_reported(invoice, ref.step, result, now, fx)
        return fx
    document = invoice.document(ref.document or "")
    if document is None:
        return fx
    if ref.kind == "participant":
        _checked(invoice, document, result, now, fx)
    elif ref.kind == "create":
        _created(invoice, document, result, now, fx)
    elif ref.kind == "send":
        _sent(invoice, document, result, now, schedule, fx)
    elif ref.kind == "poll":
        _polled(invoice, document, result, now, schedule, fx)
    return fx


def _checked(
    invoice: EInvoice, document: Document, result: dict[str, Any], now: datetime, fx: Effects
) -> None:
    peppol_id = invoice.customer.peppol_id
    if result.get("accepts"):
        _create(invoice, document, now, fx)
    elif result.get("registered"):
        wanted = result.get("document_type")
        _fail(
            invoice,
            document,
            now,
            f"receiver {peppol_id} is on Peppol but does not accept {wanted}",
            fx,
        )
    else:
        _fail(invoice, document, now, f"receiver {peppol_id} is not registered on Peppol", fx)


def _created(
    invoice: EInvoice, document: Document, result: dict[str, Any], now: datetime, fx: Effects
) -> None:
    if result.get("refused"):
        _fail(invoice, document, now, f"Billit refused the order: {result['refused']}", fx)
        return
    document.billit_order_id = int(result["order_id"])
    document.stage = "sending"
    found = "" if result.get("created") else " (found by ExternalProviderID)"
    invoice.note(now, f"{document.key}: created", f"OrderID {document.billit_order_id}{found}")
    fx.jobs.append(
        JobRequest(
            "send",
            {"party_id": invoice.party_id, "order_id": document.billit_order_id},
            JobRef(kind="send", document=document.key),
        )
    )
    if document.key == INVOICE:
        _next_step(invoice, fx)


def _sent(
    invoice: EInvoice,
    document: Document,
    result: dict[str, Any],
    now: datetime,
    schedule: PollSchedule,
    fx: Effects,
) -> None:
    if result.get("refused"):
        _fail(invoice, document, now, f"Billit did not send it: {result['refused']}", fx)
        return
    document.stage = "polling"
    document.sent_at = now
    document.phase_since = now
    document.delivery_status = "pending"
    document.detail = "sent over Peppol"
    invoice.note(now, f"{document.key}: sent", f"OrderID {document.billit_order_id}")
    fx.changes.append(
        StatusChange(
            document.key,
            document.billit_order_id,
            "pending",
            None,
            _detail(document, "sent over Peppol"),
        )
    )
    _schedule_poll(document, now, schedule, fx)
    if document.key == INVOICE:
        _credit_pending(invoice, now, fx)


def _create(invoice: EInvoice, document: Document, now: datetime, fx: Effects) -> None:
    try:
        body = order_body(invoice, document)
    except Unrepresentable as exc:
        _fail(invoice, document, now, str(exc), fx)
        return
    document.stage = "creating"
    invoice.note(now, f"{document.key}: creating", external_id(invoice, document))
    fx.jobs.append(
        JobRequest(
            "create",
            {"party_id": invoice.party_id, "order": body},
            JobRef(kind="create", document=document.key),
        )
    )


def _schedule_poll(document: Document, now: datetime, schedule: PollSchedule, fx: Effects) -> None:
    since = document.phase_since or now
    fx.polls.append(PollAt(document.key, schedule.next_after(since, now)))


def poll_job(invoice: EInvoice, document_key: str) -> JobRequest | None:
    """A poll timer fired: poll the document if it is still followed."""
    document = invoice.document(document_key)
    if document is None or document.stage not in ("polling", "following"):
        return None
    if document.billit_order_id is None:
        return None
    return JobRequest(
        "poll",
        {"party_id": invoice.party_id, "order_id": document.billit_order_id},
        JobRef(kind="poll", document=document.key),
    )


def _polled(
    invoice: EInvoice,
    document: Document,
    result: dict[str, Any],
    now: datetime,
    schedule: PollSchedule,
    fx: Effects,
) -> None:
    if document.stage not in ("polling", "following"):
        return  # a poll that was in flight when following ended
    document.polls += 1
    status = result.get("delivery_status")
    if document.stage == "polling":
        if status == "Delivered":
            document.stage = "following"
            document.delivery_status = "delivered"
            document.detail = "delivered"
            document.phase_since = now
            document.follow_until = now + schedule.follow_for
            invoice.note(now, f"{document.key}: delivered", str(result.get("delivered_at") or ""))
            fx.outcomes.append("delivered")
            fx.changes.append(
                StatusChange(
                    document.key,
                    document.billit_order_id,
                    "delivered",
                    None,
                    _detail(document, "delivered"),
                )
            )
        elif status == "Error":
            reason = result.get("refused_reason_tc") or "unknown reason"
            info = result.get("refused_info") or ""
            detail = f"refused: {reason}" + (f": {info}" if info else "")
            document.stage = "done"
            document.delivery_status = "error"
            document.detail = detail
            invoice.note(now, f"{document.key}: refused", detail)
            fx.outcomes.append("refused")
            fx.changes.append(
                StatusChange(
                    document.key, document.billit_order_id, "error", None, _detail(document, detail)
                )
            )
            fx.stop_polls.append(document.key)
            return
        elif document.sent_at is not None and now - document.sent_at >= schedule.delivery_for:
            document.stage = "done"
            document.delivery_status = "error"
            document.detail = "no delivery status within the follow-up window"
            fx.outcomes.append("timed_out")
            fx.changes.append(
                StatusChange(
                    document.key,
                    document.billit_order_id,
                    "error",
                    None,
                    _detail(document, document.detail),
                )
            )
            return
    if document.stage == "following":
        _take_responses(invoice, document, result.get("responses", []), now, fx)
        if document.receiver_status in FINAL_RESPONSES or (
            document.follow_until is not None and now >= document.follow_until
        ):
            document.stage = "done"
            invoice.note(now, f"{document.key}: no longer followed", document.receiver_status or "")
            fx.stop_polls.append(document.key)
            return
    _schedule_poll(document, now, schedule, fx)


def _take_responses(
    invoice: EInvoice,
    document: Document,
    responses: Iterable[dict[str, Any]],
    now: datetime,
    fx: Effects,
) -> None:
    """Each response once (by FileID); in time order, then BIS order; codes only move
    forward; nothing after RE or PD."""
    fresh = [
        r for r in responses if r.get("file_id") and r["file_id"] not in document.seen_file_ids
    ]
    fresh.sort(key=lambda r: (str(r.get("created_at") or ""), RESPONSE_RANK.get(r["code"], 99)))
    for response in fresh:
        if response["file_id"] in document.seen_file_ids:
            continue  # the same FileID twice in one answer
        document.seen_file_ids.append(response["file_id"])
        code = response["code"]
        current = document.receiver_status
        note = ""
        if current in FINAL_RESPONSES:
            note = f"ignored: after {current}"
        elif current is not None and RESPONSE_RANK[code] < RESPONSE_RANK[current]:
            note = f"ignored: {code} after {current} goes backwards"
        taken = not note
        document.responses.append(
            Response(
                code=code,
                file_id=response["file_id"],
                at=response.get("created_at"),
                taken=taken,
                note=note,
            )
        )
        invoice.note(now, f"{document.key}: receiver {code}", note or "taken")
        if not taken:
            continue
        fx.responses.append(code)
        if code != current:
            document.receiver_status = code
            document.detail = f"receiver response {code}"
            fx.changes.append(
                StatusChange(
                    document.key,
                    document.billit_order_id,
                    "delivered",
                    code,
                    _detail(document, f"receiver response {code}"),
                )
            )


# -- reductions --------------------------------------------------------------------------------


def reduce(
    invoice: EInvoice,
    key: str,
    number: str,
    reduction: Money3 | None,
    invoice_gross_after: int | None,
    now: datetime,
) -> Effects:
    """A credit note (``reduction`` and what the invoice is worth after it) or a cancel
    (``None``: all the invoice is still worth). Each reduces ``worth`` once: a credit note
    that takes the invoice to 0 and the cancel that follows it credit once together."""
    fx = Effects()
    if key in invoice.credit_notes_seen:
        return fx
    invoice.credit_notes_seen.append(key)
    worth = invoice.worth.money()
    if reduction is None:
        amount = worth
    else:
        assert invoice_gross_after is not None
        gross = worth.gross - invoice_gross_after
        if gross <= 0:
            amount = Money3(0, 0, 0)
        elif gross == reduction.gross:
            amount = reduction
        else:
            net = gross * worth.net // worth.gross if worth.gross else 0
            amount = Money3(gross, net, gross - net)
    if amount.gross <= 0:
        invoice.note(now, f"{key}: nothing left to credit")
        return fx
    invoice.worth = Cents3.of(worth.minus(amount))
    document = Document(key=key, order_type="CreditNote", number=number, amount=Cents3.of(amount))
    invoice.note(now, f"{key}: reduction of {amount.gross} cents")
    inv = invoice.invoice
    if inv.stage in ("error",) or (inv.stage == "done" and inv.delivery_status == "error"):
        document.stage = "done"
        document.detail = "the invoice was never delivered: no credit note sent"
        invoice.documents.append(document)
        return fx
    if inv.sent_at is None:
        document.stage = "checking"
        document.detail = "waiting for the invoice to be sent"
        invoice.documents.append(document)
        return fx
    start(invoice, now, document, fx)
    return fx


def _credit_pending(invoice: EInvoice, now: datetime, fx: Effects) -> None:
    """The invoice is sent: credit notes accepted meanwhile go now."""
    waiting = [
        d for d in invoice.documents if d.key != INVOICE and d.stage == "checking" and d.detail
    ]
    for document in waiting:
        invoice.documents.remove(document)
        document.detail = ""
        start(invoice, now, document, fx)


# -- payments ----------------------------------------------------------------------------------


def add_step(invoice: EInvoice, step: Step, now: datetime) -> Effects:
    fx = Effects()
    if any(s.id == step.id for s in invoice.steps):
        return fx
    if step.kind == "paid" and any(s.kind == "paid" for s in invoice.steps):
        return fx
    invoice.steps.append(step)
    invoice.note(now, f"{step.kind} queued", f"{step.amount_cents} cents on {step.on}")
    _next_step(invoice, fx)
    return fx


def _step(invoice: EInvoice, step_id: str) -> Step | None:
    return next((s for s in invoice.steps if s.id == step_id), None)


def _next_step(invoice: EInvoice, fx: Effects) -> None:
    """One report at a time, in order, once the invoice exists in Billit."""
    order_id = invoice.invoice.billit_order_id if invoice.document(INVOICE) else None
    if order_id is None:
        return
    if any(s.state in ("reporting", "failed") for s in invoice.steps):
        return
    step = next((s for s in invoice.steps if s.state == "queued"), None)
    if step is None:
        return
    step.state = "reporting"
    gross = invoice.amount.gross
    if step.kind == "payment":
        payload: dict[str, Any] = {
            "party_id": invoice.party_id,
            "order_id": order_id,
            "amount": _decimal_text(step.amount_cents),
            "date": step.on.isoformat(),
            "description": f"payment {step.id}"[:200],
            "to_pay_before": _decimal_text(max(gross - invoice.reported_cents, 0)),
            "to_pay_after": _decimal_text(
                max(gross - invoice.reported_cents - step.amount_cents, 0)
            ),
        }
    else:
        payload = {
            "party_id": invoice.party_id,
            "order_id": order_id,
            "paid_date": step.on.isoformat(),
        }
    fx.jobs.append(JobRequest(step.kind, payload, JobRef(kind=step.kind, step=step.id)))


def _step_reported(
    invoice: EInvoice, step_id: str, result: dict[str, Any], now: datetime, fx: Effects
) -> None:
    step = _step(invoice, step_id)
    if step is None or step.state == "reported":
        return
    step.state = "reported"
    step.detail = str(result.get("note", ""))
    if step.kind == "payment":
        invoice.reported_cents += step.amount_cents
    invoice.note(now, f"{step.kind} reported", f"{step.amount_cents} cents {step.detail}".strip())
    _next_step(invoice, fx)


def resume_steps(invoice: EInvoice) -> Effects:
    """After a failed step's job was requeued and succeeded, or to restart the queue."""
    fx = Effects()
    _next_step(invoice, fx)
    return fx
