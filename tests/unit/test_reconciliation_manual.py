"""Manual allocation of an unmatched transfer (``allocate_unmatched``), pure. Amounts are
cents; expected splits worked out by hand from docs/reconciliation-rules.md."""

from __future__ import annotations

from datetime import UTC, date, datetime

from services.reconciliation import domain as d

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
HOME = "DE02120300000000202051"
TYPO = "DE02120300000000202099"


def home_with(*invoices: tuple[str, int]) -> d.Account:
    acc = d.record_order(
        d.Account(HOME), order_id="o-1", merchant_id="m-1", debtor_id="c-1", decision="created"
    ).account
    for n, (number, gross) in enumerate(invoices):
        acc = d.issue_invoice(
            acc,
            invoice_number=number,
            order_id="o-1",
            merchant_id="m-1",
            debtor_id="c-1",
            gross=gross,
            issued_on=date(2026, 11, 1),
            due_on=date(2026, 12, 1 + n),
            now=NOW,
        ).account
    return acc


def transfer(acc: d.Account, tx: str, amount: int, currency: str = "EUR") -> d.Result:
    return d.receive_transfer(
        acc,
        transaction_id=tx,
        amount=amount,
        currency=currency,
        booking_date=NOW.date(),
        debtor_name="Muster GmbH",
        debtor_iban="DE89370400440532013000",
        remittance_information="Rechnung 1",
        now=NOW,
    )


def statements(effects: tuple[d.Effect, ...]) -> list[d.PaymentAllocated]:
    return [e for e in effects if isinstance(e, d.PaymentAllocated)]


def test_an_unknown_vibans_transfer_moves_to_the_named_invoice_and_the_rest_is_held() -> None:
    """120.00 to a mistyped VIBAN (unmatched); ops names INV-B (80.00) on the home account:
    INV-B takes 80.00 (invoice_number), INV-A (30.00, due first) 30.00 (oldest_due), 10.00 is
    held. The statement is the transaction's second (restatement 1), still naming the VIBAN
    it was paid to."""
    source = transfer(d.Account(TYPO), "tx", 12000).account
    target = home_with(("INV-A", 3000), ("INV-B", 8000))
    result = d.allocate_unmatched(
        source, target, transaction_id="tx", invoice_number="INV-B", command_id="c1", now=LATER
    )
    assert result.rejection is None
    [statement] = statements(result.effects)
    assert statement.restatement == 1
    assert statement.creditor_iban == TYPO
    assert [(a.invoice_number, a.amount, a.matched_by) for a in statement.allocations] == [
        ("INV-B", 8000, "invoice_number"),
        ("INV-A", 3000, "oldest_due"),
    ]
    assert (statement.held, statement.unmatched, statement.overpayment) == (1000, 0, 0)
    settled = {e.invoice_number for e in result.effects if isinstance(e, d.InvoiceSettled)}
    assert settled == {"INV-A", "INV-B"}
    assert "tx" not in result.source.transactions
    assert "tx" in result.target.transactions
    # the same transfer imported again where it arrived: still one payment
    again = transfer(result.source, "tx", 12000)
    assert again.rejection is None and again.effects == () and again.account is result.source
    # with other content: refused
    other = transfer(result.source, "tx", 12001)
    assert other.rejection is not None and other.rejection.code == "transaction_conflict"


def test_refusals_change_nothing() -> None:
    target = home_with(("INV-A", 3000))
    matched = transfer(target, "paid", 3000).account  # settles INV-A
    unmatched = transfer(d.Account(TYPO), "lost", 500).account
    dollars = transfer(d.Account(TYPO), "usd", 500, currency="USD").account

    def code(source: d.Account, target: d.Account, tx: str, invoice: str) -> str | None:
        result = d.allocate_unmatched(
            source, target, transaction_id=tx, invoice_number=invoice, command_id="c", now=LATER
        )
        assert result.effects == ()
        assert (result.source, result.target) == (source, target)
        return None if result.rejection is None else result.rejection.code

    assert code(matched, matched, "paid", "INV-A") == "transaction_not_unmatched"
    assert code(unmatched, matched, "lost", "INV-A") == "invoice_settled"
    assert code(unmatched, target, "lost", "INV-404") == "unknown_invoice"
    assert code(dollars, target, "usd", "INV-A") == "unsupported_currency"
    assert code(unmatched, target, "nope", "INV-A") == "unknown_transaction"


def test_the_same_command_twice_allocates_once() -> None:
    source = transfer(d.Account(TYPO), "tx", 1000).account
    target = home_with(("INV-A", 3000))
    first = d.allocate_unmatched(
        source, target, transaction_id="tx", invoice_number="INV-A", command_id="c1", now=LATER
    )
    second = d.allocate_unmatched(
        first.source,
        first.target,
        transaction_id="tx",
        invoice_number="INV-A",
        command_id="c1",
        now=LATER,
    )
    assert second.rejection is None and second.effects == ()
    assert second.target.invoices["INV-A"].allocated == 1000
