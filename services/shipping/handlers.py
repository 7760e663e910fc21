"""Shipping: thin handling around the pure lifecycle in :mod:`services.shipping.domain`.

Per batch: load the orders, merchants and invoice numbers the events refer to, apply each
event in order in memory, store, emit. The engine wraps it in one MongoDB transaction with
the inbox, so an event redelivered after a crash finds its effects (and its payout) already
stored and replays the stored outputs instead of deciding again.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter
from pymongo.asynchronous.database import AsyncDatabase

from services.shipping import domain
from services.shipping.store import ShippingView, backfill_late_timers, ensure_indexes
from shared import events as ev
from shared import topics
from shared.envelope import state_change_json
from shared.money import cents, from_cents
from shared.runtime.engine import Batch, Inbound
from shared.runtime.timers import Timers

# Events that change an order, by the field naming it.
_ORDER_EVENTS = (
    ev.OrderRequested,
    ev.OrderDecided,
    ev.OrderShipped,
    ev.OrderCanceled,
    ev.OrderAmountReduced,
    ev.InvoiceCreditNoted,
    ev.InvoiceSettled,
    ev.DunningHandedOver,
)


# Kafka orders records within a partition, never across topics, so a batch may hold a
# capture before the decision it needs, or a credit note before its capture. The batch
# commits as one: apply what other events refer to first. (The sort is stable, so each
# topic keeps its own order; what still arrives too early is parked.)
_APPLY_ORDER = {
    topics.MERCHANTS_CONFIGURED: 0,
    topics.ORDERS_REQUESTED: 1,
    topics.ORDERS_DECIDED: 2,
    topics.ORDERS_SHIPPED: 3,
    topics.ORDERS_AMOUNT_REDUCED: 4,
    topics.INVOICES_CREDIT_NOTED: 5,
    topics.DUNNING_HANDED_OVER: 6,
    topics.INVOICES_SETTLED: 7,
    topics.ORDERS_CANCELED: 8,
}


def _causes_first(item: Inbound) -> int:
    return _APPLY_ORDER.get(item.topic, 9)


REDUCTION_OUTCOMES = ("applied", "already_applied", *domain.REDUCTION_REFUSALS)


def reduction_outcome(result: domain.Result, park_expired: bool) -> str | None:
    """The ``shipping_reductions_total`` outcome of one reduction, or None while it stays
    parked (it is counted once, when it is applied or rejected)."""
    if result.park is not None:
        return result.park.code if park_expired else None
    if result.rejection is not None:
        return result.rejection.code
    return "applied" if result.effects else "already_applied"


class ShippingMetrics:
    """Labels are merchant-independent: a closed set of reasons and currencies."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.payouts = Counter(
            "shipping_payouts_instructed",
            "Payouts instructed to merchants (exactly one per invoice).",
            ["currency"],
            registry=registry,
        )
        self.payout_amount = Counter(
            "shipping_payouts_instructed_amount",
            "Sum of payout amounts instructed, in currency units.",
            ["currency"],
            registry=registry,
        )
        self.clawbacks = Counter(
            "shipping_clawbacks_instructed",
            "Clawbacks instructed, by reason.",
            ["reason", "currency"],
            registry=registry,
        )
        self.clawback_amount = Counter(
            "shipping_clawbacks_instructed_amount",
            "Sum of clawback amounts instructed, in currency units.",
            ["reason", "currency"],
            registry=registry,
        )
        self.invoices = Counter(
            "shipping_invoices_issued",
            "Invoices issued (one per capture).",
            ["currency"],
            registry=registry,
        )
        self.rejections = Counter(
            "shipping_commands_rejected",
            "Commands the lifecycle rules refused, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.reductions = Counter(
            "shipping_reductions",
            "Order amount reductions (orders.amount_reduced) by outcome: applied, "
            "already_applied (the same reduction again, found in the order's own ledger) or "
            "the code it was refused with.",
            ["outcome"],
            registry=registry,
        )
        self.reduction_released_amount = Counter(
            "shipping_reductions_released_amount",
            "Sum of what order amount reductions gave back to debtors' limits, in currency units.",
            ["currency"],
            registry=registry,
        )
        # Closed label sets at 0 from the start: Prometheus sees the first of each as an
        # increase (shared/runtime/metrics.py, WorkerMetrics.preinitialise). Risk approves
        # EUR orders only.
        currency = "EUR"
        for counter in (
            self.payouts,
            self.payout_amount,
            self.invoices,
            self.reduction_released_amount,
        ):
            counter.labels(currency)
        for outcome in REDUCTION_OUTCOMES:
            self.reductions.labels(outcome)
        for reason in get_args(domain.ClawbackReason):
            self.clawbacks.labels(reason, currency)
            self.clawback_amount.labels(reason, currency)
        for code in (
            *(f"order_{state}" for state in get_args(domain.OrderState)),
            *(f"invoice_{state}" for state in get_args(domain.InvoiceState)),
            "invoice_number_reused",
            "currency_mismatch",
            "merchant_not_configured",
            "empty_capture",
            "over_capture",
            "handed_over_to_collection",
            "credit_note_number_reused",
            "empty_credit_note",
            "credit_exceeds_open_amount",
            "unknown_order",
            "unknown_invoice",
            *domain.REDUCTION_REFUSALS,
        ):
            self.rejections.labels(code)


