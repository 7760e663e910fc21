"""Dunning: thin handling around the pure schedule in :mod:`services.dunning.domain`.

Per batch: fire the step timers due at the batch's latest tick (and remember the tick), load
the invoices the events refer to, apply every event in order in memory — the events about
amounts, states and pauses first, the fired steps last, so that a payment in the same batch
as its invoice's step wins — then store the invoices, their timers and the ledger of what was
sent, and emit. The engine wraps it in one MongoDB transaction with the inbox.

A notice or hand-over goes out under the id derived from (order, invoice, level), not from the
event that caused it: a redelivery replays the stored outputs (same ids), a crash between
deciding and publishing is a redelivery, and two workers deciding the same step conflict on
the invoice's version (one retries and finds the step sent).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge
from pymongo.asynchronous.database import AsyncDatabase

from services.dunning import domain
from services.dunning.store import (
    OVERDUE_BUCKETS,
    DunningView,
    count_overdue,
    ensure_indexes,
    invoice_id,
    latest_tick,
    record_tick,
)
from shared import events as ev
from shared import topics
from shared.money import cents, from_cents
from shared.runtime.engine import Batch, Inbound
from shared.runtime.logging import get_logger
from shared.runtime.timers import Timers

log = get_logger("dunning")

# Kafka orders records within a partition, never across topics: apply what the others refer
# to first (the invoice before what changes it), amounts and closings before pauses, and the
# fired steps after all of them (see ``handle``). The sort is stable.
_APPLY_ORDER = {
    topics.MERCHANTS_CONFIGURED: 0,
    topics.INVOICES_ISSUED: 1,
    topics.CREDIT_NOTES_ACCEPTED: 2,
    topics.PAYMENTS_ALLOCATED: 3,
    topics.INVOICES_SETTLED: 4,
    topics.INVOICES_STATE_CHANGED: 5,
    topics.DUNNING_PAUSE_REQUESTED: 6,
}

_INVOICE_EVENTS = (
    ev.InvoiceIssued,
    ev.CreditNoteAccepted,
    ev.InvoiceSettled,
    ev.InvoiceStateChanged,
    ev.DunningPauseRequested,
)

# The invoice states that end dunning; the others change nothing, and are not even looked up
# (shipping publishes new and paid_out with every capture, maybe before invoices.issued).
_CLOSING_STATES = frozenset({"canceled", "complete"})

REJECTION_REASONS = (
    "unknown_invoice",
    "invoice_settled",
    "invoice_canceled",
    "invoice_handed_over",
    "outside_pause_window",
    "already_paused",
    "reason_required",
)


def _causes_first(item: Inbound) -> int:
    return _APPLY_ORDER.get(item.topic, 9)


class DunningMetrics:
    """Labels are closed sets (levels, who paused, reason codes, buckets)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notices = Counter(
            "dunning_notices", "Dunning notices sent, by level.", ["level"], registry=registry
        )
        self.handed_over = Counter(
            "dunning_handed_over", "Invoices handed over to collection.", registry=registry
        )
        self.pauses = Counter(
            "dunning_pauses",
            "Pauses granted, by who requested them.",
            ["requested_by"],
            registry=registry,
        )
        self.rejections = Counter(
            "dunning_commands_rejected",
            "Commands refused (pauses) and events that never found their invoice, by reason.",
            ["reason"],
            registry=registry,
        )
        self.overdue = Gauge(
            "dunning_invoices_overdue",
            "Open invoices with something due, by calendar days overdue at the latest tick "
            "(recounted from an index every DUNNING_OVERDUE_GAUGE_SECONDS by the worker that "
            "owns the tick partition: aggregate with max).",
            ["bucket"],
            registry=registry,
        )
        self.last_tick = Gauge(
            "dunning_last_tick_timestamp_seconds",
            "The time of the latest clock tick this worker handled (unix seconds).",
            registry=registry,
        )
        for level in domain.NOTICE_LEVELS:
            self.notices.labels(str(level))
        for who in get_args(domain.RequestedBy):
            self.pauses.labels(who)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        for name, _, _ in OVERDUE_BUCKETS:
            self.overdue.labels(name)


def _wire_notice(effect: domain.Notice, currency: str) -> str:
    return ev.DunningNotice.model_construct(
        invoice_number=effect.invoice_number,
        order_id=effect.order_id,
        level=effect.level,
        days_overdue=effect.days_overdue,
        amount_due=from_cents(effect.amount_due),
        viban=effect.viban,
        currency=currency,
    ).model_dump_json(by_alias=True)


def _wire_hand_over(effect: domain.HandOver, currency: str) -> str:
    return ev.DunningHandedOver.model_construct(
        invoice_number=effect.invoice_number,
        order_id=effect.order_id,
        amount_due=from_cents(effect.amount_due),
        handed_over_on=effect.handed_over_on,
        currency=currency,
    ).model_dump_json(by_alias=True)


