"""Test-side Kafka client: publishes contract events and reads topics back, all under one
topic prefix so that tests sharing a broker never see each other's records."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from shared.envelope import CloudEvent, event_key, event_to_bytes, new_event, parse_event
from shared.events import ClockTick, EventData

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass
class Bus:
    bootstrap: str
    prefix: str
    producer: AIOKafkaProducer | None = None
    _sent: int = field(default=0)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, linger_ms=5
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    def topic(self, name: str) -> str:
        return self.prefix + name

    async def send(
        self,
        data: EventData,
        *,
        event_id: str | None = None,
        time: datetime | None = None,
        source: str = "/tests",
        wait: bool = True,
    ) -> str:
        when = time or datetime.now(UTC)
        event = new_event(data, id=event_id or str(uuid.uuid4()), source=source, time=when)
        await self.send_raw(data.TOPIC, event_to_bytes(event), key=event_key(event), wait=wait)
        return event.id

    async def send_many(
        self, items: Sequence[EventData], *, time: datetime | None = None
    ) -> list[str]:
        ids = [await self.send(d, time=time, wait=False) for d in items]
        assert self.producer is not None
        await self.producer.flush()
        return ids

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        wait: bool = True,
    ) -> None:
        assert self.producer is not None
        future = await self.producer.send(
            self.topic(topic), value=value, key=key, headers=headers or []
        )
        if wait:
            await future

    async def tick(self, now: datetime) -> str:
        return await self.send(ClockTick(now=now), time=now, source="/tests/clock")

    async def records(
        self,
        topic: str,
        *,
        until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool] | None = None,
        timeout: float = 30.0,
        settle: float = 0.0,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Reads the topic from the beginning until ``until`` holds (then, optionally, for
        ``settle`` more seconds to catch anything extra that should not be there)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            name = self.topic(topic)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            partitions: set[int] | None = None
            while partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(name)
                if partitions is None:
                    if loop.time() > deadline:
                        return []
                    await asyncio.sleep(0.2)
            tps = [TopicPartition(name, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen: list[ConsumerRecord[bytes, bytes]] = []
            settle_until: float | None = None
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    seen.extend(records)
                now = loop.time()
                if settle_until is None and (until is None or until(seen)):
                    settle_until = now + settle
                if settle_until is not None and now >= settle_until:
                    return seen
                if now > deadline:
                    return seen
        finally:
            await consumer.stop()

    async def events(
        self,
        topic: str,
        *,
        count: int | None = None,
        where: Callable[[CloudEvent[EventData]], bool] = lambda e: True,
        timeout: float = 30.0,
        settle: float = 0.0,
    ) -> list[CloudEvent[EventData]]:
        """The contract events on ``topic`` that satisfy ``where``; fails when ``count`` of
        them have not arrived within ``timeout``."""

        def parsed(records: list[ConsumerRecord[bytes, bytes]]) -> list[CloudEvent[EventData]]:
            return [e for e in (parse_event(topic, r.value) for r in records) if where(e)]

        def enough(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
            return count is None or len(parsed(records)) >= count

        found = parsed(await self.records(topic, until=enough, timeout=timeout, settle=settle))
        if count is not None and len(found) < count:
            raise AssertionError(
                f"expected {count} events on {topic} within {timeout}s, got {len(found)}: "
                f"{[e.data for e in found][:10]}"
            )
        return found


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def json_of(record: ConsumerRecord[bytes, bytes]) -> Any:
    return json.loads(record.value)


async def until_risk_holds(
    db: Any, company_id: str, cents: int, *, what: str, timeout: float = 30.0
) -> None:
    """Until risk's ``db`` counts ``cents`` of open exposure for ``company_id``. A release
    (internal.exposure_released) and an order (orders.requested) are on different topics, and
    Kafka orders neither against the other: seeing the release on the bus does not mean risk
    has taken it, so a test waits for this before judging an order against the freed limit."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        doc = await db["exposure"].find_one({"_id": company_id})
        if doc is not None and doc["exposure_cents"] == cents:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
