"""Typed async client for Billit's API (orders, Peppol send and status, payments).

What a caller can rely on:

- Every answer is parsed into a pydantic model; amounts are ``Decimal`` both ways (Billit's
  JSON numbers are read and written digit for digit, see ``exact_json``), never float.
- Errors are typed by what the caller should do next:
  ``BillitBusinessError`` (400, Billit's ``errors[]``: nothing happened, do not retry unchanged),
  ``BillitConfigurationError`` (401: wrong key or PartyID, or an OrderID this key may not see),
  ``BillitIdempotencyConflict`` (409: the idempotency key was already used successfully),
  ``BillitRetryableError`` and its subclasses (try again later): ``BillitUnavailable`` after
  the retries ran out on 429/5xx/network errors, ``BillitOutcomeUnknown`` when a call that may
  not be repeated blindly lost its answer, ``BillitMalformedResponse`` for JSON that does not
  parse or values (e.g. a delivery status) this client does not know.
- 429, 5xx and network errors are retried with exponential backoff and full jitter, honouring
  ``Retry-After``; at most ``max_concurrency`` calls are in flight and at most
  ``rate_per_second`` start per second, per client.
- Calls that change something take an idempotency key, sent under both of Billit's spellings.
  ``create_or_find_order`` never turns one of our invoices into two Billit orders: after a lost
  answer, a 5xx or a 409 it looks the order up by ``ExternalProviderID`` before creating again.
- The API key is a ``SecretStr``: it is in no log line, no repr and no exception text.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, TypeVar
from zoneinfo import ZoneInfo

import httpx
import structlog
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
)

from services.einvoice_status import exact_json

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADERS = ("Idempotency-Key", "Idempotent-Key")
RECEIVER_RESPONSE_CODES = ("AB", "IP", "UQ", "CA", "RE", "AP", "PD")
_KEY = re.compile(r"^[A-Za-z0-9]{1,64}$")
ModelT = TypeVar("ModelT", bound=BaseModel)


# ---------------------------------------------------------------------------------------------
# Errors


class BillitError(Exception):
    retryable = False


class BillitBusinessError(BillitError):
    """400: Billit refused the request and did nothing. Retrying it unchanged cannot help."""

    def __init__(self, status: int, errors: Sequence[BillitErrorItem]) -> None:
        self.status = status
        self.errors = list(errors)
        summary = "; ".join(f"{e.code}: {e.description}" for e in self.errors) or "no details"
        super().__init__(f"Billit refused the request ({status}): {summary}")

    @property
    def codes(self) -> list[str]:
        return [error.code for error in self.errors]


class BillitConfigurationError(BillitError):
    """401 (or 403/404): the API key, PartyID or base URL is wrong, or the key may not see
    this order. Only a person can fix it."""


class BillitIdempotencyConflict(BillitError):
    """409: this idempotency key was already used for a call that succeeded."""


class BillitRetryableError(BillitError):
    retryable = True


class BillitUnavailable(BillitRetryableError):
    """Billit kept answering 429/5xx or could not be reached within the retry budget, or
    asked (Retry-After) for a longer pause than the client waits in-line: ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BillitOutcomeUnknown(BillitRetryableError):
    """The call may or may not have taken effect (answer lost, or a 5xx after sending)."""


class BillitMalformedResponse(BillitRetryableError):
    """Billit answered 2xx with a body this client cannot read (bad JSON, unknown values)."""


# ---------------------------------------------------------------------------------------------
# Models


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("amounts must be Decimal or a decimal string, never float")
    return value


# Dumped in python mode it stays a Decimal, which exact_json writes as the exact JSON number.
ExactDecimal = Annotated[Decimal, BeforeValidator(_no_float)]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="python", by_alias=True, exclude_none=True)


class BillitErrorItem(_Model):
    code: str = Field(alias="Code", default="Unknown")
    description: str = Field(alias="Description", default="")


class CustomerAddress(_Model):
    address_type: Literal["InvoiceAddress", "DeliveryAddress"] = Field(
        alias="AddressType", default="InvoiceAddress"
    )
    name: str | None = Field(alias="Name", default=None)
    street: str | None = Field(alias="Street", default=None)
    street_number: str | None = Field(alias="StreetNumber", default=None)
    zipcode: str | None = Field(alias="Zipcode", default=None)
    city: str | None = Field(alias="City", default=None)
    country_code: str | None = Field(alias="CountryCode", default=None)


