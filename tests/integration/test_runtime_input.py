"""Bad input never stops, freezes or skips anything (real Kafka and MongoDB): a record the
decoder cannot take, whatever it raises, a record too large to dead-letter whole, and an
event whose output is too large to publish each end as one dead letter, while the valid
events around them are handled, in the same run and after a restart."""

from __future__ import annotations

from typing import Any

import pytest

from shared import topics
from shared.events import OrderCanceled
from shared.runtime.settings import WorkerSettings
from tests.harness import Bus, headers_of
from tests.integration.toy import build_toy, effects

pytestmark = pytest.mark.integration

# Just under the broker's default limit (message.max.bytes 1048588, the client's
# max_request_size 1048576): it can be produced, but not copied with the dead-letter headers.
NEAR_LIMIT = 1_048_576 - 600
NESTED = b"[" * 10_000 + b"]" * 10_000  # raises RecursionError in json.loads, not ValueError


async def _send_round(bus: Bus, tag: str) -> list[str]:
    """Valid orders around the three kinds of bad input; returns the valid order ids."""
    valid = [f"{tag}-{i}" for i in range(10)]
    await bus.send_many([OrderCanceled(order_id=o) for o in valid[:5]])
    await bus.send_raw(topics.ORDERS_CANCELED, NESTED, key=f"{tag}-nested".encode())
    await bus.send_raw(topics.ORDERS_CANCELED, b"x" * NEAR_LIMIT, key=f"{tag}-huge".encode())
    # Valid (750 kB with its key), but its answer repeats the 250,000-character id five
    # times (key, subject, order id, a reason of three): 1.25 MB.
    await bus.send(OrderCanceled(order_id=tag + "o" * 250_000, reason="big"))
    await bus.send_many([OrderCanceled(order_id=o) for o in valid[5:]])
    return valid


async def test_bad_records_are_dead_lettered_alone_also_across_a_restart(
    bus: Bus, run_worker: Any
) -> None:
    worker = await run_worker(build_toy, WorkerSettings)
    first = await _send_round(bus, "a")
    await bus.events(topics.COMMANDS_REJECTED, count=len(first), timeout=60)
    dead = await bus.records(
        topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 3, timeout=60
    )
    assert len(dead) == 3
    assert await effects(worker) == dict.fromkeys(first, 1)

    by_kind = {headers_of(r)["dlq-error-kind"]: r for r in dead}
    assert set(by_kind) == {"undecodable", "json", "processing"}
    assert by_kind["undecodable"].value == NESTED  # small enough: the original bytes
    assert "RecursionError" in headers_of(by_kind["undecodable"])["dlq-error"]
    assert "RecordTooLarge" in headers_of(by_kind["processing"])["dlq-error"]
    # The near-limit record goes out truncated, pointing at its full bytes in MongoDB.
    huge = by_kind["json"]
    huge_headers = headers_of(huge)
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
    again = await run_worker(build_toy, WorkerSettings)
    await bus.events(topics.COMMANDS_REJECTED, count=len(first) + len(second), timeout=60)
    dead = await bus.records(
        topics.dlq_topic(topics.ORDERS_CANCELED), until=lambda r: len(r) >= 6, timeout=60
    )
    assert len(dead) == 6
    assert await effects(again) == dict.fromkeys(first + second, 1)
    assert again.fatal is None
