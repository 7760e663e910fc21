"""The risk service's MongoDB documents.

A batch is handled against a :class:`RiskView`: everything the batch needs is loaded with a
few ``$in`` queries, decided in memory (so two orders for one debtor in the same batch see
each other's reservation), and written back with one bulk write per collection. Exposure
writes are guarded by the value that was read, inside the batch's transaction, so two
workers can never both reserve the last of a debtor's limit: the loser's transaction aborts
on the write conflict (or the guard) and the batch is decided again on fresh state.

Amounts are integer cents in fields named ``*_cents``. Each order document is the ledger of
its own reservation (the order id is its ``_id``) and lists the release ids already given
back (``release_ids``); every release is also one document in ``releases`` under its id,
naming the event that caused it. Each decision risk published on an order (the rules that
fired, the ruleset version, the event it answered) is kept on the order itself, in
``decisions``, written with the order's own change: one write per batch fewer than a
collection of its own, and an order is read with its audit trail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.risk.domain import (
    Address,
    Company,
    DebtorClaim,
    Identification,
    RiskOrder,
    registry_keys,
)
from shared.runtime.transient import ConcurrencyConflict

Doc = dict[str, Any]


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    await db["companies"].create_index([("keys.registration_number", ASCENDING)], sparse=True)
    await db["companies"].create_index([("keys.vat_id", ASCENDING)], sparse=True)
    await db["companies"].create_index([("keys.postal_code", ASCENDING)])
    # One VIBAN per (merchant, debtor); the IBAN itself is the _id, so never reused.
    await db["vibans"].create_index(
        [("merchant_id", ASCENDING), ("company_id", ASCENDING)], unique=True
    )
    await db["releases"].create_index([("order_id", ASCENDING)])


def address_to_doc(address: Address) -> Doc:
    return {
        "street": address.street,
        "house_number": address.house_number,
        "postal_code": address.postal_code,
        "city": address.city,
        "country": address.country,
    }


def address_from_doc(doc: Doc) -> Address:
    return Address(
        street=doc["street"],
        house_number=doc["house_number"],
        postal_code=doc["postal_code"],
        city=doc["city"],
        country=doc["country"],
    )


def company_to_doc(company: Company) -> Doc:
    keys = registry_keys(
        DebtorClaim(
            name=company.name,
            legal_form=company.legal_form,
            registration_number=company.registration_number,
            vat_id=company.vat_id,
            address=company.address,
        )
    )
    return {
        "_id": company.company_id,
        "name": company.name,
        "legal_form": company.legal_form,
        "registration_number": company.registration_number,
        "vat_id": company.vat_id,
        "address": address_to_doc(company.address),
        "insolvent": company.insolvent,
        "score": company.score,
        "financing_limit_cents": company.financing_limit,
        "keys": {
            "registration_number": keys.registration_number,
            "vat_id": keys.vat_id,
            "postal_code": keys.postal_code,
        },
    }


def company_from_doc(doc: Doc) -> Company:
    return Company(
        company_id=doc["_id"],
        name=doc["name"],
        legal_form=doc["legal_form"],
        registration_number=doc.get("registration_number"),
        vat_id=doc.get("vat_id"),
        address=address_from_doc(doc["address"]),
        insolvent=doc["insolvent"],
        score=doc.get("score"),
        financing_limit=doc["financing_limit_cents"],
    )


def order_to_doc(order: RiskOrder) -> Doc:
    """The fields the lifecycle owns; the handler adds what is kept only for people to read
    (external code, addresses, who reviewed it, when)."""
    return {
        "_id": order.order_id,
        "merchant_id": order.merchant_id,
        "company_id": order.company_id,
        "state": order.state,
        "gross_cents": order.gross,
        "reserved_cents": order.reserved,
        "fingerprint": order.fingerprint,
        "decline_reason": order.decline_reason,
        "viban": order.viban,
        "resolved_by": order.resolved_by,
        "release_ids": list(order.release_ids),
    }


def order_from_doc(doc: Doc) -> RiskOrder:
    return RiskOrder(
        order_id=doc["_id"],
        merchant_id=doc["merchant_id"],
        company_id=doc.get("company_id"),
        state=doc["state"],
        gross=doc["gross_cents"],
        reserved=doc.get("reserved_cents", 0),
        fingerprint=doc["fingerprint"],
        decline_reason=doc.get("decline_reason"),
        viban=doc.get("viban"),
        resolved_by=doc.get("resolved_by"),
        release_ids=tuple(doc.get("release_ids", ())),
    )


@dataclass
class RiskView:
    """The slice of state one batch reads and writes, with its pending writes."""

    session: AsyncClientSession
    db: AsyncDatabase[Doc]
    merchants: dict[str, Doc] = field(default_factory=dict)
    orders: dict[str, RiskOrder] = field(default_factory=dict)
    # Per changed order: readable fields beside the lifecycle's, written with it.
    order_notes: dict[str, Doc] = field(default_factory=dict)
    companies: dict[str, Company] = field(default_factory=dict)
    exposure_read: dict[str, int] = field(default_factory=dict)
    exposure: dict[str, int] = field(default_factory=dict)
    vibans: dict[tuple[str, str], str] = field(default_factory=dict)
    new_vibans: dict[tuple[str, str], str] = field(default_factory=dict)
    pairs_loaded: set[tuple[str, str]] = field(default_factory=set)
    dirty_merchants: set[str] = field(default_factory=set)
    dirty_orders: set[str] = field(default_factory=set)
    new_orders: set[str] = field(default_factory=set)
    dirty_companies: set[str] = field(default_factory=set)
    # Order id -> decisions published on it in this batch, appended to its ``decisions``.
    audit: dict[str, list[Doc]] = field(default_factory=dict)
    releases: list[Doc] = field(default_factory=list)
    # Order id -> who the debtor was found to be while preloading.
    identified: dict[str, Identification] = field(default_factory=dict)
    # Normalised registry keys -> company ids, so identifying a claim is a lookup.
    _by_registration: dict[str, list[str]] = field(default_factory=dict)
    _by_vat: dict[str, list[str]] = field(default_factory=dict)
    _by_postal: dict[str, list[str]] = field(default_factory=dict)

    # -- loading --------------------------------------------------------------------------

    async def load_merchants(self, merchant_ids: Iterable[str]) -> None:
        ids = list(set(merchant_ids) - self.merchants.keys())
        if ids:
            async for doc in self.db["merchants"].find({"_id": {"$in": ids}}, session=self.session):
                self.merchants[doc["_id"]] = doc

    async def load_orders(self, order_ids: Iterable[str]) -> None:
        ids = list(set(order_ids) - self.orders.keys())
        if ids:
            found = self.db["orders"].find(
                {"_id": {"$in": ids}}, {"decisions": 0}, session=self.session
            )
            async for doc in found:
                self.orders[doc["_id"]] = order_from_doc(doc)

    async def load_candidates(
        self, registration_numbers: set[str], vat_ids: set[str], postal_codes: set[str]
    ) -> None:
        clauses: list[Doc] = []
        if registration_numbers:
            clauses.append({"keys.registration_number": {"$in": sorted(registration_numbers)}})
        if vat_ids:
            clauses.append({"keys.vat_id": {"$in": sorted(vat_ids)}})
        if postal_codes:
            clauses.append({"keys.postal_code": {"$in": sorted(postal_codes)}})
        if not clauses:
            return
        async for doc in self.db["companies"].find({"$or": clauses}, session=self.session):
            if doc["_id"] not in self.companies:
                self._index(company_from_doc(doc))

    async def load_debtor_state(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Exposure of each company and the VIBAN of each (merchant, company) pair."""
        pairs = set(pairs) - self.pairs_loaded
        self.pairs_loaded |= pairs
        company_ids = list({c for _, c in pairs} - self.exposure.keys())
        if company_ids:
            found = {
                doc["_id"]: doc["exposure_cents"]
                async for doc in self.db["exposure"].find(
                    {"_id": {"$in": company_ids}}, session=self.session
                )
            }
            for company_id in company_ids:
                self.exposure_read[company_id] = found.get(company_id, -1)
                self.exposure[company_id] = found.get(company_id, 0)
        if pairs:
            # Merchants x companies on the unique (merchant, company) index: point lookups
            # without an $or of one clause per pair to plan; pairs not asked for are dropped.
            query = {
                "merchant_id": {"$in": sorted({m for m, _ in pairs})},
                "company_id": {"$in": sorted({c for _, c in pairs})},
            }
            async for doc in self.db["vibans"].find(query, session=self.session):
                pair = (doc["merchant_id"], doc["company_id"])
                if pair in pairs:
                    self.vibans[pair] = doc["_id"]

    # -- reading --------------------------------------------------------------------------

    def candidates(
        self, registration_number: str | None, vat_id: str | None, postal_code: str | None
    ) -> tuple[list[Company], list[Company]]:
        """Companies sharing a registry id with the claim, and (the others) sharing its
        postal code: looked up in the batch's key index, not by scanning."""
        id_matches: dict[str, None] = {}
        if registration_number:
            id_matches.update(dict.fromkeys(self._by_registration.get(registration_number, ())))
        if vat_id:
            id_matches.update(dict.fromkeys(self._by_vat.get(vat_id, ())))
        if id_matches:  # identification by id never falls back to the postal code
            return [self.companies[c] for c in id_matches], []
        by_postal = [self.companies[c] for c in self._by_postal.get(postal_code or "", ())]
        return [], by_postal

    def exposure_of(self, company_id: str | None) -> int:
        return self.exposure.get(company_id, 0) if company_id else 0

    # -- changing -------------------------------------------------------------------------

    def put_merchant(self, doc: Doc) -> None:
        self.merchants[doc["_id"]] = doc
        self.dirty_merchants.add(doc["_id"])

    def put_company(self, company: Company) -> None:
        self._index(company)
        self.dirty_companies.add(company.company_id)

    def _index(self, company: Company) -> None:
        company_id = company.company_id
        if company_id in self.companies:  # re-registered: its keys may have changed
            for index in (self._by_registration, self._by_vat, self._by_postal):
                for ids in index.values():
                    if company_id in ids:
                        ids.remove(company_id)
        self.companies[company_id] = company
        keys = registry_keys(
            DebtorClaim(
                company.name,
                company.legal_form,
                company.registration_number,
                company.vat_id,
                company.address,
            )
        )
        if keys.registration_number:
            self._by_registration.setdefault(keys.registration_number, []).append(company_id)
        if keys.vat_id:
            self._by_vat.setdefault(keys.vat_id, []).append(company_id)
        if keys.postal_code:
            self._by_postal.setdefault(keys.postal_code, []).append(company_id)

    def put_order(self, order: RiskOrder, **notes: Any) -> None:
        if order.order_id not in self.orders:
            self.new_orders.add(order.order_id)
        self.orders[order.order_id] = order
        self.dirty_orders.add(order.order_id)
        self.order_notes.setdefault(order.order_id, {}).update(notes)

    def set_exposure(self, company_id: str, cents: int) -> None:
        self.exposure[company_id] = cents

    def record_release(self, doc: Doc) -> None:
        self.releases.append(doc)

    def add_viban(self, merchant_id: str, company_id: str, iban: str) -> None:
        self.vibans[(merchant_id, company_id)] = iban
        self.new_vibans[(merchant_id, company_id)] = iban

    async def allocate_viban_sequences(self, count: int) -> range:
        counter = await self.db["counters"].find_one_and_update(
            {"_id": "viban"},
            {"$inc": {"next": count}},
            upsert=True,
            return_document=True,
            session=self.session,
        )
        assert counter is not None
        end: int = counter["next"]
        return range(end - count, end)

    # -- writing --------------------------------------------------------------------------

    async def flush(self) -> None:
        s = self.session
        if self.dirty_merchants:
            await self.db["merchants"].bulk_write(
                [
                    ReplaceOne({"_id": m}, self.merchants[m], upsert=True)
                    for m in self.dirty_merchants
                ],
                ordered=False,
                session=s,
            )
        if self.dirty_companies:
            await self.db["companies"].bulk_write(
                [
                    ReplaceOne({"_id": c}, company_to_doc(self.companies[c]), upsert=True)
                    for c in self.dirty_companies
                ],
                ordered=False,
                session=s,
            )
        order_ops: list[Any] = []
        for order_id in sorted(self.dirty_orders):
            doc = order_to_doc(self.orders[order_id]) | self.order_notes.get(order_id, {})
            decided = self.audit.get(order_id, [])
            if order_id in self.new_orders:
                order_ops.append(InsertOne(doc | {"decisions": decided}))
            else:
                # $set, not a replacement: the readable fields written at decision time stay.
                del doc["_id"]
                update: Doc = {"$set": doc}
                if decided:
                    update["$push"] = {"decisions": {"$each": decided}}
                order_ops.append(UpdateOne({"_id": order_id}, update))
        assert self.audit.keys() <= self.dirty_orders, "a decision is stored with its order"
        if order_ops:
            await self.db["orders"].bulk_write(order_ops, ordered=False, session=s)
        if self.new_vibans:
            await self.db["vibans"].insert_many(
                [
                    {"_id": iban, "merchant_id": m, "company_id": c}
                    for (m, c), iban in self.new_vibans.items()
                ],
                ordered=False,
                session=s,
            )
        if self.releases:
            # The unique _id is the backstop: a release the lifecycle let through twice would
            # hold the batch up (a duplicate key is retried, never skipped) rather than free
            # the limit twice.
            await self.db["releases"].insert_many(self.releases, ordered=False, session=s)
        await self._flush_exposure()

    async def _flush_exposure(self) -> None:
        ops: list[Any] = []
        for company_id, value in self.exposure.items():
            read = self.exposure_read.get(company_id, -1)
            if value == max(read, 0):
                continue
            if read < 0:
                ops.append(InsertOne({"_id": company_id, "exposure_cents": value}))
            else:
                ops.append(
                    UpdateOne(
                        {"_id": company_id, "exposure_cents": read},
                        {"$set": {"exposure_cents": value}},
                    )
                )
        if not ops:
            return
        result = await self.db["exposure"].bulk_write(ops, ordered=False, session=self.session)
        updates = sum(1 for op in ops if isinstance(op, UpdateOne))
        if result.matched_count != updates:
            raise ConcurrencyConflict("debtor exposure changed since it was read")