class Customer(_Model):
    name: str = Field(alias="Name")
    vat_number: str | None = Field(alias="VATNumber", default=None)
    party_type: Literal["Customer"] = Field(alias="PartyType", default="Customer")
    email: str | None = Field(alias="Email", default=None)
    # The billing address (Billit's customer Addresses, type InvoiceAddress).
    addresses: list[CustomerAddress] | None = Field(alias="Addresses", default=None)


class OrderLine(_Model):
    quantity: ExactDecimal = Field(alias="Quantity")
    unit_price_excl: ExactDecimal = Field(alias="UnitPriceExcl")
    description: str = Field(alias="Description")
    vat_percentage: ExactDecimal = Field(alias="VATPercentage")


class NewOrder(_Model):
    """The body of ``POST /v1/orders``. ``ExternalProviderID`` (our invoice id) is required:
    it is how an order whose creation answer was lost is found again."""

    order_type: Literal["Invoice", "CreditNote"] = Field(alias="OrderType", default="Invoice")
    order_direction: Literal["Income"] = Field(alias="OrderDirection", default="Income")
    order_number: str = Field(alias="OrderNumber", min_length=1)
    order_date: date = Field(alias="OrderDate")
    expiry_date: date = Field(alias="ExpiryDate")
    currency: str = Field(alias="Currency", default="EUR")
    external_provider_id: str = Field(alias="ExternalProviderID", min_length=1)
    payment_reference: str | None = Field(alias="PaymentReference", default=None)
    iban: str | None = Field(alias="IBAN", default=None)
    bic: str | None = Field(alias="BIC", default=None)
    customer: Customer = Field(alias="Customer")
    order_lines: list[OrderLine] = Field(alias="OrderLines", min_length=1)


class PeppolParticipant(_Model):
    registered: bool = Field(alias="Registered")
    identifier: str | None = Field(alias="Identifier", default=None)
    document_types: list[str] = Field(alias="DocumentTypes", default_factory=list)

    def accepts(self, document_type: str = "BISv3Invoice") -> bool:
        return self.registered and document_type in self.document_types


class DeliveryStatus(StrEnum):
    PENDING = "Pending"
    DELIVERED = "Delivered"
    ERROR = "Error"

    @property
    def final(self) -> bool:
        return self is not DeliveryStatus.PENDING


class DocumentDeliveryDetails(_Model):
    status: DeliveryStatus = Field(alias="DocumentDeliveryStatus")
    delivered_at: datetime | None = Field(alias="DocumentDeliveryDate", default=None)
    is_delivered: bool = Field(alias="IsDocumentDelivered", default=False)
    # DocumentDeliveryInfo is localised free text: kept for people, never read by code.
    info: str | None = Field(alias="DocumentDeliveryInfo", default=None)
    refused_at: datetime | None = Field(alias="DocumentRefusedDate", default=None)
    refused_reason_tc: str | None = Field(alias="DocumentRefusedReasonTC", default=None)
    refused_info: str | None = Field(alias="DocumentRefusedInfo", default=None)


class OrderMessage(_Model):
    file_id: str | None = Field(alias="FileID", default=None)
    created_at: datetime | None = Field(alias="CreationDate", default=None)
    direction: Literal["Incoming", "Outgoing"] = Field(alias="MessageDirection")
    description: str | None = Field(alias="Description", default=None)
    success: bool = Field(alias="Success", default=False)
    destination: str | None = Field(alias="Destination", default=None)

    @property
    def response_code(self) -> str | None:
        """The Peppol invoice response code of an incoming message: the text before the first
        colon of its Description, when that is one of the BIS codes."""
        if self.direction != "Incoming" or not self.description:
            return None
        code = self.description.partition(":")[0].strip().upper()
        return code if code in RECEIVER_RESPONSE_CODES else None


class BillitOrder(_Model):
    order_id: int = Field(alias="OrderID")
    order_number: str | None = Field(alias="OrderNumber", default=None)
    order_status: str | None = Field(alias="OrderStatus", default=None)
    external_provider_id: str | None = Field(alias="ExternalProviderID", default=None)
    paid: bool = Field(alias="Paid", default=False)
    is_sent: bool = Field(alias="IsSent", default=False)
    to_pay: Decimal | None = Field(alias="ToPay", default=None)
    total_incl: Decimal | None = Field(alias="TotalIncl", default=None)
    payment_reference: str | None = Field(alias="PaymentReference", default=None)
    delivery: DocumentDeliveryDetails | None = Field(
        alias="CurrentDocumentDeliveryDetails", default=None
    )
    messages: list[OrderMessage] = Field(alias="Messages", default_factory=list)

    @field_validator("to_pay", "total_incl", mode="before")
    @classmethod
    def _amounts_not_float(cls, value: Any) -> Any:
        return _no_float(value)

    def receiver_responses(self) -> list[ReceiverResponse]:
        """Incoming Peppol responses in Billit's order, one per FileID."""
        seen: set[str] = set()
        found = []
        for message in self.messages:
            code = message.response_code
            if code is None or message.file_id is None or message.file_id in seen:
                continue
            seen.add(message.file_id)
            found.append(ReceiverResponse(code, message.file_id, message.created_at))
        return found


