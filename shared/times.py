"""Times and dates on the wire, exactly as the contract says: RFC 3339 strings with a zone,
and ``YYYY-MM-DD`` dates.

pydantic's own ``datetime`` and ``date`` are lenient on purpose: they take Unix numbers
(seconds or milliseconds, as JSON numbers or numeric strings), times without seconds and any
script's digits. None of that is the contract, so the wire text is matched here against the
RFC 3339 grammar in ASCII, and only then turned into a ``datetime``. Python callers may still
pass ``datetime``/``date`` objects.

- ``date-time = full-date "T" full-time`` with seconds; ``T`` and ``Z`` may be lower case
  (RFC 3339 section 5.6, note); the offset is ``Z`` or ``+HH:MM``/``-HH:MM``.
- Fractional seconds: 1 to 9 digits (nanoseconds, as Java's ``Instant`` writes them); Python
  keeps microseconds, so digits beyond the sixth are dropped.
- A leap second (``:60``) cannot be represented by Python and is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, WithJsonSchema

DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_date_time(value: Any) -> datetime:
    """An RFC 3339 date-time string with a zone (or an aware ``datetime``) as a ``datetime``."""
    if isinstance(value, datetime):
        return value  # AwareDatetime, which runs next, refuses a naive one
    if not isinstance(value, str):
        raise ValueError(
            "a time must be an RFC 3339 string with a zone like "
            f'"2026-11-20T09:15:00Z", not {type(value).__name__} {_shown(value)}'
        )
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        raise ValueError(
            "a time must be an RFC 3339 string with seconds and a zone like "
            f'"2026-11-20T09:15:00Z" or "2026-11-20T10:15:00.5+01:00", got {_shown(value)}'
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if second == "60":
        raise ValueError(f"leap seconds cannot be represented, got {_shown(value)}")
    if zulu:
        zone = UTC
    else:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(f"the zone offset is out of range in {_shown(value)}")
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(-offset if sign == "-" else offset)
    micro = int((fraction or "").ljust(6, "0")[:6])
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, zone
        )
    except ValueError as exc:
        raise ValueError(f"not a valid time: {_shown(value)} ({exc})") from None


def parse_date(value: Any) -> date:
    """A ``YYYY-MM-DD`` string (or a ``date``, not a ``datetime``) as a ``date``."""
    if isinstance(value, datetime):
        raise ValueError("a date must be a date, not a datetime")
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError(
            f'a date must be a string like "2026-11-20", not {type(value).__name__} {_shown(value)}'
        )
    match = _DATE.fullmatch(value)
    if match is None:
        raise ValueError(f'a date must be a string like "2026-11-20", got {_shown(value)}')
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError as exc:
        raise ValueError(f"not a valid date: {_shown(value)} ({exc})") from None


Rfc3339Time = Annotated[
    AwareDatetime,
    BeforeValidator(parse_date_time),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": DATE_TIME_PATTERN,
            "examples": ["2026-11-20T09:15:00Z"],
        }
    ),
]
IsoDate = Annotated[
    date,
    BeforeValidator(parse_date),
    WithJsonSchema(
        {"type": "string", "format": "date", "pattern": DATE_PATTERN, "examples": ["2026-11-20"]}
    ),
]
