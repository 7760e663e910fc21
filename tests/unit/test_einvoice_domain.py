"""The e-invoice rules without Kafka or Billit: the lines sent to Billit add up to our
invoice to the cent under Billit's own VAT rounding (per line, half up), and receiver
responses move forward only. The oracles recompute Billit's totals here, from the rule."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.einvoice_status import domain
from services.einvoice_status.domain import Item, Line, Money3, Unrepresentable, billit_lines

RATES = ("0", "6", "12", "21", "5.5")
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def billit_totals(lines: list[Line]) -> tuple[int, int]:
    """What Billit computes: per line excl = quantity × unit, VAT = excl × rate rounded half up."""
    net = tax = 0
    for line in lines:
        excl = Decimal(line.quantity) * Decimal(line.unit_cents)
        vat = (excl * Decimal(line.vat_rate) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        net += int(excl)
        tax += int(vat)
    return net, tax


def half_up(cents: Decimal) -> int:
    return int(cents.quantize(Decimal(1), rounding=ROUND_HALF_UP))


items_strategy = st.lists(
    st.builds(
        Item,
        description=st.just("item"),
        quantity=st.integers(1, 20),
        unit_cents=st.integers(1, 100_000),
        vat_rate=st.sampled_from(RATES),
    ),
    min_size=1,
    max_size=6,
)


@given(items_strategy)
def test_the_whole_order_is_sent_as_its_own_line_items(items: list[Item]) -> None:
    """An invoice for the whole order, its tax as Billit rounds the order's lines: the lines
    sent are the order's own, and Billit's totals are the invoice's."""
    net = sum(i.quantity * i.unit_cents for i in items)
    tax = sum(
        half_up(Decimal(i.quantity * i.unit_cents) * Decimal(i.vat_rate) / 100) for i in items
    )
    whole = Money3(net + tax, net, tax)
    lines = billit_lines("Invoice 1", whole, whole, items)
    assert [(ln.quantity, ln.unit_cents, ln.vat_rate) for ln in lines] == [
        (i.quantity, i.unit_cents, i.vat_rate) for i in items
    ]
    assert billit_totals(lines) == (net, tax)


