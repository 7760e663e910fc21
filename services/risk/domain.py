"""Risk rules and the order lifecycle risk owns, as pure functions: no I/O, no clock.
Amounts are integer cents (the handler converts at the edge with ``shared.money``). The
handler maps wire models onto these types, loads candidates from the registry with
:func:`registry_keys`, and stores the result.

Rule order (first failing rule decides, every evaluated rule is recorded as a ``RuleHit``):
identification -> id match consistency -> score present -> policy (insolvent, score, first
order billing address) -> debtor limit -> manual review band.

Lifecycle (see ``docs/risk-lifecycle.md``): risk owns an order until it is ``created``.
:func:`request` decides it and reserves its gross against the debtor's limit; a ``waiting``
order is ended by :func:`review` (approve -> created, decline -> declined and released) or by
:func:`cancel` (canceled for good and released; a later review is refused). Once created the
order is shipping's: risk only gives back what shipping reports as released
(:func:`release`), each release id once, never more than the order still holds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from rapidfuzz import fuzz
from schwifty import IBAN
from stdnum.eu import vat as eu_vat

from services.risk.ruleset import Ruleset
from shared.outcomes import Rejection as Rejection  # noqa: PLC0414 - part of this domain's answers

DecisionState = Literal["created", "declined", "waiting"]
# The states risk tracks: the decision's, and canceled for an order canceled while waiting.
RiskState = Literal["created", "declined", "waiting", "canceled"]
RuleOutcome = Literal["pass", "fail", "skip", "review"]
IdentificationMethod = Literal["registration_number", "vat_id", "name_and_postal_code"]

VIBAN_BANK_CODE = "10011001"
_LEGAL_FORMS = (
    "gmbh & co. kg",
    "gmbh & co kg",
    "ggmbh",
    "gmbh",
    "mbh",
    "ag",
    "ug (haftungsbeschrankt)",
    "ug",
    "kgaa",
    "kg",
    "ohg",
    "gbr",
    "e.k.",
    "ek",
    "e.v.",
    "se",
    "ltd.",
    "ltd",
    "bv",
    "b.v.",
    "sarl",
    "sas",
    "srl",
    "inc.",
    "inc",
)
_LEGAL_FORM_PATTERNS = tuple(
    re.compile(rf"(?<![a-z0-9]){re.escape(form)}(?![a-z0-9])") for form in _LEGAL_FORMS
)
_TRANSLITERATION = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
# Normalisation is pure and the same names, ids and VAT ids come back order after order.
_NORMALISED_CACHE_SIZE = 65536


@dataclass(frozen=True)
class Address:
    street: str
    house_number: str
    postal_code: str
    city: str
    country: str


@dataclass(frozen=True)
class DebtorClaim:
    """What the order says about the buyer."""

    name: str
    legal_form: str
    registration_number: str | None
    vat_id: str | None
    address: Address


@dataclass(frozen=True)
class Company:
    """The credit bureau's record of a company."""

    company_id: str
    name: str
    legal_form: str
    registration_number: str | None
    vat_id: str | None
    address: Address
    insolvent: bool
    score: int | None
    financing_limit: int  # cents


@dataclass(frozen=True)
class MerchantPolicy:
    merchant_id: str
    manual_review: bool


@dataclass(frozen=True)
class OrderToDecide:
    order_id: str
    merchant_id: str
    gross: int  # cents
    debtor: DebtorClaim
    billing_address: Address | None
    delivery_address: Address | None


@dataclass(frozen=True)
class RegistryKeys:
    """Normalised keys to look a claim up in the registry."""

    registration_number: str | None
    vat_id: str | None
    postal_code: str | None


@dataclass(frozen=True)
class Identification:
    company: Company | None
    method: IdentificationMethod | None
    name_matches: bool = True
    address_matches: bool = True
    name_score: float = 0.0


@dataclass(frozen=True)
class RuleHit:
    rule: str
    outcome: RuleOutcome
    detail: str


@dataclass(frozen=True)
class Decision:
    state: DecisionState
    decline_reason: str | None
    company_id: str | None
    reserve: int  # cents
    rule_hits: tuple[RuleHit, ...]
    ruleset_version: str


# -- normalisation ---------------------------------------------------------------------------


