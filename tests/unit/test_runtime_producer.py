"""A producer whose state the broker lost (UnknownProducerId) is replaced, and the publish
goes through on the new one, instead of being retried with the dead producer for ever.
No I/O: the producer is a stand-in that fails the way aiokafka's does."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar
from unittest.mock import MagicMock

import pytest
from aiokafka.errors import UnknownProducerId

from shared.runtime import app
from shared.runtime.engine import Engine, Outbound
from shared.runtime.metrics import WorkerMetrics


class _Batch:
    def append(self, **kwargs: Any) -> object:
        return object()


class _FakeProducer:
    created: ClassVar[list[_FakeProducer]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.sent = 0
        self.stopped = False
        # The first producer is the one the broker forgot; later ones are fine.
        self.forgotten = not _FakeProducer.created
        _FakeProducer.created.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.forgotten:
            future.set_exception(UnknownProducerId())
        else:
            self.sent += 1
            future.set_result(None)
        return future


async def test_unknown_producer_id_replaces_the_producer_and_publishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _FakeProducer.created = []
    monkeypatch.setattr(app, "AIOKafkaProducer", _FakeProducer)
    metrics = WorkerMetrics()
    output = app.KafkaOutput("svc", "", metrics)
    output.producer = _FakeProducer()
    engine = Engine(MagicMock(name="service"), MagicMock(), output, metrics)
    message = Outbound(topic="t", key=b"k", value=b"v", event_type="x.v1", inbox_id="e-1")

    await asyncio.wait_for(engine.publish([message]), timeout=10)

    first, second = _FakeProducer.created
    assert first.stopped and first.sent == 0
    assert second.sent == 1 and not second.stopped
