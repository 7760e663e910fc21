"""The FastStream app factory every service uses: one batch subscriber over the service's
input topics, at-least-once, plus /metrics, /healthz and /readyz on the service's HTTP port."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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

from shared.runtime.dead_letters import DeadLetterStore
from shared.runtime.engine import DeadLetter, Engine, Outbound, RawRecord, Service, Stopping
from shared.runtime.jobs import JobExecutor
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.metrics import DEAD_LETTER_KINDS, WorkerMetrics
from shared.runtime.settings import WorkerSettings
from shared.runtime.transient import ProducerReset, is_producer_state_lost
from shared.topics import dlq_topic

log = get_logger("worker")
_FULL_COLLECTION_EVERY_BATCHES = 200


class KafkaOutput:
    """Publishes outputs and dead letters through one plain idempotent producer: outputs are
    already serialised by the engine, and dead letters must go out byte for byte. (Going
    through the broker's publisher per message cost about a tenth of the worker's CPU.)"""

    def __init__(
        self, service: str, topic_prefix: str, metrics: WorkerMetrics, bootstrap: str = ""
    ) -> None:
        self.service = service
        self.topic_prefix = topic_prefix
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.producer: AIOKafkaProducer | None = None
        # Java's murmur2 partitioner: the same key lands where any other client puts it.
        self.partitioner = DefaultPartitioner()

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,  # implies acks=all: a publish is awaited until durable
            linger_ms=2,
            max_batch_size=512 * 1024,  # below the broker's 1 MB message limit
            client_id=f"{self.service}-out",
        )
        await self.producer.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            # Flushing waits for the broker; a worker that stops must not wait for ever.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout=3.0)

    async def replace_producer(self, cause: BaseException) -> None:
        """The broker lost this producer's state (its id or sequence numbers, e.g. after it
        was replaced by a fresh broker): an idempotent producer never recovers from that by
        itself. A new one gets a new producer id; the caller publishes again."""
        log.error("producer_state_lost_recreating", error=f"{type(cause).__name__}: {cause}")
        await self.stop()
        await self.start()

    def _sender_died(self) -> BaseException | None:
        sender = getattr(self.producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        if task is None or not task.done() or task.cancelled():
            return None
        died: BaseException | None = task.exception()
        return died

    async def _recovering(self, send: Any, *args: Any) -> None:
        died = self._sender_died()
        if died is not None:
            await self.replace_producer(died)
        try:
            await send(*args)
        except Exception as exc:
            if not is_producer_state_lost(exc) and self._sender_died() is None:
                raise
            await self.replace_producer(exc)
            raise ProducerReset(f"producer recreated after {type(exc).__name__}") from exc

    async def publish(self, messages: Sequence[Outbound]) -> None:
        await self._recovering(self._publish, messages)

    async def dead_letter(self, letters: Sequence[DeadLetter], consumer_group: str) -> None:
        await self._recovering(self._dead_letter, letters, consumer_group)

    async def _publish(self, messages: Sequence[Outbound]) -> None:
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

    async def _dead_letter(self, letters: Sequence[DeadLetter], consumer_group: str) -> None:
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
            if letter.full_record_at is not None:
                # Truncated: the full record is kept in the worker's database.
                headers += [
                    ("dlq-truncated", b"true"),
                    ("dlq-original-bytes", str(letter.original_bytes).encode()),
                    ("dlq-full-record", letter.full_record_at.encode()),
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


class RetentionMismatch(Exception):
    """The inbox would forget event ids while Kafka can still redeliver their records."""


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
        self.dead_letter_store = DeadLetterStore(self.mongo[s.ops_mongodb_database])
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
            # A batch still in hand when stopping is cancelled after this: it is uncommitted,
            # so its redelivery after the restart is a replay, never a loss.
            graceful_timeout=s.shutdown_timeout_seconds / 2,
        )
        self.output = KafkaOutput(
            self.service.name, s.topic_prefix, self.metrics, s.kafka_bootstrap_servers
        )
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
            max_record_bytes=s.max_record_bytes,
            dead_letter_store=self.dead_letter_store,
        )
        self.group_id = s.topic_prefix + self.service.name
        self.subscriber = self.broker.subscriber(
            *(s.topic_prefix + t for t in self.service.input_topics),
            batch=True,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,
            max_records=s.batch_max_records,
            batch_timeout_ms=s.batch_timeout_ms,
            fetch_min_bytes=s.fetch_min_bytes,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            auto_offset_reset=s.auto_offset_reset,
            decoder=_keep_raw,
            title=f"{self.service.name}-inputs",
        )
        self.subscriber(self._on_batch)
        self._lag_task: asyncio.Task[None] | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self._dead_letter_task: asyncio.Task[None] | None = None
        # Set when closing: the background loops end on it even if a cancellation is lost
        # inside a library's own timeout (seen: a test's teardown waiting 300 s on one).
        self._closing = False
        self._in_flight: asyncio.Task[None] | None = None
        self.fatal: BaseException | None = None
        self.draining = False
        self._batches = 0
        self._total_lag = 0
        # Batches handed to the worker whose offsets are not committed yet: the consumer's
        # position is past their records, so the lag alone does not show them waiting.
        self._uncommitted_batches = 0
        self._last_progress = time.monotonic()
        self.metrics.stopped.labels(self.service.name).set(0)
        self.metrics.ready.labels(self.service.name).set(0)

    async def _on_batch(self, message: KafkaMessage) -> None:
        """Store this batch, then publish it while the next one is fetched and stored.

        The publish of batch N (awaiting the broker's acks) overlaps with fetching, decoding
        and storing batch N+1; batch N+1's outputs are only sent once N's are acknowledged,
        so outputs keep their order. Offsets are committed explicitly, per batch, only after
        that batch's outputs are acknowledged: a crash at any point leaves the records
        uncommitted and the inbox turns their redelivery into a re-publication.

        Whatever escapes a batch stops consumption for good (FastStream would log it and
        fetch the next batch, whose commit would move past this one): nothing is committed
        from then on, the probes fail, and the restart they call for redelivers the batch."""
        if self.fatal is not None:
            self._pause()  # e.g. partitions assigned after the stop; they stay uncommitted
            return
        self._uncommitted_batches += 1
        try:
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
        except Exception as exc:
            self.stop_consuming(exc, "store")
            return
        self._collect_garbage()

    def stop_consuming(self, exc: BaseException, stage: str) -> None:
        """Stop for a failure that must not be committed past (once; later ones are logged
        at debug level). The consumer is paused; the offsets stay where they were."""
        if self.fatal is not None:
            log.debug("after_stop_failure", error=f"{type(exc).__name__}: {exc}")
            return
        self.fatal = exc
        self.metrics.stopped.labels(self.service.name).set(1)
        self.metrics.ready.labels(self.service.name).set(0)
        self._pause()
        if isinstance(exc, Stopping) or self.engine.stopping:
            log.warning("batch_left_uncommitted_on_shutdown", stage=stage, error=str(exc)[:300])
            return
        log.critical(
            "worker_stopped_uncommitted_failure",
            service=self.service.name,
            stage=stage,
            error=f"{type(exc).__name__}: {exc}"[:1000],
            action="restart the worker; the uncommitted records are redelivered and replayed",
        )

    def _pause(self) -> None:
        consumer = self.subscriber.consumer
        if consumer is None:
            return
        with contextlib.suppress(Exception):
            consumer.pause(*consumer.assignment())

    async def drain(self) -> None:
        """Before the consumer stops: publish and commit what is in flight, within a bound
        (retry loops give up at once; an unfinished batch stays uncommitted)."""
        self.draining = True
        self.engine.request_stop()
        with contextlib.suppress(Exception):  # a fatal publish error is already logged
            await asyncio.wait_for(
                self._settle_previous(), timeout=self.settings.shutdown_timeout_seconds / 3
            )

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
            self.stop_consuming(exc, "publish")
            raise
        consumer = self.subscriber.consumer
        if consumer is None or self.fatal is not None:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another worker; it will see these records again and
            # the inbox turns them into replays. Nothing is lost.
            log.warning("offset_commit_failed", error=f"{type(exc).__name__}: {exc}")
            self._uncommitted_batches -= 1
            return
        self._uncommitted_batches -= 1
        self._last_progress = time.monotonic()

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

    async def check_retention(self) -> None:
        """Refuse to start when Kafka keeps input records longer than the inbox remembers
        their ids: a record replayed after its id was forgotten would act a second time."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            kept = await _retention_ms(
                admin, [self.settings.topic_prefix + t for t in self.service.input_topics]
            )
            await self._check_dead_letter_retention(admin)
        finally:
            await admin.close()
        inbox_ms = self.settings.inbox_ttl_days * 86_400_000
        too_long = {t: ms for t, ms in kept.items() if ms is None or ms > inbox_ms}
        if too_long:
            shown = ", ".join(
                f"{t}: {'forever' if ms is None else f'{ms / 86_400_000:g} days'}"
                for t, ms in sorted(too_long.items())
            )
            raise RetentionMismatch(
                f"the inbox remembers processed event ids for {self.settings.inbox_ttl_days} "
                f"days but Kafka keeps input records longer ({shown}); a record replayed after "
                f"the inbox forgot it would act again. Raise the service's INBOX_TTL_DAYS above "
                "the retention, or lower the topics' retention.ms (and use cleanup.policy=delete)"
            )

    async def _check_dead_letter_retention(self, admin: AIOKafkaAdminClient) -> None:
        """Refuse to start when a dead-letter topic keeps records for less than documented
        (``dlq_min_retention_days``): the ops store holds every dead letter first, and the
        topic is the second copy an operator may read with a Kafka console."""
        kept = await _retention_ms(
            admin, [dlq_topic(self.settings.topic_prefix + t) for t in self.service.input_topics]
        )
        least_ms = self.settings.dlq_min_retention_days * 86_400_000
        too_short = {t: ms for t, ms in kept.items() if ms is not None and ms < least_ms}
        if too_short:
            shown = ", ".join(
                f"{t}: {ms / 86_400_000:g} days" for t, ms in sorted(too_short.items())
            )
            raise RetentionMismatch(
                f"dead-letter topics keep records for less than the documented "
                f"{self.settings.dlq_min_retention_days:g} days ({shown}); raise their "
                "retention.ms (docs/dead-letters.md)"
            )

    async def open_resources(self) -> None:
        self._closing = False
        configure_logging(self.settings.log_level)
        self.metrics.preinitialise(self.service.name, self.service.input_topics)
        self.metrics.watch_gc(self.service.name)
        try:
            await self.check_retention()
        except RetentionMismatch as exc:
            log.critical("retention_mismatch_refusing_to_start", error=str(exc))
            self.metrics.unwatch_gc()
            await self.mongo.close()
            raise
        await self.engine.setup()
        await self.output.start()
        await self.jobs.start()
        self._lag_task = asyncio.create_task(self._export_lag())
        self._ready_task = asyncio.create_task(self._export_ready())
        self._dead_letter_task = asyncio.create_task(self._export_dead_letters())
        log.info(
            "worker_ready",
            service=self.service.name,
            topics=self.service.input_topics,
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    async def close_resources(self) -> None:
        self.engine.request_stop()
        with contextlib.suppress(Exception):
            # its commit may fail once the consumer is gone
            await asyncio.wait_for(self._settle_previous(), timeout=2.0)
        self._closing = True
        background = [
            t for t in (self._lag_task, self._ready_task, self._dead_letter_task) if t is not None
        ]
        for task in background:
            task.cancel()
        if background:  # bounded: a loop that lost its cancellation ends on _closing
            await asyncio.wait(background, timeout=3.0)
        # Before the producer: calls in progress publish their outcome; a call cut short is
        # taken again once its lease expires. Short grace: a stop must end within 10 s.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.jobs.stop(grace_seconds=2.0), timeout=3.0)
        await self.output.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.mongo.close(), timeout=2.0)
        self.metrics.unwatch_gc()

    async def start(self) -> None:
        await self.open_resources()
        await self.broker.start()

    async def stop(self) -> None:
        await self.drain()
        await self.broker.stop()
        await self.close_resources()

    async def _export_lag(self) -> None:
        gauge = self.metrics.consumer_lag
        while not self._closing:
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
                self._total_lag = sum(lags.values())
                if self._total_lag == 0 and self._uncommitted_batches == 0:
                    self._last_progress = time.monotonic()  # nothing to do is not a stall
            except Exception as exc:  # lag is advisory: never let it take the worker down
                log.debug("lag_export_failed", error=f"{type(exc).__name__}: {exc}")

    async def _export_dead_letters(self) -> None:
        """Pending dead letters and the operators' actions, read back from the ops store."""
        m = self.metrics
        name = self.service.name
        while not self._closing:
            try:
                store = self.dead_letter_store
                counts, oldest = await asyncio.wait_for(store.pending_counts(name), 5.0)
                actions = await asyncio.wait_for(store.action_counts(name), 5.0)
                m.dead_letters_pending.clear()
                m.dead_letters_oldest_pending.clear()
                topics = {*self.service.input_topics, *(t for t, _ in counts)}
                for topic in topics:
                    for kind in {*DEAD_LETTER_KINDS, *(k for t, k in counts if t == topic)}:
                        m.dead_letters_pending.labels(name, topic, kind).set(
                            counts.get((topic, kind), 0)
                        )
                    m.dead_letters_oldest_pending.labels(name, topic).set(oldest.get(topic, 0.0))
                for action, count in actions.items():
                    m.dead_letter_actions.values[(name, action)] = count
            except Exception as exc:  # advisory, like the lag
                log.debug("dead_letter_export_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.settings.dead_letter_refresh_seconds)

    async def _export_ready(self) -> None:
        gauge = self.metrics.ready.labels(self.service.name)
        while not self._closing:
            gauge.set(1 if await self.ready() else 0)
            await asyncio.sleep(self.settings.lag_refresh_seconds)

    def stalled(self) -> bool:
        """Records waiting (behind the consumer's position, or in a batch handed to the worker
        and not committed), and no batch committed for ``stall_seconds``: stuck, not busy."""
        idle = time.monotonic() - self._last_progress
        waiting = self._total_lag > 0 or self._uncommitted_batches > 0
        return waiting and idle > self.settings.stall_seconds

    async def ready(self) -> bool:
        if self.fatal is not None or self.stalled():
            return False
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), timeout=2.0)
        except Exception:
            return False
        return await self._kafka_answers()

    async def _kafka_answers(self) -> bool:
        """The broker answers a metadata request for one of this worker's input topics.
        FastStream's ``broker.ping`` asks for the metadata of every topic in the cluster
        (``describe_cluster``) and parses it on the event loop: on a broker with thousands of
        topics that held every batch up for tens of milliseconds, every probe
        (docs/benchmarks.md, 2026-12-02)."""
        topic = self.settings.topic_prefix + self.service.input_topics[0]
        try:
            admin = self.broker.config.admin_client
            await asyncio.wait_for(admin.describe_topics([topic]), timeout=2.0)
        except Exception:
            return False
        return True

    # -- the process ----------------------------------------------------------------------

    def asgi_app(self) -> AsgiFastStream:
        worker = self

        @get(include_in_schema=False)
        async def healthz(scope: Any) -> AsgiResponse:
            if worker.fatal is not None:
                return AsgiResponse(b"stopped after a failure it must not commit past", 500)
            return AsgiResponse(b"ok", 200)

        @get(include_in_schema=False)
        async def readyz(scope: Any) -> AsgiResponse:
            if await worker.ready():
                return AsgiResponse(b"ready", 200)
            if worker.fatal is not None:
                return AsgiResponse(b"stopped after a failure: restart me", 503)
            if worker.stalled():
                return AsgiResponse(b"records waiting and no progress", 503)
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


