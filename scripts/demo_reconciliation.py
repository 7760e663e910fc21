"""The demo's reconciliation act: debtors pay their VIBANs and every euro ends somewhere.

Merchant ``m-recon`` sells to four companies of its own (orders ``o-2xxx``), through risk
(VIBANs) and shipping (invoices, shipped in June 2027, due in July). Then, on a synthetic
clock in July 2027 (the late act before sends 2027-06-01, the dunning act after uses August):

- Alpenglühen: an invoice number in the text, an exact amount, a partial payment and its rest;
- Brückenbau: one transfer naming two invoices, and 50.00 too much, held, then forwarded to
  the merchant after the grace period (a tick three days on);
- Café Zentral: a payment before its invoice, held, then applied when the invoice is issued;
- Druckerei Fischer: a transfer paying the oldest invoice first and part of the next, the rest
  paid to the merchant directly: reported, debited from the merchant, collected, allocated;
- a transfer to a VIBAN nobody has: it waits (parked) for a decision that may be on its way,
  then is unmatched at the first tick past the park's deadline, left for manual allocation.

The summary states money in = allocated + held + forwarded + unmatched, to the cent, from the
published statements, and the invoices settled; any difference from what the rules say fails
the demo.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pymongo import AsyncMongoClient

from scripts.processes import REPO, Process
from shared import topics
from shared.events import (
    CompanyRegistered,
    EventData,
    InvoiceSettled,
    MerchantDebitInstructed,
    OrderDecided,
    PaymentAllocated,
    PaymentOverpaymentForwarded,
    PaymentUnmatched,
)
from tests import examples as ex
from tests import recon_examples as rx
from tests.harness import Bus

MERCHANT = "m-recon"
DAY_1 = datetime(2027, 7, 2, 10, 0, tzinfo=UTC)  # the first bank statement of the act
DAY_2 = datetime(2027, 7, 3, 10, 0, tzinfo=UTC)
FORWARD_TICK = datetime(2027, 7, 6, 12, 0, tzinfo=UTC)  # past DAY_1 + 3 days
LAST_TICK = datetime(2027, 7, 20, 12, 0, tzinfo=UTC)
UNKNOWN_VIBAN = "DE00RECONUNKNOWN000000"


def companies() -> list[CompanyRegistered]:
    def company(company_id: str, name: str, legal_form: str, number: str) -> CompanyRegistered:
        return ex.company(
            company_id,
            name=name,
            legal_form=legal_form,
            registration_number=number,
            vat_id=None,
            address=ex.address(street="Hafenstraße", house_number=number[-2:]),
        )

    return [
        company("c-recon-alpen", "Alpenglühen Werkstätten GmbH", "GmbH", "HRB 92001"),
        company("c-recon-bruecke", "Brückenbau Nord GmbH", "GmbH", "HRB 92002"),
        company("c-recon-cafe", "Café Zentral KG", "KG", "HRA 92003"),
        company("c-recon-druck", "Druckerei Fischer GmbH", "GmbH", "HRB 92004"),
    ]


# order -> (company, gross, shipped on (None: shipped later in the act))
ORDERS: dict[str, tuple[str, str, date | None]] = {
    "o-2001": ("c-recon-alpen", "500.00", date(2027, 6, 1)),
    "o-2002": ("c-recon-alpen", "300.00", date(2027, 6, 5)),
    "o-2003": ("c-recon-alpen", "200.00", date(2027, 6, 10)),
    "o-2011": ("c-recon-bruecke", "200.00", date(2027, 6, 1)),
    "o-2012": ("c-recon-bruecke", "150.00", date(2027, 6, 3)),
    "o-2021": ("c-recon-cafe", "400.00", None),
    "o-2031": ("c-recon-druck", "100.00", date(2027, 6, 1)),
    "o-2032": ("c-recon-druck", "100.00", date(2027, 6, 8)),
}
CAFE_SHIPPED = date(2027, 6, 15)


def invoice_of(order_id: str) -> str:
    return "INV-" + order_id.removeprefix("o-")


# What the rules say, by hand: every invoice settled, the statements' final split.
EXPECTED_SETTLED = {invoice_of(o): Decimal(gross) for o, (_, gross, _) in ORDERS.items()}
EXPECTED_FORWARDED = {"tx-2012": Decimal("50.00")}
EXPECTED_UNMATCHED = {"tx-2099": ("unknown_viban", Decimal("75.00"))}
# transaction -> [(invoice, amount, matched_by)] in its last statement
EXPECTED_SPLITS: dict[str, list[tuple[str, str, str]]] = {
    "tx-2001": [("INV-2001", "500.00", "invoice_number")],
    "tx-2002": [("INV-2002", "300.00", "exact_amount")],
    "tx-2003": [("INV-2003", "120.00", "invoice_number")],
    "tx-2004": [("INV-2003", "80.00", "exact_amount")],
    "tx-2011": [("INV-2011", "200.00", "invoice_number"), ("INV-2012", "150.00", "invoice_number")],
    "tx-2012": [],
    "tx-2021": [("INV-2021", "400.00", "invoice_number")],
    "tx-2031": [("INV-2031", "100.00", "oldest_due"), ("INV-2032", "50.00", "oldest_due")],
    "tx-2099": [],
}


def shipment(order_id: str, shipped_on: date) -> EventData:
    _, gross, _ = ORDERS[order_id]
    return ex.shipment(
        order_id,
        invoice_of(order_id),
        gross=gross,
        shipped_at=datetime.combine(shipped_on, datetime.min.time(), tzinfo=UTC),
    )


async def _until(check: Any, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + 60.0
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"reconciliation act: {what} not seen within 60 s")
        await asyncio.sleep(0.2)


def _overpayment_report(database: str) -> str:
    """The merchant's daily financial report, as ops would print it."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "shared.ops",
            "reconciliation",
            "--database",
            database,
            "overpayments",
            "report",
            "--merchant",
            MERCHANT,
            "--from",
            "2027-07-01",
            "--to",
            "2027-07-31",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
    )
    return done.stdout if done.returncode == 0 else f"(report failed: {done.stderr.strip()})"


