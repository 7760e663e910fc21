"""The hot path encodes outputs and names them without pydantic's envelope model or uuid's
UUID object; these tests hold both equal to the obvious implementation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from shared.envelope import encode_event, event_to_bytes, new_event
from shared.events import ClockTick, OrderStateChanged
from shared.runtime.engine import _OUTPUT_NAMESPACE, output_event_id
from tests import examples as ex

moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))]),
)


@given(moment=moments, ident=st.text(min_size=1, max_size=40), source=st.text(min_size=1))
def test_encode_event_equals_the_model_encoding(moment: datetime, ident: str, source: str) -> None:
    for data in (
        ClockTick(now=moment),
        OrderStateChanged(order_id="o-ü", from_=None, to="created"),
        ex.shipment("o-1", "INV-1", gross="119.00"),
    ):
        model = event_to_bytes(new_event(data, id=ident, source=source, time=moment))
        assert encode_event(data, id=ident, source=source, time=moment) == model


@given(service=st.text(max_size=20), cause=st.text(max_size=60), n=st.integers(0, 1000))
def test_output_event_id_is_uuid5_of_the_cause(service: str, cause: str, n: int) -> None:
    expected = str(uuid.uuid5(_OUTPUT_NAMESPACE, f"{service}/{cause}/{n}"))
    assert output_event_id(service, cause, n) == expected
