"""Topic names of the public contract (../shared/contract/EVENTS.md) and the DLQ rule."""

from __future__ import annotations

# Input topics: published by systems around the platform.
MERCHANTS_CONFIGURED = "merchants.configured"
COMPANIES_REGISTERED = "companies.registered"
ORDERS_REQUESTED = "orders.requested"
ORDERS_REVIEWED = "orders.reviewed"
ORDERS_SHIPPED = "orders.shipped"
ORDERS_CANCELED = "orders.canceled"
ORDERS_AMOUNT_REDUCED = "orders.amount_reduced"
INVOICES_CREDIT_NOTED = "invoices.credit_noted"
BANK_TRANSACTIONS = "bank.transactions"
PAYMENTS_REPORTED = "payments.reported"
MERCHANT_DEBITS_COLLECTED = "merchant_debits.collected"
DUNNING_PAUSE_REQUESTED = "dunning.pause_requested"
CLOCK_TICKS = "clock.ticks"

# Output topics: published by the platform.
ORDERS_DECIDED = "orders.decided"
ORDERS_STATE_CHANGED = "orders.state_changed"
COMMANDS_REJECTED = "commands.rejected"
INVOICES_ISSUED = "invoices.issued"
INVOICES_STATE_CHANGED = "invoices.state_changed"
PAYOUTS_INSTRUCTED = "payouts.instructed"
PAYOUTS_CLAWBACK_INSTRUCTED = "payouts.clawback_instructed"
PAYMENTS_ALLOCATED = "payments.allocated"
INVOICES_SETTLED = "invoices.settled"
PAYMENTS_OVERPAYMENT_FORWARDED = "payments.overpayment_forwarded"
PAYMENTS_UNMATCHED = "payments.unmatched"
MERCHANT_DEBITS_INSTRUCTED = "merchant_debits.instructed"
DUNNING_NOTICES = "dunning.notices"
DUNNING_HANDED_OVER = "dunning.handed_over"
EINVOICES_STATUS_CHANGED = "einvoices.status_changed"

INPUT_TOPICS = (
    MERCHANTS_CONFIGURED,
    COMPANIES_REGISTERED,
    ORDERS_REQUESTED,
    ORDERS_REVIEWED,
    ORDERS_SHIPPED,
    ORDERS_CANCELED,
    ORDERS_AMOUNT_REDUCED,
    INVOICES_CREDIT_NOTED,
    BANK_TRANSACTIONS,
    PAYMENTS_REPORTED,
    MERCHANT_DEBITS_COLLECTED,
    DUNNING_PAUSE_REQUESTED,
    CLOCK_TICKS,
)
OUTPUT_TOPICS = (
    ORDERS_DECIDED,
    ORDERS_STATE_CHANGED,
    COMMANDS_REJECTED,
    INVOICES_ISSUED,
    INVOICES_STATE_CHANGED,
    PAYOUTS_INSTRUCTED,
    PAYOUTS_CLAWBACK_INSTRUCTED,
    PAYMENTS_ALLOCATED,
    INVOICES_SETTLED,
    PAYMENTS_OVERPAYMENT_FORWARDED,
    PAYMENTS_UNMATCHED,
    MERCHANT_DEBITS_INSTRUCTED,
    DUNNING_NOTICES,
    DUNNING_HANDED_OVER,
    EINVOICES_STATUS_CHANGED,
)

# Internal topics: service to service, not part of the public contract (the project's own
# design; documented in the AsyncAPI document as internal).
EXPOSURE_RELEASED = "internal.exposure_released"
CREDIT_NOTES_ACCEPTED = "internal.credit_notes_accepted"
RECONCILIATION_ALLOCATION_REQUESTED = "internal.reconciliation.allocation_requested"
INTERNAL_TOPICS = (EXPOSURE_RELEASED, CREDIT_NOTES_ACCEPTED, RECONCILIATION_ALLOCATION_REQUESTED)


def dlq_topic(topic: str) -> str:
    """Where records of ``topic`` that fail validation or processing go."""
    return f"{topic}.dlq"


# Runtime-internal topics, one pair per service that uses timers or jobs: a due timer comes
# back to its service as a command keyed by the entity, and a job's outcome as an event keyed
# the same way, so each is handled by the worker that owns the entity, in its transaction.
def timer_topic(service: str) -> str:
    return f"internal.{service}.timer_fired"


def job_result_topic(service: str) -> str:
    return f"internal.{service}.job_finished"
