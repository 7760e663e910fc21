"""The Billit sandbox simulator's in-memory world: pure and synchronous, time passed in.

Everything an HTTP call can change lives in ``SandboxState``; ``app.py`` only translates HTTP
to these methods and back. The clock is simulated: nothing here reads the wall clock, tests move
it through the admin API. An order's delivery status and receiver messages are not stored as
they happen: they are computed from the order's send time, its script and the current clock,
so moving the clock forward (or back) shows exactly what Billit would show at that moment.

Billit's behaviour follows /work/shared/notes/billit-peppol.md. Where the notes mark a point as
an assumption [A], this simulator does this:

- Idempotency keys (``Idempotency-Key`` or ``Idempotent-Key``, alphanumeric) are honoured on
  ``POST /v1/orders`` and ``POST /v1/orders/commands/send``, scoped per PartyID, stored only
  after success; any reuse of a stored key answers 409 ``Idempotent token already exists``
  whatever the body (the notes: Billit does not compare bodies). ``/payments`` never dedupes,
  with or without a key (the notes' [A]); PATCH is idempotent by nature.
- ``GET /v1/orders`` answers ``{"Items": [...], "NextPageLink": url|null}``; ``$filter`` takes
  ``Field eq 'value'`` clauses joined by ``and`` on ExternalProviderID, OrderNumber, IsSent
  (``eq true|false``) and LastModified (``eq|ge|gt|le|lt``); ``$top`` ≤ 120 (default 120),
  ``$skip``.
- Totals: each line's excl = Quantity × UnitPriceExcl and its VAT = excl × VATPercentage/100,
  each rounded half-up to the cent per line; ToPay = total incl − registered payments (not
  below zero), and 0 once Paid. OrderStatus: ToSend → ToPay (sent) → Paid (PATCH Paid=true).
- A duplicate OrderNumber without a key creates a second order.
- Re-sending a sent order: 400 ``GenericError``. A send with several OrderIDs is checked
  whole before any is sent.
- Before send ``CurrentDocumentDeliveryDetails`` is null; after send it is ``Pending`` until the
  script's delivery time, then ``Delivered`` (receiver messages follow) or ``Error`` (refusal
  reason, no receiver messages). DocumentDeliveryInfo is localised Dutch text on purpose.
- Timestamps are naive local times (Europe/Brussels per the notes), as Billit writes them.
- Payments answer 200 with an empty body; PATCH answers 200 with an empty body.
- 401 bodies carry ``errors[]`` with Code ``Unauthorized``.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

CENT = Decimal("0.01")
MAX_PAGE = 120
IDEMPOTENT_ENDPOINTS = frozenset({"create_order", "send_orders"})
ENDPOINTS = (
    "participant_information",
    "create_order",
    "list_orders",
    "get_order",
    "send_orders",
    "register_payment",
    "patch_order",
)
RESPONSE_RANK = {"AB": 0, "IP": 1, "UQ": 2, "CA": 3, "RE": 4, "AP": 5, "PD": 6}
REASON_REQUIRED = frozenset({"UQ", "CA", "RE"})
DEFAULT_TEXT = {
    "AB": "The document has been successfully received.",
    "IP": "The document is being processed.",
    "UQ": "The document is under query.",
    "CA": "The document has been conditionally accepted.",
    "RE": "The document has been rejected.",
    "AP": "The document has been accepted.",
    "PD": "Payment of the invoice has been initiated.",
}
PATCHABLE = frozenset(
    {
        "Paid",
        "PaidDate",
        "IsSent",
        "ApprovalStatus",
        "AccountCode",
        "InternalInfo",
        "Invoiced",
        "AccountantVerificationNeeded",
    }
)
PAYMENT_METHODS = frozenset(
    {"Other", "Visa", "Bancontact", "Contant", "Wired", "Online", "Domiciliation", "PrivateAccount"}
)
_ALNUM = re.compile(r"^[A-Za-z0-9]+$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


class BillitFailure(Exception):
    """An answer other than 200, with Billit's ``errors[]`` body."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"errors": [{"Code": self.code, "Description": self.description}]}


def bad_request(description: str, code: str = "GenericError") -> BillitFailure:
    return BillitFailure(400, code, description)


def unauthorized(
    description: str = "You are not authorized to access this resource.",
) -> BillitFailure:
    return BillitFailure(401, "Unauthorized", description)


