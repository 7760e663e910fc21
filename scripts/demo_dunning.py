"""The demo's dunning act: four late invoices of merchant ``m-dunning`` moved through the whole
ladder by synthetic ticks, one a day at 09:00 Berlin time from 2027-08-01 to 2027-09-05 (the
invoices are due 2027-07-31, so day 1 overdue is 2027-08-01):

- ``o-3001`` goes the whole way: levels 1, 2, 3 on days 1, 14, 21, handed over on day 28;
- ``o-3002`` is paid in full after level 2 (day 14): by a bank transfer to its VIBAN when the
  reconciliation worker runs in the demo, else by publishing the allocation and settlement
  reconciliation would publish; nothing more goes out;
- ``o-3003`` is paused by the merchant on day 3 (days 3-9 paused): every later step 7 days later;
- ``o-3004`` is paused by ops on day 10 with a reason, through the ops command
  (``python -m shared.ops dunning pause``, which publishes ``dunning.pause_requested``).

After each tick the act waits until the dunning worker has handled it and acted on every step
timer it fired (read in the worker's database), so each step goes out on its day. The summary
shows every notice and hand-over against the expected day, the totals by level, and the
worker's own counters.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from scripts.processes import REPO, Fleet, Process
from shared import topics
from shared.events import (
    Allocation,
    BankTransactionReceived,
    DunningHandedOver,
    DunningNotice,
    DunningPauseRequested,
    EventData,
    InvoiceIssued,
    InvoiceSettled,
    PaymentAllocated,
)
from tests import examples as ex
from tests.harness import Bus

BERLIN = ZoneInfo("Europe/Berlin")
MERCHANT = "m-dunning"
SHIPPED_AT = datetime(2027, 7, 1, 9, 0, tzinfo=UTC)  # + 30 days: due 2027-07-31
DUE = date(2027, 7, 31)
FIRST_DAY, LAST_DAY = date(2027, 8, 1), date(2027, 9, 5)
GROSS = "1190.00"
ORDERS = {
    "o-3001": "the whole ladder, then collection",
    "o-3002": "paid in full after level 2",
    "o-3003": "paused by the merchant on day 3",
    "o-3004": "paused by ops on day 10",
}


def day(n: int) -> date:
    return DUE + timedelta(days=n)


# (order, step 1-3 = notice level, 4 = hand-over) -> the day it goes out, from the rules.
EXPECTED: dict[tuple[str, int], date] = {
    **{("o-3001", s): day(d) for s, d in ((1, 1), (2, 14), (3, 21), (4, 28))},
    **{("o-3002", s): day(d) for s, d in ((1, 1), (2, 14))},
    **{
        (o, s): day(d) for o in ("o-3003", "o-3004") for s, d in ((1, 1), (2, 21), (3, 28), (4, 35))
    },
}


def setup_events() -> tuple[list[EventData], list[EventData]]:
    """The merchant and one debtor per order (its own VIBAN), then the orders."""
    config: list[EventData] = [ex.merchant(MERCHANT, name="Dunning Demo Versand GmbH")]
    orders: list[EventData] = []
    for n, order_id in enumerate(ORDERS):
        company = ex.company(
            f"c-dunning-{n + 1}",
            name=f"Säumig {n + 1} Handel GmbH",
            registration_number=f"HRB 93{n:03d}",
            vat_id=None,
            address=ex.address(postal_code=f"2010{n}"),
        )
        config.append(company)
        orders.append(
            ex.order(order_id, merchant_id=MERCHANT, debtor=ex.debtor_of(company), gross=GROSS)
        )
    return config, orders


def berlin_morning(on: date) -> datetime:
    return datetime.combine(on, time(9), tzinfo=BERLIN).astimezone(UTC)


async def quiet(db: AsyncDatabase[dict[str, Any]], tick: datetime, within: float = 60) -> None:
    """Until the worker has handled ``tick`` and no step timer it fired waits to be acted on."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        clock = await db["clock"].find_one({"_id": "clock"})
        seen = clock is not None and clock["now"].replace(tzinfo=UTC) >= tick
        if seen and await db["timers"].count_documents({"state": "fired"}) == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the dunning worker did not finish the tick {tick}")
        await asyncio.sleep(0.05)


