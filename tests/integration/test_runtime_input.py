"""Bad input never stops, freezes or skips anything (real Kafka and MongoDB): a record the
decoder cannot take, whatever it raises, a record too large to dead-letter whole, and an
event whose output is too large to publish each end as one dead letter, while the valid
events around them are handled, in the same run and after a restart."""

from __future__ import annotations

from typing import Any

import pytest

from shared import topics
from shared.envelope import parse_event
from shared.events import OrderCanceled
from shared.runtime import engine as engine_module
from shared.runtime.settings import WorkerSettings
from tests.harness import Bus, headers_of
from tests.integration.toy import build_toy, effects

pytestmark = pytest.mark.integration

# Just under the broker's default limit (message.max.bytes 1048588, the client's
# max_request_size 1048576): it can be produced, but not copied with the dead-letter headers.
NEAR_LIMIT = 1_048_576 - 600
NESTED = b"[" * 10_000 + b"]" * 10_000  # json.loads would raise RecursionError, not ValueError
WEIRD = b'{"weird": true}'  # the decoder is made to raise RuntimeError on it (monkeypatch)
# max_record_bytes for this test's workers: small, so that a valid event can answer with a
# record too large to publish (the real limit, 1,000,000, is above anything the bounded
# contract lets an event cause).
OUTPUT_LIMIT = 1300


async def _send_round(bus: Bus, tag: str) -> list[str]:
    """Valid orders around four kinds of bad input; returns the valid order ids."""
    valid = [f"{tag}-{i}" for i in range(10)]
    await bus.send_many([OrderCanceled(order_id=o) for o in valid[:5]])
    await bus.send_raw(topics.ORDERS_CANCELED, NESTED, key=f"{tag}-nested".encode())
    await bus.send_raw(topics.ORDERS_CANCELED, WEIRD, key=f"{tag}-weird".encode())
    await bus.send_raw(topics.ORDERS_CANCELED, b"x" * NEAR_LIMIT, key=f"{tag}-huge".encode())
    # Valid (the contract bounds ids to 128 characters), but its answer repeats the id five
    # times (key, subject, order id, a reason of three): about 1,700 bytes, over the
    # OUTPUT_LIMIT the workers of this test run with (the other answers are about 1,000).
    await bus.send(OrderCanceled(order_id=tag + "o" * 120, reason="big"))
    await bus.send_many([OrderCanceled(order_id=o) for o in valid[5:]])
    return valid


async def test_bad_records_are_dead_lettered_alone_also_across_a_restart(
    bus: Bus, run_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rounds of ten valid cancels around four bad records, the second round queued while
    the worker is stopped: a record nested 10,000 deep (refused by the decoder's depth bound),
    one on which the decoder raises something that is no contract error at all, one just under
    the broker's limit (too large to dead-letter whole) and a valid one whose answer is too
    large to publish. Each round: every valid cancel answered once, each bad record one dead
    letter, the worker never stops."""

    def decoder_that_breaks_on_weird(topic: str, value: bytes) -> Any:
        if value == WEIRD:
            raise RuntimeError("the decoder itself failed")
        return parse_event(topic, value)

    monkeypatch.setattr(engine_module, "parse_event", decoder_that_breaks_on_weird)
    worker = await run_worker(build_toy, WorkerSettings, max_record_bytes=OUTPUT_LIMIT)
    first = await _send_round(bus, "a")
    await bus.events(topics.COMMANDS_REJECTED, count=len(first), timeout=60)
    dead = await bus.records(
        topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 4, timeout=60
    )
    assert len(dead) == 4
    assert await effects(worker) == dict.fromkeys(first, 1)

    by_key = {(r.key or b"").decode()[:8]: r for r in dead}
    assert set(by_key) == {"a-nested", "a-weird", "a-huge", "a" + "o" * 7}
    nested = headers_of(by_key["a-nested"])
    assert by_key["a-nested"].value == NESTED  # small enough: the original bytes
    assert nested["dlq-error-kind"] == "json" and "nest" in nested["dlq-error"]
    weird = headers_of(by_key["a-weird"])
    assert weird["dlq-error-kind"] == "undecodable"
    assert "RuntimeError: the decoder itself failed" in weird["dlq-error"]
    too_large_output = headers_of(by_key["a" + "o" * 7])
    assert too_large_output["dlq-error-kind"] == "processing"
    assert "RecordTooLarge" in too_large_output["dlq-error"]
    # The near-limit record goes out truncated, pointing at its full bytes in MongoDB.
    huge = by_key["a-huge"]
    huge_headers = headers_of(huge)
    assert huge_headers["dlq-error-kind"] == "json"
    assert huge_headers["dlq-truncated"] == "true"
    assert len(huge.value) < NEAR_LIMIT
    database, reference = huge_headers["dlq-full-record"].split(".dead_letter_bodies/", 1)
    assert database == worker.db.name
    kept = await worker.db["dead_letter_bodies"].find_one({"_id": reference})
    assert kept is not None and kept["value"] == b"x" * NEAR_LIMIT
    assert reference == (
        f"{huge_headers['dlq-source-topic']}/{huge_headers['dlq-source-partition']}"
        f"/{huge_headers['dlq-source-offset']}"
    )
    assert worker.fatal is None

    # Restart with more bad input waiting: nothing is skipped, nothing freezes.
    await worker.stop()
    second = await _send_round(bus, "b")
    again = await run_worker(build_toy, WorkerSettings, max_record_bytes=OUTPUT_LIMIT)
    await bus.events(topics.COMMANDS_REJECTED, count=len(first) + len(second), timeout=60)
    dead = await bus.records(
        topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 8, timeout=60
    )
    assert len(dead) == 8
    assert await effects(again) == dict.fromkeys(first + second, 1)
    assert again.fatal is None