async def reconciliation_act(bus: Bus, worker: Process, database: str) -> int:
    """Runs the act and prints its summary; returns the failures."""
    mongo = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo, tz_aware=True)
    db = client[database]
    try:
        failures, lines = await _act(bus, db, database)
    finally:
        await client.close()
    _, metrics = worker.get("/metrics")
    lines.append("  the worker's business metrics (non-zero):")
    lines += [
        f"    {line}"
        for line in metrics.splitlines()
        if line.startswith("reconciliation_")
        and "_created" not in line
        and not line.endswith(" 0.0")
    ]
    print("\n".join(lines))
    return failures


async def _act(bus: Bus, db: Any, database: str) -> tuple[int, list[str]]:
    print("\ndemo: reconciliation: debtors of m-recon pay their VIBANs")
    registered = {c.company_id: c for c in companies()}
    await bus.send_many([ex.merchant(MERCHANT, name="Recon Maschinen GmbH"), *registered.values()])
    await asyncio.sleep(1.0)  # configuration first, as the gateway would
    await bus.send_many(
        [
            ex.order(o, merchant_id=MERCHANT, debtor=ex.debtor_of(registered[c]), gross=gross)
            for o, (c, gross, _) in ORDERS.items()
        ]
    )
    decided = await bus.events(
        topics.ORDERS_DECIDED,
        count=len(ORDERS),
        where=lambda e: isinstance(e.data, OrderDecided) and e.data.order_id in ORDERS,
        timeout=60,
    )
    vibans: dict[str, str] = {}
    for e in decided:
        assert isinstance(e.data, OrderDecided)
        if e.data.viban is None:
            raise RuntimeError(f"reconciliation act: {e.data.order_id} was not approved")
        vibans[e.data.order_id] = e.data.viban
    await bus.send_many([shipment(o, on) for o, (_, _, on) in ORDERS.items() if on is not None])
    shipped = [o for o, (_, _, on) in ORDERS.items() if on is not None]

    async def invoiced() -> bool:
        query = {"invoices.invoice_number": {"$in": [invoice_of(o) for o in shipped]}}
        found = [i async for d in db["accounts"].find(query) for i in d["invoices"]]
        return len({i["invoice_number"] for i in found} & set(map(invoice_of, shipped))) == len(
            shipped
        )

    await _until(invoiced, "the invoices in reconciliation")
    v = vibans
    first_day = [
        rx.transfer(
            "tx-2001", v["o-2001"], "500.00", "Rechnung INV-2001", booking_date=DAY_1.date()
        ),
        rx.transfer("tx-2002", v["o-2002"], "300.00", "Danke", booking_date=DAY_1.date()),
        rx.transfer(
            "tx-2003", v["o-2003"], "120.00", "Teilzahlung RE 2003", booking_date=DAY_1.date()
        ),
        rx.transfer(
            "tx-2011", v["o-2011"], "350.00", "inv-2011 / inv-2012", booking_date=DAY_1.date()
        ),
        rx.transfer("tx-2012", v["o-2012"], "50.00", "Nachzahlung", booking_date=DAY_1.date()),
        rx.transfer(
            "tx-2021", v["o-2021"], "400.00", "Rechnung Nr. INV 2021", booking_date=DAY_1.date()
        ),
        rx.transfer(
            "tx-2031", v["o-2031"], "150.00", "Danke für die Lieferung", booking_date=DAY_1.date()
        ),
        rx.transfer("tx-2099", UNKNOWN_VIBAN, "75.00", "INV-2001", booking_date=DAY_1.date()),
    ]
    await bus.send_many(first_day, time=DAY_1)
    # tx-2099 goes to a VIBAN no order was decided under: it waits (parked) for a decision that
    # may be on its way, and is unmatched at the first tick past the park's deadline (below).
    await bus.events(
        topics.PAYMENTS_ALLOCATED,
        count=len(first_day) - 1,
        where=lambda e: (
            isinstance(e.data, PaymentAllocated)
            and e.data.transaction_id in EXPECTED_SPLITS
            and e.data.transaction_id != "tx-2099"
        ),
        timeout=60,
    )
    print(
        "demo: reconciliation: tx-2099 to an unknown VIBAN waits for its order's decision "
        "before it is unmatched"
    )
    print(
        "demo: reconciliation: day 2: the rest of a partial payment, Café Zentral's invoice, "
        "a payment made to the merchant"
    )
    await bus.send(
        rx.transfer("tx-2004", v["o-2003"], "80.00", "", booking_date=DAY_2.date()), time=DAY_2
    )
    await bus.send(shipment("o-2021", CAFE_SHIPPED), time=DAY_2)
    await bus.send(rx.reported("o-2032", "INV-2032", "50.00"), time=DAY_2)
    instructed = await bus.events(
        topics.MERCHANT_DEBITS_INSTRUCTED,
        count=1,
        where=lambda e: isinstance(e.data, MerchantDebitInstructed) and e.data.order_id == "o-2032",
        timeout=60,
    )
    debit = instructed[0].data
    assert isinstance(debit, MerchantDebitInstructed)
    # The debit executor collects it from the merchant:
    await bus.send(rx.collected(debit.debit_id, "o-2032", "INV-2032", "50.00"), time=DAY_2)
    settled = await bus.events(
        topics.INVOICES_SETTLED,
        count=len(EXPECTED_SETTLED),
        where=lambda e: (
            isinstance(e.data, InvoiceSettled) and e.data.invoice_number in EXPECTED_SETTLED
        ),
        timeout=60,
    )
    await bus.tick(FORWARD_TICK)
    await bus.events(topics.PAYMENTS_OVERPAYMENT_FORWARDED, count=1, timeout=60)
    await bus.tick(LAST_TICK)

    mine = set(EXPECTED_SPLITS) | {debit.debit_id}
    statements = await bus.events(
        topics.PAYMENTS_ALLOCATED,
        where=lambda e: isinstance(e.data, PaymentAllocated) and e.data.transaction_id in mine,
        settle=2.0,
        timeout=10,
    )
    forwarded = await bus.events(
        topics.PAYMENTS_OVERPAYMENT_FORWARDED,
        where=lambda e: (
            isinstance(e.data, PaymentOverpaymentForwarded) and e.data.merchant_id == MERCHANT
        ),
        timeout=10,
    )
    unmatched = await bus.events(
        topics.PAYMENTS_UNMATCHED,
        where=lambda e: isinstance(e.data, PaymentUnmatched) and e.data.transaction_id in mine,
        timeout=10,
    )
    return summarize(
        first_day, debit, statements, settled, forwarded, unmatched, _overpayment_report(database)
    )


