"""Polling cost of the e-invoice worker: with N invoices being followed, a tick polls only the
ones due, within the configured Billit rate limit.

    python -m bench.einvoice_polling --followed 100000 --due 1000 --rate 50 --repeat 3
    python -m bench.einvoice_polling --followed 10000 100000 --due 1000 --rate 50

On real Kafka and MongoDB (``KAFKA_BOOTSTRAP_SERVERS``, ``MONGODB_URI``) with the Billit
simulator as a real HTTP server (started here). Per round: a fresh database holds N
e-invoices in the ``following`` stage, each with its poll timer; ``due`` of them are due
now, the rest spread over the next 14 days. The e-invoice worker runs in this process;
one ``clock.ticks`` tick at the wall clock is published. Measured:

- ``fire_s``: from the tick to the last due poll recorded as a job (timers read through the
  due-time index, one command per timer, each claimed in its invoice's transaction);
- ``calls``: the GET /v1/orders/{id} calls the simulator counted (must equal ``due``);
- ``calls_s`` and ``calls_per_s``: from the first call to the last, sampled every 50 ms;
  the executor's limit allows ``rate`` per second after a burst of ``rate``, so ``calls_s``
  must be at least ``allowed_min_calls_s`` = (due - rate) / rate;
- ``untouched``: timers not due that are still scheduled for their own time (must be
  N - due).

Writes docs/bench/einvoice-polling.json.
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
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from pymongo import AsyncMongoClient, InsertOne

from scripts.processes import REPO, free_port
from services.einvoice_status import domain
from services.einvoice_status.app import build_worker
from services.einvoice_status.handlers import POLL
from services.einvoice_status.settings import EinvoiceSettings
from services.einvoice_status.store import einvoice_to_doc
from shared.runtime.timers import Timers
from tests.harness import Bus

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
API_KEY = "sim-api-key"
PARTY_ID = "1001"
BILLIT_ORDERS = 50


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "services.einvoice_status.simulator", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_sim/clock", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the Billit simulator did not start")


async def billit_orders(url: str, count: int) -> list[int]:
    """A few real orders in the simulator, sent and delivered, for the polls to read."""
    headers = {"ApiKey": API_KEY, "PartyID": PARTY_ID}
    ids: list[int] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        await http.post("/_sim/reset", content=b"{}")
        for i in range(count):
            body = {
                "OrderType": "Invoice",
                "OrderDirection": "Income",
                "OrderNumber": f"B-{i}",
                "OrderDate": "2026-06-01",
                "ExpiryDate": "2026-07-01",
                "ExternalProviderID": f"bench-{i}",
                "Customer": {"Name": "D", "VATNumber": "BE0446725877"},
                "OrderLines": [
                    {"Quantity": 1, "UnitPriceExcl": 100, "Description": "x", "VATPercentage": 21}
                ],
            }
            created = await http.post("/v1/orders", json=body)
            ids.append(int(created.text))
        await http.post(
            "/v1/orders/commands/send", json={"Transporttype": "Peppol", "OrderIDs": ids}
        )
        await http.post("/_sim/clock", content=b'{"advance_seconds": 120}')
    return ids


def followed_invoice(i: int, order_id: int, now: datetime) -> dict[str, Any]:
    amount = domain.Cents3(gross=1210, net=1000, tax=210)
    invoice = domain.EInvoice(
        id=f"o-{i}/INV-{i}",
        order_id=f"o-{i}",
        merchant_id="m-billit",
        invoice_number=f"INV-{i}",
        party_id=PARTY_ID,
        viban=f"BE00{i:012d}",
        issued_on=date(2026, 6, 1),
        due_on=date(2026, 7, 1),
        amount=amount,
        worth=amount,
        customer=domain.Customer(name="D", peppol_id="BE0446725877"),
    )
    document = domain.new_invoice_document(invoice)
    document.stage = "following"
    document.billit_order_id = order_id
    document.delivery_status = "delivered"
    document.sent_at = now - timedelta(days=1)
    document.phase_since = now - timedelta(days=1)
    document.follow_until = now + timedelta(days=13)
    invoice.documents.append(document)
    return einvoice_to_doc(invoice)


async def populate(db: Any, followed: int, due: int, order_ids: list[int], now: datetime) -> None:
    for start in range(0, followed, 5000):
        end = min(followed, start + 5000)
        docs = [followed_invoice(i, order_ids[i % len(order_ids)], now) for i in range(start, end)]
        await db["einvoices"].bulk_write([InsertOne(d) for d in docs], ordered=False)
        timers = []
        for i in range(start, end):
            # The due ones a little in the past; the rest spread over the next 14 days.
            due_at = (
                now - timedelta(seconds=1 + i % 30)
                if i < due
                else now + timedelta(seconds=60 + (i * 7919) % (14 * 86_400))
            )
            timers.append(
                Timers.schedule_op(
                    action=POLL,
                    entity=f"o-{i}/INV-{i}|invoice",
                    key=f"o-{i}",
                    due_at=due_at,
                    now=now,
                )
            )
        await db["timers"].bulk_write(timers, ordered=False)


async def get_order_calls(http: httpx.AsyncClient) -> int:
    counters = (await http.get("/_sim/counters")).json()
    return int(sum(counters["calls"].get("get_order", {}).values()))


async def one_round(
    followed: int,
    due: int,
    rate: float,
    sim_url: str,
    *,
    kafka: str = KAFKA,
    mongodb_uri: str = MONGO,
    fire_limit: int = 1000,
) -> dict[str, Any]:
    stamp = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    order_ids = await billit_orders(sim_url, BILLIT_ORDERS)
    settings = EinvoiceSettings(
        kafka_bootstrap_servers=kafka,
        mongodb_uri=mongodb_uri,
        topic_prefix=f"bench-einv-{stamp}.",
        mongodb_database=f"bench_einv_{stamp}",
        billit_base_url=sim_url,
        billit_api_key=API_KEY,
        billit_rate_per_second=rate,
        billit_concurrency=5,
        job_poll_seconds=0.02,
        batch_timeout_ms=10,
        poll_fire_limit=fire_limit,
        log_level="WARNING",
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    db = mongo[settings.mongodb_database]
    worker = build_worker(settings)
    bus = Bus(kafka, settings.topic_prefix)
    try:
        await worker.start()  # creates the indexes
        await populate(db, followed, due, order_ids, now)
        await bus.start()
        async with httpx.AsyncClient(base_url=sim_url, timeout=10) as http:
            before = await get_order_calls(http)
            ticked = time.perf_counter()
            await bus.tick(datetime.now(UTC))
            fired_at = None
            samples: list[tuple[float, int]] = []
            deadline = ticked + 120 + due / rate
            while time.perf_counter() < deadline:
                calls = await get_order_calls(http) - before
                samples.append((time.perf_counter(), calls))
                if fired_at is None and await db["jobs"].count_documents({"kind": POLL}) >= due:
                    fired_at = time.perf_counter()
                if calls >= due and fired_at is not None:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # anything extra would show now
            calls = await get_order_calls(http) - before
        first = next(t for t, c in samples if c > 0)
        last = next(t for t, c in samples if c >= due)
        untouched = await db["timers"].count_documents(
            {"state": "scheduled", "due_at": {"$gt": now}, "scheduled_at": {"$lte": now}}
        )
        backlog = worker.metrics.registry.get_sample_value("einvoice_poll_backlog")
        return {
            "followed": followed,
            "due": due,
            "rate_limit_per_s": rate,
            "fire_s": round((fired_at or time.perf_counter()) - ticked, 3),
            "calls": calls,
            "calls_s": round(last - first, 3),
            "calls_per_s": round((due - 1) / max(last - first, 1e-9), 1),
            # A token bucket of ``rate`` tokens: the first ``rate`` calls may go at once.
            "allowed_min_calls_s": round(max(due - rate, 0) / rate, 3),
            "untouched": untouched,
            "expected_untouched": followed - due,
            "poll_backlog_gauge_after": backlog,
        }
    finally:
        await bus.stop()
        await worker.stop()
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


async def main(followed: list[int], due: int, rate: float, repeat: int) -> None:
    port = free_port()
    simulator = start_simulator(port)
    url = f"http://127.0.0.1:{port}"
    rounds: list[dict[str, Any]] = []
    try:
        for r in range(repeat):
            for n in followed:  # interleaved, so a machine that slows down moves every size
                result = await one_round(n, due, rate, url)
                result["round"] = r
                print(json.dumps(result), flush=True)
                rounds.append(result)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    summary = {}
    for n in followed:
        mine = [x for x in rounds if x["followed"] == n]
        summary[str(n)] = {
            "fire_s_median": statistics.median(x["fire_s"] for x in mine),
            "fire_s_range": [min(x["fire_s"] for x in mine), max(x["fire_s"] for x in mine)],
            "calls_per_s_median": statistics.median(x["calls_per_s"] for x in mine),
            "calls_per_s_range": [
                min(x["calls_per_s"] for x in mine),
                max(x["calls_per_s"] for x in mine),
            ],
            "all_calls_equal_due": all(x["calls"] == due for x in mine),
            "all_within_rate": all(x["calls_s"] >= x["allowed_min_calls_s"] for x in mine),
            "all_untouched": all(x["untouched"] == x["expected_untouched"] for x in mine),
        }
    out = {"rounds": rounds, "summary": summary, "machine": "shared 2-core machine"}
    path = REPO / "docs" / "bench" / "einvoice-polling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--followed", type=int, nargs="+", default=[100_000])
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.followed, args.due, args.rate, args.repeat))
