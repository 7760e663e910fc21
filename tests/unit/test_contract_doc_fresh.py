"""docs/contract.md is what the contract models generate today, it documents every topic and
field with the bounds the decoder enforces, and its list of EVENTS.md's fields matches
EVENTS.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import contract_doc, topics
from shared.events import INPUT_EVENTS, INTERNAL_EVENTS, OUTPUT_EVENTS

EVENTS_MD = Path(__file__).resolve().parents[3] / "shared" / "contract" / "EVENTS.md"


def test_committed_document_is_fresh() -> None:
    assert contract_doc.DOCUMENT.read_text() == contract_doc.render(), (
        "docs/contract.md is stale: run 'make contract-doc' and commit it"
    )


def test_every_topic_type_and_field_is_documented() -> None:
    text = contract_doc.DOCUMENT.read_text()
    for topic in (*topics.INPUT_TOPICS, *topics.OUTPUT_TOPICS, *topics.INTERNAL_TOPICS):
        assert f"| `{topic}` |" in text
    for model in (*INPUT_EVENTS, *OUTPUT_EVENTS, *INTERNAL_EVENTS):
        heading = f"### `{model.EVENT_TYPE}` on `{model.TOPIC}`"
        assert heading in text
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        for name in model.model_json_schema(by_alias=True)["properties"]:
            assert f"| `{name}` |" in section, (model.EVENT_TYPE, name)


def test_the_documented_bounds_are_the_enforced_ones() -> None:
    # Numbers written here from the examples and docs/contract.md, not read back
    # from the code: ids 128 characters, at most 500 line items, nesting 32 levels.
    text = contract_doc.DOCUMENT.read_text()
    section = text.split("### `order.requested.v1`", 1)[1].split("\n### ", 1)[0]
    assert "| `order_id` | string, 1–128 characters | yes |" in section
    assert "list of [LineItem](#lineitem) object, at most 500" in section
    assert "| JSON nesting | 32 levels |" in text
    assert (
        '| `currency` | string matching `^[A-Z]{3}$` | no | default `"EUR"`; **platform'
        in (text.split("### `payout.instructed.v1`", 1)[1].split("\n### ", 1)[0])
    )


@pytest.mark.skipif(not EVENTS_MD.exists(), reason="EVENTS.md lives beside the repository")
def test_the_transcription_of_events_md_fields_is_faithful() -> None:
    # Every field the generator believes EVENTS.md lists appears, in backticks, in that
    # type's row of EVENTS.md; and every type has a transcription.
    rows = {}
    for line in EVENTS_MD.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 5 and re.fullmatch(r"`[a-z_.]+\.v\d+`", cells[3]):
            rows[cells[3].strip("`")] = cells[4]
    public = {m.EVENT_TYPE for m in (*INPUT_EVENTS, *OUTPUT_EVENTS)}
    assert set(contract_doc.EVENTS_MD_FIELDS) == public
    assert public <= set(rows)
    for event_type, fields in contract_doc.EVENTS_MD_FIELDS.items():
        named = {token.rstrip("?") for token in re.findall(r"`([a-z_]+\??)`", rows[event_type])}
        assert set(fields) <= named, (event_type, set(fields) - named)
