"""The dunning schedule of one invoice. Pure and synchronous: every function takes the
current state (and the time, where it matters) and returns the new state with the effects to
publish, or a refusal. Amounts are integer cents; days are calendar days in one configured
time zone (``DunningConfig.time_zone``, default Europe/Berlin).

The rules, in one place (docs/dunning-rules.md says the same for readers of the README):

- **Day counting.** An instant belongs to the local calendar day it falls on in the time
  zone, whatever the UTC offset that day (so a day is 23 or 25 hours long across a
  daylight-saving change). Day N overdue is the local day ``due_on + N``: day 1 is the first
  day the invoice is late, never the due date itself.
- **Counted days.** A day is *paused* when a granted pause covers it. The counted days on
  day T are the days ``due_on + 1 .. T`` that are not paused.
- **The ladder.** Steps 1, 2, 3 are the notices of levels 1, 2, 3, step 4 the hand-over to
  collection; step k falls due when the counted days reach ``notice_days[k-1]`` (default
  1, 14, 21) or ``hand_over_day`` (default 28). Paused days are not counted, so a pause
  moves every later step by the paused days.
- **When a step goes out.** Only on a clock tick, and only the next step in order, on a day
  that is not paused, later than the day of the previous step, while the invoice is open
  and something is still due. So at most one step per invoice per day; the hand-over only
  after the three notices; after a gap (a worker down for days, a tick that jumps weeks) the
  missed steps are caught up one per day, in order, on the ticks of the following days. A
  notice carries its level, the calendar days overdue on the day it goes out (``T -
  due_on``, paused days included: it is how late the debtor really is), the amount due at
  that moment and the VIBAN; the hand-over carries the amount due and its day.
- **Time never goes back.** A tick on a local day before the latest day already ticked
  changes nothing; a repeated tick on the same day sends nothing a first tick did not.
- **Pauses.** A pause requested on local day P for D days covers days P .. P+D-1 (overlapping
  pauses cover the union of their days). The merchant may pause for ``merchant_pause_days``
  (default 7) only while P is ``merchant_pause_window`` (default 1..7) calendar days
  overdue, only once per invoice, and not while a pause covers P. Ops may pause any
  invoice not handed over, with a non-empty reason, for ``ops_pause_days`` (default 7),
  also during another pause. A pause on an unknown, settled, canceled or handed-over
  invoice is refused with a reason.
- **What stops it.** A settled or canceled invoice (canceled also when credit notes reduce
  it to zero) gets nothing more. The amount due is gross - credit notes - payments (never
  below zero); a step that falls due when nothing is due sends nothing, so a debtor who has
  paid in full gets no notice, also when the payment is applied just before the tick in the
  same batch (events are applied one by one, in order). Payments and credit notes are
  ledgered by their own key, so one applied twice counts once.
- **No notice twice.** The schedule never sends a step twice, and each notice and hand-over
  has an id derived from (order, invoice, level): the same notice always has the same id,
  whatever re-runs it. (Invoice numbers are unique per merchant, not globally, so the order
  id is part of the name.)
- **Timers.** ``next_action_at`` gives the instant (UTC) of the local midnight that starts
  the day the next step falls due, given what is known now, or None when nothing more will
  ever go out, so that time-driven work can touch only the invoices that are due.

Every function returns a new state (states are frozen): a refused command changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

from shared.ids import uuid5_str
from shared.outcomes import Park as Park  # noqa: PLC0414 - part of this domain's answers
from shared.outcomes import Rejection as Rejection  # noqa: PLC0414 - likewise

InvoiceStatus = Literal["open", "settled", "canceled", "handed_over"]
RequestedBy = Literal["merchant", "ops"]

NOTICE_LEVELS = (1, 2, 3)
HAND_OVER_STEP = 4  # the step after the three notices

# Deterministic ids: the same notice always has the same name, so a re-run after a crash or
# a replay of the whole history can never send it under a second name.
_DUNNING_NAMESPACE = uuid.UUID("3d0f6a8e-95c4-4f1e-8a57-1c2b9e7d4f60")


def notice_id_for(order_id: str, invoice_number: str, level: int) -> str:
    """The id of the level-``level`` notice of one invoice (a uuid5 string)."""
    if level not in NOTICE_LEVELS:
        raise ValueError(f"a notice level is 1, 2 or 3, not {level}")
    return uuid5_str(_DUNNING_NAMESPACE, f"notice/{order_id}/{invoice_number}/{level}")


def hand_over_id_for(order_id: str, invoice_number: str) -> str:
    """The id of the one hand-over of an invoice to collection (a uuid5 string)."""
    return uuid5_str(_DUNNING_NAMESPACE, f"hand_over/{order_id}/{invoice_number}")


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DunningConfig:
    time_zone: str = "Europe/Berlin"
    notice_days: tuple[int, int, int] = (1, 14, 21)
    hand_over_day: int = 28
    merchant_pause_days: int = 7
    # The calendar days overdue on which a merchant may pause, both ends included.
    merchant_pause_window: tuple[int, int] = (1, 7)
    ops_pause_days: int = 7

    def __post_init__(self) -> None:
        ZoneInfo(self.time_zone)  # an unknown zone fails here, not on the first tick
        ladder = (*self.notice_days, self.hand_over_day)
        if len(self.notice_days) != len(NOTICE_LEVELS):
            raise ValueError("the ladder has exactly three notices (levels 1, 2, 3)")
        if ladder[0] < 1 or any(b <= a for a, b in pairwise(ladder)):
            raise ValueError(
                f"notice days and hand-over day must be increasing from 1, got {ladder}"
            )
        low, high = self.merchant_pause_window
        if not 1 <= low <= high:
            raise ValueError(f"merchant pause window must be 1 <= low <= high, got {low, high}")
        if self.merchant_pause_days < 1 or self.ops_pause_days < 1:
            raise ValueError("a pause lasts at least one day")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)  # ZoneInfo caches instances per key

    def threshold(self, step: int) -> int:
        """The counted days at which ``step`` (1-3 notices, 4 hand-over) falls due."""
        return (*self.notice_days, self.hand_over_day)[step - 1]


def local_day(instant: datetime, config: DunningConfig) -> date:
    """The calendar day an (aware) instant falls on in the configured time zone."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("the time must carry a zone")
    return instant.astimezone(config.zone).date()