def to_money3(amount: ev.Amount) -> domain.Money3:
    return domain.Money3(cents(amount.gross), cents(amount.net), cents(amount.tax))


def to_amount(amount: domain.Money3) -> ev.Amount:
    return ev.Amount.model_construct(
        gross=from_cents(amount.gross), net=from_cents(amount.net), tax=from_cents(amount.tax)
    )


# Outputs are built with ``model_construct`` (state changes as JSON directly): every value
# comes from the typed domain (cents converted by ``from_cents``), and validating the five
# outputs of each capture again was a tenth of the worker's CPU. The integration tests read
# every output back through the contract's validation, so drift from the contract fails there.


class ShippingService:
    name = "shipping"
    input_topics: tuple[str, ...] = (
        topics.MERCHANTS_CONFIGURED,
        topics.ORDERS_REQUESTED,
        topics.ORDERS_DECIDED,
        topics.ORDERS_SHIPPED,
        topics.ORDERS_CANCELED,
        topics.ORDERS_AMOUNT_REDUCED,
        topics.INVOICES_CREDIT_NOTED,
        topics.INVOICES_SETTLED,
        topics.DUNNING_HANDED_OVER,
        topics.CLOCK_TICKS,
        topics.timer_topic("shipping"),
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics = ShippingMetrics(registry)
        # Late marking: one timer per order with a paid-out invoice, due the day after the
        # earliest due date (ShippingView.flush keeps it in step with the order).
        self.timers = Timers(self.name, registry)
        self.db: AsyncDatabase[dict[str, Any]] | None = None

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db
        await ensure_indexes(db)
        await self.timers.setup(db)
        await backfill_late_timers(db)

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None, "setup() runs first"
        await self.timers.fire_due_on_ticks(batch)
        view = ShippingView(batch.session, self.db)
        await self._preload(view, batch.items)
        late = await self.timers.claim_all(
            batch, [i for i in batch.items if isinstance(i.data, ev.TimerFired)]
        )
        for item in late:
            self._mark_late(view, batch, item)
        for item in sorted(batch.items, key=_causes_first):
            data = item.data
            if isinstance(data, ev.MerchantConfigured):
                view.put_merchant(
                    domain.MerchantTerms(
                        merchant_id=data.merchant_id,
                        payout_iban=data.payout_iban,
                        fee_percent=data.fee.percent,
                        fee_fixed=cents(data.fee.fixed),
                    )
                )
            elif isinstance(data, _ORDER_EVENTS):
                result = self._decide(view, data, item.event.id)
                self._apply(view, batch, item, result)
                if isinstance(data, ev.OrderAmountReduced):
                    self._count_reduction(batch, item, result)
        await view.flush()

    async def _preload(self, view: ShippingView, items: list[Inbound]) -> None:
        order_ids = [i.data.order_id for i in items if isinstance(i.data, _ORDER_EVENTS)]
        order_ids += [i.data.entity for i in items if isinstance(i.data, ev.TimerFired)]
        await view.load_orders(order_ids)
        merchant_ids = {o.merchant_id for o in view.orders.values() if o.merchant_id}
        merchant_ids |= {i.data.merchant_id for i in items if isinstance(i.data, ev.OrderRequested)}
        await view.load_merchants(merchant_ids)
        keys = []
        for item in items:
            if isinstance(item.data, ev.OrderShipped):
                merchant_id = view.order(item.data.order_id).merchant_id
                if merchant_id is not None:
                    keys.append((merchant_id, item.data.invoice_number))
        await view.load_invoice_owners(keys)

    # -- deciding -------------------------------------------------------------------------

    def _decide(self, view: ShippingView, data: ev.EventData, item_id: str) -> domain.Result:
        assert isinstance(data, _ORDER_EVENTS)
        order = view.order(data.order_id)
        match data:
            case ev.OrderRequested():
                if order.approved_gross is not None:
                    return domain.Result(order)  # risk judges duplicate order ids
                return domain.record_terms(
                    order,
                    data.merchant_id,
                    cents(data.amount.gross),
                    data.duration_days,
                    data.currency,
                )
            case ev.OrderDecided():
                return domain.record_decision(
                    order, data.state, data.decline_reason, data.viban, data.debtor_company_id
                )
            case ev.OrderShipped():
                owner = None
                if order.merchant_id is not None:
                    owner = view.invoice_owners.get((order.merchant_id, data.invoice_number))
                return domain.capture(
                    order,
                    view.merchants.get(order.merchant_id or ""),
                    invoice_number=data.invoice_number,
                    amount=to_money3(data.amount),
                    shipped_at=data.shipped_at.astimezone(UTC),
                    currency=data.currency,
                    fingerprint=data.fingerprint(),
                    invoice_number_taken_by=owner,
                )
            case ev.OrderCanceled():
                return domain.cancel(order, command_id=item_id)
            case ev.OrderAmountReduced():
                return domain.reduce_amount(
                    order,
                    new_amount=to_money3(data.amount),
                    currency=data.currency,
                    reduction_id=item_id,
                )
            case ev.InvoiceCreditNoted():
                return domain.credit_note(
                    order,
                    invoice_number=data.invoice_number,
                    credit_note_number=data.credit_note_number,
                    amount=to_money3(data.amount),
                    fingerprint=data.fingerprint(),
                )
            case ev.InvoiceSettled():
                return domain.settle(order, data.invoice_number)
            case ev.DunningHandedOver():
                return domain.hand_over(order, data.invoice_number)
        raise AssertionError(f"unhandled {type(data).__name__}")

    def _mark_late(self, view: ShippingView, batch: Batch, item: Inbound) -> None:
        """The order's late timer fired (at the first tick on or after its due time)."""
        fired = item.data
        assert isinstance(fired, ev.TimerFired)
        if fired.entity not in view.orders:
            return
        view.late_timer_claimed.add(fired.entity)
        today = fired.fired_at.astimezone(UTC).date()
        self._apply(view, batch, item, domain.mark_late(view.orders[fired.entity], today))

    # -- storing and emitting -------------------------------------------------------------

    def _apply(
        self, view: ShippingView, batch: Batch, item: Inbound, result: domain.Result
    ) -> None:
        order = result.order
        if batch.park_or_refuse(
            item, order.order_id, result.park, result.rejection, self.metrics.rejections
        ):
            return
        if order is view.orders.get(order.order_id) and not result.effects:
            return  # nothing changed
        view.put_order(order)
        for effect in result.effects:
            self._emit(view, batch, item, order, effect)

    def _emit(
        self,
        view: ShippingView,
        batch: Batch,
        item: Inbound,
        order: domain.Order,
        effect: domain.Effect,
    ) -> None:
        currency = order.currency
        match effect:
            case domain.CancelRefused(command_id=command_id, rejection=rejection):
                # The refusal names the cancel it answers, though risk's decision caused it.
                batch.emit(
                    item,
                    ev.CommandRejected(
                        command_id=command_id,
                        command_type=ev.OrderCanceled.EVENT_TYPE,
                        order_id=order.order_id,
                        reason=rejection.reason,
                    ),
                )
                code = rejection.code
                batch.after_commit.append(lambda: self.metrics.rejections.labels(code).inc())
            case domain.InvoiceIssued(invoice=invoice):
                assert order.merchant_id
                assert order.viban
                assert order.company_id
                view.claim_invoice_number(order.merchant_id, invoice.invoice_number, order.order_id)
                batch.emit(
                    item,
                    ev.InvoiceIssued.model_construct(
                        invoice_number=invoice.invoice_number,
                        order_id=order.order_id,
                        merchant_id=order.merchant_id,
                        amount=to_amount(invoice.amount),
                        issued_on=invoice.issued_on,
                        due_on=invoice.due_on,
                        viban=order.viban,
                        debtor_company_id=order.company_id,
                        currency=currency,
                    ),
                )
                batch.after_commit.append(lambda: self.metrics.invoices.labels(currency).inc())
            case domain.InvoiceStateChanged(invoice_number=number, from_=from_, to=to):
                batch.emit_wire(
                    item,
                    topic=ev.InvoiceStateChanged.TOPIC,
                    event_type=ev.InvoiceStateChanged.EVENT_TYPE,
                    key=order.order_id,
                    data_json=state_change_json(
                        "invoice_number", number, order.order_id, from_, to
                    ),
                )
            case domain.OrderStateChanged(from_=from_, to=to):
                batch.emit_wire(
                    item,
                    topic=ev.OrderStateChanged.TOPIC,
                    event_type=ev.OrderStateChanged.EVENT_TYPE,
                    key=order.order_id,
                    data_json=state_change_json("order_id", order.order_id, None, from_, to),
                )
            case domain.PayoutInstructed() as payout:
                amount = from_cents(payout.amount)
                batch.emit(
                    item,
                    ev.PayoutInstructed.model_construct(
                        payout_id=payout.payout_id,
                        order_id=order.order_id,
                        invoice_number=payout.invoice_number,
                        merchant_id=payout.merchant_id,
                        gross=from_cents(payout.gross),
                        fee=from_cents(payout.fee),
                        payout_amount=amount,
                        payout_iban=payout.payout_iban,
                        currency=currency,
                    ),
                )
                view.record_payout(
                    {
                        "_id": payout.payout_id,
                        "order_id": order.order_id,
                        "invoice_number": payout.invoice_number,
                        "merchant_id": payout.merchant_id,
                        "gross_cents": payout.gross,
                        "fee_cents": payout.fee,
                        "amount_cents": payout.amount,
                        "currency": currency,
                        "caused_by": item.event.id,
                        "at": item.now,
                    }
                )

                def count_payout() -> None:
                    self.metrics.payouts.labels(currency).inc()
                    self.metrics.payout_amount.labels(currency).inc(float(amount))

                batch.after_commit.append(count_payout)
            case domain.ClawbackInstructed() as clawback:
                amount = from_cents(clawback.amount)
                reason = clawback.reason
                batch.emit(
                    item,
                    ev.PayoutClawbackInstructed.model_construct(
                        clawback_id=clawback.clawback_id,
                        order_id=order.order_id,
                        invoice_number=clawback.invoice_number,
                        amount=amount,
                        reason=reason,
                        currency=currency,
                    ),
                )
                view.record_clawback(
                    {
                        "_id": clawback.clawback_id,
                        "order_id": order.order_id,
                        "invoice_number": clawback.invoice_number,
                        "amount_cents": clawback.amount,
                        "reason": reason,
                        "currency": currency,
                        "caused_by": item.event.id,
                        "at": item.now,
                    }
                )

                def count_clawback() -> None:
                    self.metrics.clawbacks.labels(reason, currency).inc()
                    self.metrics.clawback_amount.labels(reason, currency).inc(float(amount))

                batch.after_commit.append(count_clawback)

            case domain.ExposureReleased() as release:
                batch.emit(
                    item,
                    ev.ExposureReleased.model_construct(
                        release_id=release.release_id,
                        order_id=order.order_id,
                        debtor_company_id=order.company_id,
                        amount=from_cents(release.amount),
                        reason=release.reason,
                        currency=currency,
                    ),
                )

            case domain.CreditNoteAccepted() as accepted:
                assert order.merchant_id
                batch.emit(
                    item,
                    ev.CreditNoteAccepted.model_construct(
                        order_id=order.order_id,
                        merchant_id=order.merchant_id,
                        invoice_number=accepted.invoice_number,
                        credit_note_number=accepted.credit_note_number,
                        amount=to_amount(accepted.amount),
                        invoice_gross=from_cents(accepted.invoice_gross),
                        currency=currency,
                    ),
                )

    def _count_reduction(self, batch: Batch, item: Inbound, result: domain.Result) -> None:
        outcome = reduction_outcome(result, item.park_expired)
        if outcome is None:
            return
        currency = result.order.currency
        released = sum(
            effect.amount
            for effect in result.effects
            if isinstance(effect, domain.ExposureReleased) and effect.reason == "amount_reduced"
        )
        amount = from_cents(released)

        def count() -> None:
            self.metrics.reductions.labels(outcome).inc()
            if released:
                self.metrics.reduction_released_amount.labels(currency).inc(float(amount))

        batch.after_commit.append(count)