async def invoice_doc(
    db: AsyncDatabase[dict[str, Any]], order_id: str, check: Any, within: float = 60
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        doc = await db["invoices"].find_one({"order_id": order_id})
        if doc is not None and check(doc):
            return doc
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"dunning never showed {order_id} as expected: {doc}")
        await asyncio.sleep(0.1)


def ops_pause(fleet: Fleet, bus: Bus, database: str, order_id: str, reason: str) -> str:
    """The ops command, as an operator would run it; returns what it printed."""
    command = [sys.executable, "-m", "shared.ops", "dunning", "--database", database, "pause"]
    command += [order_id, f"INV-{order_id[2:]}", "--reason", reason, "--by", "ops"]
    command += ["--kafka", bus.bootstrap, "--topic-prefix", bus.prefix]
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        command,
        check=False,
        cwd=REPO,
        env={**os.environ, **fleet.env},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ops pause failed: {done.stderr}")
    return done.stdout.strip().splitlines()[0]


async def pay_in_full(bus: Bus, invoice: InvoiceIssued, *, reconciliation: bool, on: date) -> str:
    if reconciliation:
        await bus.send(
            BankTransactionReceived(
                transaction_id="tx-dunning-3002",
                creditor_iban=invoice.viban,
                amount=Decimal(GROSS),
                currency="EUR",
                booking_date=on,
                debtor_name="Säumig 2 Handel GmbH",
                debtor_iban="DE89370400440532013000",
                remittance_information=f"Rechnung {invoice.invoice_number}",
            )
        )
        return "a bank transfer to its VIBAN (reconciliation allocates it)"
    await bus.send(
        PaymentAllocated(
            transaction_id="tx-dunning-3002",
            creditor_iban=invoice.viban,
            allocations=[Allocation(invoice_number=invoice.invoice_number, amount=Decimal(GROSS))],
            overpayment=Decimal("0.00"),
            unallocated=Decimal("0.00"),
        )
    )
    await bus.send(
        InvoiceSettled(
            invoice_number=invoice.invoice_number,
            order_id=invoice.order_id,
            settled_on=on,
            paid_total=Decimal(GROSS),
        )
    )
    return "payments.allocated + invoices.settled published by the demo (no reconciliation worker)"


async def dunning_act(
    bus: Bus, fleet: Fleet, dunning: Process, *, reconciliation: bool
) -> tuple[int, list[str]]:
    """Returns (failures, lines of the summary)."""
    database = fleet.env["DUNNING_MONGODB_DATABASE"]
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        fleet.env["MONGODB_URI"], tz_aware=True
    )
    db = mongo[database]
    notes: list[str] = []
    try:
        config, orders = setup_events()
        for event in config:
            await bus.send(event)
        await asyncio.sleep(1.0)  # configuration first, as the gateway would
        await bus.send_many(orders)
        await bus.events(
            topics.ORDERS_DECIDED,
            count=len(orders),
            where=lambda e: e.subject in ORDERS and getattr(e.data, "state", "") == "created",
            timeout=60,
        )
        await bus.send_many(
            [
                ex.shipment(
                    o,
                    f"INV-{o[2:]}",
                    gross=GROSS,
                    shipped_at=SHIPPED_AT,
                )
                for o in ORDERS
            ]
        )
        issued = {
            e.data.order_id: e.data
            for e in await bus.events(
                topics.INVOICES_ISSUED,
                count=len(ORDERS),
                where=lambda e: e.subject in ORDERS,
                timeout=60,
            )
            if isinstance(e.data, InvoiceIssued)
        }
        for order_id in ORDERS:
            await invoice_doc(db, order_id, lambda d: True)
        print(f"demo: {len(issued)} invoices of {MERCHANT} due {DUE}; ticks from {FIRST_DAY}")

        today = FIRST_DAY
        while today <= LAST_DAY:
            tick = berlin_morning(today)
            await bus.tick(tick)
            await quiet(db, tick)
            n = (today - DUE).days
            if n == 3:
                await bus.send(
                    DunningPauseRequested(
                        order_id="o-3003",
                        invoice_number="INV-3003",
                        requested_by="merchant",
                        reason="debtor asked for a week",
                    )
                )
                await invoice_doc(db, "o-3003", lambda d: len(d["pauses"]) == 1)
                notes.append(f"  day 3: merchant paused INV-3003 ({today})")
            elif n == 10:
                line = await asyncio.to_thread(
                    ops_pause, fleet, bus, database, "o-3004", "debtor disputes delivery"
                )
                await invoice_doc(db, "o-3004", lambda d: len(d["pauses"]) == 1)
                notes.append(f"  day 10: ops paused INV-3004 ({today}): {line[:90]}…")
            elif n == 14:
                how = await pay_in_full(
                    bus, issued["o-3002"], reconciliation=reconciliation, on=today
                )
                await invoice_doc(db, "o-3002", lambda d: d["amount_due_cents"] == 0)
                notes.append(f"  day 14: INV-3002 paid in full by {how}")
            today += timedelta(days=1)

        notices = await bus.events(
            topics.DUNNING_NOTICES, where=lambda e: e.subject in ORDERS, settle=1.0, timeout=5
        )
        handed = await bus.events(
            topics.DUNNING_HANDED_OVER, where=lambda e: e.subject in ORDERS, timeout=5
        )
    finally:
        await mongo.close()
    return summary(notices, handed, notes, dunning)


