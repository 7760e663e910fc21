"""The dunning schedule over hypothesis-generated histories of one invoice: random due dates,
ladders, time zones, pauses, payments, credit notes, closings and clock ticks (repeated,
jumping weeks ahead, going backwards), some events delivered twice.

Each history is applied to the domain event by event, and checked two ways:

- the invariants of the rules, on what the domain emits: levels in order, at most one step
  a local day, nothing after the invoice closed or was paid in full, the hand-over only
  after level 3, no step on a paused day and none before enough unpaused days, each
  (invoice, level) at most once;
- an oracle, ``DayByDay``, written from the rules (docs/dunning-rules.md) without any of the
  domain's code: it walks the calendar one local day at a time, counting the days no pause
  covers, and says which step goes out on which tick. The domain must emit exactly that.

``next_action_at`` is checked against the ticks themselves: a tick at the instant it names
sends the next step, a tick one microsecond earlier sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.dunning import domain as d

# -- the history ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    at: datetime


@dataclass(frozen=True)
class PauseRequest:
    at: datetime
    by: Literal["merchant", "ops"]
    reason: str


@dataclass(frozen=True)
class Payment:
    key: str
    amount: int


@dataclass(frozen=True)
class CreditNote:
    number: str
    amount: int


@dataclass(frozen=True)
class Closing:
    how: Literal["settled", "canceled", "complete"]


Event = Tick | PauseRequest | Payment | CreditNote | Closing


@dataclass(frozen=True)
class History:
    config: d.DunningConfig
    due_on: date
    gross: int
    events: tuple[Event, ...]


ZONES = ["Europe/Berlin", "Europe/Berlin", "Europe/Berlin", "UTC", "America/Santiago"]

advances = st.one_of(
    st.just(timedelta(0)),
    st.integers(1, 240).map(lambda m: timedelta(minutes=m)),
    st.integers(1, 48).map(lambda h: timedelta(hours=h)),
    st.integers(1, 30).map(lambda h: timedelta(hours=h)),
    st.integers(1, 45).map(lambda n: timedelta(days=n)),  # a worker down, a jump of weeks
)


@st.composite
def configs(draw: st.DrawFn) -> d.DunningConfig:
    if draw(st.booleans()):
        return d.DunningConfig(time_zone=draw(st.sampled_from(ZONES)))
    first = draw(st.integers(1, 5))
    gaps = draw(st.lists(st.integers(1, 8), min_size=3, max_size=3))
    second, third = first + gaps[0], first + gaps[0] + gaps[1]
    low = draw(st.integers(1, 4))
    return d.DunningConfig(
        time_zone=draw(st.sampled_from(ZONES)),
        notice_days=(first, second, third),
        hand_over_day=third + gaps[2],
        merchant_pause_days=draw(st.integers(1, 7)),
        merchant_pause_window=(low, low + draw(st.integers(0, 12))),
        ops_pause_days=draw(st.integers(1, 12)),
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    config = draw(configs())
    due_on = draw(st.dates(date(2026, 1, 1), date(2027, 12, 31)))
    gross = draw(st.integers(1, 500_000))
    wall = datetime.combine(due_on, time(0), tzinfo=UTC) + timedelta(
        minutes=draw(st.integers(-5 * 1440, 3 * 1440))
    )
    events: list[Event] = []
    payments: list[Payment] = []
    credit_notes: list[CreditNote] = []
    kinds = ["tick"] * 8 + ["pause"] * 3 + ["payment", "credit_note", "closing"]
    for _ in range(draw(st.integers(1, 50))):
        # Wall time only moves on; a tick may still carry an older time (a late tick).
        wall += draw(advances)
        kind = draw(st.sampled_from(kinds))
        event: Event
        if kind == "tick":
            stale = draw(st.one_of(st.just(0), st.integers(1, 3 * 1440), st.integers(1, 20 * 1440)))
            event = Tick(wall - timedelta(minutes=stale))
        elif kind == "pause":
            # At the wall time, or at any time around the merchant's window: a request
            # may reach the worker after ticks for later days (a late pause).
            window_end = config.merchant_pause_window[1] + 3
            around_window = datetime.combine(due_on, time(0), tzinfo=UTC) + timedelta(
                minutes=draw(st.integers(-2 * 1440, window_end * 1440))
            )
            event = PauseRequest(
                wall if draw(st.booleans()) else around_window,
                draw(st.sampled_from(["merchant", "ops"])),
                draw(st.sampled_from(["", "  ", "debtor disputes delivery"])),
            )
        elif kind == "payment":
            if draw(st.booleans()) and payments:
                event = draw(st.sampled_from(payments))
            else:
                event = Payment(f"tx-{len(payments)}", draw(st.integers(1, gross)))
                payments.append(event)
        elif kind == "credit_note":
            if draw(st.booleans()) and credit_notes:
                event = draw(st.sampled_from(credit_notes))
            else:
                # Mostly partial; now and then one that leaves nothing to pay.
                most = gross if draw(st.integers(0, 4)) == 0 else max(1, gross // 4)
                event = CreditNote(f"CN-{len(credit_notes)}", draw(st.integers(1, most)))
                credit_notes.append(event)
        else:
            if draw(st.integers(0, 5)) != 0:  # closing is rarer than the other events
                continue
            event = Closing(draw(st.sampled_from(["settled", "canceled", "complete"])))
        events.append(event)
        if draw(st.integers(0, 9)) == 0:
            events.append(event)  # delivered twice
    return History(config, due_on, gross, tuple(events))


# -- the oracle -------------------------------------------------------------------------------


@dataclass
class DayByDay:
    """The rules, simulated one local day at a time."""

    config: d.DunningConfig
    due_on: date
    gross: int
    paused: set[date] = field(default_factory=set)
    merchant_paused: bool = False
    closed: bool = False
    payments: dict[str, int] = field(default_factory=dict)
    credit_notes: dict[str, int] = field(default_factory=dict)
    steps: list[tuple[int, date]] = field(default_factory=list)  # (1-3 notice / 4, day)
    latest_tick_day: date | None = None
    granted: list[bool] = field(default_factory=list)  # one verdict per pause request
    # Unpaused overdue days from due_on + 1 up to and including ``walked_to``.
    walked_to: date | None = None
    counted: int = 0

    def day_of(self, instant: datetime) -> date:
        return instant.astimezone(ZoneInfo(self.config.time_zone)).date()

    def owed(self) -> int:
        return max(0, self.gross - sum(self.payments.values()) - sum(self.credit_notes.values()))

    def pause(self, request: PauseRequest) -> bool:
        """Whether the pause is granted."""
        if self.closed or len(self.steps) == 4:
            return False
        day = self.day_of(request.at)
        if request.by == "merchant":
            low, high = self.config.merchant_pause_window
            if not low <= (day - self.due_on).days <= high:
                return False
            if self.merchant_paused or day in self.paused:
                return False
            self.merchant_paused = True
            length = self.config.merchant_pause_days
        else:
            if request.reason.strip() == "":
                return False
            length = self.config.ops_pause_days
        for n in range(length):
            paused_day = day + timedelta(days=n)
            already_walked = self.walked_to is not None and paused_day <= self.walked_to
            if already_walked and paused_day > self.due_on and paused_day not in self.paused:
                self.counted -= 1  # a day walked before the pause arrived: no longer counted
            self.paused.add(paused_day)
        return True

    def tick(self, instant: datetime) -> tuple[int, date, int, int] | None:
        """(step, day, days overdue, amount due) of what goes out on this tick, if any."""
        day = self.day_of(instant)
        if self.latest_tick_day is not None and day < self.latest_tick_day:
            return None
        self.latest_tick_day = day
        walked = self.walked_to or self.due_on
        while walked < day:
            walked += timedelta(days=1)
            if walked not in self.paused:
                self.counted += 1
        self.walked_to = max(walked, self.walked_to or walked)
        if self.closed or self.owed() == 0 or len(self.steps) == 4:
            return None
        if self.steps and self.steps[-1][1] == day:
            return None
        if day in self.paused or day <= self.due_on:
            return None
        ladder = [*self.config.notice_days, self.config.hand_over_day]
        step = len(self.steps) + 1
        if self.counted < ladder[step - 1]:
            return None
        self.steps.append((step, day))
        return (step, day, (day - self.due_on).days, self.owed())

    def apply(self, event: Event) -> tuple[int, date, int, int] | None:
        if isinstance(event, Tick):
            return self.tick(event.at)
        if isinstance(event, PauseRequest):
            self.granted.append(self.pause(event))
        elif isinstance(event, Payment):
            self.payments.setdefault(event.key, event.amount)
        elif isinstance(event, CreditNote):
            self.credit_notes.setdefault(event.number, event.amount)
            if sum(self.credit_notes.values()) >= self.gross:
                self.closed = True
        else:
            self.closed = True
        return None


# -- applying a history to the domain ---------------------------------------------------------


def apply(state: d.DunningInvoice, event: Event, config: d.DunningConfig) -> d.Result:
    if isinstance(event, Tick):
        return d.tick(state, event.at, config)
    if isinstance(event, PauseRequest):
        return d.request_pause(
            state,
            state.invoice_number,
            requested_by=event.by,
            reason=event.reason,
            at=event.at,
            config=config,
        )
    if isinstance(event, Payment):
        return d.record_payment(state, state.invoice_number, key=event.key, amount=event.amount)
    if isinstance(event, CreditNote):
        return d.record_credit_note(
            state, state.invoice_number, credit_note_number=event.number, amount=event.amount
        )
    if event.how == "settled":
        return d.settle(state, state.invoice_number)
    return d.record_invoice_state(state, state.invoice_number, event.how)


def as_step(effect: d.Effect, due_on: date) -> tuple[int, date, int, int]:
    if isinstance(effect, d.Notice):
        return (effect.level, due_on + timedelta(days=effect.days_overdue),
                effect.days_overdue, effect.amount_due)  # fmt: skip
    return (4, effect.handed_over_on, (effect.handed_over_on - due_on).days, effect.amount_due)


@settings(max_examples=400, deadline=None)
@given(histories())
def test_the_domain_follows_the_day_by_day_rules(history: History) -> None:
    config = history.config
    zone = ZoneInfo(config.time_zone)
    issued = d.issue(
        None,
        order_id="o-1",
        invoice_number="INV-1",
        viban="DE02120300000000202051",
        gross=history.gross,
        due_on=history.due_on,
    ).state
    assert issued is not None
    state = issued
    oracle = DayByDay(config, history.due_on, history.gross)
    ladder = [*config.notice_days, config.hand_over_day]
    emitted: list[tuple[int, date, int, int]] = []
    ids: list[str] = []
    closed = False
    paid_off = False

    for event in history.events:
        before = state
        result = apply(state, event, config)
        assert result.state is not None
        state = result.state
        expected = oracle.apply(event)
        if isinstance(event, PauseRequest):
            # Granted or refused (to commands.rejected) as the rules say.
            assert (result.rejection is None) == oracle.granted[-1], event
        got = [as_step(e, history.due_on) for e in result.effects]
        # The oracle's verdict, tick by tick.
        assert got == ([expected] if expected else []), (event, oracle.steps)

        for effect, step in zip(result.effects, got, strict=True):
            number, day, _, amount = step
            # Levels in order, the hand-over only after level 3, each at most once.
            assert number == len(emitted) + 1
            # At most one step a local day, and never back in time.
            assert not emitted or day > emitted[-1][1]
            # Nothing after the invoice closed or was paid in full; the amount is what is due.
            assert not closed
            assert not paid_off
            assert amount == before.amount_due > 0
            # A step never goes out on a paused day, nor before enough unpaused days.
            assert day not in oracle.paused
            unpaused = sum(
                1
                for n in range(1, (day - history.due_on).days + 1)
                if history.due_on + timedelta(days=n) not in oracle.paused
            )
            assert unpaused >= ladder[number - 1]
            # The step's day is the tick's local day.
            assert isinstance(event, Tick)
            assert event.at.astimezone(zone).date() == day
            ids.append(effect.notice_id if isinstance(effect, d.Notice) else effect.hand_over_id)
            emitted.append(step)

        if isinstance(event, Closing) or (
            isinstance(event, CreditNote) and state.status == "canceled"
        ):
            closed = True
        if state.amount_due == 0:
            paid_off = True
        check_next_action(state, config)

    assert len(set(ids)) == len(ids)


def check_next_action(state: d.DunningInvoice, config: d.DunningConfig) -> None:
    """A tick at next_action_at sends the next step; a tick just before it sends nothing.
    None: not even a tick a year later sends anything."""
    at = d.next_action_at(state, config)
    if at is None:
        far = datetime.combine(state.due_on + timedelta(days=400), time(12), tzinfo=UTC)
        assert d.tick(state, far, config).effects == ()
        return
    assert at.tzinfo is UTC
    zone = ZoneInfo(config.time_zone)
    # The first instant of a local day: a microsecond earlier is the day before.
    assert (at - timedelta(microseconds=1)).astimezone(zone).date() < at.astimezone(zone).date()
    assert d.tick(state, at - timedelta(microseconds=1), config).effects == ()
    sent = d.tick(state, at, config).effects
    assert len(sent) == 1
    effect = sent[0]
    step = effect.level if isinstance(effect, d.Notice) else 4
    assert step == len(state.sent) + 1


@st.composite
def pause_histories(draw: st.DrawFn) -> History:
    """Many pause requests around the merchant's window, then a tick every few hours for
    60 days: the pause rules and the schedule they move, without the noise of payments."""
    config = draw(configs())
    due_on = draw(st.dates(date(2026, 1, 1), date(2027, 12, 31)))
    high = config.merchant_pause_window[1]
    midnight = datetime.combine(due_on, time(0), tzinfo=UTC)
    requests = draw(
        st.lists(
            st.builds(
                PauseRequest,
                st.integers(-2 * 1440, (high + 14) * 1440).map(
                    lambda m: midnight + timedelta(minutes=m)
                ),
                st.sampled_from(["merchant", "merchant", "ops"]),
                st.sampled_from(["", "customer asked for time"]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    # In time order with a tick every 5 hours (a request after a tick of the same time).
    ticks = [Tick(midnight + timedelta(hours=5 * n)) for n in range(-10, 60 * 24 // 5)]
    timed: list[Tick | PauseRequest] = [*ticks, *requests]
    merged = sorted(timed, key=lambda e: e.at)
    return History(config, due_on, draw(st.integers(1, 500_000)), tuple(merged))


@settings(max_examples=300, deadline=None)
@given(pause_histories())
def test_pause_verdicts_and_the_schedule_they_move_follow_the_rules(history: History) -> None:
    """Every pause request is granted or refused as the oracle says, and every step goes
    out on the tick the oracle names."""
    state = d.issue(
        None,
        order_id="o-1",
        invoice_number="INV-1",
        viban="DE02120300000000202051",
        gross=history.gross,
        due_on=history.due_on,
    ).state
    assert state is not None
    oracle = DayByDay(history.config, history.due_on, history.gross)
    for event in history.events:
        result = apply(state, event, history.config)
        assert result.state is not None
        state = result.state
        expected = oracle.apply(event)
        if isinstance(event, PauseRequest):
            assert (result.rejection is None) == oracle.granted[-1], event
        assert [as_step(e, history.due_on) for e in result.effects] == (
            [expected] if expected else []
        ), event


@settings(max_examples=400, deadline=None)
@given(histories())
def test_acting_only_when_the_step_timer_fires_sends_what_the_rules_say(history: History) -> None:
    """The worker does not run the schedule on every tick: it keeps one timer per invoice at
    ``next_action_at`` (recomputed after every change) and runs the schedule only on a tick
    at or after it (services/dunning/store.py; a timer never fires twice for one due time,
    so after acting it is due strictly later). Over the same histories, that gating must send
    exactly what the day-by-day oracle says for every tick, and nothing on the ticks it
    skips."""
    config = history.config
    state = d.issue(
        None,
        order_id="o-1",
        invoice_number="INV-1",
        viban="DE02120300000000202051",
        gross=history.gross,
        due_on=history.due_on,
    ).state
    assert state is not None
    oracle = DayByDay(config, history.due_on, history.gross)
    timer = d.next_action_at(state, config)
    for event in history.events:
        expected = oracle.apply(event)
        got: list[tuple[int, date, int, int]] = []
        if isinstance(event, Tick):
            if timer is not None and event.at >= timer:
                result = d.tick(state, event.at, config)
                assert result.state is not None
                state = result.state
                got = [as_step(e, history.due_on) for e in result.effects]
                acted = timer
                timer = d.next_action_at(state, config)
                if timer is not None and timer <= acted:
                    timer = acted + timedelta(seconds=1)  # as the store writes it
        else:
            result = apply(state, event, config)
            assert result.state is not None
            if result.state is not state:
                state = result.state
                timer = d.next_action_at(state, config)
        assert got == ([expected] if expected else []), (event, oracle.steps, timer)
