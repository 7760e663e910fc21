"""Risk: thin handling around the pure rules and lifecycle in :mod:`services.risk.domain`.

Per batch: load what the events refer to, decide each event in order in memory, give new
(merchant, debtor) pairs their VIBAN, store, and emit. The engine wraps all of it in one
MongoDB transaction together with the inbox. Amounts become cents here, at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pymongo.asynchronous.database import AsyncDatabase

from services.risk import domain
from services.risk.ruleset import CURRENT_RULESET, Ruleset
from services.risk.store import RiskView, address_to_doc, ensure_indexes
from shared import events as ev
from shared import topics
from shared.money import cents
from shared.runtime.engine import Batch, Inbound


def _reference_data_first(item: Inbound) -> int:
    """Kafka orders records within a partition, never across topics: a batch may hold an
    order before the registry record it needs. The batch commits as one, so apply merchants
    and companies first (the sort is stable: each topic keeps its own order)."""
    return 0 if isinstance(item.data, ev.MerchantConfigured | ev.CompanyRegistered) else 1


class RiskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "risk_decisions_total",
            "Order decisions by resulting state and decline reason ('none' when not declined).",
            ["state", "reason"],
            registry=registry,
        )
        self.released = Counter(
            "risk_exposure_releases_total",
            "Exposure given back to debtors' limits, by cause (canceled, credit_note, settled, "
            "review_declined).",
            ["reason"],
            registry=registry,
        )
        self.rejections = Counter(
            "risk_commands_rejected_total",
            "Commands the risk rules refused, by reason.",
            ["reason"],
            registry=registry,
        )
        # Closed label sets at 0 from the start: Prometheus sees the first of each as an
        # increase (shared/runtime/metrics.py, WorkerMetrics.preinitialise).
        for state in ("created", "waiting"):
            self.decisions.labels(state, "none")
        for decline_reason in ev.DECLINE_REASONS:
            self.decisions.labels("declined", decline_reason)
        for cause in ("canceled", "credit_note", "settled", "amount_reduced"):
            self.released.labels(cause)
        for code in domain.REJECTION_CODES:
            self.rejections.labels(code)


def to_domain_address(address: ev.Address) -> domain.Address:
    return domain.Address(
        street=address.street,
        house_number=address.house_number,
        postal_code=address.postal_code,
        city=address.city,
        country=address.country,
    )


def to_domain_claim(debtor: ev.Debtor) -> domain.DebtorClaim:
    return domain.DebtorClaim(
        name=debtor.name,
        legal_form=debtor.legal_form,
        registration_number=debtor.registration_number,
        vat_id=debtor.vat_id,
        address=to_domain_address(debtor.address),
    )


def to_domain_company(data: ev.CompanyRegistered) -> domain.Company:
    return domain.Company(
        company_id=data.company_id,
        name=data.name,
        legal_form=data.legal_form,
        registration_number=data.registration_number,
        vat_id=data.vat_id,
        address=to_domain_address(data.address),
        insolvent=data.insolvent,
        score=data.score,
        financing_limit=cents(data.financing_limit),
    )


@dataclass(frozen=True)
class _Outputs:
    """What one event's result publishes, kept until the batch's VIBANs are assigned, so
    each order's outputs leave in the order they were decided."""

    item: Inbound
    order_id: str
    merchant_id: str | None
    result: domain.Result


