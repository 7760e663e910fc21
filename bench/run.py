"""Benchmark: each service's worker against the ceiling of a bare aiokafka relay, in one run.

    make bench                       # both services; or: python -m bench.run --orders 20000
    python -m bench.run --service shipping --orders 5000 --json docs/bench/shipping.json

For each service, three measurements on the same broker and database, one after another:

1. ceiling: a bare aiokafka consume -> produce -> commit loop over the same N input records;
2. throughput: one worker *process* starts, consumes the reference data it needs, then N
   inputs are queued (risk: orders; shipping: captures of approved orders); rate = outputs /
   (last output - first output), by record timestamps;
3. latency: with the worker caught up, inputs at a steady rate below capacity; each one's
   latency is its output's record timestamp minus its own record timestamp.

Reports ratios to the ceiling measured in the same run, so figures compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from bench.ceiling import bare_relay, preload
from scripts.processes import REPO, Fleet
from shared import topics
from shared.envelope import event_key, event_to_bytes, new_event
from shared.events import EventData
from tests import examples as ex
from tests.harness import Bus

COMPANIES = 1000


@dataclass
class Report:
    service: str
    unit: str  # what the rate counts: decisions, captures
    orders: int
    ceiling_records_per_s: float
    per_s: float
    ratio_to_ceiling: float
    latency_orders: int
    latency_rate_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    batch_max_records: int
    machine: str


def order_events(prefix: str, count: int) -> list[EventData]:
    return [
        ex.order(
            f"{prefix}-{i}",
            merchant_id="m-bench",
            gross="119.00",
            debtor=ex.debtor_of(company_for(i % COMPANIES)),
        )
        for i in range(count)
    ]


def company_for(i: int) -> Any:
    return ex.company(
        f"c-{i}",
        name=f"Bench Firma {i} GmbH",
        registration_number=f"HRB {100000 + i}",
        vat_id=None,
        financing_limit=Decimal("100000000.00"),
    )


def encoded(events: list[EventData]) -> list[tuple[bytes, bytes]]:
    out = []
    for data in events:
        event = new_event(data, id=str(uuid.uuid4()), source="/bench", time=datetime.now(UTC))
        out.append((event_key(event), event_to_bytes(event)))
    return out


async def read_timestamps(
    bootstrap: str, topic: str, expected: int, wait_seconds: float
) -> dict[bytes, int]:
    """Record key -> record timestamp (ms) of the first record per key, until ``expected``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + wait_seconds
        while not consumer.partitions_for_topic(topic):
            await consumer._client.force_metadata_update()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} never appeared")
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        stamps: dict[bytes, int] = {}
        last_report = time.monotonic()
        while len(stamps) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(stamps)} of {expected} records on {topic}")
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for r in records:
                    stamps.setdefault(r.key, r.timestamp)
            if time.monotonic() - last_report > 5:
                print(f"  … {len(stamps)}/{expected} on {topic}", flush=True)
                last_report = time.monotonic()
        return stamps
    finally:
        await consumer.stop()


async def clean_up(mongo: str, database: str) -> None:
    """Drop the run's database, so that repeated runs do not measure a MongoDB filling up
    with earlier runs' documents. (Its topics stay: deleting topics on this broker while the
    next run creates its own stalled that run's consumer once in four runs.)"""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


