"""The risk service on real Kafka and MongoDB: every outcome, idempotency, bad input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from schwifty import IBAN

from services.risk.app import build_worker
from services.risk.settings import RiskSettings
from shared import topics
from shared.envelope import CloudEvent
from shared.events import CommandRejected, EventData, OrderDecided, OrderStateChanged
from shared.runtime.app import Worker
from tests import examples as ex
from tests.harness import T0, Bus, headers_of

pytestmark = pytest.mark.integration


async def start_risk(run_worker: Any, **overrides: Any) -> Worker:
    worker: Worker = await run_worker(build_worker, RiskSettings, **overrides)
    return worker


async def decisions(bus: Bus, count: int, **kw: Any) -> dict[str, OrderDecided]:
    events = await bus.events(topics.ORDERS_DECIDED, count=count, **kw)
    out: dict[str, OrderDecided] = {}
    for e in events:
        assert isinstance(e.data, OrderDecided)
        out[e.data.order_id] = e.data
    return out


async def configure(bus: Bus, *, manual_review: bool = False) -> None:
    await bus.send(ex.merchant("m-1", manual_review=manual_review))
    await bus.send(ex.company("c-1"))


async def test_every_decline_reason_and_the_approve_path(bus: Bus, run_worker: Any) -> None:
    await start_risk(run_worker)
    good = ex.company("c-good")
    low = ex.company(
        "c-low",
        name="Klein Logistik",
        registration_number="HRB 2",
        vat_id=ex.VAT_IDS[1],
        score=20,
    )
    broke = ex.company(
        "c-broke",
        name="Pleite Bau AG",
        legal_form="AG",
        registration_number="HRB 3",
        vat_id=ex.VAT_IDS[2],
        insolvent=True,
    )
    unscored = ex.company(
        "c-unscored",
        name="Neu Start UG",
        legal_form="UG",
        registration_number="HRB 4",
        vat_id=ex.VAT_IDS[3],
        score=None,
    )
    small = ex.company(
        "c-small",
        name="Kiosk Schmidt",
        registration_number="HRB 5",
        vat_id=ex.VAT_IDS[4],
        financing_limit=Decimal("500.00"),
    )
    by_name = ex.company(
        "c-byname",
        name="Bäckerei Sonnenschein GmbH",
        registration_number="HRB 6",
        vat_id=ex.VAT_IDS[5],
        address=ex.address(postal_code="80331", city="München"),
    )
    await bus.send(ex.merchant("m-1"))
    for c in (good, low, broke, unscored, small, by_name):
        await bus.send(c)
    await bus.send_many(
        [
            ex.order("o-created", debtor=ex.debtor_of(good)),
            ex.order(
                "o-unknown",
                debtor=ex.debtor_of(
                    good,
                    name="Niemand KG",
                    registration_number=None,
                    vat_id=None,
                    address=ex.address(postal_code="99999"),
                ),
            ),
            ex.order(
                "o-address",
                debtor=ex.debtor_of(
                    good,
                    address=ex.address(street="Andere Str.", postal_code="20095", city="Hamburg"),
                ),
            ),
            ex.order("o-unscored", debtor=ex.debtor_of(unscored)),
            ex.order("o-low", debtor=ex.debtor_of(low)),
            ex.order("o-insolvent", debtor=ex.debtor_of(broke)),
            ex.order("o-limit", debtor=ex.debtor_of(small), gross="1190.00"),
            ex.order(
                "o-billing",
                debtor=ex.debtor_of(low, score=None) if False else ex.debtor_of(by_name),
                billing_address=ex.address(
                    street="Lagerweg", house_number="1", postal_code="04109", city="Leipzig"
                ),
            ),
            ex.order(
                "o-byname",
                debtor=ex.debtor_of(
                    by_name, name="Baeckerei Sonnenschein", registration_number=None, vat_id=None
                ),
                delivery_address=ex.address(street="Lagerweg", postal_code="04109", city="Leipzig"),
            ),
        ]
    )
    got = await decisions(bus, 9)
    expect = {
        "o-created": ("created", None),
        "o-unknown": ("declined", "debtor_not_identified"),
        "o-address": ("declined", "debtor_address"),
        "o-unscored": ("declined", "risk_scoring_failed"),
        "o-low": ("declined", "risk_policy"),
        "o-insolvent": ("declined", "risk_policy"),
        "o-limit": ("declined", "debtor_limit_exceeded"),
        "o-billing": ("declined", "risk_policy"),
        "o-byname": ("created", None),
    }
    assert {k: (v.state, v.decline_reason) for k, v in got.items()} == expect
    created = got["o-created"]
    assert created.viban is not None and IBAN(created.viban).validate()
    assert created.debtor_company_id == "c-good"
    assert created.ruleset_version and created.rule_hits
    assert got["o-byname"].debtor_company_id == "c-byname"
    assert got["o-unknown"].viban is None
    rule = {h.rule: h.outcome for h in got["o-limit"].rule_hits}
    assert rule["debtor_limit"] == "fail"

    changes = await bus.events(topics.ORDERS_STATE_CHANGED, count=9)
    assert all(isinstance(c.data, OrderStateChanged) and c.data.from_ is None for c in changes)


async def test_viban_is_stable_per_merchant_and_debtor(bus: Bus, run_worker: Any) -> None:
    await start_risk(run_worker)
    other = ex.company(
        "c-2", name="Schulz Technik", registration_number="HRB 77", vat_id=ex.VAT_IDS[6]
    )
    await bus.send(ex.merchant("m-1"))
    await bus.send(ex.merchant("m-2"))
    await bus.send(ex.company("c-1"))
    await bus.send(other)
    await bus.send_many(
        [
            ex.order("a1", merchant_id="m-1", gross="100.00"),
            ex.order("a2", merchant_id="m-1", gross="100.00"),
            ex.order("b1", merchant_id="m-2", gross="100.00"),
            ex.order("c1", merchant_id="m-1", debtor=ex.debtor_of(other), gross="100.00"),
        ]
    )
    got = await decisions(bus, 4)
    assert got["a1"].viban == got["a2"].viban
    assert len({got["a1"].viban, got["b1"].viban, got["c1"].viban}) == 3


async def test_waiting_then_reviewed(bus: Bus, run_worker: Any) -> None:
    worker = await start_risk(run_worker)
    await bus.send(ex.merchant("m-1", manual_review=True))
    await bus.send(ex.company("c-mid", score=50, financing_limit=Decimal("2000.00")))
    await bus.send_many([ex.order("w1", gross="1000.00"), ex.order("w2", gross="900.00")])
    waiting = await decisions(bus, 2)
    assert {k: v.state for k, v in waiting.items()} == {"w1": "waiting", "w2": "waiting"}
    assert waiting["w1"].viban is None

    await bus.send(ex.review("w1", "approve"))
    await bus.send(ex.review("w2", "decline"))
    await bus.send(ex.review("w2", "approve"))  # no longer waiting: refused
    events = await bus.events(topics.ORDERS_DECIDED, count=4)
    final = {e.data.order_id: e.data for e in events if isinstance(e.data, OrderDecided)}
    assert final["w1"].state == "created" and final["w1"].viban
    assert (final["w2"].state, final["w2"].decline_reason) == ("declined", "risk_policy")
    rejected = await bus.events(topics.COMMANDS_REJECTED, count=1)
    assert isinstance(rejected[0].data, CommandRejected)
    assert rejected[0].data.order_id == "w2" and "not waiting" in rejected[0].data.reason
    exposure = await worker.db["exposure"].find_one({"_id": "c-mid"})
    assert exposure is not None and exposure["exposure_cents"] == 100000  # w2 released


async def test_same_event_twice_gives_one_decision_and_one_reservation(
    bus: Bus, run_worker: Any
) -> None:
    worker = await start_risk(run_worker)
    await configure(bus)
    the_order = ex.order("dup", gross="1190.00")
    await bus.send(the_order, event_id="same-id")
    await bus.send(the_order, event_id="same-id")
    await bus.send(the_order, event_id="same-id")
    events = await bus.events(topics.ORDERS_DECIDED, count=1, settle=2.0)
    assert len({e.id for e in events}) == 1  # redeliveries replay the very same decision
    order = await worker.db["orders"].find_one({"_id": "dup"})
    assert order is not None
    assert [d["event_id"] for d in order["decisions"]] == ["same-id"]  # one audit record
    exposure = await worker.db["exposure"].find_one({"_id": "c-1"})
    assert exposure is not None and exposure["exposure_cents"] == 119000


async def test_malformed_orders_go_to_the_dlq_and_leave_no_state(bus: Bus, run_worker: Any) -> None:
    worker = await start_risk(run_worker)
    await configure(bus)
    valid = ex.order("fine").model_dump(mode="json", by_alias=True)
    envelope = {
        "specversion": "1.0",
        "id": "x",
        "source": "/merchant-api",
        "type": "order.requested.v1",
        "time": "2026-11-20T09:15:00Z",
        "subject": "bad",
        "datacontenttype": "application/json",
    }
    import json

    def with_data(**changes: Any) -> bytes:
        data = {**valid, "order_id": "bad", **changes}
        return json.dumps({**envelope, "data": data}).encode()

    float_money = with_data().replace(b'"gross": "1190.00"', b'"gross": 1190.0')
    assert float_money != with_data()
    bad = {
        "not-json": b"\x00\x01garbage",
        "float-money": float_money,
        "gross-mismatch": with_data(amount={"gross": "100.00", "net": "80.00", "tax": "19.00"}),
        "negative": with_data(amount={"gross": "-1.00", "net": "-1.00", "tax": "0.00"}),
        "missing-field": with_data(merchant_id=None),
        "unknown-type": json.dumps(
            {**envelope, "type": "order.requested.v2", "data": valid}
        ).encode(),
        "duration": with_data(duration_days=200),
    }
    for key, value in bad.items():
        await bus.send_raw(topics.ORDERS_REQUESTED, value, key=key.encode())
    await bus.send(ex.order("fine"))

    await decisions(bus, 1)
    dead = await bus.records(
        topics.dlq_topic(topics.ORDERS_REQUESTED), until=lambda r: len(r) >= len(bad)
    )
    kinds = {r.key.decode(): headers_of(r)["dlq-error-kind"] for r in dead}
    assert kinds == {
        "not-json": "json",
        "float-money": "json",
        "gross-mismatch": "schema",
        "negative": "schema",
        "missing-field": "schema",
        "unknown-type": "unknown_type",
        "duration": "schema",
    }
    errors = {r.key.decode(): headers_of(r)["dlq-error"] for r in dead}
    assert "data.amount" in errors["gross-mismatch"]
    assert "data.merchant_id" in errors["missing-field"]
    assert "data.duration_days" in errors["duration"]
    assert await worker.db["orders"].count_documents({}) == 1
    assert await worker.db["orders"].find_one({"_id": "bad"}) is None


async def test_order_from_unconfigured_merchant_waits_then_is_rejected(
    bus: Bus, run_worker: Any
) -> None:
    await start_risk(run_worker, park_ttl_seconds=60)
    await bus.send(ex.company("c-1"))
    await bus.send(ex.order("early", merchant_id="m-late"), time=T0)
    await bus.send(ex.order("never", merchant_id="m-never"), time=T0)
    await asyncio.sleep(1.0)
    await bus.send(ex.merchant("m-late"))  # the configuration arrives late
    await bus.tick(T0 + timedelta(seconds=10))
    got = await decisions(bus, 1)
    assert got["early"].state == "created"

    # The wait counts from when the worker parked the order (its clock), not from the
    # order's own time: a tick a minute past now is past the deadline.
    await bus.tick(datetime.now(UTC) + timedelta(seconds=61))
    rejected = await bus.events(topics.COMMANDS_REJECTED, count=1)
    data = rejected[0].data
    assert isinstance(data, CommandRejected)
    assert (data.order_id, data.reason) == ("never", "merchant_not_configured")


def _ids(events: list[CloudEvent[EventData]]) -> list[str]:
    return [e.id for e in events]


async def test_one_batch_identifies_by_id_and_by_name_and_postal_code_together(
    bus: Bus, run_worker: Any
) -> None:
    """Two debtors share a postal code and are known from an earlier batch (a first worker
    decides a warm-up order, then stops). Two orders then reach a second worker in one batch:
    one names its debtor by registration number, the other only by name and postal code. The
    first is identified by its id, the second by name: the companies of a postal code are
    still loaded for the claim no id identifies."""
    by_id = ex.company("c-by-id", address=ex.address(postal_code="10115", city="Berlin"))
    by_name = ex.company(
        "c-by-name",
        name="Bäckerei Sonnenschein GmbH",
        registration_number="HRB 99",
        vat_id=ex.VAT_IDS[5],
        address=ex.address(postal_code="10115", city="Berlin"),
    )
    first = await start_risk(run_worker)
    for data in (
        ex.merchant("m-1"),
        by_id,
        by_name,
        ex.order("o-warm", debtor=ex.debtor_of(by_id)),
    ):
        await bus.send(data)
    await decisions(bus, 1)
    await first.stop()
    await bus.send(ex.order("o-id", debtor=ex.debtor_of(by_id)))
    await bus.send(
        ex.order("o-name", debtor=ex.debtor_of(by_name, registration_number=None, vat_id=None))
    )
    await start_risk(run_worker)
    decided = await decisions(bus, 3)
    assert decided["o-id"].debtor_company_id == "c-by-id"
    assert decided["o-id"].state == "created"
    assert decided["o-name"].debtor_company_id == "c-by-name"
    assert decided["o-name"].state == "created"
