"""Dead letters an operator acts on (issue 17), on real Kafka and MongoDB with the shipping
worker and the ``python -m shared.ops shipping dlq`` command run as a separate process, as an
operator would run it. What is asserted is what an operator and the platform observe: the
command's output and exit code, the ops store's documents, and the invoices and payouts on
Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from services.shipping.app import build_worker
from services.shipping.settings import ShippingSettings
from shared import topics
from shared.envelope import event_to_bytes, new_event
from shared.events import InvoiceIssued, PayoutInstructed
from shared.runtime.app import RetentionMismatch, Worker
from shared.runtime.engine import Batch
from tests import examples as ex
from tests.harness import Bus, headers_of
from tests.infra import Infra
from tests.private_broker import PrivateBroker, available

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class Operator:
    """Runs ``python -m shared.ops shipping dlq ...`` in its own process."""

    def __init__(
        self, infra: Infra, ops_database: str, name: str = "alice", kafka: str | None = None
    ) -> None:
        self.env = os.environ | {
            "MONGODB_URI": infra.mongodb_uri,
            "KAFKA_BOOTSTRAP_SERVERS": kafka or infra.kafka_bootstrap,
            "OPS_MONGODB_DATABASE": ops_database,
            "USER": name,
        }

    async def run(self, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.ops",
            "shipping",
            "dlq",
            *args,
            cwd=REPO,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout=120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def lines(self, *args: str) -> list[dict[str, Any]]:
        code, out, err = await self.run(*args)
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines() if line.strip()]


async def _until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (got := await probe()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return got


def _count(worker: Worker, outcome: str) -> float:
    value: float = worker.metrics.events.labels(
        "shipping", topics.ORDERS_SHIPPED, outcome
    )._value.get()
    return value


def _malformed_shipment(order_id: str, invoice: str, event_id: str) -> bytes:
    """An ``orders.shipped`` whose producer sent ``shipped_at`` without its zone."""
    event = new_event(
        ex.shipment(order_id, invoice, gross="500.00"),
        id=event_id,
        source="/erp",
        time=datetime.now(UTC),
    )
    raw = json.loads(event_to_bytes(event))
    raw["data"]["shipped_at"] = "2026-11-20T09:00:00"
    return json.dumps(raw).encode()


async def _approved(bus: Bus, order_ids: Iterable[str]) -> None:
    await bus.send(ex.merchant("m-1"))
    for order_id in order_ids:
        await bus.send(ex.order(order_id, gross="1190.00"))
        await bus.send(ex.decided(order_id))


def _break_handler(worker: Worker, broken: set[str]) -> None:
    """Shipping's handler raises for the event ids in ``broken`` (a bug in the consuming
    service), until the test empties the set (the fix is deployed)."""
    handle = worker.service.handle

    async def faulty(batch: Batch) -> None:
        if any(item.event.id in broken for item in batch.items):
            raise RuntimeError("bug: shipping cannot take this shipment")
        await handle(batch)

    worker.service.handle = faulty  # type: ignore[method-assign]


async def test_malformed_shipment_is_listed_shown_corrected_once_and_bad_commands_change_nothing(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]], infra: Infra, namespace: str
) -> None:
    """Acceptance 1 and 5. A malformed orders.shipped is dead-lettered; `dlq list` shows it
    pending with its error, `dlq show` its bytes, key, source and error. Bad commands (unknown
    id, a correction that is not JSON, one failing the contract, one not confirmed) exit
    non-zero with a clear message and change neither the ops store nor Kafka. The good
    correction yields one invoice and one payout; replaying it and correcting it a second
    time yield nothing more: the worker takes both as duplicates, and what it re-publishes
    carries the same event ids and the same payout id."""
    worker = await run_worker(build_worker, ShippingSettings, dead_letter_refresh_seconds=0.5)
    ops = Operator(infra, f"{namespace}_ops")
    store = mongo[f"{namespace}_ops"]["dead_letters"]
    await _approved(bus, ["o-1"])
    await bus.send_raw(
        topics.ORDERS_SHIPPED, _malformed_shipment("o-1", "INV-1", "ev-ship-1"), key=b"o-1"
    )
    await _until(lambda: store.find_one({"event_id": "ev-ship-1"}), "the dead letter stored")

    listed = await ops.lines("list")
    assert listed[-1]["summary"] == {"pending": 1, "replayed": 0, "corrected": 0, "discarded": 0}
    (line,) = listed[:-1]
    assert (line["state"], line["topic"], line["kind"], line["key"]) == (
        "pending",
        topics.ORDERS_SHIPPED,
        "schema",
        "o-1",
    )
    assert "shipped_at" in line["error"] and "\n" not in line["error"]
    dead_id = line["id"]

    code, out, err = await ops.run("show", dead_id)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["value"]["id"] == "ev-ship-1"
    assert shown["value"]["data"]["shipped_at"] == "2026-11-20T09:00:00"
    assert shown["source"]["topic"] == bus.topic(topics.ORDERS_SHIPPED)
    assert isinstance(shown["source"]["offset"], int)
    assert "shipped_at" in shown["error"] and shown["kind"] == "schema"
    assert [h["action"] for h in shown["history"]] == ["dead_lettered"]

    # Acceptance 5: bad input gets a clear error, an exit code, and changes nothing.
    before = await store.find_one({"_id": dead_id})
    sent_before = len(await bus.records(topics.ORDERS_SHIPPED, until=lambda r: len(r) >= 1))
    code, _, err = await ops.run("show", "shipping:no/0/0")
    assert code == 1 and "no dead letter 'shipping:no/0/0'" in err
    code, _, err = await ops.run("replay", "shipping:no/0/0")
    assert code == 1 and "no dead letter" in err
    not_json = Path(os.environ.get("TMPDIR", "/tmp")) / f"{namespace}-bad.json"
    not_json.write_text('{"id": "ev-ship-1", "data": {')
    code, _, err = await ops.run("correct", dead_id, "--file", str(not_json), "--reason", "r")
    assert code == 2 and "is not valid JSON" in err and "nothing was sent" in err
    code, _, err = await ops.run(
        "correct", dead_id, "--set", "data.shipped_at=yesterday", "--reason", "r", "--yes"
    )
    assert code == 2 and "fails the contract of orders.shipped" in err and "shipped_at" in err
    code, out, err = await ops.run(
        "correct", dead_id, "--set", "data.shipped_at=2026-11-20T09:00:00Z", "--reason", "r",
        stdin=b"n\n",
    )  # fmt: skip
    assert code == 1 and "not confirmed" in err
    assert '-    "shipped_at": "2026-11-20T09:00:00"' in out  # the diff was shown
    code, _, err = await ops.run("discard", dead_id)
    assert code == 2 and "--reason" in err  # argparse: the reason is required
    assert await store.find_one({"_id": dead_id}) == before
    after = await bus.records(topics.ORDERS_SHIPPED, until=lambda r: len(r) >= 1, settle=0.5)
    assert len(after) == sent_before

    # The correction: diff shown, sent with the original id and key, handled once.
    code, out, err = await ops.run(
        "correct", dead_id, "--set", "data.shipped_at=2026-11-20T09:00:00Z",
        "--reason", "ERP sent a local time", "--operator", "bob", stdin=b"y\n",
    )  # fmt: skip
    assert code == 0, err
    assert '+    "shipped_at": "2026-11-20T09:00:00Z"' in out
    invoices = await bus.events(topics.INVOICES_ISSUED, count=1)
    payouts = await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)
    assert isinstance(invoices[0].data, InvoiceIssued)
    assert isinstance(payouts[0].data, PayoutInstructed)
    assert payouts[0].data.invoice_number == "INV-1"
    replayed = [
        r
        for r in await bus.records(topics.ORDERS_SHIPPED, until=lambda r: len(r) >= 2)
        if headers_of(r).get("dlq-replay-of") == dead_id
    ]
    assert len(replayed) == 1 and replayed[0].key == b"o-1"
    assert json.loads(replayed[0].value)["id"] == "ev-ship-1"
    assert headers_of(replayed[0])["dlq-replay-by"] == "bob"

    # Again, and corrected a second time: both are the same event to shipping's inbox.
    code, _, err = await ops.run("replay", dead_id)
    assert code == 0, err
    code, _, err = await ops.run(
        "correct", dead_id, "--set", "data.shipped_at=2026-11-20T10:00:00Z",
        "--reason", "second thoughts", "--yes",
    )  # fmt: skip
    assert code == 0, err
    await _until(lambda: asyncio.sleep(0, _count(worker, "duplicate") == 2), "two duplicates")
    # A duplicate re-publishes what the first handling caused, under the same event ids
    # (the runtime's guarantee, so a crash before publishing loses nothing): still one
    # invoice and one payout to anyone downstream.
    again = await bus.events(topics.INVOICES_ISSUED, settle=1.0)
    assert {e.id for e in again} == {invoices[0].id}
    paid = await bus.events(topics.PAYOUTS_INSTRUCTED)
    assert {e.id for e in paid} == {payouts[0].id}
    assert {e.data.payout_id for e in paid if isinstance(e.data, PayoutInstructed)} == {
        payouts[0].data.payout_id
    }

    doc = await store.find_one({"_id": dead_id})
    assert doc is not None and doc["state"] == "corrected"
    history = [(h["action"], h["by"], h.get("reason")) for h in doc["history"]]
    assert history == [
        ("dead_lettered", "shipping", None),
        ("corrected", "bob", "ERP sent a local time"),
        ("replayed", "alice", None),
        ("corrected", "alice", "second thoughts"),
    ]
    assert '"shipped_at": "2026-11-20T09:00:00Z"' in doc["history"][1]["diff"]
    assert isinstance(doc["history"][1]["at"], datetime)
    assert "lease" not in doc
    # The operators' actions as counters, read back from the ops store by the worker.
    actions: dict[tuple[str, str], int] = worker.metrics.dead_letter_actions.values

    def counted() -> bool:
        return actions.get(("shipping", "corrected")) == 2 and (
            actions.get(("shipping", "replayed")) == 1
        )

    await _until(lambda: asyncio.sleep(0, counted()), f"the action counters, got {actions}")


async def test_replay_after_a_fix_acts_while_the_cause_persists_it_dead_letters_again(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]], infra: Infra, namespace: str
) -> None:
    """Acceptance 1, the handler's side. A shipment shipping's handler raises on is
    dead-lettered (kind processing). Replayed unchanged while the bug is there, it is
    dead-lettered again: the ops store holds both, the new one naming the old one. Replayed
    unchanged after the fix (by a filter), it yields its invoice and payout; a discarded dead
    letter matching the same filter is not sent."""
    worker = await run_worker(build_worker, ShippingSettings)
    broken = {"ev-bug"}
    _break_handler(worker, broken)
    ops = Operator(infra, f"{namespace}_ops")
    store = mongo[f"{namespace}_ops"]["dead_letters"]
    await _approved(bus, ["o-2"])
    await bus.send(ex.shipment("o-2", "INV-2", gross="500.00"), event_id="ev-bug")
    first = await _until(lambda: store.find_one({"event_id": "ev-bug"}), "the dead letter")
    assert (first["kind"], first["state"]) == ("processing", "pending")
    assert "bug: shipping cannot take this shipment" in first["error"]

    await bus.send_raw(topics.ORDERS_SHIPPED, b"not json at all", key=b"o-2")
    junk = await _until(lambda: store.find_one({"kind": "json"}), "the junk dead letter")
    code, _, err = await ops.run("discard", junk["_id"], "--reason", "a test record")
    assert code == 0, err

    code, _, err = await ops.run("replay", first["_id"])  # the bug is still there
    assert code == 0, err
    second = await _until(
        lambda: store.find_one({"replay_of": first["_id"]}), "the second dead letter"
    )
    assert (second["kind"], second["state"], second["event_id"]) == (
        "processing",
        "pending",
        "ev-bug",
    )
    old = await store.find_one({"_id": first["_id"]})
    assert old is not None
    assert (old["state"], old["dead_lettered_again"]) == ("replayed", [second["_id"]])

    broken.clear()  # the fix is deployed
    lines = await ops.lines("replay", "--all-pending", "--topic", topics.ORDERS_SHIPPED)
    assert [line["replayed"] for line in lines if "replayed" in line] == [second["_id"]]
    await bus.events(topics.INVOICES_ISSUED, count=1)
    payouts = await bus.events(topics.PAYOUTS_INSTRUCTED, count=1, settle=1.0)
    assert len(payouts) == 1
    assert _count(worker, "duplicate") == 0  # the dead-lettered event was never handled
    discarded = await store.find_one({"_id": junk["_id"]})
    assert discarded is not None and discarded["state"] == "discarded"
    assert [h["action"] for h in discarded["history"]] == ["dead_lettered", "discarded"]
    code, _, err = await ops.run("replay", junk["_id"])
    assert code == 1 and "is discarded" in err
    # Nothing but the first shipment, the junk and two replays ever reached orders.shipped.
    shipped = await bus.records(topics.ORDERS_SHIPPED, until=lambda r: len(r) >= 4, settle=0.5)
    assert len(shipped) == 4


async def test_two_operators_replaying_the_same_set_at_once_act_once(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]], infra: Infra, namespace: str
) -> None:
    """Acceptance 2. Six shipments dead-lettered by a handler bug; after the fix two
    operators run `dlq replay --all-pending` at the same moment, in two processes. Each
    shipment yields exactly one invoice and one payout, and every dead letter ends replayed."""
    worker = await run_worker(build_worker, ShippingSettings)
    orders = [f"o-{n}" for n in range(6)]
    broken = {f"ev-{o}" for o in orders}
    _break_handler(worker, broken)
    store = mongo[f"{namespace}_ops"]["dead_letters"]
    await _approved(bus, orders)
    for order_id in orders:
        await bus.send(
            ex.shipment(order_id, f"INV-{order_id}", "500.00"), event_id=f"ev-{order_id}"
        )

    async def all_stored() -> bool:
        return await store.count_documents({"state": "pending"}) == len(orders)

    await _until(all_stored, "six dead letters")
    broken.clear()

    alice, bob = (
        Operator(infra, f"{namespace}_ops", "alice"),
        Operator(infra, f"{namespace}_ops", "bob"),
    )
    results = await asyncio.gather(
        alice.lines("replay", "--all-pending"), bob.lines("replay", "--all-pending")
    )
    replayed = sum(lines[-1]["summary"]["replayed"] for lines in results)
    assert replayed >= len(orders)  # each at least once; a lease may let both send one

    payouts = await bus.events(topics.PAYOUTS_INSTRUCTED, count=len(orders), settle=2.0)
    invoices = await bus.events(topics.INVOICES_ISSUED, count=len(orders))
    assert sorted(p.data.order_id for p in payouts if isinstance(p.data, PayoutInstructed)) == (
        sorted(orders)
    )
    assert sorted(i.data.order_id for i in invoices if isinstance(i.data, InvoiceIssued)) == (
        sorted(orders)
    )
    assert await store.count_documents({"state": "replayed"}) == len(orders)
    assert await store.count_documents({"lease": {"$exists": True}}) == 0


@pytest.mark.skipif(not available(), reason="no Kafka jars/java for a private broker")
async def test_a_dead_letter_kafka_deleted_is_still_pending_with_its_bytes(
    tmp_path: Path, mongo: AsyncMongoClient[dict[str, Any]], infra: Infra, namespace: str
) -> None:
    """Acceptance 3, on a private broker that applies retention every second. The dead-letter
    topic keeps records for one second: a worker with the documented minimum (1 day) refuses
    to start; one allowed to start dead-letters a malformed shipment, Kafka deletes it from
    the topic (its log start offset passes it), and `dlq list` and `dlq show` still have it
    pending with its bytes; the pending gauge counts it."""
    broker = PrivateBroker(
        tmp_path / "kafka", properties={"log.retention.check.interval.ms": "1000"}
    )
    await asyncio.to_thread(broker.format)
    await asyncio.to_thread(broker.start)
    prefix = f"{namespace}."
    dlq = topics.dlq_topic(prefix + topics.ORDERS_SHIPPED)
    bus = Bus(broker.bootstrap, prefix)
    worker: Worker | None = None
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        short = {"retention.ms": "1000", "segment.ms": "1000"}
        await admin.create_topics([NewTopic(dlq, 1, 1, topic_configs=short)])
        await admin.close()
        settings = ShippingSettings(
            kafka_bootstrap_servers=broker.bootstrap,
            mongodb_uri=infra.mongodb_uri,
            topic_prefix=prefix,
            mongodb_database=f"{namespace}_shipping",
            ops_mongodb_database=f"{namespace}_ops",
            batch_timeout_ms=10,
            lag_refresh_seconds=0.5,
            dead_letter_refresh_seconds=0.5,
        )
        with pytest.raises(RetentionMismatch, match="dead-letter topics keep records"):
            await build_worker(settings).start()

        worker = build_worker(settings.model_copy(update={"dlq_min_retention_days": 0}))
        await worker.start()
        await bus.start()
        await bus.send_raw(
            topics.ORDERS_SHIPPED, _malformed_shipment("o-9", "INV-9", "ev-9"), key=b"o-9"
        )
        store = mongo[f"{namespace}_ops"]["dead_letters"]
        await _until(lambda: store.find_one({"event_id": "ev-9"}), "the dead letter stored")

        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:

            async def deleted() -> bool:
                partition = TopicPartition(dlq, 0)
                end: int = (await consumer.end_offsets([partition]))[partition]
                start: int = (await consumer.beginning_offsets([partition]))[partition]
                return end >= 1 and start >= 1  # the one record written, then deleted

            await _until(deleted, "Kafka to delete the dead letter", timeout=180)
        finally:
            await consumer.stop()

        ops = Operator(infra, f"{namespace}_ops", kafka=broker.bootstrap)
        listed = await ops.lines("list", "--state", "pending")
        assert [(line["state"], line["event_id"]) for line in listed[:-1]] == [("pending", "ev-9")]
        code, out, err = await ops.run("show", listed[0]["id"])
        assert code == 0, err
        assert json.loads(out)["value"]["data"]["order_id"] == "o-9"
        gauge = worker.metrics.dead_letters_pending.labels(
            "shipping", topics.ORDERS_SHIPPED, "schema"
        )
        await _until(lambda: asyncio.sleep(0, gauge._value.get() == 1), "the pending gauge")
    finally:
        await bus.stop()
        if worker is not None:
            await asyncio.wait_for(worker.stop(), timeout=15)
        await asyncio.to_thread(broker.stop)
        for name in (f"{namespace}_shipping", f"{namespace}_ops"):
            await mongo.drop_database(name)


async def test_sync_copies_dead_letters_an_older_worker_left_on_the_topic_once(
    bus: Bus, mongo: AsyncMongoClient[dict[str, Any]], infra: Infra, namespace: str
) -> None:
    """`dlq sync` backfills the ops store from <topic>.dlq: a record a worker dead-lettered
    before it wrote to the ops store (put on the topic here with the worker's dlq-* headers)
    shows up in `dlq list` with its error and original bytes; another service's dead letter
    on the same topic does not; a second sync adds nothing."""
    ops = Operator(infra, f"{namespace}_ops")
    value = _malformed_shipment("o-7", "INV-7", "ev-7")
    source = bus.topic(topics.ORDERS_SHIPPED)

    def headers(group: str, offset: int) -> list[tuple[str, bytes]]:
        return [
            ("ce_type", b"orders.shipped"),
            ("dlq-error-kind", b"schema"),
            ("dlq-error", b"data.shipped_at: no zone"),
            ("dlq-source-topic", source.encode()),
            ("dlq-source-partition", b"0"),
            ("dlq-source-offset", str(offset).encode()),
            ("dlq-consumer-group", group.encode()),
        ]

    dlq = topics.dlq_topic(topics.ORDERS_SHIPPED)
    await bus.send_raw(dlq, value, key=b"o-7", headers=headers("shipping", 3))
    await bus.send_raw(dlq, value, key=b"o-7", headers=headers("risk", 3))
    try:
        synced = await ops.lines(
            "sync", "--topic", topics.ORDERS_SHIPPED, "--topic-prefix", bus.prefix
        )
        assert synced[-1]["summary"] == {"read": 2, "added": 1}
        again = await ops.lines("sync", "--topic-prefix", bus.prefix)
        assert again[-1]["summary"] == {"read": 2, "added": 0}
        listed = await ops.lines("list")
        assert [(line["id"], line["kind"], line["error"]) for line in listed[:-1]] == [
            (f"shipping:{source}/0/3", "schema", "data.shipped_at: no zone")
        ]
        code, out, err = await ops.run("show", listed[0]["id"])
        assert code == 0, err
        shown = json.loads(out)
        assert (shown["value"]["id"], shown["topic"], shown["headers"]) == (
            "ev-7",
            topics.ORDERS_SHIPPED,
            {"ce_type": "orders.shipped"},
        )
    finally:
        await mongo.drop_database(f"{namespace}_ops")