class DunningService:
    name = "dunning"
    input_topics: tuple[str, ...] = (
        topics.MERCHANTS_CONFIGURED,
        topics.INVOICES_ISSUED,
        topics.INVOICES_STATE_CHANGED,
        topics.INVOICES_SETTLED,
        topics.PAYMENTS_ALLOCATED,
        topics.CREDIT_NOTES_ACCEPTED,
        topics.DUNNING_PAUSE_REQUESTED,
        topics.CLOCK_TICKS,
        topics.timer_topic("dunning"),
    )

    def __init__(
        self,
        registry: CollectorRegistry,
        config: domain.DunningConfig | None = None,
        *,
        fire_limit: int = 1000,
        overdue_gauge_seconds: float = 60.0,
    ) -> None:
        self.config = config or domain.DunningConfig()
        self.metrics = DunningMetrics(registry)
        # One timer per invoice with a step still to come, due at the local midnight that
        # starts the day it falls due (store.DunningView.flush keeps it in step).
        self.timers = Timers(self.name, registry, fire_limit=fire_limit)
        self.overdue_gauge_seconds = overdue_gauge_seconds
        self._overdue_counted_at: float | None = None
        self.db: AsyncDatabase[dict[str, Any]] | None = None

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db
        await ensure_indexes(db)
        await self.timers.setup(db)

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None, "setup() runs first"
        ticks = [i for i in batch.items if isinstance(i.data, ev.ClockTick) and not i.is_retry]
        if ticks:
            latest = max(i.now for i in ticks)
            await self.timers.fire_due_on_ticks(batch)
            await record_tick(self.db, batch.session, latest)
            await self._count_overdue(batch, latest)
        view = DunningView(batch.session, self.db, self.config)
        await self._preload(view, batch.items)
        clock: datetime | None = None
        if any(isinstance(i.data, ev.DunningPauseRequested) for i in batch.items):
            clock = await latest_tick(self.db, batch.session)
        for item in sorted(batch.items, key=_causes_first):
            self._apply_event(view, batch, item, clock)
        fired = await self.timers.claim_all(
            batch, [i for i in batch.items if isinstance(i.data, ev.TimerFired)]
        )
        for item in fired:
            self._step(view, batch, item)
        await view.flush()

    async def _preload(self, view: DunningView, items: list[Inbound]) -> None:
        ids: list[str] = []
        pairs: list[tuple[str, str]] = []
        for item in items:
            data = item.data
            if isinstance(data, ev.InvoiceStateChanged) and data.to not in _CLOSING_STATES:
                continue
            if isinstance(data, _INVOICE_EVENTS):
                ids.append(invoice_id(data.order_id, data.invoice_number))
            elif isinstance(data, ev.TimerFired):
                ids.append(data.entity)
            elif isinstance(data, ev.PaymentAllocated):
                pairs += [(data.creditor_iban, a.invoice_number) for a in data.allocations]
        await view.load(ids, pairs)

    # -- events ---------------------------------------------------------------------------

    def _apply_event(
        self, view: DunningView, batch: Batch, item: Inbound, clock: datetime | None
    ) -> None:
        data = item.data
        match data:
            case ev.MerchantConfigured():
                view.put_merchant(data.merchant_id, data.name)
            case ev.InvoiceIssued():
                iid = invoice_id(data.order_id, data.invoice_number)
                result = domain.issue(
                    view.get(iid),
                    order_id=data.order_id,
                    invoice_number=data.invoice_number,
                    viban=data.viban,
                    gross=cents(data.amount.gross),
                    due_on=data.due_on,
                )
                self._store(view, batch, item, data.order_id, result)
            case ev.CreditNoteAccepted():
                iid = invoice_id(data.order_id, data.invoice_number)
                result = domain.record_credit_note(
                    view.get(iid),
                    data.invoice_number,
                    credit_note_number=data.credit_note_number,
                    amount=cents(data.amount.gross),
                )
                if result.changed and result.state is not None and data.invoice_gross == 0:
                    # Shipping says nothing is left of the invoice: canceled, whatever the sum.
                    result = domain.record_invoice_state(
                        result.state, data.invoice_number, "canceled"
                    )
                self._store(view, batch, item, data.order_id, result)
            case ev.InvoiceSettled():
                iid = invoice_id(data.order_id, data.invoice_number)
                result = domain.settle(view.get(iid), data.invoice_number)
                self._store(view, batch, item, data.order_id, result)
            case ev.InvoiceStateChanged():
                if data.to not in _CLOSING_STATES:
                    return  # new, paid_out, late: dunning counts its own days
                iid = invoice_id(data.order_id, data.invoice_number)
                result = domain.record_invoice_state(view.get(iid), data.invoice_number, data.to)
                self._store(view, batch, item, data.order_id, result)
            case ev.PaymentAllocated():
                self._allocate(view, batch, item, data)
            case ev.DunningPauseRequested():
                iid = invoice_id(data.order_id, data.invoice_number)
                at = clock or item.now
                result = domain.request_pause(
                    view.get(iid),
                    data.invoice_number,
                    requested_by=data.requested_by,
                    reason=data.reason,
                    at=at,
                    config=self.config,
                )
                self._store(view, batch, item, data.order_id, result)
                if result.changed:
                    who = data.requested_by
                    batch.after_commit.append(lambda: self.metrics.pauses.labels(who).inc())
            case _:
                pass  # ticks (handled above) and timer commands (handled after the events)

    def _allocate(
        self, view: DunningView, batch: Batch, item: Inbound, data: ev.PaymentAllocated
    ) -> None:
        # One payment per (transaction, invoice): the same allocation again counts once.
        per_invoice: dict[str, int] = {}
        for allocation in data.allocations:
            number = allocation.invoice_number
            per_invoice[number] = per_invoice.get(number, 0) + cents(allocation.amount)
        unknown: list[str] = []
        for number, amount in per_invoice.items():
            iid = view.by_viban.get((data.creditor_iban, number))
            state = None if iid is None else view.get(iid)
            result = domain.record_payment(
                state, number, key=f"{data.transaction_id}/{number}", amount=amount
            )
            if result.park is not None:
                unknown.append(number)
            elif result.state is not None and result.state is not state:
                view.put(result.state)
        if not unknown:
            return
        if item.park_expired:
            # No order id to reject under: said in the log and the metrics, never silent.
            log.warning(
                "payment_for_unknown_invoice",
                transaction_id=data.transaction_id,
                invoices=unknown,
            )
            n = len(unknown)
            batch.after_commit.append(
                lambda: self.metrics.rejections.labels("unknown_invoice").inc(n)
            )
        else:
            # What was applied stays: payments are ledgered by key, so the retry of the whole
            # event applies only what was missing.
            batch.park(item, "unknown_invoice")

    def _store(
        self, view: DunningView, batch: Batch, item: Inbound, order_id: str, result: domain.Result
    ) -> None:
        if batch.park_or_refuse(
            item, order_id, result.park, result.rejection, self.metrics.rejections
        ):
            return
        state = result.state
        if state is None:
            return
        iid = invoice_id(state.order_id, state.invoice_number)
        if view.get(iid) is not state:
            view.put(state)

    # -- the step timer -------------------------------------------------------------------

    def _step(self, view: DunningView, batch: Batch, item: Inbound) -> None:
        """The invoice's step timer fired at the first tick on or after its due time: the
        schedule decides, with that tick's time, after every other event of the batch."""
        fired = item.data
        assert isinstance(fired, ev.TimerFired)
        state = view.get(fired.entity)
        if state is None:
            log.error("step_timer_without_invoice", invoice=fired.entity)
            return
        view.claimed[fired.entity] = fired.due_at.astimezone(UTC)
        result = domain.tick(state, fired.fired_at, self.config)
        assert result.state is not None
        view.put(result.state)  # always: the claim removed the timer, flush writes the next
        for effect in result.effects:
            self._emit(view, batch, item, effect)

    def _emit(self, view: DunningView, batch: Batch, item: Inbound, effect: domain.Effect) -> None:
        currency = "EUR"
        kind: Literal["notice", "hand_over"]
        level: int
        if isinstance(effect, domain.Notice):
            event_id, kind, level = effect.notice_id, "notice", effect.level
            data_json = _wire_notice(effect, currency)
            event_type, topic = ev.DunningNotice.EVENT_TYPE, topics.DUNNING_NOTICES
            amount, on = effect.amount_due, None
        else:
            event_id, kind, level = effect.hand_over_id, "hand_over", domain.HAND_OVER_STEP
            data_json = _wire_hand_over(effect, currency)
            event_type, topic = ev.DunningHandedOver.EVENT_TYPE, topics.DUNNING_HANDED_OVER
            amount, on = effect.amount_due, effect.handed_over_on
        batch.emit_wire(
            item,
            topic=topic,
            event_type=event_type,
            key=effect.order_id,
            data_json=data_json,
            event_id=event_id,
        )
        view.record_sent(
            {
                "_id": event_id,
                "invoice": invoice_id(effect.order_id, effect.invoice_number),
                "order_id": effect.order_id,
                "invoice_number": effect.invoice_number,
                "kind": kind,
                "level": level,
                "amount_due_cents": amount,
                "handed_over_on": None if on is None else on.isoformat(),
                "sent_at": item.now,
                "cause": item.event.id,
            }
        )
        if kind == "notice":
            label = str(level)
            batch.after_commit.append(lambda: self.metrics.notices.labels(label).inc())
        else:
            batch.after_commit.append(self.metrics.handed_over.inc)

    # -- the overdue gauge ----------------------------------------------------------------

    async def _count_overdue(self, batch: Batch, now: datetime) -> None:
        assert self.db is not None
        started = time.monotonic()
        stamp = now.timestamp()
        batch.after_commit.append(lambda: self.metrics.last_tick.set(stamp))
        due = self._overdue_counted_at
        if due is not None and started - due < self.overdue_gauge_seconds:
            return
        today: date = domain.local_day(now, self.config)
        counts = await count_overdue(self.db, batch.session, today)

        def publish() -> None:
            self._overdue_counted_at = started
            for bucket, n in counts.items():
                self.metrics.overdue.labels(bucket).set(n)

        batch.after_commit.append(publish)
