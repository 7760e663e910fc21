"""The hot path encodes outputs and names them without pydantic's envelope model or uuid's
UUID object; these tests hold both equal to the obvious implementation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.envelope import encode_event, event_to_bytes, new_event, state_change_json
from shared.events import ClockTick, InvoiceStateChanged, OrderStateChanged
from shared.ids import uuid5_hex, uuid5_str
from shared.runtime.engine import _OUTPUT_NAMESPACE, output_event_id
from tests import examples as ex

moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))]),
)


@given(
    moment=moments,
    ident=st.text(min_size=1, max_size=40),
    source=st.text(min_size=1),
    subject=st.one_of(st.none(), st.text(max_size=20)),
)
def test_encode_event_equals_the_model_encoding(
    moment: datetime, ident: str, source: str, subject: str | None
) -> None:
    for data in (
        ClockTick(now=moment),
        OrderStateChanged(order_id="o-ü", from_=None, to="created"),
        ex.shipment("o-1", "INV-1", gross="119.00"),
    ):
        event = new_event(data, id=ident, source=source, time=moment, subject=subject)
        fast = encode_event(data, id=ident, source=source, time=moment, subject=subject)
        assert fast == event_to_bytes(event)


@given(service=st.text(max_size=20), cause=st.text(max_size=60), n=st.integers(0, 1000))
def test_output_event_id_is_uuid5_of_the_cause(service: str, cause: str, n: int) -> None:
    expected = str(uuid.uuid5(_OUTPUT_NAMESPACE, f"{service}/{cause}/{n}"))
    assert output_event_id(service, cause, n) == expected


@given(name=st.text(max_size=80))
def test_name_based_ids_equal_the_uuid_module(name: str) -> None:
    namespace = uuid.UUID("0b5c7f36-4a55-4d0e-9f4e-5a7c1f0e2d31")
    assert uuid5_hex(namespace, name) == uuid.uuid5(namespace, name).hex
    assert uuid5_str(namespace, name) == str(uuid.uuid5(namespace, name))


order_states = st.sampled_from(
    ["waiting", "created", "declined", "partially_shipped", "shipped", "complete", "canceled"]
)
invoice_states = st.sampled_from(["new", "paid_out", "late", "complete", "canceled"])


@given(
    order_id=st.text(min_size=1, max_size=30),
    number=st.text(min_size=1, max_size=30),
    order_from=st.one_of(st.none(), order_states),
    order_to=order_states,
    invoice_from=st.one_of(st.none(), invoice_states),
    invoice_to=invoice_states,
)
def test_state_change_json_equals_the_models_json(
    order_id: str,
    number: str,
    order_from: Any,
    order_to: Any,
    invoice_from: Any,
    invoice_to: Any,
) -> None:
    order = OrderStateChanged(order_id=order_id, from_=order_from, to=order_to)
    assert state_change_json("order_id", order_id, None, order_from, order_to) == (
        order.model_dump_json(by_alias=True)
    )
    invoice = InvoiceStateChanged(
        invoice_number=number, order_id=order_id, from_=invoice_from, to=invoice_to
    )
    assert state_change_json("invoice_number", number, order_id, invoice_from, invoice_to) == (
        invoice.model_dump_json(by_alias=True)
    )
