"""CloudEvents 1.0 in structured JSON mode: every Kafka record value is one envelope.

``parse_event`` is the decoder every worker calls on every record. It accepts exactly the
contract and raises ``ContractError`` (the worker dead-letters the record) for anything else:

- the value is JSON text (RFC 8259) in UTF-8: no other encoding, no byte order mark, no
  ``NaN``/``Infinity`` literals, no fractional numbers (money is a string), no string with an
  unpaired surrogate escape, no name twice in one object, nesting at most
  ``MAX_JSON_DEPTH`` levels deep;
- the envelope has the CloudEvents attributes with their bounds, ``time`` RFC 3339 with a zone;
- ``type`` is one the record's topic carries, and ``data`` is that type's model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from functools import cache, lru_cache
from typing import Annotated, Any, Generic, Literal, TypeVar, cast, get_args

from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter, ValidationError

from shared.events import (
    EVENT_TYPES_BY_TOPIC,
    MAX_ID_LENGTH,
    EventData,
    InvoiceState,
    OrderState,
)
from shared.times import Rfc3339Time

DataT = TypeVar("DataT", bound=EventData)
ErrorKind = Literal["json", "envelope", "unknown_type", "schema"]

# The contract's own records nest four levels deep (envelope, data, debtor, address); the
# bound leaves room for minor versions and extension attributes, and stays far below what
# would exhaust Python's recursion limit in json or pydantic.
MAX_JSON_DEPTH = 32
MAX_SOURCE_LENGTH = 256
MAX_SUBJECT_LENGTH = 256
MAX_TYPE_LENGTH = 128

EventId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Source = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SOURCE_LENGTH)]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TYPE_LENGTH)]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SUBJECT_LENGTH)]


class CloudEvent(BaseModel, Generic[DataT]):
    # Extension attributes are allowed by CloudEvents; they pass through untouched.
    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"]
    id: EventId
    source: Source
    type: EventType
    time: Rfc3339Time
    subject: Subject | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: DataT


_TIME: TypeAdapter[Rfc3339Time] = TypeAdapter(Rfc3339Time)
_json_string: Callable[[str], str] = json.encoder.encode_basestring


class _Envelope(BaseModel):
    """The envelope with ``data`` still raw, to choose the data model by ``type``."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: EventId
    source: Source
    type: EventType
    time: Rfc3339Time
    subject: Subject | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]


_ENVELOPE_FIELDS = ("specversion", "id", "source", "type", "time", "subject", "datacontenttype")


