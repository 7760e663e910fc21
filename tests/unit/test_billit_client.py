"""The Billit client's own mechanics: exact money on the wire, backoff, pacing, key hygiene.

Pure parts are tested directly; pacing, retries and logging against the Billit simulator as
a real HTTP server on loopback (no Kafka or MongoDB needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from services.einvoice_status import exact_json
from services.einvoice_status.billit import (
    BillitClient,
    BillitConfig,
    BillitConfigurationError,
    BillitMalformedResponse,
    BillitOrder,
    BillitUnavailable,
    Customer,
    NewOrder,
    OrderLine,
    OrderPatch,
    Payment,
    backoff_delay,
    idempotency_key,
    retry_after_seconds,
)
from services.einvoice_status.simulator.__main__ import build_state, parse_args
from services.einvoice_status.simulator.state import BillitFailure, Script
from tests import billit_sandbox
from tests.billit_sandbox import API_KEY, SimAdmin, client_for

billit_sim_url = billit_sandbox.billit_sim_url
billit_sim = billit_sandbox.billit_sim


def line(price: Any) -> OrderLine:
    return OrderLine(
        quantity=Decimal(3),
        unit_price_excl=price,
        description="Goods",
        vat_percentage=Decimal(21),
    )


# -- money and dates on the wire -------------------------------------------------------------


def test_decimals_are_written_and_read_digit_for_digit() -> None:
    """Amounts go out as the exact JSON number (trailing zero kept) and come back as Decimal;
    a float is refused rather than written."""
    assert exact_json.dumps({"Amount": Decimal("10.20"), "Q": 3}) == b'{"Amount":10.20,"Q":3}'
    assert exact_json.loads(b'{"ToPay": 0.1, "N": 2}') == {"ToPay": Decimal("0.1"), "N": 2}
    with pytest.raises(TypeError):
        exact_json.dumps({"Amount": 0.1})
    with pytest.raises(ValueError, match="NaN"):
        exact_json.loads(b'{"Amount": NaN}')


def test_models_refuse_float_amounts_and_write_the_contract_decimal_exactly() -> None:
    """A float amount is refused by the request models; a contract decimal string or Decimal
    reaches the request body as the same digits."""
    with pytest.raises(ValidationError):
        line(100.1)
    with pytest.raises(ValidationError):
        Payment(amount=0.3, description="tx")
    with pytest.raises(ValidationError):
        Payment(amount=Decimal(0), description="tx")  # Billit requires Amount > 0
    order = NewOrder(
        order_number="INV-1",
        order_date=date(2026, 5, 1),
        expiry_date=date(2026, 5, 31),
        external_provider_id="inv-1",
        customer=Customer(name="Buyer NV", vat_number="BE0563846944"),
        order_lines=[line("1190.00")],
    )
    body = exact_json.dumps(order.payload())
    assert b'"UnitPriceExcl":1190.00' in body
    assert b'"OrderDate":"2026-05-01"' in body and b'"ExternalProviderID":"inv-1"' in body
    assert b"PaymentReference" not in body  # absent: Billit makes a structured reference


def test_paid_date_always_carries_a_time_in_brussels() -> None:
    """PaidDate is written with a time (Billit refuses a bare date); an aware moment is
    converted to Brussels local time, which is how Billit reads zone-less timestamps."""
    naive = OrderPatch(paid=True, paid_date=datetime(2026, 6, 11)).payload()
    assert exact_json.dumps(naive) == b'{"Paid":true,"PaidDate":"2026-06-11T00:00:00"}'
    aware = OrderPatch(paid_date=datetime(2026, 6, 10, 22, 30, tzinfo=UTC)).payload()
    assert aware == {"PaidDate": "2026-06-11T00:30:00"}  # CEST is UTC+2


# -- reading answers -------------------------------------------------------------------------


def order_with(messages: list[dict[str, Any]], status: str = "Delivered") -> BillitOrder:
    return BillitOrder.model_validate(
        exact_json.loads(
            exact_json.dumps(
                {
                    "OrderID": 7,
                    "ToPay": Decimal("121.0"),
                    "CurrentDocumentDeliveryDetails": {"DocumentDeliveryStatus": status},
                    "Messages": messages,
                }
            )
        )
    )


def test_receiver_response_codes_come_from_the_description_prefix() -> None:
    """The code is the text before the first colon of an incoming message, whatever language
    the rest is in; outgoing messages, unknown prefixes and repeated FileIDs are not responses."""
    order = order_with(
        [
            {"FileID": "out", "MessageDirection": "Outgoing", "Description": "AB: echo"},
            {"FileID": "f1", "MessageDirection": "Incoming", "Description": "AB: Ontvangen"},
            {"FileID": "f1", "MessageDirection": "Incoming", "Description": "AB: Ontvangen"},
            {"FileID": "f2", "MessageDirection": "Incoming", "Description": "XX: ?"},
            {"FileID": "f3", "MessageDirection": "Incoming", "Description": "AP: Accepté: oui"},
        ]
    )
    assert [(r.code, r.file_id) for r in order.receiver_responses()] == [("AB", "f1"), ("AP", "f3")]
    assert order.to_pay == Decimal("121.0")


def test_unknown_delivery_status_does_not_parse() -> None:
    """A delivery status Billit does not document is a validation error (the client turns it
    into a retryable malformed-response error, see the integration test)."""
    with pytest.raises(ValidationError):
        order_with([], status="Teleported")


# -- backoff, Retry-After, keys --------------------------------------------------------------


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    """Attempt n waits uniformly in [0, min(cap, base·2^n)]."""
    highest = [backoff_delay(n, 0.5, 30.0, lambda low, high: high) for n in range(8)]
    assert highest == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(5, 0.5, 30.0, lambda low, high: low) == 0.0


def test_retry_after_as_seconds_or_http_date() -> None:
    """Retry-After is read as delta-seconds or as an HTTP date; nonsense is ignored."""
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_idempotency_keys_are_alphanumeric_stable_and_distinct() -> None:
    """Billit takes only alphanumeric keys: derived keys are, the same call gets the same key,
    and parts that would collide when just concatenated do not."""
    key = idempotency_key("create", "INV-1")
    assert key.isalnum() and key == idempotency_key("create", "INV-1")
    assert idempotency_key("create", "INV-1") != idempotency_key("send", "INV-1")
    assert idempotency_key("ab", "c") != idempotency_key("a", "bc")


# -- the simulator's receiver scripts obey Peppol BIS ----------------------------------------


def test_simulator_scripts_follow_the_bis_response_order() -> None:
    """Scripts that go backwards, answer after a final RE/PD, or lack a required reason are
    refused; UQ may repeat and a partial PD (reason PPD) may be followed by the final PD."""

    def script(*codes: tuple[str, str | None]) -> dict[str, Any]:
        return {
            "responses": [
                {"code": code, "after_seconds": 60 * i, "reason": reason}
                for i, (code, reason) in enumerate(codes)
            ]
        }

    for bad in [
        script(("AP", None), ("AB", None)),
        script(("RE", "REC"), ("AP", None)),
        script(("PD", None), ("PD", None)),
        script(("UQ", None)),
        script(("AB", None), ("AB", None)),
    ]:
        with pytest.raises(BillitFailure):
            Script.parse(bad)
    Script.parse(script(("AB", None), ("UQ", "QTY"), ("UQ", "PRI"), ("AP", None)))
    Script.parse(script(("AB", None), ("PD", "PPD"), ("PD", None)))


# -- against the simulator -------------------------------------------------------------------


async def test_concurrency_cap_holds_at_the_server(billit_sim: SimAdmin) -> None:
    """Eight calls at once through a client capped at two: the server never sees more than
    two in flight (each answer is held 0.3 s, so uncapped calls would overlap)."""
    await billit_sim.fault(
        endpoint="participant_information", kind="slow", delay_seconds=0.3, count=8
    )
    async with client_for(billit_sim, max_concurrency=2) as client:
        await asyncio.gather(*(client.participant_information("BE0563846944") for _ in range(8)))
    counters = await billit_sim.counters()
    assert counters["max_in_flight"]["participant_information"] == 2
    assert counters["calls"]["participant_information"] == {"200": 8}


async def test_rate_limit_spaces_call_starts(billit_sim: SimAdmin) -> None:
    """At 10 calls per second, six calls fired together take at least half a second."""
    async with client_for(billit_sim, rate_per_second=10.0) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.participant_information("0563846944") for _ in range(6)))
        assert time.monotonic() - started >= 0.5


async def test_participant_ids_in_every_documented_form(billit_sim: SimAdmin) -> None:
    """A participant is found by VAT number, bare company number, and scheme:value (0208 and
    9925), and always reports its Peppol identifier."""
    async with client_for(billit_sim) as client:
        for form in ["BE0563846944", "0563846944", "0208:0563846944", "9925:BE0563846944"]:
            found = await client.participant_information(form)
            assert found.registered and found.identifier == "0208:0563846944", form


async def test_long_retry_after_is_handed_back_to_the_caller(billit_sim: SimAdmin) -> None:
    """A 429 asking for two minutes is not slept through in-line: the client raises a
    retryable error carrying the wait, after one call."""
    await billit_sim.fault(endpoint="get_order", kind="status", status=429, retry_after=120)
    async with client_for(billit_sim) as client:
        with pytest.raises(BillitUnavailable) as unavailable:
            await client.get_order(1)
    assert unavailable.value.retry_after == 120 and unavailable.value.retryable
    assert (await billit_sim.counters())["calls"]["get_order"] == {"429": 1}


async def test_persistent_5xx_gives_up_after_the_attempt_budget(billit_sim: SimAdmin) -> None:
    """A read that keeps getting 503 is tried max_attempts times, then raises a retryable
    unavailable error."""
    await billit_sim.fault(endpoint="get_order", kind="status", status=503, count=10)
    async with client_for(billit_sim, max_attempts=3) as client:
        with pytest.raises(BillitUnavailable):
            await client.get_order(1)
    assert (await billit_sim.counters())["calls"]["get_order"] == {"503": 3}


async def test_unreachable_billit_is_retried_then_unavailable() -> None:
    """Nothing listens on the port: each attempt fails to connect, the client backs off
    between attempts (not after the last) and raises a retryable unavailable error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    config = BillitConfig(
        base_url=f"http://127.0.0.1:{port}", api_key="k", party_id="1", max_attempts=4
    )
    async with BillitClient(config, sleep=record, draw=lambda low, high: high) as client:
        with pytest.raises(BillitUnavailable, match="ConnectError"):
            await client.get_order(1)
    assert pauses == [0.5, 1.0, 2.0]


