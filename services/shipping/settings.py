from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.runtime.settings import WorkerSettings


class ShippingSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="SHIPPING_", extra="ignore", frozen=True)

    mongodb_database: str = "shipping"
    http_port: int = 8002
