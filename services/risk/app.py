"""The risk worker. Run it with ``python -m services.risk``."""

from __future__ import annotations

from services.risk.handlers import RiskService
from services.risk.settings import RiskSettings
from shared.runtime.app import Worker
from shared.runtime.metrics import WorkerMetrics


def build_worker(settings: RiskSettings | None = None) -> Worker:
    metrics = WorkerMetrics()
    return Worker(RiskService(metrics.registry), settings or RiskSettings(), metrics)


def __getattr__(name: str) -> object:
    # Built on first access so that importing the module (tests, docs) connects to nothing.
    if name == "app":
        return build_worker().asgi_app()
    raise AttributeError(name)
