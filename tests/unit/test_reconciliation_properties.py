"""Reconciliation under hypothesis: random interleavings of invoices, credit notes,
cancellations, bank transfers (some to an unknown VIBAN or in another currency, some re-used
transaction ids), merchant-reported payments with their collection, and time advances, each
input delivered twice.

The oracle is built from the inputs: what money came in (the first content of each
transaction id, each collected debit's amount), what each invoice may take (its gross less the
credit notes the rules accept, nothing once canceled), when each transaction arrived. It is
checked against what the effects say (the latest ``PaymentAllocated`` of every transaction,
the forwardings, the settlements), never by asking the domain's own functions."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.reconciliation import domain as d
from services.reconciliation.matching import named_invoices

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
GRACE = timedelta(days=3)
VIBAN = "DE02120300000000202051"
UNKNOWN_VIBAN = "DE00999999999999999999"
PAYEE = d.Payee("m-1", "DE89370400440532013000")
NUMBERS = ["INV-1", "INV-2", "INV-3", "INV-4"]

# Ways a debtor writes an invoice number in the remittance text.
STYLES: list[Callable[[str], str]] = [
    lambda n: n,
    lambda n: n.lower().replace("-", " "),
    lambda n: "Rechnung Nr. " + n.removeprefix("INV-"),
    lambda n: "RE:" + n.replace("-", ""),
]

invoice_index = st.integers(0, len(NUMBERS) - 1)
# A few round amounts make exact matches, full payments and full credit notes likely.
ROUND = [5_000, 10_000, 15_000, 20_000, 30_000]


def amounts(top: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(ROUND), st.integers(1, top))


# An invoice issued again is mostly the same content (a redelivery), sometimes other content.
issue = st.tuples(
    st.just("issue"), invoice_index, st.one_of(st.none(), amounts(50_000)), st.integers(0, 40)
)
commands = st.one_of(
    issue,
    st.tuples(st.just("credit"), invoice_index, st.sampled_from(["CN-1", "CN-2"]), amounts(30_000)),
    st.tuples(st.just("cancel"), invoice_index),
    st.tuples(
        st.just("transfer"),
        st.sampled_from(["tx-1", "tx-2", "tx-3", "tx-4", "tx-5", "tx-6"]),
        amounts(80_000),
        st.lists(invoice_index, max_size=2),
        st.integers(0, len(STYLES) - 1),
        st.sampled_from([VIBAN, VIBAN, VIBAN, UNKNOWN_VIBAN]),
        st.sampled_from(["EUR", "EUR", "EUR", "USD"]),
    ),
    st.tuples(st.just("report"), invoice_index, amounts(30_000), st.integers(0, 3)),
    st.tuples(st.just("collect"), st.integers(0, 5)),
    st.tuples(st.just("advance"), st.integers(1, 100)),
)
# Most interesting histories start with some invoices already issued.
scripts = st.builds(
    lambda first, rest: [*first, *rest],
    st.lists(issue, max_size=3),
    st.lists(commands, min_size=3, max_size=30),
)


@dataclass
class InvoiceInput:
    """What the inputs say an invoice may take."""

    gross: int
    credited: int = 0
    canceled: bool = False
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def cap(self) -> int:
        return 0 if self.canceled else self.gross - self.credited


@dataclass
class MoneyIn:
    amount: int
    viban: str
    currency: str
    arrived: datetime
    content: tuple[object, ...]


@dataclass
class World:
    grosses: list[int]
    now: datetime = START
    accounts: dict[str, d.Account] = field(default_factory=dict)
    invoices: dict[str, InvoiceInput] = field(default_factory=dict)
    money_in: dict[str, MoneyIn] = field(default_factory=dict)
    debits: list[d.MerchantDebitInstructed] = field(default_factory=list)
    # what the effects say
    latest: dict[str, d.PaymentAllocated] = field(default_factory=dict)
    forwarded: dict[str, int] = field(default_factory=dict)
    settled: dict[str, int] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)


def fresh_world(grosses: list[int]) -> World:
    known = d.record_order(
        d.Account(VIBAN), order_id="o-1", merchant_id="m-1", debtor_id="c-1", decision="created"
    ).account
    return World(grosses, accounts={VIBAN: known, UNKNOWN_VIBAN: d.Account(UNKNOWN_VIBAN)})


@dataclass(frozen=True)
class Step:
    viban: str
    result: d.Result
    conflict: bool = False  # a known transaction id with other content


def run(world: World, command: tuple[object, ...], delivery: int) -> Step | None:
    """Apply one command to the domain; also note in the oracle what the inputs decide."""
    acc = world.accounts[VIBAN]
    match command:
        case ("issue", int(k), int(gross) | (None as gross), int(due_in)):
            number = NUMBERS[k]
            if gross is None:  # the invoice's usual content
                gross, due_in = world.grosses[k], 7 * k
            world.invoices.setdefault(number, InvoiceInput(gross))
            return Step(
                VIBAN,
                d.issue_invoice(
                    acc,
                    invoice_number=number,
                    order_id="o-1",
                    merchant_id="m-1",
                    debtor_id="c-1",
                    gross=gross,
                    issued_on=world.now.date(),
                    due_on=date(2026, 12, 1) + timedelta(days=due_in),
                    now=world.now,
                    grace=GRACE,
                ),
            )
        case ("credit", int(k), str(note), int(amount)):
            number = NUMBERS[k]
            invoice = world.invoices.get(number)
            if (
                invoice is not None
                and not invoice.canceled
                and note not in invoice.notes
                and amount <= invoice.gross - invoice.credited
            ):
                invoice.credited += amount
                invoice.notes[note] = amount
                invoice.canceled = invoice.credited == invoice.gross
            return Step(
                VIBAN,
                d.apply_credit_note(
                    acc,
                    invoice_number=number,
                    credit_note_number=note,
                    amount=amount,
                    now=world.now,
                    grace=GRACE,
                ),
            )
        case ("cancel", int(k)):
            number = NUMBERS[k]
            if number in world.invoices:
                world.invoices[number].canceled = True
            return Step(
                VIBAN, d.cancel_invoice(acc, invoice_number=number, now=world.now, grace=GRACE)
            )
        case ("transfer", str(tx), int(amount), list(refs), int(style), str(viban), str(cur)):
            text = ", ".join(STYLES[style](NUMBERS[k]) for k in refs) or "Danke"
            content = (amount, text, viban, cur)
            seen = world.money_in.get(tx)
            if seen is None:
                world.money_in[tx] = MoneyIn(amount, viban, cur, world.now, content)
            return Step(
                viban,
                d.receive_transfer(
                    world.accounts[viban],
                    transaction_id=tx,
                    amount=amount,
                    currency=cur,
                    booking_date=date(2026, 12, 1),
                    debtor_name="Muster GmbH",
                    debtor_iban="DE75512108001245126199",
                    remittance_information=text,
                    now=world.now,
                    grace=GRACE,
                    transaction_id_seen_on=None if seen is None else seen.viban,
                ),
                seen is not None and seen.content != content,
            )
        case ("report", int(k), int(amount), int(n)):
            return Step(
                VIBAN,
                d.report_payment(
                    acc,
                    report_id=f"report-{n}",
                    order_id="o-1",
                    invoice_number=NUMBERS[k],
                    amount=amount,
                ),
            )
        case ("collect", int(n)):
            if not world.debits:
                return None
            debit = world.debits[n % len(world.debits)]
            world.money_in.setdefault(
                debit.debit_id, MoneyIn(debit.amount, VIBAN, "EUR", world.now, ())
            )
            return Step(
                VIBAN,
                d.collect_debit(
                    acc,
                    debit_id=debit.debit_id,
                    order_id=debit.order_id,
                    invoice_number=debit.invoice_number,
                    amount=debit.amount,
                    now=world.now,
                    grace=GRACE,
                ),
            )
        case ("advance", int(hours)):
            if delivery == 0:  # the same tick twice is the same time twice
                world.now += timedelta(hours=hours)
            return Step(VIBAN, d.forward_due_credit(acc, now=world.now, payee=PAYEE))
    raise AssertionError(command)


def allocated_to(world: World, number: str) -> int:
    return sum(
        a.amount for s in world.latest.values() for a in s.allocations if a.invoice_number == number
    )


def record(world: World, result: d.Result) -> None:
    """Fold one result's effects into the ledger, checking each as it comes."""
    for effect in result.effects:
        if isinstance(effect, d.PaymentAllocated):
            came = world.money_in[effect.transaction_id]
            previous = world.latest.get(effect.transaction_id)
            assert effect.restatement == (0 if previous is None else previous.restatement + 1)
            assert effect.event_id not in world.event_ids
            world.event_ids.add(effect.event_id)
            parts = [a.amount for a in effect.allocations]
            parts += [effect.overpayment, effect.held, effect.unmatched]
            assert all(part >= 0 for part in parts)
            # conservation, to the cent, in every single statement
            assert sum(parts) == came.amount
            if came.viban == UNKNOWN_VIBAN or came.currency != "EUR":
                assert effect.allocations == ()
                assert effect.unmatched == came.amount
            else:
                assert effect.unmatched == 0
            for a in effect.allocations:
                assert a.invoice_number in world.invoices  # only issued invoices take money
            world.latest[effect.transaction_id] = effect
        elif isinstance(effect, d.OverpaymentForwarded):
            came = world.money_in[effect.transaction_id]
            assert world.now >= came.arrived + GRACE  # never forwarded too early
            assert (effect.merchant_id, effect.payout_iban) == (
                PAYEE.merchant_id,
                PAYEE.payout_iban,
            )
            assert effect.event_id not in world.event_ids
            world.event_ids.add(effect.event_id)
            world.forwarded[effect.transaction_id] = (
                world.forwarded.get(effect.transaction_id, 0) + effect.amount
            )
        elif isinstance(effect, d.InvoiceSettled):
            assert effect.invoice_number not in world.settled  # settled once
            world.settled[effect.invoice_number] = effect.paid_total
        elif isinstance(effect, d.MerchantDebitInstructed):
            assert effect.debit_id not in {debit.debit_id for debit in world.debits}
            world.debits.append(effect)
        elif isinstance(effect, d.PaymentUnmatched):
            came = world.money_in[effect.transaction_id]
            expected = "unknown_viban" if came.viban == UNKNOWN_VIBAN else "unsupported_currency"
            assert effect.reason == expected
    # settled effects are checked against the invoice as it stands after this command
    for effect in result.effects:
        if isinstance(effect, d.InvoiceSettled):
            invoice = world.invoices[effect.invoice_number]
            assert effect.paid_total == invoice.cap == allocated_to(world, effect.invoice_number)