def _fold(text: str) -> str:
    text = text.casefold().translate(_TRANSLITERATION)
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def normalize_registration_number(value: str) -> str:
    """``"HRB 12345 B"``, ``"hrb-12345b"`` -> ``"HRB12345B"``."""
    return re.sub(r"[^0-9A-Z]", "", _fold(value).upper())


@lru_cache(maxsize=_NORMALISED_CACHE_SIZE)
def normalize_vat_id(value: str) -> str | None:
    """The compact form of a valid EU VAT id, else None (an invalid id identifies nothing)."""
    try:
        compact: str = eu_vat.compact(value)
        return compact if eu_vat.is_valid(compact) else None
    except Exception:  # stdnum raises several ValidationError subclasses
        return None


@lru_cache(maxsize=_NORMALISED_CACHE_SIZE)
def normalize_name(value: str) -> str:
    text = _fold(value)
    for pattern in _LEGAL_FORM_PATTERNS:
        text = pattern.sub(" ", text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())


def normalize_postal_code(value: str) -> str:
    return re.sub(r"\s+", "", value).upper()


def normalize_street(value: str) -> str:
    text = _fold(value)
    text = re.sub(r"(strasse|str\.|str\b)", "str", text)
    return re.sub(r"[^a-z0-9]+", "", text)


def normalize_house_number(value: str) -> str:
    return re.sub(r"[^0-9a-z]", "", _fold(value))


@lru_cache(maxsize=_NORMALISED_CACHE_SIZE)
def registry_keys(claim: DebtorClaim) -> RegistryKeys:
    registration = (
        normalize_registration_number(claim.registration_number)
        if claim.registration_number
        else None
    )
    return RegistryKeys(
        registration_number=registration or None,
        vat_id=normalize_vat_id(claim.vat_id) if claim.vat_id else None,
        postal_code=normalize_postal_code(claim.address.postal_code) or None,
    )


# -- matching --------------------------------------------------------------------------------


def name_similarity(a: str, b: str) -> float:
    return float(fuzz.token_sort_ratio(normalize_name(a), normalize_name(b)))


def addresses_match(a: Address, b: Address, ruleset: Ruleset) -> bool:
    return (
        normalize_postal_code(a.postal_code) == normalize_postal_code(b.postal_code)
        and a.country.upper() == b.country.upper()
        and normalize_house_number(a.house_number) == normalize_house_number(b.house_number)
        and fuzz.ratio(normalize_street(a.street), normalize_street(b.street))
        >= ruleset.address_match_threshold
        and fuzz.ratio(_fold(a.city).strip(), _fold(b.city).strip())
        >= ruleset.address_match_threshold
    )


def identify(
    claim: DebtorClaim,
    by_id: Sequence[Company],
    by_postal_code: Sequence[Company],
    ruleset: Ruleset,
) -> Identification:
    """By registration number, then VAT id, then fuzzy name within the postal code."""
    keys = registry_keys(claim)
    for method in ("registration_number", "vat_id"):
        wanted = keys.registration_number if method == "registration_number" else keys.vat_id
        if not wanted:
            continue
        matches = sorted(
            (c for c in by_id if _company_key(c, method) == wanted), key=lambda c: c.company_id
        )
        if matches:
            company = matches[0]
            score = name_similarity(claim.name, company.name)
            return Identification(
                company=company,
                method=method,
                name_matches=score >= ruleset.name_match_threshold,
                address_matches=addresses_match(claim.address, company.address, ruleset),
                name_score=score,
            )
    if keys.postal_code:
        scored = [
            (name_similarity(claim.name, c.name), c)
            for c in by_postal_code
            if normalize_postal_code(c.address.postal_code) == keys.postal_code
        ]
        eligible = [(s, c) for s, c in scored if s >= ruleset.name_match_threshold]
        if eligible:
            # Highest score wins; ties go to the smallest company id, so it is deterministic.
            score, company = min(eligible, key=lambda sc: (-sc[0], sc[1].company_id))
            return Identification(company, "name_and_postal_code", name_score=score)
    return Identification(company=None, method=None)


