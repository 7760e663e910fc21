"""The ceiling: a bare aiokafka consume -> produce -> commit loop on the same broker, doing no
work per record. Whatever a service reaches is reported as a fraction of this."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


@dataclass(frozen=True)
class CeilingResult:
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds


async def preload(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def bare_relay(
    bootstrap: str, source: str, sink: str, expected: int, *, max_records: int = 500
) -> CeilingResult:
    """Consume ``expected`` records from ``source`` and produce one record per input to
    ``sink``, awaiting the broker's acks and committing offsets after each batch, as the
    services do (at-least-once)."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"{source}-ceiling",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        done = 0
        started: float | None = None
        while done < expected:
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            if started is None:
                started = time.perf_counter()
            futures = [await producer.send(sink, r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(records)
        assert started is not None
        return CeilingResult(done, time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()
