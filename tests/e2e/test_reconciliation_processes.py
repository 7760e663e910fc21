"""Conservation on the real broker: every input delivered twice, the reconciliation worker
killed with SIGKILL mid-stream and restarted gracefully later. For every transaction, its
amount = allocations + forwarded + held + unmatched in every statement and at the end; no
invoice takes more than it is worth after credit notes; nothing is forwarded or settled
twice. The expected figures are written from the inputs by hand below, never by calling the
service's own functions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from scripts.processes import Fleet
from shared import topics
from shared.envelope import CloudEvent
from shared.events import (
    BankTransactionReceived,
    EventData,
    InvoiceSettled,
    PaymentAllocated,
    PaymentOverpaymentForwarded,
)
from tests import examples as ex
from tests import recon_examples as rx
from tests.e2e.fleets import fleet_for
from tests.harness import Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ACCOUNTS = 24
UNKNOWN = 4


def viban(i: int) -> str:
    return f"DE11CONS{i:014d}"


def credited(i: int) -> bool:
    return i % 4 == 1  # A credited by 20.00 after it was paid in full


def canceled(i: int) -> bool:
    return i % 5 == 2  # B canceled after it was paid


def expected_forwarded(i: int) -> Decimal:
    """180.00 paid: 100.00 naming A, 80.00 naming nothing (B takes 50.00, 30.00 is held).
    A credit note frees 20.00 of A; a cancel frees B's 50.00. Past the grace period every
    held cent is forwarded."""
    return (
        Decimal("30.00")
        + (Decimal("20.00") if credited(i) else 0)
        + (Decimal("50.00") if canceled(i) else 0)
    )


def invoice_worth(i: int, part: str) -> Decimal:
    if part == "A":
        return Decimal("80.00") if credited(i) else Decimal("100.00")
    return Decimal(0) if canceled(i) else Decimal("50.00")


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    # Small batches, so the kill lands between many commits, not after one.
    fleet = fleet_for(infra, namespace, tmp_path / "logs", "reconciliation", BATCH_MAX_RECORDS="15")
    yield fleet
    fleet.stop_all()


async def send_twice(bus: Bus, items: Sequence[EventData], time: datetime | None = None) -> None:
    """Every event, then every event again under the same id: a redelivery of each."""
    ids = [str(uuid.uuid4()) for _ in items]
    for _ in range(2):
        for event_id, data in zip(ids, items, strict=True):
            await bus.send(data, event_id=event_id, wait=False, time=time)
        assert bus.producer is not None
        await bus.producer.flush()


async def until(check: Any, what: str, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


def first_of_each(events: list[CloudEvent[EventData]]) -> list[CloudEvent[EventData]]:
    """One per event id, at its first publication: a re-published output is the same event."""
    seen: dict[str, CloudEvent[EventData]] = {}
    for e in events:
        if e.id in seen:
            assert seen[e.id].data == e.data, "an event id re-published with other content"
        seen.setdefault(e.id, e)
    return list(seen.values())


async def test_money_is_conserved_with_replays_and_a_killed_worker(
    bus: Bus, fleet: Fleet, namespace: str, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    db = mongo[f"{namespace}_reconciliation"]
    first = fleet.start_worker("reconciliation")
    first.wait_ready()
    await send_twice(bus, [ex.merchant("m-1")])
    reference: list[EventData] = []
    for i in range(ACCOUNTS):
        reference += [rx.decided(f"o-{i}-A", viban(i)), rx.decided(f"o-{i}-B", viban(i))]
        reference += [
            rx.invoice(f"o-{i}-A", f"A-{i}", "100.00", viban(i), due_on=date(2026, 12, 10)),
            rx.invoice(f"o-{i}-B", f"B-{i}", "50.00", viban(i), due_on=date(2026, 12, 20)),
        ]
    await send_twice(bus, reference)

    async def all_invoiced() -> bool:
        query = {"invoices.1": {"$exists": True}}
        return await db["accounts"].count_documents(query) == ACCOUNTS

    await until(all_invoiced, "every account with both invoices")

    paid_at = datetime.now(UTC)
    transfers: list[EventData] = []
    for i in range(ACCOUNTS):
        transfers.append(rx.transfer(f"t-{i}-1", viban(i), "100.00", f"Rechnung A-{i}"))
        transfers.append(rx.transfer(f"t-{i}-2", viban(i), "80.00", "Danke"))
    transfers += [
        rx.transfer(f"u-{j}", f"DE11NOBODY{j:012d}", "25.00", "A-1") for j in range(UNKNOWN)
    ]
    await send_twice(bus, transfers, time=paid_at)

    async def some_statements() -> bool:
        return await db["transactions"].count_documents({}) >= 10

    await until(some_statements, "the first statements")
    first.kill()  # SIGKILL mid-stream: no graceful shutdown, offsets possibly uncommitted
    second = fleet.start_worker("reconciliation")
    second.wait_ready()

    async def all_received() -> bool:
        # Transfers to unknown VIBANs wait (parked) until the tick past every grace period.
        in_ledger = await db["transactions"].count_documents({})
        waiting = await db["parked"].count_documents({})
        return in_ledger == len(transfers) - UNKNOWN and waiting == UNKNOWN

    await until(all_received, "every transfer in the ledger or parked")

    # No wait for the second worker to publish what the killed one stored: the next phase's
    # inputs (other topics) may overtake that redelivery, so an older statement can come out
    # after a newer one. The oracle below is the consumer's rule: the highest restatement.
    changes: list[EventData] = []
    for i in range(ACCOUNTS):
        if credited(i):
            changes.append(
                rx.accepted_credit_note(f"o-{i}-A", f"A-{i}", f"CN-{i}", "20.00", "80.00")
            )
        if canceled(i):
            changes.append(rx.canceled(f"o-{i}-B", f"B-{i}", was="complete"))
    await send_twice(bus, changes, time=paid_at)
    second.stop()  # a graceful restart between the phases
    third = fleet.start_worker("reconciliation")
    third.wait_ready()

    held_before = sum(expected_forwarded(i) for i in range(ACCOUNTS))

    async def all_held() -> bool:
        rows = await (
            await db["transactions"].aggregate(
                [{"$group": {"_id": None, "held": {"$sum": "$held_cents"}}}]
            )
        ).to_list()
        return bool(rows) and rows[0]["held"] == int(held_before * 100)

    await until(all_held, "the credit of every cancel and credit note")
    await bus.tick(paid_at + timedelta(days=3, hours=1))  # past every grace period

    forwarded = first_of_each(
        await bus.events(topics.PAYMENTS_OVERPAYMENT_FORWARDED, count=ACCOUNTS, timeout=120)
    )
    paid = {t.transaction_id: t.amount for t in transfers if isinstance(t, BankTransactionReceived)}

    def stated(events: list[CloudEvent[EventData]]) -> set[str]:
        return {e.data.transaction_id for e in events if isinstance(e.data, PaymentAllocated)}

    # Read until every transaction has a statement (a read that merely goes quiet for a few
    # seconds can stop early on a loaded machine), then a little longer for anything extra.
    deadline = asyncio.get_running_loop().time() + 60
    statements = first_of_each(await bus.events(topics.PAYMENTS_ALLOCATED, settle=3.0))
    while stated(statements) != paid.keys():
        assert asyncio.get_running_loop().time() < deadline, (
            f"no statement for {sorted(paid.keys() - stated(statements))}"
        )
        await asyncio.sleep(1.0)
        statements = first_of_each(await bus.events(topics.PAYMENTS_ALLOCATED, settle=3.0))
    settlements = first_of_each(await bus.events(topics.INVOICES_SETTLED, settle=0.5))
    forwarded = first_of_each(await bus.events(topics.PAYMENTS_OVERPAYMENT_FORWARDED))

    latest: dict[str, PaymentAllocated] = {}
    restatements: dict[str, set[int]] = {}
    for e in statements:
        s = e.data
        assert isinstance(s, PaymentAllocated)
        # every single statement adds up to the transaction's amount
        total = sum((a.amount for a in s.allocations), Decimal(0)) + s.overpayment + s.unallocated
        assert total == paid[s.transaction_id], s
        restatements.setdefault(s.transaction_id, set()).add(s.restatement)
        if s.transaction_id not in latest or s.restatement > latest[s.transaction_id].restatement:
            latest[s.transaction_id] = s  # the consumer's rule: the highest restatement
    assert latest.keys() == paid.keys()
    # each transaction's statements are numbered 0, 1, ... without a gap
    assert all(found == set(range(len(found))) for found in restatements.values()), restatements

    # Unknown VIBANs: wholly unmatched.
    for j in range(UNKNOWN):
        s = latest[f"u-{j}"]
        assert (s.allocations, s.unallocated, s.overpayment) == ([], Decimal("25.00"), Decimal(0))

    # Per account: nothing held at the end, forwarded exactly what was freed or overpaid.
    by_invoice: dict[str, Decimal] = {}
    for i in range(ACCOUNTS):
        mine = [latest[f"t-{i}-1"], latest[f"t-{i}-2"]]
        assert sum(s.unallocated for s in mine) == 0
        assert sum(s.overpayment for s in mine) == expected_forwarded(i)
        for s in mine:
            for a in s.allocations:
                by_invoice[a.invoice_number] = (
                    by_invoice.get(a.invoice_number, Decimal(0)) + a.amount
                )
        # every invoice holds exactly what it is worth after credit notes (0 once canceled)
        assert by_invoice.get(f"A-{i}", Decimal(0)) == invoice_worth(i, "A")
        assert by_invoice.get(f"B-{i}", Decimal(0)) == invoice_worth(i, "B")

    # Forwarded once per forwarding, adding up to the statements' overpayments.
    amounts: dict[str, Decimal] = {}
    for e in forwarded:
        assert isinstance(e.data, PaymentOverpaymentForwarded)
        amounts[e.data.transaction_id] = (
            amounts.get(e.data.transaction_id, Decimal(0)) + e.data.amount
        )
    assert sum(amounts.values()) == sum(expected_forwarded(i) for i in range(ACCOUNTS))
    assert all(amounts.get(tx, 0) == s.overpayment for tx, s in latest.items())

    # Each invoice settled once (A at 100.00 when paid; B at 50.00), never twice.
    numbers = [e.data.invoice_number for e in settlements if isinstance(e.data, InvoiceSettled)]
    assert sorted(numbers) == sorted(
        [f"A-{i}" for i in range(ACCOUNTS)] + [f"B-{i}" for i in range(ACCOUNTS)]
    )

    # Money in = allocated + held + forwarded + unmatched, in the ledger too.
    rows = await (
        await db["transactions"].aggregate(
            [
                {
                    "$group": {
                        "_id": None,
                        "amount": {"$sum": "$amount_cents"},
                        "allocated": {"$sum": "$allocated_cents"},
                        "held": {"$sum": "$held_cents"},
                        "forwarded": {"$sum": "$forwarded_cents"},
                        "unmatched": {"$sum": "$unmatched_cents"},
                    }
                }
            ]
        )
    ).to_list()
    totals = rows[0]
    assert totals["amount"] == ACCOUNTS * 18000 + UNKNOWN * 2500
    assert totals["held"] == 0 and totals["unmatched"] == UNKNOWN * 2500
    assert totals["forwarded"] == int(held_before * 100)
    assert totals["allocated"] + totals["forwarded"] + totals["unmatched"] == totals["amount"]
    assert await db["overpayments"].count_documents({}) == len(forwarded)
