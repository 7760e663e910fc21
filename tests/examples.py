"""Valid example events, as contract models, with overrides. Shared by tests, demo and bench."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from shared.events import (
    Address,
    Amount,
    CompanyRegistered,
    Debtor,
    DunningHandedOver,
    Fee,
    InvoiceCreditNoted,
    InvoiceSettled,
    LineItem,
    MerchantConfigured,
    OrderCanceled,
    OrderDecided,
    OrderRequested,
    OrderReviewed,
    OrderShipped,
)

# Valid German VAT ids (ISO 7064 check digit), so python-stdnum accepts them.
VAT_IDS = (
    "DE135792460",
    "DE246813573",
    "DE112233446",
    "DE556677881",
    "DE998877660",
    "DE314159262",
    "DE271828180",
    "DE161803398",
    "DE141421358",
    "DE173205089",
)


def address(**overrides: Any) -> Address:
    fields: dict[str, Any] = {
        "street": "Friedrichstraße",
        "house_number": "68",
        "postal_code": "10117",
        "city": "Berlin",
        "country": "DE",
    }
    return Address(**(fields | overrides))


def merchant(merchant_id: str = "m-1", **overrides: Any) -> MerchantConfigured:
    fields: dict[str, Any] = {
        "merchant_id": merchant_id,
        "name": "Werkzeughandel Nord GmbH",
        "payout_iban": "DE89370400440532013000",
        "fee": Fee(percent=Decimal("1.90"), fixed=Decimal("0.25")),
        "manual_review": False,
    }
    return MerchantConfigured(**(fields | overrides))


def company(company_id: str = "c-1", **overrides: Any) -> CompanyRegistered:
    fields: dict[str, Any] = {
        "company_id": company_id,
        "name": "Müller Maschinenbau GmbH",
        "legal_form": "GmbH",
        "registration_number": "HRB 12345 B",
        "vat_id": VAT_IDS[0],
        "address": address(),
        "industry": "manufacturing",
        "insolvent": False,
        "score": 80,
        "financing_limit": Decimal("10000.00"),
    }
    return CompanyRegistered(**(fields | overrides))


def debtor_of(registered: CompanyRegistered, **overrides: Any) -> Debtor:
    fields: dict[str, Any] = {
        "name": registered.name,
        "legal_form": registered.legal_form,
        "registration_number": registered.registration_number,
        "vat_id": registered.vat_id,
        "address": registered.address,
    }
    return Debtor(**(fields | overrides))


def amount(gross: str = "1190.00") -> Amount:
    g = Decimal(gross)
    net = (g / Decimal("1.19")).quantize(Decimal("0.01"))
    return Amount(gross=g, net=net, tax=g - net)


def order(
    order_id: str = "o-1",
    *,
    merchant_id: str = "m-1",
    debtor: Debtor | None = None,
    gross: str = "1190.00",
    **overrides: Any,
) -> OrderRequested:
    total = amount(gross)
    fields: dict[str, Any] = {
        "order_id": order_id,
        "merchant_id": merchant_id,
        "external_code": f"EXT-{order_id}",
        "amount": total,
        "currency": "EUR",
        "duration_days": 30,
        "debtor": debtor or debtor_of(company()),
        "line_items": [
            LineItem(
                description="Spindle motor",
                quantity=1,
                unit_price_net=total.net,
                vat_rate="19.00",
            )
        ],
    }
    return OrderRequested(**(fields | overrides))


def review(order_id: str, outcome: str = "approve", **overrides: Any) -> OrderReviewed:
    fields: dict[str, Any] = {"order_id": order_id, "outcome": outcome, "reviewer": "ops-anna"}
    return OrderReviewed(**(fields | overrides))


VIBAN = "DE02120300000000202051"
SHIPPED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def decided(order_id: str = "o-1", state: str = "created", **overrides: Any) -> OrderDecided:
    """What the risk service publishes; lets shipping tests run without it."""
    fields: dict[str, Any] = {
        "order_id": order_id,
        "merchant_id": "m-1",
        "state": state,
        "decline_reason": "risk_policy" if state == "declined" else None,
        "debtor_company_id": "c-1" if state != "declined" else None,
        "viban": VIBAN if state == "created" else None,
        "ruleset_version": "test",
        "rule_hits": [],
    }
    return OrderDecided(**(fields | overrides))


def shipment(
    order_id: str = "o-1", invoice_number: str = "INV-1", gross: str = "1190.00", **overrides: Any
) -> OrderShipped:
    fields: dict[str, Any] = {
        "order_id": order_id,
        "invoice_number": invoice_number,
        "amount": amount(gross),
        "shipped_at": SHIPPED_AT,
    }
    return OrderShipped(**(fields | overrides))


def cancellation(order_id: str = "o-1") -> OrderCanceled:
    return OrderCanceled(order_id=order_id, reason="customer withdrew")


def credit_note(
    order_id: str = "o-1",
    invoice_number: str = "INV-1",
    credit_note_number: str = "CN-1",
    gross: str = "119.00",
) -> InvoiceCreditNoted:
    return InvoiceCreditNoted(
        order_id=order_id,
        invoice_number=invoice_number,
        credit_note_number=credit_note_number,
        amount=amount(gross),
    )


def settled(
    order_id: str = "o-1", invoice_number: str = "INV-1", paid: str = "1190.00"
) -> InvoiceSettled:
    return InvoiceSettled(
        invoice_number=invoice_number,
        order_id=order_id,
        settled_on=date(2026, 12, 1),
        paid_total=Decimal(paid),
    )


def handed_over(order_id: str = "o-1", invoice_number: str = "INV-1") -> DunningHandedOver:
    return DunningHandedOver(
        invoice_number=invoice_number,
        order_id=order_id,
        amount_due=Decimal("1190.00"),
        handed_over_on=date(2027, 1, 19),
    )
