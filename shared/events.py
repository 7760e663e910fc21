"""The ``data`` of every event in the public contract (../shared/contract/EVENTS.md), v1.

Each class knows its CloudEvents ``type``, its topic and which field is its Kafka key.
Unknown extra fields are ignored (a minor version may add fields; a major version gets a new
``type``); missing fields, wrong types, numbers for money, negative amounts,
gross != net + tax, times that are not RFC 3339 strings with a zone, dates that are not
``YYYY-MM-DD``, and strings or lists beyond their bounds are rejected with the field named.

The bounds (``MAX_*`` below) are the project's own, not EVENTS.md's: they keep one record's
cost bounded and are published in docs/contract.md.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from shared import topics
from shared.money import Money, Percent
from shared.times import IsoDate, Rfc3339Time

MAX_ID_LENGTH = 128
MAX_IBAN_LENGTH = 34  # ISO 13616, electronic format (no spaces)
MAX_NAME_LENGTH = 300
MAX_LINE_LENGTH = 200  # address parts, legal form, industry, external code
MAX_TEXT_LENGTH = 2000  # free text: reasons, descriptions, remittance information
MAX_URL_LENGTH = 2048
MAX_LINE_ITEMS = 500
MAX_RULE_HITS = 100
MAX_ALLOCATIONS = 1000
MAX_QUANTITY = 1_000_000


def _bounded(min_length: int, max_length: int) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length)


# An identifier: order, merchant, company, invoice, credit note, transaction, ... ids.
Identifier = Annotated[str, _bounded(1, MAX_ID_LENGTH)]
IdentifierOrEmpty = Annotated[str, _bounded(0, MAX_ID_LENGTH)]
Iban = Annotated[str, _bounded(1, MAX_IBAN_LENGTH)]
IbanOrEmpty = Annotated[str, _bounded(0, MAX_IBAN_LENGTH)]
Name = Annotated[str, _bounded(1, MAX_NAME_LENGTH)]
NameOrEmpty = Annotated[str, _bounded(0, MAX_NAME_LENGTH)]
Line = Annotated[str, _bounded(1, MAX_LINE_LENGTH)]
LineOrEmpty = Annotated[str, _bounded(0, MAX_LINE_LENGTH)]
Text = Annotated[str, _bounded(1, MAX_TEXT_LENGTH)]
TextOrEmpty = Annotated[str, _bounded(0, MAX_TEXT_LENGTH)]
Url = Annotated[str, _bounded(1, MAX_URL_LENGTH)]
# [A-Z] and [0-9] are ASCII in pydantic's (Rust) regex; \d would be every script's digits.
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
VatRate = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,2}(\.[0-9]{1,2})?$")]


def _not_a_bool(value: Any) -> Any:
    # Literal[1, 2, 3] would take true as 1 (True == 1 in Python).
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


DunningLevel = Annotated[Literal[1, 2, 3], BeforeValidator(_not_a_bool)]

OrderState = Literal[
    "waiting", "created", "declined", "partially_shipped", "shipped", "complete", "canceled"
]
InvoiceState = Literal["new", "paid_out", "late", "complete", "canceled"]
DeclineReason = Literal[
    "debtor_not_identified",
    "debtor_address",
    "risk_policy",
    "risk_scoring_failed",
    "debtor_limit_exceeded",
]
DECLINE_REASONS: tuple[str, ...] = get_args(DeclineReason)
PeppolResponseCode = Literal["AB", "IP", "UQ", "CA", "RE", "AP", "PD"]


class EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    EVENT_TYPE: ClassVar[str]
    TOPIC: ClassVar[str]
    # The data field whose value is the record key; None for clock ticks (key "clock").
    KEY_FIELD: ClassVar[str | None]

    def key(self) -> str:
        if self.KEY_FIELD is None:
            return "clock"
        value: Any = getattr(self, self.KEY_FIELD)
        return str(value)

    def fingerprint(self) -> str:
        """Digest of the content: tells "the same command again" (a no-op) from "the same
        id with different content" (refused)."""
        return hashlib.sha256(self.model_dump_json(by_alias=True).encode()).hexdigest()


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# -- parts ----------------------------------------------------------------------------------


