"""The decoder every worker calls on every record (``shared.envelope.parse_event``) accepts
exactly the contract, for every input event type.

Each test below starts from a valid record of an input type (checked to decode), breaks one
field in one way EVENTS.md forbids, and expects ``ContractError``: the error on which the
engine dead-letters a record. Which fields are times, dates and money per type is written
here from EVENTS.md, not read from the models; a test checks that the models have no
such field this table misses. The bad forms are the ones seen accepted black-box: Unix
numbers for times, times without seconds or zone, money in other scripts' digits, NaN and
Infinity, other encodings than UTF-8; plus names twice in one object and the documented
length and depth bounds.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import topics
from shared.envelope import ContractError, decode_json, parse_event, parse_stepwise
from shared.events import INPUT_EVENTS, MODEL_BY_TYPE, EventData
from shared.money import MONEY_PATTERN
from tests import examples as ex

ASCII_DIGITS = "0123456789"
# Every Unicode decimal digit that is not an ASCII one: fullwidth, Devanagari, Arabic-Indic...
other_digits = st.characters(categories=["Nd"]).filter(lambda c: c not in ASCII_DIGITS)


def _json(model: EventData) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    return data


# One valid ``data`` per input type, as the wire carries it.
VALID: dict[str, dict[str, Any]] = {
    "merchant.configured.v1": _json(ex.merchant()),
    "company.registered.v1": _json(ex.company()),
    "order.requested.v1": _json(ex.order("o-1")),
    "order.reviewed.v1": _json(ex.review("o-1")),
    "order.shipped.v1": _json(ex.shipment("o-1", "INV-1", gross="119.00")),
    "order.canceled.v1": _json(ex.cancellation("o-1")),
    "order.amount_reduced.v1": {
        "order_id": "o-1",
        "amount": {"gross": "59.50", "net": "50.00", "tax": "9.50"},
    },
    "invoice.credit_noted.v1": _json(ex.credit_note("o-1", "INV-1", "CN-1", gross="11.90")),
    "bank.transaction.received.v1": {
        "transaction_id": "tx-1",
        "creditor_iban": "DE02120300000000202051",
        "amount": "119.00",
        "currency": "EUR",
        "booking_date": "2026-11-21",
        "debtor_name": "Müller Maschinenbau GmbH",
        "debtor_iban": "DE89370400440532013000",
        "remittance_information": "INV-1",
    },
    "payment.reported.v1": {
        "order_id": "o-1",
        "invoice_number": "INV-1",
        "amount": "119.00",
        "received_on": "2026-11-21",
    },
    "merchant_debit.collected.v1": {
        "debit_id": "d-1",
        "order_id": "o-1",
        "invoice_number": "INV-1",
        "amount": "119.00",
    },
    "dunning.pause_requested.v1": {
        "order_id": "o-1",
        "invoice_number": "INV-1",
        "requested_by": "ops",
        "reason": "disputed delivery",
    },
    "clock.tick.v1": {"now": "2026-11-20T09:15:00Z"},
}

# From EVENTS.md. "time" alone is the envelope's; the other paths are inside ``data``.
TIMES: dict[str, list[str]] = {t: ["time"] for t in VALID} | {
    "order.shipped.v1": ["time", "data.shipped_at"],
    "clock.tick.v1": ["time", "data.now"],
}
DATES: dict[str, list[str]] = {
    "bank.transaction.received.v1": ["data.booking_date"],
    "payment.reported.v1": ["data.received_on"],
}
_AMOUNT = ["data.amount.gross", "data.amount.net", "data.amount.tax"]
MONEY: dict[str, list[str]] = {
    "merchant.configured.v1": ["data.fee.fixed"],
    "company.registered.v1": ["data.financing_limit"],
    "order.requested.v1": [*_AMOUNT, "data.line_items.0.unit_price_net"],
    "order.shipped.v1": _AMOUNT,
    "order.amount_reduced.v1": _AMOUNT,
    "invoice.credit_noted.v1": _AMOUNT,
    "bank.transaction.received.v1": ["data.amount"],
    "payment.reported.v1": ["data.amount"],
    "merchant_debit.collected.v1": ["data.amount"],
}
TOPIC_OF = {model.EVENT_TYPE: model.TOPIC for model in INPUT_EVENTS}


def record(event_type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "5b1d3f0e-7c0a-4a57-9b55-2f1c2f0a9d11",
        "source": "/merchant-api",
        "type": event_type,
        "time": "2026-11-20T09:15:00Z",
        "subject": "o-1",
        "datacontenttype": "application/json",
        "data": copy.deepcopy(VALID[event_type] if data is None else data),
    }


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = changed
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return changed


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def assert_refused(event_type: str, value: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_event(TOPIC_OF[event_type], value)
    return caught.value


# -- the table is complete and its examples are valid ----------------------------------------


def test_every_input_type_has_a_valid_example_that_decodes() -> None:
    assert set(VALID) == {model.EVENT_TYPE for model in INPUT_EVENTS}
    for event_type in VALID:
        event = parse_event(TOPIC_OF[event_type], encode(record(event_type)))
        assert event.type == event_type


def _schema_paths(model: type[EventData]) -> dict[str, set[str]]:
    """Where the model's own JSON schema says times, dates and money are: only to check that
    the hand-written table above misses none."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    found: dict[str, set[str]] = {"date-time": set(), "date": set(), "money": set()}

    def walk(node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        for option in node.get("anyOf", []):
            walk(option, path)
        if node.get("format") in ("date-time", "date"):
            found[node["format"]].add(path)
        if node.get("pattern") == MONEY_PATTERN:
            found["money"].add(path)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}.0")

    walk(schema, "data")
    return found


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_the_table_names_every_time_date_and_money_field(event_type: str) -> None:
    found = _schema_paths(MODEL_BY_TYPE[event_type])
    assert found["date-time"] == {p for p in TIMES[event_type] if p != "time"}
    assert found["date"] == set(DATES.get(event_type, []))
    assert found["money"] == set(MONEY.get(event_type, []))


