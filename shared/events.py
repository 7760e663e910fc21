"""The ``data`` of every event in the public contract (../shared/contract/EVENTS.md), v1.

Each class knows its CloudEvents ``type``, its topic and which field is its Kafka key.
Unknown extra fields are ignored (a minor version may add fields; a major version gets a new
``type``); missing fields, wrong types, floats for money, negative amounts and
gross != net + tax are rejected with the field named.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from shared import topics
from shared.money import Money, Percent

NonEmpty = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
VatRate = Annotated[str, StringConstraints(pattern=r"^\d{1,2}(\.\d{1,2})?$")]

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
    street: NonEmpty
    house_number: NonEmpty
    postal_code: NonEmpty
    city: NonEmpty
    country: CountryCode


class Debtor(_Part):
    name: NonEmpty
    legal_form: NonEmpty
    registration_number: str | None = None
    vat_id: str | None = None
    address: Address


class LineItem(_Part):
    description: NonEmpty
    quantity: StrictInt = Field(gt=0)
    unit_price_net: Money
    vat_rate: VatRate


class RuleHit(_Part):
    rule: NonEmpty
    outcome: Literal["pass", "fail", "skip", "review"]
    detail: str


class Allocation(_Part):
    invoice_number: NonEmpty
    amount: Money


# -- input events ---------------------------------------------------------------------------


class MerchantConfigured(EventData):
    EVENT_TYPE = "merchant.configured.v1"
    TOPIC = topics.MERCHANTS_CONFIGURED
    KEY_FIELD = "merchant_id"

    merchant_id: NonEmpty
    name: NonEmpty
    payout_iban: NonEmpty
    fee: Fee
    manual_review: StrictBool = False
    einvoicing: Literal["billit"] | None = None
    billit_party_id: str | None = None

    @model_validator(mode="after")
    def _billit_needs_party(self) -> MerchantConfigured:
        if self.einvoicing == "billit" and not self.billit_party_id:
            raise ValueError('billit_party_id is required when einvoicing is "billit"')
        return self


class CompanyRegistered(EventData):
    EVENT_TYPE = "company.registered.v1"
    TOPIC = topics.COMPANIES_REGISTERED
    KEY_FIELD = "company_id"

    company_id: NonEmpty
    name: NonEmpty
    legal_form: NonEmpty
    registration_number: str | None = None
    vat_id: str | None = None
    address: Address
    industry: str | None = None
    insolvent: StrictBool
    score: StrictInt | None = Field(ge=0, le=100)
    financing_limit: Money
    currency: Currency = "EUR"


class OrderRequested(EventData):
    EVENT_TYPE = "order.requested.v1"
    TOPIC = topics.ORDERS_REQUESTED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    merchant_id: NonEmpty
    external_code: str
    amount: Amount
    currency: Currency
    duration_days: StrictInt = Field(ge=7, le=120)
    debtor: Debtor
    billing_address: Address | None = None
    delivery_address: Address | None = None
    line_items: list[LineItem]


class OrderReviewed(EventData):
    EVENT_TYPE = "order.reviewed.v1"
    TOPIC = topics.ORDERS_REVIEWED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    outcome: Literal["approve", "decline"]
    decline_reason: DeclineReason | None = None
    reviewer: NonEmpty


class OrderShipped(EventData):
    EVENT_TYPE = "order.shipped.v1"
    TOPIC = topics.ORDERS_SHIPPED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    invoice_number: NonEmpty
    amount: Amount
    shipped_at: AwareDatetime
    invoice_url: str | None = None
    currency: Currency = "EUR"


class OrderCanceled(EventData):
    EVENT_TYPE = "order.canceled.v1"
    TOPIC = topics.ORDERS_CANCELED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    reason: str | None = None


class InvoiceCreditNoted(EventData):
    EVENT_TYPE = "invoice.credit_noted.v1"
    TOPIC = topics.INVOICES_CREDIT_NOTED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    invoice_number: NonEmpty
    credit_note_number: NonEmpty
    amount: Amount
    currency: Currency = "EUR"


class BankTransactionReceived(EventData):
    EVENT_TYPE = "bank.transaction.received.v1"
    TOPIC = topics.BANK_TRANSACTIONS
    KEY_FIELD = "creditor_iban"

    transaction_id: NonEmpty
    creditor_iban: NonEmpty
    amount: Money
    currency: Currency
    booking_date: date
    debtor_name: str
    debtor_iban: str
    remittance_information: str


class PaymentReported(EventData):
    EVENT_TYPE = "payment.reported.v1"
    TOPIC = topics.PAYMENTS_REPORTED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    invoice_number: NonEmpty
    amount: Money
    received_on: date
    currency: Currency = "EUR"


class MerchantDebitCollected(EventData):
    EVENT_TYPE = "merchant_debit.collected.v1"
    TOPIC = topics.MERCHANT_DEBITS_COLLECTED
    KEY_FIELD = "order_id"

    debit_id: NonEmpty
    order_id: NonEmpty
    invoice_number: NonEmpty
    amount: Money
    currency: Currency = "EUR"


class DunningPauseRequested(EventData):
    EVENT_TYPE = "dunning.pause_requested.v1"
    TOPIC = topics.DUNNING_PAUSE_REQUESTED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    invoice_number: NonEmpty
    requested_by: Literal["merchant", "ops"]
    reason: str


class ClockTick(EventData):
    EVENT_TYPE = "clock.tick.v1"
    TOPIC = topics.CLOCK_TICKS
    KEY_FIELD = None

    now: AwareDatetime


# -- output events --------------------------------------------------------------------------


class OrderDecided(EventData):
    EVENT_TYPE = "order.decided.v1"
    TOPIC = topics.ORDERS_DECIDED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    merchant_id: NonEmpty
    state: Literal["created", "declined", "waiting"]
    decline_reason: DeclineReason | None
    debtor_company_id: str | None = None
    viban: str | None = None
    ruleset_version: NonEmpty
    rule_hits: list[RuleHit]

    @model_validator(mode="after")
    def _reason_iff_declined(self) -> OrderDecided:
        if (self.state == "declined") != (self.decline_reason is not None):
            raise ValueError("decline_reason is set exactly when state is declined")
        return self


class OrderStateChanged(EventData):
    EVENT_TYPE = "order.state_changed.v1"
    TOPIC = topics.ORDERS_STATE_CHANGED
    KEY_FIELD = "order_id"

    order_id: NonEmpty
    # None for an order's first state: it had none before the decision.
    from_: OrderState | None = Field(alias="from")
    to: OrderState


class CommandRejected(EventData):
    EVENT_TYPE = "command.rejected.v1"
    TOPIC = topics.COMMANDS_REJECTED
    KEY_FIELD = "order_id"

    command_id: NonEmpty
    command_type: NonEmpty
    order_id: NonEmpty
    reason: NonEmpty


class InvoiceIssued(EventData):
    EVENT_TYPE = "invoice.issued.v1"
    TOPIC = topics.INVOICES_ISSUED
    KEY_FIELD = "order_id"

    invoice_number: NonEmpty
    order_id: NonEmpty
    merchant_id: NonEmpty
    amount: Amount
    issued_on: date
    due_on: date
    viban: NonEmpty
    debtor_company_id: NonEmpty
    currency: Currency = "EUR"


class InvoiceStateChanged(EventData):
    EVENT_TYPE = "invoice.state_changed.v1"
    TOPIC = topics.INVOICES_STATE_CHANGED
    KEY_FIELD = "order_id"

    invoice_number: NonEmpty
    # Not in the contract's column list, but the topic is keyed by order_id.
    order_id: NonEmpty
    from_: InvoiceState | None = Field(alias="from")
    to: InvoiceState


class PayoutInstructed(EventData):
    EVENT_TYPE = "payout.instructed.v1"
    TOPIC = topics.PAYOUTS_INSTRUCTED
    KEY_FIELD = "order_id"

    payout_id: NonEmpty
    order_id: NonEmpty
    invoice_number: NonEmpty
    merchant_id: NonEmpty
    gross: Money
    fee: Money
    payout_amount: Money
    payout_iban: NonEmpty
    currency: Currency = "EUR"


class PayoutClawbackInstructed(EventData):
    EVENT_TYPE = "payout.clawback_instructed.v1"
    TOPIC = topics.PAYOUTS_CLAWBACK_INSTRUCTED
    KEY_FIELD = "order_id"

    clawback_id: NonEmpty
    order_id: NonEmpty
    invoice_number: NonEmpty
    amount: Money
    reason: Literal["canceled", "credit_note"]
    currency: Currency = "EUR"


class PaymentAllocated(EventData):
    EVENT_TYPE = "payment.allocated.v1"
    TOPIC = topics.PAYMENTS_ALLOCATED
    KEY_FIELD = "creditor_iban"

    transaction_id: NonEmpty
    creditor_iban: NonEmpty
    allocations: list[Allocation]
    overpayment: Money
    unallocated: Money
    currency: Currency = "EUR"


class InvoiceSettled(EventData):
    EVENT_TYPE = "invoice.settled.v1"
    TOPIC = topics.INVOICES_SETTLED
    KEY_FIELD = "order_id"

    invoice_number: NonEmpty
    order_id: NonEmpty
    settled_on: date
    paid_total: Money
    currency: Currency = "EUR"


class PaymentOverpaymentForwarded(EventData):
    EVENT_TYPE = "payment.overpayment_forwarded.v1"
    TOPIC = topics.PAYMENTS_OVERPAYMENT_FORWARDED
    KEY_FIELD = "merchant_id"

    transaction_id: NonEmpty
    merchant_id: NonEmpty
    amount: Money
    payout_iban: NonEmpty
    currency: Currency = "EUR"


class PaymentUnmatched(EventData):
    EVENT_TYPE = "payment.unmatched.v1"
    TOPIC = topics.PAYMENTS_UNMATCHED
    KEY_FIELD = "creditor_iban"

    transaction_id: NonEmpty
    creditor_iban: NonEmpty
    reason: NonEmpty


class MerchantDebitInstructed(EventData):
    EVENT_TYPE = "merchant_debit.instructed.v1"
    TOPIC = topics.MERCHANT_DEBITS_INSTRUCTED
    KEY_FIELD = "order_id"

    debit_id: NonEmpty
    merchant_id: NonEmpty
    order_id: NonEmpty
    invoice_number: NonEmpty
    amount: Money
    currency: Currency = "EUR"


class DunningNotice(EventData):
    EVENT_TYPE = "dunning.notice.v1"
    TOPIC = topics.DUNNING_NOTICES
    KEY_FIELD = "order_id"

    invoice_number: NonEmpty
    order_id: NonEmpty
    level: Literal[1, 2, 3]
    days_overdue: StrictInt = Field(ge=1)
    amount_due: Money
    viban: NonEmpty
    currency: Currency = "EUR"


class DunningHandedOver(EventData):
    EVENT_TYPE = "dunning.handed_over.v1"
    TOPIC = topics.DUNNING_HANDED_OVER
    KEY_FIELD = "order_id"

    invoice_number: NonEmpty
    order_id: NonEmpty
    amount_due: Money
    handed_over_on: date
    currency: Currency = "EUR"


class EinvoiceStatusChanged(EventData):
    EVENT_TYPE = "einvoice.status_changed.v1"
    TOPIC = topics.EINVOICES_STATUS_CHANGED
    KEY_FIELD = "order_id"

    invoice_number: NonEmpty
    order_id: NonEmpty
    billit_order_id: NonEmpty
    delivery_status: Literal["pending", "delivered", "error"]
    receiver_status: PeppolResponseCode | None
    detail: str


class ExposureReleased(EventData):
    """Internal, shipping -> risk: part of an approved order no longer counts against the
    debtor's financing limit (canceled, credited or settled)."""

    EVENT_TYPE = "exposure.released.v1"
    TOPIC = topics.EXPOSURE_RELEASED
    KEY_FIELD = "order_id"

    release_id: NonEmpty
    order_id: NonEmpty
    debtor_company_id: str | None
    amount: Money
    reason: Literal["canceled", "credit_note", "settled"]
    currency: Currency = "EUR"


