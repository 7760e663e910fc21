"""What a log pipeline reads from a worker process: every line the process writes to its
stdout and stderr (here both into one file, as a container runtime collects them) is one
JSON object with a level, a timestamp and the logger's name, the libraries' lines
(uvicorn, FastStream, aiokafka) included; no ANSI escape anywhere; no IBAN or person's
name in clear, even in the dead-letter lines of records that carried them."""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from scripts.processes import Fleet, Process
from shared import topics
from shared.envelope import event_key, event_to_bytes, new_event
from shared.topics import dlq_topic
from tests import examples as ex
from tests.harness import T0, Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# Personal data fed to the worker that must never appear in its log.
MERCHANT_IBAN = "DE89370400440532013000"
MERCHANT_NAME = "Erika Mustermann Werkzeuge"
DEBTOR_NAME = "Hildegard Kowalski Maschinenbau"
IN_CLEAR = (
    MERCHANT_IBAN,
    "DE89 3704 0044 0532 0130 00",
    "370400440532",
    MERCHANT_NAME,
    DEBTOR_NAME,
    "Mustermann",
    "Kowalski",
)
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "MONGODB_URI": infra.mongodb_uri,
            "TOPIC_PREFIX": f"{namespace}.",
            "RISK_MONGODB_DATABASE": f"{namespace}_risk",
            "RISK_BATCH_TIMEOUT_MS": "5",
            # The most a worker ever says: FastStream's per-message lines and aiokafka's
            # internals are DEBUG; all of it must be as readable as the project's own lines.
            "LOG_LEVEL": "DEBUG",
        },
        log_dir=tmp_path / "logs",
    )
    yield fleet
    fleet.stop_all()


def parsed_lines(process: Process) -> list[dict[str, Any]]:
    """Every line the process wrote, each parsed as one JSON object that carries a level,
    an ISO 8601 UTC timestamp and a logger name; fails naming the first line that is not."""
    raw = process.log_path.read_bytes()
    assert b"\x1b" not in raw, f"{process.name}: ANSI escape in the log"
    entries = []
    for number, line in enumerate(raw.decode().splitlines(), start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"{process.name} line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), f"line {number}: {line!r}"
        assert isinstance(entry.get("level"), str) and entry["level"], f"line {number}: {line!r}"
        assert isinstance(entry.get("logger"), str) and entry["logger"], f"line {number}: {line!r}"
        assert ISO_UTC.match(str(entry.get("timestamp"))), f"line {number}: {line!r}"
        assert isinstance(entry.get("event"), str), f"line {number}: {line!r}"
        entries.append(entry)
    assert entries, f"{process.name} wrote nothing"
    return entries


def port_of(process: Process) -> int:
    assert process.http_port is not None
    return process.http_port


def loggers_of(entries: list[dict[str, Any]]) -> set[str]:
    return {str(e["logger"]) for e in entries}


async def test_every_line_a_worker_writes_is_json_without_personal_data(
    bus: Bus, fleet: Fleet
) -> None:
    """A risk worker at DEBUG gets valid events, one it rejects, two records the contract
    refuses (each carrying a name and an IBAN), HTTP requests and a request that is not
    HTTP, then SIGTERM. Every line of its output parses as JSON with level, timestamp and
    logger; uvicorn, FastStream, aiokafka and the worker each wrote some; the two dead
    letters are warnings naming topic and kind; no name or IBAN is in the file."""
    worker = fleet.start_worker("risk")
    worker.wait_ready()

    await bus.send(ex.merchant("m-1", name=MERCHANT_NAME, payout_iban=MERCHANT_IBAN))
    registered = ex.company("c-1", name=DEBTOR_NAME)
    await bus.send(registered)
    await bus.send(ex.order("o-good", debtor=ex.debtor_of(registered)))
    # Rejected by the worker: a commands.rejected, never a crash.
    await bus.send(ex.order("o-usd", debtor=ex.debtor_of(registered), currency="USD"))
    # Two records the contract refuses, both carrying personal data: a merchant whose fee
    # percent is not a number, and a truncated order.
    bad_merchant = new_event(
        ex.merchant("m-2", name=MERCHANT_NAME, payout_iban=MERCHANT_IBAN),
        id="bad-merchant",
        source="/tests",
        time=T0,
    )
    bad_merchant_json = json.loads(event_to_bytes(bad_merchant))
    bad_merchant_json["data"]["fee"]["percent"] = "1.9%"
    await bus.send_raw(
        topics.MERCHANTS_CONFIGURED,
        json.dumps(bad_merchant_json).encode(),
        key=event_key(bad_merchant),
    )
    await bus.send_raw(
        topics.ORDERS_REQUESTED,
        f'{{"data": {{"debtor": {{"name": "{DEBTOR_NAME}", "iban": "{MERCHANT_IBAN}"'.encode(),
        key=b"o-truncated",
    )

    await bus.events(topics.ORDERS_DECIDED, count=1, timeout=60)
    await bus.events(topics.COMMANDS_REJECTED, count=1, timeout=60)
    for topic in (topics.MERCHANTS_CONFIGURED, topics.ORDERS_REQUESTED):
        letters = await bus.records(dlq_topic(topic), until=lambda r: len(r) >= 1, timeout=60)
        assert len(letters) == 1, topic
    for path, status in (("/metrics", 200), ("/readyz", 200), ("/healthz", 200)):
        assert worker.get(path)[0] == status, path
    assert worker.get("/no-such-path")[0] == 404
    with socket.create_connection(("127.0.0.1", port_of(worker)), timeout=5) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn warns about it
        conn.recv(1024)

    # uvicorn stops gracefully, then re-raises the signal it caught.
    assert worker.stop() in (0, -signal.SIGTERM)
    entries = parsed_lines(worker)

    # The libraries spoke, through the same renderer (not silenced to pass the test).
    names = loggers_of(entries)
    assert any(n.startswith("uvicorn") for n in names), names
    assert any(e["logger"].startswith("uvicorn") and e["level"] == "warning" for e in entries), (
        "no warning from uvicorn about the request that was not HTTP"
    )
    assert any(n.startswith("faststream") for n in names), names
    assert any(n.startswith("aiokafka") for n in names), names
    assert "worker" in names, names
    dead_lettered = [e for e in entries if e["event"] == "dead_lettered"]
    assert {(e["level"], e["topic"], e["kind"]) for e in dead_lettered} == {
        ("warning", topics.MERCHANTS_CONFIGURED, "schema"),
        ("warning", topics.ORDERS_REQUESTED, "json"),
    }
    text = worker.log_path.read_text()
    for secret in IN_CLEAR:
        assert secret not in text, f"{secret!r} in the worker's log"


async def test_every_line_the_ticker_writes_is_json(bus: Bus, fleet: Fleet) -> None:
    """The ticker at DEBUG publishes two ticks and stops on SIGTERM (its own handler: exit
    0); every line it wrote is JSON, from its start line to its stop line, aiokafka's too."""
    ticker = fleet.start_ticker(0.2)
    ticks = await bus.events(topics.CLOCK_TICKS, count=2, timeout=60)
    assert all(isinstance(t.time, datetime) for t in ticks)
    assert ticker.stop() == 0
    entries = parsed_lines(ticker)
    events = [e["event"] for e in entries if e["logger"] == "ticker"]
    assert events[0] == "ticker_started" and events[-1] == "ticker_stopped", events
    assert any(n.startswith("aiokafka") for n in loggers_of(entries)), loggers_of(entries)