def day_starts_at(day: date, config: DunningConfig) -> datetime:
    """The first instant (UTC) of a local calendar day. ``fold=0`` takes the earlier reading
    of an ambiguous midnight and, for a midnight skipped by a clock change, the instant the
    day actually starts at."""
    return datetime.combine(day, time(0), tzinfo=config.zone).astimezone(UTC)


# -- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    first_day: date
    days: int
    requested_by: RequestedBy
    reason: str

    def covers(self, day: date) -> bool:
        return self.first_day <= day < self.first_day + timedelta(days=self.days)


@dataclass(frozen=True)
class Ledgered:
    """An amount that reduces what is due, under the key that makes it count once."""

    key: str
    cents: int


@dataclass(frozen=True)
class SentStep:
    step: int  # 1-3: the notice of that level; 4: the hand-over
    on: date
    days_overdue: int
    amount_due: int


@dataclass(frozen=True)
class DunningInvoice:
    order_id: str
    invoice_number: str
    viban: str
    gross: int
    due_on: date
    status: InvoiceStatus = "open"
    payments: tuple[Ledgered, ...] = ()
    credit_notes: tuple[Ledgered, ...] = ()
    pauses: tuple[Pause, ...] = ()
    sent: tuple[SentStep, ...] = ()
    # The latest local day a tick was applied on: a tick for an earlier day is stale.
    clock_on: date | None = None

    @property
    def paid(self) -> int:
        return sum(p.cents for p in self.payments)

    @property
    def credited(self) -> int:
        return sum(c.cents for c in self.credit_notes)

    @property
    def amount_due(self) -> int:
        return max(0, self.gross - self.credited - self.paid)

    @property
    def next_step(self) -> int | None:
        step = len(self.sent) + 1
        return step if step <= HAND_OVER_STEP else None

    @property
    def last_step_on(self) -> date | None:
        return self.sent[-1].on if self.sent else None

    @property
    def handed_over_on(self) -> date | None:
        return next((s.on for s in self.sent if s.step == HAND_OVER_STEP), None)

    def is_paused(self, day: date) -> bool:
        return any(p.covers(day) for p in self.pauses)

    def counted_days(self, day: date) -> int:
        """Days ``due_on + 1 .. day`` that no pause covers."""
        overdue = (day - self.due_on).days
        if overdue <= 0:
            return 0
        paused: set[date] = set()
        for pause in self.pauses:
            for offset in range(pause.days):
                paused_day = pause.first_day + timedelta(days=offset)
                if self.due_on < paused_day <= day:
                    paused.add(paused_day)
        return overdue - len(paused)

    @property
    def will_dun(self) -> bool:
        """Whether any step can still go out."""
        return self.status == "open" and self.amount_due > 0 and self.next_step is not None