@contextlib.contextmanager
def _every_structlog_event() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event at any level, whatever an earlier test in this process configured
    (a worker started in-process sets a level filter; capture_logs alone keeps that filter)."""
    saved = structlog.get_config()
    capture = structlog.testing.LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**saved)


async def test_api_key_is_in_no_log_line_repr_or_error(
    billit_sim: SimAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    """Through retries, a malformed answer and a 401, the API key appears in no structlog
    event, no standard-library log record (httpx included, at DEBUG), no error text and not
    in the config's repr."""
    secret = API_KEY
    await billit_sim.fault(endpoint="participant_information", kind="status", status=500)
    await billit_sim.fault(endpoint="participant_information", kind="malformed_json")
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with _every_structlog_event() as events:
        async with client_for(billit_sim) as client:
            with pytest.raises(BillitMalformedResponse) as malformed:
                await client.participant_information("BE0563846944")
            errors.append(repr(malformed.value))
            assert secret not in repr(client._config)
        async with client_for(billit_sim, api_key=secret + "x") as wrong:
            with pytest.raises(BillitConfigurationError) as refused:
                await wrong.get_order(1)
            errors.append(repr(refused.value))
    assert events, "the client logged nothing, so this test would prove nothing"
    assert all(secret not in repr(event) for event in events)
    assert secret not in caplog.text
    assert all(secret not in text for text in errors)


