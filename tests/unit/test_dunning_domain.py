"""The dunning schedule as pure functions: one example per rule of services/dunning/domain.py
(and docs/dunning-rules.md). Expected days and amounts are worked out by hand from the rules
in each test's comment, never by calling the domain's own helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.dunning import domain as d

BERLIN = ZoneInfo("Europe/Berlin")
CONFIG = d.DunningConfig()
DUE = date(2026, 11, 2)
GROSS = 119_000
VIBAN = "DE02120300000000202051"

# What a step looks like to an observer: ("notice", level, days_overdue, amount) or
# ("hand_over", day, amount).
Seen = tuple[object, ...]


def issued(gross: int = GROSS, due_on: date = DUE, invoice: str = "INV-1") -> d.DunningInvoice:
    state = d.issue(
        None, order_id="o-1", invoice_number=invoice, viban=VIBAN, gross=gross, due_on=due_on
    ).state
    assert state is not None
    return state


def on_day(n: int, hour: int = 10, due_on: date = DUE) -> datetime:
    """10:00 Berlin time on day ``n`` overdue."""
    return datetime.combine(due_on + timedelta(days=n), time(hour), tzinfo=BERLIN)


def seen(effects: Iterable[d.Effect]) -> list[Seen]:
    out: list[Seen] = []
    for effect in effects:
        if isinstance(effect, d.Notice):
            out.append(("notice", effect.level, effect.days_overdue, effect.amount_due))
        else:
            out.append(("hand_over", effect.handed_over_on, effect.amount_due))
    return out


def tick_days(
    state: d.DunningInvoice, days: Iterable[int], config: d.DunningConfig = CONFIG
) -> tuple[d.DunningInvoice, list[Seen]]:
    """One tick at 10:00 Berlin on each given day overdue; what went out."""
    out: list[Seen] = []
    for n in days:
        result = d.tick(state, on_day(n), config)
        assert result.state is not None
        state = result.state
        out += seen(result.effects)
    return state, out


def pause(
    state: d.DunningInvoice,
    day: int,
    by: d.RequestedBy = "merchant",
    reason: str = "customer disputes delivery",
    config: d.DunningConfig = CONFIG,
) -> d.Result:
    return d.request_pause(
        state, "INV-1", requested_by=by, reason=reason, at=on_day(day), config=config
    )


def granted(result: d.Result) -> d.DunningInvoice:
    assert result.rejection is None, result.rejection
    assert result.state is not None
    return result.state


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- the ladder -------------------------------------------------------------------------------


def test_daily_ticks_send_the_three_notices_and_hand_over_on_days_1_14_21_28() -> None:
    """Ticks every day from 3 days before the due date to day 40 overdue: levels 1, 2, 3 on
    days 1, 14, 21 with the full amount, the hand-over on day 28, nothing else."""
    state, out = tick_days(issued(), range(-3, 41))
    assert out == [
        ("notice", 1, 1, GROSS),
        ("notice", 2, 14, GROSS),
        ("notice", 3, 21, GROSS),
        ("hand_over", date(2026, 11, 30), GROSS),
    ]
    assert state.status == "handed_over"
    assert d.next_action_at(state, CONFIG) is None


def test_the_due_date_itself_is_never_overdue() -> None:
    """A tick at 23:59 Berlin on the due date sends nothing; one at 00:00 the next day
    sends level 1 with 1 day overdue."""
    state = issued()
    last_minute = datetime.combine(DUE, time(23, 59), tzinfo=BERLIN)
    assert d.tick(state, last_minute, CONFIG).effects == ()
    midnight = datetime.combine(DUE + timedelta(days=1), time(0), tzinfo=BERLIN)
    assert seen(d.tick(state, midnight, CONFIG).effects) == [("notice", 1, 1, GROSS)]


def test_each_notice_names_the_invoice_viban_and_an_id_fixed_by_invoice_and_level() -> None:
    """The notice carries order, invoice and VIBAN, and its id is the uuid5 derived from
    (order, invoice, level): the same for the same level, different otherwise."""
    result = d.tick(issued(), on_day(1), CONFIG)
    (notice,) = result.effects
    assert isinstance(notice, d.Notice)
    assert (notice.order_id, notice.invoice_number, notice.viban) == ("o-1", "INV-1", VIBAN)
    assert notice.notice_id == d.notice_id_for("o-1", "INV-1", 1)
    assert uuid.UUID(notice.notice_id).version == 5
    ids = {
        d.notice_id_for(order, invoice, level)
        for order in ("o-1", "o-2")
        for invoice in ("INV-1", "INV-2")
        for level in (1, 2, 3)
    }
    ids |= {d.hand_over_id_for(o, i) for o in ("o-1", "o-2") for i in ("INV-1", "INV-2")}
    assert len(ids) == 16
    assert d.notice_id_for("o-1", "INV-1", 2) == d.notice_id_for("o-1", "INV-1", 2)
    with pytest.raises(ValueError, match="level"):
        d.notice_id_for("o-1", "INV-1", 4)


def test_next_action_is_the_berlin_midnight_starting_the_day_each_step_falls_due() -> None:
    """Due 2026-11-02 (CET, UTC+1): day 1 starts 2026-11-02T23:00Z, day 14 (11-16)
    2026-11-15T23:00Z, day 21 (11-23) 2026-11-22T23:00Z, day 28 (11-30) 2026-11-29T23:00Z."""
    state = issued()
    assert d.next_action_at(state, CONFIG) == utc("2026-11-02T23:00")
    state, _ = tick_days(state, [1])
    assert d.next_action_at(state, CONFIG) == utc("2026-11-15T23:00")
    state, _ = tick_days(state, [14])
    assert d.next_action_at(state, CONFIG) == utc("2026-11-22T23:00")
    state, _ = tick_days(state, [21])
    assert d.next_action_at(state, CONFIG) == utc("2026-11-29T23:00")


def test_a_configured_ladder_is_followed() -> None:
    """Notices on days 3, 5, 10 and hand-over on 12, ticked daily."""
    config = d.DunningConfig(notice_days=(3, 5, 10), hand_over_day=12)
    _, out = tick_days(issued(), range(0, 20), config)
    assert out == [
        ("notice", 1, 3, GROSS),
        ("notice", 2, 5, GROSS),
        ("notice", 3, 10, GROSS),
        ("hand_over", DUE + timedelta(days=12), GROSS),
    ]


@pytest.mark.parametrize(
    ("ladder", "hand_over"), [((0, 14, 21), 28), ((1, 14, 14), 28), ((1, 14, 21), 21)]
)
def test_a_ladder_that_does_not_increase_from_day_1_is_refused(
    ladder: tuple[int, int, int], hand_over: int
) -> None:
    with pytest.raises(ValueError, match="increasing"):
        d.DunningConfig(notice_days=ladder, hand_over_day=hand_over)


def test_an_unknown_time_zone_is_refused_when_configured() -> None:
    with pytest.raises(Exception, match="Mars"):
        d.DunningConfig(time_zone="Mars/Olympus_Mons")


def test_a_tick_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="zone"):
        d.tick(issued(), datetime(2026, 11, 20, 10, 0), CONFIG)


# -- payments and credit notes ----------------------------------------------------------------


@pytest.mark.parametrize("paid_on", [0, 13, 20, 27])
def test_a_payment_in_full_before_a_step_stops_it_and_all_later_ones(paid_on: int) -> None:
    """Paid in full on day ``paid_on`` (after that day's tick): of days 1, 14, 21, 28 only
    the steps on days up to ``paid_on`` went out; the rest never do."""
    state, before = tick_days(issued(), range(0, paid_on + 1))
    state = granted(d.record_payment(state, "INV-1", key="tx-1", amount=GROSS))
    state, after = tick_days(state, range(paid_on + 1, 60))
    expected_steps = [day for day in (1, 14, 21, 28) if day <= paid_on]
    assert [s[2] if s[0] == "notice" else 28 for s in before] == expected_steps
    assert after == []
    assert d.next_action_at(state, CONFIG) is None


def test_a_payment_applied_before_the_tick_in_the_same_batch_wins() -> None:
    """On day 14 the batch holds the full payment, then the tick: no level 2."""
    state, _ = tick_days(issued(), range(0, 14))
    state = granted(d.record_payment(state, "INV-1", key="tx-1", amount=GROSS))
    assert d.tick(state, on_day(14, hour=0), CONFIG).effects == ()


def test_partial_payments_and_credit_notes_change_the_amount_on_the_next_notice() -> None:
    """1190.00 due; after level 1, 190.00 paid -> level 2 says 1000.00; a 100.00 credit
    note -> level 3 and the hand-over say 900.00."""
    state, out = tick_days(issued(), range(0, 2))
    state = granted(d.record_payment(state, "INV-1", key="tx-1", amount=19_000))
    state, out2 = tick_days(state, range(2, 15))
    state = granted(d.record_credit_note(state, "INV-1", credit_note_number="CN-1", amount=10_000))
    _, out3 = tick_days(state, range(15, 30))
    assert out + out2 + out3 == [
        ("notice", 1, 1, 119_000),
        ("notice", 2, 14, 100_000),
        ("notice", 3, 21, 90_000),
        ("hand_over", DUE + timedelta(days=28), 90_000),
    ]


def test_a_payment_or_credit_note_applied_twice_counts_once() -> None:
    """The same transaction and the same credit note number again: 1190.00 - 100.00 -
    50.00 = 1040.00 on level 1, not 890.00."""
    state = issued()
    for _ in range(2):
        state = granted(d.record_payment(state, "INV-1", key="tx-1", amount=10_000))
        state = granted(
            d.record_credit_note(state, "INV-1", credit_note_number="CN-1", amount=5_000)
        )
    assert seen(d.tick(state, on_day(1), CONFIG).effects) == [("notice", 1, 1, 104_000)]


def test_a_zero_allocation_changes_nothing_and_a_negative_one_is_a_bug() -> None:
    """A 0.00 line in payments.allocated must not dead-letter the event; a negative amount
    cannot pass the contract, so the domain raises."""
    state = issued()
    assert d.record_payment(state, "INV-1", key="tx-1", amount=0).state == state
    with pytest.raises(ValueError, match="negative"):
        d.record_payment(state, "INV-1", key="tx-2", amount=-1)


def test_events_for_an_invoice_not_issued_yet_are_parked() -> None:
    for result in (
        d.record_payment(None, "INV-9", key="tx-1", amount=100),
        d.record_credit_note(None, "INV-9", credit_note_number="CN-1", amount=100),
        d.settle(None, "INV-9"),
        d.record_invoice_state(None, "INV-9", "canceled"),
    ):
        assert result.park is not None
        assert result.park.code == "unknown_invoice"
    assert d.tick(None, on_day(1), CONFIG) == d.Result(None)


def test_issued_again_changes_nothing() -> None:
    state, _ = tick_days(issued(), [1])
    again = d.issue(state, order_id="o-1", invoice_number="INV-1", viban=VIBAN, gross=1, due_on=DUE)
    assert again.state == state


# -- what stops it ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stop",
    [
        lambda s: d.record_invoice_state(s, "INV-1", "canceled"),
        lambda s: d.record_invoice_state(s, "INV-1", "complete"),
        lambda s: d.settle(s, "INV-1"),
        lambda s: d.record_credit_note(s, "INV-1", credit_note_number="CN-1", amount=GROSS),
    ],
    ids=["canceled", "complete", "settled", "fully credited"],
)
def test_a_canceled_settled_or_fully_credited_invoice_gets_nothing_more(
    stop: Callable[[d.DunningInvoice], d.Result],
) -> None:
    """After level 1, the invoice closes: daily ticks to day 60 send nothing."""
    state, _ = tick_days(issued(), range(0, 2))
    state = granted(stop(state))
    state, out = tick_days(state, range(2, 61))
    assert out == []
    assert d.next_action_at(state, CONFIG) is None


def test_credit_notes_adding_up_to_the_gross_cancel_the_invoice() -> None:
    state = issued()
    state = granted(d.record_credit_note(state, "INV-1", credit_note_number="A", amount=100_000))
    assert state.status == "open"
    state = granted(d.record_credit_note(state, "INV-1", credit_note_number="B", amount=19_000))
    assert state.status == "canceled"


def test_a_late_state_from_shipping_changes_nothing() -> None:
    state = issued()
    assert d.record_invoice_state(state, "INV-1", "late").state == state


# -- gaps, repeats and the clock going back ---------------------------------------------------


def test_a_40_day_jump_catches_up_one_step_per_day_in_order() -> None:
    """No tick until day 40: level 1 on day 40 (repeats that day send nothing more), level 2
    on 41, level 3 on 42, hand-over on 43."""
    _, out = tick_days(issued(), [40, 40, 40, 41, 41, 42, 43, 43, 44])
    assert out == [
        ("notice", 1, 40, GROSS),
        ("notice", 2, 41, GROSS),
        ("notice", 3, 42, GROSS),
        ("hand_over", DUE + timedelta(days=43), GROSS),
    ]


def test_after_a_jump_the_next_missed_step_waits_for_the_next_days_tick() -> None:
    """Ticks on days 40 and 60 only: level 1 on 40, level 2 on 60; next action: day 61."""
    state, out = tick_days(issued(), [40, 60])
    assert out == [("notice", 1, 40, GROSS), ("notice", 2, 60, GROSS)]
    # 2027-01-02 (day 61) starts at 2027-01-01T23:00Z (CET)
    assert d.next_action_at(state, CONFIG) == utc("2027-01-01T23:00")


def test_a_catch_up_step_waits_until_the_next_day_when_today_already_had_one() -> None:
    """Level 1 on day 40: the next action is the start of day 41 (2026-12-13 Berlin =
    2026-12-12T23:00Z), although level 2 was due long ago."""
    state, _ = tick_days(issued(), [40])
    assert d.next_action_at(state, CONFIG) == utc("2026-12-12T23:00")


def test_ticks_going_backwards_undo_nothing_and_send_nothing() -> None:
    """Ticked to day 20 (levels 1 and 2 out), then ticks for days 19..0 and day 20 again:
    nothing goes out, the state is unchanged; day 21 still brings level 3."""
    state, out = tick_days(issued(), range(0, 21))
    assert [s[1] for s in out] == [1, 2]
    back, out_back = tick_days(state, [*range(19, -1, -1), 20])
    assert out_back == []
    assert back == state
    _, out_later = tick_days(back, [21])
    assert out_later == [("notice", 3, 21, GROSS)]


def test_a_stale_tick_after_a_paused_day_does_not_send_a_step_for_an_earlier_day() -> None:
    """Levels 1 and 2 on days 1 and 14, no tick on days 15..24, an ops pause on day 25
    (25..31). The tick on day 25 is paused: nothing, though level 3 is due. A late tick for
    day 24 (unpaused, 24 counted days) must not send level 3 as if time had gone back:
    level 3 goes on day 32, the first unpaused day after the pause."""
    state, _ = tick_days(issued(), [1, 14])
    state = granted(pause(state, 25, by="ops"))
    state, out = tick_days(state, [25, 24, *range(26, 32)])
    assert out == []
    _, out = tick_days(state, [32])
    assert out == [("notice", 3, 32, GROSS)]


def test_next_action_is_never_before_the_latest_ticked_day() -> None:
    """Level 1 on day 1; an ops pause on day 20 (20..26); the next tick comes on day 22
    (paused: nothing). Level 2 has been due since day 14, but a tick for a day before 22
    would be stale: the next action is day 27 (2026-11-29 Berlin, 2026-11-28T23:00Z)."""
    state, _ = tick_days(issued(), [1])
    state = granted(pause(state, 20, by="ops"))
    state, out = tick_days(state, [22])
    assert out == []
    assert d.next_action_at(state, CONFIG) == utc("2026-11-28T23:00")


# -- pauses -----------------------------------------------------------------------------------


def test_a_merchant_pause_inside_its_window_moves_every_later_step_by_7_days() -> None:
    """Level 1 on day 1; the merchant pauses on day 3 (days 3..9 paused). Counted days
    reach 14 on day 21, 21 on day 28, 28 on day 35."""
    state, out = tick_days(issued(), range(0, 3))
    state = granted(pause(state, 3))
    _, out2 = tick_days(state, range(3, 50))
    assert out + out2 == [
        ("notice", 1, 1, GROSS),
        ("notice", 2, 21, GROSS),
        ("notice", 3, 28, GROSS),
        ("hand_over", DUE + timedelta(days=35), GROSS),
    ]


def test_a_merchant_pause_on_day_1_before_the_tick_holds_back_level_1() -> None:
    """Paused on day 1 at 08:00 (days 1..7), ticks daily from 10:00: level 1 on day 8."""
    state = granted(
        d.request_pause(
            issued(),
            "INV-1",
            requested_by="merchant",
            reason="",
            at=on_day(1, hour=8),
            config=CONFIG,
        )
    )
    _, out = tick_days(state, range(1, 16))
    assert out == [("notice", 1, 8, GROSS)]


@pytest.mark.parametrize("day", [-5, 0, 8, 30])
def test_a_merchant_pause_outside_days_1_to_7_overdue_is_refused(day: int) -> None:
    state = issued()
    result = pause(state, day)
    assert result.rejection is not None
    assert result.rejection.code == "outside_pause_window"
    assert result.state == state


@pytest.mark.parametrize("day", [1, 7])
def test_a_merchant_pause_on_the_edges_of_its_window_is_granted(day: int) -> None:
    granted(pause(issued(), day))


def test_a_second_merchant_pause_is_refused_while_paused_and_after() -> None:
    """Paused on day 2 (days 2..8): again on day 5 -> refused (paused). With a window of 1-20
    days and 3-day merchant pauses, a second one on day 10, after the first ended, is refused
    too: the merchant pauses an invoice once."""
    state = granted(pause(issued(), 2))
    refused = pause(state, 5)
    assert refused.rejection is not None
    assert refused.rejection.code == "already_paused"
    wide = d.DunningConfig(merchant_pause_window=(1, 20), merchant_pause_days=3)
    state = granted(pause(issued(), 2, config=wide))
    refused = pause(state, 10, config=wide)
    assert refused.rejection is not None
    assert refused.rejection.code == "already_paused"


def test_a_merchant_pause_during_an_ops_pause_is_refused() -> None:
    state = granted(pause(issued(), 2, by="ops"))
    refused = pause(state, 4)
    assert refused.rejection is not None
    assert refused.rejection.code == "already_paused"


def test_an_ops_pause_after_day_7_moves_the_later_steps() -> None:
    """Ops pause on day 10 (days 10..16): level 2 on day 21, level 3 on 28, hand-over 35."""
    state, out = tick_days(issued(), range(0, 10))
    state = granted(pause(state, 10, by="ops", reason="debtor in talks"))
    _, out2 = tick_days(state, range(10, 40))
    assert [s[2] if s[0] == "notice" else s[1] for s in out + out2] == [
        1,
        21,
        28,
        DUE + timedelta(days=35),
    ]


def test_an_ops_pause_lasts_the_configured_days() -> None:
    """Ops pauses last 3 days: paused on day 2 (2..4), level 2 on day 17."""
    config = d.DunningConfig(ops_pause_days=3)
    state, _ = tick_days(issued(), [1], config)
    state = granted(pause(state, 2, by="ops", config=config))
    _, out = tick_days(state, range(2, 20), config)
    assert out == [("notice", 2, 17, GROSS)]


def test_an_ops_pause_needs_a_reason() -> None:
    result = pause(issued(), 10, by="ops", reason="  ")
    assert result.rejection is not None
    assert result.rejection.code == "reason_required"


def test_overlapping_pauses_count_each_paused_day_once() -> None:
    """Merchant on day 3 (3..9), ops on day 5 (5..11): days 3..11 paused, 9 days; level 2
    on day 14 + 9 = 23."""
    state, _ = tick_days(issued(), range(0, 3))
    state = granted(pause(state, 3))
    state = granted(pause(state, 5, by="ops"))
    _, out = tick_days(state, range(3, 30))
    assert out[0] == ("notice", 2, 23, GROSS)


def test_an_overdue_catch_up_step_waits_out_a_pause() -> None:
    """No tick until day 10; the merchant paused on day 3 (3..9). Ticks on days 5 and 9 are
    paused: nothing. Day 10: level 1 with 10 days overdue."""
    state = granted(pause(issued(), 3))
    state, out = tick_days(state, [5, 9, 10])
    assert out == [("notice", 1, 10, GROSS)]


def test_next_action_skips_paused_days() -> None:
    """Level 1 out on day 1, ops pause on day 5 (5..11): level 2 at 14 + 7 = day 21
    (2026-11-23 Berlin, starting 2026-11-22T23:00Z)."""
    state, _ = tick_days(issued(), [1])
    state = granted(pause(state, 5, by="ops"))
    assert d.next_action_at(state, CONFIG) == utc("2026-11-22T23:00")


def test_a_pause_on_an_unknown_settled_canceled_or_handed_over_invoice_is_refused() -> None:
    unknown = d.request_pause(
        None, "INV-9", requested_by="ops", reason="x", at=on_day(3), config=CONFIG
    )
    assert unknown.rejection is not None
    assert unknown.rejection.code == "unknown_invoice"
    settled = granted(d.settle(issued(), "INV-1"))
    canceled = granted(d.record_invoice_state(issued(), "INV-1", "canceled"))
    handed_over, _ = tick_days(issued(), range(0, 29))
    for state, code in [
        (settled, "invoice_settled"),
        (canceled, "invoice_canceled"),
        (handed_over, "invoice_handed_over"),
    ]:
        for by in ("merchant", "ops"):
            result = pause(state, 3 if by == "merchant" else 29, by=by)
            assert result.rejection is not None
            assert result.rejection.code == code
            assert result.state == state


# -- daylight saving time in Europe/Berlin ----------------------------------------------------

# A ladder of one step per day makes every local day boundary visible.
DAILY = d.DunningConfig(notice_days=(1, 2, 3), hand_over_day=4)


def test_the_day_boundary_follows_berlin_into_summer_time() -> None:
    """Due 2026-03-28. Clocks go forward on 2026-03-29 (CET +1 -> CEST +2). Day 1 (03-29)
    starts at 2026-03-28T23:00Z; day 2 (03-30) at 2026-03-29T22:00Z."""
    state = issued(due_on=date(2026, 3, 28))
    for instant, expected in [
        ("2026-03-28T22:59", []),  # 23:59 CET on the due date
        ("2026-03-28T23:00", [("notice", 1, 1, GROSS)]),  # 00:00 CET on 03-29
        ("2026-03-29T21:59", []),  # 23:59 CEST on 03-29
        ("2026-03-29T22:00", [("notice", 2, 2, GROSS)]),  # 00:00 CEST on 03-30
        ("2026-03-29T23:00", []),  # 01:00 CEST on 03-30: same day
    ]:
        result = d.tick(state, utc(instant), DAILY)
        assert result.state is not None
        state = result.state
        assert seen(result.effects) == expected, instant
    assert d.next_action_at(state, DAILY) == utc("2026-03-30T22:00")  # 03-31 00:00 CEST


def test_next_action_across_the_march_change_with_the_default_ladder() -> None:
    """Due 2026-03-28: day 1 starts 2026-03-28T23:00Z (CET); day 14 (04-11) starts at
    2026-04-10T22:00Z (CEST)."""
    state = issued(due_on=date(2026, 3, 28))
    assert d.next_action_at(state, CONFIG) == utc("2026-03-28T23:00")
    state = granted(d.tick(state, utc("2026-03-28T23:00"), CONFIG))
    assert d.next_action_at(state, CONFIG) == utc("2026-04-10T22:00")


def test_the_day_boundary_follows_berlin_back_to_winter_time() -> None:
    """Due 2026-10-24. Clocks go back on 2026-10-25 (CEST +2 -> CET +1), a 25-hour day.
    Day 1 (10-25) starts at 2026-10-24T22:00Z; day 2 (10-26) at 2026-10-25T23:00Z."""
    state = issued(due_on=date(2026, 10, 24))
    assert d.next_action_at(state, DAILY) == utc("2026-10-24T22:00")
    for instant, expected in [
        ("2026-10-24T21:59", []),  # 23:59 CEST on the due date
        ("2026-10-24T22:00", [("notice", 1, 1, GROSS)]),  # 00:00 CEST on 10-25
        ("2026-10-25T22:00", []),  # 23:00 CET on 10-25: still day 1
        ("2026-10-25T22:59", []),  # 23:59 CET on 10-25
        ("2026-10-25T23:00", [("notice", 2, 2, GROSS)]),  # 00:00 CET on 10-26
    ]:
        result = d.tick(state, utc(instant), DAILY)
        assert result.state is not None
        state = result.state
        assert seen(result.effects) == expected, instant
        if instant == "2026-10-24T22:00":
            assert d.next_action_at(state, DAILY) == utc("2026-10-25T23:00")


def test_another_time_zone_can_be_configured() -> None:
    """In UTC, due 2026-11-02: 23:30Z on the due date is not overdue (it is in Berlin)."""
    in_utc = d.DunningConfig(time_zone="UTC")
    late_evening = utc("2026-11-02T23:30")
    assert d.tick(issued(), late_evening, in_utc).effects == ()
    assert len(d.tick(issued(), late_evening, CONFIG).effects) == 1
    assert d.next_action_at(issued(), in_utc) == utc("2026-11-03T00:00")


def test_berlin_days_need_no_time_zone_files_from_the_os(tmp_path: Path) -> None:
    """A slim container may have no /usr/share/zoneinfo: with the OS search path pointed at
    an empty folder, the pinned tzdata package still puts 2026-03-29T22:00Z on 03-30."""
    script = (
        "from datetime import datetime, UTC\n"
        "from services.dunning.domain import DunningConfig, local_day\n"
        "print(local_day(datetime(2026, 3, 29, 22, 0, tzinfo=UTC), DunningConfig()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONTZPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2026-03-30"
