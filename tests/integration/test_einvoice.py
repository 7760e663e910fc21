"""The e-invoice worker on real Kafka and MongoDB against the Billit simulator running as a
real HTTP server (tests/billit_sandbox.py). Time moves through our synthetic ticks and the
simulator's clock together (tests/einvoice_world.py). The oracles: the
``einvoices.status_changed`` events on the bus, the simulator's own counters (orders created
per ExternalProviderID, payments per order, calls per endpoint) and the orders as Billit shows
them."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from services.einvoice_status import exact_json
from services.einvoice_status.app import build_worker
from services.einvoice_status.settings import EinvoiceSettings
from shared import events as ev
from shared import topics
from shared.envelope import CloudEvent
from shared.ops import main as ops_main
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
    wait_for,
)
from tests.harness import Bus, headers_of

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
    assert await worker.db["einvoices"].count_documents({"order_id": "o-4"}) == 0
    assert await worker.db["jobs"].count_documents({"key": "o-4"}) == 0

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


WIDGETS = [line("Widget", 4, "250.00", "21")]
TOTAL = amount("1210.00", "1000.00", "210.00")


async def send_invoices(bus: Bus, order_ids: list[str], vat: str = DELIVERS_AB_AP_PD) -> None:
    await send_world(bus, [(o, "m-billit", vat, WIDGETS, TOTAL) for o in order_ids])
    for order_id in order_ids:
        await bus.send(
            issued(order_id, "m-billit", f"INV-{order_id}", TOTAL, company_id=f"c-{order_id}")
        )


async def test_429_500_timeouts_and_lost_create_answers_leave_one_billit_order_per_invoice(
    bus: Bus, run_worker: Any, billit_sim: SimAdmin
) -> None:
    """Create answers 429 twice, 500 once, answers only after the client's 2 s timeout once,
    loses its answer after creating the order twice (connection dropped; never answering);
    send answers 500 once and polls 429 once. Five invoices all reach AB, and the simulator
    counts exactly one Billit order per ExternalProviderID."""
    await billit_sim.fault(
        endpoint="create_order", kind="status", status=429, retry_after="0", count=2
    )
    await billit_sim.fault(endpoint="create_order", kind="status", status=500)
    await billit_sim.fault(endpoint="create_order", kind="slow", delay_seconds=3.0)
    await billit_sim.fault(endpoint="create_order", kind="lost_response", mode="drop")
    await billit_sim.fault(endpoint="create_order", kind="lost_response", mode="hang")
    await billit_sim.fault(endpoint="send_orders", kind="status", status=500)
    await billit_sim.fault(endpoint="get_order", kind="status", status=429, retry_after="0")
    worker = await start(run_worker, billit_sim)
    orders = [f"o-2{i}" for i in range(5)]
    await send_invoices(bus, orders, vat="BE0446725877")  # the receiver answering AB only
    drive = Drive(bus, billit_sim, worker.db)

    def all_answered(found: list[CloudEvent[ev.EventData]]) -> bool:
        return all(("delivered", "AB") in statuses(found, o) for o in orders)

    await drive.until(counting(bus, all_answered), what="AB for every invoice")
    counters = await billit_sim.counters()
    assert counters["orders_created_by_external_provider_id"] == {f"{o}/INV-{o}": 1 for o in orders}
    calls = counters["calls"]["create_order"]
    assert calls.get("429") == 2 and calls.get("500") == 1 and calls.get("lost") == 2
    assert counters["faults_pending"] == []
    found = await status_events(bus, settle=1.0)
    for order_id in orders:
        assert statuses(found, order_id) == [
            ("pending", None),
            ("delivered", None),
            ("delivered", "AB"),
        ]


async def test_payments_once_each_then_paid_and_credit_note_and_cancel_after_sending(
    bus: Bus, run_worker: Any, billit_sim: SimAdmin
) -> None:
    """o-30 is paid in two steps (500.00, then 710.00 in one allocation event sent twice with
    the same id, plus another allocation to an unknown invoice) and settled: Billit gets
    exactly those two payments with their dates, then Paid with the settlement date. o-31 is
    credited 121.00 after it was sent: a Billit CreditNote for 100.00 + 21.00, sent and
    delivered. o-32 is canceled after it was sent: a CreditNote for all of it."""
    worker = await start(run_worker, billit_sim)
    await send_invoices(bus, ["o-30", "o-31", "o-32"], vat="BE0446725877")
    drive = Drive(bus, billit_sim, worker.db)

    def all_delivered(found: list[CloudEvent[ev.EventData]]) -> bool:
        return all(("delivered", None) in statuses(found, o) for o in ("o-30", "o-31", "o-32"))

    await drive.until(counting(bus, all_delivered), what="three deliveries")
    viban = viban_of("o-30")
    first = ev.PaymentAllocated(
        transaction_id="tx-1",
        creditor_iban=viban,
        allocations=[ev.Allocation(invoice_number="INV-o-30", amount=Decimal("500.00"))],
        overpayment=Decimal("0.00"),
        unallocated=Decimal("0.00"),
    )
    second = ev.PaymentAllocated(
        transaction_id="tx-2",
        creditor_iban=viban,
        allocations=[
            ev.Allocation(invoice_number="INV-unknown", amount=Decimal("1.00")),
            ev.Allocation(invoice_number="INV-o-30", amount=Decimal("710.00")),
        ],
        overpayment=Decimal("0.00"),
        unallocated=Decimal("0.00"),
    )
    await bus.send(first)
    second_id = await bus.send(second)
    await bus.send(second, event_id=second_id)  # the same event again
    await bus.send(
        ev.InvoiceSettled(
            invoice_number="INV-o-30",
            order_id="o-30",
            settled_on=date(2026, 6, 20),
            paid_total=Decimal("1210.00"),
        )
    )
    await bus.send(
        ev.CreditNoteAccepted(
            order_id="o-31",
            merchant_id="m-billit",
            invoice_number="INV-o-31",
            credit_note_number="CN-1",
            amount=amount("121.00", "100.00", "21.00"),
            invoice_gross=Decimal("1089.00"),
        )
    )
    await bus.send(
        ev.InvoiceStateChanged(
            invoice_number="INV-o-32", order_id="o-32", from_="paid_out", to="canceled"
        )
    )

    async def reported() -> bool:
        doc = await worker.db["einvoices"].find_one({"_id": "o-30/INV-o-30"})
        return doc is not None and [s["state"] for s in doc["steps"]] == ["reported"] * 3

    await wait_for(reported, what="the three reports")

    def credit_notes_delivered(found: list[CloudEvent[ev.EventData]]) -> bool:
        details = [
            e.data.detail
            for e in found
            if isinstance(e.data, ev.EinvoiceStatusChanged)
            and e.data.delivery_status == "delivered"
        ]
        return (
            "credit note CN-1: delivered" in details
            and "credit note INV-o-32-C: delivered" in details
        )

    await drive.until(counting(bus, credit_notes_delivered), what="both credit notes delivered")
    await drive.idle()
    counters = await billit_sim.counters()
    order_id = str((await billit_order(billit_sim, "o-30/INV-o-30"))["OrderID"])
    payments = counters["payments_by_order"][order_id]
    assert [p["Amount"] for p in payments] == ["500.00", "710.00"]
    assert counters["payments_by_order"].keys() == {order_id}
    paid = await billit_order(billit_sim, "o-30/INV-o-30")
    assert paid["Paid"] is True and paid["PaidDate"] == "2026-06-20T00:00:00"
    credit = await billit_order(billit_sim, "o-31/INV-o-31/cn:CN-1")
    assert credit["OrderType"] == "CreditNote"
    assert (credit["TotalExcl"], credit["TotalVAT"]) == (Decimal("100.00"), Decimal("21.00"))
    assert credit["IsSent"] is True
    cancel = await billit_order(billit_sim, "o-32/INV-o-32/cancel")
    assert (cancel["OrderType"], cancel["TotalIncl"]) == ("CreditNote", Decimal("1210.00"))
    assert counters["orders_created"] == 5


async def test_out_of_order_and_repeated_receiver_messages_are_taken_once_forward_only(
    bus: Bus, run_worker: Any, billit_sim: SimAdmin
) -> None:
    """Once delivered, one poll answers (the simulator replaces its body) with AP listed
    before AB (AB is older), AP's FileID twice, and a UQ after AP; the next polls show the
    receiver's real AB under another FileID. Taken: AB then AP, each once; the UQ (backwards)
    and the late AB are kept in the history as ignored; no event goes backwards."""
    worker = await start(run_worker, billit_sim)
    await send_invoices(bus, ["o-40"], vat="BE0446725877")
    drive = Drive(bus, billit_sim, worker.db)

    def delivered(found: list[CloudEvent[ev.EventData]]) -> bool:
        return ("delivered", None) in statuses(found, "o-40")

    # Delivered after 60 s, its AB after 90 s more: one 120 s step shows the delivery only.
    await drive.until(counting(bus, delivered), steps=(60, 20), what="delivery")
    billit_id = (await billit_order(billit_sim, "o-40/INV-o-40"))["OrderID"]

    def message(code: str, file_id: str, at: str) -> dict[str, Any]:
        return {
            "Description": f"{code}: text",
            "FileID": file_id,
            "CreationDate": at,
            "MessageDirection": "Incoming",
            "TransportType": "Peppol",
            "Success": True,
        }

    body = {
        "OrderID": billit_id,
        "CurrentDocumentDeliveryDetails": {"DocumentDeliveryStatus": "Delivered"},
        "Messages": [
            message("AP", "f-ap", "2026-06-01T10:05:00"),
            message("AB", "f-ab", "2026-06-01T10:01:00"),
            message("AP", "f-ap", "2026-06-01T10:05:00"),
            message("UQ", "f-uq", "2026-06-01T10:09:00"),
        ],
    }
    await billit_sim.fault(
        endpoint="get_order", kind="replace_body", status=200, body=exact_json.dumps(body).decode()
    )
    await drive.tick(1)
    await drive.tick(600)  # the real AB is there now
    await drive.tick(600)
    found = await status_events(bus, settle=1.0)
    assert statuses(found, "o-40") == [
        ("pending", None),
        ("delivered", None),
        ("delivered", "AB"),
        ("delivered", "AP"),
    ]
    doc = await worker.db["einvoices"].find_one({"_id": "o-40/INV-o-40"})
    assert doc is not None
    responses = [(r["code"], r["file_id"], r["taken"]) for r in doc["documents"][0]["responses"]]
    assert responses[:3] == [("AB", "f-ab", True), ("AP", "f-ap", True), ("UQ", "f-uq", False)]
    assert [(code, taken) for code, _, taken in responses[3:]] == [("AB", False)]


async def test_bad_input_dead_lettered_bad_billit_answers_retried_401_failed_and_requeued(
    bus: Bus, run_worker: Any, billit_sim: SimAdmin
) -> None:
    """A record on invoices.issued that is not JSON and one that breaks the contract go to
    invoices.issued.dlq with the dlq-* headers. Billit answers two polls with cut-off JSON and
    two with an unknown DocumentDeliveryStatus: each is logged, counted and retried, and both
    invoices still reach AB. A merchant whose PartyID the API key may not use gets 401: the
    participant job fails at once, is counted, and ``einvoice failed`` lists it; the
    participant check of o-72 fails past its attempts on 500s, ``einvoice requeue`` runs it
    again and that invoice goes on to delivery."""
    worker = await start(run_worker, billit_sim, job_max_attempts=2, billit_inline_attempts=1)
    await bus.send_raw(topics.INVOICES_ISSUED, b"{not json", key=b"o-bad")
    bad_sum = issued("o-bad", "m-billit", "INV-bad", TOTAL).model_dump(mode="json")
    bad_sum["amount"]["gross"] = "1.00"
    await bus.send_raw(
        topics.INVOICES_ISSUED,
        exact_json.dumps(
            {
                "specversion": "1.0",
                "id": "bad-sum",
                "source": "/tests",
                "type": "invoice.issued.v1",
                "time": "2026-06-01T09:00:00Z",
                "datacontenttype": "application/json",
                "data": bad_sum,
            }
        ),
        key=b"o-bad",
    )
    unknown = {
        "OrderID": 1,
        "CurrentDocumentDeliveryDetails": {"DocumentDeliveryStatus": "Lost"},
        "Messages": [],
    }
    await billit_sim.fault(endpoint="get_order", kind="malformed_json", count=2)
    await billit_sim.fault(
        endpoint="get_order",
        kind="replace_body",
        status=200,
        body=exact_json.dumps(unknown).decode(),
        count=2,
    )
    await send_invoices(bus, ["o-70", "o-71"], vat="BE0446725877")
    await bus.send_many([merchant("m-wrong", party_id="9999"), company("c-o-73", "BE0446725877")])
    await bus.send(order("o-73", "m-wrong", "BE0446725877", WIDGETS, TOTAL))
    await bus.send(issued("o-73", "m-wrong", "INV-o-73", TOTAL, company_id="c-o-73"))
    drive = Drive(bus, billit_sim, worker.db)

    def answered(found: list[CloudEvent[ev.EventData]]) -> bool:
        return all(("delivered", "AB") in statuses(found, o) for o in ("o-70", "o-71"))

    await drive.until(counting(bus, answered), what="AB for both invoices")
    dead = await bus.records(f"{topics.INVOICES_ISSUED}.dlq", until=lambda r: len(r) >= 2)
    kinds = sorted(headers_of(r)["dlq-error-kind"] for r in dead)
    assert kinds == ["json", "schema"]
    assert all(headers_of(r)["dlq-source-topic"] == bus.topic(topics.INVOICES_ISSUED) for r in dead)
    registry = worker.metrics.registry
    assert registry.get_sample_value("einvoice_billit_bad_answers_total", {"kind": "poll"}) == 4
    # Each bad answer is retried, or (on a poll's second attempt, job_max_attempts=2) ends
    # that poll, and the invoice's next poll timer goes on.
    retried = registry.get_sample_value("einvoice_billit_jobs_retried_total", {"kind": "poll"})
    gave_up = registry.get_sample_value("einvoice_billit_jobs_failed_total", {"kind": "poll"})
    assert retried is not None and gave_up is not None
    assert retried >= 2 and retried + gave_up == 4
    assert registry.get_sample_value("einvoice_billit_unauthorized_total") == 1
    assert (
        registry.get_sample_value("einvoice_billit_jobs_failed_total", {"kind": "participant"}) == 1
    )
    assert worker.fatal is None

    database = ["--mongodb-uri", worker.settings.mongodb_uri, "--database", worker.db.name]
    listing = io.StringIO()
    with redirect_stdout(listing):
        assert ops_main(["einvoice_status", *database, "einvoice", "failed"]) == 0
    lines = [json.loads(text) for text in listing.getvalue().splitlines()]
    failed = [line for line in lines if "job" in line]
    assert all(f["invoice"] for f in failed)  # each failed job names its invoice
    checks = [f for f in failed if f["kind"] == "participant"]
    assert [f["invoice"] for f in checks] == ["o-73/INV-o-73"]
    assert "401" in checks[0]["last_error"]

    # A participant check that fails past its attempts, then is re-queued by an operator.
    await billit_sim.fault(endpoint="participant_information", kind="status", status=500, count=2)
    await send_invoices(bus, ["o-72"], vat="BE0446725877")

    async def participant_failed() -> bool:
        return await worker.db["jobs"].count_documents({"state": "failed", "key": "o-72"}) == 1

    await wait_for(participant_failed, what="the o-72 check to fail")
    await drive.idle()
    job = await worker.db["jobs"].find_one({"state": "failed", "key": "o-72"})
    assert job is not None
    with redirect_stdout(io.StringIO()):
        assert ops_main(["einvoice_status", *database, "einvoice", "requeue", job["_id"]]) == 0

    def delivered(found: list[CloudEvent[ev.EventData]]) -> bool:
        return ("delivered", None) in statuses(found, "o-72")

    await drive.until(counting(bus, delivered), what="o-72 delivered after the requeue")
    history = io.StringIO()
    with redirect_stdout(history):
        assert ops_main(["einvoice_status", *database, "einvoice", "history", "INV-o-72"]) == 0
    shown = [json.loads(text) for text in history.getvalue().splitlines()]
    assert any(s.get("what") == "participant job failed" for s in shown)
    assert any(
        s.get("document") == "invoice" and s["delivery_status"] == "delivered" for s in shown
    )
    assert {s.get("kind") for s in shown if "job" in s} >= {"participant", "create", "send", "poll"}


async def test_a_payment_and_a_credit_note_read_before_their_invoice_wait_for_it(
    bus: Bus, run_worker: Any, billit_sim: SimAdmin
) -> None:
    """Kafka orders records within a partition, never across topics: a payment to o-80's
    VIBAN and a credit note of its invoice are consumed before invoices.issued. Both wait
    (parked) and are applied once the invoice is there: Billit gets the payment once and the
    credit note. A payment to the VIBAN of a merchant without e-invoicing is ignored at once
    (nothing parked for it)."""
    worker = await start(run_worker, billit_sim)
    await send_world(
        bus,
        [
            ("o-80", "m-billit", "BE0446725877", WIDGETS, TOTAL),
            ("o-81", "m-plain", "BE0446725877", WIDGETS, TOTAL),
        ],
    )
    await bus.send(issued("o-81", "m-plain", "INV-o-81", TOTAL, company_id="c-o-81"))
    drive = Drive(bus, billit_sim, worker.db)
    await drive.tick()  # everything so far consumed
    for order_id, tx in (("o-80", "tx-80"), ("o-81", "tx-81")):
        await bus.send(
            ev.PaymentAllocated(
                transaction_id=tx,
                creditor_iban=viban_of(order_id),
                allocations=[
                    ev.Allocation(invoice_number=f"INV-{order_id}", amount=Decimal("10.00"))
                ],
                overpayment=Decimal("0.00"),
                unallocated=Decimal("0.00"),
            )
        )
    await bus.send(
        ev.CreditNoteAccepted(
            order_id="o-80",
            merchant_id="m-billit",
            invoice_number="INV-o-80",
            credit_note_number="CN-80",
            amount=amount("121.00", "100.00", "21.00"),
            invoice_gross=Decimal("1089.00"),
        )
    )

    async def parked() -> bool:
        return await worker.db["parked"].count_documents({}) == 2

    await wait_for(parked, what="the payment and the credit note to wait")
    await bus.send(issued("o-80", "m-billit", "INV-o-80", TOTAL, company_id="c-o-80"))

    async def applied() -> bool:
        doc = await worker.db["einvoices"].find_one({"_id": "o-80/INV-o-80"})
        return (
            doc is not None
            and [s["state"] for s in doc["steps"]] == ["reported"]
            and any(d["key"] == "cn:CN-80" and d.get("sent_at") for d in doc["documents"])
        )

    await drive.until(applied, what="the payment and the credit note applied")
    counters = await billit_sim.counters()
    order_id = str((await billit_order(billit_sim, "o-80/INV-o-80"))["OrderID"])
    assert [p["Amount"] for p in counters["payments_by_order"][order_id]] == ["10.00"]
    assert counters["payments_by_order"].keys() == {order_id}
    await billit_order(billit_sim, "o-80/INV-o-80/cn:CN-80")
    assert await worker.db["parked"].count_documents({}) == 0
    assert await worker.db["einvoices"].count_documents({"order_id": "o-81"}) == 0
