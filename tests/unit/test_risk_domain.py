"""The risk rules, one example per outcome, on the pure domain (amounts in cents)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from schwifty import IBAN

from services.risk.domain import (
    Address,
    Company,
    DebtorClaim,
    MerchantPolicy,
    OrderToDecide,
    RuleHit,
    decide,
    identify,
    normalize_registration_number,
    normalize_vat_id,
    viban_from_sequence,
)
from services.risk.ruleset import CURRENT_RULESET as RULES
from shared.money import cents

BERLIN = Address("Friedrichstraße", "68", "10117", "Berlin", "DE")
COMPANY = Company(
    company_id="c-1",
    name="Müller Maschinenbau GmbH",
    legal_form="GmbH",
    registration_number="HRB 12345 B",
    vat_id="DE135792460",
    address=BERLIN,
    insolvent=False,
    score=80,
    financing_limit=1_000_000,
)
CLAIM = DebtorClaim("Müller Maschinenbau GmbH", "GmbH", "HRB 12345 B", None, BERLIN)
SHOP = MerchantPolicy("m-1", manual_review=False)
REVIEWING = MerchantPolicy("m-1", manual_review=True)


def order(
    gross: str = "1190.00", claim: DebtorClaim = CLAIM, billing: Address | None = None
) -> OrderToDecide:
    return OrderToDecide("o-1", "m-1", cents(Decimal(gross)), claim, billing, None)


def run(
    company: Company = COMPANY,
    claim: DebtorClaim = CLAIM,
    merchant: MerchantPolicy = SHOP,
    exposure: str = "0.00",
    gross: str = "1190.00",
    billing: Address | None = None,
    known: bool = False,
) -> tuple[str, str | None]:
    identification = identify(claim, [company], [company], RULES)
    decision = decide(
        order(gross, claim, billing),
        merchant,
        identification,
        cents(Decimal(exposure)),
        known,
        RULES,
    )
    return decision.state, decision.decline_reason


def test_normalisation() -> None:
    assert normalize_registration_number("HRB 12345 B") == normalize_registration_number(
        "hrb-12345b"
    )
    assert normalize_vat_id("de 135 792 460") == "DE135792460"
    assert normalize_vat_id("DE135792461") is None  # bad check digit identifies nothing


def test_created() -> None:
    identification = identify(CLAIM, [COMPANY], [], RULES)
    decision = decide(order(), SHOP, identification, 0, False, RULES)
    assert (decision.state, decision.decline_reason, decision.company_id) == (
        "created",
        None,
        "c-1",
    )
    assert decision.reserve == 119_000
    assert decision.ruleset_version == RULES.version
    assert [h.rule for h in decision.rule_hits][:2] == ["identification", "debtor_consistency"]


def test_identified_by_vat_id_with_formatting() -> None:
    claim = replace(CLAIM, registration_number=None, vat_id="DE 135792460")
    identification = identify(claim, [COMPANY], [], RULES)
    assert identification.method == "vat_id"


def test_identified_by_fuzzy_name_and_postal_code() -> None:
    claim = DebtorClaim(
        "Mueller Maschinenbau", "GmbH", None, None, replace(BERLIN, street="Friedrichstr.")
    )
    identification = identify(claim, [], [COMPANY], RULES)
    assert identification.company == COMPANY
    assert identification.method == "name_and_postal_code"


def test_not_identified_elsewhere() -> None:
    claim = DebtorClaim(
        "Mueller Maschinenbau", "GmbH", None, None, replace(BERLIN, postal_code="80331")
    )
    assert run(claim=claim) == ("declined", "debtor_not_identified")
    stranger = DebtorClaim("Völlig Anders AG", "AG", None, None, BERLIN)
    assert run(claim=stranger) == ("declined", "debtor_not_identified")


def test_id_match_with_other_address_or_name() -> None:
    moved = replace(CLAIM, address=Address("Hafenstraße", "1", "20095", "Hamburg", "DE"))
    assert run(claim=moved) == ("declined", "debtor_address")
    renamed = replace(CLAIM, name="Schulz Logistik GmbH")
    assert run(claim=renamed) == ("declined", "debtor_address")


def test_scoring_failed() -> None:
    assert run(company=replace(COMPANY, score=None)) == ("declined", "risk_scoring_failed")


def test_policy_insolvent_and_low_score() -> None:
    assert run(company=replace(COMPANY, insolvent=True)) == ("declined", "risk_policy")
    assert run(company=replace(COMPANY, score=39)) == ("declined", "risk_policy")
    assert run(company=replace(COMPANY, score=40)) == ("created", None)


def test_first_order_billing_address_rule() -> None:
    elsewhere = Address("Lagerweg", "1", "04109", "Leipzig", "DE")
    assert run(billing=elsewhere) == ("declined", "risk_policy")
    assert run(billing=elsewhere, known=True) == ("created", None)
    assert run(billing=BERLIN) == ("created", None)
    delivery_elsewhere = OrderToDecide("o", "m-1", 1000, CLAIM, None, elsewhere)
    d = decide(delivery_elsewhere, SHOP, identify(CLAIM, [COMPANY], [], RULES), 0, False, RULES)
    assert d.state == "created"


def test_limit() -> None:
    assert run(exposure="8810.00") == ("created", None)  # exactly the limit
    assert run(exposure="8810.01") == ("declined", "debtor_limit_exceeded")


def test_manual_review_band() -> None:
    assert run(company=replace(COMPANY, score=45), merchant=REVIEWING) == ("waiting", None)
    assert run(company=replace(COMPANY, score=59), merchant=REVIEWING) == ("waiting", None)
    assert run(company=replace(COMPANY, score=60), merchant=REVIEWING) == ("created", None)
    assert run(company=replace(COMPANY, score=45), merchant=SHOP) == ("created", None)


def test_limit_rule_hit_reads_as_money() -> None:
    identification = identify(CLAIM, [COMPANY], [], RULES)
    decision = decide(order("1190.00"), SHOP, identification, 881_001, False, RULES)
    assert decision.rule_hits[-1] == RuleHit(
        "debtor_limit", "fail", "exposure 8810.01 + order 1190.00 > limit 10000.00"
    )


def test_viban() -> None:
    iban = viban_from_sequence(42)
    assert IBAN(iban).validate()
    assert iban != viban_from_sequence(43)
    with pytest.raises(ValueError, match="out of range"):
        viban_from_sequence(10**10)