# -- bad forms ---------------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1))


def _replace_a_digit(text: str, draw: st.DrawFn) -> str:
    positions = [i for i, c in enumerate(text) if c in ASCII_DIGITS]
    i = draw(st.sampled_from(positions))
    return text[:i] + draw(other_digits) + text[i + 1 :]


@st.composite
def bad_times(draw: st.DrawFn) -> Any:
    moment = draw(moments)
    seconds = int(moment.replace(tzinfo=UTC).timestamp())
    good = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return draw(
        st.sampled_from(
            [
                seconds,  # Unix seconds
                seconds * 1000,  # Unix milliseconds
                str(seconds),  # numeric strings
                str(seconds * 1000),
                moment.strftime("%Y-%m-%dT%H:%MZ"),  # no seconds
                moment.strftime("%Y-%m-%dT%H:%M:%S"),  # no zone
                moment.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                moment.strftime("%Y-%m-%d"),  # a date is not a time
                moment.strftime("%Y-%m-%d %H:%M:%SZ"),  # space for T
                moment.strftime("%Y%m%dT%H%M%SZ"),  # ISO 8601 basic format
                moment.strftime("%Y-%m-%dT%H:%M:%S+0100"),  # offset without colon
                moment.strftime("%Y-%m-%dT%H:%M:%S+01"),
                moment.strftime("%Y-%m-%dT%H:%M:%S,5Z"),  # comma fraction
                moment.strftime("%Y-%m-%dT%H:%M:%S.Z"),  # empty fraction
                moment.strftime("%Y-%m-%dT%H:%M:%S.1234567890Z"),  # beyond nanoseconds
                moment.strftime("%Y-%m-%dT%H:%M:%S UTC"),
                f" {good}",
                f"{good}\n",
                _replace_a_digit(good, draw),  # another script's digit
                good.replace("T", "\u0422"),  # Cyrillic Te
                True,
                None,
                [good],
                {"time": good},
                "",
            ]
        )
    )


@st.composite
def bad_dates(draw: st.DrawFn) -> Any:
    moment = draw(moments)
    good = moment.strftime("%Y-%m-%d")
    days = (moment.date() - datetime(1970, 1, 1).date()).days
    unpadded = f"{moment.year}-{moment.month}-{moment.day}"
    return draw(
        st.sampled_from(
            [
                days,
                int(moment.replace(tzinfo=UTC).timestamp()),
                str(int(moment.replace(tzinfo=UTC).timestamp())),
                moment.strftime("%Y%m%d"),
                moment.strftime("%Y-%m-%dT00:00:00Z"),  # a time is not a date
                moment.strftime("%d.%m.%Y"),
                unpadded if unpadded != good else "2026-1-5",
                f"{moment.year}-{moment.month:02d}-{moment.day:02d}Z",
                f" {good}",
                f"{good}\n",
                _replace_a_digit(good, draw),
                True,
                None,
                "",
            ]
        )
    )


