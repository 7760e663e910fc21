"""JSON with exact decimal numbers, for Billit's API (which writes amounts as JSON numbers).

``json`` would turn ``Decimal("10.02")`` into a float on the way out and ``10.02`` into a float
on the way in. Here a ``Decimal`` is written as the number it is, digit for digit, and every
JSON number with a fraction or exponent is read back as a ``Decimal``: no float ever holds money.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def dumps(value: Any) -> bytes:
    return "".join(_encode(value)).encode()


def loads(data: bytes | str) -> Any:
    """Raises ``ValueError`` (``json.JSONDecodeError``) on anything that is not JSON."""
    return json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _encode(value: Any) -> list[str]:
    if value is None or isinstance(value, bool | str):
        return [json.dumps(value)]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, float):
        raise TypeError("refusing to write a float: use Decimal for amounts")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return [f"{value:f}"]
    if isinstance(value, datetime | date):
        return [json.dumps(value.isoformat())]
    if isinstance(value, Mapping):
        parts = ["{"]
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, got {key!r}")
            parts.extend([("," if index else ""), json.dumps(key), ":", *_encode(item)])
        parts.append("}")
        return parts
    if isinstance(value, Sequence):
        parts = ["["]
        for index, item in enumerate(value):
            parts.extend([("," if index else ""), *_encode(item)])
        parts.append("]")
        return parts
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
