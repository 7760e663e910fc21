"""HTTP face of the Billit sandbox simulator: Billit's routes, then the test-only ``/_sim`` ones.

Each Billit call goes through one path: take the next fault scripted for its endpoint, check
the API key and PartyID, check the idempotency key, apply the call to ``SandboxState``, store
the key only if that succeeded, then answer (or lose the answer, as the fault says). Calls are
counted per endpoint and answer status so tests can read what the server saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from services.einvoice_status import exact_json
from services.einvoice_status.simulator.state import (
    IDEMPOTENT_ENDPOINTS,
    BillitFailure,
    Fault,
    Participant,
    SandboxState,
    Script,
    bad_request,
)

IDEMPOTENCY_HEADERS = ("Idempotency-Key", "Idempotent-Key")
Operation = Callable[[Request, str, Any], Any]


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(exact_json.dumps(value), status, headers, media_type="application/json")


class DroppedResponse(Response):
    """Sends the status line and headers, then closes the connection before any body: the
    client sees the server die mid-answer after the work was done."""

    def __init__(self) -> None:
        super().__init__(b"", 200, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        # Returning without the body makes uvicorn close the connection.


class HangingResponse(Response):
    """Never answers: waits until the client gives up and disconnects (a timeout after commit)."""

    def __init__(self) -> None:
        super().__init__(b"", 200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def build_app(state: SandboxState) -> Starlette:
    return Starlette(routes=[*_billit_routes(state), *_admin_routes(state)])


def _endpoint(state: SandboxState, name: str, operation: Operation, *, read_body: bool) -> Any:
    async def endpoint(request: Request) -> Response:
        state.in_flight[name] += 1
        state.max_in_flight[name] = max(state.max_in_flight[name], state.in_flight[name])
        try:
            label, response = await _serve(state, name, operation, request, read_body=read_body)
        finally:
            state.in_flight[name] -= 1
        state.calls[name][label] += 1
        return response

    return endpoint


async def _serve(
    state: SandboxState, name: str, operation: Operation, request: Request, *, read_body: bool
) -> tuple[str, Response]:
    """One Billit call; answers with the label it is counted under and the response."""
    fault = state.take_fault(name)
    if fault is not None and fault.kind == "slow":
        await asyncio.sleep(fault.delay_seconds)
    if fault is not None and fault.kind == "status":
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        failure = BillitFailure(fault.status, "SimulatedFault", "Injected by the simulator.")
        return str(fault.status), json_response(failure.body(), fault.status, headers)
    for header in ("StrictTransportType", *IDEMPOTENCY_HEADERS):
        if header in request.headers:
            state.headers_seen[name][header] += 1
    key: str | None = None
    try:
        party_id = state.authenticate(_api_key(request), request.headers.get("PartyID"))
        body: Any = None
        if read_body:
            try:
                body = exact_json.loads(await request.body())
            except ValueError:
                raise bad_request("The request body is not valid JSON.") from None
        if name in IDEMPOTENT_ENDPOINTS:
            key = _idempotency_key(request)
            state.check_idempotency_key(party_id, key)
        result = operation(request, party_id, body)
    except BillitFailure as failure:
        return str(failure.status), json_response(failure.body(), failure.status)
    state.store_idempotency_key(party_id, key)  # only now: Billit keeps keys of successes only
    if fault is not None and fault.kind == "lost_response":
        return "lost", HangingResponse() if fault.mode == "hang" else DroppedResponse()
    if fault is not None and fault.kind == "malformed_json":
        text = exact_json.dumps(result)
        return "malformed", Response(b"{" + text[: max(len(text) // 2, 1)], 200)
    if fault is not None and fault.kind == "replace_body":
        return "replaced", Response(fault.body.encode(), fault.status)
    if result is None:
        return "200", Response(b"", 200)
    return "200", json_response(result)


def _billit_routes(state: SandboxState) -> list[Route]:
    def api(name: str, operation: Operation, *, read_body: bool = False) -> Any:
        return _endpoint(state, name, operation, read_body=read_body)

    def participant_information(request: Request, party_id: str, body: Any) -> Any:
        return state.participant_information(request.path_params["identifier"])

    def create_order(request: Request, party_id: str, body: Any) -> Any:
        return state.create_order(party_id, body)

    def list_orders(request: Request, party_id: str, body: Any) -> Any:
        params = request.query_params
        top = _int_param(params.get("$top"), 120, "$top")
        skip = _int_param(params.get("$skip"), 0, "$skip")
        items, more = state.list_orders(party_id, params.get("$filter"), top, skip)
        next_link = None
        if more:
            next_link = str(request.url.include_query_params(**{"$skip": str(skip + top)}))
        return {"Items": items, "NextPageLink": next_link}

    def get_order(request: Request, party_id: str, body: Any) -> Any:
        return state.get_order(party_id, request.path_params["order_id"])

    def send_orders(request: Request, party_id: str, body: Any) -> Any:
        state.send_orders(party_id, body)
        return "OK"

    def register_payment(request: Request, party_id: str, body: Any) -> Any:
        state.register_payment(party_id, request.path_params["order_id"], body)

    def patch_order(request: Request, party_id: str, body: Any) -> Any:
        state.patch_order(party_id, request.path_params["order_id"], body)

    return [
        Route(
            "/v1/peppol/participantInformation/{identifier}",
            api("participant_information", participant_information),
            methods=["GET"],
        ),
        Route("/v1/orders", api("list_orders", list_orders), methods=["GET"]),
        Route("/v1/orders", api("create_order", create_order, read_body=True), methods=["POST"]),
        Route(
            "/v1/orders/commands/send",
            api("send_orders", send_orders, read_body=True),
            methods=["POST"],
        ),
        Route("/v1/orders/{order_id:int}", api("get_order", get_order), methods=["GET"]),
        Route(
            "/v1/orders/{order_id:int}",
            api("patch_order", patch_order, read_body=True),
            methods=["PATCH"],
        ),
        Route(
            "/v1/orders/{order_id:int}/payments",
            api("register_payment", register_payment, read_body=True),
            methods=["POST"],
        ),
    ]


def _admin_routes(state: SandboxState) -> list[Route]:
    def admin(work: Callable[[Request, Any], Awaitable[Any] | Any]) -> Any:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = exact_json.loads(raw) if raw else None
                result = work(request, body)
                if asyncio.iscoroutine(result):
                    result = await result
            except ValueError as error:
                return json_response(
                    {"errors": [{"Code": "BadJSON", "Description": str(error)}]}, 400
                )
            except BillitFailure as failure:
                return json_response(failure.body(), failure.status)
            return json_response(result if result is not None else {"ok": True})

        return endpoint

    def clock(request: Request, body: Any) -> Any:
        if request.method == "POST":
            if not isinstance(body, dict):
                raise bad_request('clock wants {"advance_seconds": n} or {"set": "<iso>"}')
            if "set" in body:
                state.set_clock(datetime.fromisoformat(str(body["set"])))
            if "advance_seconds" in body:
                state.advance(float(body["advance_seconds"]))
        return {"now": state.now.isoformat(timespec="milliseconds")}

    def faults(request: Request, body: Any) -> Any:
        if request.method == "DELETE":
            state.faults.clear()
        elif request.method == "POST":
            for raw in body if isinstance(body, list) else [body]:
                state.add_fault(Fault.parse(raw))
        return {"faults": [fault.describe() for fault in state.faults]}

    def participants(request: Request, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("Identifier"), str):
            raise bad_request("participant wants Identifier, DocumentTypes, optional script")
        kinds = body.get("DocumentTypes", ["BISv3Invoice", "IMR", "MLR", "BISv3CreditNote"])
        script = Script.parse(body["script"]) if "script" in body else None
        participant = Participant(body["Identifier"], tuple(str(k) for k in kinds))
        if script is not None:
            participant = Participant(participant.identifier, participant.document_types, script)
        state.add_participant(participant)
        return {"Identifier": participant.identifier}

    def order_script(request: Request, body: Any) -> Any:
        state.set_order_script(request.path_params["order_id"], Script.parse(body))

    def counters(request: Request, body: Any) -> Any:
        return state.counters()

    def reset(request: Request, body: Any) -> Any:
        state.reset()

    return [
        Route("/_sim/clock", admin(clock), methods=["GET", "POST"]),
        Route("/_sim/faults", admin(faults), methods=["GET", "POST", "DELETE"]),
        Route("/_sim/participants", admin(participants), methods=["POST"]),
        Route("/_sim/orders/{order_id:int}/script", admin(order_script), methods=["PUT"]),
        Route("/_sim/counters", admin(counters), methods=["GET"]),
        Route("/_sim/reset", admin(reset), methods=["POST"]),
    ]


def _api_key(request: Request) -> str | None:
    key = request.headers.get("ApiKey")
    if key is None:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            key = authorization.removeprefix("Bearer ").strip()
    return key


def _idempotency_key(request: Request) -> str | None:
    values = {request.headers[h] for h in IDEMPOTENCY_HEADERS if h in request.headers}
    if len(values) > 1:
        raise bad_request("Idempotency-Key and Idempotent-Key differ.")
    return values.pop() if values else None


def _int_param(text: str | None, default: int, name: str) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise bad_request(f"{name} must be an integer.") from None