@st.composite
def bad_money(draw: st.DrawFn) -> Any:
    cents = draw(st.integers(0, 10**14 - 1))
    good = f"{cents // 100}.{cents % 100:02d}"
    units = str(cents // 100)
    return draw(
        st.sampled_from(
            [
                cents,  # a JSON number
                cents // 100,
                units,  # no fraction
                f"{units}.{cents % 100 // 10}",  # one fraction digit
                f"{good}0",  # three fraction digits
                f"{units}e0",
                f"{good}e0",
                f"{units}.00E+2",
                f"+{good}",
                f"-{good}",
                f" {good}",
                f"{good} ",
                f"{good}\n",
                f"0{good}",  # leading zero
                f"1{'0' * 12}.00",  # thirteen integer digits
                good.replace(".", ","),
                good.replace(".", "\uff0e"),  # fullwidth full stop
                f"{units[:1]}_{units[1:] or '0'}.00",
                "NaN",
                "Infinity",
                "-0",
                _replace_a_digit(good, draw),  # fullwidth, Devanagari, Arabic-Indic...
                "".join(draw(other_digits) if c in ASCII_DIGITS else c for c in good),
                True,
                None,
                {"amount": good},
                "",
            ]
        )
    )


def _paths(table: dict[str, list[str]]) -> st.SearchStrategy[tuple[str, str]]:
    return st.sampled_from([(t, p) for t, paths in table.items() for p in paths])


@settings(max_examples=400, deadline=None)
@given(target=_paths(TIMES), bad=bad_times())
def test_a_time_that_is_not_rfc3339_with_seconds_and_zone_is_refused(
    target: tuple[str, str], bad: Any
) -> None:
    event_type, path = target
    assert_refused(event_type, encode(with_value(record(event_type), path, bad)))


@settings(max_examples=200, deadline=None)
@given(target=_paths(DATES), bad=bad_dates())
def test_a_date_that_is_not_yyyy_mm_dd_is_refused(target: tuple[str, str], bad: Any) -> None:
    event_type, path = target
    assert_refused(event_type, encode(with_value(record(event_type), path, bad)))


@settings(max_examples=400, deadline=None)
@given(target=_paths(MONEY), bad=bad_money())
def test_money_that_is_not_an_ascii_two_digit_decimal_string_is_refused(
    target: tuple[str, str], bad: Any
) -> None:
    event_type, path = target
    assert_refused(event_type, encode(with_value(record(event_type), path, bad)))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("event_type", "path"),
    [(t, p) for t, paths in (MONEY | TIMES | DATES).items() for p in paths[:1]]
    # Where no model looks: a CloudEvents extension attribute, a field a later minor
    # version may add. The record is still not JSON.
    + [(t, "ext") for t in VALID]
    + [(t, "data.added_later") for t in VALID],
)
def test_nan_and_infinity_literals_are_not_json(event_type: str, path: str, literal: str) -> None:
    # Python's json module reads NaN/Infinity by default; they are not JSON (RFC 8259).
    value = encode(with_value(record(event_type), path, "__LITERAL__"))
    value = value.replace(b'"__LITERAL__"', literal.encode())
    assert literal.encode() in value
    assert assert_refused(event_type, value).kind == "json"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
@pytest.mark.parametrize("event_type", sorted(VALID))
def test_json_in_another_encoding_than_utf8_is_refused(event_type: str, encoding: str) -> None:
    # json.loads(bytes) guesses UTF-16/32; RFC 8259 JSON between systems is UTF-8, no BOM.
    value = json.dumps(record(event_type), ensure_ascii=False).encode(encoding)
    assert assert_refused(event_type, value).kind == "json"


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_an_unpaired_surrogate_escape_is_refused(event_type: str) -> None:
    # "\ud800" alone decodes to a code point no UTF-8 encoder accepts (Kafka, BSON).
    body = record(event_type)
    body["subject"] = "__S__"
    value = encode(body).replace(b'"__S__"', b'"o-\\ud800"')
    assert assert_refused(event_type, value).kind == "json"
    paired = encode(body).replace(b'"__S__"', b'"o-\\ud83d\\ude00"')  # one emoji: fine
    assert parse_event(TOPIC_OF[event_type], paired).subject == "o-\U0001f600"


@pytest.mark.parametrize("event_type", sorted(VALID))
@pytest.mark.parametrize("where", ["envelope", "data", "deepest"])
def test_a_name_twice_in_one_object_is_refused(event_type: str, where: str) -> None:
    # json.loads keeps the last of two equal names, other parsers the first: ambiguous.
    body = record(event_type)
    node = body if where == "envelope" else body["data"]
    if where == "deepest":
        while any(isinstance(v, dict) for v in node.values()):
            node = next(v for v in node.values() if isinstance(v, dict))
    name = next(iter(node))
    node["__DUP__"] = node[name]
    value = encode(body).replace(b'"__DUP__"', json.dumps(name).encode())
    assert value.count(json.dumps(name).encode() + b":") >= 2
    error = assert_refused(event_type, value)
    assert error.kind == "json" and "twice" in error.message


