"""The demo's e-invoice act (called from scripts/demo.py after the other acts).

A Billit merchant (``m-billit``, ``einvoicing: billit``) sells to four companies of its own;
the orders ``o-4001``..``o-4004`` are decided by risk, shipped (shipped_at 2027-11-01, due a
month later, so the act's ticks make none of them late) and invoiced by shipping; the
e-invoice worker takes each invoice to the Billit simulator:

- o-4001 to a receiver that answers AB, then AP, then PD;
- o-4002 to a receiver whose access point refuses it (InvalidInvoice, with its reason);
- o-4003 to a receiver not on Peppol: nothing created in Billit;
- o-4004 delivered (AB), then paid in two steps: two bank transfers (600.00, then 610.00)
  to the invoice's VIBAN, which the reconciliation worker allocates and then settles; Billit
  gets both payments, then the paid flag.

Time: the simulator's clock and synthetic ticks from 2027-11-01 move together (earlier acts
tick up to 2027-10-31). The summary shows the e-invoice outcomes and the receiver responses
by code, each checked.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from scripts.processes import Fleet, Process, free_port
from shared import topics
from shared.events import (
    Amount,
    BankTransactionReceived,
    EinvoiceStatusChanged,
    InvoiceIssued,
    LineItem,
    OrderDecided,
)
from tests import examples as ex
from tests.billit_sandbox import API_KEY, SimAdmin
from tests.einvoice_world import Drive
from tests.harness import Bus

MERCHANT = "m-billit"
START = datetime(2027, 11, 1, 9, 0, tzinfo=UTC)
TOTAL = Amount(gross=Decimal("1210.00"), net=Decimal("1000.00"), tax=Decimal("210.00"))
# order id -> (company id, VAT id, what should happen)
ORDERS = {
    "o-4001": ("c-billit-1", "BE0563846944", "delivered, AB -> AP -> PD"),
    "o-4002": ("c-billit-2", "BE0811111111", "refused: InvalidInvoice"),
    "o-4003": ("c-billit-3", "BE0999999999", "receiver not on Peppol"),
    "o-4004": ("c-billit-4", "BE0446725877", "delivered, AB, paid in two steps"),
}
EXPECTED_FINAL = {
    "o-4001": ("delivered", "PD"),
    "o-4002": ("error", None),
    "o-4003": ("error", None),
    "o-4004": ("delivered", "AB"),
}
EXPECTED_RESPONSES = {"AB": 2, "AP": 1, "PD": 1}
EXPECTED_OUTCOMES = {"delivered": 2, "refused": 1, "not_sent": 1}
PAYMENTS = (Decimal("600.00"), Decimal("610.00"))


def start_simulator(fleet: Fleet) -> tuple[Process, str]:
    """The Billit simulator, one command, in the fleet (stopped with it)."""
    port = free_port()
    process = fleet._spawn(  # the fleet's spawn: a helper process, not a worker
        "billit-simulator",
        [sys.executable, "-m", "services.einvoice_status.simulator", "--port", str(port)],
        dict(fleet.env),
    )
    process.http_port = port
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sim/clock", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the Billit simulator did not start: {process.log_tail()}")


def worker_env(stamp: str, simulator_url: str) -> dict[str, str]:
    return {
        "EINVOICE_STATUS_MONGODB_DATABASE": f"demo{stamp}_einvoice_status",
        "EINVOICE_STATUS_BILLIT_BASE_URL": simulator_url,
        "EINVOICE_STATUS_BILLIT_API_KEY": API_KEY,
        "EINVOICE_STATUS_PARK_TTL_SECONDS": "30",
        "EINVOICE_STATUS_JOB_BACKOFF_BASE_SECONDS": "0.1",
        "EINVOICE_STATUS_JOB_POLL_SECONDS": "0.1",
    }


def _company(company_id: str, vat: str) -> Any:
    return ex.company(
        company_id,
        name=f"Kantoor {company_id.rsplit('-', 1)[-1]} BV",
        legal_form="BV",
        registration_number=vat.removeprefix("BE"),
        vat_id=vat,
        address=ex.address(
            street="Wetstraat", house_number="16", postal_code="1000", city="Brussel", country="BE"
        ),
        financing_limit=Decimal("5000.00"),
    )


@dataclass(frozen=True)
class EinvoiceDemo:
    worker: Process
    simulator_url: str
    database: str


def start(fleet: Fleet, stamp: str) -> EinvoiceDemo:
    """The simulator (ready when this returns) and the e-invoice worker (starting)."""
    _, url = start_simulator(fleet)
    env = worker_env(stamp, url)
    worker = fleet.start_worker("einvoice_status", **env)
    print(f"demo: Billit simulator on {url}")
    return EinvoiceDemo(worker, url, env["EINVOICE_STATUS_MONGODB_DATABASE"])


async def einvoice_act(bus: Bus, demo: EinvoiceDemo, mongodb_uri: str) -> int:
    """Runs the act, prints its summary, returns the number of unexpected outcomes."""
    demo.worker.wait_ready()
    sim = SimAdmin(demo.simulator_url)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        failures, lines = await _act(bus, demo.worker, sim, mongo[demo.database])
    finally:
        await sim.aclose()
        await mongo.close()
    print("\n".join(lines))
    return failures


async def _act(bus: Bus, worker: Process, sim: SimAdmin, db: Any) -> tuple[int, list[str]]:
    await sim.participant(
        "0208:0811111111",
        DocumentTypes=["BISv3Invoice", "BISv3CreditNote"],
        script={"refuse": {"reason_tc": "InvalidInvoice", "info": "Buyer reference missing"}},
    )
    merchant = ex.merchant(
        MERCHANT, name="Bureau Billit NV", einvoicing="billit", billit_party_id="1001"
    )
    companies = {cid: _company(cid, vat) for cid, vat, _ in ORDERS.values()}
    await bus.send_many([merchant, *companies.values()])
    await asyncio.sleep(1.0)  # configuration first, as the gateway would
    await bus.send_many(
        [
            ex.order(
                order_id,
                merchant_id=MERCHANT,
                debtor=ex.debtor_of(companies[cid]),
                amount=TOTAL,
                line_items=[
                    LineItem(
                        description="Bureaustoel",
                        quantity=4,
                        unit_price_net=Decimal("250.00"),
                        vat_rate="21",
                    )
                ],
            )
            for order_id, (cid, _, _) in ORDERS.items()
        ]
    )
    decided = await bus.events(
        topics.ORDERS_DECIDED, count=len(ORDERS), where=lambda e: e.subject in ORDERS, timeout=60
    )
    vibans = {
        e.data.order_id: e.data.viban
        for e in decided
        if isinstance(e.data, OrderDecided) and e.data.viban
    }
    await bus.send_many(
        [
            ex.shipment(o, f"INV-{o[2:]}", amount=TOTAL, shipped_at=START)
            for o in ORDERS
            if o in vibans
        ]
    )
    await bus.events(
        topics.INVOICES_ISSUED,
        count=len(ORDERS),
        where=lambda e: isinstance(e.data, InvoiceIssued) and e.data.merchant_id == MERCHANT,
        timeout=60,
    )
    print(f"\ndemo: {len(ORDERS)} invoices of {MERCHANT} go to Billit (the simulator)")
    await sim.advance((START - datetime(2026, 6, 1, 9, 0, tzinfo=UTC)).total_seconds())
    drive = Drive(bus, sim, db, start=START)

    async def finals() -> dict[str, tuple[str, str | None]]:
        found = await bus.events(
            topics.EINVOICES_STATUS_CHANGED, where=lambda e: e.subject in ORDERS, timeout=5
        )
        last: dict[str, tuple[str, str | None]] = {}
        for e in found:
            if isinstance(e.data, EinvoiceStatusChanged):
                last[e.data.order_id] = (e.data.delivery_status, e.data.receiver_status)
        return last

    async def answered() -> bool:
        got = await finals()
        return got.get("o-4004") == ("delivered", "AB") and got.get("o-4002", ("",))[0] == "error"

    await drive.until(answered, steps=(120, 120, 600), what="first answers")
    viban = vibans["o-4004"]
    # Two transfers to the invoice's VIBAN: the reconciliation worker allocates them
    # (payments.allocated) and settles the invoice with the second (invoices.settled).
    for n, paid in enumerate(PAYMENTS, start=1):
        await bus.send(
            BankTransactionReceived(
                transaction_id=f"tx-einv-{n}",
                creditor_iban=viban,
                amount=paid,
                currency="EUR",
                booking_date=date(2027, 11, 1 + n),
                debtor_name="Receiver 4004 BV",
                debtor_iban="NL91ABNA0417164300",
                remittance_information=f"Invoice INV-4004 part {n}",
            )
        )

    async def done() -> bool:
        doc = await db["einvoices"].find_one({"_id": "o-4004/INV-4004"})
        reported = doc is not None and [s["state"] for s in doc["steps"]] == ["reported"] * 3
        return reported and (await finals()).get("o-4001") == ("delivered", "PD")

    await drive.until(done, steps=(3600, 3600, 86_400, 86_400), what="PD and the payments")
    return await _summary(worker, sim, db, await finals())


async def _summary(
    worker: Process, sim: SimAdmin, db: Any, last: dict[str, tuple[str, str | None]]
) -> tuple[int, list[str]]:
    failures = 0
    lines = ["", f"e-invoices of {MERCHANT} through Billit (simulator), last status:"]
    for order_id, (_, _, what) in ORDERS.items():
        got = last.get(order_id)
        ok = got == EXPECTED_FINAL[order_id]
        failures += not ok
        doc = await db["einvoices"].find_one({"order_id": order_id})
        detail = "" if doc is None else doc["documents"][0].get("detail", "")
        lines.append(f"  {'ok ' if ok else 'BAD'} {order_id} {what:34} -> {got} {detail}".rstrip())
    _, text = worker.get("/metrics")
    responses = _series(text, "einvoice_receiver_responses_total", "code")
    outcomes = _series(text, "einvoice_delivery_outcomes_total", "outcome")
    ok = responses == EXPECTED_RESPONSES
    failures += not ok
    lines.append(f"  {'ok ' if ok else 'BAD'} receiver responses by code: {responses}")
    ok = outcomes == EXPECTED_OUTCOMES
    failures += not ok
    lines.append(f"  {'ok ' if ok else 'BAD'} delivery outcomes: {outcomes}")
    counters = await sim.counters()
    doc = await db["einvoices"].find_one({"order_id": "o-4004"})
    billit_id = None if doc is None else doc["documents"][0].get("billit_order_id")
    paid = [Decimal(p["Amount"]) for p in counters["payments_by_order"].get(str(billit_id), [])]
    order = (await sim.raw("GET", f"/v1/orders/{billit_id}")).json() if billit_id else {}
    ok = paid == list(PAYMENTS) and order.get("Paid") is True
    failures += not ok
    lines.append(
        f"  {'ok ' if ok else 'BAD'} o-4004 payments in Billit {[str(p) for p in paid]}, "
        f"Paid={order.get('Paid')} PaidDate={order.get('PaidDate')}"
    )
    created = counters["orders_created_by_external_provider_id"]
    ok = all(n == 1 for n in created.values()) and len(created) == 3
    failures += not ok
    lines.append(f"  {'ok ' if ok else 'BAD'} one Billit order per sent invoice: {created}")
    return failures, lines


def _series(text: str, name: str, label: str) -> dict[str, int]:
    found = {}
    for match in re.finditer(rf'^{name}\{{{label}="([^"]+)"\}} ([0-9.e+]+)$', text, re.M):
        if float(match.group(2)) > 0:
            found[match.group(1)] = int(float(match.group(2)))
    return found
