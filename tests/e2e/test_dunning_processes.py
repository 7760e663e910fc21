"""The dunning worker as real processes (``python -m services.dunning``) on the real broker,
with the test's own ticks:

- its metrics on /metrics: notices by level, hand-overs, pauses by who asked, rejections by
  reason, invoices overdue by bucket;
- a worker killed with SIGKILL in the middle of the ticks that send a few hundred notices,
  then restarted: every notice goes out, each (invoice, level) under one id, none twice in
  the ledger;
- two worker processes sharing the partitions: each invoice's notice once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from scripts.processes import Fleet, Process
from services.dunning.domain import notice_id_for
from shared import topics
from shared.events import DunningNotice
from tests.dunning_kit import berlin, issued, pause
from tests.e2e.fleets import fleet_for, metrics_matching
from tests.harness import Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DUE = date(2027, 1, 10)


@pytest.fixture
async def db(
    mongo: AsyncMongoClient[dict[str, Any]], namespace: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    yield mongo[f"{namespace}_dunning"]
    await mongo.drop_database(f"{namespace}_dunning")


async def all_issued(db: AsyncDatabase[dict[str, Any]], count: int, timeout: float = 60) -> None:
    """Until the worker has stored ``count`` invoices: a tick in the same batch as an
    invoice's issue fires only the timers stored before it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await db["invoices"].count_documents({}) < count:
        assert asyncio.get_running_loop().time() < deadline, "invoices not stored in time"
        await asyncio.sleep(0.1)


@pytest.fixture
def fleet(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = fleet_for(
        infra, namespace, tmp_path / "logs", "dunning", ticker=False, OVERDUE_GAUGE_SECONDS="0"
    )
    yield fleet
    fleet.stop_all()


def start(fleet: Fleet, **env: str) -> Process:
    process = fleet.start_worker("dunning", **env)
    process.wait_ready()
    return process


def sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.MULTILINE)
    found = pattern.search(text)
    assert found, f"no {name}{labels} in /metrics"
    return float(found.group(1))


async def notices_by_invoice(
    bus: Bus, count: int, timeout: float
) -> dict[tuple[str, int], set[str]]:
    events = await bus.events(topics.DUNNING_NOTICES, timeout=timeout, settle=2.0)
    by_step: dict[tuple[str, int], set[str]] = {}
    for event in events:
        data = event.data
        assert isinstance(data, DunningNotice)
        by_step.setdefault((data.order_id, data.level), set()).add(event.id)
    assert len(by_step) >= count or count == 0, f"{len(by_step)} of {count} notices"
    return by_step


async def test_metrics_count_notices_hand_overs_pauses_rejections_and_overdue_buckets(
    fleet: Fleet, bus: Bus, db: AsyncDatabase[dict[str, Any]]
) -> None:
    """Four invoices 0, 13, 21 and 30 days past due on the first tick (2027-01-11): one each in
    the overdue buckets 1-13, 14-20, 21-27, 28+. Each gets level 1 on that tick; then a
    merchant pause for the first (day 1: granted), an ops pause for the second, a merchant
    pause for the fourth (day 31: refused, outside_pause_window). Ticks on the three next days
    move the third to level 3 and the fourth to the hand-over. Expected, from the rules:
    level 1: 4, level 2: 2, level 3: 2, hand-overs 1, pauses merchant 1 / ops 1, rejection
    outside_pause_window 1; overdue on a tick the day after 1, 1, 1 and 0 (the fourth was
    handed over)."""
    worker = start(fleet)
    dues = {"o-a": DUE, "o-b": DUE - timedelta(days=13), "o-c": DUE - timedelta(days=21)}
    dues["o-e"] = DUE - timedelta(days=30)
    await bus.send_many([issued(o, due) for o, due in dues.items()])
    await all_issued(db, len(dues))
    await bus.tick(berlin(DUE + timedelta(days=1)))
    await metrics_matching(worker, r'dunning_notices_total\{level="1"\} 4\.0')
    text = await metrics_matching(worker, r'dunning_invoices_overdue\{bucket="28\+"\} 1\.0')
    for bucket in ("1-13", "14-20", "21-27"):
        assert sample(text, "dunning_invoices_overdue", f'{{bucket="{bucket}"}}') == 1
    await bus.send(pause("o-a"))
    await bus.send(pause("o-b", by="ops", reason="disputed"))
    await bus.send(pause("o-e"))
    await metrics_matching(worker, r'dunning_pauses_total\{requested_by="ops"\} 1\.0')
    await metrics_matching(worker, r'dunning_pauses_total\{requested_by="merchant"\} 1\.0')
    await bus.tick(berlin(DUE + timedelta(days=2)))
    await metrics_matching(worker, r'dunning_notices_total\{level="2"\} 2\.0')
    await bus.tick(berlin(DUE + timedelta(days=3)))
    await metrics_matching(worker, r'dunning_notices_total\{level="3"\} 2\.0')
    await bus.tick(berlin(DUE + timedelta(days=4)))
    await metrics_matching(worker, r"dunning_handed_over_total 1\.0")
    await bus.tick(berlin(DUE + timedelta(days=5)))  # the gauge is recounted on a tick
    text = await metrics_matching(worker, r'dunning_invoices_overdue\{bucket="28\+"\} 0\.0')
    assert sample(text, "dunning_notices_total", '{level="1"}') == 4
    assert sample(text, "dunning_notices_total", '{level="2"}') == 2
    assert sample(text, "dunning_notices_total", '{level="3"}') == 2
    assert sample(text, "dunning_commands_rejected_total", '{reason="outside_pause_window"}') == 1
    assert sample(text, "dunning_commands_rejected_total", '{reason="already_paused"}') == 0
    for bucket in ("1-13", "14-20", "21-27"):
        assert sample(text, "dunning_invoices_overdue", f'{{bucket="{bucket}"}}') == 1