class Amount(_Part):
    """``{"gross": "119.00", "net": "100.00", "tax": "19.00"}`` with gross = net + tax."""

    gross: Money
    net: Money
    tax: Money

    @model_validator(mode="after")
    def _gross_is_net_plus_tax(self) -> Amount:
        if self.gross != self.net + self.tax:
            raise ValueError(
                f"gross must equal net + tax ({self.gross} != {self.net} + {self.tax})"
            )
        return self


class Fee(_Part):
    percent: Percent
    fixed: Money


class Address(_Part):
    street: Line
    house_number: Line
    postal_code: Line
    city: Line
    country: CountryCode


class Debtor(_Part):
    name: Name
    legal_form: Line
    registration_number: IdentifierOrEmpty | None = None
    vat_id: IdentifierOrEmpty | None = None
    address: Address


class LineItem(_Part):
    description: Text
    quantity: StrictInt = Field(gt=0, le=MAX_QUANTITY)
    unit_price_net: Money
    vat_rate: VatRate


class RuleHit(_Part):
    rule: Line
    outcome: Literal["pass", "fail", "skip", "review"]
    detail: TextOrEmpty


MatchedBy = Literal["invoice_number", "exact_amount", "oldest_due", "held_credit", "merchant_debit"]


class Allocation(_Part):
    invoice_number: Identifier
    amount: Money
    # The platform's addition to the contract's payload: how reconciliation matched this
    # allocation. Optional so that allocations written before it existed still decode.
    matched_by: MatchedBy | None = None


# -- input events ---------------------------------------------------------------------------


class MerchantConfigured(EventData):
    EVENT_TYPE = "merchant.configured.v1"
    TOPIC = topics.MERCHANTS_CONFIGURED
    KEY_FIELD = "merchant_id"

    merchant_id: Identifier
    name: Name
    payout_iban: Iban
    fee: Fee
    manual_review: StrictBool = False
    einvoicing: Literal["billit"] | None = None
    billit_party_id: IdentifierOrEmpty | None = None

    @model_validator(mode="after")
    def _billit_needs_party(self) -> MerchantConfigured:
        if self.einvoicing == "billit" and not self.billit_party_id:
            raise ValueError('billit_party_id is required when einvoicing is "billit"')
        return self


class CompanyRegistered(EventData):
    EVENT_TYPE = "company.registered.v1"
    TOPIC = topics.COMPANIES_REGISTERED
    KEY_FIELD = "company_id"

    company_id: Identifier
    name: Name
    legal_form: Line
    registration_number: IdentifierOrEmpty | None = None
    vat_id: IdentifierOrEmpty | None = None
    address: Address
    industry: LineOrEmpty | None = None
    insolvent: StrictBool
    score: StrictInt | None = Field(ge=0, le=100)
    financing_limit: Money
    currency: Currency = "EUR"


class OrderRequested(EventData):
    EVENT_TYPE = "order.requested.v1"
    TOPIC = topics.ORDERS_REQUESTED
    KEY_FIELD = "order_id"

    order_id: Identifier
    merchant_id: Identifier
    external_code: LineOrEmpty
    amount: Amount
    currency: Currency
    duration_days: StrictInt = Field(ge=7, le=120)
    debtor: Debtor
    billing_address: Address | None = None
    delivery_address: Address | None = None
    line_items: list[LineItem] = Field(max_length=MAX_LINE_ITEMS)


class OrderReviewed(EventData):
    EVENT_TYPE = "order.reviewed.v1"
    TOPIC = topics.ORDERS_REVIEWED
    KEY_FIELD = "order_id"

    order_id: Identifier
    outcome: Literal["approve", "decline"]
    decline_reason: DeclineReason | None = None
    reviewer: Identifier


