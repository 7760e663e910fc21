"""Properties of the decision function over generated companies, orders and exposures
(amounts in cents)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from schwifty import IBAN

from services.risk.domain import (
    Identification,
    MerchantPolicy,
    OrderToDecide,
    decide,
    viban_from_sequence,
)
from services.risk.ruleset import CURRENT_RULESET as RULES
from shared.events import DECLINE_REASONS
from tests.unit.test_risk_domain import CLAIM, COMPANY

money = st.integers(min_value=1, max_value=10**8)
scores = st.none() | st.integers(min_value=0, max_value=100)


@st.composite
def situations(
    draw: st.DrawFn,
) -> tuple[OrderToDecide, MerchantPolicy, Identification, int, bool]:
    company = replace(
        COMPANY,
        score=draw(scores),
        insolvent=draw(st.booleans()),
        financing_limit=draw(money),
    )
    identification = draw(
        st.sampled_from(
            [
                Identification(None, None),
                Identification(company, "registration_number"),
                Identification(company, "registration_number", address_matches=False),
                Identification(company, "name_and_postal_code"),
            ]
        )
    )
    order = OrderToDecide("o", "m", draw(money), CLAIM, None, None)
    return (
        order,
        MerchantPolicy("m", draw(st.booleans())),
        identification,
        draw(money),
        draw(st.booleans()),
    )


@given(situations())
def test_decisions_are_deterministic_and_well_formed(
    s: tuple[OrderToDecide, MerchantPolicy, Identification, int, bool],
) -> None:
    first = decide(*s, RULES)
    assert first == decide(*s, RULES)
    assert (first.state == "declined") == (first.decline_reason is not None)
    assert first.decline_reason is None or first.decline_reason in DECLINE_REASONS
    if first.state == "declined":
        assert first.reserve == 0
    else:
        assert first.reserve == s[0].gross
    assert first.rule_hits and first.ruleset_version == RULES.version


@given(situations())
def test_never_approves_beyond_the_limit(
    s: tuple[OrderToDecide, MerchantPolicy, Identification, int, bool],
) -> None:
    order, _, identification, exposure, _ = s
    decision = decide(*s, RULES)
    if decision.state != "declined":
        assert identification.company is not None
        assert exposure + order.gross <= identification.company.financing_limit


@given(situations(), st.integers(min_value=1, max_value=100))
def test_a_lower_score_never_turns_a_decline_into_an_approval(
    s: tuple[OrderToDecide, MerchantPolicy, Identification, int, bool], drop: int
) -> None:
    order, merchant, identification, exposure, known = s
    company = identification.company
    if company is None or company.score is None:
        return
    before = decide(*s, RULES)
    worse = replace(identification, company=replace(company, score=max(0, company.score - drop)))
    after = decide(order, merchant, worse, exposure, known, RULES)
    if before.state == "declined":
        assert after.state == "declined"


@given(situations(), money)
def test_more_exposure_never_turns_a_limit_decline_into_an_approval(
    s: tuple[OrderToDecide, MerchantPolicy, Identification, int, bool], extra: int
) -> None:
    order, merchant, identification, exposure, known = s
    before = decide(*s, RULES)
    after = decide(order, merchant, identification, exposure + extra, known, RULES)
    if before.decline_reason == "debtor_limit_exceeded":
        assert after.decline_reason == "debtor_limit_exceeded"


@given(
    st.integers(min_value=0, max_value=10**10 - 1), st.integers(min_value=0, max_value=10**10 - 1)
)
def test_vibans_are_valid_and_never_shared(a: int, b: int) -> None:
    assert IBAN(viban_from_sequence(a)).validate()
    assert (viban_from_sequence(a) == viban_from_sequence(b)) == (a == b)
