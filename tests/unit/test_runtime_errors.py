"""How the runtime classifies failures (no I/O): what is waited out, what is not retried for
ever, and that a stop request ends a retry loop at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest.mock import MagicMock

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownProducerId,
)
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

from shared.runtime.engine import Engine, Stopping
from shared.runtime.metrics import WorkerMetrics
from shared.runtime.transient import (
    DUPLICATE_KEY_RETRIES,
    RecordTooLarge,
    is_producer_state_lost,
    is_transient,
)


@pytest.mark.parametrize(
    "exc",
    [
        KafkaConnectionError(),
        KafkaTimeoutError(),
        RequestTimedOutError(),
        NotLeaderForPartitionError(),
        AutoReconnect("primary gone"),
        OperationFailure("write conflict", code=112),
        OperationFailure("not primary", code=10107),
        OperationFailure("x", code=1, details={"errorLabels": ["TransientTransactionError"]}),
        OperationFailure("x", code=1, details={"errorLabels": ["UnknownTransactionCommitResult"]}),
        TimeoutError(),
    ],
)
def test_transient_failures_are_waited_out(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        MessageSizeTooLargeError(),
        RecordTooLarge("output too large"),
        TopicAuthorizationFailedError(),
        OperationFailure("unauthorized", code=13),
        RuntimeError("a bug"),
        RecursionError(),
    ],
)
def test_permanent_failures_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_lost_producer_state_is_not_retried_with_the_same_producer() -> None:
    for exc in (UnknownProducerId(), OutOfOrderSequenceNumber()):
        assert is_producer_state_lost(exc)
        assert not is_transient(exc)


def _engine() -> Engine:
    db = MagicMock()
    return Engine(MagicMock(name="service"), db, MagicMock(), WorkerMetrics())


async def test_a_duplicate_key_that_comes_back_is_permanent_after_a_few_reruns() -> None:
    engine = _engine()
    calls = 0

    async def always_duplicate() -> None:
        nonlocal calls
        calls += 1
        raise DuplicateKeyError("E11000 duplicate key")

    with pytest.raises(DuplicateKeyError):
        await engine._retry("store", always_duplicate)
    assert calls == DUPLICATE_KEY_RETRIES + 1


async def test_a_stop_request_ends_a_retry_loop_at_once() -> None:
    engine = _engine()

    async def always_down() -> Any:
        raise AutoReconnect("mongodb down")

    loop = asyncio.get_running_loop()
    loop.call_later(0.5, engine.request_stop)
    started = time.monotonic()
    with pytest.raises(Stopping):
        await engine._retry("store", always_down)
    assert time.monotonic() - started < 3
