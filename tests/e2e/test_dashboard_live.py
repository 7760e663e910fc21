"""The dashboard and the alerts on a real Prometheus (Debian's 2.42, what compose deploys).

Once per module: the risk, shipping and reconciliation workers start as processes, a private
Prometheus (session fixture, 1 s scrape and evaluation, deploy/prometheus/alerts.yml loaded,
the deployed scrape job re-pointed at the workers' ports) scrapes them, and a scenario runs
through them:
an order approved, shipped (a payout), canceled (a clawback); an order approved and its
amount reduced (part of the debtor's limit given back); an order in a currency risk refuses
(a rejection); a record on orders.shipped that is not JSON (a dead letter); a transfer to an
unknown VIBAN (an unmatched payment). Each of those is
the first of its kind since the workers started.

Then, through Prometheus's HTTP API: every dashboard query and every alert expression
evaluates without error, every panel has data, and each rare event shows on its panel and
fires its alert.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import AsyncMongoClient

from scripts.processes import Fleet, free_port
from scripts.prom import PrivatePrometheus, PrometheusAPI, PrometheusError, render_config
from shared import topics
from shared.events import OrderAmountReduced, OrderDecided
from tests import examples as ex
from tests import recon_examples as rx
from tests.harness import Bus
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DEPLOY = Path(__file__).parents[2] / "deploy"
# Every panel query must return data after the scenario (an empty one means a renamed metric).
MAY_BE_EMPTY: frozenset[str] = frozenset()
SCRAPE_INTERVAL = "1s"
# How long the workers park an event that waits for something (here: the unknown VIBAN's
# transfer waits for a decision before it is unmatched).
PARK_TTL_SECONDS = 30


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query) for every target of every panel."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "paylater.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def panel_query(title_start: str, metric: str) -> str:
    matches = [q for title, q in dashboard_queries() if title.startswith(title_start)]
    found = [q for q in matches if metric in q]
    assert len(found) == 1, f"one query of panel {title_start!r} on {metric}: {matches}"
    return found[0]


def alert_expressions() -> dict[str, str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrivatePrometheus]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: bash scripts/prometheus.sh install (as root)")
    server = PrivatePrometheus(port=free_port())
    server.start(render_config({}, interval=SCRAPE_INTERVAL))
    yield server
    server.stop()


@dataclass
class Live:
    api: PrometheusAPI
    bus: Bus
    started_at: float


async def poll(
    what: str, probe: Any, timeout: float = 30.0, prometheus: PrivatePrometheus | None = None
) -> Any:
    """``probe()`` until it returns something truthy; fails with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        await asyncio.sleep(0.5)
    log = f"\nprometheus log:\n{prometheus.log_tail()}" if prometheus else ""
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r}){log}")


