"""The dunning worker on real Kafka and MongoDB, moved through weeks by synthetic ticks.

Each test runs one worker and many invoices side by side (each its own order), ticks once a
day at 09:00 Berlin time (or as the test says), waits after every tick until the worker has
acted on every step timer the tick fired, and compares every notice and hand-over on the
topics with a list written by hand from the rules (docs/dunning-rules.md): day N overdue is
N calendar days after the due date in Europe/Berlin, notices on counted days 1, 14, 21,
hand-over on 28, paused days not counted, missed steps one per day.
"""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from datetime import date, timedelta
from typing import Any

import pytest

from services.dunning.app import build_worker
from services.dunning.domain import notice_id_for
from services.dunning.settings import DunningSettings
from shared import topics
from shared.events import CommandRejected, DunningNotice
from shared.ops import main as ops_main
from shared.runtime.app import Worker
from tests.dunning_kit import (
    VIBAN,
    berlin,
    canceled,
    credited,
    issued,
    paid,
    pause,
    quiet,
    settled,
    steps_sent,
)
from tests.harness import Bus

pytestmark = pytest.mark.integration

DUE = date(2027, 1, 10)  # day 1 overdue is 2027-01-11
OTHER_VIBAN = "DE89370400440532013000"


def day(n: int) -> date:
    return DUE + timedelta(days=n)


async def test_the_ladder_payments_pauses_and_closings_on_daily_ticks(
    bus: Bus, run_worker: Any
) -> None:
    """Thirteen invoices due 2027-01-10, daily ticks from day 0 to day 40, events sent between
    the ticks of the days the rules talk about. Every step sent, its day, days overdue and
    amount, must be exactly the hand-written list; the refused pauses are on
    commands.rejected with their reasons."""
    worker: Worker = await run_worker(build_worker, DunningSettings, overdue_gauge_seconds=0)
    db = worker.db
    orders = [
        "o-full", "o-pay0", "o-pay1", "o-settle1", "o-pay2", "o-pay3", "o-partial",
        "o-merchant", "o-late-merchant", "o-ops", "o-cancel", "o-credit", "o-credit-part",
    ]  # fmt: skip
    # o-full's debtor has a VIBAN of its own: each notice carries its invoice's.
    sent = [await bus.send(issued(o, DUE, viban=OTHER_VIBAN if o == "o-full" else VIBAN))
            for o in orders]  # fmt: skip
    await quiet(db, sent)

    # Events to send after the tick of a given day, by day.
    between: dict[int, list[Any]] = {
        0: [paid("o-pay0", "1190.00", "tx-pay0")],  # paid in full before day 1
        1: [settled("o-settle1")],  # settled after level 1
        3: [pause("o-merchant")],  # merchant pause on day 3: covers days 3..9
        4: [paid("o-pay1", "1190.00", "tx-pay1")],  # after level 1, before level 2
        5: [pause("o-merchant")],  # a second merchant pause: refused
        8: [pause("o-late-merchant")],  # day 8: outside the merchant's window
        10: [
            pause("o-ops", by="ops", reason="debtor disputes delivery"),  # covers 10..16
            paid("o-partial", "190.00", "tx-partial"),  # partial: 1000.00 still due
            canceled("o-cancel"),
            credited("o-credit", "1190.00", "0.00"),  # fully credited
            credited("o-credit-part", "119.00", "1071.00"),  # partly credited
        ],
        15: [paid("o-pay2", "1190.00", "tx-pay2")],  # after level 2, before level 3
        24: [paid("o-pay3", "1000.00", "tx-pay3a"), paid("o-pay3", "190.00", "tx-pay3b")],
    }
    for n in range(0, 41):
        await quiet(db, [await bus.tick(berlin(day(n)))])
        await quiet(db, [await bus.send(event) for event in between.get(n, [])])

    full = "1190.00"
    expected = sorted(
        [
            *[("o-full", lvl, day(d), d, full) for lvl, d in ((1, 1), (2, 14), (3, 21))],
            ("o-full", 4, day(28), 0, full),
            ("o-pay1", 1, day(1), 1, full),
            ("o-settle1", 1, day(1), 1, full),
            *[("o-pay2", lvl, day(d), d, full) for lvl, d in ((1, 1), (2, 14))],
            *[("o-pay3", lvl, day(d), d, full) for lvl, d in ((1, 1), (2, 14), (3, 21))],
            ("o-partial", 1, day(1), 1, full),
            *[("o-partial", lvl, day(d), d, "1000.00") for lvl, d in ((2, 14), (3, 21))],
            ("o-partial", 4, day(28), 0, "1000.00"),
            # Paused days 3..9 (7 days): 14 counted days on day 21, 21 on 28, 28 on 35.
            ("o-merchant", 1, day(1), 1, full),
            *[("o-merchant", lvl, day(d), d, full) for lvl, d in ((2, 21), (3, 28))],
            ("o-merchant", 4, day(35), 0, full),
            # Refused pause: the plain ladder.
            *[("o-late-merchant", lvl, day(d), d, full) for lvl, d in ((1, 1), (2, 14), (3, 21))],
            ("o-late-merchant", 4, day(28), 0, full),
            # Ops pause on day 10 (after the merchant's window), days 10..16 paused.
            ("o-ops", 1, day(1), 1, full),
            *[("o-ops", lvl, day(d), d, full) for lvl, d in ((2, 21), (3, 28))],
            ("o-ops", 4, day(35), 0, full),
            ("o-cancel", 1, day(1), 1, full),
            ("o-credit", 1, day(1), 1, full),
            ("o-credit-part", 1, day(1), 1, full),
            *[("o-credit-part", lvl, day(d), d, "1071.00") for lvl, d in ((2, 14), (3, 21))],
            ("o-credit-part", 4, day(28), 0, "1071.00"),
        ]
    )
    assert await steps_sent(bus, settle=1.0) == expected

    vibans = {
        (e.data.order_id, e.data.viban)
        for e in await bus.events(topics.DUNNING_NOTICES)
        if isinstance(e.data, DunningNotice)
    }
    assert {v for o, v in vibans if o == "o-full"} == {OTHER_VIBAN}
    assert {v for o, v in vibans if o != "o-full"} == {VIBAN}

    rejected = await bus.events(topics.COMMANDS_REJECTED, count=2, settle=0.5)
    reasons = sorted(
        (e.data.order_id, e.data.reason.split(":")[0])
        for e in rejected
        if isinstance(e.data, CommandRejected)
    )
    assert reasons == [
        ("o-late-merchant", "outside_pause_window"),
        ("o-merchant", "already_paused"),
    ]
    # Nothing left to do for anyone: every invoice is handed over, paid, settled or canceled.
    assert await db["timers"].count_documents({}) == 0


