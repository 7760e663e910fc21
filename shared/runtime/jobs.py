"""External jobs: calls to systems outside the platform, made outside any transaction.

A handler never calls out. It records a job in its own transaction (``Jobs.enqueue``: the id
derives from the cause, so a re-run of the handler records the same job once), with its kind,
target, payload, entity key and not-before time. The worker's ``JobExecutor``, a background
task beside the consumer:

1. leases due jobs, as many as the target has room for: reads candidates, then leases them
   with one ``update_many`` that re-checks each is still due (atomic per job; state
   ``running``, a fresh lease token, ``lease_expires_at``). Two executors never hold one job
   at once; a job whose holder died is leased again once its lease expired. Each lease
   counts as an attempt;
2. performs the call with the job id as ``Idempotency-Key``, under the target's concurrency
   cap and rate limit, with a timeout shorter than the lease;
3. on success (or on failure for good: a permanent error, or the last attempt), publishes a
   ``runtime.job_finished.v1`` to the service's own job topic keyed by the job's entity, and
   only then records the job's end under its lease token. The service handles that event in a
   transaction like any other; its id derives from (job, generation, status), so the
   re-publication after a crash between the two steps is dropped by the inbox;
4. on a transient failure (connection, timeout, 408, 425, 429, 5xx) with attempts left,
   puts the job back with exponential backoff and full jitter.

A failed job keeps its last error; ``requeue`` (the ops command) gives it a new generation
and a fresh set of attempts.

Job documents:

    {_id, kind, target, key, payload, state: pending|running|succeeded|failed, ready_at,
     attempts, generation, lease_token, lease_expires_at, last_error, result, cause,
     created_at, updated_at, finished_at}

``ready_at`` is when the executor may next take the job (its not-before time, a retry's
backoff, a running job's lease expiry); it is removed once the job has ended, so only live
jobs are in the index the executor reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from shared.envelope import encode_wire
from shared.events import JobFinished, register_internal_topics
from shared.ids import uuid5_str
from shared.runtime.engine import Outbound
from shared.runtime.logging import get_logger
from shared.runtime.timers import refuse_floats
from shared.runtime.transient import backoff_seconds, is_transient
from shared.topics import job_result_topic

COLLECTION = "jobs"
_JOB_NAMESPACE = uuid.UUID("9a4f2c61-7d3e-4f0b-b1a8-5c6e2d9f0a14")
_RESULT_BODY_LIMIT = 64 * 1024
_TRANSIENT_STATUS = frozenset({408, 425, 429})

log = get_logger("jobs")
Doc = dict[str, Any]


def job_id_for(service: str, cause_id: str, kind: str, n: int = 0) -> str:
    """A job's id from what caused it: the event id, the kind, and which of the cause's jobs
    of that kind it is."""
    return uuid5_str(_JOB_NAMESPACE, f"{service}/{cause_id}/{kind}/{n}")


def outcome_event_id(job_id: str, generation: int, status: str) -> str:
    return uuid5_str(_JOB_NAMESPACE, f"outcome/{job_id}/{generation}/{status}")


class TransientJobError(Exception):
    """The call may succeed if tried again later."""


class PermanentJobError(Exception):
    """Trying again will not help (the request is refused as it is)."""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    target: str
    key: str
    payload: Mapping[str, Any]
    attempt: int
    generation: int


@dataclass
class JobCall:
    """What a kind's ``perform`` gets: the job and an HTTP client that sends the job id as
    ``Idempotency-Key`` with every request."""

    job: Job
    client: httpx.AsyncClient
    status: str = "none"

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), "Idempotency-Key": self.job.id}
        response = await self.client.request(method, url, headers=headers, **kwargs)
        self.status = str(response.status_code)
        return response


def raise_for_outcome(response: httpx.Response) -> None:
    """The default reading of an HTTP answer: 2xx is success, 408/425/429/5xx transient,
    any other status permanent."""
    code = response.status_code
    if 200 <= code < 300:
        return
    message = f"HTTP {code}: {response.text[:500]}"
    if code in _TRANSIENT_STATUS or code >= 500:
        raise TransientJobError(message)
    raise PermanentJobError(message)


async def http_json_call(call: JobCall) -> dict[str, Any]:
    """A generic kind: ``payload`` = {method, url, json?}; the result is the status and the
    body as text (a job's result must not hold JSON floats: the contract refuses them)."""
    payload = call.job.payload
    response = await call.request(
        str(payload.get("method", "POST")), str(payload["url"]), json=payload.get("json")
    )
    raise_for_outcome(response)
    return {"status": response.status_code, "body": response.text[:_RESULT_BODY_LIMIT]}


Perform = Callable[[JobCall], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class JobKind:
    name: str
    target: str
    perform: Perform
    max_attempts: int = 8
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class JobTarget:
    """An external system: at most ``concurrency`` calls at once from one worker process, at
    most ``rate_per_second`` started per second (None: no rate limit)."""

    name: str
    concurrency: int = 16
    rate_per_second: float | None = None


@dataclass(frozen=True)
class JobSettings:
    lease_seconds: float = 60.0
    poll_seconds: float = 0.5
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 600.0
    metrics_refresh_seconds: float = 5.0


class Jobs:
    """A service's jobs: what it records in its handlers, and what its executor runs."""

    def __init__(
        self,
        service: str,
        kinds: Sequence[JobKind] = (),
        targets: Sequence[JobTarget] = (),
        settings: JobSettings | None = None,
    ) -> None:
        register_internal_topics(service)
        self.service = service
        self.topic = job_result_topic(service)
        self.kinds = {k.name: k for k in kinds}
        self.targets = {t.name: t for t in targets}
        for kind in kinds:
            self.targets.setdefault(kind.target, JobTarget(kind.target))
        self.settings = settings or JobSettings()
        for kind in kinds:
            if kind.timeout_seconds >= self.settings.lease_seconds:
                raise ValueError(f"{kind.name}: a call must end within its lease")
        self._db: AsyncDatabase[Doc] | None = None

    @property
    def collection(self) -> AsyncCollection[Doc]:
        assert self._db is not None, "setup() runs first"
        return self._db[COLLECTION]

    async def setup(self, db: AsyncDatabase[Doc]) -> None:
        self._db = db
        await db[COLLECTION].create_index(
            [("ready_at", ASCENDING)],
            name="ready_at_live",
            partialFilterExpression={"ready_at": {"$exists": True}},
        )
        await db[COLLECTION].create_index([("state", ASCENDING), ("updated_at", ASCENDING)])
        await db[COLLECTION].create_index([("lease_token", ASCENDING)], sparse=True)

    def enqueue_op(
        self,
        *,
        cause_id: str,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        not_before: datetime,
        now: datetime,
        n: int = 0,
    ) -> UpdateOne:
        """The write recording a job, for a service's own bulk write. Recording the same
        cause's job again changes nothing."""
        job_kind = self.kinds[kind]
        refuse_floats(payload)
        job_id = job_id_for(self.service, cause_id, kind, n)
        return UpdateOne(
            {"_id": job_id},
            {
                "$setOnInsert": {
                    "kind": kind,
                    "target": job_kind.target,
                    "key": key,
                    "payload": dict(payload),
                    "state": "pending",
                    "ready_at": not_before,
                    "attempts": 0,
                    "generation": 0,
                    "cause": cause_id,
                    "created_at": now,
                    "updated_at": now,
                }
            },
            upsert=True,
        )

    async def enqueue(
        self,
        session: AsyncClientSession,
        *,
        cause_id: str,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        not_before: datetime,
        now: datetime,
        n: int = 0,
    ) -> str:
        op = self.enqueue_op(
            cause_id=cause_id,
            kind=kind,
            key=key,
            payload=payload,
            not_before=not_before,
            now=now,
            n=n,
        )
        await self.collection.bulk_write([op], session=session)
        return job_id_for(self.service, cause_id, kind, n)


def requeue_filter(job_id: str) -> Doc:
    return {"_id": job_id, "state": "failed"}


def requeue_update(now: datetime) -> list[Doc]:
    """Give a failed job a new generation (so its next outcome has a new id) and a fresh set
    of attempts; its errors so far are kept in ``previous_errors``."""
    return [
        {
            "$set": {
                "state": "pending",
                "ready_at": now,
                "attempts": 0,
                "generation": {"$add": ["$generation", 1]},
                "requeued_at": now,
                "updated_at": now,
                "previous_errors": {
                    "$concatArrays": [{"$ifNull": ["$previous_errors", []]}, ["$last_error"]]
                },
            }
        },
        {"$unset": ["finished_at", "lease_token", "lease_expires_at"]},
    ]


async def requeue(collection: AsyncCollection[Doc], job_id: str, now: datetime) -> bool:
    """False when there is no failed job of that id."""
    result = await collection.update_one(requeue_filter(job_id), requeue_update(now))
    return result.modified_count == 1


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["service", "kind", "target"]
        self.due = Gauge(
            "worker_jobs_due",
            "Jobs waiting to run whose time has come (pending and due, or leased by a holder "
            "whose lease expired), as of the executor's last look.",
            labels,
            registry=registry,
        )
        self.running = Gauge(
            "worker_jobs_running", "Calls in progress in this worker.", labels, registry=registry
        )
        self.succeeded = Counter(
            "worker_jobs_succeeded", "Jobs whose call succeeded.", labels, registry=registry
        )
        self.retried = Counter(
            "worker_jobs_retried",
            "Calls that failed transiently and were put back with backoff.",
            labels,
            registry=registry,
        )
        self.failed = Counter(
            "worker_jobs_failed",
            "Jobs that failed for good (permanent error or out of attempts); an operator can "
            "requeue them.",
            labels,
            registry=registry,
        )
        self.latency = Histogram(
            "worker_job_call_seconds",
            "Duration of one external call, by target and HTTP status (or error).",
            ["service", "target", "status"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )


class _Bucket:
    """A token bucket: ``rate`` tokens per second, up to ``rate`` (at least one) stored."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def available(self) -> bool:
        self._refill()
        return self.tokens >= 1.0

    def take(self) -> None:
        self._refill()
        self.tokens -= 1.0

    def whole_tokens(self) -> int:
        self._refill()
        return int(self.tokens)

    def wait_seconds(self) -> float:
        self._refill()
        return max(0.0, (1.0 - self.tokens) / self.rate)


Publish = Callable[[Sequence[Outbound]], Awaitable[None]]


class _Coalescing:
    """Publishes the outcomes of concurrent calls together: the worker's producer is
    idempotent, so one request per partition is in flight at a time, and one outcome per
    request would bound the executor at one broker round trip per job."""

    def __init__(self, publish: Publish) -> None:
        self.publish = publish
        self.waiting: list[tuple[Outbound, asyncio.Future[None]]] = []
        self.sending = False
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    async def send(self, message: Outbound) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((message, done))
        if not self.sending:
            self.sending = True
            self.task = asyncio.get_running_loop().create_task(self._drain())
        await done

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    await self.publish([m for m, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self.sending = False


@dataclass
class JobExecutor:
    """Runs one service's jobs in a worker process. Idle when the service has none."""

    jobs: Jobs | None
    publish: Publish
    registry: CollectorRegistry
    client: httpx.AsyncClient | None = None
    owner: str = field(default_factory=lambda: f"executor-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.metrics = JobMetrics(self.registry)
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        # Jobs leased and not yet ended, per target (waiting for a call slot, calling, or
        # recording the outcome); the call slots themselves are the semaphores.
        self._in_flight: dict[str, int] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._own_client = False
        self._due_checked = 0.0
        self._outcomes = _Coalescing(self.publish)

    @classmethod
    def for_service(
        cls, service: Any, publish: Publish, registry: CollectorRegistry
    ) -> JobExecutor:
        jobs = getattr(service, "jobs", None)
        return cls(jobs if isinstance(jobs, Jobs) else None, publish, registry)

    async def start(self) -> None:
        if self.jobs is None or not self.jobs.kinds:
            return
        if self.client is None:
            self.client = httpx.AsyncClient()
            self._own_client = True
        for target in self.jobs.targets.values():
            self._slots[target.name] = asyncio.Semaphore(target.concurrency)
            if target.rate_per_second is not None:
                self._buckets[target.name] = _Bucket(target.rate_per_second)
        self._task = asyncio.create_task(self._run(), name=f"{self.jobs.service}-jobs")

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop leasing; give calls in progress ``grace_seconds`` to end, then cancel them:
        a canceled call's job is taken again once its lease expired."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._calls:
            _, late = await asyncio.wait(set(self._calls), timeout=grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._own_client and self.client is not None:
            await self.client.aclose()

    async def _run(self) -> None:
        assert self.jobs is not None
        while not self._stopping:
            try:
                started = await self._lease_what_fits()
                await self._refresh_due()
            except Exception as exc:  # MongoDB away: try again after a pause
                log.warning("jobs_lease_failed", error=f"{type(exc).__name__}: {exc}")
                started = 0
            if started == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_seconds())

    def _idle_seconds(self) -> float:
        assert self.jobs is not None
        waits = [self.jobs.settings.poll_seconds]
        waits += [b.wait_seconds() for b in self._buckets.values() if not b.available()]
        return max(0.001, min(waits))

    def _room(self, target: JobTarget) -> int:
        """How many more jobs of ``target`` to lease now. Without a rate limit, up to twice
        the cap, so a job is ready the moment a call slot frees and leases come in batches
        (a lease is a round trip to MongoDB; one per job would bound the throughput). With
        a rate limit, no more than the tokens there are, so no leased job waits long."""
        leased = self._in_flight.get(target.name, 0)
        bucket = self._buckets.get(target.name)
        if bucket is None:
            return 2 * target.concurrency - leased
        return min(target.concurrency - leased, bucket.whole_tokens())

    async def _lease_what_fits(self) -> int:
        """Lease as many due jobs as each target has room for."""
        assert self.jobs is not None
        started = 0
        for target in self.jobs.targets.values():
            room = self._room(target)
            if room <= 0 or self._stopping:
                continue
            for doc in await self._lease(target.name, room):
                self._begin(doc)
                started += 1
        return started

    async def _lease(self, target: str, limit: int) -> list[Doc]:
        """Up to ``limit`` due jobs of ``target``, leased under one fresh token: candidates
        are read, then leased with one update that re-checks each is still due (atomic per
        job, so another executor's lease in between wins and ours skips it)."""
        assert self.jobs is not None
        now = datetime.now(UTC)
        due: Doc = {
            "ready_at": {"$exists": True, "$lte": now},
            "target": target,
            "kind": {"$in": list(self.jobs.kinds)},
        }
        token = uuid.uuid4().hex
        lease_until = now + timedelta(seconds=self.jobs.settings.lease_seconds)
        lease: Doc = {
            "$set": {
                "state": "running",
                "lease_token": token,
                "lease_expires_at": lease_until,
                "ready_at": lease_until,
                "leased_by": self.owner,
                "updated_at": now,
            },
            "$inc": {"attempts": 1},
        }
        if limit == 1:  # the steady state, one slot freed at a time: one round trip
            one = await self.jobs.collection.find_one_and_update(
                due, lease, sort=[("ready_at", ASCENDING)], return_document=ReturnDocument.AFTER
            )
            return [] if one is None else [one]
        candidates = [
            d["_id"]
            async for d in self.jobs.collection.find(due, {"_id": 1})
            .sort("ready_at", ASCENDING)
            .limit(limit)
        ]
        if not candidates:
            return []
        await self.jobs.collection.update_many({**due, "_id": {"$in": candidates}}, lease)
        return await self.jobs.collection.find({"lease_token": token}).to_list()

    def _begin(self, doc: Doc) -> None:
        target = doc["target"]
        self._in_flight[target] = self._in_flight.get(target, 0) + 1
        if target in self._buckets:
            self._buckets[target].take()
        task = asyncio.create_task(self._perform(doc))
        self._calls.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._calls.discard(t)
            self._in_flight[target] -= 1
            self._wake.set()

        task.add_done_callback(done)

    async def _perform(self, doc: Doc) -> None:
        assert self.jobs is not None
        assert self.client is not None
        kind = self.jobs.kinds[doc["kind"]]
        job = Job(
            id=doc["_id"],
            kind=kind.name,
            target=kind.target,
            key=doc["key"],
            payload=doc.get("payload", {}),
            attempt=doc["attempts"],
            generation=doc.get("generation", 0),
        )
        labels = (self.jobs.service, kind.name, kind.target)
        call = JobCall(job, self.client)
        try:
            # The cap is on calls to the target: recording the outcome does not load it.
            async with self._slots[kind.target]:
                if not await self._enough_lease_for(doc, kind):
                    return  # lost it while waiting for a slot: its new holder calls
                self.metrics.running.labels(*labels).inc()
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(kind.timeout_seconds):
                        result = await kind.perform(call)
                finally:
                    self.metrics.running.labels(*labels).dec()
        except (TransientJobError, httpx.TransportError, TimeoutError) as exc:
            self._observe(kind, call, started, exc)
            if job.attempt >= kind.max_attempts:
                await self._finish(doc, job, "failed", {}, _describe(exc))
            else:
                await self._retry_later(doc, job, _describe(exc))
        except Exception as exc:  # PermanentJobError, or a bug in perform: no retry helps
            self._observe(kind, call, started, exc)
            await self._finish(doc, job, "failed", {}, _describe(exc))
        else:
            self._observe(kind, call, started, None)
            await self._finish(doc, job, "succeeded", result, None)

    async def _enough_lease_for(self, doc: Doc, kind: JobKind) -> bool:
        """A leased job may wait for a call slot; before calling, the lease must outlast the
        call, or another executor could take the job while it is being called. Renewed when
        short, under the lease token."""
        assert self.jobs is not None
        now = datetime.now(UTC)
        left = (_aware(doc["lease_expires_at"]) - now).total_seconds()
        if left > kind.timeout_seconds + 1:
            return True
        until = now + timedelta(seconds=self.jobs.settings.lease_seconds)
        renewed = await self._update_held(
            doc, {"$set": {"lease_expires_at": until, "ready_at": until, "updated_at": now}}
        )
        if renewed:
            doc["lease_expires_at"] = until
        return renewed

    def _observe(
        self, kind: JobKind, call: JobCall, started: float, exc: BaseException | None
    ) -> None:
        assert self.jobs is not None
        status = call.status if call.status != "none" or exc is None else "error"
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            status = "timeout"
        self.metrics.latency.labels(self.jobs.service, kind.target, status).observe(
            time.perf_counter() - started
        )

    async def _retry_later(self, doc: Doc, job: Job, error: str) -> None:
        assert self.jobs is not None
        s = self.jobs.settings
        ceiling = min(s.backoff_cap_seconds, s.backoff_base_seconds * 2 ** (job.attempt - 1))
        delay = random.uniform(0, ceiling)  # noqa: S311 - full jitter, not crypto
        now = datetime.now(UTC)
        updated = await self._update_held(
            doc,
            {
                "$set": {
                    "state": "pending",
                    "ready_at": now + timedelta(seconds=delay),
                    "last_error": error,
                    "updated_at": now,
                },
                "$unset": {"lease_token": "", "lease_expires_at": ""},
            },
        )
        if updated:
            self.metrics.retried.labels(self.jobs.service, job.kind, job.target).inc()
            log.info("job_retrying", job_id=job.id, attempt=job.attempt, delay_s=round(delay, 3))

    async def _finish(
        self, doc: Doc, job: Job, status: str, result: dict[str, Any], error: str | None
    ) -> None:
        """Publish the outcome, then record the end. A crash between the two re-runs the job
        after its lease (the target sees the same idempotency key) and re-publishes the same
        outcome id, which the service's inbox drops."""
        assert self.jobs is not None
        outcome = JobFinished(
            job_id=job.id,
            kind=job.kind,
            target=job.target,
            entity_key=job.key,
            status=status,
            attempts=job.attempt,
            result=result,
            error=error,
        )
        now = datetime.now(UTC)
        value = encode_wire(
            event_type=JobFinished.EVENT_TYPE,
            data_json=outcome.model_dump_json(by_alias=True),
            id=outcome_event_id(job.id, job.generation, status),
            source=f"/{self.jobs.service}/jobs",
            time=now,
            subject=job.key,
        )
        message = Outbound(self.jobs.topic, job.key.encode(), value, JobFinished.EVENT_TYPE, job.id)
        if not await self._publish_within_lease(doc, message):
            return  # the lease runs out and the job is taken again
        changes: Doc = {
            "state": status,
            "finished_at": now,
            "updated_at": now,
            "result": result,
        }
        if error is not None:
            changes["last_error"] = error
        updated = await self._update_held(
            doc,
            {
                "$set": changes,
                "$unset": {"ready_at": "", "lease_token": "", "lease_expires_at": ""},
            },
        )
        if updated:
            counter = self.metrics.succeeded if status == "succeeded" else self.metrics.failed
            counter.labels(self.jobs.service, job.kind, job.target).inc()
            if status == "failed":
                log.warning("job_failed", job_id=job.id, kind=job.kind, error=error)

    async def _publish_within_lease(self, doc: Doc, message: Outbound) -> bool:
        """Publish, retrying transient failures while the lease has time left: giving up
        costs a second call to the target once the lease expired."""
        attempt = 0
        while True:
            try:
                await self._outcomes.send(message)
                return True
            except Exception as exc:
                delay = backoff_seconds(attempt)
                left = (_aware(doc["lease_expires_at"]) - datetime.now(UTC)).total_seconds()
                if not is_transient(exc) or self._stopping or left < delay + 1:
                    log.warning("job_outcome_unpublished", job_id=doc["_id"], error=_describe(exc))
                    return False
                log.info("job_outcome_publish_retrying", job_id=doc["_id"], error=_describe(exc))
                await asyncio.sleep(delay)
                attempt += 1

    async def _update_held(self, doc: Doc, update: Doc) -> bool:
        """Write only while we still hold the lease: after it expired, another executor may
        have taken the job, and its word counts."""
        assert self.jobs is not None
        try:
            result = await self.jobs.collection.update_one(
                {"_id": doc["_id"], "lease_token": doc["lease_token"]}, update
            )
        except Exception as exc:  # the lease expires and the job is taken again
            log.warning("job_update_failed", job_id=doc["_id"], error=_describe(exc))
            return False
        if result.matched_count == 0:
            log.warning("job_lease_lost", job_id=doc["_id"])
        return result.matched_count == 1

    async def _refresh_due(self) -> None:
        assert self.jobs is not None
        if time.monotonic() - self._due_checked < self.jobs.settings.metrics_refresh_seconds:
            return
        self._due_checked = time.monotonic()
        counts: dict[tuple[str, str], int] = {
            (k.name, k.target): 0 for k in self.jobs.kinds.values()
        }
        pipeline: list[Doc] = [
            {"$match": {"ready_at": {"$exists": True, "$lte": datetime.now(UTC)}}},
            {"$group": {"_id": {"kind": "$kind", "target": "$target"}, "n": {"$sum": 1}}},
        ]
        async for row in await self.jobs.collection.aggregate(pipeline):
            counts[(row["_id"]["kind"], row["_id"]["target"])] = row["n"]
        for (kind, target), n in counts.items():
            self.metrics.due.labels(self.jobs.service, kind, target).set(n)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]
