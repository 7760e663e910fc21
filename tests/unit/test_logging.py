from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import BaseModel, Field, ValidationError

from shared.runtime.logging import configure_logging, get_logger, mask_iban, mask_personal_data
from tests.infra import REPO

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


def test_ibans_are_masked_anywhere_in_a_log_line() -> None:
    line = mask_iban("paid to DE89370400440532013000 from DE89 3704 0044 0532 0130 00")
    assert "370400440532" not in line and "3704 0044" not in line
    assert "3000" in line  # the last four remain, to tell accounts apart


def test_names_and_iban_fields_are_hidden() -> None:
    event = mask_personal_data(
        None,
        "info",
        {"debtor_name": "Anna Schmidt", "viban": "DE92100110010000000001", "order_id": "o-1"},
    )
    assert event["debtor_name"] == "***"
    assert "1001" not in str(event["viban"])[:-4]
    assert event["order_id"] == "o-1"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the tests after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    hook = sys.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
    sys.excepthook = hook
    logging.captureWarnings(False)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line one JSON object with the keys a log pipeline indexes on."""
    entries = [json.loads(line) for line in text.splitlines()]
    for entry in entries:
        assert {"timestamp", "level", "logger", "event"} <= entry.keys(), entry
        assert ISO_UTC.match(entry["timestamp"]), entry
    return entries


@pytest.mark.usefixtures("restore_logging")
def test_project_and_library_records_are_one_json_object_per_line() -> None:
    """The project's structlog logger and stdlib loggers as uvicorn and aiokafka use them
    write to the same stream, each record one JSON line with level, timestamp and logger;
    a traceback becomes a structured field, ANSI codes in a message are removed."""
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    get_logger("test.project").warning("dead_lettered", topic="orders.requested", offset=3)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("aiokafka.consumer").info("\x1b[32mJoined\x1b[0m group %s", "g")
    try:
        raise RuntimeError("broker gone")
    except RuntimeError:
        logging.getLogger("faststream.access.kafka").exception("handler failed")
    logging.getLogger("aiokafka.conn").debug("below the level: not written")

    text = out.getvalue()
    assert "\x1b" not in text
    entries = json_lines(text)
    assert [(e["logger"], e["level"], e["event"]) for e in entries] == [
        ("test.project", "warning", "dead_lettered"),
        ("uvicorn.error", "info", "Started server process [42]"),
        ("aiokafka.consumer", "info", "Joined group g"),
        ("faststream.access.kafka", "error", "handler failed"),
    ]
    assert entries[0]["topic"] == "orders.requested" and entries[0]["offset"] == 3
    (raised,) = entries[3]["exception"]
    assert raised["exc_type"] == "RuntimeError" and raised["exc_value"] == "broker gone"
    assert raised["frames"] and all("locals" not in f for f in raised["frames"])


@pytest.mark.usefixtures("restore_logging")
def test_on_a_terminal_lines_are_for_humans() -> None:
    """Only a stream that is a terminal gets the human rendering (colours allowed)."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    configure_logging("INFO", stream=out)
    get_logger("test.tty").info("worker_ready", service="risk")
    line = out.getvalue()
    assert "worker_ready" in line and "service" in line and "risk" in line
    assert not line.startswith("{")  # not the JSON a pipeline gets
    assert "\x1b[" in line  # coloured


class _Debtor(BaseModel):
    name: str = Field(max_length=5)


@pytest.mark.usefixtures("restore_logging")
def test_personal_data_never_reaches_the_log_even_quoted_in_text() -> None:
    """Names and IBANs quoted inside messages and exceptions: a pydantic error's
    ``input_value``, a record's JSON in a library's message, an exception string; and the
    library loggers that print whole payloads at DEBUG stay quiet even at DEBUG."""
    out = io.StringIO()
    configure_logging("DEBUG", stream=out)
    log = get_logger("test.personal")
    try:
        _Debtor(name="Anna Schmidt")
    except ValidationError as exc:
        log.warning("dead_lettered", error=f"{type(exc).__name__}: {exc}")
        logging.getLogger("faststream").error("failed", exc_info=exc)
    record = b'{"data": {"name": "Anna Schmidt", "payout_iban": "DE89370400440532013000"}}'
    logging.getLogger("aiokafka.consumer.fetcher").debug("got %r", record)
    logging.getLogger("aiokafka.producer.producer").debug("Sending (value=%s)", record)
    logging.getLogger("pymongo.command").debug('{"document": {"name": "Anna Schmidt"}}')
    log.info("reviewed", reviewer="ops-anna", debtor_iban="DE89 3704 0044 0532 0130 00")

    text = out.getvalue()
    for secret in ("Anna", "Schmidt", "370400440532", "3704 0044", "ops-anna"):
        assert secret not in text, secret
    entries = json_lines(text)
    assert [e["logger"] for e in entries] == [
        "test.personal",
        "faststream",
        "aiokafka.consumer.fetcher",
        "test.personal",
    ]
    assert "input_value=***" in entries[0]["error"]
    assert '"name": "***"' in entries[2]["event"]
    assert entries[3]["reviewer"] == "***" and entries[3]["debtor_iban"] == "***"


def test_a_process_writes_nothing_but_json_lines() -> None:
    """A real interpreter with FastStream imported (its logger prints in colour by itself),
    uvicorn's coloured ``extra``, a Python warning and an uncaught exception: stdout holds
    only JSON lines, stderr nothing."""
    script = textwrap.dedent(
        """
        import logging, warnings
        import faststream  # noqa: F401  (installs FastStream's own coloured handler)
        from shared.runtime.logging import configure_logging
        configure_logging("INFO")
        logging.getLogger("faststream").info("FastStream app starting...")
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on %s", "http://x", extra={"color_message": "\\x1b[1mx\\x1b[0m"}
        )
        warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)
        raise SystemError("the end")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == b""
    assert b"\x1b" not in done.stdout
    entries = json_lines(done.stdout.decode())
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("faststream", "info"),
        ("uvicorn.error", "info"),
        ("py.warnings", "warning"),
        ("uncaught", "critical"),
    ]
    assert "color_message" not in entries[1]
    assert entries[3]["exception"][0]["exc_type"] == "SystemError"
