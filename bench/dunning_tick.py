"""Dunning benchmarks on real MongoDB (and Kafka for ``due``); preliminary on a shared machine.

    python -m bench.dunning_tick tick --invoices 1000000 --ticks 30
    python -m bench.dunning_tick due  --invoices 100000 --fire-limit 5000

``tick``: N open invoices stored as the worker stores them (documents, step timers), none due
and none overdue at the ticks; the cost, in the worker's engine (decode, transaction with the
inbox, firing due timers through their index, remembering the tick, recounting the overdue
gauge from its index every tick), of one ``clock.tick`` batch. Without Kafka in the way.
``due``: N open invoices whose level-1 notice falls due on one tick, one worker process
(``python -m services.dunning``) on the real broker, a tick every 0.2 s; from the first tick
to the last notice in the worker's ledger. Each writes docs/bench/dunning-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import AsyncMongoClient

from scripts.processes import REPO, Fleet
from services.dunning import domain
from services.dunning.app import build_worker
from services.dunning.handlers import DunningService
from services.dunning.settings import DunningSettings
from services.dunning.store import STEP_ACTION, count_overdue, invoice_id, invoice_to_doc
from shared.runtime.engine import RawRecord
from shared.runtime.ticker import tick_event_bytes
from shared.runtime.timers import COLLECTION as TIMERS
from shared.runtime.timers import Timers
from tests.harness import Bus

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
RESULTS = REPO / "docs" / "bench"
BERLIN = ZoneInfo("Europe/Berlin")
CONFIG = domain.DunningConfig()


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"dunning-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_s": round(statistics.median(ordered), 4),
        "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 4),
        "max_s": round(ordered[-1], 4),
    }


async def store_invoices(db: Any, count: int, due_on: Any) -> float:
    """``count`` open invoices as the worker stores them, each with its step timer."""
    started = time.perf_counter()
    for start in range(0, count, 10_000):
        docs, timers = [], []
        for i in range(start, min(count, start + 10_000)):
            invoice = domain.DunningInvoice(
                f"o-{i}", f"INV-{i}", "DE02120300000000202051", 119_000, due_on(i)
            )
            doc = invoice_to_doc(invoice, CONFIG)
            doc["timer_due_at"] = doc["next_action_at"]
            doc["version"] = 1
            docs.append(doc)
            timers.append(
                Timers.schedule_op(
                    action=STEP_ACTION,
                    entity=invoice_id(invoice.order_id, invoice.invoice_number),
                    key=invoice.order_id,
                    due_at=doc["next_action_at"],
                )
            )
        await db["invoices"].insert_many(docs, ordered=False)
        await db[TIMERS].bulk_write(timers, ordered=False)
    return time.perf_counter() - started


async def bench_tick(
    invoices: int, ticks: int, *, write: bool = True, mongodb_uri: str = MONGO
) -> dict[str, Any]:
    stamp = uuid.uuid4().hex[:8]
    settings = DunningSettings(
        kafka_bootstrap_servers=KAFKA,
        mongodb_uri=mongodb_uri,
        mongodb_database=f"bench_dunning_{stamp}",
        topic_prefix=f"bench{stamp}.",
        overdue_gauge_seconds=0,  # the worst case: the gauge recounted on every tick
    )
    worker = build_worker(settings)
    now0 = datetime(2027, 1, 1, 9, tzinfo=UTC)
    try:
        await worker.engine.setup()
        # Due over the next year: not overdue, and no step due at the ticks below.
        inserted = await store_invoices(
            worker.db, invoices, lambda i: date(2027, 1, 2) + timedelta(days=i % 365)
        )
        samples = []
        for n in range(ticks):
            key, value = tick_event_bytes(now0 + timedelta(seconds=n))
            record = RawRecord(settings.topic_prefix + "clock.ticks", 0, n, key, value)
            started = time.perf_counter()
            outputs = await worker.engine.store_batch([record])
            samples.append(time.perf_counter() - started)
            assert outputs == []
        # The parts, alone: firing due timers through their index, and the overdue gauge's
        # four range counts (both inside the tick batch above).
        service = worker.service
        assert isinstance(service, DunningService)
        fire_samples, count_samples = [], []
        for n in range(ticks):
            now = now0 + timedelta(seconds=ticks + n)
            async with worker.mongo.start_session() as session:
                started = time.perf_counter()
                assert await service.timers.fire_due(session, now) == []
                fire_samples.append(time.perf_counter() - started)
                started = time.perf_counter()
                counts = await count_overdue(worker.db, session, domain.local_day(now, CONFIG))
                count_samples.append(time.perf_counter() - started)
                assert set(counts.values()) == {0}
        result = {
            "open_invoices": await worker.db["invoices"].count_documents({}),
            "scheduled_step_timers": await worker.db[TIMERS].count_documents({}),
            "none_due": True,
            "insert_s": round(inserted, 1),
            "ticks": ticks,
            "tick_batch_in_worker": quantiles(samples),
            "fire_due_alone": quantiles(fire_samples),
            "overdue_gauge_counts_alone": quantiles(count_samples),
            "at": datetime.now(UTC).isoformat(),
        }
        if write:
            save("tick", result)
        return result
    finally:
        await worker.mongo.drop_database(settings.mongodb_database)
        await worker.mongo.close()


async def bench_due(invoices: int, fire_limit: int) -> dict[str, Any]:
    stamp = uuid.uuid4().hex[:8]
    database = f"bench_dunning_due_{stamp}"
    prefix = f"bench{stamp}."
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "MONGODB_URI": MONGO,
            "TOPIC_PREFIX": prefix,
            "DUNNING_MONGODB_DATABASE": database,
            "DUNNING_BATCH_TIMEOUT_MS": "5",
            "DUNNING_FIRE_LIMIT": str(fire_limit),
            "LOG_LEVEL": "WARNING",
        },
        log_dir=Path(REPO, ".local", "bench", f"dunning-{stamp}"),
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO, tz_aware=True)
    bus = Bus(KAFKA, prefix)
    await bus.start()
    try:
        worker = fleet.start_worker("dunning")
        worker.wait_ready()
        db = mongo[database]
        due_on = date(2027, 1, 10)
        await store_invoices(db, invoices, lambda i: due_on)
        first_day = datetime.combine(due_on + timedelta(days=1), day_time(9), tzinfo=BERLIN)
        started = time.monotonic()
        tick = 0
        while await db["notices"].count_documents({}) < invoices:
            await bus.tick(first_day + timedelta(seconds=tick))
            tick += 1
            await asyncio.sleep(0.2)
            assert time.monotonic() - started < 1800, "not drained"
        elapsed = time.monotonic() - started
        result = {
            "invoices_due_on_one_tick": invoices,
            "workers": 1,
            "fire_limit": fire_limit,
            "ticks": tick,
            "seconds_first_tick_to_last_notice": round(elapsed, 1),
            "notices_per_s": round(invoices / elapsed),
            "at": datetime.now(UTC).isoformat(),
        }
        save("due", result)
        return result
    finally:
        fleet.stop_all()
        await bus.stop()
        await mongo.drop_database(database)
        await mongo.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dunning_tick")
    sub = parser.add_subparsers(dest="what", required=True)
    tick = sub.add_parser("tick")
    tick.add_argument("--invoices", type=int, default=1_000_000)
    tick.add_argument("--ticks", type=int, default=30)
    due = sub.add_parser("due")
    due.add_argument("--invoices", type=int, default=100_000)
    due.add_argument("--fire-limit", type=int, default=5000)
    args = parser.parse_args()
    if args.what == "tick":
        asyncio.run(bench_tick(args.invoices, args.ticks))
    else:
        asyncio.run(bench_due(args.invoices, args.fire_limit))


if __name__ == "__main__":
    main()
