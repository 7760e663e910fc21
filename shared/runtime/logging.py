"""Structured JSON logs with personal data masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Two letters, two check digits, then 11-30 alphanumerics, optionally grouped by spaces.
_IBAN = re.compile(r"\b([A-Z]{2}\d{2})((?:\s?[A-Z0-9]){7,26}?)((?:\s?[A-Z0-9]){4})\b")
_SENSITIVE_KEYS = frozenset({"debtor_name", "name", "iban", "payout_iban", "debtor_iban"})


def mask_iban(text: str) -> str:
    """Keep the country code and the last four characters: enough to tell accounts apart in
    an incident, too little to use one."""
    return _IBAN.sub(lambda m: f"{m.group(1)[:2]}**…{m.group(3).replace(' ', '')}", text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_iban(value)
    if isinstance(value, dict):
        return {k: ("***" if k in _SENSITIVE_KEYS else _mask_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = "***" if key in _SENSITIVE_KEYS else _mask_value(event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_personal_data,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
