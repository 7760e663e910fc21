"""The e-invoice service's MongoDB documents.

- ``merchants``: ``{_id: merchant_id, einvoicing, party_id}`` from ``merchants.configured``;
- ``companies``: the credit-bureau record (name, VAT id, registration number, address);
- ``orders``: what ``orders.requested`` said about the debtor, the amount and the line items;
- ``vibans``: ``{_id: VIBAN, billit}`` for every VIBAN seen in ``invoices.issued``, so that
  a payment to a VIBAN of a merchant without e-invoicing is ignored at once, and one to a
  VIBAN not seen yet waits for its invoice;
- ``einvoices``: one per issued invoice of a Billit merchant (``domain.EInvoice``), under
  ``<order_id>/<invoice_number>``: its Billit documents, delivery status, receiver response
  history, payment reports and a history of what happened. Found by order (every event about
  an invoice but payments carries it) and by (VIBAN, invoice number) for ``payments.allocated``,
  which is keyed by the VIBAN and names invoice numbers only.

Every write is in the batch's transaction; two workers writing one document conflict and
one retries (MongoDB's write conflict), so no update is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.einvoice_status.domain import EInvoice

Doc = dict[str, Any]
EINVOICES = "einvoices"


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    await db[EINVOICES].create_index([("order_id", ASCENDING)])
    await db[EINVOICES].create_index([("viban", ASCENDING), ("invoice_number", ASCENDING)])
    await db[EINVOICES].create_index([("invoice_number", ASCENDING)])


def einvoice_from_doc(doc: Doc) -> EInvoice:
    return EInvoice.model_validate({**doc, "id": doc["_id"]})


def einvoice_to_doc(invoice: EInvoice) -> Doc:
    doc = invoice.model_dump(mode="python", exclude={"id"})
    # BSON has dates with times only.
    doc["issued_on"] = invoice.issued_on.isoformat()
    doc["due_on"] = invoice.due_on.isoformat()
    for step in doc["steps"]:
        step["on"] = step["on"].isoformat()
    return {"_id": invoice.id, **doc}


@dataclass
class EinvoiceView:
    """What one batch reads and writes."""

    session: AsyncClientSession
    db: AsyncDatabase[Doc]
    merchants: dict[str, Doc] = field(default_factory=dict)
    companies: dict[str, Doc] = field(default_factory=dict)
    orders: dict[str, Doc] = field(default_factory=dict)
    einvoices: dict[str, EInvoice] = field(default_factory=dict)
    vibans: dict[str, bool] = field(default_factory=dict)  # VIBAN -> its merchant uses Billit
    dirty: set[str] = field(default_factory=set)
    writes: dict[str, list[UpdateOne | ReplaceOne[Doc]]] = field(default_factory=dict)

    async def _load(self, collection: str, ids: Iterable[str], into: dict[str, Doc]) -> None:
        wanted = list({i for i in ids if i not in into})
        if wanted:
            async for doc in self.db[collection].find(
                {"_id": {"$in": wanted}}, session=self.session
            ):
                into[doc["_id"]] = doc

    async def load_merchants(self, ids: Iterable[str]) -> None:
        await self._load("merchants", ids, self.merchants)

    async def load_companies(self, ids: Iterable[str]) -> None:
        await self._load("companies", ids, self.companies)

    async def load_orders(self, ids: Iterable[str]) -> None:
        await self._load("orders", ids, self.orders)

    async def load_vibans(self, ids: Iterable[str]) -> None:
        found: dict[str, Doc] = {}
        await self._load("vibans", ids, found)
        self.vibans.update({k: bool(v["billit"]) for k, v in found.items()})

    def note_viban(self, viban: str, billit: bool) -> None:
        if self.vibans.get(viban) != billit:
            self.vibans[viban] = billit
            self.writes.setdefault("vibans", []).append(
                ReplaceOne({"_id": viban}, {"_id": viban, "billit": billit}, upsert=True)
            )

    async def load_einvoices(
        self, order_ids: Iterable[str], by_viban: Iterable[tuple[str, str]]
    ) -> None:
        orders = list(set(order_ids))
        pairs = list(set(by_viban))
        clauses: list[Doc] = []
        if orders:
            clauses.append({"order_id": {"$in": orders}})
        clauses += [{"viban": v, "invoice_number": n} for v, n in pairs]
        if not clauses:
            return
        async for doc in self.db[EINVOICES].find({"$or": clauses}, session=self.session):
            if doc["_id"] not in self.einvoices:
                self.einvoices[doc["_id"]] = einvoice_from_doc(doc)

    def find_by_viban(self, viban: str, invoice_number: str) -> EInvoice | None:
        return next(
            (
                e
                for e in self.einvoices.values()
                if e.viban == viban and e.invoice_number == invoice_number
            ),
            None,
        )

    def of_order(self, order_id: str) -> list[EInvoice]:
        return [e for e in self.einvoices.values() if e.order_id == order_id]

    def put(self, collection: str, doc: Doc) -> None:
        self.writes.setdefault(collection, []).append(
            ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)
        )
        cache = {"merchants": self.merchants, "companies": self.companies, "orders": self.orders}
        cache[collection][doc["_id"]] = doc

    def put_einvoice(self, invoice: EInvoice) -> None:
        self.einvoices[invoice.id] = invoice
        self.dirty.add(invoice.id)

    async def flush(self) -> None:
        for invoice_id in sorted(self.dirty):
            invoice = self.einvoices[invoice_id]
            invoice.version += 1
            self.writes.setdefault(EINVOICES, []).append(
                ReplaceOne({"_id": invoice_id}, einvoice_to_doc(invoice), upsert=True)
            )
        for collection, ops in self.writes.items():
            if ops:
                await self.db[collection].bulk_write(ops, ordered=True, session=self.session)
