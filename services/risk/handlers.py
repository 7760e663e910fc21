"""Risk decisions: thin handling around the pure rules in :mod:`services.risk.domain`.

Per batch: load what the events refer to, decide each event in order in memory, give new
(merchant, debtor) pairs their VIBAN, store, and emit. The engine wraps all of it in one
MongoDB transaction together with the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pymongo.asynchronous.database import AsyncDatabase

from services.risk import domain
from services.risk.ruleset import CURRENT_RULESET, Ruleset
from services.risk.store import RiskView, address_to_doc, ensure_indexes
from shared import events as ev
from shared import topics
from shared.money import cents, from_cents
from shared.runtime.engine import Batch, Inbound

SUPPORTED_CURRENCY = "EUR"


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
            "Exposure given back to debtors' limits, by cause (canceled, credit_note, settled).",
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
        for cause in ("canceled", "credit_note", "settled"):
            self.released.labels(cause)
        for code in ("merchant_not_configured", "unsupported_currency", "unknown_order"):
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
        financing_limit=data.financing_limit,
    )


@dataclass
class _Outcome:
    """A decision waiting for its VIBAN before it can be emitted."""

    item: Inbound
    order_id: str
    merchant_id: str
    state: str
    previous_state: str | None
    decline_reason: str | None
    company_id: str | None
    rule_hits: tuple[domain.RuleHit, ...]
    ruleset_version: str
    needs_viban: bool


class RiskService:
    name = "risk"
    input_topics: tuple[str, ...] = (
        topics.MERCHANTS_CONFIGURED,
        topics.COMPANIES_REGISTERED,
        topics.ORDERS_REQUESTED,
        topics.ORDERS_REVIEWED,
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

        outcomes: list[_Outcome] = []
        for item in sorted(batch.items, key=_reference_data_first):
            data = item.data
            if isinstance(data, ev.MerchantConfigured):
                view.put_merchant(
                    {"_id": data.merchant_id, "manual_review": data.manual_review, "at": item.now}
                )
            elif isinstance(data, ev.CompanyRegistered):
                view.put_company(to_domain_company(data))
            elif isinstance(data, ev.OrderRequested):
                outcome = await self._decide_order(view, batch, item, data)
                if outcome is not None:
                    outcomes.append(outcome)
            elif isinstance(data, ev.OrderReviewed):
                outcome = self._review(view, batch, item, data)
                if outcome is not None:
                    outcomes.append(outcome)
            elif isinstance(data, ev.ExposureReleased):
                self._release(view, batch, item, data)

        await self._assign_vibans(view, outcomes)
        for outcome in outcomes:
            self._emit_decision(view, batch, outcome)
        await view.flush()

    # -- loading --------------------------------------------------------------------------

    async def _preload(self, view: RiskView, items: list[Inbound]) -> None:
        requests = [i.data for i in items if isinstance(i.data, ev.OrderRequested)]
        reviews = [i.data for i in items if isinstance(i.data, ev.OrderReviewed)]
        releases = [i.data for i in items if isinstance(i.data, ev.ExposureReleased)]
        await view.load_merchants(r.merchant_id for r in requests)
        await view.load_orders(
            [r.order_id for r in requests]
            + [r.order_id for r in reviews]
            + [r.order_id for r in releases]
        )
        keys = [domain.registry_keys(to_domain_claim(r.debtor)) for r in requests]
        await view.load_candidates(
            {k.registration_number for k in keys if k.registration_number},
            {k.vat_id for k in keys if k.vat_id},
            {k.postal_code for k in keys if k.postal_code},
        )
        pairs = set()
        for request in requests:
            identification = self._identify(view, request)
            view.identified[request.order_id] = identification
            if identification.company is not None:
                pairs.add((request.merchant_id, identification.company.company_id))
        for order_id in [r.order_id for r in reviews] + [r.order_id for r in releases]:
            order = view.orders.get(order_id)
            if order is not None and order.get("company_id"):
                pairs.add((order["merchant_id"], order["company_id"]))
        await view.load_debtor_state(pairs)

    def _identify(self, view: RiskView, request: ev.OrderRequested) -> domain.Identification:
        claim = to_domain_claim(request.debtor)
        keys = domain.registry_keys(claim)
        by_id, by_postal = view.candidates(keys.registration_number, keys.vat_id, keys.postal_code)
        return domain.identify(claim, by_id, by_postal, self.ruleset)

    # -- deciding -------------------------------------------------------------------------

    async def _decide_order(
        self, view: RiskView, batch: Batch, item: Inbound, data: ev.OrderRequested
    ) -> _Outcome | None:
        existing = view.orders.get(data.order_id)
        if existing is not None:
            if existing["fingerprint"] != data.fingerprint():
                self._reject(batch, item, data.order_id, "order_id already used for another order")
            # The same order sent again under a new event id: already decided, nothing to do.
            return None
        merchant = view.merchants.get(data.merchant_id)
        if merchant is None:
            self._wait_or_reject(batch, item, data.order_id, "merchant_not_configured")
            return None
        if data.currency != SUPPORTED_CURRENCY:
            self._reject(batch, item, data.order_id, f"unsupported_currency: {data.currency}")
            return None

        identification = view.identified.get(data.order_id)
        if identification is None or view.dirty_companies:
            # A company registered earlier in this very batch may be the one.
            identification = self._identify(view, data)
        company_id = identification.company.company_id if identification.company else None
        if company_id is not None:
            # A company registered earlier in this very batch was not preloaded.
            await view.load_debtor_state([(data.merchant_id, company_id)])
        order = domain.OrderToDecide(
            order_id=data.order_id,
            merchant_id=data.merchant_id,
            gross=data.amount.gross,
            debtor=to_domain_claim(data.debtor),
            billing_address=to_domain_address(data.billing_address)
            if data.billing_address
            else None,
            delivery_address=to_domain_address(data.delivery_address)
            if data.delivery_address
            else None,
        )
        decision = domain.decide(
            order,
            domain.MerchantPolicy(data.merchant_id, merchant["manual_review"]),
            identification,
            view.exposure_of(company_id) if company_id else from_cents(0),
            (data.merchant_id, company_id) in view.vibans if company_id else False,
            self.ruleset,
        )
        if decision.company_id is not None and decision.reserve > 0:
            view.reserve(decision.company_id, decision.reserve)
        view.add_order(
            {
                "_id": data.order_id,
                "merchant_id": data.merchant_id,
                "external_code": data.external_code,
                "state": decision.state,
                "gross_cents": cents(data.amount.gross),
                "reserved_cents": cents(decision.reserve),
                "currency": data.currency,
                "duration_days": data.duration_days,
                "company_id": decision.company_id,
                "decline_reason": decision.decline_reason,
                "billing_address": address_to_doc(order.billing_address)
                if order.billing_address
                else None,
                "requested_event_id": item.event.id,
                "fingerprint": data.fingerprint(),
                "decided_at": item.now,
            }
        )
        return _Outcome(
            item=item,
            order_id=data.order_id,
            merchant_id=data.merchant_id,
            state=decision.state,
            previous_state=None,
            decline_reason=decision.decline_reason,
            company_id=decision.company_id,
            rule_hits=decision.rule_hits,
            ruleset_version=decision.ruleset_version,
            needs_viban=decision.state == "created",
        )

    def _release(
        self, view: RiskView, batch: Batch, item: Inbound, data: ev.ExposureReleased
    ) -> None:
        order = view.orders.get(data.order_id)
        if order is None:
            self._wait_or_reject(batch, item, data.order_id, "unknown_order")
            return
        # Never more than this order still holds: a release cannot eat another order's room.
        amount = min(cents(data.amount), order.get("reserved_cents", 0))
        if amount <= 0 or not order.get("company_id"):
            return
        view.release(order["company_id"], from_cents(amount))
        view.update_order(data.order_id, reserved_cents=order["reserved_cents"] - amount)
        batch.after_commit.append(lambda: self.metrics.released.labels(data.reason).inc())

    def _review(
        self, view: RiskView, batch: Batch, item: Inbound, data: ev.OrderReviewed
    ) -> _Outcome | None:
        order = view.orders.get(data.order_id)
        if order is None:
            self._wait_or_reject(batch, item, data.order_id, "unknown_order")
            return None
        resolution = domain.resolve_review(order["state"], data.outcome, data.decline_reason)
        if resolution.refusal is not None:
            self._reject(batch, item, data.order_id, resolution.refusal)
            return None
        assert resolution.state is not None
        if resolution.release and order.get("company_id"):
            view.release(order["company_id"], from_cents(order["reserved_cents"]))
        view.update_order(
            data.order_id,
            state=resolution.state,
            decline_reason=resolution.decline_reason,
            reserved_cents=0 if resolution.release else order["reserved_cents"],
            reviewed_by=data.reviewer,
            decided_at=item.now,
        )
        hit = domain.RuleHit(
            rule="manual_review",
            outcome="pass" if resolution.state == "created" else "fail",
            detail=f"{data.outcome} by reviewer",
        )
        return _Outcome(
            item=item,
            order_id=data.order_id,
            merchant_id=order["merchant_id"],
            state=resolution.state,
            previous_state="waiting",
            decline_reason=resolution.decline_reason,
            company_id=order.get("company_id"),
            rule_hits=(hit,),
            ruleset_version=self.ruleset.version,
            needs_viban=resolution.state == "created",
        )

    async def _assign_vibans(self, view: RiskView, outcomes: list[_Outcome]) -> None:
        missing: list[tuple[str, str]] = []
        for outcome in outcomes:
            if outcome.needs_viban and outcome.company_id is not None:
                pair = (outcome.merchant_id, outcome.company_id)
                if pair not in view.vibans and pair not in missing:
                    missing.append(pair)
        if not missing:
            return
        sequences = await view.allocate_viban_sequences(len(missing))
        for pair, sequence in zip(missing, sequences, strict=True):
            view.add_viban(*pair, domain.viban_from_sequence(sequence))

    # -- emitting -------------------------------------------------------------------------

    def _emit_decision(self, view: RiskView, batch: Batch, outcome: _Outcome) -> None:
        viban = None
        if outcome.needs_viban and outcome.company_id is not None:
            viban = view.vibans[(outcome.merchant_id, outcome.company_id)]
            view.update_order(outcome.order_id, viban=viban)
        # Built from the ruleset's own typed hits, so validating each again buys nothing.
        hits = [
            ev.RuleHit.model_construct(rule=h.rule, outcome=h.outcome, detail=h.detail)
            for h in outcome.rule_hits
        ]
        batch.emit(
            outcome.item,
            ev.OrderDecided(
                order_id=outcome.order_id,
                merchant_id=outcome.merchant_id,
                state=outcome.state,
                decline_reason=outcome.decline_reason,
                debtor_company_id=outcome.company_id,
                viban=viban,
                ruleset_version=outcome.ruleset_version,
                rule_hits=hits,
            ),
        )
        batch.emit(
            outcome.item,
            ev.OrderStateChanged(
                order_id=outcome.order_id, from_=outcome.previous_state, to=outcome.state
            ),
        )
        view.audit.append(
            {
                "_id": f"{outcome.order_id}/{outcome.item.event.id}",
                "order_id": outcome.order_id,
                "event_id": outcome.item.event.id,
                "event_type": outcome.item.event.type,
                "state": outcome.state,
                "decline_reason": outcome.decline_reason,
                "company_id": outcome.company_id,
                "ruleset_version": outcome.ruleset_version,
                "rule_hits": [h.model_dump() for h in hits],
                "decided_at": outcome.item.now,
            }
        )
        state, reason = outcome.state, outcome.decline_reason or "none"
        batch.after_commit.append(lambda: self.metrics.decisions.labels(state, reason).inc())

    def _wait_or_reject(self, batch: Batch, item: Inbound, order_id: str, reason: str) -> None:
        """Something this event refers to has not arrived: park it, or once its time is up,
        reject it with ``reason``."""
        if item.park_expired:
            self._reject(batch, item, order_id, reason)
        else:
            batch.park(item, reason)

    def _reject(self, batch: Batch, item: Inbound, order_id: str, reason: str) -> None:
        batch.reject(item, order_id, reason)
        label = reason.split(":", 1)[0]
        batch.after_commit.append(lambda: self.metrics.rejections.labels(label).inc())
