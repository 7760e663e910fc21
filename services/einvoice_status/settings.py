from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.runtime.settings import WorkerSettings


class EinvoiceSettings(WorkerSettings):
    """``EINVOICE_STATUS_*``. The API key is a secret: pydantic masks it in every repr, and
    nothing logs it (the client sends it as a header only)."""

    model_config = SettingsConfigDict(env_prefix="EINVOICE_STATUS_", extra="ignore", frozen=True)

    mongodb_database: str = "einvoice_status"
    http_port: int = 8005
    billit_base_url: str = "https://api.sandbox.billit.be"
    billit_api_key: SecretStr = SecretStr("")
    # Billit publishes no rate limit (notes: at most 5 calls at once); the executor holds both.
    billit_concurrency: int = 5
    billit_rate_per_second: float = 10.0
    billit_read_timeout_seconds: float = 10.0
    billit_inline_attempts: int = 2
    billit_backoff_base_seconds: float = 0.5
    job_max_attempts: int = 8
    job_timeout_seconds: float = 45.0
    job_lease_seconds: float = 60.0
    job_backoff_base_seconds: float = 1.0
    job_backoff_cap_seconds: float = 600.0
    job_poll_seconds: float = 0.5
    # Polling: every poll_frequent_seconds for poll_frequent_for_seconds after a send (and
    # again after delivery), then hourly until poll_hourly_for_seconds, then daily.
    poll_frequent_seconds: int = 60
    poll_frequent_for_seconds: int = 900
    poll_hourly_seconds: int = 3600
    poll_hourly_for_seconds: int = 86_400
    poll_daily_seconds: int = 86_400
    delivery_follow_days: int = 30
    responses_follow_days: int = 14
    # At most this many poll timers fire per tick; the rest wait for the next tick.
    poll_fire_limit: int = 1000