def _company_key(company: Company, method: str) -> str | None:
    if method == "registration_number":
        return (
            normalize_registration_number(company.registration_number)
            if company.registration_number
            else None
        )
    return normalize_vat_id(company.vat_id) if company.vat_id else None


# -- deciding --------------------------------------------------------------------------------


def decide(
    order: OrderToDecide,
    merchant: MerchantPolicy,
    identification: Identification,
    exposure: int,
    has_prior_order_with_merchant: bool,
    ruleset: Ruleset,
) -> Decision:
    hits: list[RuleHit] = []

    def declined(reason: str, company_id: str | None) -> Decision:
        return Decision("declined", reason, company_id, 0, tuple(hits), ruleset.version)

    company = identification.company
    if company is None:
        hits.append(RuleHit("identification", "fail", "no registry match by id or by name"))
        return declined("debtor_not_identified", None)
    hits.append(
        RuleHit("identification", "pass", f"by {identification.method} as {company.company_id}")
    )

    if identification.method != "name_and_postal_code":
        if not identification.name_matches or not identification.address_matches:
            what = [
                part
                for part, ok in (
                    ("name", identification.name_matches),
                    ("address", identification.address_matches),
                )
                if not ok
            ]
            hits.append(
                RuleHit("debtor_consistency", "fail", f"{' and '.join(what)} differ from registry")
            )
            return declined("debtor_address", company.company_id)
        hits.append(RuleHit("debtor_consistency", "pass", "name and address match registry"))
    else:
        hits.append(RuleHit("debtor_consistency", "skip", "identified by name and postal code"))

    if company.score is None:
        hits.append(RuleHit("scoring", "fail", "credit bureau returned no score"))
        return declined("risk_scoring_failed", company.company_id)
    hits.append(RuleHit("scoring", "pass", f"score {company.score}"))

    if company.insolvent:
        hits.append(RuleHit("insolvency", "fail", "company is insolvent"))
        return declined("risk_policy", company.company_id)
    hits.append(RuleHit("insolvency", "pass", "not insolvent"))

    if company.score < ruleset.policy_score_threshold:
        hits.append(
            RuleHit(
                "score_threshold",
                "fail",
                f"score {company.score} < {ruleset.policy_score_threshold}",
            )
        )
        return declined("risk_policy", company.company_id)
    hits.append(
        RuleHit(
            "score_threshold", "pass", f"score {company.score} >= {ruleset.policy_score_threshold}"
        )
    )

    if has_prior_order_with_merchant:
        hits.append(RuleHit("first_order_billing_address", "skip", "debtor known to merchant"))
    elif order.billing_address is not None and not addresses_match(
        order.billing_address, company.address, ruleset
    ):
        hits.append(
            RuleHit(
                "first_order_billing_address",
                "fail",
                "first order for this debtor with a billing address other than the registered one",
            )
        )
        return declined("risk_policy", company.company_id)
    else:
        hits.append(RuleHit("first_order_billing_address", "pass", "billing address as registered"))

    sums = f"exposure {_fmt(exposure)} + order {_fmt(order.gross)}"
    limit = _fmt(company.financing_limit)
    if exposure + order.gross > company.financing_limit:
        hits.append(RuleHit("debtor_limit", "fail", f"{sums} > limit {limit}"))
        return declined("debtor_limit_exceeded", company.company_id)
    hits.append(RuleHit("debtor_limit", "pass", f"{sums} <= limit {limit}"))

    low, high = ruleset.manual_review_band
    if merchant.manual_review and low <= company.score <= high:
        hits.append(RuleHit("manual_review", "review", f"score {company.score} in {low}-{high}"))
        return Decision(
            "waiting", None, company.company_id, order.gross, tuple(hits), ruleset.version
        )
    hits.append(
        RuleHit(
            "manual_review",
            "skip" if not merchant.manual_review else "pass",
            "merchant has no manual review" if not merchant.manual_review else "score above band",
        )
    )
    return Decision("created", None, company.company_id, order.gross, tuple(hits), ruleset.version)


def _fmt(amount: int) -> str:
    """Cents as the contract writes money: ``119000`` -> ``"1190.00"``."""
    return f"{Decimal(amount) / 100:.2f}"


# -- the order lifecycle risk owns --------------------------------------------------------

