"""The reconciliation worker writes the two outputs every payment makes straight as JSON; the
bytes must be the contract models' own, special characters included."""

from __future__ import annotations

from datetime import date

from services.reconciliation import domain as d
from services.reconciliation.handlers import settled_json, statement_json
from shared import events as ev
from shared.money import from_cents


def test_a_statement_is_the_models_json() -> None:
    for allocations, currency in (
        ((), "EUR"),
        (
            (
                d.AllocationLine("INV-1", 1, "invoice_number"),
                d.AllocationLine('Rë "7"\\', 123456789, "held_credit"),
            ),
            "USD",
        ),
    ):
        s = d.PaymentAllocated("tx-ü", "DE11", 2, 999999999, allocations, 100, 50, 7, currency)
        model = ev.PaymentAllocated(
            transaction_id=s.transaction_id,
            creditor_iban=s.creditor_iban,
            allocations=[
                ev.Allocation(
                    invoice_number=a.invoice_number,
                    amount=from_cents(a.amount),
                    matched_by=a.matched_by,
                )
                for a in allocations
            ],
            overpayment=from_cents(100),
            unallocated=from_cents(57),
            currency=currency,
            restatement=2,
        )
        assert statement_json(s) == model.model_dump_json(by_alias=True)


def test_a_settlement_is_the_models_json() -> None:
    s = d.InvoiceSettled("DE11", "RE/2026\\01 ä", "o-1", date(2027, 7, 2), 30000)
    model = ev.InvoiceSettled(
        invoice_number=s.invoice_number,
        order_id="o-1",
        settled_on=s.settled_on,
        paid_total=from_cents(30000),
    )
    assert settled_json(s) == model.model_dump_json(by_alias=True)
