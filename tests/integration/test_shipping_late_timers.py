"""Shipping's late marking on the runtime's timers, on real Kafka and MongoDB: a capture
schedules the order's late timer for the start of the day after the due date, a settlement
removes it, the operators' command lists it, and the first tick on that day fires it through
the service's timer topic; the invoice turns late once."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from datetime import UTC, datetime
from typing import Any

import pytest

from services.shipping.app import build_worker
from services.shipping.settings import ShippingSettings
from shared import topics
from shared.events import InvoiceStateChanged, TimerFired
from shared.ops import main as ops_main
from shared.runtime.app import Worker
from tests import examples as ex
from tests.harness import Bus
from tests.integration.test_timers import processed

pytestmark = pytest.mark.integration


async def test_late_marking_runs_on_a_timer_per_order(bus: Bus, run_worker: Any) -> None:
    worker: Worker = await run_worker(build_worker, ShippingSettings)
    await bus.send(ex.merchant("m-1"))
    for order_id in ("o-late", "o-paid"):
        await bus.send(ex.order(order_id))
        await bus.send(ex.decided(order_id))
    await bus.send(ex.shipment("o-late", "INV-L"))  # due 2026-12-20
    await bus.send(ex.shipment("o-paid", "INV-P"))
    await bus.events(topics.PAYOUTS_INSTRUCTED, count=2)
    await processed(worker, await bus.send(ex.settled("o-paid", "INV-P")))

    timers = {d["_id"]: d async for d in worker.db["timers"].find()}
    assert set(timers) == {"mark_late:o-late"}  # the settled order has none left
    assert timers["mark_late:o-late"]["due_at"] == datetime(2026, 12, 21, tzinfo=UTC)

    listing = io.StringIO()
    database = ["--mongodb-uri", worker.settings.mongodb_uri, "--database", worker.db.name]
    with redirect_stdout(listing):
        ops_main(["shipping", *database, "timers", "due", "--at", "2026-12-21T00:00:00+00:00"])
    assert '"timer": "mark_late:o-late"' in listing.getvalue()

    await processed(worker, await bus.tick(datetime(2026, 12, 20, 23, 0, tzinfo=UTC)))
    await processed(worker, await bus.tick(datetime(2026, 12, 21, 0, 5, tzinfo=UTC)))
    await processed(worker, await bus.tick(datetime(2026, 12, 24, 0, 5, tzinfo=UTC)))

    changes = await bus.events(
        topics.INVOICES_STATE_CHANGED,
        where=lambda e: isinstance(e.data, InvoiceStateChanged) and e.data.to == "late",
        count=1,
        settle=1.5,
    )
    assert [(e.data.invoice_number, e.data.order_id) for e in changes] == [  # type: ignore[attr-defined]
        ("INV-L", "o-late")
    ]
    fired = await bus.events(topics.timer_topic("shipping"), count=1)
    assert len({e.id for e in fired}) == 1
    assert isinstance(fired[0].data, TimerFired)
    assert fired[0].data.entity == "o-late"
    assert fired[0].data.fired_at == datetime(2026, 12, 21, 0, 5, tzinfo=UTC)
    assert await worker.db["timers"].count_documents({}) == 0
