"""Reduce an order's amount before it ships (orders.amount_reduced), on shipping's pure
domain: each rule of the contract, and a hypothesis property over captures, reductions,
credit notes, settlements and cancels, each delivered twice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.shipping import domain as d
from tests.unit.test_shipping_domain import approved, credit, money, released, ship


def reduce_to(order: d.Order, gross: int, reduction_id: str = "red-1") -> d.Result:
    return d.reduce_amount(
        order, new_amount=money(gross), currency="EUR", reduction_id=reduction_id
    )


def order_changes(result: d.Result) -> list[tuple[str | None, str]]:
    return [(e.from_, e.to) for e in result.effects if isinstance(e, d.OrderStateChanged)]


def code(result: d.Result) -> str | None:
    return result.rejection.code if result.rejection else None


def test_a_reduction_releases_the_difference_once_and_bounds_later_captures() -> None:
    reduced = reduce_to(approved(100_000), 60_000)
    assert released(reduced) == 40_000
    assert reduced.order.total == 60_000
    assert order_changes(reduced) == []  # still created
    assert reduce_to(reduced.order, 60_000).effects == ()  # the same reduction again
    assert code(ship(reduced.order, "INV-1", 60_001)) == "over_capture"
    shipped = ship(reduced.order, "INV-1", 60_000)
    assert shipped.order.state == "shipped"
    assert order_changes(shipped) == [("created", "shipped")]


def test_a_partially_shipped_order_reduced_to_its_captures_is_shipped() -> None:
    partial = ship(approved(100_000), "INV-1", 30_000).order
    assert partial.state == "partially_shipped"
    result = reduce_to(partial, 30_000)
    assert result.order.state == "shipped"
    assert order_changes(result) == [("partially_shipped", "shipped")]
    assert released(result) == 70_000
    still_partial = reduce_to(partial, 50_000, "red-2")
    assert (still_partial.order.state, order_changes(still_partial)) == ("partially_shipped", [])


def test_refusals_name_what_is_wrong() -> None:
    order = ship(approved(100_000), "INV-1", 30_000).order
    assert code(reduce_to(order, 100_000)) == "amount_not_reduced"  # not below the total
    assert code(reduce_to(order, 100_001)) == "amount_not_reduced"  # raised
    assert code(reduce_to(order, 0)) == "reduction_to_zero"
    below = reduce_to(order, 29_999)
    assert code(below) == "reduction_below_captured"
    assert below.rejection is not None
    assert "300.00 already shipped" in below.rejection.reason
    dollars = d.reduce_amount(order, new_amount=money(50_000), currency="USD", reduction_id="x")
    assert code(dollars) == "currency_mismatch"
    shipped = ship(order, "INV-2", 70_000).order
    assert code(reduce_to(shipped, 50_000)) == "order_shipped"
    assert code(reduce_to(d.cancel(approved()).order, 50)) == "order_canceled"
    waiting = d.record_decision(
        d.record_terms(d.Order("o-w"), "m-1", 100, 30, "EUR").order, "waiting", None, None, "c-1"
    ).order
    assert code(reduce_to(waiting, 50)) == "order_waiting"
    assert reduce_to(d.Order("o-new"), 50).park is not None


def test_a_cancel_after_a_reduction_releases_only_the_rest() -> None:
    reduced = reduce_to(approved(100_000), 60_000)
    canceled = d.cancel(reduced.order)
    assert released(reduced) + released(canceled) == 100_000


commands = st.one_of(
    st.tuples(
        st.just("ship"), st.sampled_from(["INV-1", "INV-2", "INV-3"]), st.integers(1, 60_000)
    ),
    st.tuples(st.just("reduce"), st.sampled_from(["R-1", "R-2", "R-3"]), st.integers(0, 150_000)),
    st.tuples(
        st.just("credit"),
        st.sampled_from(["INV-1", "INV-2"]),
        st.just("CN-1"),
        st.integers(1, 60_000),
    ),
    st.tuples(st.just("settle"), st.sampled_from(["INV-1", "INV-2", "INV-3"])),
    st.tuples(st.just("cancel")),
)


@settings(max_examples=300, deadline=None)
@given(gross=st.integers(1, 150_000), script=st.lists(commands, max_size=20))
def test_reductions_never_release_twice_nor_let_captures_pass_the_total(
    gross: int, script: list[tuple[object, ...]]
) -> None:
    """Oracle from the rules: every release id appears once; all releases together never
    exceed the approved gross; captures never exceed the total, which only goes down, and
    each applied reduction took exactly its difference off it and released exactly that; an
    order whose captures
    equal its total is no longer partially shipped."""
    order = approved(gross)
    releases: dict[str, int] = {}
    for command in script:
        for _ in range(2):  # every command delivered twice
            total_before = order.total
            match command:
                case ("ship", str(number), int(amount)):
                    result = ship(order, number, amount)
                case ("reduce", str(reduction_id), int(new_gross)):
                    result = reduce_to(order, new_gross, reduction_id)
                case ("credit", str(number), str(note), int(amount)):
                    result = credit(order, number, note, amount)
                case ("settle", str(number)):
                    result = d.settle(order, number)
                case _:
                    result = d.cancel(order)
            for effect in result.effects:
                if isinstance(effect, d.ExposureReleased):
                    assert effect.release_id not in releases
                    releases[effect.release_id] = effect.amount
            if command[0] == "reduce" and result.rejection is not None:
                # Every refusal is a label shipping_reductions_total exports from the start.
                assert result.rejection.code in d.REDUCTION_REFUSALS
            if result.changed:
                order = result.order
            if command[0] == "reduce" and result.changed and result.effects:
                assert order.total < total_before
                assert order.total == command[2]
                assert released(result) == total_before - order.total  # exactly the difference
            else:
                assert order.total == total_before
            assert order.captured <= order.total
            assert sum(releases.values()) <= gross  # at every step, not only at the end
            if order.captured == order.total:
                assert order.state != "partially_shipped"
    assert sum(releases.values()) <= gross
    assert order.released == sum(releases.values())
