"""The contract package accepts exactly the contract: every event round-trips, and each kind
of bad input is refused with the offending field named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from shared import topics
from shared.envelope import (
    ContractError,
    event_key,
    event_to_bytes,
    event_to_dict,
    new_event,
    parse_event,
)
from shared.events import (
    EVENT_TYPES_BY_TOPIC,
    INPUT_EVENTS,
    OUTPUT_EVENTS,
    Amount,
    ClockTick,
    OrderRequested,
    OrderStateChanged,
)
from tests import examples as ex

NOW = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)


def envelope(type_: str, data: dict[str, Any], **overrides: Any) -> bytes:
    body = {
        "specversion": "1.0",
        "id": "5b1d3f0e-7c0a-4a57-9b55-2f1c2f0a9d11",
        "source": "/merchant-api",
        "type": type_,
        "time": "2026-11-20T09:15:00Z",
        "subject": "ord_7Q2K9",
        "datacontenttype": "application/json",
        "data": data,
    }
    return json.dumps(body | overrides).encode()


def order_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = ex.order("ord_7Q2K9").model_dump(mode="json", by_alias=True)
    return data | changes


def refusal(value: bytes, topic: str = topics.ORDERS_REQUESTED) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_event(topic, value)
    return caught.value


def test_every_contract_topic_has_its_model() -> None:
    contract = set(topics.INPUT_TOPICS) | set(topics.OUTPUT_TOPICS)
    # Besides the internal topics between services, each service that uses timers or jobs
    # has its own pair of runtime topics (registered by name, also for the tests' toys).
    runtime = {
        t
        for t in EVENT_TYPES_BY_TOPIC
        if t.startswith("internal.") and t.endswith((".timer_fired", ".job_finished"))
    }
    assert topics.timer_topic("shipping") in runtime
    assert set(EVENT_TYPES_BY_TOPIC) == contract | set(topics.INTERNAL_TOPICS) | runtime
    assert not contract & set(topics.INTERNAL_TOPICS)  # internal topics never shadow public ones
    assert len(INPUT_EVENTS) == len(topics.INPUT_TOPICS) == 13
    assert len(OUTPUT_EVENTS) == len(topics.OUTPUT_TOPICS) == 15


def test_the_contract_example_order_round_trips() -> None:
    value = envelope("order.requested.v1", order_data())
    event = parse_event(topics.ORDERS_REQUESTED, value)
    assert isinstance(event.data, OrderRequested)
    assert event.data.amount.gross == Decimal("1190.00")
    again = parse_event(topics.ORDERS_REQUESTED, event_to_bytes(event))
    assert again == event
    assert event_key(event) == b"ord_7Q2K9"
    wire = json.loads(event_to_bytes(event))
    assert wire["data"]["amount"] == {"gross": "1190.00", "net": "1000.00", "tax": "190.00"}


def test_state_changed_uses_from_on_the_wire() -> None:
    event = new_event(
        OrderStateChanged(order_id="o", from_="created", to="shipped"),
        id="1",
        source="/s",
        time=NOW,
    )
    wire = json.loads(event_to_bytes(event))
    assert wire["data"] == {"order_id": "o", "from": "created", "to": "shipped"}
    assert parse_event(topics.ORDERS_STATE_CHANGED, event_to_bytes(event)).data == event.data


def test_wire_bytes_are_the_plain_json_of_the_event() -> None:
    # event_to_bytes splices two pydantic dumps for speed; it must equal the obvious encoding.
    data = order_data()
    data["debtor"]["name"] = "Müller & Söhne GmbH"
    event = parse_event(topics.ORDERS_REQUESTED, envelope("order.requested.v1", data))
    for e in (event, new_event(ClockTick(now=NOW), id="t", source="/ticker", time=NOW)):
        plain = json.dumps(event_to_dict(e), separators=(",", ":"), ensure_ascii=False)
        assert event_to_bytes(e) == plain.encode()


def test_clock_ticks_are_keyed_clock() -> None:
    event = new_event(ClockTick(now=NOW), id="t", source="/ticker", time=NOW)
    assert event_key(event) == b"clock"


@pytest.mark.parametrize(
    ("value", "kind", "field"),
    [
        (b"{nope", "json", "JSON"),
        (b"[1, 2]", "json", "object"),
        (
            envelope("order.requested.v1", order_data(), specversion="0.3"),
            "envelope",
            "specversion",
        ),
        (
            envelope("order.requested.v1", order_data(), time="2026-11-20T09:15:00"),
            "envelope",
            "time",
        ),
        (envelope("order.requested.v1", order_data(), id=""), "envelope", "id"),
        (envelope("order.requested.v9", order_data()), "unknown_type", "order.requested.v9"),
        (envelope("order.shipped.v1", order_data()), "unknown_type", "order.shipped.v1"),
        (
            envelope(
                "order.requested.v1",
                order_data(amount={"gross": "1.0", "net": "1.0", "tax": "0.00"}),
            ),
            "schema",
            "data.amount.gross",
        ),
        (
            envelope(
                "order.requested.v1",
                order_data(amount={"gross": "1.000", "net": "1.00", "tax": "0.00"}),
            ),
            "schema",
            "data.amount.gross",
        ),
        (
            envelope(
                "order.requested.v1",
                order_data(amount={"gross": "-1.00", "net": "-1.00", "tax": "0.00"}),
            ),
            "schema",
            "data.amount.gross",
        ),
        (
            envelope(
                "order.requested.v1",
                order_data(amount={"gross": "100.00", "net": "90.00", "tax": "19.00"}),
            ),
            "schema",
            "data.amount",
        ),
        (
            envelope("order.requested.v1", order_data(merchant_id=None)),
            "schema",
            "data.merchant_id",
        ),
        (
            envelope(
                "order.requested.v1", {k: v for k, v in order_data().items() if k != "debtor"}
            ),
            "schema",
            "data.debtor",
        ),
        (
            envelope("order.requested.v1", order_data(duration_days=6)),
            "schema",
            "data.duration_days",
        ),
        (
            envelope("order.requested.v1", order_data(duration_days="30")),
            "schema",
            "data.duration_days",
        ),
        (envelope("order.requested.v1", order_data(currency="euro")), "schema", "data.currency"),
    ],
)
def test_bad_input_is_refused_naming_the_field(value: bytes, kind: str, field: str) -> None:
    error = refusal(value)
    assert error.kind == kind
    assert field in error.message


def test_float_money_is_refused() -> None:
    value = envelope("order.requested.v1", order_data()).replace(
        b'"gross": "1190.00"', b'"gross": 1190.0'
    )
    assert b"1190.0," in value
    error = refusal(value)
    assert error.kind == "json" and "1190.0" in error.message
    integer = envelope(
        "order.requested.v1", order_data(amount={"gross": 1190, "net": "1000.00", "tax": "190.00"})
    )
    error = refusal(integer)
    assert error.kind == "schema" and "data.amount.gross" in error.message


def test_amount_requires_gross_equal_net_plus_tax() -> None:
    assert Amount(gross=Decimal("119.00"), net=Decimal("100.00"), tax=Decimal("19.00"))
    with pytest.raises(ValueError, match="gross must equal net \\+ tax"):
        Amount(gross=Decimal("119.01"), net=Decimal("100.00"), tax=Decimal("19.00"))


def test_billit_merchants_need_a_party_id() -> None:
    data = ex.merchant().model_dump(mode="json") | {"einvoicing": "billit"}
    error = refusal(envelope("merchant.configured.v1", data), topics.MERCHANTS_CONFIGURED)
    assert "billit_party_id" in error.message


def test_decided_reason_only_when_declined() -> None:
    from shared.events import OrderDecided

    with pytest.raises(ValueError, match="decline_reason"):
        OrderDecided(
            order_id="o",
            merchant_id="m",
            state="created",
            decline_reason="risk_policy",
            ruleset_version="v",
            rule_hits=[],
        )


def _shipped(**changes: Any) -> bytes:
    data = ex.shipment("o-1", "INV-1", gross="119.00").model_dump(mode="json") | changes
    return envelope("order.shipped.v1", data)


@pytest.mark.parametrize(
    ("topic", "value", "field"),
    [
        # The records the black-box run saw accepted, each refused now, naming the field.
        (topics.ORDERS_SHIPPED, _shipped(shipped_at=1795466968), "data.shipped_at"),
        (topics.ORDERS_SHIPPED, _shipped(shipped_at="1795466968"), "data.shipped_at"),
        (topics.ORDERS_SHIPPED, _shipped(shipped_at=1795466968000), "data.shipped_at"),
        (topics.ORDERS_SHIPPED, _shipped(shipped_at="2026-11-20T09:15Z"), "data.shipped_at"),
        (topics.CLOCK_TICKS, envelope("clock.tick.v1", {"now": 123}), "data.now"),
        (
            topics.ORDERS_SHIPPED,
            _shipped(amount={"gross": "١١٩.٠٠", "net": "100.00", "tax": "19.00"}),
            "data.amount.gross",
        ),
        (
            topics.ORDERS_SHIPPED,
            _shipped(amount={"gross": "１１９.００", "net": "100.00", "tax": "19.00"}),
            "data.amount.gross",
        ),
        (
            topics.ORDERS_SHIPPED,
            _shipped(amount={"gross": "११९.००", "net": "100.00", "tax": "19.00"}),
            "data.amount.gross",
        ),
        (topics.ORDERS_SHIPPED, _shipped(extra=float("nan")), "NaN"),
        (topics.ORDERS_SHIPPED, _shipped().decode().encode("utf-16"), "UTF-8"),
    ],
)
def test_the_black_box_findings_are_refused(topic: str, value: bytes, field: str) -> None:
    error = refusal(value, topic)
    assert field in error.message


def test_a_shipment_at_an_rfc3339_time_keeps_its_instant() -> None:
    event = parse_event(topics.ORDERS_SHIPPED, _shipped(shipped_at="2026-11-20T10:15:00+01:00"))
    assert event.data.model_dump()["shipped_at"] == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
