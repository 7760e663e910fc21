"""The reconciliation service on real Kafka and MongoDB: each matching tier, partial and split
payments, credit held, applied and forwarded, cancels, unmatched transfers, merchant-reported
payments, re-imports and conflicts, manual allocation, bad input, and the query plan.

Oracles are written from the rules (docs/reconciliation-rules.md) in euros and cents, never
by calling the service's own functions."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.reconciliation.app import build_worker
from services.reconciliation.settings import ReconciliationSettings
from services.reconciliation.store import ACCOUNTS, account_query
from shared import topics
from shared.events import (
    CommandRejected,
    EventData,
    InvoiceSettled,
    MerchantDebitInstructed,
    PaymentAllocated,
    PaymentOverpaymentForwarded,
    PaymentUnmatched,
)
from shared.runtime.app import Worker
from tests import examples as ex
from tests import recon_examples as rx
from tests.harness import Bus, headers_of

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, Any]]
V1 = "DE11RECON0000000000001"


async def start(
    run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]], **overrides: Any
) -> tuple[Worker, Db]:
    worker: Worker = await run_worker(build_worker, ReconciliationSettings, **overrides)
    return worker, mongo[worker.settings.mongodb_database]


async def until(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``check()`` (async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def account_ready(db: Db, viban: str, invoices: int = 0, orders: int = 1) -> None:
    """Until the account has its orders and invoices: a transfer read before them would be
    handled as if they did not exist (their topics are ordered apart from bank.transactions)."""

    async def check() -> bool:
        doc = await db[ACCOUNTS].find_one({"_id": viban})
        return doc is not None and len(doc["invoices"]) >= invoices and len(doc["orders"]) >= orders

    await until(check, f"account {viban}")


async def debtor_with(bus: Bus, db: Db, viban: str, *invoices: tuple[str, str, str, date]) -> None:
    """merchant m-1, one accepted order per invoice (order, number, gross, due) on ``viban``."""
    await bus.send(ex.merchant("m-1"))
    orders = sorted({order for order, _, _, _ in invoices}) or ["o-none"]
    for order in orders:
        await bus.send(rx.decided(order, viban))
    for order, number, gross, due in invoices:
        await bus.send(rx.invoice(order, number, gross, viban, due_on=due))
    await account_ready(db, viban, invoices=len(invoices), orders=len(orders))


def split(statement: EventData) -> list[tuple[str, Decimal, str | None]]:
    assert isinstance(statement, PaymentAllocated)
    return [(a.invoice_number, a.amount, a.matched_by) for a in statement.allocations]


async def statements(bus: Bus, count: int, **kw: Any) -> dict[str, list[PaymentAllocated]]:
    """Every payments.allocated by transaction, in publication order per transaction (one
    partition per VIBAN key)."""
    found = await bus.events(topics.PAYMENTS_ALLOCATED, count=count, **kw)
    out: dict[str, list[PaymentAllocated]] = {}
    for e in found:
        assert isinstance(e.data, PaymentAllocated)
        out.setdefault(e.data.transaction_id, []).append(e.data)
    return out


def adds_up(s: PaymentAllocated, amount: str) -> None:
    """The contract's rule for every single statement."""
    total = sum((a.amount for a in s.allocations), Decimal(0)) + s.overpayment + s.unallocated
    assert total == Decimal(amount), f"{s.transaction_id} states {total}, paid {amount}"


async def settled(bus: Bus, count: int, **kw: Any) -> dict[str, Decimal]:
    found = await bus.events(topics.INVOICES_SETTLED, count=count, **kw)
    return {
        e.data.invoice_number: e.data.paid_total
        for e in found
        if isinstance(e.data, InvoiceSettled)
    }


D1, D2, D3 = date(2026, 12, 10), date(2026, 12, 20), date(2026, 12, 30)