class OrderShipped(EventData):
    EVENT_TYPE = "order.shipped.v1"
    TOPIC = topics.ORDERS_SHIPPED
    KEY_FIELD = "order_id"

    order_id: Identifier
    invoice_number: Identifier
    amount: Amount
    shipped_at: Rfc3339Time
    invoice_url: Url | None = None
    currency: Currency = "EUR"


class OrderCanceled(EventData):
    EVENT_TYPE = "order.canceled.v1"
    TOPIC = topics.ORDERS_CANCELED
    KEY_FIELD = "order_id"

    order_id: Identifier
    reason: Text | None = None


class OrderAmountReduced(EventData):
    """Lower the total of an order that is not fully shipped: ``amount`` is the order's new
    total (the merchant's "Reduce amount" before shipment)."""

    EVENT_TYPE = "order.amount_reduced.v1"
    TOPIC = topics.ORDERS_AMOUNT_REDUCED
    KEY_FIELD = "order_id"

    order_id: Identifier
    amount: Amount
    currency: Currency = "EUR"


class InvoiceCreditNoted(EventData):
    EVENT_TYPE = "invoice.credit_noted.v1"
    TOPIC = topics.INVOICES_CREDIT_NOTED
    KEY_FIELD = "order_id"

    order_id: Identifier
    invoice_number: Identifier
    credit_note_number: Identifier
    amount: Amount
    currency: Currency = "EUR"


class BankTransactionReceived(EventData):
    EVENT_TYPE = "bank.transaction.received.v1"
    TOPIC = topics.BANK_TRANSACTIONS
    KEY_FIELD = "creditor_iban"

    transaction_id: Identifier
    creditor_iban: Iban
    amount: Money
    currency: Currency
    booking_date: IsoDate
    debtor_name: NameOrEmpty
    debtor_iban: IbanOrEmpty
    remittance_information: TextOrEmpty


class PaymentReported(EventData):
    EVENT_TYPE = "payment.reported.v1"
    TOPIC = topics.PAYMENTS_REPORTED
    KEY_FIELD = "order_id"

    order_id: Identifier
    invoice_number: Identifier
    amount: Money
    received_on: IsoDate
    currency: Currency = "EUR"


class MerchantDebitCollected(EventData):
    EVENT_TYPE = "merchant_debit.collected.v1"
    TOPIC = topics.MERCHANT_DEBITS_COLLECTED
    KEY_FIELD = "order_id"

    debit_id: Identifier
    order_id: Identifier
    invoice_number: Identifier
    amount: Money
    currency: Currency = "EUR"


class DunningPauseRequested(EventData):
    EVENT_TYPE = "dunning.pause_requested.v1"
    TOPIC = topics.DUNNING_PAUSE_REQUESTED
    KEY_FIELD = "order_id"

    order_id: Identifier
    invoice_number: Identifier
    requested_by: Literal["merchant", "ops"]
    reason: TextOrEmpty


class ClockTick(EventData):
    EVENT_TYPE = "clock.tick.v1"
    TOPIC = topics.CLOCK_TICKS
    KEY_FIELD = None

    now: Rfc3339Time


# -- output events --------------------------------------------------------------------------


class OrderDecided(EventData):
    EVENT_TYPE = "order.decided.v1"
    TOPIC = topics.ORDERS_DECIDED
    KEY_FIELD = "order_id"

    order_id: Identifier
    merchant_id: Identifier
    state: Literal["created", "declined", "waiting"]
    decline_reason: DeclineReason | None
    debtor_company_id: IdentifierOrEmpty | None = None
    viban: Iban | None = None
    ruleset_version: Identifier
    rule_hits: list[RuleHit] = Field(max_length=MAX_RULE_HITS)

    @model_validator(mode="after")
    def _reason_iff_declined(self) -> OrderDecided:
        if (self.state == "declined") != (self.decline_reason is not None):
            raise ValueError("decline_reason is set exactly when state is declined")
        return self

    @model_validator(mode="after")
    def _viban_iff_created(self) -> OrderDecided:
        # EVENTS.md: "viban? (when created)": the buyer pays a created order to it.
        if (self.state == "created") != (self.viban is not None):
            raise ValueError("viban is set exactly when state is created")
        return self