# ---------------------------------------------------------------------------------------------
# Scripts: what the receiver's access point and the receiver do after a send


@dataclass(frozen=True)
class ScriptedResponse:
    code: str
    after_seconds: int  # counted from delivery
    text: str
    reason: str | None = None


@dataclass(frozen=True)
class Script:
    delivery_after_seconds: int = 60
    refuse_reason_tc: str | None = None
    refuse_info: str | None = None
    responses: tuple[ScriptedResponse, ...] = ()

    @staticmethod
    def parse(raw: Any) -> Script:
        """A script from admin JSON; refuses one that breaks the BIS response order."""
        if not isinstance(raw, dict):
            raise bad_request("script must be an object")
        delivery_after = raw.get("delivery_after_seconds", 60)
        if not isinstance(delivery_after, int) or delivery_after < 0:
            raise bad_request("delivery_after_seconds must be a non-negative integer")
        refuse = raw.get("refuse")
        reason_tc = info = None
        if refuse is not None:
            if not isinstance(refuse, dict) or not isinstance(refuse.get("reason_tc"), str):
                raise bad_request("refuse must be {reason_tc, info}")
            reason_tc = refuse["reason_tc"]
            info = str(refuse.get("info", ""))
        responses: list[ScriptedResponse] = []
        for item in raw.get("responses", []):
            if not isinstance(item, dict) or item.get("code") not in RESPONSE_RANK:
                raise bad_request(f"unknown response code in {item!r}")
            after = item.get("after_seconds")
            if not isinstance(after, int) or after < 0:
                raise bad_request("after_seconds must be a non-negative integer")
            code = item["code"]
            reason = item.get("reason")
            if code in REASON_REQUIRED and not reason:
                raise bad_request(f"{code} needs a reason (OP-BR111)")
            responses.append(
                ScriptedResponse(code, after, str(item.get("text", DEFAULT_TEXT[code])), reason)
            )
        _check_bis_order(responses)
        if reason_tc is not None and responses:
            raise bad_request("a refused document gets no receiver responses")
        return Script(delivery_after, reason_tc, info, tuple(responses))


def _check_bis_order(responses: list[ScriptedResponse]) -> None:
    """AB→IP→UQ→CA→RE→AP→PD: never backwards, only UQ repeats, nothing after RE or a final PD."""
    previous: ScriptedResponse | None = None
    for response in responses:
        if previous is not None:
            if previous.after_seconds > response.after_seconds:
                raise bad_request("responses must be in time order")
            if previous.code == "RE" or (previous.code == "PD" and previous.reason != "PPD"):
                raise bad_request(f"nothing may follow a final {previous.code}")
            rank, last = RESPONSE_RANK[response.code], RESPONSE_RANK[previous.code]
            if rank < last or (rank == last and response.code not in {"UQ", "PD"}):
                raise bad_request(f"{response.code} may not follow {previous.code}")
        previous = response


DEFAULT_SCRIPT = Script(
    delivery_after_seconds=60,
    responses=(ScriptedResponse("AB", 90, DEFAULT_TEXT["AB"]),),
)


# ---------------------------------------------------------------------------------------------
# Participants


@dataclass(frozen=True)
class Participant:
    identifier: str  # scheme:value, e.g. 0208:0563846944
    document_types: tuple[str, ...]
    script: Script = DEFAULT_SCRIPT

    def aliases(self) -> set[str]:
        scheme, _, value = self.identifier.partition(":")
        names = {self.identifier.upper()}
        digits = value.upper().removeprefix("BE")
        if scheme in {"0208", "9925"} and len(digits) == 10 and digits.isdigit():
            names |= {f"0208:{digits}", f"9925:BE{digits}", f"BE{digits}", digits}
        return names


def lookup_names(identifier: str) -> set[str]:
    """The registry names one participant id may be written as (with or without a scheme)."""
    text = identifier.strip().upper().replace(".", "").replace(" ", "")
    names = {text}
    value = text.partition(":")[2] if ":" in text else text
    digits = value.removeprefix("BE")
    if len(digits) == 10 and digits.isdigit():
        names |= {f"0208:{digits}", f"BE{digits}", digits}
    return names


# ---------------------------------------------------------------------------------------------
# Faults


FaultKind = Literal["status", "slow", "lost_response", "malformed_json", "replace_body"]