async def test_a_day_boundary_across_the_spring_change_and_a_40_day_jump(
    bus: Bus, run_worker: Any
) -> None:
    """Berlin moves to summer time on 2027-03-28. An invoice due that day is 1 day overdue
    from 2027-03-28T22:00Z (midnight CEST): a tick at 21:45Z (23:45 in Berlin) sends nothing,
    one at 22:30Z (00:30 on the 29th; in UTC, and at the winter offset, still the 28th)
    sends level 1. A second invoice due 2027-03-30 sees its first tick 40 days later (the
    worker's clock jumps): its steps come one per day, in order, on the ticks of the
    following days, and so do the first invoice's missed steps."""
    worker: Worker = await run_worker(build_worker, DunningSettings)
    db = worker.db
    spring, later = date(2027, 3, 28), date(2027, 3, 30)
    await quiet(db, [await bus.send(issued("o-dst", spring))])
    await quiet(db, [await bus.tick(berlin(spring, 23, 45))])
    assert await steps_sent(bus, settle=0.5) == []
    await quiet(db, [await bus.tick(berlin(date(2027, 3, 29), 0, 30))])
    assert await steps_sent(bus) == [("o-dst", 1, date(2027, 3, 29), 1, "1190.00")]

    await quiet(db, [await bus.send(issued("o-jump", later))])
    jump = later + timedelta(days=40)  # 2027-05-09
    ticks = [berlin(jump, 9), berlin(jump, 15)] + [
        berlin(jump + timedelta(days=n), 9) for n in range(1, 5)
    ]
    for moment in ticks:
        await quiet(db, [await bus.tick(moment)])

    def on(n: int) -> date:
        return jump + timedelta(days=n)

    assert await steps_sent(bus, settle=1.0) == sorted(
        [
            ("o-dst", 1, date(2027, 3, 29), 1, "1190.00"),
            ("o-dst", 2, on(0), 42, "1190.00"),
            ("o-dst", 3, on(1), 43, "1190.00"),
            ("o-dst", 4, on(2), 0, "1190.00"),
            ("o-jump", 1, on(0), 40, "1190.00"),
            ("o-jump", 2, on(1), 41, "1190.00"),
            ("o-jump", 3, on(2), 42, "1190.00"),
            ("o-jump", 4, on(3), 0, "1190.00"),
        ]
    )


def ops(worker: Worker, *argv: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    database = ["--mongodb-uri", worker.settings.mongodb_uri, "--database", worker.db.name]
    with redirect_stdout(out):
        ops_main(["dunning", *database, *argv])
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_the_ops_commands_show_the_timeline_pause_through_kafka_and_list_hand_overs(
    bus: Bus, run_worker: Any
) -> None:
    """After level 1 (day 1) the timeline shows it and level 2 on day 14; ``pause`` publishes
    an ops pause that the worker grants (the timeline then shows it, and level 2 moves to day
    21); ``handovers due`` lists an invoice at level 3 whose hand-over is within the days
    asked, and not the other."""
    worker: Worker = await run_worker(build_worker, DunningSettings)
    db = worker.db
    await quiet(db, [await bus.send(issued("o-t", DUE)), await bus.send(issued("o-h", day(-21)))])
    for n in (1, 2, 3):
        await quiet(db, [await bus.tick(berlin(day(n)))])
    [line, summary] = ops(worker, "timeline", "INV-o-t")
    assert [(s["step"], s["event_id"]) for s in line["sent"]] == [
        ("notice level 1", notice_id_for("o-t", "INV-o-t", 1))
    ]
    assert (line["next_step"], line["next_step_on"]) == ("notice level 2", day(14).isoformat())
    assert summary["summary"]["invoices"] == 1

    # The command runs its own event loop (asyncio.run), so not in this test's.
    published = await asyncio.to_thread(
        ops, worker, "pause", "o-t", "INV-o-t", "--reason", "disputed",
        "--kafka", bus.bootstrap, "--topic-prefix", bus.prefix,
    )  # fmt: skip
    await quiet(db, [published[0]["event_id"]])
    [line, _] = ops(worker, "timeline", "INV-o-t")
    assert line["pauses"] == [
        {"from": day(3).isoformat(), "to": day(9).isoformat(), "requested_by": "ops",
         "reason": "disputed"}
    ]  # fmt: skip
    assert line["next_step_on"] == day(21).isoformat()

    # o-h: due 21 days before DUE, level 3 went out on day 24 (DUE+3); hand-over on its
    # day 28 = DUE+7.
    listed = ops(worker, "handovers", "due", "--days", "5")
    assert [(x.get("order_id"), x.get("hand_over_on")) for x in listed[:-1]] == [
        ("o-h", day(7).isoformat())
    ]
    assert ops(worker, "handovers", "due", "--days", "3")[:-1] == []
