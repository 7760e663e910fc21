"""The benchmark's wait for reference data, on the real broker: a benchmark that queues its
inputs before the worker has consumed the reference data measures both at once."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bench.run import wait_consumed
from shared import topics
from tests import examples as ex
from tests.harness import Bus


async def test_wait_consumed_waits_until_the_group_has_committed_the_end(bus: Bus) -> None:
    await bus.send_many([ex.merchant(f"m-{i}") for i in range(3)])
    topic = bus.topic(topics.MERCHANTS_CONFIGURED)
    group = f"{bus.prefix}reader"

    with pytest.raises(TimeoutError):
        await wait_consumed(bus.bootstrap, group, [topic], wait_seconds=1)

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bus.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(ends[tp], "") for tp in tps})
    finally:
        await consumer.stop()
    await wait_consumed(bus.bootstrap, group, [topic], wait_seconds=10)


async def test_wait_consumed_refuses_a_topic_that_does_not_exist(bus: Bus) -> None:
    with pytest.raises(RuntimeError, match="not found"):
        await wait_consumed(bus.bootstrap, "nobody", [bus.topic("no.such.topic")], 1)
