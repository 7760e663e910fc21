"""Benchmark: the time to match one payment does not grow with the invoices stored.

    python -m bench.reconciliation_scale                  # 10,000 then 1,000,000 invoices
    python -m bench.reconciliation_scale --sizes 10000 100000 --payments 2000

For each size, in a fresh database: ``size`` open invoices across ``size / 10`` debtors (one
account document per VIBAN, ten invoices each, written in bulk as the worker would store
them), then ``--payments`` bank transfers to accounts picked at random (each paid at most
once), each naming one of its invoices, fed through the worker's own engine (decode, inbox,
load the account, decide, store, in one MongoDB transaction per batch of ``--batch``; no
Kafka: publishing is a no-op, so only what depends on the stored data is measured).
Every size is stored first, then runs alternate between sizes. Reports the time per payment
for each size, median of ``--repeat`` runs with the spread, and the ratio largest / smallest
(of the medians, and per round).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from services.reconciliation import domain
from services.reconciliation.handlers import ReconciliationService
from services.reconciliation.store import ACCOUNTS, account_to_doc
from shared import topics
from shared.envelope import event_key, event_to_bytes, new_event
from shared.runtime.engine import DeadLetter, Engine, Outbound, RawRecord
from shared.runtime.metrics import WorkerMetrics
from tests import recon_examples as rx

INVOICES_PER_DEBTOR = 10
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass
class SizeResult:
    invoices: int
    debtors: int
    seed_seconds: float
    per_payment_ms: list[float]
    per_payment_ms_median: float


class _NoPublisher:
    async def publish(self, messages: Sequence[Outbound]) -> None:
        return None

    async def dead_letter(self, letters: Sequence[DeadLetter], consumer_group: str) -> None:
        raise AssertionError(f"unexpected dead letters: {[d.error for d in letters]}")


def viban(n: int) -> str:
    return f"DE00SCALE{n:013d}"


def stored_account(n: int) -> dict[str, Any]:
    """Debtor ``n`` with ten open invoices, built by the domain's own rules, as stored."""
    account = domain.Account(viban=viban(n))
    for k in range(INVOICES_PER_DEBTOR):
        order = f"o-{n}-{k}"
        account = domain.record_order(
            account, order_id=order, merchant_id="m-1", debtor_id=f"c-{n}", decision="created"
        ).account
        account = domain.issue_invoice(
            account,
            invoice_number=f"INV-{n}-{k}",
            order_id=order,
            merchant_id="m-1",
            debtor_id=f"c-{n}",
            gross=11900 + k,
            issued_on=date(2026, 11, 1),
            due_on=date(2026, 12, 1) + timedelta(days=k),
            now=NOW,
        ).account
    account.version = 1
    return account_to_doc(account)


async def seed(db: Any, debtors: int) -> float:
    started = time.perf_counter()
    template = stored_account(0)
    chunk: list[dict[str, Any]] = []
    for n in range(debtors):
        # One account built by the rules, the rest renamed copies of it: building 100,000
        # accounts one by one would measure Python, not the store.
        doc = copy.deepcopy(template)
        doc["_id"] = viban(n)
        doc["debtor_id"] = f"c-{n}"
        doc["orders"] = [[f"o-{n}-{k}", "created"] for k in range(INVOICES_PER_DEBTOR)]
        doc["order_ids"] = sorted(o for o, _ in doc["orders"])
        for k, invoice in enumerate(doc["invoices"]):
            invoice["invoice_number"] = f"INV-{n}-{k}"
            invoice["order_id"] = f"o-{n}-{k}"
        chunk.append(doc)
        if len(chunk) == 5000:
            await db[ACCOUNTS].insert_many(chunk, ordered=False)
            chunk = []
    if chunk:
        await db[ACCOUNTS].insert_many(chunk, ordered=False)
    return time.perf_counter() - started


