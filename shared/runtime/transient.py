"""Which failures are worth waiting out, which are not, and how long to wait.

Transient: a retry after a pause can succeed (connection loss, timeouts, elections, write
conflicts, errors the Kafka client marks retriable). Permanent: a retry would hit the same
wall (a record too large, missing authorisation, a bug): an event that causes it is
dead-lettered alone, a failure outside any one event stops the worker. A fatal producer state
(the broker forgot the producer) is neither: the producer is replaced, then it is retried.
"""

from __future__ import annotations

import random

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RecordTooLargeError,
    UnknownProducerId,
)
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)


class ConcurrencyConflict(Exception):
    """Another worker changed the state we decided on; reload and decide again."""


class RecordTooLarge(Exception):
    """An output or dead letter the broker would refuse for its size: permanent."""


class ProducerReset(Exception):
    """The producer was replaced after the broker lost its state; publish again."""


# WriteConflict, NoSuchTransaction, NotWritablePrimary, NotPrimaryNoSecondaryOk,
# NotPrimaryOrSecondary, InterruptedAtShutdown, PrimarySteppedDown, ShutdownInProgress,
# LockTimeout, ExceededTimeLimit.
_TRANSIENT_CODES = frozenset({112, 251, 10107, 13435, 13436, 11600, 189, 91, 24, 262, 50})

# A duplicate key on the inbox means another consumer processed the same event concurrently
# (a rebalance); the retry sees it as already done. One that comes back this many times in a
# row is not a race but a rule a re-run hits again.
DUPLICATE_KEY_RETRIES = 3

# The broker no longer knows this producer's id or sequence (it lost its state, e.g. it was
# replaced by a fresh one): the producer never recovers by itself and must be recreated.
_PRODUCER_STATE_ERRORS = (
    UnknownProducerId,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    ProducerClosed,
)


def is_producer_state_lost(exc: BaseException) -> bool:
    return isinstance(exc, _PRODUCER_STATE_ERRORS)


def is_too_large(exc: BaseException) -> bool:
    return isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError | RecordTooLarge)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConcurrencyConflict | ProducerReset | DuplicateKeyError):
        return True
    if isinstance(exc, KafkaError):
        if is_too_large(exc) or is_producer_state_lost(exc):
            return False
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError | KafkaConnectionError)
    if isinstance(exc, ConnectionFailure | AutoReconnect | ServerSelectionTimeoutError):
        return True
    if isinstance(exc, PyMongoError):
        if exc.has_error_label("TransientTransactionError") or exc.has_error_label(
            "UnknownTransactionCommitResult"
        ):
            return True
        return isinstance(exc, OperationFailure) and exc.code in _TRANSIENT_CODES
    return isinstance(exc, OSError | TimeoutError)


def backoff_seconds(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff: spreads competing workers apart."""
    return random.uniform(0, min(cap, base * (2**attempt)))  # noqa: S311 - not crypto
