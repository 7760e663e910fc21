from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.dunning.domain import DunningConfig
from shared.runtime.settings import WorkerSettings


class DunningSettings(WorkerSettings):
    """``DUNNING_*`` from the environment; the ladder as e.g. ``DUNNING_NOTICE_DAYS=[1,14,21]``."""

    model_config = SettingsConfigDict(env_prefix="DUNNING_", extra="ignore", frozen=True)

    mongodb_database: str = "dunning"
    http_port: int = 8004

    time_zone: str = "Europe/Berlin"
    notice_days: tuple[int, int, int] = (1, 14, 21)
    hand_over_day: int = 28
    merchant_pause_days: int = 7
    merchant_pause_window: tuple[int, int] = (1, 7)
    ops_pause_days: int = 7
    # At most this many invoices' timers fire per tick batch (a backlog drains per tick).
    fire_limit: int = 1000
    # How often (wall clock) the tick owner recounts dunning_invoices_overdue from the index.
    overdue_gauge_seconds: float = 60.0

    def dunning_config(self) -> DunningConfig:
        return DunningConfig(
            time_zone=self.time_zone,
            notice_days=self.notice_days,
            hand_over_day=self.hand_over_day,
            merchant_pause_days=self.merchant_pause_days,
            merchant_pause_window=self.merchant_pause_window,
            ops_pause_days=self.ops_pause_days,
        )
