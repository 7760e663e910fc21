"""External jobs on real Kafka and MongoDB, through the toy in tests/job_toy.py, against the
local HTTP double of tests/http_double.py (it counts requests per idempotency key and fails
on demand). The oracle: the toy's ``outcomes`` collection (one count per outcome event it
handled), the double's counts, and the ``jobs`` documents an operator would look at."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from typing import Any

import pytest

from shared import topics
from shared.events import OrderCanceled
from shared.ops import ServiceCommands, register
from shared.ops import main as ops_main
from shared.runtime.app import Worker
from shared.runtime.jobs import job_id_for
from tests.harness import Bus
from tests.http_double import HttpDouble
from tests.job_toy import JobToySettings, build_job_toy

pytestmark = pytest.mark.integration
register(ServiceCommands("jobtoy", default_database="jobtoy"))


@pytest.fixture
async def remote() -> AsyncIterator[HttpDouble]:
    server = HttpDouble()
    await server.start()
    yield server
    await server.stop()


async def until(check: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def outcomes(worker: Worker) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d async for d in worker.db["outcomes"].find()}


def counter(worker: Worker, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        name, {"service": "jobtoy", "kind": "notify", "target": "remote", **labels}
    )
    return value or 0.0


async def test_500_then_success_records_one_outcome(
    bus: Bus, run_worker: Any, remote: HttpDouble
) -> None:
    """The remote answers 500 once, then 200: the job is retried with backoff, both calls
    carry the job id as Idempotency-Key, and the service handles exactly one outcome,
    ``succeeded`` after 2 attempts."""
    worker = await run_worker(build_job_toy, JobToySettings)
    remote.fail_next(500)
    cause = await bus.send(OrderCanceled(order_id="o-1", reason=f"call:{remote.url}"))
    job_id = job_id_for("jobtoy", cause, "notify")

    async def one_outcome() -> bool:
        return job_id in await outcomes(worker)

    await until(one_outcome, what="the outcome")
    await bus.events(topics.COMMANDS_REJECTED, count=1, settle=1.5)
    assert remote.requests == {job_id: 2}
    found = await outcomes(worker)
    assert found[job_id]["count"] == 1
    assert found[job_id]["statuses"] == ["succeeded"]
    job = await worker.db["jobs"].find_one({"_id": job_id})
    assert job is not None
    assert job["state"] == "succeeded"
    assert job["attempts"] == 2
    assert "HTTP 500" in job["last_error"]
    assert counter(worker, "worker_jobs_retried_total") == 1
    assert counter(worker, "worker_jobs_succeeded_total") == 1
    latency = worker.metrics.registry.get_sample_value(
        "worker_job_call_seconds_count", {"service": "jobtoy", "target": "remote", "status": "500"}
    )
    assert latency == 1


async def test_job_past_its_retries_is_failed_visible_requeued_by_ops_and_completes(
    bus: Bus, run_worker: Any, remote: HttpDouble
) -> None:
    """Three attempts, all answered 503: the job is failed with its last error, the service
    handles a ``failed`` outcome, the ops command lists it; ``jobs requeue`` puts it back and
    the next call succeeds, so the service handles a ``succeeded`` outcome as well."""
    worker = await run_worker(build_job_toy, JobToySettings, max_attempts=3)
    remote.fail_next(503, 503, 503)
    cause = await bus.send(OrderCanceled(order_id="o-2", reason=f"call:{remote.url}"))
    job_id = job_id_for("jobtoy", cause, "notify")

    async def failed() -> bool:
        found = await outcomes(worker)
        return job_id in found and found[job_id]["statuses"] == ["failed"]

    await until(failed, what="the failure")
    job = await worker.db["jobs"].find_one({"_id": job_id})
    assert job is not None
    assert job["state"] == "failed"
    assert job["attempts"] == 3
    assert "HTTP 503" in job["last_error"]
    assert remote.requests == {job_id: 3}
    assert counter(worker, "worker_jobs_failed_total") == 1

    database = ["--mongodb-uri", worker.settings.mongodb_uri, "--database", worker.db.name]
    listing = io.StringIO()
    with redirect_stdout(listing):
        assert ops_main(["jobtoy", *database, "jobs", "list", "--state", "failed"]) == 0
    assert job_id in listing.getvalue()
    assert "HTTP 503" in listing.getvalue()

    with redirect_stdout(io.StringIO()):
        assert ops_main(["jobtoy", *database, "jobs", "requeue", job_id]) == 0
        # A second requeue finds no failed job of that id and says so.
        assert ops_main(["jobtoy", *database, "jobs", "requeue", job_id]) == 1

    async def succeeded() -> bool:
        found = await outcomes(worker)
        return found.get(job_id, {}).get("statuses") == ["failed", "succeeded"]

    await until(succeeded, what="the requeued job to succeed")
    job = await worker.db["jobs"].find_one({"_id": job_id})
    assert job is not None
    assert job["state"] == "succeeded"
    assert job["generation"] == 1
    assert remote.requests == {job_id: 4}


async def test_concurrency_cap_and_rate_limit_per_target(
    bus: Bus, run_worker: Any, remote: HttpDouble
) -> None:
    """30 jobs for one target capped at 3 calls at once and 10 calls per second, against a
    remote answering in 50 ms: never more than 3 requests in progress, and starting them
    takes at least (30 - 10 burst) / 10 s = 2 s (the cap alone would allow 0.5 s)."""
    remote.delay = 0.05
    worker = await run_worker(build_job_toy, JobToySettings, concurrency=3, rate_per_second=10.0)
    loop = asyncio.get_running_loop()
    for i in range(30):
        await bus.send(OrderCanceled(order_id=f"o-{i}", reason=f"call:{remote.url}"), wait=False)
    assert bus.producer is not None
    await bus.producer.flush()
    await until(lambda: _has_requests(remote, 1), what="the first call")
    started = loop.time()

    async def all_done() -> bool:
        return len(await outcomes(worker)) == 30

    await until(all_done, what="all 30 outcomes")
    assert loop.time() - started >= 1.8
    assert remote.max_in_progress <= 3
    assert sum(remote.requests.values()) == 30


async def _has_requests(remote: HttpDouble, n: int) -> bool:
    return sum(remote.requests.values()) >= n


async def test_a_job_waiting_for_a_call_slot_never_outlives_its_lease(
    bus: Bus, run_worker: Any, remote: HttpDouble
) -> None:
    """Two workers on one jobs collection, one call at a time each (each leases two ahead),
    leases of 3 s, calls of 2 s: a worker's second job waits 2 s for the slot, and its call
    would end past its lease, when the other worker may take it over. So before calling the
    worker renews the lease: no job is called twice, and each has one outcome."""
    remote.delay = 2.0
    knobs = {"concurrency": 1, "lease_seconds": 3.0, "call_timeout_seconds": 2.5}
    first = await run_worker(build_job_toy, JobToySettings, **knobs)
    await run_worker(build_job_toy, JobToySettings, **knobs)
    for i in range(4):
        await bus.send(OrderCanceled(order_id=f"o-{i}", reason=f"call:{remote.url}"), wait=False)
    assert bus.producer is not None
    await bus.producer.flush()

    async def all_done() -> bool:
        return len(await outcomes(first)) == 4

    await until(all_done, timeout=120, what="4 outcomes")
    await asyncio.sleep(3.0)  # a takeover's second call would come after the outcome
    assert remote.max_per_key == 1
    assert set(remote.requests.values()) == {1}
    assert all(o["count"] == 1 for o in (await outcomes(first)).values())
