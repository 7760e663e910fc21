"""The Billit API key is a secret: not in the settings' repr, not in any log line the
worker writes while it starts and builds its Billit clients."""

from __future__ import annotations

import structlog

from services.einvoice_status.app import build_worker
from services.einvoice_status.settings import EinvoiceSettings

KEY = "s3cr3t-billit-key-0123"


def test_the_api_key_is_in_no_repr_and_no_log_line() -> None:
    settings = EinvoiceSettings(billit_api_key=KEY)
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())
    with structlog.testing.capture_logs() as logs:
        worker = build_worker(settings)
        client = worker.service.gateway.client("1001")  # type: ignore[attr-defined]
    assert KEY not in repr(logs)
    assert KEY not in repr(client)
    assert settings.billit_api_key.get_secret_value() == KEY