@dataclass
class Fault:
    endpoint: str  # one of ENDPOINTS or "*"
    kind: FaultKind
    remaining: int
    status: int = 500
    retry_after: str | None = None
    delay_seconds: float = 0.0
    mode: Literal["drop", "hang"] = "drop"
    body: str = ""

    @staticmethod
    def parse(raw: Any) -> Fault:
        if not isinstance(raw, dict):
            raise bad_request("fault must be an object")
        endpoint = raw.get("endpoint", "*")
        kind = raw.get("kind")
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise bad_request(f"unknown endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)}")
        if kind not in {"status", "slow", "lost_response", "malformed_json", "replace_body"}:
            raise bad_request(f"unknown fault kind {kind!r}")
        count = raw.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise bad_request("count must be a positive integer")
        mode = raw.get("mode", "drop")
        if mode not in {"drop", "hang"}:
            raise bad_request("mode must be drop or hang")
        retry_after = raw.get("retry_after")
        return Fault(
            endpoint=endpoint,
            kind=kind,
            remaining=count,
            status=int(raw.get("status", 500)),
            retry_after=None if retry_after is None else str(retry_after),
            delay_seconds=float(raw.get("delay_seconds", 0)),
            mode=mode,
            body=str(raw.get("body", "")),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "kind": self.kind,
            "remaining": self.remaining,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_seconds": str(self.delay_seconds),
            "mode": self.mode,
        }


# ---------------------------------------------------------------------------------------------
# Orders


@dataclass
class Payment:
    amount: Decimal
    description: str
    on: date
    registered_at: datetime


@dataclass
class Order:
    order_id: int
    party_id: str
    body: dict[str, Any]
    created_at: datetime
    modified_at: datetime
    lines: list[dict[str, Any]]
    total_excl: Decimal
    total_vat: Decimal
    iban: str | None
    payment_reference: str
    script: Script | None = None  # overrides the participant's
    sent_at: datetime | None = None
    destination: str | None = None
    outgoing_file_id: str = ""
    response_file_ids: list[str] = field(default_factory=list)
    active_script: Script | None = None
    payments: list[Payment] = field(default_factory=list)
    patched: dict[str, Any] = field(default_factory=dict)

    @property
    def external_provider_id(self) -> str | None:
        value = self.body.get("ExternalProviderID")
        return value if isinstance(value, str) else None

    @property
    def paid(self) -> bool:
        return bool(self.patched.get("Paid", False))

    def view(self, now: datetime) -> dict[str, Any]:
        """The order exactly as ``GET /v1/orders/{id}`` shows it at ``now``."""
        total_incl = self.total_excl + self.total_vat
        paid_so_far = sum((p.amount for p in self.payments), Decimal(0))
        to_pay = Decimal("0.00") if self.paid else max(total_incl - paid_so_far, Decimal("0.00"))
        details, messages, last_event = self._delivery(now)
        status = "Paid" if self.paid else ("ToPay" if self.sent_at is not None else "ToSend")
        body = self.body
        return {
            "OrderID": self.order_id,
            "OrderNumber": body.get("OrderNumber"),
            "OrderType": body.get("OrderType"),
            "OrderDirection": body.get("OrderDirection"),
            "OrderDate": body.get("OrderDate"),
            "ExpiryDate": body.get("ExpiryDate"),
            "Currency": body.get("Currency", "EUR"),
            "ExternalProviderID": self.external_provider_id,
            "PaymentReference": self.payment_reference,
            "IBAN": self.iban,
            "BIC": body.get("BIC"),
            "Customer": body.get("Customer"),
            "OrderLines": self.lines,
            "TotalExcl": self.total_excl,
            "TotalVAT": self.total_vat,
            "TotalIncl": total_incl,
            "ToPay": to_pay,
            "OrderStatus": status,
            "Paid": self.paid,
            "PaidDate": self.patched.get("PaidDate"),
            "PaymentMethod": self.patched.get("PaymentMethod"),
            "InternalInfo": self.patched.get("InternalInfo"),
            "IsSent": self.sent_at is not None or bool(self.patched.get("IsSent", False)),
            "Created": _stamp(self.created_at),
            "LastModified": _stamp(max(self.modified_at, last_event)),
            "CurrentDocumentDeliveryDetails": details,
            "Messages": messages,
        }

    def last_modified(self, now: datetime) -> datetime:
        return max(self.modified_at, self._delivery(now)[2])

    def _delivery(
        self, now: datetime
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], datetime]:
        if self.sent_at is None or self.active_script is None or now < self.sent_at:
            return None, [], self.modified_at
        script = self.active_script
        destination = self.destination
        messages: list[dict[str, Any]] = [
            {
                "FileID": self.outgoing_file_id,
                "CreationDate": _stamp(self.sent_at),
                "TransportType": "Peppol",
                "Success": True,
                "Trials": 1,
                "Destination": destination,
                "MessageDirection": "Outgoing",
            }
        ]
        delivered_at = self.sent_at + timedelta(seconds=script.delivery_after_seconds)
        last_event = self.sent_at
        if now < delivered_at:
            details: dict[str, Any] = {
                "DocumentDeliveryDate": None,
                "DocumentDeliveryInfo": "In behandeling",
                "IsDocumentDelivered": False,
                "DocumentDeliveryStatus": "Pending",
            }
            return details, messages, last_event
        last_event = delivered_at
        if script.refuse_reason_tc is not None:
            details = {
                "DocumentDeliveryDate": None,
                "DocumentDeliveryInfo": "Geweigerd",
                "IsDocumentDelivered": False,
                "DocumentDeliveryStatus": "Error",
                "DocumentRefusedDate": _stamp(delivered_at),
                "DocumentRefusedReasonTC": script.refuse_reason_tc,
                "DocumentRefusedInfo": script.refuse_info,
            }
            return details, messages, last_event
        details = {
            "DocumentDeliveryDate": _stamp(delivered_at),
            "DocumentDeliveryInfo": "Ontvangen",
            "IsDocumentDelivered": True,
            "DocumentDeliveryStatus": "Delivered",
        }
        for response, file_id in zip(script.responses, self.response_file_ids, strict=True):
            at = delivered_at + timedelta(seconds=response.after_seconds)
            if now < at:
                break
            last_event = at
            messages.append(
                {
                    "Description": f"{response.code}: {response.text}",
                    "FileID": file_id,
                    "Trials": 0,
                    "CreationDate": _stamp(at),
                    "TransportType": "Peppol",
                    "Success": True,
                    "Destination": destination,
                    "MessageDirection": "Incoming",
                }
            )
        return details, messages, last_event


