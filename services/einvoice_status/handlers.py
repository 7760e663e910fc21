"""E-invoice: thin handling around :mod:`services.einvoice_status.domain`.

Per batch: fire the poll timers due at the latest tick; load the merchants, companies,
orders and e-invoices the events refer to; apply each event in order; store the documents,
the jobs and the timers the decisions asked for, in the batch's transaction; emit the status
changes. Billit is called only by the job executor, outside the transaction
(:mod:`services.einvoice_status.calls`); its answers come back as ``runtime.job_finished.v1``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from services.einvoice_status import domain
from services.einvoice_status.calls import TARGET, BillitGateway, BillitMetrics
from services.einvoice_status.settings import EinvoiceSettings
from services.einvoice_status.store import EinvoiceView, ensure_indexes
from shared import events as ev
from shared import topics
from shared.money import cents
from shared.runtime.engine import Batch, Inbound
from shared.runtime.jobs import Jobs, JobSettings, JobTarget, job_id_for
from shared.runtime.logging import get_logger
from shared.runtime.timers import COLLECTION as TIMERS
from shared.runtime.timers import Timers, timer_id

NAME = "einvoice_status"
log = get_logger("einvoice")
POLL = "poll"
# A Billit call runs as soon as the executor has room. Not ``item.now``: that is the time of
# the tick the cause came with, which the executor's wall clock may not have reached (tests
# and the demo tick ahead of it).
AS_SOON_AS_POSSIBLE = datetime(2000, 1, 1, tzinfo=UTC)
DELIVERY_OUTCOMES = ("delivered", "refused", "not_sent", "timed_out")

_APPLY_ORDER = {
    topics.MERCHANTS_CONFIGURED: 0,
    topics.COMPANIES_REGISTERED: 1,
    topics.ORDERS_REQUESTED: 2,
    topics.INVOICES_ISSUED: 3,
    topics.job_result_topic(NAME): 4,
    topics.timer_topic(NAME): 5,
    topics.CREDIT_NOTES_ACCEPTED: 6,
    topics.INVOICES_STATE_CHANGED: 7,
    topics.PAYMENTS_ALLOCATED: 8,
    topics.INVOICES_SETTLED: 9,
}


def _causes_first(item: Inbound) -> int:
    return _APPLY_ORDER.get(item.topic, 10)


class EinvoiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "einvoice_delivery_outcomes",
            "Billit documents by how their delivery ended: delivered, refused (Peppol Error), "
            "not_sent (receiver not on Peppol, Billit refused it), timed_out.",
            ["outcome"],
            registry=registry,
        )
        self.responses = Counter(
            "einvoice_receiver_responses",
            "Peppol invoice responses taken, by code (each FileID once).",
            ["code"],
            registry=registry,
        )
        self.changes = Counter(
            "einvoice_status_changes",
            "einvoices.status_changed published, by delivery status.",
            ["delivery_status"],
            registry=registry,
        )
        self.backlog = Gauge(
            "einvoice_poll_backlog",
            "Polls due and not yet made at the last tick: poll timers due but not fired (the "
            "tick fires at most poll_fire_limit) plus poll calls waiting to run.",
            registry=registry,
        )
        self.unmatched = Counter(
            "einvoice_inputs_without_invoice",
            "Payments, reductions and settlements for a Billit merchant's order whose invoice "
            "this service never saw within the park time (logged with the event id).",
            ["topic"],
            registry=registry,
        )
        for topic in (
            topics.CREDIT_NOTES_ACCEPTED,
            topics.INVOICES_STATE_CHANGED,
            topics.PAYMENTS_ALLOCATED,
            topics.INVOICES_SETTLED,
        ):
            self.unmatched.labels(topic)
        for outcome in DELIVERY_OUTCOMES:
            self.outcomes.labels(outcome)
        for code in domain.RESPONSE_RANK:
            self.responses.labels(code)
        for status in ("pending", "delivered", "error"):
            self.changes.labels(status)


def schedule_of(settings: EinvoiceSettings) -> domain.PollSchedule:
    return domain.PollSchedule(
        frequent=timedelta(seconds=settings.poll_frequent_seconds),
        frequent_for=timedelta(seconds=settings.poll_frequent_for_seconds),
        hourly=timedelta(seconds=settings.poll_hourly_seconds),
        hourly_for=timedelta(seconds=settings.poll_hourly_for_seconds),
        daily=timedelta(seconds=settings.poll_daily_seconds),
        delivery_for=timedelta(days=settings.delivery_follow_days),
        follow_for=timedelta(days=settings.responses_follow_days),
    )


class EinvoiceService:
    name = NAME
    input_topics: tuple[str, ...] = (
        topics.MERCHANTS_CONFIGURED,
        topics.COMPANIES_REGISTERED,
        topics.ORDERS_REQUESTED,
        topics.INVOICES_ISSUED,
        topics.INVOICES_STATE_CHANGED,
        topics.CREDIT_NOTES_ACCEPTED,
        topics.PAYMENTS_ALLOCATED,
        topics.INVOICES_SETTLED,
        topics.CLOCK_TICKS,
        topics.timer_topic(NAME),
        topics.job_result_topic(NAME),
    )

    def __init__(self, settings: EinvoiceSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = EinvoiceMetrics(registry)
        self.billit_metrics = BillitMetrics(registry)
        self.gateway = BillitGateway(
            base_url=settings.billit_base_url,
            api_key=settings.billit_api_key,
            metrics=self.billit_metrics,
            read_timeout_seconds=settings.billit_read_timeout_seconds,
            max_attempts=settings.billit_inline_attempts,
            backoff_base_seconds=settings.billit_backoff_base_seconds,
        )
        self.jobs = Jobs(
            NAME,
            kinds=self.gateway.kinds(
                max_attempts=settings.job_max_attempts,
                timeout_seconds=settings.job_timeout_seconds,
            ),
            targets=[
                JobTarget(TARGET, settings.billit_concurrency, settings.billit_rate_per_second)
            ],
            settings=JobSettings(
                lease_seconds=settings.job_lease_seconds,
                poll_seconds=settings.job_poll_seconds,
                backoff_base_seconds=settings.job_backoff_base_seconds,
                backoff_cap_seconds=settings.job_backoff_cap_seconds,
            ),
        )
        self.timers = Timers(NAME, registry, fire_limit=settings.poll_fire_limit)
        self.schedule = schedule_of(settings)
        self.db: AsyncDatabase[dict[str, Any]] | None = None
        self._jobs: list[UpdateOne] = []
        self._timer_ops: list[Any] = []

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db
        await ensure_indexes(db)
        await self.jobs.setup(db)
        await self.timers.setup(db)

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None, "setup() runs first"
        fired = await self.timers.fire_due_on_ticks(batch)
        view = EinvoiceView(batch.session, self.db)
        await self._preload(view, batch.items)
        polls = await self.timers.claim_all(
            batch, [i for i in batch.items if isinstance(i.data, ev.TimerFired)]
        )
        claimed = {i.event.id for i in polls}
        self._jobs = []
        self._timer_ops = []
        for item in sorted(batch.items, key=_causes_first):
            data = item.data
            if isinstance(data, ev.MerchantConfigured):
                view.put(
                    "merchants",
                    {
                        "_id": data.merchant_id,
                        "einvoicing": data.einvoicing,
                        "party_id": data.billit_party_id,
                    },
                )
            elif isinstance(data, ev.CompanyRegistered):
                view.put("companies", _company_doc(data))
            elif isinstance(data, ev.OrderRequested):
                view.put("orders", _order_doc(data))
            elif isinstance(data, ev.InvoiceIssued):
                self._issued(view, batch, item, data)
            elif isinstance(data, ev.JobFinished):
                self._job_finished(view, batch, item, data)
            elif isinstance(data, ev.TimerFired):
                if item.event.id in claimed:
                    self._poll_due(view, batch, item, data)
            elif isinstance(
                data,
                ev.CreditNoteAccepted
                | ev.InvoiceStateChanged
                | ev.PaymentAllocated
                | ev.InvoiceSettled,
            ):
                self._about_an_invoice(view, batch, item, data)
        await view.flush()
        if self._jobs:
            await self.db["jobs"].bulk_write(self._jobs, ordered=True, session=batch.session)
        if self._timer_ops:
            await self.db[TIMERS].bulk_write(self._timer_ops, ordered=True, session=batch.session)
        if fired or any(isinstance(i.data, ev.ClockTick) for i in batch.items):
            await self._measure_backlog(batch, fired)

    async def _preload(self, view: EinvoiceView, items: list[Inbound]) -> None:
        merchant_ids: set[str] = set()
        order_ids: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        company_ids: set[str] = set()
        vibans: set[str] = set()
        for item in items:
            data = item.data
            if isinstance(data, ev.InvoiceIssued):
                merchant_ids.add(data.merchant_id)
                order_ids.add(data.order_id)
                company_ids.add(data.debtor_company_id)
            elif isinstance(
                data, ev.CreditNoteAccepted | ev.InvoiceStateChanged | ev.InvoiceSettled
            ):
                order_ids.add(data.order_id)
            elif isinstance(data, ev.JobFinished | ev.TimerFired):
                order_ids.add(data.entity_key)
            elif isinstance(data, ev.PaymentAllocated):
                pairs |= {(data.creditor_iban, a.invoice_number) for a in data.allocations}
                vibans.add(data.creditor_iban)
        await view.load_orders(order_ids)
        merchant_ids |= {str(o["merchant_id"]) for o in view.orders.values()}
        merchant_ids |= {
            i.data.merchant_id for i in items if isinstance(i.data, ev.CreditNoteAccepted)
        }
        await view.load_merchants(merchant_ids)
        await view.load_vibans(vibans)
        await view.load_companies(company_ids)
        await view.load_einvoices(order_ids, pairs)

    # -- the inputs ----------------------------------------------------------------------------

    def _issued(
        self, view: EinvoiceView, batch: Batch, item: Inbound, data: ev.InvoiceIssued
    ) -> None:
        invoice_id = f"{data.order_id}/{data.invoice_number}"
        if invoice_id in view.einvoices:
            return
        merchant = view.merchants.get(data.merchant_id)
        order = view.orders.get(data.order_id)
        if merchant is not None:
            # Whose VIBAN this is, so that a payment to it is either waited for or ignored.
            view.note_viban(data.viban, merchant.get("einvoicing") == "billit")
        if merchant is not None and merchant.get("einvoicing") != "billit":
            return  # e-invoicing is off for this merchant: no Billit call, no event
        if merchant is None or order is None:
            reason = "merchant_not_configured" if merchant is None else "order_unknown"
            if item.park_expired:
                batch.reject(item, data.order_id, f"e-invoice: {reason}")
            else:
                batch.park(item, reason)
            return
        company = view.companies.get(data.debtor_company_id)
        amount = domain.Cents3(
            gross=cents(data.amount.gross), net=cents(data.amount.net), tax=cents(data.amount.tax)
        )
        invoice = domain.EInvoice(
            id=invoice_id,
            order_id=data.order_id,
            merchant_id=data.merchant_id,
            invoice_number=data.invoice_number,
            party_id=str(merchant["party_id"]),
            viban=data.viban,
            issued_on=data.issued_on,
            due_on=data.due_on,
            amount=amount,
            worth=amount,
            order_amount=domain.Cents3.model_validate(order["amount"]),
            items=order["line_items"],
            customer=_customer(order, company),
        )
        invoice.note(item.now, "issued", f"{amount.gross} cents, due {data.due_on}")
        fx = domain.Effects()
        domain.start(invoice, item.now, domain.new_invoice_document(invoice), fx)
        self._apply(view, batch, item, invoice, fx)

    def _job_finished(
        self, view: EinvoiceView, batch: Batch, item: Inbound, data: ev.JobFinished
    ) -> None:
        for invoice in view.of_order(data.entity_key):
            if data.job_id in invoice.waiting_on:
                if data.status == "failed":
                    failed = self.billit_metrics.jobs_failed.labels(data.kind)
                    batch.after_commit.append(failed.inc)
                fx = domain.on_job_finished(
                    invoice,
                    data.job_id,
                    data.status,
                    data.result,
                    data.error,
                    item.now,
                    self.schedule,
                )
                self._apply(view, batch, item, invoice, fx)
                return

    def _poll_due(
        self, view: EinvoiceView, batch: Batch, item: Inbound, data: ev.TimerFired
    ) -> None:
        invoice_id, _, document = data.entity.rpartition("|")
        invoice = view.einvoices.get(invoice_id)
        if invoice is None:
            return
        request = domain.poll_job(invoice, document)
        fx = domain.Effects()
        if request is not None:
            fx.jobs.append(request)
        self._apply(view, batch, item, invoice, fx)

    def _about_an_invoice(
        self, view: EinvoiceView, batch: Batch, item: Inbound, data: ev.EventData
    ) -> None:
        """A reduction, a payment or a settlement of an invoice. One of a Billit merchant not
        seen yet (its ``invoices.issued`` is on another topic, maybe not consumed yet) is
        parked until it is; one of a merchant without e-invoicing is ignored."""
        if isinstance(data, ev.PaymentAllocated):
            self._allocated(view, batch, item, data)
            return
        assert isinstance(data, ev.CreditNoteAccepted | ev.InvoiceStateChanged | ev.InvoiceSettled)
        if isinstance(data, ev.InvoiceStateChanged) and data.to != "canceled":
            return
        invoice = next(
            (e for e in view.of_order(data.order_id) if e.invoice_number == data.invoice_number),
            None,
        )
        if invoice is None:
            order = view.orders.get(data.order_id)
            merchant_id = (
                data.merchant_id
                if isinstance(data, ev.CreditNoteAccepted)
                else (order or {}).get("merchant_id")
            )
            merchant = view.merchants.get(str(merchant_id)) if merchant_id else None
            if merchant is not None and merchant.get("einvoicing") != "billit":
                return  # a merchant without e-invoicing
            self._wait_for_invoice(batch, item, data.order_id)
            return
        match data:
            case ev.CreditNoteAccepted():
                amount = domain.Money3(
                    cents(data.amount.gross), cents(data.amount.net), cents(data.amount.tax)
                )
                fx = domain.reduce(
                    invoice,
                    f"cn:{data.credit_note_number}",
                    data.credit_note_number,
                    amount,
                    cents(data.invoice_gross),
                    item.now,
                )
            case ev.InvoiceStateChanged():
                fx = domain.reduce(
                    invoice, "cancel", f"{data.invoice_number}-C", None, None, item.now
                )
            case ev.InvoiceSettled():
                step = domain.Step(id=item.event.id, kind="paid", on=data.settled_on)
                fx = domain.add_step(invoice, step, item.now)
        self._apply(view, batch, item, invoice, fx)

    def _allocated(
        self, view: EinvoiceView, batch: Batch, item: Inbound, data: ev.PaymentAllocated
    ) -> None:
        """Each allocation to an invoice of a Billit merchant is one payment report. An
        allocation to a VIBAN this service has not seen in ``invoices.issued`` yet waits
        (parked) until it has; the reports already queued are not queued twice on the retry
        (a report's id is the allocation's)."""
        waiting = False
        for index, allocation in enumerate(data.allocations):
            found = view.find_by_viban(data.creditor_iban, allocation.invoice_number)
            if found is None:
                billit = view.vibans.get(data.creditor_iban)
                if billit is False:
                    continue  # the VIBAN of a merchant without e-invoicing
                waiting = True
                continue
            step = domain.Step(
                id=f"{item.event.id}/{index}",
                kind="payment",
                amount_cents=cents(allocation.amount),
                on=item.now.date(),
            )
            self._apply(view, batch, item, found, domain.add_step(found, step, item.now))
        if waiting:
            self._wait_for_invoice(batch, item, data.creditor_iban)

    def _wait_for_invoice(self, batch: Batch, item: Inbound, key: str) -> None:
        if not item.park_expired:
            batch.park(item, "invoice_not_seen")
            return
        log.warning(
            "einvoice_input_without_invoice",
            event_id=item.event.id,
            topic=item.topic,
            key=key,
        )
        counter = self.metrics.unmatched.labels(item.topic)
        batch.after_commit.append(counter.inc)

    # -- storing and emitting ------------------------------------------------------------------

    def _apply(
        self,
        view: EinvoiceView,
        batch: Batch,
        item: Inbound,
        invoice: domain.EInvoice,
        fx: domain.Effects,
    ) -> None:
        view.put_einvoice(invoice)
        for request in fx.jobs:
            cause = request.ref.step or f"{item.event.id}/{invoice.id}/{request.ref.document}"
            job_id = job_id_for(NAME, cause, request.kind, request.n)
            invoice.waiting_on[job_id] = request.ref
            if request.ref.step is not None:
                step = next(s for s in invoice.steps if s.id == request.ref.step)
                step.job_id = job_id
            invoice.note(item.now, f"call {request.kind}", job_id)
            self._jobs.append(
                self.jobs.enqueue_op(
                    cause_id=cause,
                    kind=request.kind,
                    key=invoice.order_id,
                    payload=request.payload,
                    not_before=AS_SOON_AS_POSSIBLE,
                    now=item.now,
                    n=request.n,
                )
            )
        for poll in fx.polls:
            self._timer_ops.append(
                Timers.schedule_op(
                    action=POLL,
                    entity=f"{invoice.id}|{poll.document}",
                    key=invoice.order_id,
                    due_at=poll.due_at,
                    now=item.now,
                )
            )
        for document in fx.stop_polls:
            self._timer_ops.append(Timers.cancel_op(POLL, f"{invoice.id}|{document}"))
        for change in fx.changes:
            batch.emit(
                item,
                ev.EinvoiceStatusChanged(
                    invoice_number=invoice.invoice_number,
                    order_id=invoice.order_id,
                    billit_order_id=str(change.billit_order_id or ""),
                    delivery_status=change.delivery_status,
                    receiver_status=change.receiver_status,
                    detail=change.detail,
                )
                if change.billit_order_id is not None
                else _status_without_order(invoice, change),
            )
        outcomes, responses = list(fx.outcomes), list(fx.responses)
        statuses = [c.delivery_status for c in fx.changes]

        def count() -> None:
            for outcome in outcomes:
                self.metrics.outcomes.labels(outcome).inc()
            for code in responses:
                self.metrics.responses.labels(code).inc()
            for status in statuses:
                self.metrics.changes.labels(status).inc()

        batch.after_commit.append(count)

    async def _measure_backlog(self, batch: Batch, fired: int) -> None:
        assert self.db is not None
        now = (
            max(i.now for i in batch.items if isinstance(i.data, ev.ClockTick))
            if any(isinstance(i.data, ev.ClockTick) for i in batch.items)
            else None
        )
        waiting = 0
        if now is not None and fired >= self.timers.fire_limit:
            waiting = await self.db[TIMERS].count_documents(
                {"state": "scheduled", "due_at": {"$lte": now}},
                session=batch.session,
                hint="due_at_scheduled",
            )
        calls = await self.db["jobs"].count_documents(
            {"ready_at": {"$exists": True}, "kind": POLL},
            session=batch.session,
            hint="ready_at_live",
        )
        backlog = waiting + calls
        batch.after_commit.append(lambda: self.metrics.backlog.set(backlog))


def _status_without_order(
    invoice: domain.EInvoice, change: domain.StatusChange
) -> ev.EinvoiceStatusChanged:
    # The contract's billit_order_id is a required identifier: before Billit made an order
    # (receiver not on Peppol, order refused) there is none, so the field says so.
    return ev.EinvoiceStatusChanged(
        invoice_number=invoice.invoice_number,
        order_id=invoice.order_id,
        billit_order_id="none",
        delivery_status=change.delivery_status,
        receiver_status=change.receiver_status,
        detail=change.detail,
    )


def _company_doc(data: ev.CompanyRegistered) -> dict[str, Any]:
    return {
        "_id": data.company_id,
        "name": data.name,
        "vat_id": data.vat_id,
        "registration_number": data.registration_number,
        "address": data.address.model_dump(),
    }


def _order_doc(data: ev.OrderRequested) -> dict[str, Any]:
    address = data.billing_address or data.debtor.address
    return {
        "_id": data.order_id,
        "merchant_id": data.merchant_id,
        "amount": {
            "gross": cents(data.amount.gross),
            "net": cents(data.amount.net),
            "tax": cents(data.amount.tax),
        },
        "debtor": {
            "name": data.debtor.name,
            "vat_id": data.debtor.vat_id,
            "registration_number": data.debtor.registration_number,
        },
        "billing_address": address.model_dump(),
        "line_items": [
            {
                "description": i.description,
                "quantity": i.quantity,
                "unit_cents": cents(i.unit_price_net),
                "vat_rate": i.vat_rate,
            }
            for i in data.line_items
        ],
    }


def _customer(order: dict[str, Any], company: dict[str, Any] | None) -> domain.Customer:
    """The order's debtor as the merchant gave it (name, billing address), with the VAT id
    from the order or else the credit-bureau record; the Peppol id is the VAT id, else the
    Belgian company number under scheme 0208."""
    debtor = order["debtor"]
    vat = debtor.get("vat_id") or (company or {}).get("vat_id") or None
    registration = debtor.get("registration_number") or (company or {}).get("registration_number")
    peppol_id = vat or (f"0208:{registration}" if registration else debtor["name"])
    address = order["billing_address"]
    return domain.Customer(
        name=debtor["name"],
        vat_number=vat,
        peppol_id=str(peppol_id),
        street=address.get("street"),
        house_number=address.get("house_number"),
        postal_code=address.get("postal_code"),
        city=address.get("city"),
        country=address.get("country"),
    )


def today(item: Inbound) -> date:
    return item.now.date()


__all__ = ["EinvoiceService", "timer_id"]