async def wait_consumed(
    bootstrap: str, group: str, topic_names: list[str], wait_seconds: float = 60
) -> None:
    """Until ``group`` has committed offsets at the end of every partition of the topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await probe.start()
    try:
        # (The probe's own metadata only knows topics it was asked about: an earlier version
        # read partitions from it, found none, and so never waited.)
        described = await admin.describe_topics(topic_names)
        tps = [
            TopicPartition(t["topic"], p["partition"])
            for t in described
            if t["error_code"] == 0
            for p in t["partitions"]
        ]
        missing = set(topic_names) - {tp.topic for tp in tps}
        if missing:
            raise RuntimeError(f"reference topics not found: {sorted(missing)}")
        ends = await probe.end_offsets(tps)
        deadline = time.monotonic() + wait_seconds
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            if all(tp in committed and committed[tp].offset >= ends[tp] for tp in tps if ends[tp]):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group} did not consume {topic_names}")
            await asyncio.sleep(0.2)
    finally:
        await probe.stop()
        await admin.close()


@dataclass(frozen=True)
class Scenario:
    """What one service's benchmark feeds and reads. Inputs and outputs are keyed by order id,
    so an output is matched to its input by record key."""

    service: str
    unit: str
    input_topic: str
    output_topic: str
    reference_topics: tuple[str, ...]
    # (throughput tag, latency tag, counts) -> reference events, consumed before any input
    reference: Callable[[int, int], list[EventData]]
    inputs: Callable[[str, int], list[EventData]]


def risk_scenario() -> Scenario:
    def reference(n: int, m: int) -> list[EventData]:
        return [ex.merchant("m-bench"), *(company_for(i) for i in range(COMPANIES))]

    return Scenario(
        service="risk",
        unit="decisions",
        input_topic=topics.ORDERS_REQUESTED,
        output_topic=topics.ORDERS_DECIDED,
        reference_topics=(topics.MERCHANTS_CONFIGURED, topics.COMPANIES_REGISTERED),
        reference=reference,
        inputs=order_events,
    )


def shipping_scenario() -> Scenario:
    def approved(tag: str, count: int) -> list[EventData]:
        out: list[EventData] = []
        for i in range(count):
            order_id = f"{tag}-{i}"
            out.append(ex.order(order_id, merchant_id="m-bench", gross="119.00"))
            out.append(ex.decided(order_id, merchant_id="m-bench"))
        return out

    def reference(n: int, m: int) -> list[EventData]:
        return [ex.merchant("m-bench"), *approved("t", n), *approved("l", m)]

    def captures(tag: str, count: int) -> list[EventData]:
        return [ex.shipment(f"{tag}-{i}", f"INV-{tag}-{i}", gross="119.00") for i in range(count)]

    return Scenario(
        service="shipping",
        unit="captures",
        input_topic=topics.ORDERS_SHIPPED,
        output_topic=topics.PAYOUTS_INSTRUCTED,
        reference_topics=(
            topics.MERCHANTS_CONFIGURED,
            topics.ORDERS_REQUESTED,
            topics.ORDERS_DECIDED,
        ),
        reference=reference,
        inputs=captures,
    )


SCENARIOS = {"risk": risk_scenario, "shipping": shipping_scenario}


async def measure(scenario: Scenario, args: argparse.Namespace) -> Report:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    mongo = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
    run_id = time.strftime("%Y%m%d%H%M%S")
    prefix = f"bench{run_id}{scenario.service}."
    n, m = args.orders, args.latency_orders
    name = scenario.service

    print(f"bench {name}: {n} {scenario.unit}, prefix {prefix!r}", flush=True)
    backlog = encoded(scenario.inputs("t", n))

    # 1. the ceiling: same records, a relay doing nothing with them.
    source, sink = f"{prefix}ceiling.in", f"{prefix}ceiling.out"
    await preload(kafka, source, backlog)
    ceiling = await bare_relay(kafka, source, sink, n, max_records=args.batch)
    print(f"ceiling: bare aiokafka relay {ceiling.per_second:,.0f} records/s", flush=True)

    # 2. throughput: reference data consumed first, then the backlog at once.
    bus = Bus(kafka, prefix)
    await bus.start()
    env_prefix = name.upper()
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "MONGODB_URI": mongo,
            "TOPIC_PREFIX": prefix,
            f"{env_prefix}_MONGODB_DATABASE": f"bench{run_id}_{name}",
            f"{env_prefix}_BATCH_MAX_RECORDS": str(args.batch),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        },
        log_dir=Path(REPO, ".local", "bench", run_id),
    )
    try:
        for data in scenario.reference(n, m):
            await bus.send(data, wait=False)
        assert bus.producer is not None
        await bus.producer.flush()
        # Reference data first, consumed before the backlog arrives: otherwise one large fetch
        # may hold inputs before what they refer to, and those park until a clock tick.
        worker = fleet.start_worker(name)
        worker.wait_ready()
        await wait_consumed(
            kafka, prefix + name, [prefix + t for t in scenario.reference_topics], 300
        )
        await preload(kafka, prefix + scenario.input_topic, backlog)
        stamps = await read_timestamps(kafka, prefix + scenario.output_topic, n, wait_seconds=600)
        values = sorted(stamps.values())
        rate = (len(values) - 1) / max((values[-1] - values[0]) / 1000, 1e-3)
        print(f"{name}: {rate:,.0f} {scenario.unit}/s in one worker process", flush=True)

        # 3. latency at a steady rate below capacity.
        live = scenario.inputs("l", m)
        interval = 1 / args.rate
        start = time.perf_counter()
        for i, data in enumerate(live):
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await bus.send(data, wait=False)
        await bus.producer.flush()
        inputs = await read_timestamps(
            kafka, prefix + scenario.input_topic, n + m, wait_seconds=120
        )
        outputs = await read_timestamps(
            kafka, prefix + scenario.output_topic, n + m, wait_seconds=300
        )
        sent_at = {key: inputs[key] for key in (d.key().encode() for d in live)}
        latencies = sorted(outputs[k] - sent_at[k] for k in sent_at)
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"latency at {args.rate}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
    finally:
        await bus.stop()
        fleet.stop_all()
        await clean_up(mongo, f"bench{run_id}_{name}")

    return Report(
        service=name,
        unit=scenario.unit,
        orders=n,
        ceiling_records_per_s=round(ceiling.per_second, 1),
        per_s=round(rate, 1),
        ratio_to_ceiling=round(rate / ceiling.per_second, 3),
        latency_orders=m,
        latency_rate_per_s=args.rate,
        latency_p50_ms=float(p50),
        latency_p99_ms=float(p99),
        latency_max_ms=float(latencies[-1]),
        batch_max_records=args.batch,
        machine=f"{os.cpu_count()} cores, python {sys.version.split()[0]}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="service workers vs. bare aiokafka ceiling")
    parser.add_argument(
        "--service", choices=[*SCENARIOS, "all"], default="all", help="which worker to measure"
    )
    parser.add_argument("--orders", type=int, default=20000, help="inputs in the backlog")
    parser.add_argument("--latency-orders", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0, help="inputs/s for latency")
    parser.add_argument("--batch", type=int, default=2000, help="max records per batch")
    parser.add_argument(
        "--json", type=Path, help="write the report here too (<service> in the name is replaced)"
    )
    args = parser.parse_args()
    services = list(SCENARIOS) if args.service == "all" else [args.service]
    for service in services:
        report = asyncio.run(measure(SCENARIOS[service](), args))
        text = json.dumps(asdict(report), indent=2)
        print(text)
        if args.json:
            path = Path(str(args.json).replace("<service>", service))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")


if __name__ == "__main__":
    main()