async def test_bad_idempotency_key_is_refused_before_any_call(billit_sim: SimAdmin) -> None:
    """A key Billit would refuse (not alphanumeric) never leaves the client."""
    async with client_for(billit_sim) as client:
        with pytest.raises(ValueError, match="idempotency key"):
            await client.send_orders([1], idempotency_key="inv-1/send")
    assert "send_orders" not in (await billit_sim.counters())["calls"]


def test_startup_options_set_keys_bank_accounts_and_faults() -> None:
    """The command line configures who may call (key → PartyIDs), the party's bank list (an
    IBAN outside it falls back to the default, as in MyBillit) and faults armed from the start."""
    args = parse_args(
        [
            "--api-key=k1=11,12",
            "--bank-account=11=BE68539007547034",
            '--fault={"endpoint": "create_order", "kind": "status", "status": 503, "count": 2}',
        ]
    )
    state = build_state(args)
    assert state.authenticate("k1", "12") == "12"
    with pytest.raises(BillitFailure) as refused:
        state.authenticate("k1", "13")
    assert refused.value.status == 401
    assert [
        (f["endpoint"], f["status"], f["remaining"]) for f in state.counters()["faults_pending"]
    ] == [("create_order", 503, 2)]
    order_id = state.create_order(
        "11",
        exact_json.loads(
            b'{"OrderType":"Invoice","OrderDirection":"Income","OrderNumber":"1",'
            b'"OrderDate":"2026-06-01","IBAN":"BE00NOTINTHELIST","Customer":{"Name":"B"},'
            b'"OrderLines":[{"Quantity":1,"UnitPriceExcl":10,"VATPercentage":21}]}'
        ),
    )
    assert state.get_order("11", order_id)["IBAN"] == "BE68539007547034"


def test_simulator_filters_on_is_sent_and_last_modified() -> None:
    """The order list filters on IsSent and on LastModified, which moves when the order is
    sent and again when a receiver message arrives on the simulated clock."""
    state = build_state(parse_args([]))
    body = exact_json.loads(
        b'{"OrderType":"Invoice","OrderDirection":"Income","OrderNumber":"1",'
        b'"OrderDate":"2026-06-01","Customer":{"Name":"B","VATNumber":"BE0446725877"},'
        b'"OrderLines":[{"Quantity":1,"UnitPriceExcl":10,"VATPercentage":21}]}'
    )
    kept, sent = state.create_order("1001", body), state.create_order("1001", body)
    state.advance(10)
    state.send_orders("1001", {"Transporttype": "Peppol", "OrderIDs": [sent]})

    def ids(text: str) -> list[int]:
        return [order["OrderID"] for order in state.list_orders("1001", text, 120, 0)[0]]

    assert ids("IsSent eq false") == [kept] and ids("IsSent eq true") == [sent]
    assert ids("LastModified gt '2026-06-01T09:00:05'") == [sent]
    state.advance(60 + 90)  # delivered after 60 s, AB 90 s later
    assert ids("LastModified ge '2026-06-01T09:02:40'") == [sent]
    assert ids("LastModified gt '2026-06-01T09:02:40'") == []
