"""The Billit client against the Billit sandbox simulator, a real HTTP server on loopback.

Oracles come from Billit's documented behaviour (shared/notes/billit-peppol.md), read back
through the simulator's own counters and the API, never from the client under test.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from decimal import Decimal

import pytest

from services.einvoice_status.billit import (
    BillitBusinessError,
    BillitConfigurationError,
    BillitIdempotencyConflict,
    BillitMalformedResponse,
    BillitOutcomeUnknown,
    Customer,
    DeliveryStatus,
    NewOrder,
    OrderLine,
    OrderPatch,
    Payment,
    idempotency_key,
)
from tests import billit_sandbox
from tests.billit_sandbox import OTHER_API_KEY, SimAdmin, client_for

billit_sim_url = billit_sandbox.billit_sim_url
billit_sim = billit_sandbox.billit_sim

ACCEPTS_ALL = "BE0563846944"  # answers AB, AP after an hour, PD after a day
AB_ONLY = "BE0446725877"  # answers AB, then never again
NO_INVOICES = "BE0437299999"  # on Peppol, but takes no BISv3Invoice
NOT_ON_PEPPOL = "BE0999999999"


def invoice(number: str, vat: str = ACCEPTS_ALL) -> NewOrder:
    return NewOrder(
        order_number=number,
        order_date=date(2026, 6, 1),
        expiry_date=date(2026, 7, 1),
        external_provider_id=f"inv-{number}",
        payment_reference="+++090/9337/55493+++",
        iban="BE71096123456769",
        customer=Customer(name="Buyer NV", vat_number=vat),
        order_lines=[
            OrderLine(
                quantity=Decimal(1),
                unit_price_excl=Decimal("100.10"),
                description="Goods",
                vat_percentage=Decimal(21),
            )
        ],
    )


async def test_create_send_poll_delivered_then_ab_ap_pd(billit_sim: SimAdmin) -> None:
    """Pre-check, create, send over Peppol, then poll while the simulated clock moves:
    Pending until the receiver's access point takes it (60 s), Delivered after, and the
    receiver's responses AB (90 s after delivery), AP (1 h), PD (1 day) appear in that order,
    each read by the code in front of its Description (DocumentDeliveryInfo is Dutch text)."""
    async with client_for(billit_sim) as client:
        receiver = await client.participant_information(ACCEPTS_ALL)
        assert receiver.accepts("BISv3Invoice")
        outcome = await client.create_or_find_order(
            invoice("INV-1"), idempotency_key=idempotency_key("create", "INV-1")
        )
        assert outcome.created
        created = await client.get_order(outcome.order_id)
        assert (created.order_status, created.is_sent, created.delivery) == ("ToSend", False, None)
        assert created.total_incl == Decimal("121.12")  # 100.10 + 21.02 VAT, computed by Billit

        assert await client.send_orders([outcome.order_id], idempotency_key="send1")
        sent = await client.get_order(outcome.order_id)
        assert sent.order_status == "ToPay" and sent.is_sent
        assert sent.delivery is not None and sent.delivery.status is DeliveryStatus.PENDING

        await billit_sim.advance(59)
        still = await client.get_order(outcome.order_id)
        assert still.delivery is not None and still.delivery.status is DeliveryStatus.PENDING

        await billit_sim.advance(1)
        delivered = await client.get_order(outcome.order_id)
        assert delivered.delivery is not None
        assert delivered.delivery.status is DeliveryStatus.DELIVERED
        assert delivered.delivery.info == "Ontvangen"  # localised: the status says Delivered
        assert delivered.receiver_responses() == []

        seen: list[str] = []
        since_delivery = 0
        for due, expected in [(90, ["AB"]), (3600, ["AB", "AP"]), (86_400, ["AB", "AP", "PD"])]:
            await billit_sim.advance(due - since_delivery - 1)  # one second before it is due
            early = await client.get_order(outcome.order_id)
            assert [r.code for r in early.receiver_responses()] == seen
            await billit_sim.advance(1)
            since_delivery = due
            order = await client.get_order(outcome.order_id)
            seen = [r.code for r in order.receiver_responses()]
            assert seen == expected
        file_ids = [r.file_id for r in order.receiver_responses()]
        assert len(set(file_ids)) == 3
        again = await client.get_order(outcome.order_id)
        assert [r.file_id for r in again.receiver_responses()] == file_ids  # stable per message


async def test_receiver_that_stops_after_ab(billit_sim: SimAdmin) -> None:
    """A receiver that answers AB and then nothing: a month later there is still only AB."""
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-2", AB_ONLY), idempotency_key="c2")
        await client.send_orders([order_id], idempotency_key="s2")
        await billit_sim.advance(30 * 86_400)
        order = await client.get_order(order_id)
        assert order.delivery is not None and order.delivery.status is DeliveryStatus.DELIVERED
        assert [r.code for r in order.receiver_responses()] == ["AB"]


async def test_refused_document_carries_its_reason(billit_sim: SimAdmin) -> None:
    """A receiver whose access point refuses the document: after the delivery time the status
    is Error with DocumentRefusedReasonTC and DocumentRefusedInfo, and no receiver responses."""
    await billit_sim.participant(
        "0208:0811111111",
        script={
            "delivery_after_seconds": 120,
            "refuse": {"reason_tc": "InvalidInvoice", "info": "BR-CO-15 total mismatch"},
        },
    )
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-3", "BE0811111111"), idempotency_key="c3")
        await client.send_orders([order_id], idempotency_key="s3")
        await billit_sim.advance(120)
        order = await client.get_order(order_id)
        assert order.delivery is not None
        assert order.delivery.status is DeliveryStatus.ERROR and order.delivery.status.final
        assert order.delivery.refused_reason_tc == "InvalidInvoice"
        assert order.delivery.refused_info == "BR-CO-15 total mismatch"
        assert order.delivery.refused_at == datetime(2026, 6, 1, 9, 2)
        assert order.receiver_responses() == []


async def test_receiver_not_on_peppol(billit_sim: SimAdmin) -> None:
    """A company not on Peppol: the pre-check says Registered=false; sending answers 400
    TheCustomerIsNotActiveOnPeppol, raised as a non-retryable business error, and the order
    stays unsent. A company on Peppol that takes no invoices gets its own code."""
    async with client_for(billit_sim) as client:
        unknown = await client.participant_information(NOT_ON_PEPPOL)
        assert not unknown.registered and not unknown.accepts()
        order_id = await client.create_order(invoice("INV-4", NOT_ON_PEPPOL), idempotency_key="c4")
        with pytest.raises(BillitBusinessError) as refused:
            await client.send_orders([order_id], idempotency_key="s4")
        assert refused.value.codes == ["TheCustomerIsNotActiveOnPeppol"]
        assert not refused.value.retryable
        order = await client.get_order(order_id)
        assert (order.is_sent, order.order_status) == (False, "ToSend")

        assert not (await client.participant_information(NO_INVOICES)).accepts("BISv3Invoice")
        other = await client.create_order(invoice("INV-5", NO_INVOICES), idempotency_key="c5")
        with pytest.raises(BillitBusinessError) as no_type:
            await client.send_orders([other], idempotency_key="s5")
        assert no_type.value.codes == ["TheCustomerDoesNotSupportPeppolForType_0"]
    calls = (await billit_sim.counters())["calls"]["send_orders"]
    assert calls == {"400": 2}  # a business error is not retried


async def test_429_then_success_honours_retry_after(billit_sim: SimAdmin) -> None:
    """Two 429 answers with Retry-After: 1, then success: the client waits at least the two
    seconds Billit asked for and the order is created once."""
    await billit_sim.fault(
        endpoint="create_order", kind="status", status=429, retry_after=1, count=2
    )
    async with client_for(billit_sim) as client:
        started = time.monotonic()
        await client.create_order(invoice("INV-6"), idempotency_key="c6")
        assert time.monotonic() - started >= 2.0
    counters = await billit_sim.counters()
    assert counters["calls"]["create_order"] == {"429": 2, "200": 1}
    assert counters["orders_created_by_external_provider_id"] == {"inv-INV-6": 1}


async def test_500_then_success(billit_sim: SimAdmin) -> None:
    """Reads are retried through 500s. A create that got a 500 may have happened, so
    create-or-find looks the order up before creating again: still exactly one order."""
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-7"), idempotency_key="c7")
        await billit_sim.fault(endpoint="get_order", kind="status", status=500, count=2)
        order = await client.get_order(order_id)
        assert order.order_id == order_id

        await billit_sim.fault(endpoint="create_order", kind="status", status=500, count=1)
        outcome = await client.create_or_find_order(invoice("INV-8"), idempotency_key="c8")
        assert outcome.created
    counters = await billit_sim.counters()
    assert counters["calls"]["get_order"] == {"500": 2, "200": 1}
    assert counters["calls"]["list_orders"] == {"200": 1}  # looked up before the second create
    assert counters["orders_created_by_external_provider_id"]["inv-INV-8"] == 1


@pytest.mark.parametrize("mode", ["drop", "hang"])
async def test_lost_create_answer_then_create_or_find_yields_one_order(
    billit_sim: SimAdmin, mode: str
) -> None:
    """The simulator creates the order and then loses the answer (connection dropped, or no
    answer until the client times out). A bare create says the outcome is unknown and is not
    repeated; create-or-find finds the order by ExternalProviderID instead of creating a second
    one, also when run again later. The simulator counts exactly one order per invoice."""
    async with client_for(billit_sim, read_timeout_seconds=0.5) as client:
        await billit_sim.fault(endpoint="create_order", kind="lost_response", mode=mode)
        with pytest.raises(BillitOutcomeUnknown):
            await client.create_order(invoice("INV-9"), idempotency_key=idempotency_key("c", "9"))
        assert (await billit_sim.counters())["calls"]["create_order"] == {"lost": 1}

        await billit_sim.fault(endpoint="create_order", kind="lost_response", mode=mode)
        first = await client.create_or_find_order(
            invoice("INV-10"), idempotency_key=idempotency_key("c", "10")
        )
        assert not first.created
        replay = await client.create_or_find_order(
            invoice("INV-10"), idempotency_key=idempotency_key("c", "10")
        )
        assert replay.order_id == first.order_id and not replay.created
        order = await client.get_order(first.order_id)
        assert order.external_provider_id == "inv-INV-10"
    counters = await billit_sim.counters()
    assert counters["orders_created_by_external_provider_id"] == {"inv-INV-9": 1, "inv-INV-10": 1}
    assert counters["calls"]["create_order"] == {"lost": 2, "409": 1}


async def test_idempotency_key_reuse(billit_sim: SimAdmin) -> None:
    """Billit keeps a key only after success. Reusing a stored key answers 409 with no OrderID,
    with the same body or another; a key whose call failed (400) can be used again. Both
    header spellings are sent."""
    async with client_for(billit_sim) as client:
        await client.create_order(invoice("INV-11"), idempotency_key="k11")
        with pytest.raises(BillitIdempotencyConflict):
            await client.create_order(invoice("INV-11"), idempotency_key="k11")
        with pytest.raises(BillitIdempotencyConflict):
            await client.create_order(invoice("INV-12"), idempotency_key="k11")

        with pytest.raises(BillitBusinessError):
            await client.create_order(
                invoice("INV-13").model_copy(update={"order_type": "Quote"}),
                idempotency_key="k13",
            )
        await client.create_order(invoice("INV-13"), idempotency_key="k13")

        order_id = await client.create_order(invoice("INV-14"), idempotency_key="k14")
        assert await client.send_orders([order_id], idempotency_key="s14")
        assert not await client.send_orders([order_id], idempotency_key="s14")  # already done
    counters = await billit_sim.counters()
    assert counters["orders_created_by_external_provider_id"] == {
        "inv-INV-11": 1,
        "inv-INV-13": 1,
        "inv-INV-14": 1,
    }
    assert counters["calls"]["create_order"] == {"200": 3, "409": 2, "400": 1}
    assert counters["headers_seen"]["create_order"] == {"Idempotency-Key": 6, "Idempotent-Key": 6}
    assert counters["headers_seen"]["send_orders"]["StrictTransportType"] == 2


async def test_payments_registered_exactly(billit_sim: SimAdmin) -> None:
    """Two payment steps reach Billit with their exact amounts and dates and reduce ToPay to the
    cent. A payment whose answer is a 500 is not sent again (Billit does not dedupe payments):
    the client says the outcome is unknown."""
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-15"), idempotency_key="c15")
        await client.register_payment(
            order_id,
            Payment(amount=Decimal("10.02"), description="VIBAN tx 42", on=date(2026, 6, 3)),
            idempotency_key=idempotency_key("payment", "tx42"),
        )
        await client.register_payment(
            order_id,
            Payment(amount=Decimal("0.01"), description="VIBAN tx 43", on=date(2026, 6, 4)),
            idempotency_key=idempotency_key("payment", "tx43"),
        )
        order = await client.get_order(order_id)
        assert order.to_pay == Decimal("121.12") - Decimal("10.02") - Decimal("0.01")

        await billit_sim.fault(endpoint="register_payment", kind="status", status=500)
        with pytest.raises(BillitOutcomeUnknown):
            await client.register_payment(
                order_id,
                Payment(amount=Decimal("5.00"), description="VIBAN tx 44"),
                idempotency_key=idempotency_key("payment", "tx44"),
            )
    counters = await billit_sim.counters()
    assert counters["payments_by_order"][str(order_id)] == [
        {"Amount": "10.02", "Description": "VIBAN tx 42", "Date": "2026-06-03"},
        {"Amount": "0.01", "Description": "VIBAN tx 43", "Date": "2026-06-04"},
    ]
    assert counters["calls"]["register_payment"] == {"200": 2, "500": 1}


async def test_patch_paid(billit_sim: SimAdmin) -> None:
    """PATCH Paid=true with a PaidDate that has a time: the order reads back Paid, status Paid,
    nothing left to pay. The simulator itself refuses a date-only PaidDate and fields Billit
    does not let you patch, with errors[]."""
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-16"), idempotency_key="c16")
        await client.patch_order(
            order_id,
            OrderPatch(Paid=True, Paidon=datetime(2026, 6, 11), payment_method="Wired"),
            idempotency_key=idempotency_key("paid", "INV-16"),
        )
        order = await client.get_order(order_id)
        assert (order.paid, order.order_status, order.to_pay) == (True, "Paid", Decimal(0))
    date_only = await billit_sim.raw(
        "PATCH", f"/v1/orders/{order_id}", {"Paid": True, "PaidDate": "2026-06-11"}
    )
    assert date_only.status_code == 400
    assert date_only.json()["errors"][0]["Code"] == "InvalidDate"
    not_patchable = await billit_sim.raw("PATCH", f"/v1/orders/{order_id}", {"OrderNumber": "X"})
    assert not_patchable.status_code == 400
    assert not_patchable.json()["errors"][0]["Code"] == "PropertyNotPatchable"


async def test_401_is_a_configuration_error(billit_sim: SimAdmin) -> None:
    """A wrong API key, a PartyID the key may not act for, and an OrderID of another party all
    answer 401 and raise a configuration error, once (not retried), without the key in it."""
    async with client_for(billit_sim, api_key="wrong-key-123") as client:
        with pytest.raises(BillitConfigurationError) as wrong_key:
            await client.participant_information(ACCEPTS_ALL)
        assert "wrong-key-123" not in str(wrong_key.value)
    async with client_for(billit_sim, party_id="2002") as client:
        with pytest.raises(BillitConfigurationError):
            await client.participant_information(ACCEPTS_ALL)
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-17"), idempotency_key="c17")
    async with client_for(billit_sim, api_key=OTHER_API_KEY, party_id="2002") as other:
        with pytest.raises(BillitConfigurationError):
            await other.get_order(order_id)
    calls = (await billit_sim.counters())["calls"]
    assert calls["participant_information"] == {"401": 2}
    assert calls["get_order"] == {"401": 1}


async def test_malformed_json_and_unknown_status_are_retryable(billit_sim: SimAdmin) -> None:
    """A 200 whose body is cut-off JSON, and a 200 whose delivery status is a value Billit does
    not document, both raise a malformed-response error marked retryable."""
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-18"), idempotency_key="c18")
        await billit_sim.fault(endpoint="get_order", kind="malformed_json")
        with pytest.raises(BillitMalformedResponse) as cut:
            await client.get_order(order_id)
        assert cut.value.retryable
        weird = (
            f'{{"OrderID": {order_id}, "CurrentDocumentDeliveryDetails": '
            '{"DocumentDeliveryStatus": "Teleported"}, "Messages": []}'
        )
        await billit_sim.fault(endpoint="get_order", kind="replace_body", status=200, body=weird)
        with pytest.raises(BillitMalformedResponse) as unknown:
            await client.get_order(order_id)
        assert unknown.value.retryable and "DocumentDeliveryStatus" in str(unknown.value)
        assert (await client.get_order(order_id)).order_id == order_id  # next poll is fine


async def test_lost_send_answer_is_not_a_second_send(billit_sim: SimAdmin) -> None:
    """Billit sends the document and the answer is lost. The client sends again with the same
    idempotency key, Billit answers 409 (the key's send succeeded), and the client reports the
    order as already sent: one Peppol send, not two."""
    async with client_for(billit_sim) as client:
        order_id = await client.create_order(invoice("INV-19"), idempotency_key="c19")
        await billit_sim.fault(endpoint="send_orders", kind="lost_response")
        assert not await client.send_orders([order_id], idempotency_key="s19")
        assert (await client.get_order(order_id)).is_sent
    counters = await billit_sim.counters()
    assert counters["calls"]["send_orders"] == {"lost": 1, "409": 1}
    assert counters["sends_by_order"] == {str(order_id): 1}


async def test_find_orders_reads_every_page_and_quotes_the_id(billit_sim: SimAdmin) -> None:
    """Three orders carry one ExternalProviderID with a quote in it, a fourth another id:
    looking up with pages of two reads both pages (two list calls) and returns exactly the
    three, in Billit's order."""
    tricky = "inv-O'Brien and co"
    async with client_for(billit_sim) as client:
        ids = [
            await client.create_order(
                invoice(f"INV-2{n}").model_copy(update={"external_provider_id": tricky}),
                idempotency_key=f"c2{n}",
            )
            for n in range(3)
        ]
        await client.create_order(invoice("INV-29"), idempotency_key="c29")
        found = await client.find_orders(tricky, page_size=2)
    assert [order.order_id for order in found] == ids
    assert (await billit_sim.counters())["calls"]["list_orders"] == {"200": 2}


async def test_simulator_checks_api_key_and_party_headers(billit_sim: SimAdmin) -> None:
    """The simulator accepts the key as ApiKey or as a Bearer token, and answers 401 with
    errors[] when the key is wrong or the PartyID header is missing."""
    http = billit_sim._http
    path = "/v1/peppol/participantInformation/BE0563846944"
    bearer = await http.get(
        path, headers={"Authorization": "Bearer sim-api-key", "PartyID": "1001"}
    )
    assert bearer.status_code == 200 and bearer.json()["Registered"] is True
    no_party = await http.get(path, headers={"ApiKey": "sim-api-key"})
    assert no_party.status_code == 401
    wrong = await http.get(path, headers={"ApiKey": "nope", "PartyID": "1001"})
    assert wrong.status_code == 401 and wrong.json()["errors"][0]["Code"] == "Unauthorized"