# -- valid forms are accepted, and mean what they say -------------------------------------------

zones = st.one_of(
    st.just(UTC),
    st.builds(
        lambda minutes: timezone(timedelta(minutes=minutes)),
        st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    zone=zones,
    fraction=st.text(alphabet=ASCII_DIGITS, max_size=9),
    lower=st.booleans(),
    target=_paths(TIMES),
)
def test_every_rfc3339_time_with_a_zone_is_accepted_as_that_instant(
    moment: datetime, zone: timezone, fraction: str, lower: bool, target: tuple[str, str]
) -> None:
    offset = zone.utcoffset(None)
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0 and zone is UTC:
        suffix = "z" if lower else "Z"
    else:
        sign = "-" if minutes < 0 else "+"
        suffix = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    separator = "t" if lower else "T"
    m = moment
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}{separator}{m.hour:02d}:{m.minute:02d}"
    text += f":{m.second:02d}"
    text += f".{fraction}" if fraction else ""
    text += suffix
    event_type, path = target
    event = parse_event(TOPIC_OF[event_type], encode(with_value(record(event_type), path, text)))
    parsed = event.time if path == "time" else getattr(event.data, path.split(".")[-1])
    # The oracle: the wall-clock fields as written, in the zone as written, microseconds
    # being the fraction's first six digits.
    micro = int((fraction + "000000")[:6])
    assert parsed == moment.replace(microsecond=micro, tzinfo=zone)
    assert parsed.utcoffset() == offset


# -- bounds ----------------------------------------------------------------------------------

# The documented bounds (docs/contract.md), written here as numbers.
BOUNDED: list[tuple[str, str, int]] = [
    ("order.requested.v1", "data.order_id", 128),
    ("order.requested.v1", "data.merchant_id", 128),
    ("order.requested.v1", "data.external_code", 200),
    ("order.requested.v1", "data.debtor.name", 300),
    ("order.requested.v1", "data.debtor.address.street", 200),
    ("order.requested.v1", "data.line_items.0.description", 2000),
    ("merchant.configured.v1", "data.merchant_id", 128),
    ("merchant.configured.v1", "data.name", 300),
    ("merchant.configured.v1", "data.payout_iban", 34),
    ("company.registered.v1", "data.company_id", 128),
    ("company.registered.v1", "data.name", 300),
    ("company.registered.v1", "data.registration_number", 128),
    ("order.reviewed.v1", "data.reviewer", 128),
    ("order.shipped.v1", "data.invoice_number", 128),
    ("order.canceled.v1", "data.reason", 2000),
    ("order.amount_reduced.v1", "data.order_id", 128),
    ("invoice.credit_noted.v1", "data.credit_note_number", 128),
    ("bank.transaction.received.v1", "data.transaction_id", 128),
    ("bank.transaction.received.v1", "data.creditor_iban", 34),
    ("bank.transaction.received.v1", "data.remittance_information", 2000),
    ("payment.reported.v1", "data.invoice_number", 128),
    ("merchant_debit.collected.v1", "data.debit_id", 128),
    ("dunning.pause_requested.v1", "data.reason", 2000),
    ("clock.tick.v1", "id", 128),
    ("clock.tick.v1", "source", 256),
    ("clock.tick.v1", "subject", 256),
    ("clock.tick.v1", "type", 128),
]


@pytest.mark.parametrize(("event_type", "path", "bound"), BOUNDED)
def test_strings_are_accepted_up_to_their_bound_and_refused_beyond(
    event_type: str, path: str, bound: int
) -> None:
    body = record(event_type)
    if path == "type":
        # Only the contract's type names are accepted anyway; one past the bound is refused.
        assert assert_refused(event_type, encode(with_value(body, path, "t" * (bound + 1))))
        return
    at_bound = "ü" * bound  # characters, not bytes
    assert parse_event(TOPIC_OF[event_type], encode(with_value(body, path, at_bound)))
    error = assert_refused(event_type, encode(with_value(body, path, at_bound + "x")))
    assert path.removeprefix("data.").split(".")[-1] in error.message


def test_line_items_are_bounded_in_count() -> None:
    body = record("order.requested.v1")
    item = body["data"]["line_items"][0]
    body["data"]["line_items"] = [item] * 500
    parse_event(topics.ORDERS_REQUESTED, encode(body))
    body["data"]["line_items"] = [item] * 501
    assert "line_items" in assert_refused("order.requested.v1", encode(body)).message