SUPPORTED_CURRENCY = "EUR"
# Every code a risk rejection can carry (the metric's closed label set, exported at 0 at start).
REJECTION_CODES = (
    "merchant_not_configured",
    "unsupported_currency",
    "unknown_order",
    "order_id_reused",
    "order_canceled",
    "order_created",
    "order_declined",
)

ReleaseReason = Literal["canceled", "credit_note", "settled", "amount_reduced", "review_declined"]


@dataclass(frozen=True)
class RiskOrder:
    """Risk's record of one order: the reservation ledger for it (keyed by the order id, so
    the same order requested again can never reserve twice)."""

    order_id: str
    merchant_id: str
    company_id: str | None
    state: RiskState
    gross: int  # cents
    # What of the gross still counts against the debtor's limit.
    reserved: int  # cents
    fingerprint: str
    decline_reason: str | None = None
    viban: str | None = None
    # The review or cancel that ended the wait: the same event again changes nothing.
    resolved_by: str | None = None
    # Shipping's releases given back so far: each release id applies once.
    release_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decided:
    """Publish ``orders.decided`` (a created one with the pair's VIBAN)."""

    state: DecisionState
    decline_reason: str | None
    company_id: str | None
    rule_hits: tuple[RuleHit, ...]
    ruleset_version: str


@dataclass(frozen=True)
class StateChanged:
    """Publish ``orders.state_changed``."""

    from_: RiskState | None
    to: RiskState


@dataclass(frozen=True)
class Released:
    """Exposure given back to the debtor's limit, ledgered under ``release_id``."""

    release_id: str
    company_id: str
    amount: int  # cents
    reason: ReleaseReason


Effect = Decided | StateChanged | Released


@dataclass(frozen=True)
class Park:
    """Refers to an order not seen yet: retry later. Once the wait is over, reject with
    ``code``, or, when ``reject_on_expiry`` is false, let it go (another service answers)."""

    code: str
    reject_on_expiry: bool = True


@dataclass(frozen=True)
class Result:
    """The order after the event (None: no order to store), the debtor's exposure after it
    (cents), and what to publish; or why the event was refused or parked."""

    order: RiskOrder | None
    exposure: int
    effects: tuple[Effect, ...] = ()
    rejection: Rejection | None = None
    park: Park | None = None


def own_release_id(order_id: str, cause: Literal["review_declined", "canceled"]) -> str:
    """The ledger id of a release risk itself makes: at most one per order and cause."""
    return f"risk:{order_id}:{cause}"


def request(
    existing: RiskOrder | None,
    order: OrderToDecide,
    *,
    fingerprint: str,
    currency: str,
    merchant: MerchantPolicy | None,
    identification: Identification,
    exposure: int,
    known_to_merchant: bool,
    ruleset: Ruleset,
) -> Result:
    """Decide a requested order and reserve its gross (created or waiting)."""
    if existing is not None:
        if existing.fingerprint != fingerprint:
            return Result(
                existing,
                exposure,
                rejection=Rejection("order_id_reused", "order_id already used for another order"),
            )
        return Result(existing, exposure)  # the same order again: decided already
    if merchant is None:
        return Result(None, exposure, park=Park("merchant_not_configured"))
    if currency != SUPPORTED_CURRENCY:
        return Result(None, exposure, rejection=Rejection("unsupported_currency", currency))
    decision = decide(order, merchant, identification, exposure, known_to_merchant, ruleset)
    decided = RiskOrder(
        order_id=order.order_id,
        merchant_id=order.merchant_id,
        company_id=decision.company_id,
        state=decision.state,
        gross=order.gross,
        reserved=decision.reserve,
        fingerprint=fingerprint,
        decline_reason=decision.decline_reason,
    )
    effects = (
        Decided(
            decision.state,
            decision.decline_reason,
            decision.company_id,
            decision.rule_hits,
            decision.ruleset_version,
        ),
        StateChanged(None, decision.state),
    )
    return Result(decided, exposure + decision.reserve, effects)