def _stamp(moment: datetime) -> str:
    """Billit's timestamps: local time, milliseconds, no zone."""
    return moment.isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# The sandbox


@dataclass
class Credentials:
    api_keys: dict[str, frozenset[str]]  # API key -> PartyIDs it may act for
    bank_accounts: dict[str, list[str]]  # PartyID -> IBANs in MyBillit; the first is the default


def default_participants() -> list[Participant]:
    """A few Peppol test-network companies (ids from Billit's examples) and their scripts."""
    full = ("BISv3Invoice", "IMR", "MLR", "BISv3CreditNote")
    return [
        Participant(
            "0208:0563846944",
            full,
            Script(
                60,
                responses=(
                    ScriptedResponse("AB", 90, DEFAULT_TEXT["AB"]),
                    ScriptedResponse("AP", 3600, DEFAULT_TEXT["AP"]),
                    ScriptedResponse("PD", 86_400, DEFAULT_TEXT["PD"]),
                ),
            ),
        ),
        Participant("0208:0446725877", full),  # answers AB only, then never again
        Participant("0208:0437299999", ("IMR", "MLR")),  # on Peppol, but takes no invoices
    ]


class SandboxState:
    def __init__(
        self,
        *,
        start: datetime,
        credentials: Credentials,
        participants: list[Participant] | None = None,
    ) -> None:
        self._start = start
        self._credentials = credentials
        self._initial_participants = (
            default_participants() if participants is None else list(participants)
        )
        self.reset()

    def reset(self) -> None:
        self.now = self._start
        self.participants: dict[str, Participant] = {}
        for participant in self._initial_participants:
            self.add_participant(participant)
        self.orders: dict[int, Order] = {}
        self._next_order_id = 100_001
        self._idempotency: dict[str, set[str]] = defaultdict(set)
        self.faults: list[Fault] = []
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.headers_seen: dict[str, Counter[str]] = defaultdict(Counter)

    # -- admin -------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def set_clock(self, moment: datetime) -> None:
        self.now = moment

    def add_participant(self, participant: Participant) -> None:
        for name in participant.aliases():
            self.participants[name] = participant

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    def take_fault(self, endpoint: str) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint in {endpoint, "*"} and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def set_order_script(self, order_id: int, script: Script) -> None:
        order = self.orders.get(order_id)
        if order is None:
            raise BillitFailure(404, "NotFound", f"no order {order_id}")
        order.script = script

    def counters(self) -> dict[str, Any]:
        created: Counter[str] = Counter(
            order.external_provider_id or "" for order in self.orders.values()
        )
        return {
            "now": _stamp(self.now),
            "orders_created": len(self.orders),
            "orders_created_by_external_provider_id": dict(created),
            "payments_by_order": {
                str(order.order_id): [
                    {
                        "Amount": f"{payment.amount:f}",
                        "Description": payment.description,
                        "Date": payment.on.isoformat(),
                    }
                    for payment in order.payments
                ]
                for order in self.orders.values()
                if order.payments
            },
            "sends_by_order": {
                str(order.order_id): 1 for order in self.orders.values() if order.sent_at
            },
            "calls": {name: dict(by_status) for name, by_status in self.calls.items()},
            "max_in_flight": dict(self.max_in_flight),
            "headers_seen": {name: dict(seen) for name, seen in self.headers_seen.items()},
            "faults_pending": [fault.describe() for fault in self.faults],
        }

    # -- auth --------------------------------------------------------------------------------

    def authenticate(self, api_key: str | None, party_id: str | None) -> str:
        """The PartyID the call acts for; 401 on a wrong key or a PartyID the key may not use."""
        if api_key is None or api_key not in self._credentials.api_keys:
            raise unauthorized("Invalid API key.")
        if party_id is None or party_id not in self._credentials.api_keys[api_key]:
            raise unauthorized("This API key may not act for this PartyID.")
        return party_id

    def _own_order(self, party_id: str, order_id: int) -> Order:
        order = self.orders.get(order_id)
        if order is None or order.party_id != party_id:
            raise unauthorized()  # Billit answers 401, never 404, for an OrderID you may not see
        return order

    # -- idempotency -------------------------------------------------------------------------

    def check_idempotency_key(self, party_id: str, key: str | None) -> None:
        if key is None:
            return
        if not _ALNUM.fullmatch(key):
            raise bad_request("The idempotency key must be alphanumeric.")
        if key in self._idempotency[party_id]:
            raise BillitFailure(409, "Idempotent token already exists", f"Token {key} was used.")

    def store_idempotency_key(self, party_id: str, key: str | None) -> None:
        if key is not None:
            self._idempotency[party_id].add(key)

    # -- the API -----------------------------------------------------------------------------

    def participant_information(self, identifier: str) -> dict[str, Any]:
        for name in lookup_names(identifier):
            participant = self.participants.get(name)
            if participant is not None:
                return {
                    "Registered": True,
                    "Identifier": participant.identifier,
                    "DocumentTypes": list(participant.document_types),
                    "ServiceDetails": [
                        {"DocumentType": kind, "TransportProfile": "peppol-transport-as4-v2_0"}
                        for kind in participant.document_types
                    ],
                }
        return {"Registered": False, "Identifier": None, "DocumentTypes": [], "ServiceDetails": []}

    def create_order(self, party_id: str, body: Any) -> int:
        if not isinstance(body, dict):
            raise bad_request("The request body must be an order object.")
        _require_choice(body, "OrderType", {"Invoice", "CreditNote"})
        _require_choice(body, "OrderDirection", {"Income", "Cost"})
        for name in ("OrderNumber", "OrderDate"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise bad_request(f"{name} is required.", code="MissingField")
        for name in ("OrderDate", "ExpiryDate"):
            if body.get(name) is not None:
                _parse_date(body[name], name)
        customer = body.get("Customer")
        if not isinstance(customer, dict) or not customer.get("Name"):
            raise bad_request("Customer.Name is required.", code="MissingField")
        raw_lines = body.get("OrderLines")
        if not isinstance(raw_lines, list) or not raw_lines:
            raise bad_request("At least one order line is required.", code="MissingField")
        lines: list[dict[str, Any]] = []
        total_excl = total_vat = Decimal("0.00")
        for raw in raw_lines:
            if not isinstance(raw, dict):
                raise bad_request("An order line must be an object.")
            quantity = _number(raw, "Quantity")
            unit_price = _number(raw, "UnitPriceExcl")
            vat_percentage = _number(raw, "VATPercentage")
            excl = (quantity * unit_price).quantize(CENT, rounding=ROUND_HALF_UP)
            vat = (excl * vat_percentage / 100).quantize(CENT, rounding=ROUND_HALF_UP)
            total_excl += excl
            total_vat += vat
            lines.append({**raw, "AmountExcl": excl, "AmountVAT": vat, "AmountIncl": excl + vat})
        accounts = self._credentials.bank_accounts.get(party_id, [])
        iban = body.get("IBAN")
        if iban not in accounts:  # not in MyBillit's bank list: Billit uses the default account
            iban = accounts[0] if accounts else None
        order_id = self._next_order_id
        self._next_order_id += 1
        reference = body.get("PaymentReference") or _structured_reference(order_id)
        self.orders[order_id] = Order(
            order_id=order_id,
            party_id=party_id,
            body=dict(body),
            created_at=self.now,
            modified_at=self.now,
            lines=lines,
            total_excl=total_excl,
            total_vat=total_vat,
            iban=iban,
            payment_reference=reference,
        )
        return order_id

    def get_order(self, party_id: str, order_id: int) -> dict[str, Any]:
        return self._own_order(party_id, order_id).view(self.now)

    def list_orders(
        self, party_id: str, filter_text: str | None, top: int, skip: int
    ) -> tuple[list[dict[str, Any]], bool]:
        if not 0 < top <= MAX_PAGE:
            raise bad_request(f"$top must be between 1 and {MAX_PAGE}.")
        if skip < 0:
            raise bad_request("$skip must not be negative.")
        clauses = _parse_filter(filter_text)
        matching = [
            order
            for order in sorted(self.orders.values(), key=lambda o: o.order_id)
            if order.party_id == party_id and all(_matches(order, c, self.now) for c in clauses)
        ]
        page = matching[skip : skip + top]
        return [order.view(self.now) for order in page], skip + top < len(matching)

    def send_orders(self, party_id: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise bad_request("The request body must be an object.")
        if body.get("Transporttype") != "Peppol":
            raise bad_request("Transporttype must be Peppol.", code="InvalidTransportType")
        order_ids = body.get("OrderIDs")
        if (
            not isinstance(order_ids, list)
            or not order_ids
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in order_ids)
        ):
            raise bad_request("OrderIDs must be a non-empty list of integers.")
        plan: list[tuple[Order, Participant]] = []
        for order_id in order_ids:
            order = self._own_order(party_id, order_id)
            if order.sent_at is not None:
                raise bad_request(f"Order {order_id} has already been sent.")
            participant = self._receiver(order)
            if participant is None:
                raise bad_request(
                    "The customer is not active on Peppol.", code="TheCustomerIsNotActiveOnPeppol"
                )
            wanted = (
                "BISv3CreditNote" if order.body["OrderType"] == "CreditNote" else "BISv3Invoice"
            )
            if wanted not in participant.document_types:
                raise bad_request(
                    "The customer does not support Peppol for this document type.",
                    code="TheCustomerDoesNotSupportPeppolForType_0",
                )
            plan.append((order, participant))
        for order, participant in plan:
            script = order.script or participant.script
            order.sent_at = self.now
            order.modified_at = self.now
            order.destination = participant.identifier
            order.active_script = script
            order.outgoing_file_id = str(uuid.uuid4())
            order.response_file_ids = [str(uuid.uuid4()) for _ in script.responses]

    def _receiver(self, order: Order) -> Participant | None:
        customer = order.body.get("Customer") or {}
        candidates = [customer.get("VATNumber"), customer.get("PeppolID")]
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                for name in lookup_names(candidate):
                    if name in self.participants:
                        return self.participants[name]
        return None

    def register_payment(self, party_id: str, order_id: int, body: Any) -> None:
        order = self._own_order(party_id, order_id)
        if not isinstance(body, dict):
            raise bad_request("The request body must be an object.")
        amount = _number(body, "Amount")
        if amount <= 0:
            raise bad_request("Amount must be greater than zero.", code="InvalidAmount")
        on = self.now.date() if body.get("Date") is None else _parse_date(body["Date"], "Date")
        order.payments.append(Payment(amount, str(body.get("Description", "")), on, self.now))
        order.modified_at = self.now

    def patch_order(self, party_id: str, order_id: int, body: Any) -> None:
        order = self._own_order(party_id, order_id)
        if not isinstance(body, dict) or not body:
            raise bad_request("The request body must be a non-empty object.")
        refused = sorted(set(body) - PATCHABLE - {"PaymentMethod"})
        if refused:
            raise bad_request(f"Not patchable: {', '.join(refused)}.", code="PropertyNotPatchable")
        if "Paid" in body and not isinstance(body["Paid"], bool):
            raise bad_request("Paid must be true or false.")
        if "PaidDate" in body:
            paid_date = body["PaidDate"]
            if not isinstance(paid_date, str) or not _DATE_TIME.fullmatch(paid_date):
                raise bad_request("PaidDate must be a date with a time.", code="InvalidDate")
        if "PaymentMethod" in body and body["PaymentMethod"] not in PAYMENT_METHODS:
            raise bad_request("Unknown PaymentMethod.", code="InvalidPaymentMethod")
        order.patched.update(body)
        order.modified_at = self.now


def _require_choice(body: dict[str, Any], name: str, choices: set[str]) -> None:
    if body.get(name) not in choices:
        raise bad_request(f"{name} must be one of {', '.join(sorted(choices))}.")


def _number(body: dict[str, Any], name: str) -> Decimal:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise bad_request(f"{name} must be a number.", code="InvalidNumber")
    return Decimal(value)


def _parse_date(value: Any, name: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise bad_request(f"{name} is not a date.", code="InvalidDate") from None


def _structured_reference(order_id: int) -> str:
    """A Belgian structured reference (OGM): 10 digits + their mod-97 check (97 for 0)."""
    base = f"{order_id:010d}"[-10:]
    check = int(base) % 97 or 97
    digits = f"{base}{check:02d}"
    return f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"


# ---------------------------------------------------------------------------------------------
# OData $filter, the part Billit's order list needs here

_CLAUSE = re.compile(
    r"\s*(?P<field>\w+)\s+(?P<op>eq|ge|gt|le|lt)\s+"
    r"(?:'(?P<single>(?:[^']|'')*)'|\"(?P<double>[^\"]*)\"|(?P<bare>true|false))\s*"
    r"(?P<tail>$|and\s+)",
    re.IGNORECASE,
)
FILTERABLE = {"ExternalProviderID", "OrderNumber", "IsSent", "LastModified"}


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    value: str


def _parse_filter(text: str | None) -> list[Clause]:
    if not text:
        return []
    clauses = []
    position = 0
    while position < len(text):  # clause by clause, so " and " inside a quoted value is data
        match = _CLAUSE.match(text, position)
        if match is None:
            raise bad_request(f"Cannot parse $filter at {text[position:]!r}.", code="InvalidFilter")
        position = match.end()
        if match["tail"] and position == len(text):
            raise bad_request("$filter ends with and.", code="InvalidFilter")
        name = match["field"]
        if name not in FILTERABLE:
            raise bad_request(f"Cannot filter on {name}.", code="InvalidFilter")
        op = match["op"].lower()
        if op != "eq" and name != "LastModified":
            raise bad_request(f"Only eq is supported on {name}.", code="InvalidFilter")
        value = next(v for v in (match["single"], match["double"], match["bare"]) if v is not None)
        if match["single"] is not None:
            value = value.replace("''", "'")  # OData doubles a quote inside a quoted string
        clauses.append(Clause(name, op, value))
    return clauses


def _matches(order: Order, clause: Clause, now: datetime) -> bool:
    if clause.field == "ExternalProviderID":
        return order.external_provider_id == clause.value
    if clause.field == "OrderNumber":
        return order.body.get("OrderNumber") == clause.value
    if clause.field == "IsSent":
        return (order.sent_at is not None) == (clause.value.lower() == "true")
    try:
        bound = datetime.fromisoformat(clause.value)
    except ValueError:
        raise bad_request("LastModified needs an ISO date-time.", code="InvalidFilter") from None
    modified = order.last_modified(now)
    return {
        "eq": modified == bound,
        "ge": modified >= bound,
        "gt": modified > bound,
        "le": modified <= bound,
        "lt": modified < bound,
    }[clause.op]