@dataclass(frozen=True)
class ReceiverResponse:
    code: str
    file_id: str
    created_at: datetime | None


class Payment(_Model):
    amount: ExactDecimal = Field(alias="Amount", gt=0)
    description: str = Field(alias="Description")
    on: date | None = Field(alias="Date", default=None)


PaymentMethod = Literal[
    "Other", "Visa", "Bancontact", "Contant", "Wired", "Online", "Domiciliation", "PrivateAccount"
]


BILLIT_ZONE = ZoneInfo("Europe/Brussels")


def _billit_datetime(value: datetime) -> str:
    """Billit's date-times carry no zone and are read as Brussels time: an aware value is
    converted first, a naive one is taken as already local."""
    if value.tzinfo is not None:
        value = value.astimezone(BILLIT_ZONE)
    return value.replace(tzinfo=None).isoformat(timespec="seconds")


class OrderPatch(_Model):
    """The patchable fields we use. PaidDate always carries a time (Billit requires it)."""

    paid: bool | None = Field(alias="Paid", default=None)
    paid_date: Annotated[datetime, PlainSerializer(_billit_datetime, return_type=str)] | None = (
        Field(alias="PaidDate", default=None)
    )
    payment_method: PaymentMethod | None = Field(alias="PaymentMethod", default=None)
    internal_info: str | None = Field(alias="InternalInfo", default=None)


@dataclass(frozen=True)
class CreateOutcome:
    order_id: int
    created: bool  # False: the order already existed (found by ExternalProviderID)


# ---------------------------------------------------------------------------------------------
# Settings, keys, pacing


class BillitConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    base_url: str = "https://api.sandbox.billit.be"
    api_key: SecretStr
    party_id: str
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 20.0
    max_attempts: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    max_concurrency: int = 5
    rate_per_second: float = 10.0


def idempotency_key(*parts: str) -> str:
    """An alphanumeric key (Billit accepts only those) derived from what the call is about,
    e.g. ``idempotency_key("create", invoice_number)``: the same call always gets the same key,
    different calls never share one."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def backoff_delay(
    attempt: int, base: float, cap: float, draw: Callable[[float, float], float]
) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)] (attempt counts from 0)."""
    return draw(0.0, min(cap, base * 2**attempt))


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if header is None:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - now).total_seconds(), 0.0)


class _Pacer:
    """At most ``limit`` calls in flight, at most ``rate`` starts per second."""

    def __init__(self, limit: int, rate: float) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next_start = 0.0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self._slots.acquire()
        try:
            async with self._lock:
                now = time.monotonic()
                wait = self._next_start - now
                self._next_start = max(now, self._next_start) + self._interval
            if wait > 0:
                await asyncio.sleep(wait)
        except BaseException:
            self._slots.release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._slots.release()


# ---------------------------------------------------------------------------------------------
# The client


