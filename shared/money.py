"""Money on the wire: a JSON string with exactly two fraction digits, never a number.

The wire form is ``0.00`` or a non-zero ASCII digit followed by at most eleven more, a dot
and two ASCII digits: no sign (unless the field is signed), no exponent, no whitespace, no
leading zeros, no other script's digits (Python's ``\\d`` and ``Decimal()`` accept every
Unicode digit, so neither is used on the wire text). Twelve integer digits keep every amount,
and sums of millions of them, inside the signed 64-bit integer cents MongoDB stores.

In Python it is a ``Decimal``; in MongoDB the services store integer cents. Every rounding
is explicit and half-even (``quantize_cents``).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
MAX_INTEGER_DIGITS = 12
_UNITS = rf"(?:0|[1-9][0-9]{{0,{MAX_INTEGER_DIGITS - 1}}})"
MONEY_PATTERN = rf"^{_UNITS}\.[0-9]{{2}}$"
SIGNED_MONEY_PATTERN = rf"^-?{_UNITS}\.[0-9]{{2}}$"
PERCENT_PATTERN = r"^(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,4})?$"
# re.ASCII as a second guard: the classes above are ASCII already, and must stay so.
_MONEY = re.compile(MONEY_PATTERN, re.ASCII)
_SIGNED_MONEY = re.compile(SIGNED_MONEY_PATTERN, re.ASCII)
_PERCENT = re.compile(PERCENT_PATTERN, re.ASCII)


def _parse(value: Any, pattern: re.Pattern[str], what: str) -> Decimal:
    if isinstance(value, bool | float | int):
        raise ValueError(f'{what} must be a string like "1190.00", not a JSON number')
    if isinstance(value, Decimal):
        # Python callers (the services, tests) pass Decimals; the wire never does.
        if not value.is_finite() or value != value.quantize(CENT):
            raise ValueError(f"{what} must be a finite amount with at most two fraction digits")
        text = f"{value.quantize(CENT):f}"
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f'{what} must be a string like "1190.00"')
    # fullmatch: "$" alone would also match before a trailing newline.
    if not pattern.fullmatch(text):
        sign = "" if pattern is _SIGNED_MONEY else "non-negative "
        raise ValueError(
            f"{what} must be a {sign}decimal string of ASCII digits with exactly two fraction "
            f"digits and at most {MAX_INTEGER_DIGITS} before the point, got {text[:40]!r}"
        )
    return Decimal(text)


def parse_money(value: Any) -> Decimal:
    return _parse(value, _MONEY, "amount")


def parse_signed_money(value: Any) -> Decimal:
    return _parse(value, _SIGNED_MONEY, "amount")


def format_money(value: Decimal) -> str:
    return f"{value.quantize(CENT, rounding=ROUND_HALF_EVEN):f}"


def parse_percent(value: Any) -> Decimal:
    if isinstance(value, bool | float | int):
        raise ValueError('percent must be a string like "1.90", not a JSON number')
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("percent must be finite")
        text = f"{value:f}"
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError('percent must be a string like "1.90"')
    if not _PERCENT.fullmatch(text):
        raise ValueError(
            'percent must be a decimal string of ASCII digits like "1.90" (at most four '
            f"fraction digits), got {text[:40]!r}"
        )
    result = Decimal(text)
    if result > 100:
        raise ValueError("percent must be between 0 and 100")
    return result


Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "examples": ["1190.00"]}),
]
SignedMoney = Annotated[
    Decimal,
    BeforeValidator(parse_signed_money),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": SIGNED_MONEY_PATTERN}),
]
Percent = Annotated[
    Decimal,
    BeforeValidator(parse_percent),
    PlainSerializer(lambda d: f"{d:f}", return_type=str),
    WithJsonSchema({"type": "string", "pattern": PERCENT_PATTERN, "examples": ["1.90"]}),
]


def quantize_cents(value: Decimal) -> Decimal:
    """Round to the cent, half to even (banker's rounding), as the contract's fee rule says."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def cents(value: Decimal) -> int:
    """Exact conversion; refuses amounts that are not whole cents rather than rounding them."""
    try:
        scaled = value.quantize(CENT)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {value!r}") from exc
    if scaled != value:
        raise ValueError(f"{value} is not a whole number of cents")
    return int(scaled * 100)


def from_cents(value: int) -> Decimal:
    return (Decimal(value) / 100).quantize(CENT)