async def test_each_matching_tier_in_its_order(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Three invoices; the text naming one wins over amount and age; then an exact amount
    wins over the oldest due; then oldest due first."""
    _, db = await start(run_worker, mongo)
    await debtor_with(
        bus,
        db,
        V1,
        ("o-1", "INV-2026-001", "100.00", D1),
        ("o-2", "INV-2026-002", "250.00", D2),
        ("o-3", "INV-2026-003", "80.00", D3),
    )
    await bus.send(rx.transfer("tx-named", V1, "80.00", "Rechnung Nr. 2026/002 teilweise"))
    found = await statements(bus, 1)
    # named: 80.00 to INV-2026-002 although INV-2026-003 is exactly 80.00
    assert split(found["tx-named"][0]) == [("INV-2026-002", Decimal("80.00"), "invoice_number")]
    await bus.send(rx.transfer("tx-exact", V1, "80.00", "danke"))
    found = await statements(bus, 2)
    assert split(found["tx-exact"][0]) == [("INV-2026-003", Decimal("80.00"), "exact_amount")]
    await bus.send(rx.transfer("tx-oldest", V1, "150.00", ""))
    found = await statements(bus, 3)
    # oldest due first: INV-001 (due 12-10) takes 100.00, then INV-002 (open 170.00) 50.00
    assert split(found["tx-oldest"][0]) == [
        ("INV-2026-001", Decimal("100.00"), "oldest_due"),
        ("INV-2026-002", Decimal("50.00"), "oldest_due"),
    ]
    for tx, amount in (("tx-named", "80.00"), ("tx-exact", "80.00"), ("tx-oldest", "150.00")):
        adds_up(found[tx][0], amount)
        assert found[tx][0].unallocated == 0 and found[tx][0].overpayment == 0
    assert await settled(bus, 2, settle=1.0) == {
        "INV-2026-003": Decimal("80.00"),
        "INV-2026-001": Decimal("100.00"),
    }


async def test_partial_payments_and_one_invoice_paid_by_several_transfers(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """300.00 paid as 100 + 120 + 80: open after each part, settled once with 300.00."""
    _, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "RE-77", "300.00", D1))
    await bus.send(rx.transfer("p-1", V1, "100.00", "RE 77 Teil 1"))
    await bus.send(rx.transfer("p-2", V1, "120.00", "re77"))
    found = await statements(bus, 2)
    assert await settled(bus, 0, settle=1.0, timeout=3.0) == {}  # 80.00 still open
    await bus.send(rx.transfer("p-3", V1, "80.00", "Rest 77"))
    found = await statements(bus, 3)
    assert [split(found[tx][0]) for tx in ("p-1", "p-2", "p-3")] == [
        [("RE-77", Decimal("100.00"), "invoice_number")],
        [("RE-77", Decimal("120.00"), "invoice_number")],
        # "Rest 77": the number without its prefix names it too
        [("RE-77", Decimal("80.00"), "invoice_number")],
    ]
    assert await settled(bus, 1, settle=1.0) == {"RE-77": Decimal("300.00")}


async def test_one_transfer_pays_several_invoices_in_the_order_named(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """The text names INV-9 then INV-3: INV-9 is paid first though INV-3 is due earlier;
    what is left after both goes to the oldest remaining invoice."""
    _, db = await start(run_worker, mongo)
    await debtor_with(
        bus,
        db,
        V1,
        ("o-1", "INV-3", "50.00", D1),
        ("o-2", "INV-9", "70.00", D2),
        ("o-3", "INV-5", "40.00", D3),
    )
    await bus.send(rx.transfer("multi", V1, "140.00", "INV 9, INV 3"))
    found = await statements(bus, 1)
    assert split(found["multi"][0]) == [
        ("INV-9", Decimal("70.00"), "invoice_number"),
        ("INV-3", Decimal("50.00"), "invoice_number"),
        ("INV-5", Decimal("20.00"), "oldest_due"),
    ]
    adds_up(found["multi"][0], "140.00")
    assert await settled(bus, 2, settle=1.0) == {
        "INV-9": Decimal("70.00"),
        "INV-3": Decimal("50.00"),
    }


async def test_credit_held_is_applied_to_a_later_invoice(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """A payment before its invoice: all held (unallocated), nothing forwarded; the invoice
    issued within the grace period takes it, restated under the same transaction."""
    _, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "60.00", D1))
    await bus.send(rx.transfer("early", V1, "100.00", "INV-1 und INV-2"))
    first = await statements(bus, 1)
    assert split(first["early"][0]) == [("INV-1", Decimal("60.00"), "invoice_number")]
    assert first["early"][0].unallocated == Decimal("40.00")
    await bus.send(rx.decided("o-2", V1))
    await bus.send(rx.invoice("o-2", "INV-2", "25.00", V1, due_on=D2))
    found = await statements(bus, 2)
    restated = found["early"][1]
    # the text named INV-2: the held credit goes to it as invoice_number
    assert split(restated) == [
        ("INV-1", Decimal("60.00"), "invoice_number"),
        ("INV-2", Decimal("25.00"), "invoice_number"),
    ]
    assert (restated.unallocated, restated.overpayment) == (Decimal("15.00"), Decimal(0))
    adds_up(restated, "100.00")
    # a third invoice not named anywhere takes the rest as held credit
    await bus.send(rx.decided("o-3", V1))
    await bus.send(rx.invoice("o-3", "INV-3", "30.00", V1, due_on=D3))
    found = await statements(bus, 3)
    assert split(found["early"][2])[-1] == ("INV-3", Decimal("15.00"), "held_credit")
    assert found["early"][2].unallocated == 0
    # each statement names its place: a consumer keeps the highest
    assert [s.restatement for s in found["early"]] == [0, 1, 2]
    assert await settled(bus, 2, settle=1.0) == {
        "INV-1": Decimal("60.00"),
        "INV-2": Decimal("25.00"),
    }


async def test_credit_is_forwarded_after_the_grace_period_on_ticks(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]], namespace: str
) -> None:
    """Overpaid by 30.00 at T: a tick before T + 3 days forwards nothing; the first tick
    after forwards 30.00 to the merchant's payout IBAN, once, and restates the transaction;
    the merchant's overpayment report lists it (CSV), dated by the tick that forwarded it."""
    worker, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "70.00", D1))
    paid_at = datetime.now(UTC).replace(microsecond=0)
    await bus.send(rx.transfer("over", V1, "100.00", "INV-1"), time=paid_at)
    await statements(bus, 1)
    await bus.tick(paid_at + timedelta(days=2, hours=23))
    await bus.tick(paid_at + timedelta(days=2, hours=23, minutes=30))
    assert await bus.events(topics.PAYMENTS_OVERPAYMENT_FORWARDED, settle=2.0, timeout=3.0) == []
    # the held-credit gauge, refreshed on that tick: 30.00 held, none of it overdue yet
    registry = worker.metrics.registry
    assert registry.get_sample_value("reconciliation_credit_held_amount") == 30.0
    assert registry.get_sample_value("reconciliation_credit_overdue_amount") == 0.0
    await bus.tick(paid_at + timedelta(days=3, minutes=1))
    forwarded = await bus.events(topics.PAYMENTS_OVERPAYMENT_FORWARDED, count=1)
    data = forwarded[0].data
    assert isinstance(data, PaymentOverpaymentForwarded)
    assert (data.transaction_id, data.merchant_id, data.amount, data.payout_iban) == (
        "over",
        "m-1",
        Decimal("30.00"),
        ex.merchant("m-1").payout_iban,
    )
    found = await statements(bus, 2)
    assert (found["over"][1].overpayment, found["over"][1].unallocated) == (
        Decimal("30.00"),
        Decimal(0),
    )
    adds_up(found["over"][1], "100.00")
    await bus.tick(paid_at + timedelta(days=4))
    assert len(await bus.events(topics.PAYMENTS_OVERPAYMENT_FORWARDED, settle=2.0)) == 1
    report = await db["overpayments"].find_one({"transaction_id": "over"})
    assert report is not None and report["amount_cents"] == 3000
    day = paid_at.date().isoformat()
    csv_text = await ops(
        worker,
        namespace,
        "overpayments",
        "report",
        "--merchant",
        "m-1",
        "--from",
        day,
        "--to",
        (paid_at + timedelta(days=5)).date().isoformat(),
        "--csv",
    )
    forwarded_on = (paid_at + timedelta(days=3, minutes=1)).date().isoformat()
    assert csv_text.splitlines() == [
        "date,transaction_id,debtor_id,amount,currency",
        f"{forwarded_on},over,c-1,30.00,EUR",
    ]
    table = await ops(worker, namespace, "overpayments", "report", "--merchant", "m-1")
    assert "0 forwarding(s), total 0.00 EUR" in table  # the last 30 days of the wall clock


