from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.runtime.settings import WorkerSettings


class RiskSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="RISK_", extra="ignore", frozen=True)

    mongodb_database: str = "risk"
    http_port: int = 8001
