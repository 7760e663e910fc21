"""CloudEvents 1.0 in structured JSON mode: every Kafka record value is one envelope."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from functools import cache, lru_cache
from typing import Any, Generic, Literal, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.events import EVENT_TYPES_BY_TOPIC, EventData

DataT = TypeVar("DataT", bound=EventData)
ErrorKind = Literal["json", "envelope", "unknown_type", "schema"]


class CloudEvent(BaseModel, Generic[DataT]):
    # Extension attributes are allowed by CloudEvents; they pass through untouched.
    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: AwareDatetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: DataT


_TIME: TypeAdapter[AwareDatetime] = TypeAdapter(AwareDatetime)
_json_string: Callable[[str], str] = json.encoder.encode_basestring


class _Envelope(BaseModel):
    """The envelope with ``data`` still raw, to choose the data model by ``type``."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: AwareDatetime
    subject: str | None = None
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
    try:
        # A float anywhere is refused: no field of the contract is a fractional JSON number.
        raw = json.loads(value, parse_float=_reject_float)
    except ValueError as exc:
        raise ContractError("json", f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError("json", "the record value must be a JSON object")
    allowed = EVENT_TYPES_BY_TOPIC.get(topic)
    kind = raw.get("type")
    model = allowed.get(kind) if allowed is not None and isinstance(kind, str) else None
    if model is not None and isinstance(raw.get("data"), dict):
        # The common case in one validation pass. Anything wrong outside ``data`` takes the
        # path below, which names envelope problems before anything else, as it always has.
        try:
            return cast("CloudEvent[EventData]", _typed_envelope(model).model_validate(raw))
        except ValidationError as exc:
            if all(error["loc"][:1] == ("data",) for error in exc.errors()):
                raise ContractError("schema", _describe(exc)) from exc
    try:
        envelope = _Envelope.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("envelope", _describe(exc)) from exc
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
    return CloudEvent[EventData].model_construct(
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
    text: str = _TIME.dump_python(moment, mode="json")
    return text


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
    """The envelope around ``data`` that is already JSON."""
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


def state_change_json(
    key_field: str, key: str, order_id: str | None, from_: str | None, to: str
) -> str:
    """The ``data`` of ``order.state_changed.v1`` (key_field ``order_id``) or
    ``invoice.state_changed.v1`` (key_field ``invoice_number`` plus ``order_id``), without
    building the model: three of a capture's five outputs are state changes. A test holds it
    equal to the models' own JSON."""
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