# -- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """Publish to ``dunning.notices``."""

    notice_id: str
    order_id: str
    invoice_number: str
    level: Literal[1, 2, 3]
    days_overdue: int
    amount_due: int
    viban: str


@dataclass(frozen=True)
class HandOver:
    """Publish to ``dunning.handed_over``."""

    hand_over_id: str
    order_id: str
    invoice_number: str
    amount_due: int
    handed_over_on: date


Effect = Notice | HandOver


@dataclass(frozen=True)
class Result:
    state: DunningInvoice | None
    effects: tuple[Effect, ...] = field(default=())
    rejection: Rejection | None = None
    park: Park | None = None

    @property
    def changed(self) -> bool:
        return self.rejection is None and self.park is None


def _unknown(invoice_number: str) -> Result:
    return Result(None, park=Park("unknown_invoice", f"no invoice {invoice_number} yet"))


# -- what arrives from shipping and reconciliation --------------------------------------------


def issue(
    state: DunningInvoice | None,
    *,
    order_id: str,
    invoice_number: str,
    viban: str,
    gross: int,
    due_on: date,
) -> Result:
    """invoices.issued: start following the invoice. Issued again: nothing changes."""
    if state is not None:
        return Result(state)
    if gross <= 0:
        raise ValueError("an issued invoice has a positive gross amount")
    return Result(DunningInvoice(order_id, invoice_number, viban, gross, due_on))


def record_payment(
    state: DunningInvoice | None, invoice_number: str, *, key: str, amount: int
) -> Result:
    """An allocation of a bank payment (key: the transaction id) or any other money received
    for the invoice. The same key again counts once."""
    if state is None:
        return _unknown(invoice_number)
    if amount < 0:
        raise ValueError("a payment is never negative")
    if amount == 0 or any(p.key == key for p in state.payments):
        return Result(state)
    return Result(replace(state, payments=(*state.payments, Ledgered(key, amount))))


def record_credit_note(
    state: DunningInvoice | None, invoice_number: str, *, credit_note_number: str, amount: int
) -> Result:
    """An accepted credit note reduces what is due; one that leaves nothing of the invoice's
    gross cancels it. The same credit note number again counts once."""
    if state is None:
        return _unknown(invoice_number)
    if amount < 0:
        raise ValueError("a credit note never raises what is due")
    if amount == 0 or any(c.key == credit_note_number for c in state.credit_notes):
        return Result(state)
    new = replace(state, credit_notes=(*state.credit_notes, Ledgered(credit_note_number, amount)))
    if new.credited >= new.gross and new.status == "open":
        new = replace(new, status="canceled")
    return Result(new)


def record_invoice_state(state: DunningInvoice | None, invoice_number: str, to: str) -> Result:
    """invoices.state_changed: ``canceled`` and ``complete`` end the dunning; the other
    states (``late`` included: dunning counts its own days) change nothing."""
    if state is None:
        return _unknown(invoice_number)
    if state.status != "open" or to not in {"canceled", "complete"}:
        return Result(state)
    return Result(replace(state, status="canceled" if to == "canceled" else "settled"))


def settle(state: DunningInvoice | None, invoice_number: str) -> Result:
    """invoices.settled: nothing more for this invoice."""
    if state is None:
        return _unknown(invoice_number)
    if state.status != "open":
        return Result(state)
    return Result(replace(state, status="settled"))


# -- pauses -----------------------------------------------------------------------------------