async def test_a_worker_killed_mid_tick_and_restarted_sends_each_notice_once(
    fleet: Fleet, bus: Bus, db: AsyncDatabase[dict[str, Any]]
) -> None:
    """400 invoices due the same day; the worker fires at most 40 step timers per tick, and
    the test ticks every 0.2 s. As soon as the first notices are out the worker is SIGKILLed
    (whatever it was doing: firing, acting, publishing), then a new one starts and the ticks go
    on. Every invoice gets its level-1 notice, each under the one id derived from (order,
    invoice, level), and the ledger holds 400 notices."""
    invoices = 400
    first = start(fleet, DUNNING_FIRE_LIMIT="40")
    await bus.send_many([issued(f"o-{i}", DUE) for i in range(invoices)])
    await all_issued(db, invoices)
    day1 = berlin(DUE + timedelta(days=1))
    for n in range(3):
        await bus.tick(day1 + timedelta(seconds=n))
    await bus.events(topics.DUNNING_NOTICES, count=1, timeout=60)
    first.kill()
    start(fleet, DUNNING_FIRE_LIMIT="40")
    for n in range(3, 60):
        await bus.tick(day1 + timedelta(seconds=n))
        await asyncio.sleep(0.2)
    by_step = await notices_by_invoice(bus, invoices, timeout=60)
    assert set(by_step) == {(f"o-{i}", 1) for i in range(invoices)}
    for (order_id, level), ids in by_step.items():
        assert ids == {notice_id_for(order_id, f"INV-{order_id}", level)}


async def test_two_worker_processes_send_each_notice_once(
    fleet: Fleet, bus: Bus, db: AsyncDatabase[dict[str, Any]]
) -> None:
    """Two worker processes in one consumer group, the topics created with 4 partitions first
    (as a deployment would); 1,000 invoices fall due on one tick. Every invoice gets one
    level-1 notice under its derived id, and both processes acted on step timers (the
    invoices are sent once both read a share of the timer topic)."""
    invoices = 1000
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap)
    await admin.start()
    try:
        names = [topics.CLOCK_TICKS, topics.INVOICES_ISSUED, topics.timer_topic("dunning")]
        await admin.create_topics(
            [NewTopic(bus.topic(n), num_partitions=4, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()
    workers = [start(fleet, DUNNING_FIRE_LIMIT="200") for _ in range(2)]
    # The race starts once the group has settled: each process reads timer commands.
    for worker in workers:
        await metrics_matching(
            worker,
            r'worker_consumer_lag_messages\{[^}]*topic="internal\.dunning\.timer_fired"',
            timeout=60,
        )
    await bus.send_many([issued(f"o-{i}", DUE) for i in range(invoices)])
    await all_issued(db, invoices)
    day1 = berlin(DUE + timedelta(days=1))
    for n in range(40):
        await bus.tick(day1 + timedelta(seconds=n))
        await asyncio.sleep(0.25)
    by_step = await notices_by_invoice(bus, invoices, timeout=90)
    assert set(by_step) == {(f"o-{i}", 1) for i in range(invoices)}
    assert all(len(ids) == 1 for ids in by_step.values())
    for worker in workers:
        text = await metrics_matching(worker, r'worker_timers_handled_total\{.*outcome="acted"')
        acted = sample(
            text, "worker_timers_handled_total", '{action="step",outcome="acted",service="dunning"}'
        )
        assert acted > 0, f"{worker.name} never acted"
