"""One log line per record, as one JSON object, whoever logs it; personal data masked.

The project's loggers (structlog) and every library's (uvicorn, FastStream, aiokafka, pymongo:
stdlib ``logging``) end in one handler on the root logger whose structlog
``ProcessorFormatter`` renders each record the same way: ``timestamp`` (ISO 8601, UTC),
``level``, ``logger``, ``event``, the bound or ``extra`` fields, and an exception as a
structured ``exception`` field instead of a multi-line traceback. Only when the stream is a
terminal is the line rendered for a human (and coloured); in a file or a pipe it is JSON,
and no ANSI escape reaches it, not even inside a message that carried one.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

# Two letters, two check digits, then 11-30 alphanumerics, optionally grouped by spaces.
_IBAN = re.compile(r"\b([A-Z]{2}\d{2})((?:\s?[A-Z0-9]){7,26}?)((?:\s?[A-Z0-9]){4})\b")
# Fields of the contract that hold a person's or company's name, an account or free text
# written by a payer.
_SENSITIVE_KEYS = frozenset(
    {
        "debtor_name",
        "name",
        "iban",
        "payout_iban",
        "debtor_iban",
        "creditor_iban",
        "remittance_information",
        "reviewer",
    }
)
# pydantic puts the offending input into str(ValidationError): "[type=..., input_value=...,
# input_type=...]". Raised inside a handler, that input can be a whole debtor.
_PYDANTIC_INPUT = re.compile(r"input_value=.*?, input_type=", re.DOTALL)
# Any escape sequence (CSI colour codes and the rest), and a lone ESC.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])?")
# uvicorn passes a coloured copy of some messages as ``extra``; the plain one is the event.
_DROPPED_EXTRAS = ("color_message",)
# A sensitive field's value inside text that quotes a record or a document as JSON or as a
# Python repr: '"name": "Anna"' or "'name': 'Anna'".
_SENSITIVE_IN_TEXT = re.compile(
    r"""(["'])(""" + "|".join(sorted(_SENSITIVE_KEYS)) + r""")\1(\s*:\s*)(["'])(?:\\.|(?!\4).)*\4"""
)
# Loggers that quote whole payloads at DEBUG: pymongo's command log (the documents written
# and read) and aiokafka's producer ("Sending (key=... value=...)"). Personal data by
# construction, so they are held at INFO whatever the level.
_PAYLOAD_LOGGERS = ("pymongo.command", "aiokafka.producer.producer")


class _ProjectHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one root handler configure_logging installs (and replaces when called again)."""


def mask_iban(text: str) -> str:
    """Keep the country code and the last four characters: enough to tell accounts apart in
    an incident, too little to use one."""
    return _IBAN.sub(lambda m: f"{m.group(1)[:2]}**…{m.group(3).replace(' ', '')}", text)


def clean_text(text: str) -> str:
    """What of a free-text string may be logged: no escape sequences, no input values quoted
    by a validation error, no sensitive field's value where the text quotes a record, and
    IBANs masked."""
    text = _ANSI.sub("", text)
    text = _PYDANTIC_INPUT.sub("input_value=***, input_type=", text)
    text = _SENSITIVE_IN_TEXT.sub(r"\1\2\1\3\4***\4", text)
    return mask_iban(text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {k: ("***" if k in _SENSITIVE_KEYS else _mask_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in _DROPPED_EXTRAS:
        event_dict.pop(key, None)
    for key in list(event_dict):
        event_dict[key] = "***" if key in _SENSITIVE_KEYS else _mask_value(event_dict[key])
    return event_dict


# The fields every line gets, whether structlog or a library's stdlib logger made it.
_ADDED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _formatter(for_terminal: bool) -> structlog.stdlib.ProcessorFormatter:
    exception: Processor
    renderer: Processor
    if for_terminal:
        exception = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        # Locals would put whatever a frame held (an event, a debtor) into the log.
        exception = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer()
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_ADDED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            exception,
            mask_personal_data,  # after the exception is rendered: its message is text too
            renderer,
        ],
    )


def _route_to_root(logger: logging.Logger) -> None:
    """A library logger that prints by itself (FastStream's, with its colour formatter)
    hands its records to the root handler instead. A printer is a plain StreamHandler, as
    libraries and ``basicConfig`` install them; subclasses (a test runner's capture, ours)
    stay."""
    printing = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    for handler in printing:
        logger.removeHandler(handler)
    if printing and logger is not logging.getLogger():
        # Only then: a logger silenced on purpose (uvicorn's access log when it is off)
        # stays silent.
        logger.propagate = True


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("uncaught").critical("uncaught_exception", exc_info=(kind, value, traceback))


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger of the process through one renderer writing to ``stream``
    (stdout by default). Safe to call again: the previous handler is replaced."""
    out = stream if stream is not None else sys.stdout
    numeric = logging.getLevelNamesMapping()[level.upper()]
    isatty = getattr(out, "isatty", None)
    handler = _ProjectHandler(out)
    handler.setFormatter(_formatter(for_terminal=bool(isatty and isatty())))

    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _ProjectHandler)]:
        root.removeHandler(previous)
    _route_to_root(root)
    root.addHandler(handler)
    # The level of every logger that does not set its own. FastStream sets its lifecycle
    # logger to INFO: "app shut down gracefully" is written even at WARNING, as before.
    root.setLevel(numeric)
    for existing in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(existing, logging.Logger):
            _route_to_root(existing)
    for name in _PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    logging.captureWarnings(True)  # warnings.warn would otherwise print plain text to stderr
    sys.excepthook = _log_uncaught

    structlog.configure(
        processors=[*_ADDED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Not cached: a logger used once would keep the processors and level of that moment,
        # and a later configure_logging (another worker in the same process, a test capturing
        # events) would not reach it. Workers log per batch, not per event: the lookup is noise.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