def request_pause(
    state: DunningInvoice | None,
    invoice_number: str,
    *,
    requested_by: RequestedBy,
    reason: str,
    at: datetime,
    config: DunningConfig,
) -> Result:
    """dunning.pause_requested, made at the instant ``at``."""
    if state is None:
        return Result(None, rejection=Rejection("unknown_invoice", f"no invoice {invoice_number}"))
    if state.status != "open":
        return Result(
            state,
            rejection=Rejection(
                f"invoice_{state.status}", f"invoice {invoice_number} is {state.status}"
            ),
        )
    today = local_day(at, config)
    if requested_by == "merchant":
        overdue = (today - state.due_on).days
        low, high = config.merchant_pause_window
        if not low <= overdue <= high:
            return Result(
                state,
                rejection=Rejection(
                    "outside_pause_window",
                    f"a merchant may pause only {low}-{high} days overdue; "
                    f"invoice {invoice_number} is {overdue} days overdue",
                ),
            )
        if any(p.requested_by == "merchant" for p in state.pauses):
            return Result(
                state,
                rejection=Rejection(
                    "already_paused", f"the merchant already paused invoice {invoice_number}"
                ),
            )
        if state.is_paused(today):
            return Result(
                state,
                rejection=Rejection(
                    "already_paused", f"invoice {invoice_number} is paused on {today}"
                ),
            )
        days = config.merchant_pause_days
    else:
        if not reason.strip():
            return Result(
                state, rejection=Rejection("reason_required", "an ops pause needs a reason")
            )
        days = config.ops_pause_days
    pause = Pause(today, days, requested_by, reason)
    return Result(replace(state, pauses=(*state.pauses, pause)))


# -- the clock --------------------------------------------------------------------------------


def _step_due_on(state: DunningInvoice, today: date, config: DunningConfig) -> int | None:
    step = state.next_step
    if not state.will_dun or step is None:
        return None
    last = state.last_step_on
    if last is not None and today <= last:
        return None
    if state.is_paused(today):
        return None
    if state.counted_days(today) < config.threshold(step):
        return None
    return step


def tick(state: DunningInvoice | None, now: datetime, config: DunningConfig) -> Result:
    """A clock tick at ``now``: send the next step if it is due today."""
    if state is None:
        return Result(None)
    today = local_day(now, config)
    if state.clock_on is not None and today < state.clock_on:
        return Result(state)  # a stale tick: time does not go back
    new = state if state.clock_on == today else replace(state, clock_on=today)
    step = _step_due_on(new, today, config)
    if step is None:
        return Result(new)
    days_overdue = (today - new.due_on).days
    due = new.amount_due
    sent = SentStep(step, today, days_overdue, due)
    effect: Effect
    if step == HAND_OVER_STEP:
        new = replace(new, sent=(*new.sent, sent), status="handed_over")
        effect = HandOver(
            hand_over_id_for(new.order_id, new.invoice_number),
            new.order_id,
            new.invoice_number,
            due,
            today,
        )
    else:
        level: Literal[1, 2, 3] = 1 if step == 1 else 2 if step == 2 else 3
        new = replace(new, sent=(*new.sent, sent))
        effect = Notice(
            notice_id_for(new.order_id, new.invoice_number, level),
            new.order_id,
            new.invoice_number,
            level,
            days_overdue,
            due,
            new.viban,
        )
    return Result(new, (effect,))


def next_action_at(state: DunningInvoice | None, config: DunningConfig) -> datetime | None:
    """The first instant (UTC) of the local day the next step falls due, from what is known
    now (pauses granted so far; no payment yet to come), or None when no step will ever go
    out. It may lie in the past: the step is overdue and waits for the next tick."""
    if state is None or not state.will_dun:
        return None
    step = state.next_step
    assert step is not None
    earliest = [state.due_on + timedelta(days=1)]
    if state.last_step_on is not None:
        earliest.append(state.last_step_on + timedelta(days=1))
    if state.clock_on is not None:
        earliest.append(state.clock_on)  # an earlier tick would be stale
    day = max(earliest)
    threshold = config.threshold(step)
    if not state.pauses:
        # Every day after the due date counts: the step falls due on day ``threshold``.
        return day_starts_at(max(day, state.due_on + timedelta(days=threshold)), config)
    counted = state.counted_days(day)
    # Every day no pause covers adds one counted day, and pauses are finite: this ends
    # within threshold + paused days iterations.
    while state.is_paused(day) or counted < threshold:
        day += timedelta(days=1)
        if not state.is_paused(day):
            counted += 1
    return day_starts_at(day, config)