async def test_what_was_paid_toward_a_canceled_invoice_becomes_credit(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Paid 100.00 on INV-1; a credit note takes it to 70.00 (30.00 back as credit, which the
    open INV-2 takes at once), then the cancel frees the remaining 70.00 as held credit."""
    _, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "100.00", D1), ("o-2", "INV-2", "20.00", D2))
    await bus.send(rx.transfer("t", V1, "100.00", "INV-1"))
    await statements(bus, 1)
    await bus.send(rx.accepted_credit_note("o-1", "INV-1", "CN-1", "30.00", "70.00"))
    found = await statements(bus, 2)
    assert split(found["t"][1]) == [
        ("INV-1", Decimal("70.00"), "invoice_number"),
        ("INV-2", Decimal("20.00"), "held_credit"),
    ]
    assert found["t"][1].unallocated == Decimal("10.00")
    await bus.send(rx.canceled("o-1", "INV-1", was="complete"))
    found = await statements(bus, 3)
    assert split(found["t"][2]) == [("INV-2", Decimal("20.00"), "held_credit")]
    assert found["t"][2].unallocated == Decimal("80.00")
    adds_up(found["t"][2], "100.00")


async def test_unknown_viban_and_wrong_currency_are_unmatched(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """A USD transfer naming an open invoice is unmatched at once. A VIBAN no order was
    decided under waits (parked) for a decision that may be on its way, and is unmatched at
    the first tick past the park's deadline. Both wholly unallocated, kept in the unmatched
    list. (A declined order carries no VIBAN in the contract, so its debtor's transfers
    arrive as unknown_viban.)"""
    _, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "100.00", D1))
    await bus.send(rx.transfer("nobody", "DE11RECON0000000000404", "50.00", "INV-1"))
    await bus.send(rx.transfer("dollars", V1, "100.00", "INV-1", currency="USD"))
    first = await bus.events(topics.PAYMENTS_UNMATCHED, count=1, settle=1.0)
    assert [e.data.transaction_id for e in first if isinstance(e.data, PaymentUnmatched)] == [
        "dollars"
    ]
    await until(lambda: db["parked"].find_one({}), "the unknown VIBAN's transfer parked")
    await bus.tick(datetime.now(UTC) + timedelta(days=1))  # past the park's deadline
    found = await bus.events(topics.PAYMENTS_UNMATCHED, count=2)
    reasons = {
        e.data.transaction_id: e.data.reason for e in found if isinstance(e.data, PaymentUnmatched)
    }
    assert reasons == {"nobody": "unknown_viban", "dollars": "unsupported_currency"}
    stated = await statements(bus, 2)
    assert stated["nobody"][0].unallocated == Decimal("50.00")
    assert not stated["nobody"][0].allocations
    assert stated["dollars"][0].unallocated == Decimal("100.00")
    assert await settled(bus, 0, settle=1.0, timeout=3.0) == {}  # INV-1 was not paid in dollars
    assert await db["transactions"].count_documents({"unmatched_cents": {"$gt": 0}}) == 2


async def test_a_transfer_read_before_its_vibans_decision_waits_for_it(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """A transfer read before any order was decided under its VIBAN (the decision is on
    another topic, read separately) is parked, not unmatched. Once the decision and the
    invoice are in, the next tick before the park's deadline retries it, and it pays the
    invoice it names: one statement, nothing unmatched, nothing left parked."""
    _, db = await start(run_worker, mongo)
    await bus.send(ex.merchant("m-1"))
    await bus.send(rx.transfer("early", V1, "100.00", "Rechnung INV-1"))
    await until(lambda: db["parked"].find_one({}), "the transfer parked")
    assert await bus.events(topics.PAYMENTS_ALLOCATED, count=0, settle=1.0) == []
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "100.00", D1))
    await bus.tick(datetime.now(UTC))
    found = await statements(bus, 1)
    assert split(found["early"][0]) == [("INV-1", Decimal("100.00"), "invoice_number")]
    assert await settled(bus, 1) == {"INV-1": Decimal("100.00")}
    assert await bus.events(topics.PAYMENTS_UNMATCHED, count=0, settle=1.0) == []
    assert await db["parked"].count_documents({}) == 0


async def test_merchant_reported_payment_is_debited_then_allocated_and_bad_reports_refused(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """A report instructs a direct debit with its id; its collection pays that invoice
    (merchant_debit). Reports above the open amount, for settled, canceled or unknown
    invoices are rejected with their reasons and instruct nothing."""
    _, db = await start(run_worker, mongo, park_ttl_seconds=1)
    await debtor_with(
        bus,
        db,
        V1,
        ("o-1", "INV-1", "100.00", D1),
        ("o-2", "INV-2", "50.00", D2),
        ("o-3", "INV-3", "40.00", D3),
    )
    await bus.send(rx.canceled("o-3", "INV-3"))
    await bus.send(rx.transfer("pay-2", V1, "50.00", "INV-2"))
    await settled(bus, 1)
    report = await bus.send(rx.reported("o-1", "INV-1", "60.00"))
    debits = await bus.events(topics.MERCHANT_DEBITS_INSTRUCTED, count=1)
    debit = debits[0].data
    assert isinstance(debit, MerchantDebitInstructed)
    assert (debit.merchant_id, debit.invoice_number, debit.amount) == (
        "m-1",
        "INV-1",
        Decimal("60.00"),
    )
    # 100.00 open, 60.00 on its way: a second report of 40.01 is too much
    too_much = await bus.send(rx.reported("o-1", "INV-1", "40.01"))
    on_settled = await bus.send(rx.reported("o-2", "INV-2", "1.00"))
    on_canceled = await bus.send(rx.reported("o-3", "INV-3", "1.00"))
    unknown = await bus.send(rx.reported("o-1", "INV-404", "1.00"))
    await bus.send(rx.collected(debit.debit_id, "o-1", "INV-1", "60.00"))
    found = await statements(bus, 2)
    assert split(found[debit.debit_id][0]) == [("INV-1", Decimal("60.00"), "merchant_debit")]
    await asyncio.sleep(1.5)
    await bus.tick(datetime.now(UTC) + timedelta(seconds=5))  # the parked unknown invoice
    rejected = await bus.events(topics.COMMANDS_REJECTED, count=4, settle=1.0)
    reasons = {
        r.data.command_id: r.data.reason.split(":")[0]
        for r in rejected
        if isinstance(r.data, CommandRejected)
    }
    assert reasons == {
        too_much: "report_exceeds_open_amount",
        on_settled: "invoice_settled",
        on_canceled: "invoice_canceled",
        unknown: "unknown_invoice",
    }
    assert report not in reasons
    assert len(await bus.events(topics.MERCHANT_DEBITS_INSTRUCTED, settle=0.5)) == 1


async def test_reimported_transaction_is_one_payment_and_a_conflicting_one_is_refused(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """The same transaction id and content under a new event id changes nothing; with
    another amount, or on another VIBAN, it is rejected and changes nothing either."""
    _, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "100.00", D1))
    await bus.send(rx.transfer("tx-1", V1, "40.00", "INV-1"))
    await statements(bus, 1)
    await bus.send(rx.transfer("tx-1", V1, "40.00", "INV-1"))  # re-imported: new event id
    other_amount = await bus.send(rx.transfer("tx-1", V1, "60.00", "INV-1"))
    other_viban = await bus.send(rx.transfer("tx-1", "DE11RECON0000000000002", "40.00", "INV-1"))
    rejected = await bus.events(topics.COMMANDS_REJECTED, count=2, settle=1.0)
    assert {
        r.data.command_id: r.data.reason.split(":")[0]
        for r in rejected
        if isinstance(r.data, CommandRejected)
    } == {other_amount: "transaction_conflict", other_viban: "transaction_conflict"}
    assert len(await bus.events(topics.PAYMENTS_ALLOCATED, settle=1.0)) == 1
    doc = await db[ACCOUNTS].find_one({"_id": V1})
    assert doc is not None
    assert [i["allocated_cents"] for i in doc["invoices"]] == [4000]
    assert await db[ACCOUNTS].count_documents({"_id": "DE11RECON0000000000002"}) == 0


async def ops(worker: Worker, namespace: str, *args: str) -> str:
    """``python -m shared.ops reconciliation ...`` as a process, on this test's database and
    topics; its stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.ops",
        "reconciliation",
        "--mongodb-uri",
        worker.settings.mongodb_uri,
        "--database",
        worker.settings.mongodb_database,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": worker.settings.kafka_bootstrap_servers,
            "TOPIC_PREFIX": f"{namespace}.",
        },
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_ops_allocates_an_unmatched_payment_through_a_command_event(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]], namespace: str
) -> None:
    """A transfer to an unknown VIBAN, listed by ``unmatched list``, allocated by ``unmatched
    allocate`` to INV-1 on V1 (a command on Kafka, handled by the worker): restated with the
    invoice (named by ops), the invoice settled, the rest held on V1's account, shown so by
    ``transaction show``; the same transfer re-imported afterwards is still one payment; the
    command's refusal when the payment is no longer unmatched comes back on commands.rejected."""
    worker, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "100.00", D1))
    typo = "DE11RECON0000000000777"
    await bus.send(rx.transfer("lost", typo, "120.00", "Rechnung 1"))
    await until(lambda: db["parked"].find_one({}), "the unknown VIBAN's transfer parked")
    await bus.tick(datetime.now(UTC) + timedelta(days=1))  # past the park's deadline
    await bus.events(topics.PAYMENTS_UNMATCHED, count=1)
    await until(lambda: db["transactions"].find_one({"_id": "lost"}), "the ledger entry")
    listed = [
        json.loads(line)
        for line in (await ops(worker, namespace, "unmatched", "list")).splitlines()
    ]
    assert listed[0]["transaction_id"] == "lost" and listed[0]["amount"] == "120.00"
    assert listed[0]["reason"] == "unknown_viban"
    assert listed[-1] == {"summary": {"unmatched": 1}}
    await ops(
        worker, namespace, "unmatched", "allocate", "lost", "--order", "o-1", "--invoice", "INV-1"
    )
    found = await statements(bus, 2)
    restated = found["lost"][1]
    assert restated.creditor_iban == typo
    assert split(restated) == [("INV-1", Decimal("100.00"), "invoice_number")]
    assert restated.unallocated == Decimal("20.00")
    assert await settled(bus, 1) == {"INV-1": Decimal("100.00")}
    await bus.send(rx.transfer("lost", typo, "120.00", "Rechnung 1"))
    assert len(await bus.events(topics.PAYMENTS_ALLOCATED, settle=1.5)) == 2

    async def moved() -> Any:
        return await db["transactions"].find_one({"_id": "lost", "viban": V1})

    await until(moved, "the ledger to follow the move")
    shown = json.loads(await ops(worker, namespace, "transaction", "show", "lost"))
    assert shown["account"] == V1 and shown["creditor_iban"] == typo
    assert shown["allocations"] == [
        {"invoice_number": "INV-1", "amount": "100.00", "matched_by": "invoice_number"}
    ]
    assert (shown["held"], shown["unmatched"]) == ("20.00", "0.00")
    again = await bus.send(rx.allocation_requested("lost", typo, "o-1", "INV-1"))
    rejected = await bus.events(topics.COMMANDS_REJECTED, count=1)
    assert isinstance(rejected[0].data, CommandRejected)
    assert rejected[0].data.command_id == again
    assert rejected[0].data.reason.startswith("unknown_transaction")


