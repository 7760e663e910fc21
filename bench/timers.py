"""Timers and jobs benchmarks on real Kafka and MongoDB (preliminary on a shared machine).

    python -m bench.timers tick   --scheduled 1000000   # a tick over 1M timers, none due
    python -m bench.timers drain  --due 100000 --workers 1 2
    python -m bench.timers jobs   --jobs 2000 --delay 0.05 --concurrency 16

``tick``: the cost, in the worker, of one ``clock.tick`` batch (decode, transaction with the
inbox, ``fire_due`` over the due-time index) while 1M timers are scheduled in the future;
measured through the worker's engine without Kafka in the way, plus ``fire_due`` alone.
``drain``: toy worker processes (tests/timer_toy.py) act on N timers that fall due at once; a
tick every 0.2 s; from the first tick to the last act. ``jobs``: the job toy
(tests/job_toy.py) in process against a local HTTP server answering after ``delay``; from
the moment N due jobs are inserted to the last success. Each writes docs/bench/timers-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from scripts.processes import REPO, Fleet, Process, free_port
from shared.runtime.engine import RawRecord
from shared.runtime.jobs import Jobs
from shared.runtime.ticker import tick_event_bytes
from shared.runtime.timers import Timers
from tests.harness import Bus
from tests.job_toy import JobToySettings, build_job_toy
from tests.timer_toy import TimerToySettings, build_timer_toy

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
RESULTS = REPO / "docs" / "bench"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"timers-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {path.relative_to(REPO)}")


async def insert_timers(db: Any, count: int, due_at: Any) -> float:
    started = time.perf_counter()
    for start in range(0, count, 10_000):
        ops = [
            Timers.schedule_op(action="act", entity=f"e-{i}", key=f"e-{i}", due_at=due_at(i))
            for i in range(start, min(count, start + 10_000))
        ]
        await db["timers"].bulk_write(ops, ordered=False)
    return time.perf_counter() - started


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_s": round(statistics.median(ordered), 4),
        "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 4),
        "max_s": round(ordered[-1], 4),
    }


async def bench_tick(scheduled: int, ticks: int) -> None:
    stamp = uuid.uuid4().hex[:8]
    settings = TimerToySettings(
        kafka_bootstrap_servers=KAFKA,
        mongodb_uri=MONGO,
        mongodb_database=f"bench_timers_{stamp}",
        topic_prefix=f"bench{stamp}.",
    )
    worker = build_timer_toy(settings)
    service = worker.service
    assert isinstance(service.timers, Timers)  # type: ignore[attr-defined]
    try:
        await worker.engine.setup()
        # Spread over the next year: none due at the ticks below.
        inserted = await insert_timers(
            worker.db, scheduled, lambda i: T0 + timedelta(days=1, seconds=i % (365 * 86400))
        )
        engine_samples, fire_samples = [], []
        for n in range(ticks):
            now = T0 + timedelta(seconds=n)
            key, value = tick_event_bytes(now)
            record = RawRecord(settings.topic_prefix + "clock.ticks", 0, n, key, value)
            started = time.perf_counter()
            outputs = await worker.engine.store_batch([record])
            engine_samples.append(time.perf_counter() - started)
            assert outputs == []
            async with worker.mongo.start_session() as session:
                started = time.perf_counter()
                fired = await service.timers.fire_due(session, now)  # type: ignore[attr-defined]
                fire_samples.append(time.perf_counter() - started)
            assert fired == []
        count = await worker.db["timers"].count_documents({})
        save(
            "tick",
            {
                "scheduled_timers": count,
                "none_due": True,
                "insert_s": round(inserted, 1),
                "ticks": ticks,
                "tick_batch_in_worker": quantiles(engine_samples),
                "fire_due_alone": quantiles(fire_samples),
                "at": datetime.now(UTC).isoformat(),
            },
        )
    finally:
        await worker.mongo.drop_database(settings.mongodb_database)
        await worker.mongo.close()


async def create_topics(prefix: str, names: list[str]) -> None:
    """As a deployment would, before the workers start."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(prefix + name, num_partitions=4, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