class OrderStateChanged(EventData):
    EVENT_TYPE = "order.state_changed.v1"
    TOPIC = topics.ORDERS_STATE_CHANGED
    KEY_FIELD = "order_id"

    order_id: Identifier
    # None for an order's first state: it had none before the decision.
    from_: OrderState | None = Field(alias="from")
    to: OrderState


class CommandRejected(EventData):
    EVENT_TYPE = "command.rejected.v1"
    TOPIC = topics.COMMANDS_REJECTED
    KEY_FIELD = "order_id"

    command_id: Identifier
    command_type: Identifier
    order_id: Identifier
    reason: Text


class InvoiceIssued(EventData):
    EVENT_TYPE = "invoice.issued.v1"
    TOPIC = topics.INVOICES_ISSUED
    KEY_FIELD = "order_id"

    invoice_number: Identifier
    order_id: Identifier
    merchant_id: Identifier
    amount: Amount
    issued_on: IsoDate
    due_on: IsoDate
    viban: Iban
    debtor_company_id: Identifier
    currency: Currency = "EUR"


class InvoiceStateChanged(EventData):
    EVENT_TYPE = "invoice.state_changed.v1"
    TOPIC = topics.INVOICES_STATE_CHANGED
    KEY_FIELD = "order_id"

    invoice_number: Identifier
    # Not in the contract's column list, but the topic is keyed by order_id.
    order_id: Identifier
    from_: InvoiceState | None = Field(alias="from")
    to: InvoiceState


class PayoutInstructed(EventData):
    EVENT_TYPE = "payout.instructed.v1"
    TOPIC = topics.PAYOUTS_INSTRUCTED
    KEY_FIELD = "order_id"

    payout_id: Identifier
    order_id: Identifier
    invoice_number: Identifier
    merchant_id: Identifier
    gross: Money
    fee: Money
    payout_amount: Money
    payout_iban: Iban
    currency: Currency = "EUR"


class PayoutClawbackInstructed(EventData):
    EVENT_TYPE = "payout.clawback_instructed.v1"
    TOPIC = topics.PAYOUTS_CLAWBACK_INSTRUCTED
    KEY_FIELD = "order_id"

    clawback_id: Identifier
    order_id: Identifier
    invoice_number: Identifier
    amount: Money
    reason: Literal["canceled", "credit_note"]
    currency: Currency = "EUR"


class PaymentAllocated(EventData):
    EVENT_TYPE = "payment.allocated.v1"
    TOPIC = topics.PAYMENTS_ALLOCATED
    KEY_FIELD = "creditor_iban"

    transaction_id: Identifier
    creditor_iban: Iban
    allocations: list[Allocation] = Field(max_length=MAX_ALLOCATIONS)
    overpayment: Money
    unallocated: Money
    currency: Currency = "EUR"
    # The platform's addition: which statement of the transaction this is (0 the first).
    # The highest is the transaction as it stands; after a worker crash an older statement
    # can be published again after a newer one.
    restatement: StrictInt = Field(default=0, ge=0)


class InvoiceSettled(EventData):
    EVENT_TYPE = "invoice.settled.v1"
    TOPIC = topics.INVOICES_SETTLED
    KEY_FIELD = "order_id"

    invoice_number: Identifier
    order_id: Identifier
    settled_on: IsoDate
    paid_total: Money
    currency: Currency = "EUR"


class PaymentOverpaymentForwarded(EventData):
    EVENT_TYPE = "payment.overpayment_forwarded.v1"
    TOPIC = topics.PAYMENTS_OVERPAYMENT_FORWARDED
    KEY_FIELD = "merchant_id"

    transaction_id: Identifier
    merchant_id: Identifier
    amount: Money
    payout_iban: Iban
    currency: Currency = "EUR"


