"""Which failures are worth waiting out, and how long to wait."""

from __future__ import annotations

import random

from aiokafka.errors import KafkaError
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


# WriteConflict, NoSuchTransaction, NotWritablePrimary, NotPrimaryNoSecondaryOk,
# NotPrimaryOrSecondary, InterruptedAtShutdown, PrimarySteppedDown, ShutdownInProgress,
# LockTimeout, ExceededTimeLimit.
_TRANSIENT_CODES = frozenset({112, 251, 10107, 13435, 13436, 11600, 189, 91, 24, 262, 50})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConcurrencyConflict | KafkaError):
        return True
    # A duplicate key on the inbox means another consumer processed the same event
    # concurrently (rebalance); retrying sees it as already done.
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, ConnectionFailure | AutoReconnect | ServerSelectionTimeoutError):
        return True
    if isinstance(exc, PyMongoError):
        if exc.has_error_label("TransientTransactionError") or exc.has_error_label(
            "UnknownTransactionCommitResult"
        ):
            return True
        if isinstance(exc, OperationFailure) and exc.code in _TRANSIENT_CODES:
            return True
    return isinstance(exc, OSError | TimeoutError)


def backoff_seconds(attempt: int, *, base: float = 0.05, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff: spreads competing workers apart."""
    return random.uniform(0, min(cap, base * (2**attempt)))  # noqa: S311 - not crypto
