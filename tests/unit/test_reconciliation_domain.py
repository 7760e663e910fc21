"""Reconciliation's allocation rules as pure functions, one example per rule. Amounts are
cents; every expected split below is worked out by hand from the rules."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta

import pytest

from services.reconciliation import domain as d
from services.reconciliation.matching import named_invoices

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
VIBAN = "DE02120300000000202051"
PAYEE = d.Payee("m-1", "DE89370400440532013000")


def account(decision: d.OrderDecision = "created") -> d.Account:
    return d.record_order(
        d.Account(VIBAN), order_id="o-1", merchant_id="m-1", debtor_id="c-1", decision=decision
    ).account


def issue(
    acc: d.Account,
    number: str,
    gross: int,
    *,
    due: date = date(2026, 12, 31),
    issued: date = date(2026, 12, 1),
    now: datetime = NOW,
    order_id: str = "o-1",
) -> d.Result:
    return d.issue_invoice(
        acc,
        invoice_number=number,
        order_id=order_id,
        merchant_id="m-1",
        debtor_id="c-1",
        gross=gross,
        issued_on=issued,
        due_on=due,
        now=now,
    )


def with_invoices(*invoices: tuple[str, int]) -> d.Account:
    acc = account()
    for number, gross in invoices:
        acc = issue(acc, number, gross).account
    return acc


def pay(
    acc: d.Account,
    tx: str,
    amount: int,
    text: str = "",
    *,
    now: datetime = NOW,
    currency: str = "EUR",
    grace: timedelta = d.DEFAULT_GRACE,
    may_wait: bool = False,
) -> d.Result:
    return d.receive_transfer(
        acc,
        transaction_id=tx,
        amount=amount,
        currency=currency,
        booking_date=now.date(),
        debtor_name="Muster GmbH",
        debtor_iban="DE75512108001245126199",
        remittance_information=text,
        now=now,
        grace=grace,
        may_wait=may_wait,
    )


def statement(result: d.Result, tx: str) -> d.PaymentAllocated:
    found = [e for e in result.effects if isinstance(e, d.PaymentAllocated)]
    assert [s.transaction_id for s in found].count(tx) == 1, result.effects
    return next(s for s in found if s.transaction_id == tx)


def split(s: d.PaymentAllocated) -> list[tuple[str, int, str]]:
    return [(a.invoice_number, a.amount, a.matched_by) for a in s.allocations]


def settled(result: d.Result) -> dict[str, int]:
    return {
        e.invoice_number: e.paid_total for e in result.effects if isinstance(e, d.InvoiceSettled)
    }


def adds_up(s: d.PaymentAllocated, amount: int) -> bool:
    return sum(a.amount for a in s.allocations) + s.overpayment + s.unallocated == amount


# -- finding invoice numbers in the remittance text -------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "INV-2026-001",
        "inv-2026-001",
        "Inv 2026 001",
        "INV2026001",
        "Rechnung Nr. 2026/001",
        "RE:2026-001 vielen Dank",
        "Invoice no. 2026_001",
        "Zahlung 2026.001",
    ],
)
def test_an_invoice_number_is_found_whatever_the_case_spacing_separators_or_prefix(
    text: str,
) -> None:
    """Each way of writing INV-2026-001 names it, and not the other invoice."""
    assert named_invoices(text, ["INV-2026-001", "INV-2026-002"]) == ["INV-2026-001"]


@pytest.mark.parametrize("text", ["INV-2026-0011", "12026001", "INV-2026", "order 2026 paid"])
def test_a_number_inside_a_longer_one_or_a_fragment_names_nothing(text: str) -> None:
    assert named_invoices(text, ["INV-2026-001"]) == []


def test_numbers_are_named_in_text_order_and_a_shared_core_needs_its_prefix() -> None:
    """Several numbers come back in the order written. RE-7 and INV-7 share the core 7: the
    full form names one; a bare 7 is ambiguous and names neither."""
    numbers = ["INV-10", "INV-20", "RE-7", "INV-7"]
    assert named_invoices("rechnung 20 und inv 10", numbers) == ["INV-20", "INV-10"]
    assert named_invoices("re-7", numbers) == ["RE-7"]
    assert named_invoices("inv7, RE 7", numbers) == ["INV-7", "RE-7"]
    assert named_invoices("Nr. 7", numbers) == []


# -- the matching tiers -----------------------------------------------------------------------


def test_the_invoice_named_in_the_text_comes_before_older_ones() -> None:
    acc = account()
    acc = issue(acc, "INV-1", 50_000, due=date(2026, 12, 10)).account
    acc = issue(acc, "INV-2", 30_000, due=date(2026, 12, 20)).account
    result = pay(acc, "tx-1", 30_000, "Rechnung Nr. inv 2")
    assert split(statement(result, "tx-1")) == [("INV-2", 30_000, "invoice_number")]
    assert settled(result) == {"INV-2": 30_000}


def test_several_numbers_in_one_text_are_paid_in_the_order_named() -> None:
    """800.00 naming INV-3 then INV-1: INV-3 (500.00) in full, INV-1 takes the 300.00 left
    although INV-2 is due earlier."""
    acc = account()
    acc = issue(acc, "INV-1", 40_000, due=date(2026, 12, 30)).account
    acc = issue(acc, "INV-2", 40_000, due=date(2026, 12, 5)).account
    acc = issue(acc, "INV-3", 50_000, due=date(2026, 12, 31)).account
    result = pay(acc, "tx-1", 80_000, "RE INV-3 / INV-1")
    assert split(statement(result, "tx-1")) == [
        ("INV-3", 50_000, "invoice_number"),
        ("INV-1", 30_000, "invoice_number"),
    ]
    assert settled(result) == {"INV-3": 50_000}
    assert result.account.invoices["INV-1"].open_amount == 10_000


def test_an_exact_open_amount_is_preferred_to_the_oldest_due() -> None:
    acc = account()
    acc = issue(acc, "INV-1", 50_000, due=date(2026, 12, 10)).account
    acc = issue(acc, "INV-2", 30_000, due=date(2026, 12, 20)).account
    result = pay(acc, "tx-1", 30_000, "thanks")
    assert split(statement(result, "tx-1")) == [("INV-2", 30_000, "exact_amount")]


def test_what_is_left_after_the_named_invoice_can_match_an_exact_amount() -> None:
    acc = account()
    acc = issue(acc, "INV-1", 50_000, due=date(2026, 12, 10)).account
    acc = issue(acc, "INV-2", 30_000, due=date(2026, 12, 20)).account
    acc = issue(acc, "INV-3", 20_000, due=date(2026, 12, 25)).account
    result = pay(acc, "tx-1", 50_000, "INV-3")
    assert split(statement(result, "tx-1")) == [
        ("INV-3", 20_000, "invoice_number"),
        ("INV-2", 30_000, "exact_amount"),
    ]


def test_otherwise_oldest_due_date_first_then_oldest_issue_date() -> None:
    """A and B are due the same day, B issued earlier; C is due first. 1000.00 matches no
    single open amount: C, then B, then A with what is left."""
    acc = account()
    acc = issue(acc, "A", 40_000, due=date(2026, 12, 10), issued=date(2026, 11, 10)).account
    acc = issue(acc, "B", 40_000, due=date(2026, 12, 10), issued=date(2026, 11, 1)).account
    acc = issue(acc, "C", 30_000, due=date(2026, 12, 5), issued=date(2026, 11, 20)).account
    result = pay(acc, "tx-1", 100_000)
    assert split(statement(result, "tx-1")) == [
        ("C", 30_000, "oldest_due"),
        ("B", 40_000, "oldest_due"),
        ("A", 30_000, "oldest_due"),
    ]
    assert settled(result) == {"C": 30_000, "B": 40_000}
    assert result.account.invoices["A"].open_amount == 10_000


# -- partial, combined and split payments -----------------------------------------------------


def test_one_invoice_paid_by_several_transfers_is_settled_by_the_last() -> None:
    acc = with_invoices(("INV-1", 100_000))
    first = pay(acc, "tx-1", 40_000)
    assert split(statement(first, "tx-1")) == [("INV-1", 40_000, "oldest_due")]
    assert settled(first) == {}
    assert first.account.invoices["INV-1"].open_amount == 60_000
    second = pay(first.account, "tx-2", 60_000, now=NOW + timedelta(days=2))
    assert split(statement(second, "tx-2")) == [("INV-1", 60_000, "exact_amount")]
    assert settled(second) == {"INV-1": 100_000}
    settle = next(e for e in second.effects if isinstance(e, d.InvoiceSettled))
    assert settle.settled_on == (NOW + timedelta(days=2)).date()
    assert settle.order_id == "o-1"


def test_one_transfer_for_several_invoices_settles_each() -> None:
    acc = with_invoices(("INV-1", 10_000), ("INV-2", 20_000))
    result = pay(acc, "tx-1", 30_000, "INV-1 INV-2")
    assert split(statement(result, "tx-1")) == [
        ("INV-1", 10_000, "invoice_number"),
        ("INV-2", 20_000, "invoice_number"),
    ]
    assert settled(result) == {"INV-1": 10_000, "INV-2": 20_000}


# -- credit: held, applied, forwarded ---------------------------------------------------------


def test_what_no_invoice_takes_is_held_and_due_after_the_grace_period() -> None:
    acc = with_invoices(("INV-1", 100_000))
    result = pay(acc, "tx-1", 150_000)
    s = statement(result, "tx-1")
    assert split(s) == [("INV-1", 100_000, "oldest_due")]
    assert (s.held, s.unmatched, s.overpayment, s.unallocated) == (50_000, 0, 0, 50_000)
    assert adds_up(s, 150_000)
    assert d.next_action_at(result.account) == NOW + timedelta(days=3)


def test_a_payment_before_its_invoice_is_held_and_taken_by_the_invoice_issued_meanwhile() -> None:
    """500.00 arrives with nothing to pay: held. A 300.00 invoice issued a day later takes
    300.00 of it; the restatement is numbered 1 and has its own derived event id."""
    paid = pay(account(), "tx-1", 50_000)
    first = statement(paid, "tx-1")
    assert (first.restatement, first.allocations, first.held) == (0, (), 50_000)
    later = NOW + timedelta(days=1)
    issued = issue(paid.account, "INV-9", 30_000, now=later)
    again = statement(issued, "tx-1")
    assert again.restatement == 1
    assert split(again) == [("INV-9", 30_000, "held_credit")]
    assert (again.held, again.overpayment) == (20_000, 0)
    assert settled(issued) == {"INV-9": 30_000}
    assert again.event_id == d.statement_event_id("tx-1", 1) != first.event_id
    assert d.statement_event_id("tx-1", 1) == d.statement_event_id("tx-1", 1)
    # the rest is still due three days after it arrived, not after the invoice
    assert d.next_action_at(issued.account) == NOW + timedelta(days=3)


def test_held_credit_whose_text_named_the_new_invoice_goes_to_it_first() -> None:
    """Two credits are held; the newer one named INV-5. INV-5 takes that one first."""
    acc = pay(account(), "tx-old", 10_000, "Anzahlung").account
    acc = pay(acc, "tx-named", 20_000, "Rechnung INV-5", now=NOW + timedelta(hours=1)).account
    result = issue(acc, "INV-5", 25_000, now=NOW + timedelta(hours=2))
    assert split(statement(result, "tx-named")) == [("INV-5", 20_000, "invoice_number")]
    assert split(statement(result, "tx-old")) == [("INV-5", 5_000, "held_credit")]
    assert statement(result, "tx-old").held == 5_000


def test_held_credit_is_forwarded_to_the_merchant_once_the_grace_period_ends() -> None:
    acc = pay(with_invoices(("INV-1", 100_000)), "tx-1", 150_000).account
    just_before = d.forward_due_credit(acc, now=NOW + timedelta(days=3, seconds=-1), payee=PAYEE)
    assert just_before.effects == ()
    result = d.forward_due_credit(acc, now=NOW + timedelta(days=3), payee=PAYEE)
    forwarded = [e for e in result.effects if isinstance(e, d.OverpaymentForwarded)]
    assert [(f.transaction_id, f.merchant_id, f.amount, f.payout_iban) for f in forwarded] == [
        ("tx-1", "m-1", 50_000, PAYEE.payout_iban)
    ]
    s = statement(result, "tx-1")
    assert (s.restatement, s.overpayment, s.held, s.unallocated) == (1, 50_000, 0, 0)
    assert adds_up(s, 150_000)
    assert d.next_action_at(result.account) is None
    # the next tick finds nothing more to forward
    assert d.forward_due_credit(result.account, now=NOW + timedelta(days=4), payee=PAYEE) == (
        d.Result(result.account)
    )


def test_the_grace_period_is_configurable() -> None:
    acc = pay(account(), "tx-1", 1_000, grace=timedelta(hours=6)).account
    assert d.next_action_at(acc) == NOW + timedelta(hours=6)
    result = d.forward_due_credit(acc, now=NOW + timedelta(hours=6), payee=PAYEE)
    assert statement(result, "tx-1").overpayment == 1_000


def test_without_a_payout_iban_due_credit_waits() -> None:
    acc = pay(account(), "tx-1", 1_000).account
    result = d.forward_due_credit(acc, now=NOW + timedelta(days=5), payee=None)
    assert result.park is not None
    assert result.park.code == "merchant_not_configured"
    assert d.next_action_at(result.account) == NOW + timedelta(days=3)


def test_next_action_at_is_the_earliest_credit_of_the_debtor_to_fall_due() -> None:
    acc = pay(account(), "tx-1", 1_000, now=NOW + timedelta(days=1)).account
    acc = pay(acc, "tx-2", 2_000, now=NOW).account
    assert d.next_action_at(acc) == NOW + timedelta(days=3)
    partly = d.forward_due_credit(acc, now=NOW + timedelta(days=3), payee=PAYEE)
    assert [e.transaction_id for e in partly.effects if isinstance(e, d.OverpaymentForwarded)] == [
        "tx-2"
    ]
    assert d.next_action_at(partly.account) == NOW + timedelta(days=4)
    assert d.next_action_at(account()) is None


# -- cancellations and credit notes -----------------------------------------------------------


def test_what_was_paid_toward_a_canceled_invoice_becomes_credit() -> None:
    acc = pay(with_invoices(("INV-1", 100_000)), "tx-1", 100_000).account
    later = NOW + timedelta(days=1)
    result = d.cancel_invoice(acc, invoice_number="INV-1", now=later)
    s = statement(result, "tx-1")
    assert (s.restatement, s.allocations, s.held) == (1, (), 100_000)
    assert d.next_action_at(result.account) == later + timedelta(days=3)
    # canceled again: nothing more happens
    assert d.cancel_invoice(result.account, invoice_number="INV-1", now=later).effects == ()


def test_credit_freed_by_a_cancel_goes_to_another_open_invoice_first() -> None:
    acc = with_invoices(("INV-1", 100_000))
    acc = pay(acc, "tx-1", 100_000, "INV-1").account
    acc = issue(acc, "INV-2", 40_000).account
    result = d.cancel_invoice(acc, invoice_number="INV-1", now=NOW)
    s = statement(result, "tx-1")
    assert split(s) == [("INV-2", 40_000, "held_credit")]
    assert s.held == 60_000
    assert settled(result) == {"INV-2": 40_000}


def test_a_credit_note_below_what_was_paid_turns_the_excess_into_credit() -> None:
    """1000.00 invoice, 600.00 paid, credited by 500.00: worth 500.00, so 100.00 of the
    payment becomes credit and the invoice is settled at 500.00."""
    acc = pay(with_invoices(("INV-1", 100_000)), "tx-1", 60_000).account
    result = d.apply_credit_note(
        acc, invoice_number="INV-1", credit_note_number="CN-1", amount=50_000, now=NOW
    )
    s = statement(result, "tx-1")
    assert split(s) == [("INV-1", 50_000, "oldest_due")]
    assert s.held == 10_000
    assert settled(result) == {"INV-1": 50_000}


def test_what_a_credit_note_frees_comes_off_the_newest_payment_first() -> None:
    """INV-1 (1000.00) paid 400.00 by tx-1, then 500.00 by tx-2; credited by 300.00 it is
    worth 700.00: the 200.00 paid too much comes back from tx-2, tx-1 is untouched."""
    acc = pay(with_invoices(("INV-1", 100_000)), "tx-1", 40_000).account
    acc = pay(acc, "tx-2", 50_000, now=NOW + timedelta(hours=1)).account
    result = d.apply_credit_note(
        acc, invoice_number="INV-1", credit_note_number="CN-1", amount=30_000, now=NOW
    )
    s = statement(result, "tx-2")
    assert (split(s), s.held) == ([("INV-1", 30_000, "oldest_due")], 20_000)
    assert "tx-1" not in {
        e.transaction_id for e in result.effects if isinstance(e, d.PaymentAllocated)
    }
    assert settled(result) == {"INV-1": 70_000}


def test_a_credit_note_down_to_what_was_paid_settles_the_invoice() -> None:
    acc = pay(with_invoices(("INV-1", 100_000)), "tx-1", 60_000).account
    result = d.apply_credit_note(
        acc, invoice_number="INV-1", credit_note_number="CN-1", amount=40_000, now=NOW
    )
    assert settled(result) == {"INV-1": 60_000}
    assert [e for e in result.effects if isinstance(e, d.PaymentAllocated)] == []


def test_a_full_credit_note_cancels_the_invoice_and_frees_all_that_was_paid() -> None:
    acc = pay(with_invoices(("INV-1", 100_000)), "tx-1", 60_000).account
    result = d.apply_credit_note(
        acc, invoice_number="INV-1", credit_note_number="CN-1", amount=100_000, now=NOW
    )
    assert result.account.invoices["INV-1"].status == "canceled"
    assert statement(result, "tx-1").held == 60_000
    assert settled(result) == {}


def test_credit_notes_that_cannot_apply_are_refused_or_parked() -> None:
    acc = with_invoices(("INV-1", 100_000))
    noted = d.apply_credit_note(
        acc, invoice_number="INV-1", credit_note_number="CN-1", amount=30_000, now=NOW
    ).account
    too_much = d.apply_credit_note(
        noted, invoice_number="INV-1", credit_note_number="CN-2", amount=70_001, now=NOW
    )
    assert too_much.rejection is not None
    assert too_much.rejection.code == "credit_exceeds_invoice"
    reused = d.apply_credit_note(
        noted, invoice_number="INV-1", credit_note_number="CN-1", amount=1, now=NOW
    )
    assert reused.rejection is not None
    assert reused.rejection.code == "credit_note_number_reused"
    again = d.apply_credit_note(
        noted, invoice_number="INV-1", credit_note_number="CN-1", amount=30_000, now=NOW
    )
    assert again == d.Result(noted)
    unknown = d.apply_credit_note(
        noted, invoice_number="INV-404", credit_note_number="CN-3", amount=1, now=NOW
    )
    assert unknown.park is not None
    assert unknown.park.code == "unknown_invoice"


# -- transfers nobody can take ----------------------------------------------------------------


def test_a_transfer_to_an_unknown_viban_is_unmatched_and_stated_as_unallocated() -> None:
    result = pay(d.Account("DE00999999999999999999"), "tx-1", 12_345)
    unmatched = [e for e in result.effects if isinstance(e, d.PaymentUnmatched)]
    assert [(u.transaction_id, u.reason) for u in unmatched] == [("tx-1", "unknown_viban")]
    s = statement(result, "tx-1")
    assert (s.allocations, s.unmatched, s.unallocated, s.held) == ((), 12_345, 12_345, 0)
    assert d.next_action_at(result.account) is None


def test_a_transfer_to_an_unknown_viban_waits_while_it_may_and_nothing_else_does() -> None:
    # Unknown VIBAN, may wait: parked, the account untouched, nothing emitted.
    unknown = d.Account("DE00999999999999999999")
    waiting = pay(unknown, "tx-1", 12_345, may_wait=True)
    assert waiting.park is not None and waiting.park.code == "unknown_viban"
    assert (waiting.account, waiting.effects) == (unknown, ())
    # A known VIBAN, or another currency on it, never waits.
    known = with_invoices(("INV-1", 12_345))
    paid = pay(known, "tx-1", 12_345, "INV-1", may_wait=True)
    assert paid.park is None
    assert split(statement(paid, "tx-1")) == [("INV-1", 12_345, "invoice_number")]
    dollars = pay(known, "tx-2", 12_345, "INV-1", currency="USD", may_wait=True)
    assert dollars.park is None
    assert [e.reason for e in dollars.effects if isinstance(e, d.PaymentUnmatched)] == [
        "unsupported_currency"
    ]


def test_a_transfer_in_another_currency_is_unmatched() -> None:
    result = pay(with_invoices(("INV-1", 12_345)), "tx-1", 12_345, "INV-1", currency="USD")
    unmatched = [e for e in result.effects if isinstance(e, d.PaymentUnmatched)]
    assert [u.reason for u in unmatched] == ["unsupported_currency"]
    assert statement(result, "tx-1").currency == "USD"
    assert result.account.invoices["INV-1"].open_amount == 12_345


def test_a_transfer_to_the_viban_of_a_declined_order_is_unmatched() -> None:
    result = pay(account("declined"), "tx-1", 5_000)
    unmatched = [e for e in result.effects if isinstance(e, d.PaymentUnmatched)]
    assert [u.reason for u in unmatched] == ["order_declined"]
    waiting = pay(account("waiting"), "tx-1", 5_000)
    assert [e.reason for e in waiting.effects if isinstance(e, d.PaymentUnmatched)] == [
        "unknown_order"
    ]


# -- the same transaction again ---------------------------------------------------------------


def test_a_re_imported_transaction_is_one_payment() -> None:
    acc = with_invoices(("INV-1", 100_000))
    first = pay(acc, "tx-1", 40_000, "INV-1")
    before = copy.deepcopy(first.account)
    again = pay(first.account, "tx-1", 40_000, "INV-1")
    assert again == d.Result(before)
    assert again.account.invoices["INV-1"].open_amount == 60_000


def test_the_same_transaction_id_with_other_content_is_refused_and_changes_nothing() -> None:
    acc = pay(with_invoices(("INV-1", 100_000)), "tx-1", 40_000, "INV-1").account
    before = copy.deepcopy(acc)
    conflict = pay(acc, "tx-1", 50_000, "INV-1")
    assert conflict.rejection is not None
    assert conflict.rejection.code == "transaction_conflict"
    assert conflict.effects == ()
    assert acc == before
    elsewhere = d.receive_transfer(
        account(),
        transaction_id="tx-1",
        amount=40_000,
        currency="EUR",
        booking_date=NOW.date(),
        debtor_name="x",
        debtor_iban="y",
        remittance_information="",
        now=NOW,
        transaction_id_seen_on="DE00999999999999999999",
    )
    assert elsewhere.rejection is not None
    assert elsewhere.rejection.code == "transaction_conflict"


# -- payments the merchant reports ------------------------------------------------------------


def report(acc: d.Account, amount: int, number: str = "INV-1", report_id: str = "ev-1") -> d.Result:
    return d.report_payment(
        acc, report_id=report_id, order_id="o-1", invoice_number=number, amount=amount
    )


def test_a_reported_payment_is_debited_from_the_merchant_and_allocated_when_collected() -> None:
    acc = with_invoices(("INV-1", 100_000), ("INV-0", 5_000))
    reported = report(acc, 30_000)
    debit_id = d.debit_id_for("o-1", "INV-1", "ev-1")
    assert reported.effects == (d.MerchantDebitInstructed(debit_id, "m-1", "o-1", "INV-1", 30_000),)
    assert report(reported.account, 30_000) == d.Result(reported.account)  # same report again
    collected = d.collect_debit(
        reported.account,
        debit_id=debit_id,
        order_id="o-1",
        invoice_number="INV-1",
        amount=30_000,
        now=NOW,
    )
    assert split(statement(collected, debit_id)) == [("INV-1", 30_000, "merchant_debit")]
    assert collected.account.invoices["INV-1"].open_amount == 70_000
    again = d.collect_debit(
        collected.account,
        debit_id=debit_id,
        order_id="o-1",
        invoice_number="INV-1",
        amount=30_000,
        now=NOW,
    )
    assert again.effects == ()


def test_a_collected_debit_for_an_invoice_paid_meanwhile_becomes_credit() -> None:
    acc = with_invoices(("INV-1", 100_000))
    reported = report(acc, 30_000)
    paid = pay(reported.account, "tx-1", 100_000).account
    debit_id = d.debit_id_for("o-1", "INV-1", "ev-1")
    collected = d.collect_debit(
        paid, debit_id=debit_id, order_id="o-1", invoice_number="INV-1", amount=30_000, now=NOW
    )
    s = statement(collected, debit_id)
    assert (s.allocations, s.held) == ((), 30_000)


def test_reports_that_cannot_be_debited_are_refused_with_a_reason() -> None:
    acc = with_invoices(("INV-1", 100_000), ("INV-2", 10_000), ("INV-3", 10_000))
    too_much = report(acc, 100_001)
    assert too_much.rejection is not None
    assert too_much.rejection.code == "report_exceeds_open_amount"
    # a debit not yet collected counts against what can still be reported
    pending = report(acc, 60_000).account
    second = report(pending, 40_001, report_id="ev-2")
    assert second.rejection is not None
    assert second.rejection.code == "report_exceeds_open_amount"
    assert report(pending, 40_000, report_id="ev-2").rejection is None
    settled_acc = pay(acc, "tx-1", 10_000, "INV-2").account
    on_settled = report(settled_acc, 1, "INV-2")
    assert on_settled.rejection is not None
    assert on_settled.rejection.code == "invoice_settled"
    canceled = d.cancel_invoice(acc, invoice_number="INV-3", now=NOW).account
    on_canceled = report(canceled, 1, "INV-3")
    assert on_canceled.rejection is not None
    assert on_canceled.rejection.code == "invoice_canceled"
    unknown = report(acc, 1, "INV-404")
    assert unknown.park is not None
    assert unknown.park.code == "unknown_invoice"


def test_a_collection_that_does_not_match_its_debit_is_refused() -> None:
    reported = report(with_invoices(("INV-1", 100_000)), 30_000).account
    debit_id = d.debit_id_for("o-1", "INV-1", "ev-1")
    wrong_amount = d.collect_debit(
        reported, debit_id=debit_id, order_id="o-1", invoice_number="INV-1", amount=1, now=NOW
    )
    assert wrong_amount.rejection is not None
    assert wrong_amount.rejection.code == "debit_mismatch"
    unknown = d.collect_debit(
        reported, debit_id="md_nope", order_id="o-1", invoice_number="INV-1", amount=1, now=NOW
    )
    assert unknown.rejection is not None
    assert unknown.rejection.code == "unknown_debit"
