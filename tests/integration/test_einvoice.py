"""The e-invoice worker on real Kafka and MongoDB against the Billit simulator running as a
real HTTP server (tests/billit_sandbox.py). Time moves through our synthetic ticks and the
simulator's clock together (tests/einvoice_world.py). The oracles: the
``einvoices.status_changed`` events on the bus, the simulator's own counters (orders created
per ExternalProviderID, payments per order, calls per endpoint) and the orders as Billit shows
them."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from services.einvoice_status import exact_json
from services.einvoice_status.app import build_worker
from services.einvoice_status.settings import EinvoiceSettings
from shared import events as ev
from shared import topics
from shared.envelope import CloudEvent
from shared.runtime.app import Worker
from tests.billit_sandbox import API_KEY, SimAdmin, billit_sim, billit_sim_url
from tests.einvoice_world import (
    Drive,
    amount,
    company,
    issued,
    line,
    merchant,
    order,
    viban_of,
)
from tests.harness import Bus

pytestmark = pytest.mark.integration
__all__ = ["billit_sim", "billit_sim_url"]  # fixtures

DELIVERS_AB_AP_PD = "BE0563846944"  # the simulator's built-in receiver: AB, AP, PD
NOT_ON_PEPPOL = "BE0999999999"
REFUSES = "BE0811111111"


def knobs(sim: SimAdmin, **more: Any) -> dict[str, Any]:
    return {
        "billit_base_url": sim.url,
        "billit_api_key": API_KEY,
        "billit_rate_per_second": 200.0,
        "billit_read_timeout_seconds": 2.0,
        "billit_backoff_base_seconds": 0.05,
        "job_backoff_base_seconds": 0.05,
        "job_backoff_cap_seconds": 0.5,
        "job_poll_seconds": 0.05,
        "job_timeout_seconds": 10.0,
        "job_lease_seconds": 20.0,
        **more,
    }


async def start(run_worker: Any, sim: SimAdmin, **more: Any) -> Worker:
    worker: Worker = await run_worker(build_worker, EinvoiceSettings, **knobs(sim, **more))
    return worker


def statuses(found: list[CloudEvent[ev.EventData]], order_id: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for event in found:
        data = event.data
        assert isinstance(data, ev.EinvoiceStatusChanged)
        if data.order_id == order_id:
            out.append((data.delivery_status, data.receiver_status))
    return out


async def status_events(
    bus: Bus, count: int | None = None, settle: float = 0.0
) -> list[CloudEvent[ev.EventData]]:
    return await bus.events(topics.EINVOICES_STATUS_CHANGED, count=count, timeout=30, settle=settle)


def counting(bus: Bus, want: Callable[[list[CloudEvent[ev.EventData]]], bool]) -> Any:
    async def check() -> bool:
        return want(await bus.events(topics.EINVOICES_STATUS_CHANGED, timeout=5))

    return check


async def billit_order(sim: SimAdmin, order_id: str) -> dict[str, Any]:
    counters = await sim.counters()
    assert counters["orders_created_by_external_provider_id"].get(order_id) == 1
    response = await sim.raw("GET", f"/v1/orders?$filter=ExternalProviderID eq '{order_id}'")
    items: list[dict[str, Any]] = exact_json.loads(response.content)["Items"]
    assert len(items) == 1
    return items[0]


async def send_world(
    bus: Bus, orders: list[tuple[str, str, str, list[ev.LineItem], ev.Amount]]
) -> None:
    await bus.send_many([merchant("m-billit"), merchant("m-plain", billit=False)])
    for order_id, merchant_id, vat, items, total in orders:
        await bus.send(company(f"c-{order_id}", vat))
        await bus.send(order(order_id, merchant_id, vat, items, total))


async def test_delivered_answered_refused_not_on_peppol_and_merchant_without_einvoicing(
    bus: Bus, run_worker: Any, billit_sim: SimAdmin
) -> None:
    """Four invoices: one to a receiver that answers AB, AP, PD (built into the simulator);
    one to a receiver whose access point refuses it (InvalidInvoice, with its text); one to a
    receiver not on Peppol; one of a merchant without e-invoicing. Oracle: the status events
    per order, exactly in that order; one Billit order for each of the first two, none for the
    others; the Billit order's totals, IBAN and payment reference are our invoice's."""
    await billit_sim.participant(
        "0208:0811111111",
        DocumentTypes=["BISv3Invoice", "BISv3CreditNote"],
        script={"refuse": {"reason_tc": "InvalidInvoice", "info": "Unknown buyer reference"}},
    )
    worker = await start(run_worker, billit_sim)
    total = amount("1210.00", "1000.00", "210.00")
    mixed = amount("1213.18", "1045.45", "167.73")  # 21 % of 700.00 + 6 % of 345.45, per line
    await send_world(
        bus,
        [
            ("o-1", "m-billit", DELIVERS_AB_AP_PD, [line("Widget", 4, "250.00", "21")], total),
            (
                "o-2",
                "m-billit",
                REFUSES,
                [line("Chair", 2, "350.00", "21"), line("Book", 3, "115.15", "6")],
                mixed,
            ),
            ("o-3", "m-billit", NOT_ON_PEPPOL, [line("Widget", 4, "250.00", "21")], total),
            ("o-4", "m-plain", DELIVERS_AB_AP_PD, [line("Widget", 4, "250.00", "21")], total),
        ],
    )
    for order_id, total_of in (("o-1", total), ("o-2", mixed), ("o-3", total), ("o-4", total)):
        await bus.send(
            issued(
                order_id,
                "m-plain" if order_id == "o-4" else "m-billit",
                f"INV-{order_id}",
                total_of,
                company_id=f"c-{order_id}",
            )
        )
    drive = Drive(bus, billit_sim, worker.db)

    def done(found: list[CloudEvent[ev.EventData]]) -> bool:
        return ("delivered", "PD") in statuses(found, "o-1") and len(statuses(found, "o-2")) >= 2

    await drive.until(counting(bus, done), what="PD for o-1 and the refusal of o-2")
    found = await status_events(bus, settle=1.0)
    assert statuses(found, "o-1") == [
        ("pending", None),
        ("delivered", None),
        ("delivered", "AB"),
        ("delivered", "AP"),
        ("delivered", "PD"),
    ]
    assert statuses(found, "o-2") == [("pending", None), ("error", None)]
    refused = [
        e.data
        for e in found
        if isinstance(e.data, ev.EinvoiceStatusChanged) and e.data.order_id == "o-2"
    ][-1]
    assert refused.detail == "refused: InvalidInvoice: Unknown buyer reference"
    assert statuses(found, "o-3") == [("error", None)]
    not_on_peppol = next(
        e.data
        for e in found
        if isinstance(e.data, ev.EinvoiceStatusChanged) and e.data.order_id == "o-3"
    )
    assert "not registered on Peppol" in not_on_peppol.detail
    assert statuses(found, "o-4") == []

    counters = await billit_sim.counters()
    assert counters["orders_created_by_external_provider_id"] == {
        "o-1/INV-o-1": 1,
        "o-2/INV-o-2": 1,
    }
    first = await billit_order(billit_sim, "o-1/INV-o-1")
    assert (first["TotalExcl"], first["TotalVAT"], first["TotalIncl"]) == (
        Decimal("1000.00"),
        Decimal("210.00"),
        Decimal("1210.00"),
    )
    assert first["PaymentReference"] == "INV-o-1"
    assert first["OrderNumber"] == "INV-o-1"
    assert first["ExpiryDate"] == "2026-07-01"
    assert first["Customer"]["VATNumber"] == DELIVERS_AB_AP_PD
    assert [ln["Description"] for ln in first["OrderLines"]] == ["Widget"]  # the order's lines
    second = await billit_order(billit_sim, "o-2/INV-o-2")
    assert (second["TotalExcl"], second["TotalVAT"]) == (Decimal("1045.45"), Decimal("167.73"))
    stored = await worker.db["einvoices"].find_one({"_id": "o-1/INV-o-1"})
    assert stored is not None
    assert [r["code"] for r in stored["documents"][0]["responses"]] == ["AB", "AP", "PD"]
    assert viban_of("o-1")  # the IBAN sent is the VIBAN (the simulator keeps it only if listed)
