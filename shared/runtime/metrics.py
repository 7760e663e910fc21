"""Worker metrics shared by all services. One registry per process, labels from closed sets."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from shared.envelope import ErrorKind

# The closed label sets, exported at 0 from the start (``preinitialise``).
EVENT_OUTCOMES = ("processed", "duplicate", "dead_lettered", "parked")
DEAD_LETTER_KINDS = (*get_args(ErrorKind), "processing")
RETRIED_STAGES = ("store", "publish", "commit")
PERMANENT_STAGES = ("store", "publish", "commit", "decode")
GC_GENERATIONS = ("0", "1", "2")
DEAD_LETTER_ACTIONS = ("replayed", "corrected", "discarded")


class StoredActionCounts:
    """A counter whose value is kept in the ops store, not in this process: the operators'
    replays, corrections and discards, counted from the dead letters' histories (never
    deleted, so the count only grows). The worker refreshes ``values``."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], int] = {}

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            "worker_dead_letter_actions",
            "Operators' actions on dead letters (dlq replay, correct, discard), as recorded in "
            "the ops store; every worker of a service exports the same count.",
            labels=["service", "action"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for (service, action), count in sorted(self.values.items()):
            family.add_metric([service, action], count)
        yield family


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._gc_callback: Callable[[str, dict[str, int]], None] | None = None
        r = self.registry
        self.events = Counter(
            "worker_events_total",
            "Input events by what the worker did with them.",
            ["service", "topic", "outcome"],  # processed|duplicate|dead_lettered|parked
            registry=r,
        )
        self.published = Counter(
            "worker_published_events_total",
            "Output events published and acknowledged by the broker, by contract topic.",
            ["service", "topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "worker_dead_letters_total",
            "Records sent to a dead-letter topic, by error kind.",
            ["service", "topic", "kind"],  # json|envelope|unknown_type|schema|processing
            registry=r,
        )
        self.transient_errors = Counter(
            "worker_transient_errors_total",
            "Transient infrastructure failures that were retried (never skipped).",
            ["service", "stage"],  # store|publish|commit
            registry=r,
        )
        self.permanent_errors = Counter(
            "worker_permanent_errors_total",
            "Failures a retry would hit again (record too large, authorisation, a duplicate "
            "key): the event is dead-lettered alone, or the worker stops itself.",
            ["service", "stage"],  # store|publish|commit|decode
            registry=r,
        )
        self.ready = Gauge(
            "worker_ready",
            "1 while the worker's readiness check (/readyz: Kafka and MongoDB answer, no fatal "
            "error) passes, 0 while it fails; refreshed in the background.",
            ["service"],
            registry=r,
        )
        self.stopped = Gauge(
            "worker_stopped",
            "1 once the worker stopped consuming by itself after a failure it must not commit "
            "past (it waits for a restart); 0 while it consumes.",
            ["service"],
            registry=r,
        )
        self.batch_size = Histogram(
            "worker_batch_size_records",
            "Records per consumed batch.",
            ["service"],
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.batch_duration = Histogram(
            "worker_batch_duration_seconds",
            "Time from receiving a batch to committing its offsets.",
            ["service"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.parked = Gauge(
            "worker_parked_events",
            "Events waiting for something they refer to (as of the last tick).",
            ["service"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "worker_consumer_lag_messages",
            "Records in the partition not yet consumed by this worker (high watermark minus "
            "position).",
            ["service", "topic", "partition"],
            registry=r,
        )
        self.dead_letters_pending = Gauge(
            "worker_dead_letters_pending",
            "Dead letters no operator has replayed, corrected or discarded yet (ops store).",
            ["service", "topic", "kind"],
            registry=r,
        )
        self.dead_letters_oldest_pending = Gauge(
            "worker_dead_letters_oldest_pending_seconds",
            "Age of the oldest pending dead letter per topic (0: none pending).",
            ["service", "topic"],
            registry=r,
        )
        self.dead_letter_actions = StoredActionCounts()
        r.register(self.dead_letter_actions)
        self.gc_pause = Histogram(
            "worker_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation.",
            ["service", "generation"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )

    def preinitialise(self, service: str, input_topics: Sequence[str]) -> None:
        """Export every closed label set at 0 as the worker starts. A counter series that
        first appears at 1 has no increase() in Prometheus, so without this the first dead
        letter (or retry, or permanent error) after a start would show on no panel and fire
        no alert; and a panel of a healthy worker would be empty instead of 0."""
        for topic in input_topics:
            for outcome in EVENT_OUTCOMES:
                self.events.labels(service, topic, outcome)
            for kind in DEAD_LETTER_KINDS:
                self.dead_letters.labels(service, topic, kind)
        for stage in RETRIED_STAGES:
            self.transient_errors.labels(service, stage)
        for stage in PERMANENT_STAGES:
            self.permanent_errors.labels(service, stage)
        for action in DEAD_LETTER_ACTIONS:
            self.dead_letter_actions.values.setdefault((service, action), 0)
        self.stopped.labels(service).set(0)
        self.parked.labels(service)
        self.batch_size.labels(service)
        self.batch_duration.labels(service)
        for generation in GC_GENERATIONS:
            self.gc_pause.labels(service, generation)

    def watch_gc(self, service: str) -> None:
        """Time every collection: batch workers allocate in bursts, and a full collection
        over a large heap shows up as latency nobody can otherwise explain."""
        started: dict[str, float] = {}

        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started["at"] = time.perf_counter()
            elif "at" in started:
                self.gc_pause.labels(service, str(info["generation"])).observe(
                    time.perf_counter() - started.pop("at")
                )

        self.unwatch_gc()
        self._gc_callback = callback
        gc.callbacks.append(callback)

    def unwatch_gc(self) -> None:
        """Several workers start and stop in one test process; each removes its own."""
        if self._gc_callback is not None and self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)
        self._gc_callback = None
