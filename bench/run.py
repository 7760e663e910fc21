"""Benchmark: each service's worker against the ceiling of a bare aiokafka relay, in one run.

    make bench                       # both services; or: python -m bench.run --orders 20000
    python -m bench.run --service shipping --orders 5000 --json docs/bench/shipping.json

For each service, after one warm-up of the ceiling that is not counted, ``--repeat`` rounds
(default 3) on the same broker and database, each round:

1. ceiling: a bare aiokafka consume -> produce -> commit loop over the same N input records,
   preloaded on fresh topics; rate = N / (its last acknowledgement - its first batch);
2. throughput: a fresh worker *process* starts, consumes the reference data it needs, then N
   inputs are queued while it runs (risk: orders; shipping: captures of approved orders);
   rate = N / (last output - first input), by record timestamps, so the first batch's work
   counts (queueing runs at 20k-50k records/s, far above any worker, so it adds little);
3. latency: with that worker caught up, inputs at a steady rate below capacity (default
   15,000 at 500/s: 30 s); each one's latency is its output's record timestamp minus its own
   record timestamp. Reported per round and over every round's inputs together ("pooled"):
   a p99 is the 1 % worst, and in a short window a single stall of a few batches is that
   1 % (the 30th worst of 3,000 records), so the pooled figure is the one to judge by.

The ceiling and the worker alternate (C W C W …), so a machine that speeds up or slows down
during the run moves both. Reports every round, the medians with their min-max spread, and the
ratio worker / ceiling per round, so figures compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
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
from tests import recon_examples as rx
from tests.harness import Bus

COMPANIES = 1000


@dataclass
class Round:
    ceiling_records_per_s: float
    per_s: float
    ratio_to_ceiling: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float


@dataclass
class Report:
    service: str
    unit: str  # what the rate counts: decisions, captures
    orders: int
    rounds: list[Round]
    ceiling_median_records_per_s: float
    per_s_median: float
    per_s_min: float
    per_s_max: float
    ratio_median: float
    latency_orders: int
    latency_rate_per_s: float
    latency_p50_ms_median: float
    latency_p99_ms_median: float
    latency_p99_ms_max: float
    # Over every round's latency inputs together.
    latency_p50_ms_pooled: float
    latency_p99_ms_pooled: float
    batch_max_records: int
    machine: str
    rate_counts_from: str = "first input record to last output record"
    worker_commit: str = ""  # the commit the worker's code came from


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


def reconciliation_scenario() -> Scenario:
    """One debtor (VIBAN) per transfer, its invoice issued beforehand; each transfer names
    its invoice and pays it in full: one payments.allocated (and one invoices.settled) each."""

    def viban(tag: str, i: int) -> str:
        return f"DE00BENCH{tag}{i:012d}"

    def reference(n: int, m: int) -> list[EventData]:
        out: list[EventData] = [ex.merchant("m-1")]
        for tag, count in (("t", n), ("l", m)):
            for i in range(count):
                out.append(rx.decided(f"{tag}-{i}", viban(tag, i)))
                out.append(rx.invoice(f"{tag}-{i}", f"INV-{tag}-{i}", "119.00", viban(tag, i)))
        return out

    def transfers(tag: str, count: int) -> list[EventData]:
        return [
            rx.transfer(f"tx-{tag}-{i}", viban(tag, i), "119.00", f"Rechnung INV-{tag}-{i}")
            for i in range(count)
        ]

    return Scenario(
        service="reconciliation",
        unit="transactions",
        input_topic=topics.BANK_TRANSACTIONS,
        output_topic=topics.PAYMENTS_ALLOCATED,
        reference_topics=(
            topics.MERCHANTS_CONFIGURED,
            topics.ORDERS_DECIDED,
            topics.INVOICES_ISSUED,
        ),
        reference=reference,
        inputs=transfers,
    )


SCENARIOS = {
    "risk": risk_scenario,
    "shipping": shipping_scenario,
    "reconciliation": reconciliation_scenario,
}


async def measure_ceiling(
    kafka: str, prefix: str, backlog: list[tuple[bytes, bytes]], batch: int
) -> float:
    """One bare-relay run on fresh topics over the preloaded backlog: what consume -> produce
    -> commit alone can do on this broker, from its first batch to its last acknowledgement."""
    source, sink = f"{prefix}in", f"{prefix}out"
    await preload(kafka, source, backlog)
    result = await bare_relay(kafka, source, sink, len(backlog), max_records=batch)
    return result.per_second


async def measure_worker(
    scenario: Scenario, args: argparse.Namespace, kafka: str, mongo: str, run_id: str
) -> tuple[float, list[int]]:
    """A fresh worker process on fresh topics: (rate, each latency input's latency in ms)."""
    name = scenario.service
    prefix = f"bench{run_id}{name}."
    n, m = args.orders, args.latency_orders
    backlog = encoded(scenario.inputs("t", n))
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
        code_dir=args.worker_checkout,
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
        queued = await read_timestamps(kafka, prefix + scenario.input_topic, n, wait_seconds=120)
        rate = n / max((max(stamps.values()) - min(queued.values())) / 1000, 1e-3)
        print(f"{name}: {rate:,.0f} {scenario.unit}/s in one worker process", flush=True)

        # Latency at a steady rate below capacity.
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
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(f"latency at {args.rate}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
        return rate, latencies
    finally:
        await bus.stop()
        fleet.stop_all()
        await clean_up(mongo, f"bench{run_id}_{name}")


async def measure(scenario: Scenario, args: argparse.Namespace) -> Report:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    mongo = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
    name = scenario.service
    n = args.orders
    run_id = time.strftime("%Y%m%d%H%M%S")
    print(f"bench {name}: {n} {scenario.unit} x {args.repeat} rounds, run {run_id}", flush=True)
    backlog = encoded(scenario.inputs("t", n))
    # The first relay on a broker pays for topic creation, connections and the JIT of the
    # broker's hot paths: measured and thrown away.
    warm = await measure_ceiling(kafka, f"bench{run_id}{name}.warmup.", backlog, args.batch)
    print(f"ceiling warm-up (not counted): {warm:,.0f} records/s", flush=True)
    rounds: list[Round] = []
    pooled: list[int] = []
    for r in range(1, args.repeat + 1):
        ceiling = await measure_ceiling(
            kafka, f"bench{run_id}{name}.ceiling{r}.", backlog, args.batch
        )
        print(f"round {r}: ceiling {ceiling:,.0f} records/s", flush=True)
        rate, latencies = await measure_worker(scenario, args, kafka, mongo, f"{run_id}r{r}")
        pooled += latencies
        rounds.append(
            Round(
                round(ceiling, 1),
                round(rate, 1),
                round(rate / ceiling, 3),
                percentile(latencies, 0.5),
                percentile(latencies, 0.99),
                float(max(latencies)),
            )
        )
    pooled.sort()
    rates = [x.per_s for x in rounds]
    return Report(
        service=name,
        unit=scenario.unit,
        orders=n,
        rounds=rounds,
        ceiling_median_records_per_s=statistics.median(x.ceiling_records_per_s for x in rounds),
        per_s_median=statistics.median(rates),
        per_s_min=min(rates),
        per_s_max=max(rates),
        ratio_median=statistics.median(x.ratio_to_ceiling for x in rounds),
        latency_orders=args.latency_orders,
        latency_rate_per_s=args.rate,
        latency_p50_ms_median=statistics.median(x.latency_p50_ms for x in rounds),
        latency_p99_ms_median=statistics.median(x.latency_p99_ms for x in rounds),
        latency_p99_ms_max=max(x.latency_p99_ms for x in rounds),
        latency_p50_ms_pooled=percentile(pooled, 0.5),
        latency_p99_ms_pooled=percentile(pooled, 0.99),
        batch_max_records=args.batch,
        machine=f"{os.cpu_count()} cores, python {sys.version.split()[0]}",
        worker_commit=commit_of(args.worker_checkout),
    )


def percentile(ordered: list[int], q: float) -> float:
    """The value at or below which a fraction ``q`` of ``ordered`` (sorted ascending) lies: the
    nearest-rank percentile, an observed latency rather than an interpolated one."""
    if not ordered:
        raise ValueError("no latencies to take a percentile of")
    rank = math.ceil(q * len(ordered))
    return float(ordered[max(rank, 1) - 1])


def commit_of(checkout: Path) -> str:
    found = subprocess.run(
        ["git", "-C", str(checkout), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description="service workers vs. bare aiokafka ceiling")
    parser.add_argument(
        "--service", choices=[*SCENARIOS, "all"], default="all", help="which worker to measure"
    )
    parser.add_argument("--orders", type=int, default=20000, help="inputs in the backlog")
    parser.add_argument(
        "--latency-orders", type=int, default=15000, help="inputs per round at --rate"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="inputs/s for latency")
    parser.add_argument("--batch", type=int, default=2000, help="max records per batch")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of ceiling then worker, alternating"
    )
    parser.add_argument(
        "--worker-checkout",
        type=Path,
        default=REPO,
        help="run the worker from this checkout (e.g. a worktree of an older commit) under "
        "this harness, for a before/after comparison",
    )
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