class ContractError(Exception):
    """A record that does not satisfy the contract; ``message`` names the field."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
        self.message = message


def _reject_float(text: str) -> Any:
    raise ValueError(f'JSON number {text} is not allowed: amounts are strings like "1.00"')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object_with_unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 leaves duplicate names to each parser: json keeps the last, others the first.
    # A record whose "gross" one system reads as 1.00 and another as 1000.00 is refused.
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        twice = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"the name {twice!r} appears twice in one object")
    return result


# A JSON string (escapes included) or a bracket: what decides the nesting depth.
_DEPTH_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _deeper_than(text: str, limit: int) -> bool:
    depth = 0
    for token in _DEPTH_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


def decode_json(value: bytes) -> Any:
    """The record value as JSON, exactly as RFC 8259 and the contract define it."""
    try:
        # json.loads(bytes) would also guess UTF-16 and UTF-32; the contract is UTF-8.
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError("json", f"the record value is not UTF-8: {exc}") from None
    # Counting brackets is cheap and bounds the depth from above (brackets inside strings
    # count too); only a record with many of them is scanned exactly. The depth is checked
    # before parsing, so nothing ever recurses 10,000 levels deep.
    if value.count(b"{") + value.count(b"[") > MAX_JSON_DEPTH and _deeper_than(
        text, MAX_JSON_DEPTH
    ):
        raise ContractError("json", f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        # A float anywhere is refused: no field of the contract is a fractional JSON number.
        raw = json.loads(
            text,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_object_with_unique_names,
        )
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise ContractError("json", f"not valid JSON: {exc}") from None
    if ("\\ud" in text or "\\uD" in text) and _has_unpaired_surrogate(raw):
        raise ContractError("json", "a string holds an unpaired UTF-16 surrogate escape")
    return raw


def _has_unpaired_surrogate(raw: Any) -> bool:
    # json decodes the escape \ud800 alone to a lone surrogate, which no UTF-8 encoder
    # (Kafka's, BSON's) accepts: found here, not when a worker encodes an output or document.
    try:
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(p) for p in (prefix, *error["loc"]) if p != "")
        parts.append(f"{location or '(root)'}: {error['msg']}")
    return "; ".join(parts)


@cache
def _typed_envelope(model: type[EventData]) -> type[CloudEvent[Any]]:
    typed: type[CloudEvent[Any]] = CloudEvent[model]  # type: ignore[valid-type]
    return typed


def parse_event(topic: str, value: bytes) -> CloudEvent[EventData]:
    """Validate one record value against the contract of ``topic``."""
    raw = decode_json(value)
    if not isinstance(raw, dict):
        raise ContractError("json", "the record value must be a JSON object")
    allowed = EVENT_TYPES_BY_TOPIC.get(topic)
    kind = raw.get("type")
    model = allowed.get(kind) if allowed is not None and isinstance(kind, str) else None
    if model is not None and isinstance(raw.get("data"), dict):
        # The common case in one validation pass. Anything wrong outside ``data`` takes the
        # stepwise path, which names envelope problems before anything else; a test holds
        # the two equal.
        try:
            return cast("CloudEvent[EventData]", _typed_envelope(model).model_validate(raw))
        except ValidationError as exc:
            if all(error["loc"][:1] == ("data",) for error in exc.errors()):
                raise ContractError("schema", _describe(exc)) from exc
    return parse_stepwise(topic, raw)


def parse_stepwise(topic: str, raw: dict[str, Any]) -> CloudEvent[EventData]:
    """The envelope first, then ``type``, then ``data``: the plain path, whose errors say
    which of the three is wrong."""
    try:
        envelope = _Envelope.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("envelope", _describe(exc)) from exc
    allowed = EVENT_TYPES_BY_TOPIC.get(topic)
    if allowed is None:
        raise ContractError("unknown_type", f"topic {topic!r} is not part of the contract")
    model = allowed.get(envelope.type)
    if model is None:
        raise ContractError(
            "unknown_type",
            f"type: {envelope.type!r} is not accepted on {topic} (expected one of "
            f"{', '.join(sorted(allowed))})",
        )
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise ContractError("schema", _describe(exc, "data")) from exc
    fields = {name: getattr(envelope, name) for name in _ENVELOPE_FIELDS}
    fields.update(envelope.model_extra or {})  # CloudEvents extension attributes
    return CloudEvent[EventData].model_construct(**fields, data=data)


def new_event(
    data: EventData,
    *,
    id: str,
    source: str,
    time: datetime,
    subject: str | None = None,
) -> CloudEvent[EventData]:
    """The envelope around ``data``, validated like a decoded one (``data`` itself was
    validated when it was built)."""
    return CloudEvent[EventData](
        specversion="1.0",
        id=id,
        source=source,
        type=data.EVENT_TYPE,
        time=time,
        subject=subject if subject is not None else data.key(),
        datacontenttype="application/json",
        data=data,
    )


def event_to_dict(event: CloudEvent[EventData]) -> dict[str, Any]:
    body = event.model_dump(mode="json", by_alias=True, exclude={"data"}, exclude_none=True)
    body["data"] = event.data.model_dump(mode="json", by_alias=True)
    return body


def event_to_bytes(event: CloudEvent[EventData]) -> bytes:
    """The same JSON as ``event_to_dict`` would give, with ``data`` serialised by pydantic's
    own encoder: on the hot path of every worker, this is several times cheaper."""
    head = event.model_dump_json(by_alias=True, exclude={"data"}, exclude_none=True)
    return (
        head[:-1].encode() + b',"data":' + event.data.model_dump_json(by_alias=True).encode() + b"}"
    )


@lru_cache(maxsize=1024)
def _wire_time(moment: datetime) -> str:
    # pydantic's own formatting ("...Z" for UTC), so both encoders agree byte for byte; a
    # batch's outputs share their cause's time, hence the cache.
    if moment.utcoffset() is None:
        raise ValueError(f"time must have a zone, got {moment!r}")
    text: str = _TIME.dump_python(moment, mode="json")
    return text


def _check_bounds(**values: tuple[str, int]) -> None:
    for name, (value, limit) in values.items():
        if not 0 < len(value) <= limit:
            raise ValueError(f"{name} must have 1 to {limit} characters, got {len(value)}")


def encode_event(
    data: EventData, *, id: str, source: str, time: datetime, subject: str | None = None
) -> bytes:
    """``event_to_bytes(new_event(...))`` without building the envelope model: on the hot
    path of every output. A test holds the two equal."""
    return encode_wire(
        event_type=data.EVENT_TYPE,
        data_json=data.model_dump_json(by_alias=True),
        id=id,
        source=source,
        time=time,
        subject=subject if subject is not None else data.key(),
    )


def encode_wire(
    *, event_type: str, data_json: str, id: str, source: str, time: datetime, subject: str
) -> bytes:
    """The envelope around ``data`` that is already JSON. Refuses what ``CloudEvent``
    refuses (attributes out of bounds, a time without a zone), as a ``ValueError``."""
    _check_bounds(
        id=(id, MAX_ID_LENGTH),
        source=(source, MAX_SOURCE_LENGTH),
        type=(event_type, MAX_TYPE_LENGTH),
        subject=(subject, MAX_SUBJECT_LENGTH),
    )
    # The same bytes json.dumps(..., separators=(",", ":"), ensure_ascii=False) gives, with
    # only the strings escaped (by json's own C escaper): the dict round trip through the
    # encoder was most of this function's time.
    return (
        '{"specversion":"1.0","id":'
        + _json_string(id)
        + ',"source":'
        + _json_string(source)
        + ',"type":'
        + _json_string(event_type)
        + ',"time":'
        + _json_string(_wire_time(time))
        + ',"subject":'
        + _json_string(subject)
        + ',"datacontenttype":"application/json","data":'
        + data_json
        + "}"
    ).encode()


def json_string(value: str | None) -> str:
    """A JSON string (or null), escaped as json.dumps(ensure_ascii=False) would."""
    return "null" if value is None else _json_string(value)


_ORDER_STATES = frozenset(get_args(OrderState))
_INVOICE_STATES = frozenset(get_args(InvoiceState))


def state_change_json(
    key_field: str, key: str, order_id: str | None, from_: str | None, to: str
) -> str:
    """The ``data`` of ``order.state_changed.v1`` (key_field ``order_id``) or
    ``invoice.state_changed.v1`` (key_field ``invoice_number`` plus ``order_id``), without
    building the model: three of a capture's five outputs are state changes. A test holds it
    equal to the models' own JSON, refusals included."""
    states = _ORDER_STATES if key_field == "order_id" else _INVOICE_STATES
    if to not in states or (from_ is not None and from_ not in states):
        raise ValueError(f"not a state change between {key_field} states: {from_!r} -> {to!r}")
    _check_bounds(**{key_field: (key, MAX_ID_LENGTH)})
    if order_id is not None:
        _check_bounds(order_id=(order_id, MAX_ID_LENGTH))
    order_part = "" if order_id is None else ',"order_id":' + _json_string(order_id)
    return (
        "{"
        + _json_string(key_field)
        + ":"
        + _json_string(key)
        + order_part
        + ',"from":'
        + json_string(from_)
        + ',"to":'
        + _json_string(to)
        + "}"
    )


def event_key(event: CloudEvent[EventData]) -> bytes:
    return event.data.key().encode()
