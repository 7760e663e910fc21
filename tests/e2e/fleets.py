"""Workers as processes, each test under its own topic prefix and database."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from scripts.processes import Fleet, Process
from tests.infra import Infra


def fleet_for(
    infra: Infra,
    namespace: str,
    log_dir: Path,
    service: str,
    *,
    ticker: bool = True,
    **knobs: str,
) -> Fleet:
    """A fleet for ``service`` (database ``<namespace>_<service>``) with fast batches and lag
    refresh, plus ``knobs`` (setting names without the service prefix, e.g.
    ``BATCH_MAX_RECORDS="20"``), and a ticker unless the test publishes its own ticks: events
    read before what they refer to park until a tick."""
    prefix = service.upper()
    settings = {"BATCH_TIMEOUT_MS": "5", "LAG_REFRESH_SECONDS": "0.5", **knobs}
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "MONGODB_URI": infra.mongodb_uri,
            "TOPIC_PREFIX": f"{namespace}.",
            f"{prefix}_MONGODB_DATABASE": f"{namespace}_{service}",
            "OPS_MONGODB_DATABASE": f"{namespace}_ops",
            "LOG_LEVEL": "WARNING",
            **{f"{prefix}_{name}": value for name, value in settings.items()},
        },
        log_dir=log_dir,
    )
    if ticker:
        fleet.start_ticker(0.5)
    return fleet


async def metrics_matching(worker: Process, pattern: str, timeout: float = 30.0) -> str:
    """The worker's /metrics text once ``pattern`` (a regular expression) is found in it:
    some series, such as the consumer lag, are only refreshed in the background."""
    found = re.compile(pattern)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, text = worker.get("/metrics")
        assert status == 200
        if found.search(text):
            return text
        assert asyncio.get_running_loop().time() < deadline, f"{worker.name}: no {pattern}"
        await asyncio.sleep(0.2)
