"""The shipping worker. Run it with ``python -m services.shipping``."""

from __future__ import annotations

from services.shipping.handlers import ShippingService
from services.shipping.settings import ShippingSettings
from shared.runtime.app import Worker
from shared.runtime.metrics import WorkerMetrics


def build_worker(settings: ShippingSettings | None = None) -> Worker:
    metrics = WorkerMetrics()
    return Worker(ShippingService(metrics.registry), settings or ShippingSettings(), metrics)


def __getattr__(name: str) -> object:
    # Built on first access so that importing the module (tests, docs) connects to nothing.
    if name == "app":
        return build_worker().asgi_app()
    raise AttributeError(name)