def review(
    order: RiskOrder | None,
    *,
    event_id: str,
    outcome: Literal["approve", "decline"],
    decline_reason: str | None,
    exposure: int,
    ruleset: Ruleset,
) -> Result:
    """A manual review ends the wait: approve -> created, decline -> declined (released)."""
    if order is None:
        return Result(None, exposure, park=Park("unknown_order"))
    if order.resolved_by == event_id:
        return Result(order, exposure)  # this very review again
    if order.state == "canceled":
        return Result(
            order,
            exposure,
            rejection=Rejection(
                "order_canceled", "the order was canceled while it waited for review"
            ),
        )
    if order.state != "waiting":
        return Result(
            order,
            exposure,
            rejection=Rejection(
                f"order_{order.state}", f"the order is {order.state}, not waiting for review"
            ),
        )
    hit = RuleHit(
        "manual_review", "pass" if outcome == "approve" else "fail", f"{outcome} by reviewer"
    )
    if outcome == "approve":
        approved = replace(order, state="created", resolved_by=event_id)
        effects: tuple[Effect, ...] = (
            Decided("created", None, order.company_id, (hit,), ruleset.version),
            StateChanged("waiting", "created"),
        )
        return Result(approved, exposure, effects)
    reason = decline_reason or "risk_policy"
    declined = replace(
        order, state="declined", decline_reason=reason, reserved=0, resolved_by=event_id
    )
    effects = (
        Decided("declined", reason, order.company_id, (hit,), ruleset.version),
        StateChanged("waiting", "declined"),
        *_give_back(order, own_release_id(order.order_id, "review_declined"), "review_declined"),
    )
    return Result(declined, max(0, exposure - order.reserved), effects)


def cancel(order: RiskOrder | None, *, event_id: str, exposure: int) -> Result:
    """A cancel ends the wait of a waiting order for good (released). A created or declined
    order is shipping's to cancel or refuse: risk leaves it alone."""
    if order is None:
        # Shipping parks the same cancel and refuses it if the order never turns up.
        return Result(None, exposure, park=Park("unknown_order", reject_on_expiry=False))
    if order.resolved_by == event_id:
        return Result(order, exposure)
    if order.state == "canceled":
        return Result(
            order, exposure, rejection=Rejection("order_canceled", "the order is already canceled")
        )
    if order.state != "waiting":
        return Result(order, exposure)
    canceled = replace(order, state="canceled", reserved=0, resolved_by=event_id)
    effects: tuple[Effect, ...] = (
        StateChanged("waiting", "canceled"),
        *_give_back(order, own_release_id(order.order_id, "canceled"), "canceled"),
    )
    return Result(canceled, max(0, exposure - order.reserved), effects)


def release(
    order: RiskOrder | None,
    *,
    release_id: str,
    amount: int,
    reason: ReleaseReason,
    exposure: int,
) -> Result:
    """Shipping's word that part of a created order no longer counts. A release id is spent
    the first time it is seen: on a created order it gives back what it says, never more
    than the order still holds (so never another order's room); on any other order nothing
    (shipping releases only what it has seen created). So its outcome never depends on
    whether the inbox still remembers an earlier delivery."""
    if order is None:
        return Result(None, exposure, park=Park("unknown_order"))
    if release_id in order.release_ids:
        return Result(order, exposure)
    spent = (*order.release_ids, release_id)
    given = min(amount, order.reserved) if order.state == "created" else 0
    if given <= 0 or order.company_id is None:
        return Result(replace(order, release_ids=spent), exposure)
    released = replace(order, reserved=order.reserved - given, release_ids=spent)
    effect = Released(release_id, order.company_id, given, reason)
    return Result(released, max(0, exposure - given), (effect,))


def _give_back(order: RiskOrder, release_id: str, reason: ReleaseReason) -> tuple[Released, ...]:
    if order.reserved <= 0 or order.company_id is None:
        return ()
    return (Released(release_id, order.company_id, order.reserved, reason),)


# -- VIBAN -----------------------------------------------------------------------------------


def viban_from_sequence(
    sequence: int, *, country: str = "DE", bank_code: str = VIBAN_BANK_CODE
) -> str:
    """A valid IBAN whose account number is the sequence number: injective by construction,
    so no two (merchant, debtor) pairs ever share one."""
    if not 0 <= sequence < 10**10:
        raise ValueError("VIBAN sequence out of range")
    return str(IBAN.generate(country, bank_code=bank_code, account_code=f"{sequence:010d}"))