@pytest.fixture(scope="module")
async def live(
    infra: Infra, prometheus: PrivatePrometheus, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Live]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    knobs = {
        "BATCH_TIMEOUT_MS": "5",
        "LAG_REFRESH_SECONDS": "0.5",
        "PARK_TTL_SECONDS": str(PARK_TTL_SECONDS),
        "DEAD_LETTER_REFRESH_SECONDS": "1",
    }
    fleet = Fleet(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "MONGODB_URI": infra.mongodb_uri,
            "TOPIC_PREFIX": f"{namespace}.",
            "LOG_LEVEL": "WARNING",
            **{
                f"{service.upper()}_{name}": value
                for service in ("risk", "shipping", "reconciliation", "dunning", "einvoice_status")
                for name, value in {
                    **knobs,
                    "MONGODB_DATABASE": f"{namespace}_{service}",
                }.items()
            },
        },
        log_dir=tmp_path_factory.mktemp("live-logs"),
    )
    bus = Bus(infra.kafka_bootstrap, f"{namespace}.")
    api = prometheus.api
    try:
        started_at = time.monotonic()
        risk = fleet.start_worker("risk")
        shipping = fleet.start_worker("shipping")
        reconciliation = fleet.start_worker("reconciliation")
        einvoice = fleet.start_worker("einvoice_status")  # idle: no Billit merchant here
        dunning = fleet.start_worker("dunning")
        fleet.start_ticker(0.5)
        risk.wait_ready()
        shipping.wait_ready()
        reconciliation.wait_ready()
        einvoice.wait_ready()
        dunning.wait_ready()
        targets = {
            "risk": risk.http_port,
            "shipping": shipping.http_port,
            "reconciliation": reconciliation.http_port,
            "einvoice_status": einvoice.http_port,
            "dunning": dunning.http_port,
        }
        prometheus.configure(
            render_config(
                {service: f"127.0.0.1:{port}" for service, port in targets.items()},
                interval=SCRAPE_INTERVAL,
            )
        )
        # Both workers scraped once before the first rare event, as in production where
        # Prometheus has long scraped a worker when its first dead letter comes.
        await poll(
            "every worker scraped",
            lambda: api.value('count(up{job="paylater-workers"} == 1)') == len(targets),
            prometheus=prometheus,
        )
        await bus.start()
        await bus.send_many([ex.merchant("m-1"), ex.company("c-1")])
        await asyncio.sleep(0.5)  # configuration first, as the gateway would
        await bus.send_many([ex.order("o-1", gross="1190.00"), ex.order("o-4", gross="1190.00")])
        await bus.events(
            topics.ORDERS_DECIDED,
            count=2,
            where=lambda e: isinstance(e.data, OrderDecided) and e.data.state == "created",
        )
        await bus.send(ex.shipment("o-1", "INV-1", gross="1190.00"))
        await bus.events(topics.PAYOUTS_INSTRUCTED, count=1)
        await bus.send(ex.cancellation("o-1"))  # after shipping: the payout is clawed back
        # Before shipping: 190.00 of the debtor's limit given back.
        await bus.send(OrderAmountReduced(order_id="o-4", amount=ex.amount("1000.00")))
        await bus.send(ex.order("o-2", currency="USD"))  # risk decides EUR orders only
        await bus.send_raw(topics.ORDERS_SHIPPED, b"this is not json", key=b"o-3")
        # A transfer to a VIBAN no order has: parked for the park TTL, then unmatched, waiting
        # for manual allocation.
        await bus.send(rx.transfer("tx-live", "DE11LIVE00000000000404", "25.00", "INV-1"))
        yield Live(api, bus, started_at)
    finally:
        await bus.stop()
        fleet.stop_all()
        prometheus.configure(render_config({}, interval=SCRAPE_INTERVAL))
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongodb_uri)
        for service in ("risk", "shipping", "reconciliation", "dunning", "einvoice_status"):
            await mongo.drop_database(f"{namespace}_{service}")
        await mongo.close()


