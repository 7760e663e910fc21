"""Money parsing and arithmetic, as properties over generated amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.events import Amount
from shared.money import Money, cents, format_money, from_cents, quantize_cents

MONEY = TypeAdapter(Money)
amounts_in_cents = st.integers(min_value=0, max_value=10**13)


@given(amounts_in_cents)
def test_wire_form_round_trips(n: int) -> None:
    text = f"{n // 100}.{n % 100:02d}"
    value = MONEY.validate_python(text)
    assert MONEY.dump_python(value) == text
    assert cents(value) == n
    assert from_cents(n) == value


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers())
def test_numbers_are_never_money(number: float | int) -> None:
    with pytest.raises(ValidationError):
        MONEY.validate_python(number)


@given(st.text(alphabet="0123456789.-", max_size=12))
def test_only_two_decimal_strings_parse(text: str) -> None:
    import re

    ok = re.fullmatch(r"\d+\.\d{2}", text) is not None
    try:
        MONEY.validate_python(text)
        assert ok
    except ValidationError:
        assert not ok


@given(amounts_in_cents, amounts_in_cents)
def test_amount_accepts_exactly_when_gross_is_net_plus_tax(net: int, tax: int) -> None:
    gross = from_cents(net + tax)
    assert Amount(gross=gross, net=from_cents(net), tax=from_cents(tax)).gross == gross
    with pytest.raises(ValidationError):
        Amount(gross=gross + Decimal("0.01"), net=from_cents(net), tax=from_cents(tax))


@given(st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False))
def test_quantize_rounds_half_even_to_a_cent(value: Decimal) -> None:
    rounded = quantize_cents(value)
    assert abs(rounded - value) <= Decimal("0.005")
    assert rounded == rounded.quantize(Decimal("0.01"))


def test_half_even_examples() -> None:
    assert quantize_cents(Decimal("0.125")) == Decimal("0.12")
    assert quantize_cents(Decimal("0.135")) == Decimal("0.14")
    assert format_money(Decimal("2.5")) == "2.50"


@given(amounts_in_cents, amounts_in_cents)
def test_cent_arithmetic_is_exact(a: int, b: int) -> None:
    assert cents(from_cents(a) + from_cents(b)) == a + b


def test_cents_refuses_fractions_of_a_cent() -> None:
    with pytest.raises(ValueError, match="whole number of cents"):
        cents(Decimal("0.001"))
