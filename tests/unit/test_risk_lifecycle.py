"""Risk's order lifecycle (request, review, cancel, release) on the pure domain, in cents:
one example per rule, then a hypothesis property over random interleavings of the four
commands, each delivered twice, checked against a model written from the rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from services.risk import domain as d
from services.risk.ruleset import CURRENT_RULESET as RULES
from tests.unit.test_risk_domain import CLAIM, COMPANY

LIMIT = 100_000  # 1000.00
MID_SCORE = replace(COMPANY, score=50, financing_limit=LIMIT)  # in the manual review band
FOUND = d.Identification(MID_SCORE, "registration_number")
REVIEWING = d.MerchantPolicy("m-review", manual_review=True)
PLAIN = d.MerchantPolicy("m-plain", manual_review=False)


def requested(
    order_id: str,
    gross: int,
    merchant: d.MerchantPolicy = REVIEWING,
    *,
    existing: d.RiskOrder | None = None,
    exposure: int = 0,
    fingerprint: str | None = None,
) -> d.Result:
    return d.request(
        existing,
        d.OrderToDecide(order_id, merchant.merchant_id, gross, CLAIM, None, None),
        fingerprint=fingerprint or f"{order_id}/{gross}/{merchant.merchant_id}",
        currency="EUR",
        merchant=merchant,
        identification=FOUND,
        exposure=exposure,
        known_to_merchant=False,
        ruleset=RULES,
    )


def waiting(gross: int = 40_000) -> d.Result:
    result = requested("o-1", gross)
    assert result.order is not None
    assert result.order.state == "waiting"
    return result


def state_changes(result: d.Result) -> list[tuple[str | None, str]]:
    return [(e.from_, e.to) for e in result.effects if isinstance(e, d.StateChanged)]


def released(result: d.Result) -> list[tuple[str, int]]:
    return [(e.release_id, e.amount) for e in result.effects if isinstance(e, d.Released)]


# -- examples, one per rule -------------------------------------------------------------------


def test_a_request_reserves_its_gross_once() -> None:
    """Decided waiting (reviewing merchant, score in band): the gross is reserved. The same
    order again, even long after the inbox forgot it, reserves nothing more; the same order
    id with other content is refused."""
    first = waiting(40_000)
    assert first.exposure == 40_000
    assert state_changes(first) == [(None, "waiting")]
    again = requested("o-1", 40_000, existing=first.order, exposure=first.exposure)
    assert (again.order, again.exposure, again.effects) == (first.order, 40_000, ())
    other = requested("o-1", 1, existing=first.order, exposure=40_000, fingerprint="other")
    assert other.rejection is not None
    assert other.rejection.code == "order_id_reused"
    assert other.exposure == 40_000


def test_a_request_beyond_the_limit_is_declined_and_reserves_nothing() -> None:
    result = requested("o-2", 60_001, PLAIN, exposure=40_000)
    assert result.order is not None
    assert (result.order.state, result.order.decline_reason) == (
        "declined",
        "debtor_limit_exceeded",
    )
    assert (result.order.reserved, result.exposure) == (0, 40_000)


def test_unknown_merchant_parks_and_other_currencies_are_refused() -> None:
    unknown = d.request(
        None,
        d.OrderToDecide("o-1", "m-x", 100, CLAIM, None, None),
        fingerprint="f",
        currency="EUR",
        merchant=None,
        identification=FOUND,
        exposure=0,
        known_to_merchant=False,
        ruleset=RULES,
    )
    assert unknown.park == d.Park("merchant_not_configured")
    dollars = d.request(
        None,
        d.OrderToDecide("o-1", "m-plain", 100, CLAIM, None, None),
        fingerprint="f",
        currency="USD",
        merchant=PLAIN,
        identification=FOUND,
        exposure=0,
        known_to_merchant=False,
        ruleset=RULES,
    )
    assert dollars.rejection == d.Rejection("unsupported_currency", "USD")


def test_review_approve_creates_and_keeps_the_reservation() -> None:
    start = waiting()
    result = d.review(
        start.order,
        event_id="r-1",
        outcome="approve",
        decline_reason=None,
        exposure=40_000,
        ruleset=RULES,
    )
    assert result.order is not None
    assert (result.order.state, result.order.reserved, result.exposure) == (
        "created",
        40_000,
        40_000,
    )
    assert state_changes(result) == [("waiting", "created")]
    decided = [e for e in result.effects if isinstance(e, d.Decided)]
    assert [(x.state, x.decline_reason) for x in decided] == [("created", None)]


def test_review_decline_releases_and_the_same_review_again_changes_nothing() -> None:
    start = waiting()
    result = d.review(
        start.order,
        event_id="r-1",
        outcome="decline",
        decline_reason=None,
        exposure=40_000,
        ruleset=RULES,
    )
    assert result.order is not None
    assert (result.order.state, result.order.decline_reason) == ("declined", "risk_policy")
    assert (result.order.reserved, result.exposure) == (0, 0)
    assert released(result) == [("risk:o-1:review_declined", 40_000)]
    again = d.review(
        result.order, event_id="r-1", outcome="decline", decline_reason=None, exposure=0,
        ruleset=RULES,
    )  # fmt: skip
    assert (again.order, again.effects, again.rejection) == (result.order, (), None)
    other = d.review(
        result.order, event_id="r-2", outcome="approve", decline_reason=None, exposure=0,
        ruleset=RULES,
    )  # fmt: skip
    assert other.rejection is not None
    assert "not waiting" in other.rejection.reason


def test_cancel_while_waiting_ends_the_review_for_good() -> None:
    """The cancel releases the reservation and moves waiting -> canceled; the later review
    is refused with a reason, and nothing turns the order created."""
    start = waiting()
    canceled = d.cancel(start.order, event_id="c-1", exposure=40_000)
    assert canceled.order is not None
    assert (canceled.order.state, canceled.order.reserved, canceled.exposure) == ("canceled", 0, 0)
    assert state_changes(canceled) == [("waiting", "canceled")]
    assert released(canceled) == [("risk:o-1:canceled", 40_000)]
    review = d.review(
        canceled.order, event_id="r-1", outcome="approve", decline_reason=None, exposure=0,
        ruleset=RULES,
    )  # fmt: skip
    assert review.rejection == d.Rejection(
        "order_canceled", "the order was canceled while it waited for review"
    )
    assert review.effects == ()
    assert d.cancel(canceled.order, event_id="c-1", exposure=0).effects == ()
    second = d.cancel(canceled.order, event_id="c-2", exposure=0)
    assert second.rejection is not None
    assert second.rejection.code == "order_canceled"


def test_cancel_of_a_created_or_declined_order_is_left_to_shipping() -> None:
    created = requested("o-1", 40_000, PLAIN)
    assert created.order is not None
    assert created.order.state == "created"
    result = d.cancel(created.order, event_id="c-1", exposure=40_000)
    assert (result.order, result.exposure, result.effects, result.rejection) == (
        created.order,
        40_000,
        (),
        None,
    )


def test_a_cancel_for_an_order_not_seen_yet_waits_and_is_never_refused_by_risk() -> None:
    assert d.cancel(None, event_id="c-1", exposure=0).park == d.Park(
        "unknown_order", reject_on_expiry=False
    )


def test_a_release_applies_once_never_more_than_the_order_holds() -> None:
    created = requested("o-1", 40_000, PLAIN)
    assert created.order is not None
    first = d.release(
        created.order, release_id="rel-1", amount=10_000, reason="credit_note", exposure=40_000
    )
    assert first.order is not None
    assert (first.order.reserved, first.exposure) == (30_000, 30_000)
    replayed = d.release(
        first.order, release_id="rel-1", amount=10_000, reason="credit_note", exposure=30_000
    )
    assert (replayed.order, replayed.exposure, replayed.effects) == (first.order, 30_000, ())
    capped = d.release(
        first.order, release_id="rel-2", amount=99_999, reason="canceled", exposure=30_000
    )
    assert released(capped) == [("rel-2", 30_000)]
    assert capped.exposure == 0


def test_a_release_id_is_spent_on_first_sight_even_where_it_gives_nothing() -> None:
    """A release for an order that is not created gives nothing, and seen again once the
    order is created it still gives nothing: the outcome is the same whether or not the
    inbox dropped the second delivery."""
    start = waiting()
    result = d.release(
        start.order, release_id="rel-1", amount=100, reason="settled", exposure=40_000
    )
    assert (result.exposure, result.effects) == (40_000, ())
    assert result.order is not None
    assert result.order.reserved == 40_000
    approved = d.review(
        result.order, event_id="r", outcome="approve", decline_reason=None, exposure=40_000,
        ruleset=RULES,
    )  # fmt: skip
    again = d.release(
        approved.order, release_id="rel-1", amount=100, reason="settled", exposure=40_000
    )
    assert (again.exposure, again.effects) == (40_000, ())
    assert d.release(None, release_id="r", amount=1, reason="settled", exposure=0).park == d.Park(
        "unknown_order"
    )


# -- the property -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    event_id: str
    order_id: str
    gross: int
    reviewing: bool


@dataclass(frozen=True)
class Review:
    event_id: str
    order_id: str
    approve: bool


@dataclass(frozen=True)
class Cancel:
    event_id: str
    order_id: str


@dataclass(frozen=True)
class Release:
    event_id: str
    order_id: str
    amount: int


Command = Request | Review | Cancel | Release
ORDER_IDS = ("o-1", "o-2", "o-3", "o-4")


@st.composite
def deliveries(draw: st.DrawFn) -> list[Command]:
    """Distinct commands over a few orders of one debtor, each delivered twice, shuffled.
    Each order is requested once, maybe a second time with other content (refused)."""
    commands: list[Command] = []
    for order_id in ORDER_IDS:
        for n in range(draw(st.integers(min_value=1, max_value=2))):
            commands.append(
                Request(
                    f"req-{order_id}-{n}",
                    order_id,
                    draw(st.integers(min_value=1, max_value=LIMIT)),
                    draw(st.booleans()),
                )
            )
    others = st.sampled_from(ORDER_IDS)
    for n in range(draw(st.integers(min_value=0, max_value=12))):
        kind = draw(st.sampled_from(("review", "cancel", "release")))
        order_id = draw(others)
        if kind == "review":
            commands.append(Review(f"rev-{n}", order_id, draw(st.booleans())))
        elif kind == "cancel":
            commands.append(Cancel(f"can-{n}", order_id))
        else:
            amount = draw(st.integers(min_value=1, max_value=LIMIT))
            commands.append(Release(f"rel-{n}", order_id, amount))
    return list(draw(st.permutations(commands + commands)))


def deliver_with_parking(
    commands: list[Command],
    apply: Callable[[Command], bool],
) -> None:
    """The engine's schedule: a command for an order not seen yet is parked (once per event
    id) and retried, in the order parked, after every delivery."""
    parked: dict[str, Command] = {}
    for command in commands:
        if not apply(command):
            parked.setdefault(command.event_id, command)
        for event_id, waiting_command in list(parked.items()):
            if apply(waiting_command):
                del parked[event_id]
    assert not parked, "every order is requested, so nothing waits forever"


@dataclass
class ModelOrder:
    state: str
    gross: int
    reserved: int


def model(commands: list[Command]) -> tuple[dict[str, ModelOrder], int]:
    """The rules, written out plainly: the first request of an order decides it (declined
    when the debtor's open exposure plus its gross exceeds the limit, else waiting for a
    reviewing merchant, else created) and reserves its gross; an event id counts once; a
    review or cancel acts only on a waiting order (approve -> created; decline or cancel ->
    released); a release acts once per id on a created order, capped at what it holds."""
    orders: dict[str, ModelOrder] = {}
    seen: set[str] = set()
    exposure = 0

    def apply(command: Command) -> bool:
        nonlocal exposure
        if isinstance(command, Request):
            if command.order_id not in orders:
                if exposure + command.gross > LIMIT:
                    orders[command.order_id] = ModelOrder("declined", command.gross, 0)
                else:
                    state = "waiting" if command.reviewing else "created"
                    orders[command.order_id] = ModelOrder(state, command.gross, command.gross)
                    exposure += command.gross
            return True
        order = orders.get(command.order_id)
        if order is None:
            return False
        if command.event_id in seen:
            return True
        seen.add(command.event_id)
        if isinstance(command, Review | Cancel) and order.state == "waiting":
            if isinstance(command, Review) and command.approve:
                order.state = "created"
            else:
                order.state = "declined" if isinstance(command, Review) else "canceled"
                exposure -= order.reserved
                order.reserved = 0
        elif isinstance(command, Release) and order.state == "created":
            given = min(command.amount, order.reserved)
            order.reserved -= given
            exposure -= given
        return True

    deliver_with_parking(commands, apply)
    return orders, exposure


ALLOWED = {
    (None, "waiting"),
    (None, "created"),
    (None, "declined"),
    ("waiting", "created"),
    ("waiting", "declined"),
    ("waiting", "canceled"),
}


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_lifecycle_over_random_interleavings_each_delivered_twice(
    commands: list[Command],
) -> None:
    orders: dict[str, d.RiskOrder] = {}
    exposure = 0
    transitions: dict[str, list[tuple[str | None, str]]] = {o: [] for o in ORDER_IDS}
    release_counts: dict[str, int] = {}

    def apply(command: Command) -> bool:
        nonlocal exposure
        order = orders.get(command.order_id)
        merchant = REVIEWING if isinstance(command, Request) and command.reviewing else PLAIN
        match command:
            case Request():
                result = requested(
                    command.order_id,
                    command.gross,
                    merchant,
                    existing=order,
                    exposure=exposure,
                    fingerprint=command.event_id,
                )
            case Review():
                result = d.review(
                    order,
                    event_id=command.event_id,
                    outcome="approve" if command.approve else "decline",
                    decline_reason=None,
                    exposure=exposure,
                    ruleset=RULES,
                )
            case Cancel():
                result = d.cancel(order, event_id=command.event_id, exposure=exposure)
            case Release():
                result = d.release(
                    order,
                    release_id=command.event_id,
                    amount=command.amount,
                    reason="credit_note",
                    exposure=exposure,
                )
        if result.park is not None:
            return False
        # The rejections metric exports this closed set at 0: a code outside it would be a
        # series nobody sees the first time.
        assert result.rejection is None or result.rejection.code in d.REJECTION_CODES
        if result.rejection is None and result.order is not None:
            orders[command.order_id] = result.order
            exposure = result.exposure
        transitions[command.order_id] += state_changes(result)
        for release_id, _ in released(result):
            release_counts[release_id] = release_counts.get(release_id, 0) + 1

        # After every step: never negative, never above what is approved or waiting, and
        # exactly what the orders still hold.
        holding = [o for o in orders.values() if o.state in {"waiting", "created"}]
        assert 0 <= exposure <= LIMIT
        assert exposure <= sum(o.gross for o in holding)
        assert exposure == sum(o.reserved for o in orders.values())
        return True

    deliver_with_parking(commands, apply)

    expected, expected_exposure = model(commands)
    assert {k: (o.state, o.reserved) for k, o in orders.items()} == {
        k: (o.state, o.reserved) for k, o in expected.items()
    }
    assert exposure == expected_exposure
    assert all(count == 1 for count in release_counts.values()), release_counts
    for order_id, path in transitions.items():
        assert set(path) <= ALLOWED, (order_id, path)
        assert len(path) == len(set(path)), (order_id, path)  # no transition twice
        if ("waiting", "canceled") in path:  # a canceled order never becomes created
            assert path[path.index(("waiting", "canceled")) + 1 :] == []
            assert ("waiting", "created") not in path