def payments(accounts: list[int], rng: random.Random, prefix: str) -> list[RawRecord]:
    """One transfer to each of ``accounts`` (each account is paid once in the whole run, so
    no account grows with earlier payments and every size measures the same work)."""
    records = []
    for i, n in enumerate(accounts):
        k = rng.randrange(INVOICES_PER_DEBTOR)
        data = rx.transfer(f"{prefix}-{i}", viban(n), "50.00", f"Rechnung INV-{n}-{k}")
        event = new_event(data, id=str(uuid.uuid4()), source="/bench", time=NOW)
        records.append(
            RawRecord(topics.BANK_TRANSACTIONS, 0, i, event_key(event), event_to_bytes(event))
        )
    return records


async def per_payment_ms(engine: Engine, records: list[RawRecord], batch: int) -> float:
    started = time.perf_counter()
    for first in range(0, len(records), batch):
        await engine.store_batch(records[first : first + batch])
    return (time.perf_counter() - started) * 1000 / len(records)


@dataclass
class _Stored:
    size: int
    debtors: int
    name: str
    engine: Engine
    seed_seconds: float
    picked: list[int]
    rng: random.Random


async def store_size(
    client: AsyncMongoClient[dict[str, Any]], size: int, args: argparse.Namespace
) -> _Stored:
    debtors = size // INVOICES_PER_DEBTOR
    needed = args.batch + args.repeat * args.payments
    if needed > debtors:
        raise SystemExit(f"{size} invoices hold {debtors} debtors; {needed} payments asked")
    name = f"bench_recon_scale_{size}_{uuid.uuid4().hex[:6]}"
    db = client[name]
    metrics = WorkerMetrics()
    service = ReconciliationService(metrics.registry, timedelta(days=3))
    engine = Engine(service, db, _NoPublisher(), metrics)
    await engine.setup()
    seconds = await seed(db, debtors)
    print(f"{size:,} invoices over {debtors:,} debtors stored in {seconds:.1f} s", flush=True)
    rng = random.Random(size)
    return _Stored(size, debtors, name, engine, seconds, rng.sample(range(debtors), needed), rng)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every size stored first, then runs alternating between sizes (S L S L ...), so a
    machine that speeds up or slows down during the run moves every size alike."""
    uri = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    stored: list[_Stored] = []
    try:
        for size in args.sizes:
            stored.append(await store_size(client, size, args))
        # Write the bulk loads out (a checkpoint) before measuring: otherwise the first runs
        # measure the storage engine flushing what was just inserted.
        await client.admin.command("fsync")
        for s in stored:  # a warm-up batch each, not counted
            warm = payments(s.picked[: args.batch], s.rng, "warm")
            await per_payment_ms(s.engine, warm, args.batch)
        runs: dict[int, list[float]] = {s.size: [] for s in stored}
        for r in range(args.repeat):
            for s in stored:
                first = args.batch + r * args.payments
                records = payments(s.picked[first : first + args.payments], s.rng, f"r{r}")
                runs[s.size].append(round(await per_payment_ms(s.engine, records, args.batch), 3))
            print(
                f"  round {r + 1}: "
                + ", ".join(f"{size:,}: {ms[-1]:.3f} ms" for size, ms in runs.items()),
                flush=True,
            )
        status = await client.admin.command("serverStatus")
        cache = status["wiredTiger"]["cache"]["maximum bytes configured"]
    finally:
        for s in stored:
            await client.drop_database(s.name)
        await client.close()
    results = [
        SizeResult(
            s.size,
            s.debtors,
            round(s.seed_seconds, 1),
            runs[s.size],
            statistics.median(runs[s.size]),
        )
        for s in stored
    ]
    ratios = [
        round(large / small, 3)
        for small, large in zip(runs[stored[0].size], runs[stored[-1].size], strict=True)
    ]
    smallest, largest = results[0], results[-1]
    return {
        "mongodb_cache_bytes": cache,
        "sizes": [asdict(r) for r in results],
        "ratio_largest_to_smallest": round(
            largest.per_payment_ms_median / smallest.per_payment_ms_median, 3
        ),
        "ratio_per_round": ratios,
        "payments_per_run": args.payments,
        "batch": args.batch,
        "machine": f"{os.cpu_count()} cores, python {sys.version.split()[0]}",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="per-payment time vs. invoices stored")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--payments", type=int, default=150, help="payments per run")
    parser.add_argument("--batch", type=int, default=100, help="payments per transaction")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the report here too")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    report = asyncio.run(measure(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
