"""External jobs with the toy of tests/job_toy.py as real processes, against the HTTP double
of tests/http_double.py running in the test: a worker SIGKILLed during a call is replaced and
the job completes with its outcome recorded once; two worker processes never run the same
job at once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from scripts.processes import Fleet, Process, free_port
from shared import topics
from shared.events import OrderCanceled
from shared.runtime.jobs import job_id_for
from tests.e2e.fleets import fleet_for
from tests.harness import Bus
from tests.http_double import HttpDouble
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
Db = AsyncDatabase[dict[str, Any]]


@pytest.fixture
def database(namespace: str) -> str:
    return f"{namespace}_jobtoy"


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    # The test publishes its own ticks; the database is ``database`` (<namespace>_jobtoy).
    fleet = fleet_for(infra, namespace, tmp_path / "logs", "jobtoy", ticker=False)
    yield fleet
    fleet.stop_all()


@pytest.fixture
async def db(mongo: AsyncMongoClient[dict[str, Any]], database: str) -> AsyncIterator[Db]:
    yield mongo[database]
    await mongo.drop_database(database)


@pytest.fixture
async def remote() -> AsyncIterator[HttpDouble]:
    server = HttpDouble()
    await server.start()
    yield server
    await server.stop()


def start_toy(fleet: Fleet, **env: str) -> Process:
    port = free_port()
    process = fleet._spawn(  # a test module, not a service: the fleet's own spawn
        "jobtoy",
        [sys.executable, "-m", "tests.job_toy"],
        {**fleet.env, "JOBTOY_HTTP_PORT": str(port), **env},
    )
    process.http_port = port
    process.wait_ready()
    return process


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_worker_killed_during_a_call_is_replaced_and_the_job_completes_once(
    fleet: Fleet, bus: Bus, db: Db, remote: HttpDouble
) -> None:
    """The remote holds the first call; the worker making it is SIGKILLed. A new worker takes
    the job once the dead one's lease (4 s) expired, calls again with the same
    Idempotency-Key, and the service records one outcome."""
    lease = {"JOBTOY_LEASE_SECONDS": "4", "JOBTOY_CALL_TIMEOUT_SECONDS": "3"}
    remote.hold = True
    first = start_toy(fleet, **lease)
    cause = await bus.send(OrderCanceled(order_id="k-1", reason=f"call:{remote.url}"))
    job_id = job_id_for("jobtoy", cause, "notify")
    await asyncio.wait_for(remote.arrived.wait(), 60)
    first.kill()
    remote.release()  # the answer goes nowhere: its caller is dead

    start_toy(fleet, **lease)

    async def recorded() -> bool:
        return await db["outcomes"].count_documents({"_id": job_id}) == 1

    await wait_for(recorded, 90, "the outcome")
    await bus.events(topics.COMMANDS_REJECTED, count=1, settle=3.0)
    doc = await db["outcomes"].find_one({"_id": job_id})
    assert doc is not None
    assert doc["count"] == 1
    assert doc["statuses"] == ["succeeded"]
    assert remote.requests == {job_id: 2}  # the killed call and the one that completed
    job = await db["jobs"].find_one({"_id": job_id})
    assert job is not None
    assert job["state"] == "succeeded"
    assert job["attempts"] == 2


async def test_two_processes_never_run_the_same_job_at_once(
    fleet: Fleet, bus: Bus, db: Db, remote: HttpDouble
) -> None:
    """300 jobs, two worker processes polling the same jobs collection, a remote answering in
    50 ms: no idempotency key is ever in progress twice at the same moment (nor called twice),
    every job has one outcome, and both processes made calls."""
    remote.delay = 0.05
    workers = [start_toy(fleet, JOBTOY_CONCURRENCY="8") for _ in range(2)]
    causes = [
        await bus.send(OrderCanceled(order_id=f"o-{i}", reason=f"call:{remote.url}"), wait=False)
        for i in range(300)
    ]
    assert bus.producer is not None
    await bus.producer.flush()

    async def all_recorded() -> bool:
        return await db["outcomes"].count_documents({}) == 300

    await wait_for(all_recorded, 180, "300 outcomes")
    assert remote.max_per_key == 1
    assert set(remote.requests.values()) == {1}  # and no job was taken twice one after another
    assert set(remote.requests) == {job_id_for("jobtoy", c, "notify") for c in causes}
    assert await db["outcomes"].count_documents({"count": {"$ne": 1}}) == 0
    for worker in workers:
        status, text = worker.get("/metrics")
        assert status == 200
        calls = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("worker_jobs_succeeded_total{")
        ]
        assert sum(calls) > 0, f"{worker.name} made no call"