@pytest.mark.parametrize("event_type", sorted(VALID))
@pytest.mark.parametrize("where", ["extension", "data"])
def test_a_record_nested_10000_levels_deep_is_refused_cleanly(event_type: str, where: str) -> None:
    nested = "[" * 10_000 + "]" * 10_000
    body = record(event_type)
    if where == "extension":
        body["deep"] = "__N__"
    else:
        body["data"]["deep"] = "__N__"
    value = encode(body).replace(b'"__N__"', nested.encode())
    error = assert_refused(event_type, value)  # not RecursionError
    assert error.kind == "json" and "nested" in error.message


def test_nesting_up_to_the_bound_is_accepted() -> None:
    # The envelope is level 1, data level 2: 30 more arrays make 32 levels, the bound.
    body = record("order.canceled.v1")
    body["data"]["extra"] = "__N__"
    accepted = encode(body).replace(b'"__N__"', b"[" * 30 + b"]" * 30)
    assert parse_event(topics.ORDERS_CANCELED, accepted).data.key() == "o-1"
    refused = encode(body).replace(b'"__N__"', b"[" * 31 + b"]" * 31)
    assert assert_refused("order.canceled.v1", refused).kind == "json"
    # Brackets inside strings are not nesting.
    body["data"]["reason"] = "[{" * 40
    assert parse_event(topics.ORDERS_CANCELED, encode(body)).data.key() == "o-1"


def test_huge_integers_are_refused_as_json_not_crashing() -> None:
    body = record("company.registered.v1")
    body["data"]["score"] = "__N__"
    value = encode(body).replace(b'"__N__"', b"9" * 5000)
    assert assert_refused("company.registered.v1", value).kind == "json"


# -- orders.decided ------------------------------------------------------------------------------


def test_a_created_decision_carries_a_viban_and_only_a_created_one() -> None:
    created = _json(ex.decided("o-1", "created"))
    assert parse_event(topics.ORDERS_DECIDED, encode(record_of(created))).data.key() == "o-1"
    error = refusal_of(created | {"viban": None})
    assert "viban" in error.message
    del created["viban"]
    assert "viban" in refusal_of(created).message
    declined = _json(ex.decided("o-1", "declined"))
    assert "viban" in refusal_of(declined | {"viban": ex.VIBAN}).message
    waiting = _json(ex.decided("o-1", "waiting"))
    assert "viban" in refusal_of(waiting | {"viban": ex.VIBAN}).message


def record_of(decided: dict[str, Any]) -> dict[str, Any]:
    body = record("clock.tick.v1")
    body["type"], body["data"] = "order.decided.v1", decided
    return body


def refusal_of(decided: dict[str, Any]) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_event(topics.ORDERS_DECIDED, encode(record_of(decided)))
    return caught.value


# -- the one-pass path refuses exactly what the stepwise path refuses ----------------------------


def _bad_records() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    def break_field(table: dict[str, list[str]], values: st.SearchStrategy[Any]) -> Any:
        return st.tuples(_paths(table), values).map(
            lambda pair: (pair[0][0], with_value(record(pair[0][0]), pair[0][1], pair[1]))
        )

    fine = st.sampled_from(sorted(VALID)).map(lambda t: (t, record(t)))
    wrong_envelope = st.tuples(
        st.sampled_from(sorted(VALID)),
        st.sampled_from(["specversion", "id", "source", "type", "subject", "datacontenttype"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just("x" * 300)),
    ).map(lambda t: (t[0], with_value(record(t[0]), t[1], t[2])))
    return st.one_of(
        fine,
        wrong_envelope,
        break_field(TIMES, bad_times()),
        break_field(DATES, bad_dates()),
        break_field(MONEY, bad_money()),
    )


@settings(max_examples=300, deadline=None)
@given(case=_bad_records(), also_break_time=st.booleans())
def test_the_one_pass_decoder_equals_the_stepwise_one(
    case: tuple[str, dict[str, Any]], also_break_time: bool
) -> None:
    # parse_event validates a well-formed record in one pydantic pass and falls back to the
    # stepwise path otherwise; both must accept and refuse the same records, with the same kind.
    event_type, body = case
    if also_break_time:
        body["time"] = 1795466968
    value = encode(body)
    topic = TOPIC_OF[event_type]
    try:
        fast: Any = parse_event(topic, value)
    except ContractError as exc:
        fast = exc.kind
    try:
        plain: Any = parse_stepwise(topic, decode_json(value))
    except ContractError as exc:
        plain = exc.kind
    assert fast == plain