async def _retention_ms(
    admin: AIOKafkaAdminClient, topic_names: list[str]
) -> dict[str, int | None]:
    """How long Kafka keeps each topic's records, in ms; None: for ever (retention.ms -1, or
    a compacted topic, which keeps each key's latest record). A topic not created yet will
    get the broker's default."""
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in topic_names]
    )
    kept: dict[str, int | None] = {}
    missing: list[str] = []
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            if error_code != 0:
                missing.append(name)
                continue
            config = {entry[0]: entry[1] for entry in entries}
            kept[name] = _kept_for(config.get("retention.ms"), config.get("cleanup.policy"))
    if missing:
        brokers = [b.nodeId for b in admin._client.cluster.brokers()]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(brokers[0]))]
        )
        config = {e[0]: e[1] for r in responses for res in r.resources for e in res[4]}
        ms = config.get("log.retention.ms")
        if ms is None and config.get("log.retention.minutes") is not None:
            ms = str(int(config["log.retention.minutes"]) * 60_000)
        if ms is None and config.get("log.retention.hours") is not None:
            ms = str(int(config["log.retention.hours"]) * 3_600_000)
        for name in missing:
            kept[name] = _kept_for(ms, config.get("log.cleanup.policy"))
    return kept


def _kept_for(retention_ms: str | None, cleanup_policy: str | None) -> int | None:
    if cleanup_policy is not None and "compact" in cleanup_policy:
        return None
    if retention_ms is None:
        return 7 * 86_400_000  # Kafka's own default
    value = int(retention_ms)
    return None if value < 0 else value