def summarize(  # noqa: PLR0915 - one check per line of the summary
    first_day: Sequence[EventData],
    debit: MerchantDebitInstructed,
    statements: list[Any],
    settled: list[Any],
    forwarded: list[Any],
    unmatched: list[Any],
    report: str,
) -> tuple[int, list[str]]:
    paid: dict[str, Decimal] = {t.transaction_id: t.amount for t in first_day}  # type: ignore[attr-defined]
    paid["tx-2004"] = Decimal("80.00")
    paid[debit.debit_id] = debit.amount
    expected = dict(EXPECTED_SPLITS)
    expected[debit.debit_id] = [("INV-2032", "50.00", "merchant_debit")]
    latest: dict[str, PaymentAllocated] = {}
    failures = 0
    seen: set[str] = set()
    for e in statements:
        if e.id in seen:
            continue
        seen.add(e.id)
        # The transaction as it stands: its highest restatement (a consumer's rule).
        current = latest.get(e.data.transaction_id)
        if current is None or e.data.restatement > current.restatement:
            latest[e.data.transaction_id] = e.data
    lines = [
        "",
        "reconciliation: each transaction's latest statement, by restatement "
        "(allocations | forwarded | unallocated):",
    ]
    allocated = held = forwarded_total = unmatched_total = Decimal(0)
    unmatched_ids = {e.data.transaction_id: e.data.reason for e in unmatched}
    for tx, amount in paid.items():
        s = latest.get(tx)
        if s is None:
            failures += 1
            lines.append(f"  BAD {tx:24} no statement")
            continue
        split = [(a.invoice_number, f"{a.amount}", a.matched_by or "") for a in s.allocations]
        total = sum((a.amount for a in s.allocations), Decimal(0))
        adds_up = total + s.overpayment + s.unallocated == amount
        ok = adds_up and split == expected[tx]
        failures += not ok
        allocated += total
        forwarded_total += s.overpayment
        if tx in unmatched_ids:
            unmatched_total += s.unallocated
        else:
            held += s.unallocated
        shown = ", ".join(f"{n} {a} ({m})" for n, a, m in split) or "-"
        label = tx if not tx.startswith("md_") else "merchant debit"
        lines.append(
            f"  {'ok ' if ok else 'BAD'} {label:14} {amount:>8} = {shown} "
            f"| {s.overpayment} | {s.unallocated}"
            + (f" unmatched: {unmatched_ids[tx]}" if tx in unmatched_ids else "")
        )
    money_in = sum(paid.values(), Decimal(0))
    conserved = money_in == allocated + held + forwarded_total + unmatched_total
    want = (
        sum((Decimal(a) for split in expected.values() for _, a, _ in split), Decimal(0)),
        Decimal(0),
        sum(EXPECTED_FORWARDED.values(), Decimal(0)),
        sum((a for _, a in EXPECTED_UNMATCHED.values()), Decimal(0)),
    )
    as_expected = (allocated, held, forwarded_total, unmatched_total) == want
    failures += not (conserved and as_expected)
    lines.append(
        f"  {'ok ' if conserved and as_expected else 'BAD'} money in {money_in} = allocated "
        f"{allocated} + held {held} + forwarded {forwarded_total} + unmatched {unmatched_total}"
    )
    cafe = [e.data for e in statements if e.data.transaction_id == "tx-2021"]
    ok = len(cafe) >= 2 and cafe[0].unallocated == Decimal("400.00") and not cafe[0].allocations
    failures += not ok
    lines.append(
        f"  {'ok ' if ok else 'BAD'} tx-2021 was held in full before INV-2021 was issued, "
        "then applied to it"
    )
    got_forwarded = {e.data.transaction_id: e.data.amount for e in forwarded}
    ok = got_forwarded == EXPECTED_FORWARDED and len({e.id for e in forwarded}) == 1
    failures += not ok
    lines.append(f"  {'ok ' if ok else 'BAD'} forwarded to m-recon: {got_forwarded}")
    got_unmatched = dict(unmatched_ids)
    ok = got_unmatched == {t: r for t, (r, _) in EXPECTED_UNMATCHED.items()}
    failures += not ok
    lines.append(
        f"  {'ok ' if ok else 'BAD'} unmatched, kept for manual allocation: {got_unmatched}"
    )
    got_settled = {e.data.invoice_number: e.data.paid_total for e in settled}
    ok = got_settled == EXPECTED_SETTLED
    failures += not ok
    lines.append(
        f"  {'ok ' if ok else 'BAD'} invoices settled: {len(got_settled)} of "
        f"{len(EXPECTED_SETTLED)} ({', '.join(f'{n} {a}' for n, a in sorted(got_settled.items()))})"
    )
    lines.append(
        "  the merchant's overpayment report "
        "(python -m shared.ops reconciliation overpayments report):"
    )
    lines += [f"    {line}" for line in report.splitlines()]
    return failures, lines