class BillitClient:
    def __init__(
        self,
        config: BillitConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._config = config
        self._sleep = sleep
        self._draw = draw
        self._pacer = _Pacer(config.max_concurrency, config.rate_per_second)
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            transport=transport,
            timeout=httpx.Timeout(
                config.read_timeout_seconds, connect=config.connect_timeout_seconds
            ),
            limits=httpx.Limits(max_connections=config.max_concurrency),
            headers={"Accept": "application/json", "PartyID": config.party_id},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- calls -------------------------------------------------------------------------------

    async def participant_information(self, identifier: str) -> PeppolParticipant:
        response = await self._call(
            "GET", f"/v1/peppol/participantInformation/{identifier}", operation="participant"
        )
        return _parse(PeppolParticipant, response)

    async def create_order(self, order: NewOrder, *, idempotency_key: str) -> int:
        """One POST, retried only where it certainly did not happen (429, network errors
        before the request was sent). A lost answer or 5xx raises ``BillitOutcomeUnknown``;
        use ``create_or_find_order`` to recover from it."""
        response = await self._call(
            "POST",
            "/v1/orders",
            operation="create_order",
            body=order.payload(),
            idempotency_key=idempotency_key,
            repeatable=False,
        )
        order_id = _json(response)
        if isinstance(order_id, bool) or not isinstance(order_id, int):
            raise BillitMalformedResponse(f"create_order answered {order_id!r}, not an OrderID")
        return order_id

    async def find_orders(
        self, external_provider_id: str, *, page_size: int = 120
    ) -> list[BillitOrder]:
        """Our orders whose ExternalProviderID is exactly this one, over all pages (Billit's
        OData pages hold at most 120). A next-page link to another host is refused: the API
        key is never sent anywhere but the configured base URL."""
        quoted = external_provider_id.replace("'", "''")
        params: dict[str, str] | None = {
            "$filter": f"ExternalProviderID eq '{quoted}'",
            "$top": str(page_size),
        }
        url = "/v1/orders"
        found: list[BillitOrder] = []
        while True:
            response = await self._call("GET", url, operation="list_orders", params=params)
            page = _parse(_OrderPage, response)
            found.extend(o for o in page.items if o.external_provider_id == external_provider_id)
            if not page.next_page_link:
                return found
            link = httpx.URL(page.next_page_link)
            if link.is_absolute_url and link.host != self._http.base_url.host:
                raise BillitMalformedResponse(f"next page link points to another host: {link.host}")
            url, params = page.next_page_link, None

    async def create_or_find_order(self, order: NewOrder, *, idempotency_key: str) -> CreateOutcome:
        """Exactly one Billit order per ``order.external_provider_id``, whatever answers get
        lost: an ambiguous create (lost answer, 5xx) or a 409 is followed by a look-up by
        ExternalProviderID, and only if that finds nothing is the create sent again."""
        for attempt in range(self._config.max_attempts):
            try:
                return CreateOutcome(
                    await self.create_order(order, idempotency_key=idempotency_key), created=True
                )
            except (BillitOutcomeUnknown, BillitIdempotencyConflict, BillitMalformedResponse) as e:
                found = await self.find_orders(order.external_provider_id)
                if found:
                    log.info(
                        "billit.order_found_after_ambiguous_create",
                        external_provider_id=order.external_provider_id,
                        order_id=found[0].order_id,
                        cause=type(e).__name__,
                    )
                    return CreateOutcome(min(o.order_id for o in found), created=False)
                if isinstance(e, BillitIdempotencyConflict):
                    # The key succeeded but the order is not visible (yet): never create blind.
                    raise BillitOutcomeUnknown(
                        "idempotency key already used but no order carries "
                        f"ExternalProviderID {order.external_provider_id!r}"
                    ) from e
                await self._sleep(self._backoff(attempt))
        raise BillitUnavailable(
            f"could not create order {order.external_provider_id!r} "
            f"in {self._config.max_attempts} attempts"
        )

    async def get_order(self, order_id: int) -> BillitOrder:
        response = await self._call("GET", f"/v1/orders/{order_id}", operation="get_order")
        return _parse(BillitOrder, response)

    async def send_orders(self, order_ids: Sequence[int], *, idempotency_key: str) -> bool:
        """Sends over Peppol only (no e-mail fallback). True if sent now, False if this key's
        send had already succeeded (409)."""
        try:
            await self._call(
                "POST",
                "/v1/orders/commands/send",
                operation="send_orders",
                body={"Transporttype": "Peppol", "OrderIDs": list(order_ids)},
                idempotency_key=idempotency_key,
                extra_headers={"StrictTransportType": "true"},
            )
        except BillitIdempotencyConflict:
            return False
        return True

    async def register_payment(
        self, order_id: int, payment: Payment, *, idempotency_key: str
    ) -> None:
        """One payment step. Billit does not dedupe payments, so this is never repeated after
        an ambiguous failure: that raises ``BillitOutcomeUnknown`` for the caller's ledger."""
        await self._call(
            "POST",
            f"/v1/orders/{order_id}/payments",
            operation="register_payment",
            body=payment.payload(),
            idempotency_key=idempotency_key,
            repeatable=False,
        )

    async def patch_order(self, order_id: int, patch: OrderPatch, *, idempotency_key: str) -> None:
        """PATCH is idempotent by nature (it sets values), so it is retried like a read."""
        body = patch.payload()
        if not body:
            raise ValueError("nothing to patch")
        await self._call(
            "PATCH",
            f"/v1/orders/{order_id}",
            operation="patch_order",
            body=body,
            idempotency_key=idempotency_key,
        )

    # -- transport ---------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        config = self._config
        return backoff_delay(
            attempt, config.backoff_base_seconds, config.backoff_max_seconds, self._draw
        )

    def _headers(
        self, idempotency_key: str | None, extra: dict[str, str] | None, has_body: bool
    ) -> dict[str, str]:
        headers = {"ApiKey": self._config.api_key.get_secret_value(), **(extra or {})}
        if idempotency_key is not None:
            if not _KEY.fullmatch(idempotency_key):
                raise ValueError("an idempotency key must be 1-64 letters or digits")
            headers.update(dict.fromkeys(IDEMPOTENCY_HEADERS, idempotency_key))
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    async def _pause(self, attempt: int, wait: float | None = None) -> None:
        """Waits before the next attempt; not after the last one, which raises instead."""
        if attempt + 1 < self._config.max_attempts:
            await self._sleep(self._backoff(attempt) if wait is None else wait)

    async def _call(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        repeatable: bool = True,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Sends one call, retrying what is safe to retry. ``repeatable=False``: after the
        request may have reached Billit (lost answer, 5xx), raise instead of sending it again."""
        content = None if body is None else exact_json.dumps(body)
        headers = self._headers(idempotency_key, extra_headers, content is not None)
        config = self._config
        last_problem = "no attempt made"
        for attempt in range(config.max_attempts):
            try:
                async with self._pacer:
                    response = await self._http.request(
                        method, url, content=content, params=params, headers=headers
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                # The request never left: always safe to send again.
                last_problem = type(error).__name__
                log.warning("billit.unreachable", operation=operation, error=last_problem)
                await self._pause(attempt)
                continue
            except httpx.TransportError as error:
                last_problem = type(error).__name__
                log.warning("billit.answer_lost", operation=operation, error=last_problem)
                if not repeatable:
                    raise BillitOutcomeUnknown(
                        f"{operation}: the answer was lost ({last_problem})"
                    ) from error
                await self._pause(attempt)
                continue
            status = response.status_code
            log.debug("billit.answer", operation=operation, status=status, attempt=attempt)
            if 200 <= status < 300:
                return response
            if status != 429 and status < 500:
                raise _refusal(operation, response, config.party_id, idempotency_key)
            last_problem = f"HTTP {status}"
            log.warning("billit.transient", operation=operation, status=status)
            if status >= 500 and not repeatable:
                raise BillitOutcomeUnknown(f"{operation}: Billit answered {status}")
            wait = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
            if wait is not None and wait > config.backoff_max_seconds:
                # Longer than we wait in-line: hand the time back to the caller's scheduler.
                raise BillitUnavailable(
                    f"{operation}: Billit asked to retry after {wait:.0f} s", retry_after=wait
                )
            await self._pause(attempt, wait)
        raise BillitUnavailable(
            f"{operation}: gave up after {config.max_attempts} attempts ({last_problem})"
        )


def _refusal(
    operation: str, response: httpx.Response, party_id: str, idempotency_key: str | None
) -> BillitError:
    """The error for a 4xx other than 429: what went wrong and whose move it is."""
    status = response.status_code
    errors = _error_items(response)
    if status in {401, 403, 404}:
        return BillitConfigurationError(
            f"{operation}: Billit answered {status} for PartyID {party_id} "
            "(check the API key, PartyID and base URL): "
            + "; ".join(f"{e.code}: {e.description}" for e in errors)
        )
    if status == 409:
        return BillitIdempotencyConflict(
            f"{operation}: idempotency key {idempotency_key} was already used"
        )
    return BillitBusinessError(status, errors)


class _OrderPage(_Model):
    items: list[BillitOrder] = Field(alias="Items", default_factory=list)
    next_page_link: str | None = Field(alias="NextPageLink", default=None)


def _json(response: httpx.Response) -> Any:
    try:
        return exact_json.loads(response.content)
    except ValueError as error:
        raise BillitMalformedResponse(
            f"Billit answered {response.status_code} with a body that is not JSON "
            f"({len(response.content)} bytes)"
        ) from error


def _parse(model: type[ModelT], response: httpx.Response) -> ModelT:
    data = _json(response)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise BillitMalformedResponse(
            f"Billit's answer does not fit {model.__name__}: {problems}"
        ) from error


def _error_items(response: httpx.Response) -> list[BillitErrorItem]:
    try:
        data = exact_json.loads(response.content) if response.content else None
    except ValueError:
        return []
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        items = []
        for raw in data["errors"]:
            try:
                items.append(BillitErrorItem.model_validate(raw))
            except ValidationError:
                continue
        return items
    return []