def check_books(world: World) -> None:
    # every transaction that came in is stated, and the whole adds up
    assert set(world.latest) == set(world.money_in)
    total_in = sum(m.amount for m in world.money_in.values())
    allocated = sum(a.amount for s in world.latest.values() for a in s.allocations)
    held = sum(s.held for s in world.latest.values())
    forwarded = sum(s.overpayment for s in world.latest.values())
    unmatched = sum(s.unmatched for s in world.latest.values())
    assert total_in == allocated + held + forwarded + unmatched
    # what the forwardings moved is what the statements call overpayment
    for tx, statement in world.latest.items():
        assert statement.overpayment == world.forwarded.get(tx, 0)
    # no invoice takes more than it is worth; settled exactly when fully paid
    for number, invoice in world.invoices.items():
        paid = allocated_to(world, number)
        assert paid <= invoice.cap
        if not invoice.canceled:
            assert (paid == invoice.cap) == (number in world.settled)
    # credit is never held while an open invoice could take it
    if held > 0:
        for number, invoice in world.invoices.items():
            assert allocated_to(world, number) == invoice.cap


@settings(max_examples=500, deadline=None)
@given(grosses=st.lists(amounts(50_000), min_size=4, max_size=4), script=scripts)
def test_money_is_conserved_and_never_allocated_twice(
    grosses: list[int], script: list[tuple[object, ...]]
) -> None:
    world = fresh_world(grosses)
    for command in [*script, ("advance", 24 * 10)]:  # finally: every grace period is over
        refused_first = False
        for delivery in range(2):  # every input is delivered twice
            before = copy.deepcopy(world.accounts)
            step = run(world, command, delivery)
            if step is None:
                continue
            assert world.accounts == before  # the domain works on a copy
            record(world, step.result)
            if delivery == 0:
                refused_first = step.result.rejection is not None
            else:
                assert step.result.effects == (), f"second delivery of {command} acted again"
                # ... and is not refused either, unless the first one was
                assert refused_first or step.result.rejection is None
            if step.conflict:
                assert step.result.rejection is not None
                assert step.result.rejection.code == "transaction_conflict"
            elif command[0] == "transfer":
                assert step.result.rejection is None  # a transfer seen before is one payment
            if step.result.changed:
                world.accounts[step.viban] = step.result.account
            else:
                assert step.result.effects == ()
                assert step.result.account == before[step.viban]  # a refusal changes nothing
            check_books(world)
    # after the last grace period nothing is held: all is allocated, forwarded or unmatched
    assert all(s.held == 0 for s in world.latest.values())
    assert d.next_action_at(world.accounts[VIBAN]) is None


# -- finding invoice numbers, whatever way they are written -----------------------------------

digit_groups = st.lists(st.text("0123456789", min_size=1, max_size=4), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["", "INV-", "RE-", "INV/"]),
    groups=digit_groups,
    written_prefix=st.sampled_from(["", "Rechnung Nr. ", "RE: ", "inv ", "Invoice no. ", "RE"]),
    separator=st.sampled_from(["", " ", "-", "/", ".", " - "]),
    upper=st.booleans(),
)
def test_an_invoice_number_is_found_however_it_is_written(
    prefix: str, groups: list[str], written_prefix: str, separator: str, upper: bool
) -> None:
    """The number's digits, in its groups joined by any separator, after any common prefix,
    in any case, inside other words: found. Inside a longer number: not found."""
    number = prefix + "-".join(groups)
    written = written_prefix + separator.join(groups)
    written = written.upper() if upper else written.lower()
    assert named_invoices(f"Zahlung {written} danke", [number]) == [number]
    assert named_invoices(f"Zahlung 9{''.join(groups)}0 danke", [number]) == []
