"""The dunning worker. Run it with ``python -m services.dunning``."""

from __future__ import annotations

from services.dunning.handlers import DunningService
from services.dunning.settings import DunningSettings
from shared.runtime.app import Worker
from shared.runtime.metrics import WorkerMetrics


def build_worker(settings: DunningSettings | None = None) -> Worker:
    settings = settings or DunningSettings()
    metrics = WorkerMetrics()
    service = DunningService(
        metrics.registry,
        settings.dunning_config(),
        fire_limit=settings.fire_limit,
        overdue_gauge_seconds=settings.overdue_gauge_seconds,
    )
    return Worker(service, settings, metrics)


def __getattr__(name: str) -> object:
    # Built on first access so that importing the module (tests, docs) connects to nothing.
    if name == "app":
        return build_worker().asgi_app()
    raise AttributeError(name)