@given(items_strategy, st.integers(1, 10_000), st.integers(-1, 1))
def test_partial_captures_total_to_the_cent_or_are_refused(
    items: list[Item], per_mille: int, off_by: int
) -> None:
    """A capture of part of the order (a share of its net, split over its VAT rates pro rata,
    each rate's VAT rounded half up, then possibly a cent off as a merchant's own rounding
    might be): Billit's totals of the lines are exactly the capture's net and tax, or the
    lines are refused (Unrepresentable), never wrong. Without the cent off, never refused."""
    order_net = sum(i.quantity * i.unit_cents for i in items)
    net = max(1, order_net * per_mille // 10_000)
    weights: dict[str, int] = {}
    for i in items:
        weights[i.vat_rate] = weights.get(i.vat_rate, 0) + i.quantity * i.unit_cents
    shares = {r: net * w // order_net for r, w in weights.items()}
    first = next(iter(shares))
    shares[first] += net - sum(shares.values())
    tax = sum(half_up(Decimal(n) * Decimal(r) / 100) for r, n in shares.items())
    tax = max(0, tax + off_by)
    capture = Money3(net + tax, net, tax)
    order_amount = Money3(order_net * 2 + 1, order_net, order_net + 1)  # not the capture
    try:
        lines = billit_lines("Invoice 2", capture, order_amount, items)
    except Unrepresentable:
        assert off_by != 0
        return
    assert billit_totals(lines) == (net, tax)
    assert all(ln.net > 0 for ln in lines)


def test_the_rounding_remainder_is_placed_the_same_way_every_time() -> None:
    """Two rates whose pro-rata split misses our tax by a cent: the fix is deterministic."""
    items = [Item("a", 1, 3333, "21"), Item("b", 1, 6667, "6")]
    capture = Money3(1000 + 110, 1000, 110)
    first = billit_lines("Invoice 3", capture, None, items)
    assert first == billit_lines("Invoice 3", capture, None, items)
    assert billit_totals(first) == (1000, 110)


def test_a_tax_no_line_can_carry_is_refused() -> None:
    with pytest.raises(Unrepresentable):
        billit_lines("Invoice 4", Money3(1000 + 900, 1000, 900), None, [Item("a", 1, 1000, "21")])


def invoice_following() -> domain.EInvoice:
    amount = domain.Cents3(gross=1210, net=1000, tax=210)
    invoice = domain.EInvoice(
        id="o-1/INV-1",
        order_id="o-1",
        merchant_id="m-1",
        invoice_number="INV-1",
        party_id="1001",
        viban="BE00",
        issued_on=date(2026, 6, 1),
        due_on=date(2026, 7, 1),
        amount=amount,
        worth=amount,
        customer=domain.Customer(name="D", peppol_id="BE0446725877"),
    )
    document = domain.new_invoice_document(invoice)
    document.stage = "following"
    document.billit_order_id = 7
    document.delivery_status = "delivered"
    document.follow_until = NOW + timedelta(days=14)
    invoice.documents.append(document)
    return invoice


def poll(invoice: domain.EInvoice, responses: list[dict[str, Any]]) -> domain.Effects:
    invoice.waiting_on["job"] = domain.JobRef(kind="poll", document="invoice")
    result = {"delivery_status": "Delivered", "responses": responses}
    return domain.on_job_finished(
        invoice, "job", "succeeded", result, None, NOW, domain.PollSchedule()
    )


def response(code: str, file_id: str, at: str) -> dict[str, Any]:
    return {"code": code, "file_id": file_id, "created_at": at}


def test_responses_move_forward_only_and_nothing_is_taken_after_re() -> None:
    """AP then (older) AB in one answer: AB, AP taken in time order; a repeated FileID and a
    later IP (backwards) are not taken; RE after AP is backwards too; PD ends following.
    Another invoice: RE taken, then nothing (AP, PD) and following stops."""
    invoice = invoice_following()
    fx = poll(invoice, [response("AP", "f2", "10:05"), response("AB", "f1", "10:01")])
    assert [c.receiver_status for c in fx.changes] == ["AB", "AP"]
    fx = poll(invoice, [response("AP", "f2", "10:05"), response("IP", "f3", "10:06")])
    assert fx.changes == []
    fx = poll(invoice, [response("RE", "f4", "10:07"), response("PD", "f5", "10:08")])
    assert [c.receiver_status for c in fx.changes] == ["PD"]
    assert invoice.invoice.stage == "done"
    assert fx.stop_polls == ["invoice"]
    assert [(r.code, r.taken) for r in invoice.invoice.responses] == [
        ("AB", True),
        ("AP", True),
        ("IP", False),
        ("RE", False),
        ("PD", True),
    ]
    rejected = invoice_following()
    fx = poll(rejected, [response("AB", "f1", "10:01"), response("RE", "f2", "10:02")])
    assert [c.receiver_status for c in fx.changes] == ["AB", "RE"]
    assert rejected.invoice.stage == "done"
    fx = poll(rejected, [response("AP", "f3", "10:03"), response("PD", "f4", "10:04")])
    assert fx.changes == []
    assert [r.taken for r in rejected.invoice.responses] == [True, True]  # no longer read


def test_a_credit_note_that_empties_the_invoice_and_the_cancel_after_it_credit_once() -> None:
    invoice = invoice_following()
    invoice.invoice.sent_at = NOW
    fx = domain.reduce(invoice, "cn:CN-1", "CN-1", Money3(1210, 1000, 210), 0, NOW)
    assert [j.kind for j in fx.jobs] == ["participant"]
    fx = domain.reduce(invoice, "cancel", "INV-1-C", None, None, NOW)
    assert fx.jobs == []
    assert [d.key for d in invoice.documents] == ["invoice", "cn:CN-1"]


def test_poll_backoff_frequent_then_hourly_then_daily() -> None:
    schedule = domain.PollSchedule()
    assert schedule.next_after(NOW, NOW + timedelta(minutes=5)) == NOW + timedelta(minutes=6)
    assert schedule.next_after(NOW, NOW + timedelta(hours=2)) == NOW + timedelta(hours=3)
    assert schedule.next_after(NOW, NOW + timedelta(days=3)) == NOW + timedelta(days=4)