class PaymentUnmatched(EventData):
    EVENT_TYPE = "payment.unmatched.v1"
    TOPIC = topics.PAYMENTS_UNMATCHED
    KEY_FIELD = "creditor_iban"

    transaction_id: Identifier
    creditor_iban: Iban
    reason: Text


class MerchantDebitInstructed(EventData):
    EVENT_TYPE = "merchant_debit.instructed.v1"
    TOPIC = topics.MERCHANT_DEBITS_INSTRUCTED
    KEY_FIELD = "order_id"

    debit_id: Identifier
    merchant_id: Identifier
    order_id: Identifier
    invoice_number: Identifier
    amount: Money
    currency: Currency = "EUR"


class DunningNotice(EventData):
    EVENT_TYPE = "dunning.notice.v1"
    TOPIC = topics.DUNNING_NOTICES
    KEY_FIELD = "order_id"

    invoice_number: Identifier
    order_id: Identifier
    level: DunningLevel
    days_overdue: StrictInt = Field(ge=1, le=36_500)
    amount_due: Money
    viban: Iban
    currency: Currency = "EUR"


class DunningHandedOver(EventData):
    EVENT_TYPE = "dunning.handed_over.v1"
    TOPIC = topics.DUNNING_HANDED_OVER
    KEY_FIELD = "order_id"

    invoice_number: Identifier
    order_id: Identifier
    amount_due: Money
    handed_over_on: IsoDate
    currency: Currency = "EUR"


class EinvoiceStatusChanged(EventData):
    EVENT_TYPE = "einvoice.status_changed.v1"
    TOPIC = topics.EINVOICES_STATUS_CHANGED
    KEY_FIELD = "order_id"

    invoice_number: Identifier
    order_id: Identifier
    billit_order_id: Identifier
    delivery_status: Literal["pending", "delivered", "error"]
    receiver_status: PeppolResponseCode | None
    detail: TextOrEmpty


class ExposureReleased(EventData):
    """Internal, shipping -> risk: part of an approved order no longer counts against the
    debtor's financing limit (canceled, credited, settled or reduced before shipment)."""

    EVENT_TYPE = "exposure.released.v1"
    TOPIC = topics.EXPOSURE_RELEASED
    KEY_FIELD = "order_id"

    release_id: Identifier
    order_id: Identifier
    debtor_company_id: IdentifierOrEmpty | None
    amount: Money
    reason: Literal["canceled", "credit_note", "settled", "amount_reduced"]
    currency: Currency = "EUR"


class CreditNoteAccepted(EventData):
    """Internal, shipping -> reconciliation, dunning, e-invoice: shipping accepted a credit
    note (its rule decides whether and by how much). ``amount`` is the reduction;
    ``invoice_gross`` what the invoice is worth after it (0: the invoice is canceled).
    Published once per accepted credit note, before the invoice's state change it may cause;
    consumers key what they store by (invoice_number, credit_note_number)."""

    EVENT_TYPE = "credit_note.accepted.v1"
    TOPIC = topics.CREDIT_NOTES_ACCEPTED
    KEY_FIELD = "order_id"

    order_id: Identifier
    merchant_id: Identifier
    invoice_number: Identifier
    credit_note_number: Identifier
    amount: Amount
    invoice_gross: Money
    currency: Currency = "EUR"


class AllocationRequested(EventData):
    """Internal, ops -> reconciliation: allocate the unmatched transaction ``transaction_id``
    (received on ``creditor_iban``) to invoice ``invoice_number`` of order ``order_id``.
    Published by ``python -m shared.ops reconciliation unmatched allocate``; the worker
    handles it like any input (refusals on ``commands.rejected``)."""

    EVENT_TYPE = "reconciliation.allocation_requested.v1"
    TOPIC = topics.RECONCILIATION_ALLOCATION_REQUESTED
    KEY_FIELD = "creditor_iban"

    transaction_id: Identifier
    creditor_iban: Iban
    order_id: Identifier
    invoice_number: Identifier
    requested_by: Identifier
    reason: TextOrEmpty