async def test_bad_records_are_dead_lettered_and_leave_no_state(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Broken JSON, a float amount, a missing field, an unknown type: each on the DLQ with its
    error headers; no account, no ledger entry; the worker goes on with the next transfer."""
    _, db = await start(run_worker, mongo)
    await debtor_with(bus, db, V1, ("o-1", "INV-1", "100.00", D1))
    good = rx.transfer("bad", "DE11RECON0000000000003", "10.00").model_dump(mode="json")

    def envelope(event_type: str, data: dict[str, Any], tag: str) -> bytes:
        return json.dumps(
            {
                "specversion": "1.0",
                "id": f"bad-{tag}",
                "source": "/tests",
                "type": event_type,
                "time": "2026-12-01T09:00:00Z",
                "datacontenttype": "application/json",
                "data": data,
            }
        ).encode()

    kind = "bank.transaction.received.v1"
    cases = [
        ("json", b"{not json"),
        ("json", envelope(kind, good, "float").replace(b'"10.00"', b"10.0")),
        ("schema", envelope(kind, {k: v for k, v in good.items() if k != "currency"}, "miss")),
        ("schema", envelope(kind, good | {"amount": "-5.00"}, "negative")),
        ("unknown_type", envelope("bank.transaction.teleported.v1", good, "type")),
    ]
    for _, value in cases:
        await bus.send_raw(topics.BANK_TRANSACTIONS, value, key=b"DE11RECON0000000000003")
    await bus.send(rx.transfer("fine", V1, "100.00", "INV-1"))
    await statements(bus, 1)
    letters = await bus.records(
        topics.BANK_TRANSACTIONS + ".dlq", until=lambda rs: len(rs) >= len(cases), timeout=30
    )
    assert sorted(headers_of(r)["dlq-error-kind"] for r in letters) == sorted(k for k, _ in cases)
    for record in letters:
        headers = headers_of(record)
        assert headers["dlq-source-topic"] == bus.topic(topics.BANK_TRANSACTIONS)
        assert headers["dlq-error"]
    assert await db[ACCOUNTS].count_documents({"_id": "DE11RECON0000000000003"}) == 0
    assert await db["transactions"].count_documents({"_id": "bad"}) == 0


async def test_matching_a_payment_reads_one_account_document(
    bus: Bus, run_worker: Any, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Acceptance 3's query plan: with many debtors' invoices stored, the query a transfer
    loads its account with is a single-document ``_id`` lookup (no collection scan), and the
    document holds only that debtor's invoices."""
    _, db = await start(run_worker, mongo)
    docs = [
        {
            "_id": f"DE11SCALE{n:013d}",
            "merchant_id": "m-1",
            "debtor_id": f"c-{n}",
            "orders": [[f"o-{n}-{k}", "created"] for k in range(10)],
            "order_ids": [f"o-{n}-{k}" for k in range(10)],
            "invoices": [
                {"invoice_number": f"INV-{n}-{k}", "order_id": f"o-{n}-{k}"} for k in range(10)
            ],
        }
        for n in range(2000)
    ]
    await db[ACCOUNTS].insert_many(docs)
    viban = "DE11SCALE0000000001234"
    plan = await db[ACCOUNTS].find(account_query(viban)).explain()
    stats = plan["executionStats"]
    winning = json.dumps(plan["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in winning
    assert "IDHACK" in winning or "EXPRESS_IXSCAN" in winning or '"_id_"' in winning
    assert (stats["totalDocsExamined"], stats["nReturned"]) == (1, 1)
    doc = await db[ACCOUNTS].find_one(account_query(viban))
    assert doc is not None
    assert {i["invoice_number"] for i in doc["invoices"]} == {f"INV-1234-{k}" for k in range(10)}
