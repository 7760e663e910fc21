"""The committed AsyncAPI document is what the contract models generate today."""

from __future__ import annotations

import json

from shared import asyncapi, topics


def test_committed_document_is_fresh() -> None:
    assert asyncapi.DOCUMENT.read_text() == asyncapi.render(asyncapi.generate()), (
        "docs/asyncapi.json is stale: run 'make asyncapi' and commit it"
    )


def test_every_public_topic_is_described_with_its_envelope() -> None:
    document = json.loads(asyncapi.DOCUMENT.read_text())
    addresses = {channel["address"] for channel in document["channels"].values()}
    public = set(topics.INPUT_TOPICS) | set(topics.OUTPUT_TOPICS)
    assert addresses == public | set(topics.INTERNAL_TOPICS)
    internal = [c for c in document["channels"].values() if c["address"] in topics.INTERNAL_TOPICS]
    assert all("Internal" in c["description"] for c in internal)
    schemas = document["components"]["schemas"]
    assert schemas["CloudEvent[OrderRequested]"]["properties"]["data"]["$ref"].endswith(
        "/OrderRequested"
    )
    money = schemas["Amount"]["properties"]["gross"]
    # ASCII digits only, at most twelve before the point, no leading zeros (shared/money.py).
    assert money["type"] == "string"
    assert money["pattern"] == r"^(?:0|[1-9][0-9]{0,11})\.[0-9]{2}$"
    assert "from" in schemas["OrderStateChanged"]["properties"]