INPUT_EVENTS: tuple[type[EventData], ...] = (
    MerchantConfigured,
    CompanyRegistered,
    OrderRequested,
    OrderReviewed,
    OrderShipped,
    OrderCanceled,
    OrderAmountReduced,
    InvoiceCreditNoted,
    BankTransactionReceived,
    PaymentReported,
    MerchantDebitCollected,
    DunningPauseRequested,
    ClockTick,
)
OUTPUT_EVENTS: tuple[type[EventData], ...] = (
    OrderDecided,
    OrderStateChanged,
    CommandRejected,
    InvoiceIssued,
    InvoiceStateChanged,
    PayoutInstructed,
    PayoutClawbackInstructed,
    PaymentAllocated,
    InvoiceSettled,
    PaymentOverpaymentForwarded,
    PaymentUnmatched,
    MerchantDebitInstructed,
    DunningNotice,
    DunningHandedOver,
    EinvoiceStatusChanged,
)
INTERNAL_EVENTS: tuple[type[EventData], ...] = (
    ExposureReleased,
    CreditNoteAccepted,
    AllocationRequested,
)
_ALL_EVENTS = INPUT_EVENTS + OUTPUT_EVENTS + INTERNAL_EVENTS
MODEL_BY_TYPE: dict[str, type[EventData]] = {m.EVENT_TYPE: m for m in _ALL_EVENTS}
EVENT_TYPES_BY_TOPIC: dict[str, dict[str, type[EventData]]] = {}
for _model in _ALL_EVENTS:
    EVENT_TYPES_BY_TOPIC.setdefault(_model.TOPIC, {})[_model.EVENT_TYPE] = _model


# -- runtime-internal events ------------------------------------------------------------------
# Not part of the public contract (and not in the AsyncAPI document): the runtime's timers and
# job executor talk to their own service through them, on topics named per service.


class TimerFired(EventData):
    """Internal, a service to itself: the timer ``action`` of ``entity`` is due at ``due_at``;
    the tick at ``fired_at`` saw it. Its id derives from (service, action, entity, due_at)."""

    EVENT_TYPE = "runtime.timer_fired.v1"
    TOPIC = "internal.<service>.timer_fired"
    KEY_FIELD = "entity_key"

    entity_key: Identifier
    action: Identifier
    entity: Identifier
    due_at: Rfc3339Time
    fired_at: Rfc3339Time
    payload: dict[str, Any] = Field(default_factory=dict)


class JobFinished(EventData):
    """Internal, a service's job executor to the service: a job's call succeeded, or failed
    for good after its retries. Its id derives from (job, generation, status)."""

    EVENT_TYPE = "runtime.job_finished.v1"
    TOPIC = "internal.<service>.job_finished"
    KEY_FIELD = "entity_key"

    job_id: Identifier
    kind: Identifier
    target: Identifier
    entity_key: Identifier
    status: Literal["succeeded", "failed"]
    attempts: StrictInt = Field(ge=1)
    result: dict[str, Any] = Field(default_factory=dict)
    error: TextOrEmpty | None = None


MODEL_BY_TYPE.update({m.EVENT_TYPE: m for m in (TimerFired, JobFinished)})


def register_internal_topics(service: str) -> None:
    """Let ``service``'s workers decode their own timer and job topics (idempotent)."""
    EVENT_TYPES_BY_TOPIC[topics.timer_topic(service)] = {TimerFired.EVENT_TYPE: TimerFired}
    EVENT_TYPES_BY_TOPIC[topics.job_result_topic(service)] = {JobFinished.EVENT_TYPE: JobFinished}


for _service in ("shipping", "dunning", "reconciliation", "einvoice_status"):
    register_internal_topics(_service)