async def wait_listening(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the HTTP double did not start"
            await asyncio.sleep(0.1)


def start_toy(fleet: Fleet, module: str, prefix: str, **env: str) -> Process:
    port = free_port()
    process = fleet._spawn(
        module.rsplit(".", 1)[-1],
        [sys.executable, "-m", module],
        {**fleet.env, f"{prefix}_HTTP_PORT": str(port), **env},
    )
    process.http_port = port
    process.wait_ready()
    return process


async def bench_drain(due: int, workers: int, fire_limit: int) -> dict[str, Any]:
    stamp = uuid.uuid4().hex[:8]
    database = f"bench_drain_{stamp}"
    prefix = f"bench{stamp}."
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "MONGODB_URI": MONGO,
            "TOPIC_PREFIX": prefix,
            "TIMERTOY_MONGODB_DATABASE": database,
            "TIMERTOY_BATCH_TIMEOUT_MS": "5",
            "TIMERTOY_FIRE_LIMIT": str(fire_limit),
            "LOG_LEVEL": "WARNING",
        },
        log_dir=Path(REPO, ".local", "bench", f"drain-{stamp}"),
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO, tz_aware=True)
    bus = Bus(KAFKA, prefix)
    await bus.start()
    try:
        # Before the workers: the first assignment spreads every partition.
        await create_topics(prefix, ["clock.ticks", "internal.timertoy.timer_fired"])
        for _ in range(workers):
            start_toy(fleet, "tests.timer_toy", "TIMERTOY")
        db = mongo[database]
        at = T0 + timedelta(minutes=1)
        await insert_timers(db, due, lambda i: at)
        started = time.monotonic()
        tick = 0
        while await db["effects"].count_documents({}) < due:
            tick += 1
            await bus.tick(at + timedelta(seconds=tick))
            await asyncio.sleep(0.2)
            assert time.monotonic() - started < 1800, "not drained"
        elapsed = time.monotonic() - started
        assert await db["effects"].count_documents({"count": 1}) == due
        return {
            "workers": workers,
            "due_at_once": due,
            "fire_limit_per_tick": fire_limit,
            "tick_interval_s": 0.2,
            "ticks": tick,
            "elapsed_s": round(elapsed, 1),
            "actions_per_s": round(due / elapsed),
        }
    finally:
        await bus.stop()
        fleet.stop_all()
        await mongo.drop_database(database)
        await mongo.close()


async def bench_jobs(count: int, delay: float, concurrency: int) -> None:
    stamp = uuid.uuid4().hex[:8]
    settings = JobToySettings(
        kafka_bootstrap_servers=KAFKA,
        mongodb_uri=MONGO,
        mongodb_database=f"bench_jobs_{stamp}",
        topic_prefix=f"bench{stamp}.",
        concurrency=concurrency,
        poll_seconds=0.05,
    )
    # The remote in a process of its own: in the worker's event loop it would take the
    # worker's CPU.
    port = free_port()
    remote = subprocess.Popen(  # noqa: ASYNC220 - once, before the measurement
        [sys.executable, "-m", "tests.http_double", "--port", str(port), "--delay", str(delay)],
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}/calls"
    await wait_listening(port)
    await create_topics(settings.topic_prefix, ["orders.canceled", "internal.jobtoy.job_finished"])
    worker = build_job_toy(settings)
    jobs = worker.service.jobs  # type: ignore[attr-defined]
    assert isinstance(jobs, Jobs)
    await worker.start()
    try:
        payload = {"method": "POST", "url": url, "json": {"bench": True}}
        ops = [
            jobs.enqueue_op(
                cause_id=f"bench-{i}",
                kind="notify",
                key=f"o-{i}",
                payload=payload,
                now=T0,
                not_before=T0,
            )
            for i in range(count)
        ]
        started = time.monotonic()
        await worker.db["jobs"].bulk_write(ops, ordered=False)
        while await worker.db["jobs"].count_documents({"state": "succeeded"}) < count:
            await asyncio.sleep(0.1)
            assert time.monotonic() - started < 600, "jobs not done"
        elapsed = time.monotonic() - started
        save(
            "jobs",
            {
                "jobs": count,
                "answer_time_s": delay,
                "concurrency_cap": concurrency,
                "elapsed_s": round(elapsed, 2),
                "jobs_per_s": round(count / elapsed, 1),
                "ceiling_jobs_per_s": round(concurrency / delay, 1),
                "calls_made": await worker.db["jobs"].count_documents({"attempts": 1}),
                "at": datetime.now(UTC).isoformat(),
            },
        )
    finally:
        await worker.stop()
        remote.terminate()
        remote.wait()
        cleanup: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO)
        await cleanup.drop_database(settings.mongodb_database)
        await cleanup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    tick = sub.add_parser("tick", help="one tick over many scheduled timers, none due")
    tick.add_argument("--scheduled", type=int, default=1_000_000)
    tick.add_argument("--ticks", type=int, default=30)
    drain = sub.add_parser("drain", help="many timers due at once, 1 and 2 worker processes")
    drain.add_argument("--due", type=int, default=100_000)
    drain.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    drain.add_argument("--fire-limit", type=int, default=5000)
    jobs = sub.add_parser("jobs", help="job executor throughput against a local HTTP server")
    jobs.add_argument("--jobs", type=int, default=2000)
    jobs.add_argument("--delay", type=float, default=0.05)
    jobs.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.what == "tick":
        asyncio.run(bench_tick(args.scheduled, args.ticks))
    elif args.what == "drain":

        async def both() -> None:
            runs = [await bench_drain(args.due, n, args.fire_limit) for n in args.workers]
            save("drain", {"runs": runs, "at": datetime.now(UTC).isoformat()})

        asyncio.run(both())
    else:
        asyncio.run(bench_jobs(args.jobs, args.delay, args.concurrency))


if __name__ == "__main__":
    main()
