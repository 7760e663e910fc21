"""Events and waits for the dunning tests (integration, e2e, demo-free): what shipping and
reconciliation would publish, ticks at a Berlin wall-clock time, and "the worker has done
everything this tick caused"."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.asynchronous.database import AsyncDatabase

from shared import topics
from shared.events import (
    Allocation,
    CreditNoteAccepted,
    DunningHandedOver,
    DunningNotice,
    DunningPauseRequested,
    InvoiceIssued,
    InvoiceSettled,
    InvoiceStateChanged,
    PaymentAllocated,
)
from tests import examples as ex
from tests.harness import Bus

BERLIN = ZoneInfo("Europe/Berlin")
VIBAN = "DE02120300000000202051"
GROSS = "1190.00"


def berlin(day: date, hour: int = 9, minute: int = 0) -> datetime:
    """An instant given as a Berlin wall-clock time, in UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=BERLIN).astimezone(UTC)


def issued(order_id: str, due_on: date, gross: str = GROSS, viban: str = VIBAN) -> InvoiceIssued:
    return InvoiceIssued(
        invoice_number=f"INV-{order_id}",
        order_id=order_id,
        merchant_id="m-1",
        amount=ex.amount(gross),
        issued_on=date(2026, 12, 1),
        due_on=due_on,
        viban=viban,
        debtor_company_id="c-1",
    )


def paid(order_id: str, amount: str, transaction_id: str, viban: str = VIBAN) -> PaymentAllocated:
    return PaymentAllocated(
        transaction_id=transaction_id,
        creditor_iban=viban,
        allocations=[Allocation(invoice_number=f"INV-{order_id}", amount=Decimal(amount))],
        overpayment=Decimal("0.00"),
        unallocated=Decimal("0.00"),
    )


def settled(order_id: str) -> InvoiceSettled:
    return InvoiceSettled(
        invoice_number=f"INV-{order_id}",
        order_id=order_id,
        settled_on=date(2027, 1, 1),
        paid_total=Decimal(GROSS),
    )


def canceled(order_id: str) -> InvoiceStateChanged:
    return InvoiceStateChanged.model_validate(
        {
            "invoice_number": f"INV-{order_id}",
            "order_id": order_id,
            "from": "late",
            "to": "canceled",
        }
    )


def credited(
    order_id: str, gross: str, invoice_gross: str, number: str = "CN-1"
) -> CreditNoteAccepted:
    return CreditNoteAccepted(
        order_id=order_id,
        merchant_id="m-1",
        invoice_number=f"INV-{order_id}",
        credit_note_number=number,
        amount=ex.amount(gross),
        invoice_gross=Decimal(invoice_gross),
    )


def pause(order_id: str, by: str = "merchant", reason: str = "") -> DunningPauseRequested:
    return DunningPauseRequested.model_validate(
        {
            "order_id": order_id,
            "invoice_number": f"INV-{order_id}",
            "requested_by": by,
            "reason": reason,
        }
    )


async def quiet(
    db: AsyncDatabase[dict[str, Any]], event_ids: list[str], timeout: float = 60.0
) -> None:
    """Until the worker has handled ``event_ids`` and every step timer a tick fired has been
    acted on (no timer is left in state ``fired``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        handled = await db["inbox"].count_documents({"_id": {"$in": event_ids}})
        fired = await db["timers"].count_documents({"state": "fired"})
        if handled == len(set(event_ids)) and fired == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, (
            f"not quiet: {handled}/{len(event_ids)} handled, {fired} timers fired"
        )
        await asyncio.sleep(0.05)


Step = tuple[
    str, int, date, int, str
]  # (order, level 1-3 or 4 = hand-over, day, days overdue, amount)


async def steps_sent(bus: Bus, *, settle: float = 0.0, count: int | None = None) -> list[Step]:
    """Every notice and hand-over on the topics, as (order, level, day sent, days overdue,
    amount), the hand-over as level 4 with the days since its due date left 0."""
    notices = await bus.events(topics.DUNNING_NOTICES, timeout=5.0, settle=settle)
    handed = await bus.events(topics.DUNNING_HANDED_OVER, timeout=5.0, settle=0.0)
    found: list[Step] = []
    for event in notices:
        n = event.data
        assert isinstance(n, DunningNotice)
        found.append(
            (
                n.order_id,
                n.level,
                event.time.astimezone(BERLIN).date(),
                n.days_overdue,
                str(n.amount_due),
            )
        )
    for event in handed:
        h = event.data
        assert isinstance(h, DunningHandedOver)
        found.append((h.order_id, 4, h.handed_over_on, 0, str(h.amount_due)))
    return sorted(found)
