"""The Billit calls the job executor makes, one function per job kind.

Each runs outside any transaction, under the executor's cap and rate limit for the target
``billit``, through ``BillitClient`` (typed models, in-line retries on 429/5xx). What a call
answers becomes the job's result (decimal strings, no floats); how it fails decides what the
executor does next:

- a business refusal (400 ``errors[]``) is a *result* (``refused``): the service decides;
- 401 is a configuration error: counted, and the job fails at once (no retry helps);
- anything retryable (429/5xx/network, an unreadable answer, an unknown status value) is a
  ``TransientJobError``: logged, counted, retried with backoff by the executor.

Payments are the one call Billit does not dedupe. A payment job therefore reads the order's
``ToPay`` first: equal to what it was before this payment → post it; already lowered by this
payment (a previous attempt's answer was lost, or its worker was killed) → done without
posting; anything else → fail for an operator. The service runs an invoice's payment reports
one at a time, so nothing else moves ``ToPay`` meanwhile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr

from services.einvoice_status.billit import (
    BillitBusinessError,
    BillitClient,
    BillitConfig,
    BillitConfigurationError,
    BillitMalformedResponse,
    BillitRetryableError,
    NewOrder,
    OrderPatch,
    Payment,
    idempotency_key,
)
from shared.runtime.jobs import JobCall, JobKind, PermanentJobError, TransientJobError
from shared.runtime.logging import get_logger

log = get_logger("einvoice.billit")
TARGET = "billit"
KINDS = ("participant", "create", "send", "poll", "payment", "paid")
ENDPOINTS = (
    "participant_information",
    "create_order",
    "list_orders",
    "get_order",
    "send_orders",
    "register_payment",
    "patch_order",
    "other",
)
_ROUTES = (
    ("GET", re.compile(r"^/v1/peppol/participantInformation/"), "participant_information"),
    ("POST", re.compile(r"^/v1/orders/commands/send$"), "send_orders"),
    ("POST", re.compile(r"^/v1/orders/\d+/payments$"), "register_payment"),
    ("POST", re.compile(r"^/v1/orders$"), "create_order"),
    ("GET", re.compile(r"^/v1/orders$"), "list_orders"),
    ("GET", re.compile(r"^/v1/orders/\d+$"), "get_order"),
    ("PATCH", re.compile(r"^/v1/orders/\d+$"), "patch_order"),
)


def endpoint_of(method: str, path: str) -> str:
    for route_method, pattern, name in _ROUTES:
        if method == route_method and pattern.search(path):
            return name
    return "other"


class BillitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "einvoice_billit_calls",
            "HTTP calls to Billit by endpoint and answer (status code, or timeout/error when "
            "no answer came).",
            ["endpoint", "status"],
            registry=registry,
        )
        self.unauthorized = Counter(
            "einvoice_billit_unauthorized",
            "Billit answered 401: the API key or a merchant's PartyID is wrong (configuration).",
            registry=registry,
        )
        self.bad_answers = Counter(
            "einvoice_billit_bad_answers",
            "Billit answers that could not be read (malformed JSON, unknown status values); "
            "the job is retried.",
            ["kind"],
            registry=registry,
        )
        self.jobs_retried = Counter(
            "einvoice_billit_jobs_retried",
            "Billit jobs run again after a transient failure (attempt 2 and later).",
            ["kind"],
            registry=registry,
        )
        self.jobs_failed = Counter(
            "einvoice_billit_jobs_failed",
            "Billit jobs that failed for good (operator: einvoice failed / jobs requeue).",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            self.bad_answers.labels(kind)
            self.jobs_retried.labels(kind)
            self.jobs_failed.labels(kind)
        for endpoint in ENDPOINTS[:-1]:
            self.calls.labels(endpoint, "200")


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts every HTTP exchange with Billit by endpoint and status (retries included)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: BillitMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request.method, request.url.path)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TimeoutException:
            self.metrics.calls.labels(endpoint, "timeout").inc()
            raise
        except httpx.TransportError:
            self.metrics.calls.labels(endpoint, "error").inc()
            raise
        self.metrics.calls.labels(endpoint, str(response.status_code)).inc()
        if response.status_code == 401:
            self.metrics.unauthorized.inc()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class BillitGateway:
    """One ``BillitClient`` per PartyID (Billit's ``PartyID`` header is per client)."""

    base_url: str
    api_key: SecretStr
    metrics: BillitMetrics
    read_timeout_seconds: float = 20.0
    max_attempts: int = 3
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 10.0
    _clients: dict[str, BillitClient] = field(default_factory=dict)

    def client(self, party_id: str) -> BillitClient:
        found = self._clients.get(party_id)
        if found is None:
            config = BillitConfig(
                base_url=self.base_url,
                api_key=self.api_key,
                party_id=party_id,
                read_timeout_seconds=self.read_timeout_seconds,
                max_attempts=self.max_attempts,
                backoff_base_seconds=self.backoff_base_seconds,
                backoff_max_seconds=self.backoff_max_seconds,
                # The executor's target holds the platform-wide cap and rate limit.
                max_concurrency=64,
                rate_per_second=1000.0,
            )
            transport = CountingTransport(httpx.AsyncHTTPTransport(), self.metrics)
            found = BillitClient(config, transport=transport)
            self._clients[party_id] = found
        return found

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # -- the job kinds ----------------------------------------------------------------------

    def kinds(self, *, max_attempts: int, timeout_seconds: float) -> list[JobKind]:
        performs = {
            "participant": self.participant,
            "create": self.create,
            "send": self.send,
            "poll": self.poll,
            "payment": self.payment,
            "paid": self.paid,
        }
        return [
            JobKind(name, TARGET, self._guarded(name, perform), max_attempts, timeout_seconds)
            for name, perform in performs.items()
        ]

    def _guarded(self, kind: str, perform: Any) -> Any:
        async def run(call: JobCall) -> dict[str, Any]:
            if call.job.attempt > 1:
                self.metrics.jobs_retried.labels(kind).inc()
            try:
                result: dict[str, Any] = await perform(call)
                return result
            except BillitConfigurationError as exc:
                log.error(
                    "billit_configuration_error", kind=kind, job_id=call.job.id, error=str(exc)
                )
                raise PermanentJobError(str(exc)) from exc
            except BillitMalformedResponse as exc:
                self.metrics.bad_answers.labels(kind).inc()
                log.warning("billit_bad_answer", kind=kind, job_id=call.job.id, error=str(exc))
                raise TransientJobError(str(exc)) from exc
            except BillitRetryableError as exc:
                log.info("billit_retryable", kind=kind, job_id=call.job.id, error=str(exc))
                raise TransientJobError(f"{type(exc).__name__}: {exc}") from exc
            except BillitBusinessError as exc:
                if kind in ("create", "send"):
                    return {"refused": "; ".join(exc.codes) or str(exc), "detail": str(exc)[:500]}
                raise PermanentJobError(str(exc)) from exc

        return run

    async def participant(self, call: JobCall) -> dict[str, Any]:
        payload = call.job.payload
        found = await self.client(payload["party_id"]).participant_information(
            str(payload["identifier"])
        )
        wanted = str(payload["document_type"])
        return {
            "registered": found.registered,
            "accepts": found.accepts(wanted),
            "document_type": wanted,
            "identifier": found.identifier,
        }

    async def create(self, call: JobCall) -> dict[str, Any]:
        payload = call.job.payload
        order = NewOrder.model_validate(payload["order"])
        outcome = await self.client(payload["party_id"]).create_or_find_order(
            order, idempotency_key=idempotency_key("create", order.external_provider_id)
        )
        return {"order_id": outcome.order_id, "created": outcome.created}

    async def send(self, call: JobCall) -> dict[str, Any]:
        payload = call.job.payload
        order_id = int(payload["order_id"])
        sent = await self.client(payload["party_id"]).send_orders(
            [order_id], idempotency_key=idempotency_key("send", str(order_id))
        )
        return {"sent_now": sent}

    async def poll(self, call: JobCall) -> dict[str, Any]:
        payload = call.job.payload
        order = await self.client(payload["party_id"]).get_order(int(payload["order_id"]))
        delivery = order.delivery
        result: dict[str, Any] = {
            "delivery_status": None if delivery is None else delivery.status.value,
            "responses": [
                {
                    "code": r.code,
                    "file_id": r.file_id,
                    "created_at": None if r.created_at is None else r.created_at.isoformat(),
                }
                for r in order.receiver_responses()
            ],
        }
        if delivery is not None:
            result["refused_reason_tc"] = delivery.refused_reason_tc
            result["refused_info"] = delivery.refused_info
            if delivery.delivered_at is not None:
                result["delivered_at"] = delivery.delivered_at.isoformat()
        return result

    async def payment(self, call: JobCall) -> dict[str, Any]:
        payload = call.job.payload
        client = self.client(payload["party_id"])
        order_id = int(payload["order_id"])
        amount = Decimal(payload["amount"])
        before, after = Decimal(payload["to_pay_before"]), Decimal(payload["to_pay_after"])
        order = await client.get_order(order_id)
        to_pay = order.to_pay
        if to_pay is None:
            raise TransientJobError("Billit's order shows no ToPay: cannot check the payment")
        if before != after and not order.paid:
            if to_pay == after:
                return {"note": "already registered (ToPay already lowered)"}
            if to_pay != before:
                raise PermanentJobError(
                    f"ToPay is {to_pay}, expected {before} before or {after} after this "
                    "payment: check the order in Billit before requeueing"
                )
        elif call.job.attempt > 1:
            # Marked paid, or nothing left to pay: ToPay cannot tell whether an earlier
            # attempt registered this payment, and posting twice is the worse mistake.
            raise PermanentJobError(
                "ToPay cannot show whether an earlier attempt registered this payment "
                "(order paid or nothing left to pay): check the order in Billit, then requeue"
            )
        await client.register_payment(
            order_id,
            Payment(
                amount=amount,
                description=str(payload["description"]),
                on=date.fromisoformat(payload["date"]),
            ),
            idempotency_key=idempotency_key("payment", call.job.id),
        )
        return {"note": "registered"}

    async def paid(self, call: JobCall) -> dict[str, Any]:
        payload = call.job.payload
        paid_on = date.fromisoformat(payload["paid_date"])
        await self.client(payload["party_id"]).patch_order(
            int(payload["order_id"]),
            OrderPatch(
                paid=True,
                paid_date=datetime.combine(paid_on, time(0, 0)),
                payment_method="Wired",
            ),
            idempotency_key=idempotency_key("paid", call.job.id),
        )
        return {"note": "marked paid"}
