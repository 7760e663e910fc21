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

    mongodb_database: str = "paylater"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    batch_max_records: int = 2000
    batch_timeout_ms: int = 20
    inbox_ttl_days: int = 14
    # How long an event that refers to something not seen yet is parked before rejection.
    park_ttl_seconds: int = 300
    lag_refresh_seconds: float = 2.0
    # The first offset a brand-new consumer group reads from; earliest so nothing is skipped.
    auto_offset_reset: Literal["earliest", "latest", "none"] = "earliest"
