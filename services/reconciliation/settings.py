from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.runtime.settings import WorkerSettings


class ReconciliationSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILIATION_", extra="ignore", frozen=True)

    mongodb_database: str = "reconciliation"
    http_port: int = 8003
    # How long what no open invoice can take is held as the debtor's credit before it is
    # forwarded to the merchant (docs/reconciliation-rules.md).
    credit_grace_seconds: int = 3 * 24 * 3600
