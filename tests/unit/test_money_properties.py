"""Money parsing and arithmetic, as properties over generated amounts. The parser is held
against rules written out here (``money_by_the_rules``), not against itself."""

from __future__ import annotations

import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.events import Amount
from shared.money import (
    Money,
    Percent,
    SignedMoney,
    cents,
    format_money,
    from_cents,
    quantize_cents,
)

MONEY = TypeAdapter(Money)
SIGNED_MONEY = TypeAdapter(SignedMoney)
PERCENT = TypeAdapter(Percent)
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


ASCII_DIGITS = "0123456789"


def money_by_the_rules(text: str, *, signed: bool = False) -> int | None:
    """The contract's money strings, read independently of shared/money.py: the amount in
    cents, or None when the text is not money. Rules: an optional "-" only where the field
    is signed; 1 to 12 ASCII digits with no leading zero (except "0" itself); a dot; exactly
    two ASCII digits. Nothing else: no "+", no whitespace, no exponent, no separators, no
    other script's digits."""
    negative = signed and text[:1] == "-"
    body = text[1:] if negative else text
    units, dot, fraction = body.partition(".")
    if dot != "." or len(fraction) != 2 or not 1 <= len(units) <= 12:
        return None
    if any(c not in ASCII_DIGITS for c in units + fraction):
        return None
    if len(units) > 1 and units[0] == "0":
        return None
    value = 0
    for c in units + fraction:
        value = value * 10 + ASCII_DIGITS.index(c)
    return -value if negative else value


# Texts near the money form: digits (ASCII and every other script's), separators, signs,
# exponents and whitespace.
money_alphabet = st.one_of(
    st.sampled_from("0123456789" * 4 + ".-+eE _,\n\t"),
    st.characters(categories=["Nd"]),
)
near_money = st.one_of(
    st.text(money_alphabet, max_size=18),
    st.integers(0, 10**14).map(lambda n: f"{n // 100}.{n % 100:02d}"),
    # A valid amount with one character replaced by any Unicode digit (fullwidth "１",
    # Devanagari "१", Arabic-Indic "١"...), so the replacement sits where a digit goes.
    st.tuples(
        st.integers(0, 10**14).map(lambda n: f"{n // 100}.{n % 100:02d}"),
        st.integers(0, 20),
        st.characters(categories=["Nd"]),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]),
)


@settings(max_examples=1000)
@given(near_money)
def test_money_parses_exactly_what_the_rules_accept(text: str) -> None:
    expected = money_by_the_rules(text)
    try:
        parsed = MONEY.validate_python(text)
    except ValidationError:
        assert expected is None, f"{text!r} is money by the rules"
        return
    assert expected is not None, f"{text!r} is not money by the rules"
    assert cents(parsed) == expected


@settings(max_examples=1000)
@given(st.one_of(near_money, near_money.map(lambda t: "-" + t)))
def test_signed_money_parses_exactly_what_the_rules_accept(text: str) -> None:
    expected = money_by_the_rules(text, signed=True)
    try:
        parsed = SIGNED_MONEY.validate_python(text)
    except ValidationError:
        assert expected is None, f"{text!r} is signed money by the rules"
        return
    assert expected is not None, f"{text!r} is not signed money by the rules"
    assert cents(parsed) == expected


@given(st.characters(categories=["Nd"]).filter(lambda c: c not in ASCII_DIGITS))
def test_no_other_scripts_digit_is_money_anywhere(digit: str) -> None:
    # Python's re "\d" and Decimal() both take these; the contract takes ASCII only.
    assert Decimal(digit) == int(unicodedata.digit(digit))  # what Decimal() alone would do
    for text in (f"{digit}.00", f"1{digit}.00", f"1.{digit}0", f"1.0{digit}"):
        with pytest.raises(ValidationError):
            MONEY.validate_python(text)
        with pytest.raises(ValidationError):
            PERCENT.validate_python(text.removesuffix("0"))


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
