"""Inputs and a clock for e-invoice tests: merchants, debtors, orders and invoices as the
other services publish them, and ``Drive``, which moves the Billit simulator's clock and our
synthetic ticks forward together and waits until the worker has nothing left in hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared import events as ev
from shared.runtime.jobs import outcome_event_id
from tests.billit_sandbox import SimAdmin
from tests.harness import Bus

ADDRESS = ev.Address(
    street="Rue de la Loi", house_number="16", postal_code="1000", city="Brussels", country="BE"
)


def merchant(
    merchant_id: str, *, billit: bool = True, party_id: str = "1001"
) -> ev.MerchantConfigured:
    return ev.MerchantConfigured(
        merchant_id=merchant_id,
        name=f"Merchant {merchant_id}",
        payout_iban="BE71096123456769",
        fee=ev.Fee(percent=Decimal("1.90"), fixed=Decimal("0.25")),
        einvoicing="billit" if billit else None,
        billit_party_id=party_id if billit else None,
    )


def company(company_id: str, vat_id: str) -> ev.CompanyRegistered:
    return ev.CompanyRegistered(
        company_id=company_id,
        name=f"Debtor {company_id}",
        legal_form="NV",
        registration_number=vat_id.removeprefix("BE"),
        vat_id=vat_id,
        address=ADDRESS,
        insolvent=False,
        score=80,
        financing_limit=Decimal("100000.00"),
    )


def line(description: str, quantity: int, unit: str, rate: str) -> ev.LineItem:
    return ev.LineItem(
        description=description, quantity=quantity, unit_price_net=Decimal(unit), vat_rate=rate
    )


def amount(gross: str, net: str, tax: str) -> ev.Amount:
    return ev.Amount(gross=Decimal(gross), net=Decimal(net), tax=Decimal(tax))


def order(
    order_id: str,
    merchant_id: str,
    vat_id: str,
    items: list[ev.LineItem],
    total: ev.Amount,
) -> ev.OrderRequested:
    return ev.OrderRequested(
        order_id=order_id,
        merchant_id=merchant_id,
        external_code=f"ext-{order_id}",
        amount=total,
        currency="EUR",
        duration_days=30,
        debtor=ev.Debtor(
            name=f"Debtor of {order_id}",
            legal_form="NV",
            registration_number=vat_id.removeprefix("BE"),
            vat_id=vat_id,
            address=ADDRESS,
        ),
        line_items=items,
    )


def issued(
    order_id: str, merchant_id: str, number: str, total: ev.Amount, *, company_id: str = "c-1"
) -> ev.InvoiceIssued:
    return ev.InvoiceIssued(
        invoice_number=number,
        order_id=order_id,
        merchant_id=merchant_id,
        amount=total,
        issued_on=date(2026, 6, 1),
        due_on=date(2026, 7, 1),
        viban=viban_of(order_id),
        debtor_company_id=company_id,
    )


def viban_of(order_id: str) -> str:
    digits = "".join(c for c in order_id if c.isdigit()).rjust(8, "0")[-8:]
    return f"BE00999{digits}0"


Db = AsyncDatabase[dict[str, Any]]


@dataclass
class Drive:
    """Our ticks and the simulator's clock, moved together."""

    bus: Bus
    sim: SimAdmin
    db: Db
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    offset: float = 0.0

    async def idle(self, timeout: float = 60.0) -> None:
        """Until no job is live, every ended job's outcome is handled, and no fired timer
        waits for its owner."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            live = await self.db["jobs"].count_documents({"ready_at": {"$exists": True}})
            fired = await self.db["timers"].count_documents({"state": "fired"})
            if live == 0 and fired == 0:
                ended = [
                    outcome_event_id(j["_id"], j.get("generation", 0), j["state"])
                    async for j in self.db["jobs"].find({"state": {"$in": ["succeeded", "failed"]}})
                ]
                handled = await self.db["inbox"].count_documents({"_id": {"$in": ended}})
                if handled == len(ended):
                    return
            if asyncio.get_running_loop().time() > deadline:
                jobs = await self.db["jobs"].find({"ready_at": {"$exists": True}}).to_list()
                timers = await self.db["timers"].find({"state": "fired"}).to_list()
                raise AssertionError(f"the worker did not settle: jobs {jobs}, timers {timers}")
            await asyncio.sleep(0.05)

    async def tick(self, seconds: float = 0.0) -> None:
        """Move both clocks by ``seconds``, tick, and wait until the tick's work is done."""
        if seconds:
            await self.sim.advance(seconds)
        self.offset += seconds
        tick_id = await self.bus.tick(self.start + timedelta(seconds=self.offset))
        deadline = asyncio.get_running_loop().time() + 60
        while await self.db["inbox"].count_documents({"_id": tick_id}) == 0:
            assert asyncio.get_running_loop().time() < deadline, "the tick was not handled"
            await asyncio.sleep(0.05)
        await self.idle()

    async def until(
        self,
        check: Callable[[], Awaitable[bool]],
        steps: tuple[float, ...] = (120, 120, 600, 3600, 3600, 86_400, 86_400),
        what: str = "condition",
    ) -> None:
        await self.idle()
        for seconds in (0.0, *steps):
            if seconds:
                await self.tick(seconds)
            if await check():
                return
        raise AssertionError(f"{what} did not happen within {sum(steps)} simulated seconds")


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "it"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
