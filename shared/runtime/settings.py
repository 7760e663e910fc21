"""Settings every worker shares; each service subclasses with its own prefix and defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """Read from the environment. Infrastructure addresses are unprefixed and shared by all
    services; service-specific knobs carry the service prefix (e.g. ``RISK_HTTP_PORT``)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"),
    )
    mongodb_uri: str = Field(
        default="mongodb://127.0.0.1:27017/?replicaSet=rs0",
        validation_alias=AliasChoices("MONGODB_URI"),
    )
    # Prepended to every physical topic name; lets tests and demos run side by side.
    topic_prefix: str = Field(default="", validation_alias=AliasChoices("TOPIC_PREFIX"))
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))

    # The ops database: dead letters of every service, acted on by ``shared.ops ... dlq``.
    ops_mongodb_database: str = Field(
        default="ops", validation_alias=AliasChoices("OPS_MONGODB_DATABASE")
    )

    mongodb_database: str = "paylater"
    # The worker's event loop. uvloop runs PyMongo's and aiokafka's per-request tasks and
    # socket calls for less CPU than asyncio's own loop (docs/benchmarks.md, 2026-12-02
    # later); "asyncio" is there to rule it out when chasing a problem.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    batch_max_records: int = 2000
    batch_timeout_ms: int = 20
    # How long the broker may hold a fetch to gather more records (fetch.min.bytes, with
    # fetch.max.wait.ms as the bound). The consumer fetches a partition again only once its
    # buffered records are handed out: with Kafka's defaults (1 byte, 500 ms) the fetch made
    # while a batch is stored returns with the first record that arrives, and the records
    # after it wait for a second batch cycle. Held up to 20 ms, the fetch brings everything
    # that arrived while the batch was stored (a batch at 500 inputs/s takes 10-20 ms), and
    # a record arriving alone waits at most 20 ms more. Measured in docs/benchmarks.md
    # (2026-12-02); Kafka's own defaults are ``<SERVICE>_FETCH_MIN_BYTES=1`` and
    # ``<SERVICE>_FETCH_MAX_WAIT_MS=500``.
    fetch_min_bytes: int = 1_000_000
    fetch_max_wait_ms: int = 20
    # How long the inbox remembers a processed event id. Must cover the input topics'
    # retention (the worker refuses to start otherwise): a record replayed after its id was
    # forgotten would act again.
    inbox_ttl_days: int = 14
    # How long an event that refers to something not seen yet is parked before rejection.
    park_ttl_seconds: int = 300
    lag_refresh_seconds: float = 2.0
    # The first offset a brand-new consumer group reads from; earliest so nothing is skipped.
    auto_offset_reset: Literal["earliest", "latest", "none"] = "earliest"
    # The largest record the broker takes (its message.max.bytes, 1048588 by default, less
    # a margin): an output above it is dead-lettered with its cause instead of stored, and a
    # dead letter above it goes out truncated with its full bytes kept in MongoDB.
    max_record_bytes: int = 1_000_000
    # SIGTERM to exit, whatever the worker is doing: retry loops give up, the batch in hand
    # is left uncommitted (replayed on the next start), and past this the process exits.
    shutdown_timeout_seconds: float = 8.0
    # The least time a dead-letter topic must keep its records (the worker refuses to start
    # otherwise): the ops store has every dead letter before its offset is committed, and the
    # topic is the operator's second copy. docs/dead-letters.md.
    dlq_min_retention_days: float = 1.0
    # How often the pending dead letters (gauge) and the operators' actions (counter) are
    # read back from the ops store.
    dead_letter_refresh_seconds: float = 15.0
    # Readiness fails when records wait and no batch was committed for this long.
    stall_seconds: float = 60.0