def firing(api: PrometheusAPI, alertname: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in api.alerts()
        if a["labels"].get("alertname") == alertname
        and a["state"] == "firing"
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def positive(api: PrometheusAPI, query: str, **labels: str) -> list[dict[str, Any]]:
    return [
        s
        for s in api.query(query)
        if float(s["value"][1]) > 0 and all(s["metric"].get(k) == v for k, v in labels.items())
    ]


async def test_the_first_dead_letter_shows_on_its_panel_and_fires_its_alert(live: Live) -> None:
    """One record on orders.shipped that is not JSON: the dead-letter panel shows it for
    (shipping, orders.shipped, json) and DeadLettersArriving fires with those labels."""
    query = panel_query("Dead letters", "worker_dead_letters_total")
    labels = {"service": "shipping", "topic": "orders.shipped", "kind": "json"}
    await poll("the dead letter on its panel", lambda: positive(live.api, query, **labels))
    await poll("DeadLettersArriving", lambda: firing(live.api, "DeadLettersArriving", **labels))
    # Until an operator acts on it, it is pending: the pending panel shows it (the workers
    # read the count back from the ops store).
    pending = panel_query("Dead letters pending", "worker_dead_letters_pending")
    await poll(
        "the dead letter on the pending panel", lambda: positive(live.api, pending, **labels)
    )


async def test_the_first_rejection_of_a_reason_shows_and_fires(live: Live) -> None:
    """One order in USD: risk rejects it as unsupported_currency, the rejections panel shows
    that reason and CommandsRejectedForANewReason fires for (risk, unsupported_currency)."""
    query = panel_query("Rejected commands", "risk_commands_rejected_total")
    reason = "unsupported_currency"
    await poll("the rejection on its panel", lambda: positive(live.api, query, reason=reason))
    await poll(
        "CommandsRejectedForANewReason",
        lambda: firing(live.api, "CommandsRejectedForANewReason", service="risk", reason=reason),
    )


async def test_the_first_clawback_shows_and_fires(live: Live) -> None:
    """One shipped order canceled: the clawback panels show reason canceled and
    ClawbacksInstructed fires for (canceled, EUR)."""
    count = panel_query("Shipping: clawbacks", "shipping_clawbacks_instructed_total")
    amount = panel_query("Shipping: money out", "shipping_clawbacks_instructed_amount_total")
    await poll("the clawback on its panel", lambda: positive(live.api, count, reason="canceled"))
    await poll("the amount clawed back", lambda: positive(live.api, amount, currency="EUR"))
    await poll(
        "ClawbacksInstructed",
        lambda: firing(live.api, "ClawbacksInstructed", reason="canceled", currency="EUR"),
    )


async def test_a_reduction_shows_on_its_panels(live: Live) -> None:
    """One order reduced from 1190.00 to 1000.00 before shipping: the reductions panel shows
    outcome applied, the panel of what reductions gave back shows EUR, and risk's releases
    panel shows the cause amount_reduced."""
    outcomes = panel_query("Shipping: order amount reductions", "shipping_reductions_total")
    released = panel_query(
        "Shipping: limit given back by amount reductions",
        "shipping_reductions_released_amount_total",
    )
    risk = panel_query("Risk: exposure releases", "risk_exposure_releases_total")
    await poll(
        "the reduction on its panel", lambda: positive(live.api, outcomes, outcome="applied")
    )
    await poll("the limit given back", lambda: positive(live.api, released, currency="EUR"))
    await poll("risk's release", lambda: positive(live.api, risk, reason="amount_reduced"))


async def test_an_unmatched_payment_shows_on_the_reconciliation_panels(live: Live) -> None:
    """One transfer to an unknown VIBAN: it is parked for the park TTL (its VIBAN's decision
    may be on its way), then unmatched at the next tick. The transactions panel shows outcome
    unmatched and the unmatched-payments panel one payment waiting (the gauge refreshes on
    ticks)."""
    outcomes = panel_query("Reconciliation: transactions", "reconciliation_transactions_total")
    waiting = panel_query("Reconciliation: unmatched", "reconciliation_unmatched_payments")
    await poll(
        "the unmatched outcome",
        lambda: positive(live.api, outcomes, outcome="unmatched"),
        timeout=PARK_TTL_SECONDS + 30.0,
    )
    await poll("one payment waiting", lambda: live.api.value(waiting) == 1, timeout=60)


async def test_every_panel_and_alert_query_evaluates_and_every_panel_has_data(
    live: Live,
) -> None:
    """Every panel query and every alert expression through /api/v1/query: a parse or
    evaluation error fails. Every panel query returns data (a renamed metric returns none);
    the payout, decision, event and batch panels the scenario feeds show more than zero.
    Every rule's own evaluation in Prometheus is healthy, and no paging alert is pending or
    firing."""
    for alert, expr in alert_expressions().items():
        try:
            live.api.query(expr)
        except PrometheusError as exc:
            pytest.fail(f"alert {alert}: {exc}")

    def empty_panels() -> list[tuple[str, str]]:
        empty = []
        for title, query in dashboard_queries():
            try:
                result = live.api.query(query)
            except PrometheusError as exc:
                pytest.fail(f"panel {title!r}: {exc}")
            if not result and query not in MAY_BE_EMPTY:
                empty.append((title, query))
        return empty

    try:
        await poll("data on every panel", lambda: not empty_panels())
    except AssertionError:
        pytest.fail(f"panels without data after the scenario: {empty_panels()}")

    # Counters with closed label sets (pre-initialised at 0) only: a series that first
    # appears with its final value, such as published events by output topic, may show no
    # rate at all when every increase came before its first scrape.
    fed = [
        panel_query("Shipping: payouts", "shipping_payouts_instructed_total"),
        panel_query("Shipping: money out", "shipping_payouts_instructed_amount_total"),
        panel_query("Risk decisions", "risk_decisions_total"),
        panel_query("Input events", "worker_events_total"),
        panel_query("Records per batch", "worker_batch_size_records"),
    ]
    for query in fed:
        await poll(f"{query} above 0", lambda q=query: positive(live.api, q))
    batch_p99 = panel_query("Batch duration", "histogram_quantile(0.99")
    await poll("a p99 batch time", lambda: positive(live.api, batch_p99))

    rules = [r for g in live.api.rule_groups() for r in g["rules"]]
    assert {r["name"] for r in rules} == set(alert_expressions())
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
    assert not unhealthy
    # Healthy workers page nobody (the rare events above are tickets).
    pages = [a["labels"] for a in live.api.alerts() if a["labels"].get("severity") == "page"]
    assert not pages