INPUT_EVENTS: tuple[type[EventData], ...] = (
    MerchantConfigured,
    CompanyRegistered,
    OrderRequested,
    OrderReviewed,
    OrderShipped,
    OrderCanceled,
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
INTERNAL_EVENTS: tuple[type[EventData], ...] = (ExposureReleased,)
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

    entity_key: NonEmpty
    action: NonEmpty
    entity: NonEmpty
    due_at: AwareDatetime
    fired_at: AwareDatetime
    payload: dict[str, Any] = Field(default_factory=dict)


class JobFinished(EventData):
    """Internal, a service's job executor to the service: a job's call succeeded, or failed
    for good after its retries. Its id derives from (job, generation, status)."""

    EVENT_TYPE = "runtime.job_finished.v1"
    TOPIC = "internal.<service>.job_finished"
    KEY_FIELD = "entity_key"

    job_id: NonEmpty
    kind: NonEmpty
    target: NonEmpty
    entity_key: NonEmpty
    status: Literal["succeeded", "failed"]
    attempts: StrictInt = Field(ge=1)
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


MODEL_BY_TYPE.update({m.EVENT_TYPE: m for m in (TimerFired, JobFinished)})


def register_internal_topics(service: str) -> None:
    """Let ``service``'s workers decode their own timer and job topics (idempotent)."""
    EVENT_TYPES_BY_TOPIC[topics.timer_topic(service)] = {TimerFired.EVENT_TYPE: TimerFired}
    EVENT_TYPES_BY_TOPIC[topics.job_result_topic(service)] = {JobFinished.EVENT_TYPE: JobFinished}


for _service in ("shipping", "dunning", "reconciliation", "einvoice_status"):
    register_internal_topics(_service)
