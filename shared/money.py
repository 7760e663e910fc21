"""Money on the wire: a JSON string with exactly two fraction digits, never a float.

In Python it is a ``Decimal``; in MongoDB the services store integer cents. Every rounding
is explicit and half-even (``quantize_cents``).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
_MONEY = re.compile(r"^\d+\.\d{2}$")
_SIGNED_MONEY = re.compile(r"^-?\d+\.\d{2}$")
_PERCENT = re.compile(r"^\d{1,3}(\.\d{1,4})?$")


def _parse(value: Any, pattern: re.Pattern[str], what: str) -> Decimal:
    if isinstance(value, bool | float | int):
        raise ValueError(f'{what} must be a string like "1190.00", not a JSON number')
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.quantize(CENT):
            raise ValueError(f"{what} must have at most two fraction digits")
        text = f"{value.quantize(CENT):f}"
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f'{what} must be a string like "1190.00"')
    if not pattern.fullmatch(text):
        raise ValueError(
            f"{what} must be a non-negative decimal string with exactly two fraction digits, "
            f"got {text!r}"
            if pattern is _MONEY
            else f"{what} must be a decimal string with exactly two fraction digits, got {text!r}"
        )
    return Decimal(text)


def parse_money(value: Any) -> Decimal:
    return _parse(value, _MONEY, "amount")


def parse_signed_money(value: Any) -> Decimal:
    return _parse(value, _SIGNED_MONEY, "amount")


def format_money(value: Decimal) -> str:
    return f"{value.quantize(CENT, rounding=ROUND_HALF_EVEN):f}"


def _parse_percent(value: Any) -> Decimal:
    if isinstance(value, bool | float | int):
        raise ValueError('percent must be a string like "1.90", not a JSON number')
    text = f"{value:f}" if isinstance(value, Decimal) else value
    if not isinstance(text, str) or not _PERCENT.fullmatch(text):
        raise ValueError(f'percent must be a decimal string like "1.90", got {value!r}')
    result = Decimal(text)
    if result > 100:
        raise ValueError("percent must be between 0 and 100")
    return result


Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _MONEY.pattern, "examples": ["1190.00"]}),
]
SignedMoney = Annotated[
    Decimal,
    BeforeValidator(parse_signed_money),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _SIGNED_MONEY.pattern}),
]
Percent = Annotated[
    Decimal,
    BeforeValidator(_parse_percent),
    PlainSerializer(lambda d: f"{d:f}", return_type=str),
    WithJsonSchema({"type": "string", "pattern": _PERCENT.pattern, "examples": ["1.90"]}),
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