def summary(
    notices: list[Any], handed: list[Any], notes: list[str], dunning: Process
) -> tuple[int, list[str]]:
    """Every step sent against the expected day, totals by level, the worker's counters."""
    got: dict[tuple[str, int], list[date]] = {}
    ids: dict[tuple[str, int], set[str]] = {}
    for e in notices:
        if isinstance(e.data, DunningNotice):
            key: tuple[str, int] = (e.data.order_id, e.data.level)
            got.setdefault(key, []).append(e.time.astimezone(BERLIN).date())
            ids.setdefault(key, set()).add(e.id)
    for e in handed:
        if isinstance(e.data, DunningHandedOver):
            handed_key = (e.data.order_id, 4)
            got.setdefault(handed_key, []).append(e.data.handed_over_on)
            ids.setdefault(handed_key, set()).add(e.id)

    failures = 0
    lines = ["", f"dunning ({MERCHANT}, due {DUE}, a tick every day {FIRST_DAY}..{LAST_DAY}):"]
    lines += notes
    for order_id, story in ORDERS.items():
        lines.append(f"  {order_id} {story}:")
        for step in (1, 2, 3, 4):
            want, sent = EXPECTED.get((order_id, step)), got.get((order_id, step), [])
            name = f"level {step}" if step < 4 else "hand-over"
            once = len(ids.get((order_id, step), set())) <= 1
            ok = (sent == [want] if want else sent == []) and once
            failures += not ok
            shown = ", ".join(map(str, sent)) or "none"
            lines.append(
                f"    {'ok ' if ok else 'BAD'} {name:9} expected {want or 'none'}, sent {shown}"
            )
    by_level = Counter(step for (_, step), days in got.items() for _ in days)
    want_level = Counter(step for (_, step) in EXPECTED)
    lines.append("  notices by level and hand-overs (expected):")
    for step in (1, 2, 3, 4):
        name = f"level {step}" if step < 4 else "hand-overs"
        ok = by_level[step] == want_level[step]
        failures += not ok
        lines.append(
            f"    {'ok ' if ok else 'BAD'} {name:10} {by_level[step]} ({want_level[step]})"
        )
    _, text = dunning.get("/metrics")
    counters = re.compile(
        r"dunning_(notices_total|handed_over_total|pauses_total|commands_rejected_total|invoices_overdue)"
    )
    lines.append(
        "  from the dunning worker's /metrics (also counting the earlier acts' unpaid invoices,"
        " which the same ticks dun):"
    )
    lines += [
        f"    {line}"
        for line in text.splitlines()
        if counters.match(line) and not line.endswith(" 0.0")
    ]
    return failures, lines


async def run_dunning_act(bus: Bus, fleet: Fleet, dunning: Process) -> int:
    """The act as scripts/demo.py runs it, after the others; prints its summary and returns
    the number of unexpected outcomes. Pays by bank transfer when the fleet runs the
    reconciliation worker."""
    dunning.wait_ready()
    reconciliation = any(p.name.startswith("reconciliation") for p in fleet.processes)
    failures, lines = await dunning_act(bus, fleet, dunning, reconciliation=reconciliation)
    print("\n".join(lines))
    return failures
