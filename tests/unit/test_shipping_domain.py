"""The shipping lifecycle as pure functions: each transition, and the payout invariant over
hypothesis-generated event sequences with every event delivered twice."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.shipping import domain as d

SHIPPED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MERCHANT = d.MerchantTerms("m-1", "DE89370400440532013000", Decimal("1.90"), 25)


def approved(gross: int = 100_000, duration_days: int = 30) -> d.Order:
    order = d.record_terms(d.Order("o-1"), "m-1", gross, duration_days, "EUR").order
    return d.record_decision(order, "created", None, "DE02120300000000202051", "c-1").order


def money(gross: int) -> d.Money3:
    tax = gross * 19 // 119
    return d.Money3(gross, gross - tax, tax)


def ship(
    order: d.Order,
    number: str,
    gross: int,
    fp: str | None = None,
    merchant: d.MerchantTerms = MERCHANT,
) -> d.Result:
    return d.capture(
        order,
        merchant,
        invoice_number=number,
        amount=money(gross),
        shipped_at=SHIPPED_AT,
        currency="EUR",
        fingerprint=fp or f"{number}/{gross}",
    )


def credit(order: d.Order, number: str, note: str, gross: int) -> d.Result:
    return d.credit_note(
        order,
        invoice_number=number,
        credit_note_number=note,
        amount=money(gross),
        fingerprint=f"{note}/{gross}",
    )


def released(result: d.Result) -> int:
    return sum(e.amount for e in result.effects if isinstance(e, d.ExposureReleased))


def kinds(result: d.Result) -> list[str]:
    return [type(e).__name__ for e in result.effects]


def test_fee_is_percent_plus_fixed_rounded_half_even() -> None:
    # 1.90 % of 1190.00 = 22.61 exactly; + 0.25
    assert d.fee_cents(119_000, Decimal("1.90"), 25) == 2_286
    # 2.5 % of 0.10 = 0.0025 EUR = 0.25 cent -> 0; 2.5 % of 0.30 = 0.75 cent -> 1
    assert d.fee_cents(10, Decimal("2.5"), 0) == 0
    assert d.fee_cents(30, Decimal("2.5"), 0) == 1
    # half-even: 0.5 cent -> 0, 1.5 cent -> 2
    assert d.fee_cents(20, Decimal("2.5"), 0) == 0
    assert d.fee_cents(60, Decimal("2.5"), 0) == 2
    # never more than the invoice
    assert d.fee_cents(10, Decimal("1"), 25) == 10


def test_a_full_capture_issues_an_invoice_pays_out_once_and_ships_the_order() -> None:
    result = ship(approved(119_000, 14), "INV-1", 119_000)
    assert kinds(result) == [
        "InvoiceIssued",
        "InvoiceStateChanged",
        "PayoutInstructed",
        "InvoiceStateChanged",
        "OrderStateChanged",
    ]
    payout = next(e for e in result.effects if isinstance(e, d.PayoutInstructed))
    assert (payout.gross, payout.fee, payout.amount) == (119_000, 2_286, 116_714)
    assert payout.payout_id == d.payout_id_for("o-1", "INV-1")
    invoice = result.order.invoices[0]
    assert invoice.due_on == date(2026, 12, 4)
    assert result.order.state == "shipped"
    again = ship(result.order, "INV-1", 119_000)
    assert again.effects == () and again.rejection is None


def test_partial_captures_each_get_an_invoice_until_the_approved_gross() -> None:
    first = ship(approved(100_000), "INV-1", 40_000)
    assert first.order.state == "partially_shipped"
    second = ship(first.order, "INV-2", 60_000)
    assert second.order.state == "shipped"
    assert [i.invoice_number for i in second.order.invoices] == ["INV-1", "INV-2"]
    over = ship(first.order, "INV-2", 60_001)
    assert over.rejection is not None and over.rejection.code == "over_capture"
    assert over.order is first.order


def test_refusals_name_their_reason() -> None:
    order = ship(approved(), "INV-1", 10_000).order
    reused = ship(order, "INV-1", 20_000)
    assert reused.rejection is not None and reused.rejection.code == "invoice_number_reused"
    declined = d.record_decision(
        d.record_terms(d.Order("o-2"), "m-1", 100, 30, "EUR").order,
        "declined",
        "risk_policy",
        None,
        None,
    ).order
    refused = ship(declined, "INV-9", 100)
    assert refused.rejection is not None and refused.rejection.code == "order_declined"
    unknown = ship(d.Order("o-3"), "INV-1", 100)
    assert unknown.park is not None and unknown.park.code == "unknown_order"


def test_cancel_before_capture_is_free_and_after_capture_claws_back_the_payout() -> None:
    free = d.cancel(approved(100_000))
    assert kinds(free) == ["OrderStateChanged", "ExposureReleased"]
    assert free.order.state == "canceled"
    assert released(free) == 100_000  # the whole approval goes back to the debtor's limit

    shipped = ship(approved(100_000), "INV-1", 40_000).order
    canceled = d.cancel(shipped)
    clawback = next(e for e in canceled.effects if isinstance(e, d.ClawbackInstructed))
    invoice = shipped.invoices[0]
    assert clawback.amount == invoice.payout and clawback.reason == "canceled"
    assert canceled.order.invoices[0].state == "canceled"
    assert d.cancel(canceled.order).rejection is not None


def test_cancel_after_hand_over_is_refused() -> None:
    shipped = ship(approved(), "INV-1", 40_000).order
    handed = d.hand_over(shipped, "INV-1").order
    refused = d.cancel(handed)
    assert refused.rejection is not None
    assert refused.rejection.code == "handed_over_to_collection"


def test_credit_notes_claw_back_what_was_paid_above_the_new_amount() -> None:
    shipped = ship(approved(100_000), "INV-1", 10_000).order  # fee 1.90 % = 190 + 25, payout 9_785
    payout = shipped.invoices[0].payout
    assert payout == 9_785
    small = credit(shipped, "INV-1", "CN-1", 40)  # worth 9_960 >= 9_785: nothing back
    assert kinds(small) == ["CreditNoteAccepted", "ExposureReleased"] and released(small) == 40
    accepted = small.effects[0]
    assert isinstance(accepted, d.CreditNoteAccepted)
    assert (accepted.credit_note_number, accepted.amount.gross, accepted.invoice_gross) == (
        "CN-1",
        40,
        9_960,
    )
    bigger = credit(small.order, "INV-1", "CN-2", 1_000)  # worth 8_960: 825 back
    back = [e for e in bigger.effects if isinstance(e, d.ClawbackInstructed)]
    assert [c.amount for c in back] == [825]
    rest = credit(bigger.order, "INV-1", "CN-3", 8_960)  # fully credited: canceled
    assert [type(e).__name__ for e in rest.effects] == [
        "CreditNoteAccepted",
        "ExposureReleased",
        "ClawbackInstructed",
        "InvoiceStateChanged",
    ]
    assert rest.order.invoices[0].state == "canceled"
    assert rest.order.invoices[0].clawed_back == payout
    too_much = credit(bigger.order, "INV-1", "CN-4", 8_961)
    assert too_much.rejection is not None
    assert too_much.rejection.code == "credit_exceeds_open_amount"


def test_settled_invoices_complete_a_shipped_order_and_late_ones_are_marked() -> None:
    order = ship(approved(100_000, 7), "INV-1", 100_000).order
    due = order.invoices[0].due_on
    assert d.mark_late(order, due).effects == ()
    late = d.mark_late(order, due + timedelta(days=1))
    assert late.order.invoices[0].state == "late"
    done = d.settle(late.order, "INV-1")
    assert done.order.state == "complete"
    assert kinds(done) == ["InvoiceStateChanged", "ExposureReleased", "OrderStateChanged"]
    assert released(done) == 100_000


# -- the payout invariant ---------------------------------------------------------------------


@dataclass
class Ledger:
    payouts: dict[str, d.PayoutInstructed] = field(default_factory=dict)
    payout_count: int = 0
    clawbacks: dict[str, int] = field(default_factory=dict)
    clawback_invoice: dict[str, str] = field(default_factory=dict)
    clawback_count: int = 0
    releases: dict[str, int] = field(default_factory=dict)

    def record(self, result: d.Result) -> None:
        for effect in result.effects:
            if isinstance(effect, d.PayoutInstructed):
                self.payout_count += 1
                self.payouts[effect.invoice_number] = effect
            elif isinstance(effect, d.ClawbackInstructed):
                self.clawback_count += 1
                self.clawbacks[effect.clawback_id] = effect.amount
                self.clawback_invoice[effect.clawback_id] = effect.invoice_number
            elif isinstance(effect, d.ExposureReleased):
                assert effect.release_id not in self.releases
                self.releases[effect.release_id] = effect.amount


invoice_numbers = st.sampled_from(["INV-1", "INV-2", "INV-3", "INV-4"])
commands = st.one_of(
    # Amounts of 40k - 20 cents put the 2.50 % and 0.50 % fees exactly on half a cent.
    st.tuples(
        st.just("ship"),
        invoice_numbers,
        st.one_of(st.integers(1, 60_000), st.integers(1, 1_500).map(lambda k: 40 * k - 20)),
    ),
    st.tuples(
        st.just("credit"),
        invoice_numbers,
        st.sampled_from(["CN-1", "CN-2", "CN-3"]),
        st.integers(1, 60_000),
    ),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("settle"), invoice_numbers),
    st.tuples(st.just("hand_over"), invoice_numbers),
)


def apply(order: d.Order, command: tuple[object, ...], merchant: d.MerchantTerms) -> d.Result:
    match command:
        case ("ship", str(number), int(gross)):
            return ship(order, number, gross, merchant=merchant)
        case ("credit", str(number), str(note), int(gross)):
            return credit(order, number, note, gross)
        case ("cancel",):
            return d.cancel(order)
        case ("settle", str(number)):
            return d.settle(order, number)
        case ("hand_over", str(number)):
            return d.hand_over(order, number)
    raise AssertionError(command)


def fee_by_the_rule(gross_cents: int, percent: Decimal, fixed_cents: int) -> int:
    """EVENTS.md: fee = percent x gross + fixed, rounded half-even to the cent; written here
    in euros, apart from services/shipping. Capped at the gross: a payout is never negative."""
    gross = Decimal(gross_cents) / 100
    fee = (percent / 100 * gross).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    fee += Decimal(fixed_cents) / 100
    return min(gross_cents, int(fee * 100))


@settings(max_examples=400, deadline=None)
@given(
    gross=st.integers(1, 150_000),
    percent=st.one_of(
        st.decimals("0", "5", places=2), st.sampled_from([Decimal("2.50"), Decimal("0.50")])
    ),
    fixed=st.integers(0, 100),
    script=st.lists(commands, max_size=25),
)
@example(gross=100_000, percent=Decimal("2.50"), fixed=0, script=[("ship", "INV-1", 20)])
def test_every_invoice_is_paid_out_once_and_clawbacks_match_what_is_owed(
    gross: int, percent: Decimal, fixed: int, script: list[tuple[object, ...]]
) -> None:
    """Runs a generated command script against one approved order, applying every command
    twice in a row (the second application stands for a redelivery), and checks the money
    in the effects against amounts taken from the commands themselves: each payout is
    gross - fee with the fee computed here from the rule, each invoice is paid out once,
    and what is clawed back is exactly what the rule says is owed back."""
    merchant = d.MerchantTerms("m-1", "DE89370400440532013000", percent, fixed)
    order, ledger = approved(gross), Ledger()
    shipped_gross: dict[str, int] = {}  # invoice -> gross of the capture that paid it out
    credited: dict[str, int] = {}  # invoice -> sum of the accepted credit notes' gross
    canceled: set[str] = set()  # invoices an effect reported as canceled
    for command in script:
        for _ in range(2):  # every command is delivered twice
            before = copy.deepcopy(order)
            result = apply(order, command, merchant)
            ledger.record(result)
            assert order == before  # functions work on a copy: nothing changes in place
            for effect in result.effects:
                if isinstance(effect, d.PayoutInstructed):
                    assert command[0] == "ship" and effect.invoice_number == command[1]
                    shipped_gross[effect.invoice_number] = int(str(command[2]))
                if isinstance(effect, d.InvoiceStateChanged) and effect.to == "canceled":
                    canceled.add(effect.invoice_number)
            if command[0] == "credit" and result.effects:
                number = str(command[1])
                credited[number] = credited.get(number, 0) + int(str(command[3]))
            if result.changed:
                order = result.order
    # exactly one payout per invoice, for the capture's gross, of gross - fee by the rule
    assert ledger.payout_count == len(ledger.payouts) == len(shipped_gross)
    assert len({p.payout_id for p in ledger.payouts.values()}) == len(ledger.payouts)
    for number, payout in ledger.payouts.items():
        assert payout.gross == shipped_gross[number]
        assert payout.fee == fee_by_the_rule(payout.gross, percent, fixed)
        assert payout.amount + payout.fee == payout.gross
        assert 0 <= credited.get(number, 0) <= payout.gross
    # what is clawed back: every paid-out cent of a canceled invoice; else what was paid out
    # above what the invoice is still worth (gross - credited); never more than paid out
    assert ledger.clawback_count == len(ledger.clawbacks)
    assert all(amount > 0 for amount in ledger.clawbacks.values())
    clawed: dict[str, int] = {}
    for clawback_id, amount in ledger.clawbacks.items():
        number = ledger.clawback_invoice[clawback_id]
        clawed[number] = clawed.get(number, 0) + amount
    for number, payout in ledger.payouts.items():
        worth = 0 if number in canceled else payout.gross - credited.get(number, 0)
        assert clawed.get(number, 0) == max(0, payout.amount - worth)
    assert set(clawed) <= set(ledger.payouts)
    assert sum(clawed.values()) <= sum(p.amount for p in ledger.payouts.values())
    # never capture more than approved
    assert sum(shipped_gross.values()) == order.captured <= gross
    # exposure given back: all of it once canceled; else what was credited or settled
    given_back = sum(ledger.releases.values())
    if order.state == "canceled":
        assert given_back == gross
    else:
        settled = sum(i.open_amount for i in order.invoices if i.state == "complete")
        assert given_back == sum(credited.values()) + settled
    assert given_back <= gross
