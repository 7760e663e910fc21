"""The FastStream app factory every service uses: one batch subscriber over the service's
input topics, at-least-once, plus /metrics, /healthz and /readyz on the service's HTTP port."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from prometheus_client import make_asgi_app
from pymongo import AsyncMongoClient

from shared.runtime.engine import DeadLetter, Engine, Outbound, RawRecord, Service
from shared.runtime.jobs import JobExecutor
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.settings import WorkerSettings
from shared.topics import dlq_topic

log = get_logger("worker")
_FULL_COLLECTION_EVERY_BATCHES = 200


class KafkaOutput:
    """Publishes outputs and dead letters through one plain idempotent producer: outputs are
    already serialised by the engine, and dead letters must go out byte for byte. (Going
    through the broker's publisher per message cost about a tenth of the worker's CPU.)"""

    def __init__(self, service: str, topic_prefix: str, metrics: WorkerMetrics) -> None:
        self.service = service
        self.topic_prefix = topic_prefix
        self.metrics = metrics
        self.producer: AIOKafkaProducer | None = None
        # Java's murmur2 partitioner: the same key lands where any other client puts it.
        self.partitioner = DefaultPartitioner()

    async def publish(self, messages: Sequence[Outbound]) -> None:
        """Publish one batch's outputs and wait for every acknowledgement. Messages are
        grouped per partition (chosen by key, as any Kafka producer would) into record
        batches: one future per few hundred messages instead of one per message, which was
        the largest single cost of a many-output worker. Order within a partition is kept."""
        producer = self.producer
        assert producer is not None, "started in the lifespan"
        by_partition: dict[tuple[str, int], list[Outbound]] = {}
        partitions_of: dict[str, list[int]] = {}
        per_topic: Counter[str] = Counter()
        for m in messages:
            topic = self.topic_prefix + m.topic
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = partitions_of[topic] = sorted(await producer.partitions_for(topic))
            partition = self.partitioner(m.key, partitions, partitions)
            by_partition.setdefault((topic, partition), []).append(m)
            per_topic[m.topic] += 1
        pending = []
        for (topic, partition), batch_messages in by_partition.items():
            batch = producer.create_batch()
            for m in batch_messages:
                headers = [
                    ("content-type", b"application/cloudevents+json"),
                    ("ce_type", m.event_type.encode()),
                ]
                if batch.append(key=m.key, value=m.value, timestamp=None, headers=headers) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    appended = batch.append(
                        key=m.key, value=m.value, timestamp=None, headers=headers
                    )
                    assert appended is not None, "one message always fits an empty batch"
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
        for topic, count in per_topic.items():
            self.metrics.published.labels(self.service, topic).inc(count)

    async def dead_letter(self, letters: Sequence[DeadLetter], consumer_group: str) -> None:
        assert self.producer is not None, "started in the lifespan"
        pending = []
        for letter in letters:
            record = letter.record
            headers = [
                *record.headers,
                ("dlq-error-kind", letter.kind.encode()),
                ("dlq-error", letter.error.encode()),
                ("dlq-source-topic", record.topic.encode()),
                ("dlq-source-partition", str(record.partition).encode()),
                ("dlq-source-offset", str(record.offset).encode()),
                ("dlq-consumer-group", consumer_group.encode()),
            ]
            pending.append(
                await self.producer.send(
                    dlq_topic(record.topic), value=record.value, key=record.key, headers=headers
                )
            )
        await asyncio.gather(*pending)


async def _keep_raw(message: StreamMessage[Any]) -> Any:
    # The engine validates against the contract itself, so that a bad record is dead-lettered
    # with its field named instead of failing inside the framework's JSON decoding.
    return None


@dataclass
class Worker:
    """A service wired to Kafka, MongoDB and Prometheus. ``app`` runs it as a process;
    ``start``/``stop`` run it inside a test's event loop."""

    service: Service
    settings: WorkerSettings
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    def __post_init__(self) -> None:
        s = self.settings
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            s.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000
        )
        self.db = self.mongo[s.mongodb_database]
        self.broker = KafkaBroker(
            s.kafka_bootstrap_servers,
            client_id=f"{self.service.name}-worker",
            enable_idempotence=True,
            middlewares=[
                KafkaPrometheusMiddleware(
                    registry=self.metrics.registry, app_name=self.service.name
                )
            ],
            # Per-message lines at DEBUG; handler exceptions still reach the log at ERROR.
            log_level=logging.DEBUG,
            # A plain stdlib logger, rendered by configure_logging (not FastStream's colours).
            logger=logging.getLogger("faststream.access.kafka"),
        )
        self.output = KafkaOutput(self.service.name, s.topic_prefix, self.metrics)
        # The service's external jobs (idle when it has none), publishing through our producer.
        self.jobs = JobExecutor.for_service(
            self.service, self.output.publish, self.metrics.registry
        )
        self.engine = Engine(
            self.service,
            self.db,
            self.output,
            self.metrics,
            topic_prefix=s.topic_prefix,
            inbox_ttl=timedelta(days=s.inbox_ttl_days),
            park_ttl=timedelta(seconds=s.park_ttl_seconds),
        )
        self.group_id = s.topic_prefix + self.service.name
        self.subscriber = self.broker.subscriber(
            *(s.topic_prefix + t for t in self.service.input_topics),
            batch=True,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,
            max_records=s.batch_max_records,
            batch_timeout_ms=s.batch_timeout_ms,
            auto_offset_reset=s.auto_offset_reset,
            decoder=_keep_raw,
            title=f"{self.service.name}-inputs",
        )
        self.subscriber(self._on_batch)
        self._lag_task: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Task[None] | None = None
        self.fatal: BaseException | None = None
        self.draining = False
        self._batches = 0

    async def _on_batch(self, message: KafkaMessage) -> None:
        """Store this batch, then publish it while the next one is fetched and stored.

        The publish of batch N (awaiting the broker's acks) overlaps with fetching, decoding
        and storing batch N+1; batch N+1's outputs are only sent once N's are acknowledged,
        so outputs keep their order. Offsets are committed explicitly, per batch, only after
        that batch's outputs are acknowledged: a crash at any point leaves the records
        uncommitted and the inbox turns their redelivery into a re-publication."""
        if self.fatal is not None:
            raise RuntimeError("worker is failing; not consuming") from self.fatal
        raw = message.raw_message
        consumer_records = raw if isinstance(raw, tuple | list) else (raw,)
        records = [
            RawRecord(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value,
                headers=tuple(r.headers),
            )
            for r in consumer_records
        ]
        outputs = await self.engine.store_batch(records)
        await self._settle_previous()
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        self._in_flight = asyncio.create_task(self._publish_then_commit(outputs, offsets))
        if self.draining:  # stopping: nothing may be left in flight when the consumer closes
            await self._settle_previous()
        self._collect_garbage()

    async def drain(self) -> None:
        """Before the consumer stops: publish and commit what is in flight."""
        self.draining = True
        with contextlib.suppress(Exception):  # a fatal publish error is already logged
            await self._settle_previous()

    async def _settle_previous(self) -> None:
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def _publish_then_commit(
        self, outputs: list[Outbound], offsets: dict[TopicPartition, int]
    ) -> None:
        try:
            await self.engine.publish(outputs)
        except Exception as exc:
            # Not transient (those are retried for ever): nothing after this batch may be
            # committed. Stop consuming and fail the probes; a restart resumes from the last
            # committed offset and the inbox re-publishes what was stored.
            self.fatal = exc
            log.critical("publish_failed_stopping", error=f"{type(exc).__name__}: {exc}")
            raise
        consumer = self.subscriber.consumer
        if consumer is None:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another worker; it will see these records again and
            # the inbox turns them into replays. Nothing is lost.
            log.warning("offset_commit_failed", error=f"{type(exc).__name__}: {exc}")

    def _collect_garbage(self) -> None:
        # run_worker turns automatic collection off: during a batch nearly every object is
        # alive, so collections mid-batch traverse tens of thousands of objects and free
        # nothing (measured: 8% of the worker's time). Between batches the young generations
        # hold almost only garbage; a full collection now and then keeps old cycles bounded.
        if gc.isenabled():
            return
        self._batches += 1
        gc.collect(2 if self._batches % _FULL_COLLECTION_EVERY_BATCHES == 0 else 0)

    # -- lifecycle ------------------------------------------------------------------------

    async def open_resources(self) -> None:
        configure_logging(self.settings.log_level)
        self.metrics.watch_gc(self.service.name)
        await self.engine.setup()
        self.output.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            enable_idempotence=True,  # implies acks=all: a publish is awaited until durable
            linger_ms=2,
            max_batch_size=512 * 1024,  # below the broker's 1 MB message limit
            client_id=f"{self.service.name}-out",
        )
        await self.output.producer.start()
        await self.jobs.start()
        self._lag_task = asyncio.create_task(self._export_lag())
        log.info("worker_ready", service=self.service.name, topics=self.service.input_topics)

    async def close_resources(self) -> None:
        self.engine.stopping = True
        with contextlib.suppress(Exception):
            await self._settle_previous()  # its commit may fail once the consumer is gone
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        await self.jobs.stop()  # before the producer: calls in progress publish their outcome
        if self.output.producer is not None:
            await self.output.producer.stop()
        await self.mongo.close()
        self.metrics.unwatch_gc()

    async def start(self) -> None:
        await self.open_resources()
        await self.broker.start()

    async def stop(self) -> None:
        await self.drain()
        self.engine.stopping = True
        await self.broker.stop()
        await self.close_resources()

    async def _export_lag(self) -> None:
        gauge = self.metrics.consumer_lag
        while True:
            await asyncio.sleep(self.settings.lag_refresh_seconds)
            consumer = self.subscriber.consumer
            if consumer is None:
                continue
            try:
                lags = {}
                for tp in consumer.assignment():
                    highwater = consumer.highwater(tp)
                    if highwater is None:
                        continue
                    position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
                    topic = self.engine.logical_topic(tp.topic)
                    lags[(topic, str(tp.partition))] = max(0, highwater - position)
                gauge.clear()
                for (topic, partition), lag in lags.items():
                    gauge.labels(self.service.name, topic, partition).set(lag)
            except Exception as exc:  # lag is advisory: never let it take the worker down
                log.debug("lag_export_failed", error=f"{type(exc).__name__}: {exc}")

    async def ready(self) -> bool:
        if self.fatal is not None:
            return False
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), timeout=2.0)
        except Exception:
            return False
        return await self.broker.ping(timeout=2.0)

    # -- the process ----------------------------------------------------------------------

    def asgi_app(self) -> AsgiFastStream:
        worker = self

        @get(include_in_schema=False)
        async def healthz(scope: Any) -> AsgiResponse:
            if worker.fatal is not None:
                return AsgiResponse(b"publishing failed: restart me", 500)
            return AsgiResponse(b"ok", 200)

        @get(include_in_schema=False)
        async def readyz(scope: Any) -> AsgiResponse:
            if await worker.ready():
                return AsgiResponse(b"ready", 200)
            return AsgiResponse(b"kafka or mongodb unreachable", 503)

        @contextlib.asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            await worker.open_resources()
            try:
                yield
            finally:
                await worker.close_resources()

        return AsgiFastStream(
            self.broker,
            asgi_routes=[
                ("/metrics", make_asgi_app(self.metrics.registry)),
                ("/healthz", healthz),
                ("/readyz", readyz),
            ],
            lifespan=lifespan,
            on_shutdown=[worker.drain],  # runs before the broker (and its consumer) stops
        )
