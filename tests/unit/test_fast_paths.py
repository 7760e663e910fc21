"""The hot path encodes outputs and names them without pydantic's envelope model or uuid's
UUID object. These tests hold each fast path equal to the plain model path, over valid and
invalid inputs alike: the same bytes when the model accepts, a ``ValueError`` when it refuses
(strings past their bounds, empty ones, unknown states, a time without a zone, unpaired
surrogates that UTF-8 cannot encode)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.envelope import encode_event, event_to_bytes, new_event, state_change_json
from shared.events import ClockTick, EventData, InvoiceStateChanged, OrderStateChanged
from shared.ids import uuid5_hex, uuid5_str
from shared.runtime.engine import _OUTPUT_NAMESPACE, output_event_id
from tests import examples as ex

# Every code point, unpaired surrogates included (hypothesis leaves them out by default).
any_char = st.characters(exclude_categories=())
# Strings around the bounds (128 for ids and types, 256 for source and subject) and short ones.
strings = st.one_of(
    st.text(any_char, max_size=6),
    st.builds(lambda c, n: c * n, any_char, st.sampled_from([0, 1, 127, 128, 129, 255, 256, 257])),
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), None]
    ),
)


def outcome(build: Callable[[], Any]) -> Any:
    """What a path gives: its result, or the fact that it refused with a ValueError
    (pydantic's ValidationError and UnicodeEncodeError are both ValueErrors)."""
    try:
        return build()
    except ValueError:
        return "refused"


@given(moment=moments, ident=strings, source=strings, subject=st.one_of(st.none(), strings))
def test_encode_event_equals_the_model_encoding(
    moment: datetime, ident: str, source: str, subject: str | None
) -> None:
    datas: list[EventData] = [
        OrderStateChanged(order_id="o-ü", from_=None, to="created"),
        ex.shipment("o-1", "INV-1", gross="119.00"),
    ]
    if moment.tzinfo is not None:
        datas.append(ClockTick(now=moment))
    for data in datas:

        def model(data: EventData = data) -> bytes:
            event = new_event(data, id=ident, source=source, time=moment, subject=subject)
            return event_to_bytes(event)

        def fast(data: EventData = data) -> bytes:
            return encode_event(data, id=ident, source=source, time=moment, subject=subject)

        assert outcome(fast) == outcome(model)


def test_the_encoders_refuse_what_the_envelope_model_refuses() -> None:
    # A few refusals named explicitly, so the property above cannot pass by never refusing.
    data = OrderStateChanged(order_id="o-1", from_=None, to="created")
    ok: dict[str, Any] = {"id": "e-1", "source": "/risk", "time": datetime(2026, 1, 1, tzinfo=UTC)}
    for bad in ({"id": ""}, {"id": "e" * 129}, {"source": "s" * 257}, {"subject": ""}):
        (field,) = bad
        for build in (new_event, encode_event):
            with pytest.raises(ValueError, match=field):
                build(data, **(ok | bad))
    naive = ok | {"time": datetime(2026, 1, 1)}
    for build in (new_event, encode_event):
        with pytest.raises(ValueError, match="time"):
            build(data, **naive)
    with pytest.raises(UnicodeEncodeError):
        encode_event(data, **(ok | {"id": "e-\ud800"}))


@given(service=st.text(max_size=20), cause=st.text(max_size=60), n=st.integers(0, 1000))
def test_output_event_id_is_uuid5_of_the_cause(service: str, cause: str, n: int) -> None:
    expected = str(uuid.uuid5(_OUTPUT_NAMESPACE, f"{service}/{cause}/{n}"))
    assert output_event_id(service, cause, n) == expected


@given(name=st.text(any_char, max_size=80))
def test_name_based_ids_equal_the_uuid_module(name: str) -> None:
    # Unpaired surrogates: both refuse (UTF-8 cannot encode them), or both give the same id.
    namespace = uuid.UUID("0b5c7f36-4a55-4d0e-9f4e-5a7c1f0e2d31")
    assert outcome(lambda: uuid5_hex(namespace, name)) == outcome(
        lambda: uuid.uuid5(namespace, name).hex
    )
    assert outcome(lambda: uuid5_str(namespace, name)) == outcome(
        lambda: str(uuid.uuid5(namespace, name))
    )


order_states = st.sampled_from(
    ["waiting", "created", "declined", "partially_shipped", "shipped", "complete", "canceled"]
)
invoice_states = st.sampled_from(["new", "paid_out", "late", "complete", "canceled"])
# Mostly real states, sometimes another kind's state or a made-up one.
any_state = st.one_of(order_states, invoice_states, st.sampled_from(["", "Created", "paid"]))


@given(
    order_id=strings,
    number=strings,
    order_from=st.one_of(st.none(), order_states, any_state),
    order_to=st.one_of(order_states, any_state),
    invoice_from=st.one_of(st.none(), invoice_states, any_state),
    invoice_to=st.one_of(invoice_states, any_state),
)
def test_state_change_json_equals_the_models_json(
    order_id: str,
    number: str,
    order_from: Any,
    order_to: Any,
    invoice_from: Any,
    invoice_to: Any,
) -> None:
    assert outcome(
        lambda: state_change_json("order_id", order_id, None, order_from, order_to).encode()
    ) == outcome(
        lambda: (
            OrderStateChanged(order_id=order_id, from_=order_from, to=order_to)
            .model_dump_json(by_alias=True)
            .encode()
        )
    )
    assert outcome(
        lambda: state_change_json(
            "invoice_number", number, order_id, invoice_from, invoice_to
        ).encode()
    ) == outcome(
        lambda: (
            InvoiceStateChanged(
                invoice_number=number, order_id=order_id, from_=invoice_from, to=invoice_to
            )
            .model_dump_json(by_alias=True)
            .encode()
        )
    )
