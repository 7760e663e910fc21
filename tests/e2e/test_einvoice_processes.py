"""The e-invoice worker as a real process against the Billit simulator as a real HTTP server:
a worker SIGKILLed while Billit is registering a payment is replaced, and Billit still gets
each payment exactly once (Billit does not dedupe payments; the payment job checks ToPay
before posting)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from scripts.processes import Fleet, Process
from shared import events as ev
from tests.billit_sandbox import API_KEY, SimAdmin, billit_sim, billit_sim_url
from tests.e2e.fleets import fleet_for, metrics_matching
from tests.einvoice_world import (
    Db,
    Drive,
    amount,
    company,
    issued,
    line,
    merchant,
    order,
    viban_of,
    wait_for,
)
from tests.harness import Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
__all__ = ["billit_sim", "billit_sim_url"]  # fixtures


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path, billit_sim: SimAdmin) -> Iterator[Fleet]:
    fleet = fleet_for(
        infra,
        namespace,
        tmp_path / "logs",
        "einvoice_status",
        ticker=False,
        BILLIT_BASE_URL=billit_sim.url,
        BILLIT_API_KEY=API_KEY,
        BILLIT_RATE_PER_SECOND="200",
        BILLIT_READ_TIMEOUT_SECONDS="2.5",
        BILLIT_BACKOFF_BASE_SECONDS="0.05",
        JOB_BACKOFF_BASE_SECONDS="0.05",
        JOB_BACKOFF_CAP_SECONDS="0.5",
        JOB_POLL_SECONDS="0.05",
        JOB_TIMEOUT_SECONDS="3.5",
        JOB_LEASE_SECONDS="4",
    )
    yield fleet
    fleet.stop_all()


@pytest.fixture
async def db(mongo: AsyncMongoClient[dict[str, Any]], namespace: str) -> AsyncIterator[Db]:
    name = f"{namespace}_einvoice_status"
    yield mongo[name]
    await mongo.drop_database(name)


def start_worker(fleet: Fleet) -> Process:
    worker = fleet.start_worker("einvoice_status")
    worker.wait_ready()
    return worker


def allocation(tx: str, cents: str) -> ev.PaymentAllocated:
    return ev.PaymentAllocated(
        transaction_id=tx,
        creditor_iban=viban_of("o-50"),
        allocations=[ev.Allocation(invoice_number="INV-o-50", amount=Decimal(cents))],
        overpayment=Decimal("0.00"),
        unallocated=Decimal("0.00"),
    )


async def test_payment_registered_while_the_worker_is_killed_is_reported_once(
    fleet: Fleet, bus: Bus, db: Db, billit_sim: SimAdmin
) -> None:
    """Invoice o-50 (1210.00) is delivered. Billit registers the first payment
    (600.00) and then never answers; the worker is SIGKILLed while it waits. A new worker
    takes the job over once its lease (4 s) ran out, sees ToPay already lowered, and does not
    post again; the second payment (610.00) and the settlement follow. Billit holds exactly
    600.00 and 610.00, and the order is marked paid."""
    first = start_worker(fleet)
    total = amount("1210.00", "1000.00", "210.00")
    await bus.send_many([merchant("m-billit"), company("c-o-50", "BE0446725877")])
    await bus.send(
        order("o-50", "m-billit", "BE0446725877", [line("Widget", 4, "250.00", "21")], total)
    )
    await bus.send(issued("o-50", "m-billit", "INV-o-50", total, company_id="c-o-50"))
    drive = Drive(bus, billit_sim, db)

    async def delivered() -> bool:
        doc = await db["einvoices"].find_one({"_id": "o-50/INV-o-50"})
        return doc is not None and doc["documents"][0]["delivery_status"] == "delivered"

    await drive.until(delivered, what="delivery")
    # Billit registers the payment, then never answers: the worker waits for the answer.
    await billit_sim.fault(endpoint="register_payment", kind="lost_response", mode="hang")
    await bus.send(allocation("tx-1", "600.00"))

    async def registered() -> bool:
        return bool((await billit_sim.counters())["payments_by_order"])

    await wait_for(registered, what="the payment to be registered")
    first.kill()
    start_worker(fleet)
    await bus.send(allocation("tx-2", "610.00"))
    await bus.send(
        ev.InvoiceSettled(
            invoice_number="INV-o-50",
            order_id="o-50",
            settled_on=date(2026, 6, 20),
            paid_total=Decimal("1210.00"),
        )
    )

    async def all_reported() -> bool:
        doc = await db["einvoices"].find_one({"_id": "o-50/INV-o-50"})
        return doc is not None and [s["state"] for s in doc["steps"]] == ["reported"] * 3

    await wait_for(all_reported, timeout=90, what="the three reports")
    counters = await billit_sim.counters()
    (payments,) = counters["payments_by_order"].values()
    assert [p["Amount"] for p in payments] == ["600.00", "610.00"]
    doc = await db["einvoices"].find_one({"_id": "o-50/INV-o-50"})
    assert doc is not None
    assert "already registered" in doc["steps"][0]["detail"]  # the take-over did not post
    response = await billit_sim.raw("GET", f"/v1/orders/{doc['documents'][0]['billit_order_id']}")
    assert response.json()["Paid"] is True


async def test_metrics_on_the_worker_endpoint(
    fleet: Fleet, bus: Bus, db: Db, billit_sim: SimAdmin
) -> None:
    """One invoice delivered and answered AB, one refused by the receiver's access point; a
    poll answered 429 once and one answered 500 past the client's in-line attempt. The
    worker's /metrics shows Billit calls by endpoint and status, both delivery outcomes, the
    AB response, the poll backlog gauge and the retried jobs."""
    await billit_sim.participant(
        "0208:0811111111",
        DocumentTypes=["BISv3Invoice"],
        script={"refuse": {"reason_tc": "InvalidInvoice", "info": "no buyer reference"}},
    )
    worker = start_worker(fleet)
    total = amount("1210.00", "1000.00", "210.00")
    widgets = [line("Widget", 4, "250.00", "21")]
    await bus.send(merchant("m-billit"))
    for order_id, vat in (("o-60", "BE0446725877"), ("o-61", "BE0811111111")):
        await bus.send(company(f"c-{order_id}", vat))
        await bus.send(order(order_id, "m-billit", vat, widgets, total))
        await bus.send(
            issued(order_id, "m-billit", f"INV-{order_id}", total, company_id=f"c-{order_id}")
        )
    drive = Drive(bus, billit_sim, db)

    async def sent() -> bool:
        return await db["einvoices"].count_documents({"documents.0.stage": "polling"}) == 2

    await wait_for(sent, what="both sent")
    await billit_sim.fault(endpoint="get_order", kind="status", status=429, retry_after="0")
    await billit_sim.fault(endpoint="get_order", kind="status", status=500, count=2)

    async def answered() -> bool:
        doc = await db["einvoices"].find_one({"_id": "o-60/INV-o-60"})
        return doc is not None and doc["documents"][0].get("receiver_status") == "AB"

    await drive.until(answered, what="AB for o-60")
    text = await metrics_matching(worker, r'einvoice_receiver_responses_total\{code="AB"\} 1\.0')
    for series in (
        r'einvoice_billit_calls_total\{endpoint="get_order",status="429"\} 1\.0',
        r'einvoice_billit_calls_total\{endpoint="get_order",status="500"\} 2\.0',
        r'einvoice_billit_calls_total\{endpoint="create_order",status="200"\} 2\.0',
        r'einvoice_billit_calls_total\{endpoint="participant_information",status="200"\} 2\.0',
        r'einvoice_delivery_outcomes_total\{outcome="delivered"\} 1\.0',
        r'einvoice_delivery_outcomes_total\{outcome="refused"\} 1\.0',
        r"einvoice_poll_backlog \d",
        r'einvoice_billit_jobs_retried_total\{kind="poll"\} [1-9]',
        r'einvoice_billit_jobs_failed_total\{kind="poll"\} 0\.0',
        r"einvoice_billit_unauthorized_total 0\.0",
    ):
        assert re.search(series, text), series