class RiskService:
    name = "risk"
    input_topics: tuple[str, ...] = (
        topics.MERCHANTS_CONFIGURED,
        topics.COMPANIES_REGISTERED,
        topics.ORDERS_REQUESTED,
        topics.ORDERS_REVIEWED,
        # Risk owns an order until it is created: a cancel of a waiting order ends its review.
        topics.ORDERS_CANCELED,
        # Shipping's word that part of an approval no longer counts (canceled, credited,
        # settled): open exposure is approved minus released.
        topics.EXPOSURE_RELEASED,
        topics.CLOCK_TICKS,
    )

    def __init__(self, registry: CollectorRegistry, ruleset: Ruleset = CURRENT_RULESET) -> None:
        self.ruleset = ruleset
        self.metrics = RiskMetrics(registry)
        self.db: AsyncDatabase[dict[str, Any]] | None = None

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db
        await ensure_indexes(db)

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None, "setup() runs first"
        view = RiskView(batch.session, self.db)
        await self._preload(view, batch.items)

        outputs: list[_Outputs] = []
        for item in sorted(batch.items, key=_reference_data_first):
            data = item.data
            if isinstance(data, ev.MerchantConfigured):
                view.put_merchant(
                    {"_id": data.merchant_id, "manual_review": data.manual_review, "at": item.now}
                )
                continue
            if isinstance(data, ev.CompanyRegistered):
                view.put_company(to_domain_company(data))
                continue
            if isinstance(data, ev.OrderRequested):
                result = await self._request(view, data)
            elif isinstance(data, ev.OrderReviewed | ev.OrderCanceled | ev.ExposureReleased):
                result = self._decide_on_order(view, item, data)
            else:
                continue  # a tick: only its parked retries matter
            out = self._store(view, batch, item, data, result)
            if out is not None:
                outputs.append(out)

        await self._assign_vibans(view, outputs)
        for out in outputs:
            self._emit(view, batch, out)
        await view.flush()

    # -- loading --------------------------------------------------------------------------

    async def _preload(self, view: RiskView, items: list[Inbound]) -> None:
        requests = [i.data for i in items if isinstance(i.data, ev.OrderRequested)]
        others = [
            i.data.order_id
            for i in items
            if isinstance(i.data, ev.OrderReviewed | ev.OrderCanceled | ev.ExposureReleased)
        ]
        await view.load_merchants(r.merchant_id for r in requests)
        await view.load_orders([r.order_id for r in requests] + others)
        keys = [domain.registry_keys(to_domain_claim(r.debtor)) for r in requests]
        # Identification by a registry id never falls back to the postal code, so companies
        # sharing a postal code are loaded only for the claims no id identifies (a popular
        # postal code holds thousands of companies: docs/benchmarks.md, 2026-12-01).
        await view.load_candidates(
            {k.registration_number for k in keys if k.registration_number},
            {k.vat_id for k in keys if k.vat_id},
            set(),
        )
        await view.load_candidates(
            set(),
            set(),
            {
                k.postal_code
                for k in keys
                if k.postal_code and not view.candidates(k.registration_number, k.vat_id, None)[0]
            },
        )
        pairs = set()
        for request in requests:
            identification = self._identify(view, request)
            view.identified[request.order_id] = identification
            if identification.company is not None:
                pairs.add((request.merchant_id, identification.company.company_id))
        for order_id in others:
            order = view.orders.get(order_id)
            if order is not None and order.company_id:
                pairs.add((order.merchant_id, order.company_id))
        await view.load_debtor_state(pairs)

    def _identify(self, view: RiskView, request: ev.OrderRequested) -> domain.Identification:
        claim = to_domain_claim(request.debtor)
        keys = domain.registry_keys(claim)
        by_id, by_postal = view.candidates(keys.registration_number, keys.vat_id, keys.postal_code)
        return domain.identify(claim, by_id, by_postal, self.ruleset)

    # -- deciding -------------------------------------------------------------------------

    async def _request(self, view: RiskView, data: ev.OrderRequested) -> domain.Result:
        existing = view.orders.get(data.order_id)
        identification = view.identified.get(data.order_id)
        if existing is None and (identification is None or view.dirty_companies):
            # A company registered earlier in this very batch may be the one.
            identification = self._identify(view, data)
        if identification is None:
            identification = domain.Identification(company=None, method=None)
        company_id = identification.company.company_id if identification.company else None
        if existing is None and company_id is not None:
            # A company registered earlier in this very batch was not preloaded.
            await view.load_debtor_state([(data.merchant_id, company_id)])
        merchant = view.merchants.get(data.merchant_id)
        return domain.request(
            existing,
            domain.OrderToDecide(
                order_id=data.order_id,
                merchant_id=data.merchant_id,
                gross=cents(data.amount.gross),
                debtor=to_domain_claim(data.debtor),
                billing_address=to_domain_address(data.billing_address)
                if data.billing_address
                else None,
                delivery_address=to_domain_address(data.delivery_address)
                if data.delivery_address
                else None,
            ),
            fingerprint=data.fingerprint(),
            currency=data.currency,
            merchant=domain.MerchantPolicy(data.merchant_id, merchant["manual_review"])
            if merchant is not None
            else None,
            identification=identification,
            exposure=view.exposure_of(company_id),
            known_to_merchant=company_id is not None
            and (data.merchant_id, company_id) in view.vibans,
            ruleset=self.ruleset,
        )

    def _decide_on_order(
        self,
        view: RiskView,
        item: Inbound,
        data: ev.OrderReviewed | ev.OrderCanceled | ev.ExposureReleased,
    ) -> domain.Result:
        order = view.orders.get(data.order_id)
        exposure = view.exposure_of(order.company_id if order is not None else None)
        match data:
            case ev.OrderReviewed():
                return domain.review(
                    order,
                    event_id=item.event.id,
                    outcome=data.outcome,
                    decline_reason=data.decline_reason,
                    exposure=exposure,
                    ruleset=self.ruleset,
                )
            case ev.OrderCanceled():
                return domain.cancel(order, event_id=item.event.id, exposure=exposure)
            case ev.ExposureReleased():
                return domain.release(
                    order,
                    release_id=data.release_id,
                    amount=cents(data.amount),
                    reason=data.reason,
                    exposure=exposure,
                )

    # -- storing --------------------------------------------------------------------------

    def _store(
        self,
        view: RiskView,
        batch: Batch,
        item: Inbound,
        data: ev.OrderRequested | ev.OrderReviewed | ev.OrderCanceled | ev.ExposureReleased,
        result: domain.Result,
    ) -> _Outputs | None:
        if result.park is not None:
            if not item.park_expired:
                batch.park(item, result.park.code)
                return None
            if not result.park.reject_on_expiry:
                return None
            result = replace(result, park=None, rejection=domain.Rejection(result.park.code))
        order = result.order
        if result.rejection is None and not result.effects:
            if order is not None and order is not view.orders.get(order.order_id):
                view.put_order(order)  # changed without effects: a release id spent
            return None  # else the same event again, or not risk's to act on
        if result.rejection is None and order is not None:
            view.put_order(order, **self._notes(item, data, order))
            if order.company_id is not None:
                view.set_exposure(order.company_id, result.exposure)
            for effect in result.effects:
                if isinstance(effect, domain.Released):
                    view.record_release(
                        {
                            "_id": effect.release_id,
                            "order_id": order.order_id,
                            "company_id": effect.company_id,
                            "amount_cents": effect.amount,
                            "reason": effect.reason,
                            "caused_by": item.event.id,
                            "at": item.now,
                        }
                    )
        return _Outputs(item, data.order_id, order.merchant_id if order else None, result)

    @staticmethod
    def _notes(item: Inbound, data: ev.EventData, order: domain.RiskOrder) -> dict[str, Any]:
        """Readable fields beside the lifecycle's: where the order came from, who ended the
        wait, when."""
        match data:
            case ev.OrderRequested():
                return {
                    "external_code": data.external_code,
                    "currency": data.currency,
                    "duration_days": data.duration_days,
                    "billing_address": address_to_doc(to_domain_address(data.billing_address))
                    if data.billing_address
                    else None,
                    "requested_event_id": item.event.id,
                    "decided_at": item.now,
                }
            case ev.OrderReviewed():
                return {"reviewed_by": data.reviewer, "decided_at": item.now}
            case ev.OrderCanceled():
                return {"canceled_at": item.now, "cancel_reason": data.reason}
        return {}

    async def _assign_vibans(self, view: RiskView, outputs: list[_Outputs]) -> None:
        missing: list[tuple[str, str]] = []
        for out in outputs:
            for effect in out.result.effects:
                if isinstance(effect, domain.Decided) and effect.state == "created":
                    assert out.merchant_id is not None
                    assert effect.company_id is not None
                    pair = (out.merchant_id, effect.company_id)
                    if pair not in view.vibans and pair not in missing:
                        missing.append(pair)
        if missing:
            sequences = await view.allocate_viban_sequences(len(missing))
            for pair, sequence in zip(missing, sequences, strict=True):
                view.add_viban(*pair, domain.viban_from_sequence(sequence))

    # -- emitting -------------------------------------------------------------------------

    def _emit(self, view: RiskView, batch: Batch, out: _Outputs) -> None:
        item, result = out.item, out.result
        if result.rejection is not None:
            batch.refuse(item, out.order_id, result.rejection, self.metrics.rejections)
            return
        for effect in result.effects:
            match effect:
                case domain.Decided():
                    assert out.merchant_id is not None
                    self._emit_decision(view, batch, item, out.order_id, out.merchant_id, effect)
                case domain.StateChanged(from_=from_, to=to):
                    batch.emit(
                        item, ev.OrderStateChanged(order_id=out.order_id, from_=from_, to=to)
                    )
                case domain.Released(reason=reason):
                    counter = self.metrics.released.labels(reason)
                    batch.after_commit.append(counter.inc)

    def _emit_decision(
        self,
        view: RiskView,
        batch: Batch,
        item: Inbound,
        order_id: str,
        merchant_id: str,
        decided: domain.Decided,
    ) -> None:
        viban = None
        if decided.state == "created" and decided.company_id is not None:
            viban = view.vibans[(merchant_id, decided.company_id)]
            # Onto the order as it is now: a later event of this batch may have changed it.
            view.put_order(replace(view.orders[order_id], viban=viban))
        # Built from the ruleset's own typed hits, so validating each again buys nothing.
        hits = [
            ev.RuleHit.model_construct(rule=h.rule, outcome=h.outcome, detail=h.detail)
            for h in decided.rule_hits
        ]
        batch.emit(
            item,
            ev.OrderDecided(
                order_id=order_id,
                merchant_id=merchant_id,
                state=decided.state,
                decline_reason=decided.decline_reason,
                debtor_company_id=decided.company_id,
                viban=viban,
                ruleset_version=decided.ruleset_version,
                rule_hits=hits,
            ),
        )
        view.audit.setdefault(order_id, []).append(
            {
                "event_id": item.event.id,
                "event_type": item.event.type,
                "state": decided.state,
                "decline_reason": decided.decline_reason,
                "company_id": decided.company_id,
                "ruleset_version": decided.ruleset_version,
                "rule_hits": [h.model_dump() for h in hits],
                "decided_at": item.now,
            }
        )
        state, reason = decided.state, decided.decline_reason or "none"
        batch.after_commit.append(lambda: self.metrics.decisions.labels(state, reason).inc())
