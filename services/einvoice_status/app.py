"""The e-invoice worker. Run it with ``python -m services.einvoice_status``."""

from __future__ import annotations

from services.einvoice_status.handlers import EinvoiceService
from services.einvoice_status.settings import EinvoiceSettings
from shared.runtime.app import Worker
from shared.runtime.metrics import WorkerMetrics


def build_worker(settings: EinvoiceSettings | None = None) -> Worker:
    settings = settings or EinvoiceSettings()
    metrics = WorkerMetrics()
    return Worker(EinvoiceService(settings, metrics.registry), settings, metrics)


def __getattr__(name: str) -> object:
    # Built on first access so that importing the module (tests, docs) connects to nothing.
    if name == "app":
        return build_worker().asgi_app()
    raise AttributeError(name)
