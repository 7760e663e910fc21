"""Valid example events, as contract models, with overrides. Shared by tests, demo and bench."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.events import (
    Address,
    Amount,
    CompanyRegistered,
    Debtor,
    Fee,
    LineItem,
    MerchantConfigured,
    OrderRequested,
    OrderReviewed,
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
