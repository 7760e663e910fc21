"""A toy service on the runtime's external jobs, for tests: in-process or as a process
(``python -m tests.job_toy``, settings prefixed ``JOBTOY_``).

- ``orders.canceled`` with ``reason="call:<url>"`` records a job (kind ``notify``, target
  ``remote``) that POSTs ``{"order_id": ...}`` to the url; its id derives from the event;
- each ``runtime.job_finished.v1`` is counted in ``outcomes`` under the job id (with its
  status) and announced on ``commands.rejected`` with reason ``job_<status>``.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic_settings import SettingsConfigDict
from pymongo.asynchronous.database import AsyncDatabase

from shared import topics
from shared.events import JobFinished, OrderCanceled
from shared.runtime.app import Worker
from shared.runtime.engine import Batch
from shared.runtime.jobs import JobKind, Jobs, JobSettings, JobTarget, http_json_call
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.run import run_worker
from shared.runtime.settings import WorkerSettings

NAME = "jobtoy"


class JobToySettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="JOBTOY_", extra="ignore", frozen=True)

    mongodb_database: str = "jobtoy"
    http_port: int = 8091
    lease_seconds: float = 60.0
    call_timeout_seconds: float = 10.0
    max_attempts: int = 5
    concurrency: int = 16
    rate_per_second: float | None = None
    backoff_base_seconds: float = 0.05
    poll_seconds: float = 0.1


class JobToyService:
    name = NAME
    input_topics: tuple[str, ...] = (topics.ORDERS_CANCELED, topics.job_result_topic(NAME))

    def __init__(self, settings: JobToySettings) -> None:
        self.jobs = Jobs(
            NAME,
            kinds=[
                JobKind(
                    "notify",
                    "remote",
                    http_json_call,
                    max_attempts=settings.max_attempts,
                    timeout_seconds=settings.call_timeout_seconds,
                )
            ],
            targets=[JobTarget("remote", settings.concurrency, settings.rate_per_second)],
            settings=JobSettings(
                lease_seconds=settings.lease_seconds,
                poll_seconds=settings.poll_seconds,
                backoff_base_seconds=settings.backoff_base_seconds,
                metrics_refresh_seconds=0.5,
            ),
        )
        self.db: AsyncDatabase[dict[str, Any]] | None = None

    async def setup(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.db = db
        await self.jobs.setup(db)

    async def handle(self, batch: Batch) -> None:
        assert self.db is not None
        for item in batch.items:
            data = item.data
            if isinstance(data, OrderCanceled) and (data.reason or "").startswith("call:"):
                await self.jobs.enqueue(
                    batch.session,
                    cause_id=item.event.id,
                    kind="notify",
                    key=data.order_id,
                    payload={
                        "method": "POST",
                        "url": (data.reason or "").removeprefix("call:"),
                        "json": {"order_id": data.order_id},
                    },
                    not_before=item.now,
                    now=item.now,
                )
            elif isinstance(data, JobFinished):
                await self.db["outcomes"].update_one(
                    {"_id": data.job_id},
                    {"$inc": {"count": 1}, "$push": {"statuses": data.status}},
                    upsert=True,
                    session=batch.session,
                )
                batch.reject(item, data.entity_key, f"job_{data.status}")


def build_job_toy(settings: JobToySettings | None = None) -> Worker:
    settings = settings or JobToySettings()
    return Worker(JobToyService(settings), settings, WorkerMetrics())


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    run_worker(build_job_toy())
