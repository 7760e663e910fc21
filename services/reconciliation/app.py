"""The reconciliation worker. Run it with ``python -m services.reconciliation``."""

from __future__ import annotations

from datetime import timedelta

from services.reconciliation.handlers import ReconciliationService
from services.reconciliation.settings import ReconciliationSettings
from shared.runtime.app import Worker
from shared.runtime.metrics import WorkerMetrics


def build_worker(settings: ReconciliationSettings | None = None) -> Worker:
    settings = settings or ReconciliationSettings()
    metrics = WorkerMetrics()
    grace = timedelta(seconds=settings.credit_grace_seconds)
    return Worker(ReconciliationService(metrics.registry, grace), settings, metrics)


def __getattr__(name: str) -> object:
    # Built on first access so that importing the module (tests, docs) connects to nothing.
    if name == "app":
        return build_worker().asgi_app()
    raise AttributeError(name)
