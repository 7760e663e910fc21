"""Benchmark: the risk worker against the ceiling of a bare aiokafka relay, in one run.

    make bench                       # or: python -m bench.run --orders 20000
    python -m bench.run --orders 5000 --rate 1000 --json docs/bench/risk.json

Three measurements on the same broker and database, one after another:

1. ceiling: a bare aiokafka consume -> produce -> commit loop over N order records;
2. throughput: N orders are queued first, then one risk worker *process* starts and decides
   them; decisions/s = decisions / (last decision - first decision), by record timestamps;
3. latency: with the worker caught up, orders are sent at a steady rate below capacity and
   each decision's latency is its record timestamp minus its order's record timestamp.

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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

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
    orders: int
    ceiling_records_per_s: float
    risk_decisions_per_s: float
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


async def wait_consumed(
    bootstrap: str, group: str, topic_names: list[str], wait_seconds: float = 60
) -> None:
    """Until ``group`` has committed offsets at the end of every partition of the topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await probe.start()
    try:
        await probe.topics()  # fetches cluster metadata
        tps = [
            TopicPartition(t, p) for t in topic_names for p in probe.partitions_for_topic(t) or ()
        ]
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


async def measure(args: argparse.Namespace) -> Report:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    mongo = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
    run_id = time.strftime("%Y%m%d%H%M%S")
    prefix = f"bench{run_id}."
    n = args.orders

    print(f"bench: {n} orders, prefix {prefix!r}", flush=True)
    backlog = encoded(order_events("t", n))

    # 1. the ceiling: same records, a relay doing nothing with them.
    source, sink = f"{prefix}ceiling.in", f"{prefix}ceiling.out"
    await preload(kafka, source, backlog)
    ceiling = await bare_relay(kafka, source, sink, n, max_records=args.batch)
    print(f"ceiling: bare aiokafka relay {ceiling.per_second:,.0f} records/s", flush=True)

    # 2. throughput: queue everything, then start one worker process.
    bus = Bus(kafka, prefix)
    await bus.start()
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "MONGODB_URI": mongo,
            "TOPIC_PREFIX": prefix,
            "RISK_MONGODB_DATABASE": f"bench{run_id}_risk",
            "RISK_BATCH_MAX_RECORDS": str(args.batch),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        },
        log_dir=Path(REPO, ".local", "bench", run_id),
    )
    try:
        await bus.send(ex.merchant("m-bench"))
        for i in range(COMPANIES):
            await bus.send(company_for(i), wait=False)
        assert bus.producer is not None
        await bus.producer.flush()
        # Reference data first, consumed before the backlog arrives: otherwise one large fetch
        # may hold orders before their merchant, and those orders park until a clock tick.
        worker = fleet.start_worker("risk")
        worker.wait_ready()
        await wait_consumed(
            kafka,
            prefix + "risk",
            [prefix + topics.MERCHANTS_CONFIGURED, prefix + topics.COMPANIES_REGISTERED],
        )
        await preload(kafka, prefix + topics.ORDERS_REQUESTED, backlog)
        stamps = await read_timestamps(kafka, prefix + topics.ORDERS_DECIDED, n, wait_seconds=600)
        values = sorted(stamps.values())
        risk_rate = (len(values) - 1) / max((values[-1] - values[0]) / 1000, 1e-3)
        print(f"risk: {risk_rate:,.0f} decisions/s in one worker process", flush=True)

        # 3. latency at a steady rate below capacity.
        m = args.latency_orders
        live = order_events("l", m)
        sent_at: dict[bytes, int] = {}
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
            kafka, prefix + topics.ORDERS_REQUESTED, n + m, wait_seconds=120
        )
        outputs = await read_timestamps(
            kafka, prefix + topics.ORDERS_DECIDED, n + m, wait_seconds=300
        )
        for key in (d.key().encode() for d in live):
            sent_at[key] = inputs[key]
        latencies = sorted(outputs[k] - sent_at[k] for k in sent_at)
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"latency at {args.rate}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
    finally:
        await bus.stop()
        fleet.stop_all()

    return Report(
        orders=n,
        ceiling_records_per_s=round(ceiling.per_second, 1),
        risk_decisions_per_s=round(risk_rate, 1),
        ratio_to_ceiling=round(risk_rate / ceiling.per_second, 3),
        latency_orders=m,
        latency_rate_per_s=args.rate,
        latency_p50_ms=float(p50),
        latency_p99_ms=float(p99),
        latency_max_ms=float(latencies[-1]),
        batch_max_records=args.batch,
        machine=f"{os.cpu_count()} cores, python {sys.version.split()[0]}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="risk worker vs. bare aiokafka ceiling")
    parser.add_argument("--orders", type=int, default=20000, help="orders in the backlog")
    parser.add_argument("--latency-orders", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0, help="orders/s for latency")
    parser.add_argument("--batch", type=int, default=2000, help="max records per batch")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args()
    report = asyncio.run(measure(args))
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
