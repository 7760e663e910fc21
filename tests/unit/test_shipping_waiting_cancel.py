"""Shipping's half of "one writer per order state": a cancel of an order shipping knows only
as waiting is noted, never published; risk's later decision settles it (applied to an
approval, refused for a decline), and a decision never moves an order backwards."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.shipping import domain as d

VIBAN = "DE02120300000000202051"


def waiting(gross: int = 100_000) -> d.Order:
    order = d.record_terms(d.Order("o-1"), "m-1", gross, 30, "EUR").order
    return d.record_decision(order, "waiting", None, None, "c-1").order


def order_changes(result: d.Result) -> list[tuple[str | None, str]]:
    return [(e.from_, e.to) for e in result.effects if isinstance(e, d.OrderStateChanged)]


def test_a_cancel_of_a_waiting_order_is_noted_and_publishes_nothing() -> None:
    noted = d.cancel(waiting(), command_id="cancel-1")
    assert (noted.effects, noted.rejection, noted.park) == ((), None, None)
    assert noted.order.state == "waiting"
    assert noted.order.pending_cancels == ["cancel-1"]
    again = d.cancel(noted.order, command_id="cancel-1")  # the same cancel redelivered
    assert again.order.pending_cancels == ["cancel-1"]
    assert again.effects == ()


def test_approval_after_a_noted_cancel_cancels_the_created_order_once() -> None:
    """Risk approved before it saw the cancel: shipping applies the cancel on the approval,
    with one created -> canceled and the whole gross released; a second noted cancel is
    refused under its own id."""
    noted = d.cancel(waiting(), command_id="cancel-1").order
    noted = d.cancel(noted, command_id="cancel-2").order
    result = d.record_decision(noted, "created", None, VIBAN, "c-1")
    assert result.order.state == "canceled"
    assert result.order.pending_cancels == []
    assert order_changes(result) == [("created", "canceled")]
    releases = [e for e in result.effects if isinstance(e, d.ExposureReleased)]
    assert [(r.amount, r.reason) for r in releases] == [(100_000, "canceled")]
    refused = [e for e in result.effects if isinstance(e, d.CancelRefused)]
    assert [(r.command_id, r.rejection.code) for r in refused] == [("cancel-2", "order_canceled")]
    replayed = d.record_decision(result.order, "created", None, VIBAN, "c-1")
    assert (replayed.order.state, replayed.effects) == ("canceled", ())


def test_decline_after_a_noted_cancel_refuses_the_cancel() -> None:
    noted = d.cancel(waiting(), command_id="cancel-1").order
    result = d.record_decision(noted, "declined", "risk_policy", None, "c-1")
    assert result.order.state == "declined"
    assert order_changes(result) == []
    refused = [e for e in result.effects if isinstance(e, d.CancelRefused)]
    assert [(r.command_id, r.rejection.code) for r in refused] == [("cancel-1", "order_declined")]


def test_a_noted_cancel_left_alone_blocks_shipping() -> None:
    """Risk canceled the order (it never sends another decision): it stays unshippable."""
    noted = d.cancel(waiting(), command_id="cancel-1").order
    merchant = d.MerchantTerms("m-1", "DE89370400440532013000", Decimal("1.90"), 25)
    refused = d.capture(
        noted,
        merchant,
        invoice_number="INV-1",
        amount=d.Money3(100, 84, 16),
        shipped_at=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        currency="EUR",
        fingerprint="f",
    )
    assert refused.rejection is not None
    assert refused.rejection.code == "order_waiting"


def test_a_decision_never_moves_an_order_backwards() -> None:
    """A waiting decision replayed (say after the inbox forgot it) once the order is created
    or shipped changes nothing."""
    created = d.record_decision(waiting(), "created", None, VIBAN, "c-1")
    assert created.order.state == "created"
    replayed = d.record_decision(created.order, "waiting", None, None, "c-1")
    assert replayed.order.state == "created"
    declined = d.record_decision(created.order, "declined", "risk_policy", None, "c-1")
    assert declined.order.state == "created"
