"""Valid reconciliation inputs, as contract models: what risk, shipping and the bank
importer publish. Shared by the reconciliation tests, its demo act and its benchmarks."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from shared.events import (
    AllocationRequested,
    BankTransactionReceived,
    CreditNoteAccepted,
    InvoiceIssued,
    InvoiceStateChanged,
    MerchantDebitCollected,
    OrderDecided,
    PaymentReported,
)
from tests.examples import amount

MERCHANT = "m-1"
DEBTOR = "c-1"


def decided(
    order_id: str, viban: str, *, merchant_id: str = MERCHANT, debtor: str = DEBTOR
) -> OrderDecided:
    return OrderDecided(
        order_id=order_id,
        merchant_id=merchant_id,
        state="created",
        decline_reason=None,
        debtor_company_id=debtor,
        viban=viban,
        ruleset_version="test",
        rule_hits=[],
    )


def invoice(
    order_id: str,
    number: str,
    gross: str,
    viban: str,
    *,
    issued_on: date = date(2026, 11, 20),
    due_on: date = date(2026, 12, 20),
    merchant_id: str = MERCHANT,
    debtor: str = DEBTOR,
) -> InvoiceIssued:
    return InvoiceIssued(
        invoice_number=number,
        order_id=order_id,
        merchant_id=merchant_id,
        amount=amount(gross),
        issued_on=issued_on,
        due_on=due_on,
        viban=viban,
        debtor_company_id=debtor,
    )


def transfer(
    transaction_id: str,
    viban: str,
    paid: str,
    text: str = "",
    *,
    currency: str = "EUR",
    booking_date: date = date(2026, 12, 1),
    **overrides: Any,
) -> BankTransactionReceived:
    fields: dict[str, Any] = {
        "transaction_id": transaction_id,
        "creditor_iban": viban,
        "amount": Decimal(paid),
        "currency": currency,
        "booking_date": booking_date,
        "debtor_name": "Muster Maschinenbau GmbH",
        "debtor_iban": "DE89370400440532013000",
        "remittance_information": text,
    }
    return BankTransactionReceived(**(fields | overrides))


def accepted_credit_note(
    order_id: str, number: str, note: str, gross: str, worth_after: str
) -> CreditNoteAccepted:
    return CreditNoteAccepted(
        order_id=order_id,
        merchant_id=MERCHANT,
        invoice_number=number,
        credit_note_number=note,
        amount=amount(gross),
        invoice_gross=Decimal(worth_after),
    )


def canceled(order_id: str, number: str, was: str = "paid_out") -> InvoiceStateChanged:
    return InvoiceStateChanged.model_validate(
        {"invoice_number": number, "order_id": order_id, "from": was, "to": "canceled"}
    )


def reported(order_id: str, number: str, paid: str) -> PaymentReported:
    return PaymentReported(
        order_id=order_id,
        invoice_number=number,
        amount=Decimal(paid),
        received_on=date(2026, 12, 2),
    )


def collected(debit_id: str, order_id: str, number: str, paid: str) -> MerchantDebitCollected:
    return MerchantDebitCollected(
        debit_id=debit_id, order_id=order_id, invoice_number=number, amount=Decimal(paid)
    )


def allocation_requested(
    transaction_id: str, viban: str, order_id: str, number: str
) -> AllocationRequested:
    return AllocationRequested(
        transaction_id=transaction_id,
        creditor_iban=viban,
        order_id=order_id,
        invoice_number=number,
        requested_by="ops-test",
        reason="debtor wrote to the wrong account",
    )
