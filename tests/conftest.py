"""Fixtures for tests that need real Kafka and MongoDB.

The infrastructure is found or started once per run (see tests/infra.py for the order:
explicit addresses, then testcontainers, then the local services script). Every test gets its
own topic prefix and database, so tests share the broker without sharing data.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import settings
from pymongo import AsyncMongoClient

from shared.runtime.app import Worker
from tests.harness import Bus
from tests.infra import Infra, describe_versions, ensure_infra

# Properties are about results, not speed: on a shared two-core machine a wall-clock deadline per
# example fails a correct test now and then (seen: a fast-path equality reported as flaky under
# load). A failure prints the blob that reproduces it.
settings.register_profile("paylater", deadline=None, print_blob=True)
settings.load_profile("paylater")


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest) -> Infra:
    found = ensure_infra()
    # The run's log names the broker and database versions it ran on, even under -q.
    line = describe_versions(found)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{line}", flush=True)
    else:
        print(line, flush=True)
    return found


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def bus(infra: Infra, namespace: str) -> AsyncIterator[Bus]:
    bus = Bus(infra.kafka_bootstrap, f"{namespace}.")
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def mongo(infra: Infra) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongodb_uri, tz_aware=True)
    yield client
    await client.close()


WorkerFactory = Callable[..., Worker]


@pytest.fixture
async def run_worker(
    infra: Infra, namespace: str, mongo: AsyncMongoClient[dict[str, Any]]
) -> AsyncIterator[Callable[..., Any]]:
    """Starts a service's worker in this event loop: ``await run_worker(build_worker, Settings)``.
    Stopped, and its database dropped, when the test ends."""
    started: list[Worker] = []

    async def start(
        build: Callable[[Any], Worker], settings_class: type[Any], **overrides: Any
    ) -> Worker:
        settings = settings_class(
            kafka_bootstrap_servers=infra.kafka_bootstrap,
            mongodb_uri=infra.mongodb_uri,
            topic_prefix=f"{namespace}.",
            mongodb_database=f"{namespace}_{settings_class.__name__.lower()}",
            batch_timeout_ms=10,
            lag_refresh_seconds=0.5,
            **({"ops_mongodb_database": f"{namespace}_ops"} | overrides),
        )
        worker = build(settings)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    databases = {w.settings.mongodb_database for w in started} | {
        w.settings.ops_mongodb_database for w in started
    }
    for worker in started:
        # A worker stops within 10 s whatever it is doing (docs/runtime-guarantees.md): a
        # teardown that waits longer is a failure of that guarantee, said as such.
        try:
            await asyncio.wait_for(worker.stop(), timeout=15.0)
        except TimeoutError:
            pytest.fail(f"{worker.service.name} worker did not stop within 15 s")
    for name in databases:
        await mongo.drop_database(name)
