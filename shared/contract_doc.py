"""docs/contract.md: the contract as the models implement it, for people.

Generated from the pydantic models (topics, keys, types, every field with its type, bounds
and whether it is required) and the wire rules of shared/money.py, shared/times.py and
shared/envelope.py, so it cannot drift from what the workers accept.

    python -m shared.contract_doc           # write docs/contract.md
    python -m shared.contract_doc --check   # exit 1 when docs/contract.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shared import envelope, events, money, times
from shared.events import INPUT_EVENTS, INTERNAL_EVENTS, OUTPUT_EVENTS, EventData
from shared.generated import write_or_check
from shared.topics import dlq_topic

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "contract.md"

# The data fields each event type has in EVENTS.md (a transcription; a unit test compares it
# with EVENTS.md). Model fields not listed here are the platform's additions.
EVENTS_MD_FIELDS: dict[str, tuple[str, ...]] = {
    "merchant.configured.v1": (
        "merchant_id",
        "name",
        "payout_iban",
        "fee",
        "manual_review",
        "einvoicing",
        "billit_party_id",
    ),
    "company.registered.v1": (
        "company_id",
        "name",
        "legal_form",
        "registration_number",
        "vat_id",
        "address",
        "industry",
        "insolvent",
        "score",
        "financing_limit",
    ),
    "order.requested.v1": (
        "order_id",
        "merchant_id",
        "external_code",
        "amount",
        "currency",
        "duration_days",
        "debtor",
        "billing_address",
        "delivery_address",
        "line_items",
    ),
    "order.reviewed.v1": ("order_id", "outcome", "decline_reason", "reviewer"),
    "order.shipped.v1": ("order_id", "invoice_number", "amount", "shipped_at", "invoice_url"),
    "order.canceled.v1": ("order_id", "reason"),
    "order.amount_reduced.v1": ("order_id", "amount"),
    "invoice.credit_noted.v1": ("order_id", "invoice_number", "credit_note_number", "amount"),
    "bank.transaction.received.v1": (
        "transaction_id",
        "creditor_iban",
        "amount",
        "currency",
        "booking_date",
        "debtor_name",
        "debtor_iban",
        "remittance_information",
    ),
    "payment.reported.v1": ("order_id", "invoice_number", "amount", "received_on"),
    "merchant_debit.collected.v1": ("debit_id", "order_id", "invoice_number", "amount"),
    "dunning.pause_requested.v1": ("order_id", "invoice_number", "requested_by", "reason"),
    "clock.tick.v1": ("now",),
    "order.decided.v1": (
        "order_id",
        "merchant_id",
        "state",
        "decline_reason",
        "debtor_company_id",
        "viban",
        "ruleset_version",
        "rule_hits",
    ),
    "order.state_changed.v1": ("order_id", "from", "to"),
    "command.rejected.v1": ("command_id", "command_type", "order_id", "reason"),
    "invoice.issued.v1": (
        "invoice_number",
        "order_id",
        "merchant_id",
        "amount",
        "issued_on",
        "due_on",
        "viban",
        "debtor_company_id",
    ),
    "invoice.state_changed.v1": ("invoice_number", "from", "to"),
    "payout.instructed.v1": (
        "payout_id",
        "invoice_number",
        "merchant_id",
        "gross",
        "fee",
        "payout_amount",
        "payout_iban",
    ),
    "payout.clawback_instructed.v1": ("clawback_id", "invoice_number", "amount", "reason"),
    "payment.allocated.v1": ("transaction_id", "allocations", "overpayment", "unallocated"),
    "invoice.settled.v1": ("invoice_number", "settled_on", "paid_total"),
    "payment.overpayment_forwarded.v1": ("transaction_id", "merchant_id", "amount", "payout_iban"),
    "payment.unmatched.v1": ("transaction_id", "reason"),
    "merchant_debit.instructed.v1": (
        "debit_id",
        "merchant_id",
        "order_id",
        "invoice_number",
        "amount",
    ),
    "dunning.notice.v1": ("invoice_number", "level", "days_overdue", "amount_due", "viban"),
    "dunning.handed_over.v1": ("invoice_number", "amount_due", "handed_over_on"),
    "einvoice.status_changed.v1": (
        "invoice_number",
        "billit_order_id",
        "delivery_status",
        "receiver_status",
        "detail",
    ),
}

# Rules a field's type cannot say, per (event type, field).
NOTES: dict[tuple[str, str], str] = {
    ("merchant.configured.v1", "billit_party_id"): 'required when `einvoicing` is `"billit"`',
    ("order.decided.v1", "decline_reason"): "set exactly when `state` is `declined`",
    ("order.decided.v1", "viban"): "set exactly when `state` is `created`",
    ("order.state_changed.v1", "from"): "null for an order's first state",
    ("invoice.state_changed.v1", "from"): "null for an invoice's first state",
    ("invoice.state_changed.v1", "order_id"): "the record key",
    ("command.rejected.v1", "command_id"): "the refused input event's id",
}
PART_NOTES: dict[str, str] = {"Amount": "`gross` = `net` + `tax`"}

_PART_MODELS = ("Amount", "Fee", "Address", "Debtor", "LineItem", "RuleHit", "Allocation")


def _type_of(node: dict[str, Any]) -> str:
    """One JSON-schema node as a short type description with its bounds."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()}) object"
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        text = " or ".join(_type_of(o) for o in options)
        nullable = len(options) < len(node["anyOf"])
        return f"{text} or null" if nullable else text
    if "enum" in node:
        return "one of " + ", ".join(f"`{_json_literal(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{_json_literal(node['const'])}`"
    kind = node.get("type")
    pattern = node.get("pattern")
    if kind == "string":
        if node.get("format") == "date-time":
            return "time (RFC 3339, seconds and zone)"
        if node.get("format") == "date":
            return "date (`YYYY-MM-DD`)"
        if pattern == money.MONEY_PATTERN:
            return "money"
        if pattern == money.SIGNED_MONEY_PATTERN:
            return "signed money"
        if pattern == money.PERCENT_PATTERN:
            return "percent"
        if pattern is not None:
            return "string matching `" + str(pattern).replace("|", "\\|") + "`"
        low, high = node.get("minLength", 0), node.get("maxLength")
        if high is None:
            return "string" if low == 0 else f"string, at least {low} character(s)"
        return f"string, {low}–{high} characters"
    if kind == "integer":
        low = node.get("minimum", _exclusive(node.get("exclusiveMinimum"), 1))
        high = node.get("maximum", _exclusive(node.get("exclusiveMaximum"), -1))
        if low is not None and high is not None:
            return f"integer {low}–{high}"
        if low is not None:
            return f"integer ≥ {low}"
        return "integer"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        items = _type_of(node.get("items", {}))
        high = node.get("maxItems")
        return f"list of {items}" + (f", at most {high}" if high is not None else "")
    return kind or "any JSON"


def _exclusive(bound: Any, step: int) -> Any:
    return None if bound is None else bound + step


def _json_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _fields_table(
    schema: dict[str, Any], event_type: str | None, listed: tuple[str, ...] | None
) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | required | notes |", "|---|---|---|---|"]
    for name, node in schema.get("properties", {}).items():
        notes = []
        if event_type is not None and (event_type, name) in NOTES:
            notes.append(NOTES[(event_type, name)])
        if "default" in node:
            notes.append(f"default `{_json_literal(node['default'])}`")
        if listed is not None and name not in listed:
            notes.append("**platform's addition, not in EVENTS.md**")
        needed = "yes" if name in required else "no"
        rows.append(f"| `{name}` | {_type_of(node)} | {needed} | {'; '.join(notes)} |")
    return rows


def _event_section(model: type[EventData], consumed: bool) -> list[str]:
    schema = model.model_json_schema(by_alias=True)
    key = f"`{model.KEY_FIELD}`" if model.KEY_FIELD else '`"clock"`'
    doc = (model.__doc__ or "").strip().replace("\n", " ")
    listed = EVENTS_MD_FIELDS.get(model.EVENT_TYPE)
    where = f" Dead letters: `{dlq_topic(model.TOPIC)}`." if consumed else ""
    lines = [f"### `{model.EVENT_TYPE}` on `{model.TOPIC}`", "", f"Record key: {key}.{where}"]
    if doc:
        lines += ["", doc]
    return [*lines, "", *_fields_table(schema, model.EVENT_TYPE, listed), ""]


def _parts_section() -> list[str]:
    lines = ["## Objects inside events", ""]
    for name in _PART_MODELS:
        part = getattr(events, name)
        schema = part.model_json_schema(by_alias=True)
        lines += [f"### {name}", ""]
        if name in PART_NOTES:
            lines += [PART_NOTES[name], ""]
        lines += [*_fields_table(schema, None, None), ""]
    return lines


def _topics_table(models: tuple[type[EventData], ...], consumed: bool) -> list[str]:
    rows = ["| topic | key | type |" + (" dead letters |" if consumed else "")]
    rows.append("|---|---|---|" + ("---|" if consumed else ""))
    for model in models:
        key = f"`{model.KEY_FIELD}`" if model.KEY_FIELD else '`"clock"`'
        row = f"| `{model.TOPIC}` | {key} | [`{model.EVENT_TYPE}`](#{_anchor(model)}) |"
        rows.append(row + (f" `{dlq_topic(model.TOPIC)}` |" if consumed else ""))
    return rows


def _additions() -> list[str]:
    """What the models carry that EVENTS.md does not list."""
    lines = [
        "## Beyond EVENTS.md",
        "",
        "- The bounds above, the money digit limit, the nesting limit and the",
        "  `orders.decided` rule that `viban` is set exactly when `state` is `created`.",
        "- The internal topics below (service to service).",
        "- Data fields EVENTS.md does not list (inputs: optional, with the default shown;",
        "  outputs: always published): `order_id` on outputs keyed by it, so the value",
        "  carries its own key; `creditor_iban` likewise; `currency` beside every amount, as",
        "  EVENTS.md's money rule asks.",
        "",
        "| type | fields |",
        "|---|---|",
    ]
    for model in INPUT_EVENTS + OUTPUT_EVENTS:
        listed = EVENTS_MD_FIELDS[model.EVENT_TYPE]
        names = model.model_json_schema(by_alias=True)["properties"]
        extra = [name for name in names if name not in listed]
        if extra:
            fields = ", ".join(f"`{name}`" for name in extra)
            lines.append(f"| [`{model.EVENT_TYPE}`](#{_anchor(model)}) | {fields} |")
    return [*lines, ""]


def _anchor(model: type[EventData]) -> str:
    heading = f"{model.EVENT_TYPE} on {model.TOPIC}"
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def render() -> str:
    e = events
    lines = [
        "# The event contract as implemented",
        "",
        "<!-- Generated by `python -m shared.contract_doc` from shared/events.py,",
        "     shared/envelope.py, shared/money.py and shared/times.py. Do not edit by hand;",
        "     `make check` fails when this file is stale. -->",
        "",
        "The public contract is `../shared/contract/EVENTS.md`. This page is what the",
        "platform's models accept and publish: every topic, its record key and type, every",
        "field with its type, bounds and whether it is required, and where the platform goes",
        "beyond EVENTS.md. A record that breaks any rule here is dead-lettered to",
        "`<topic>.dlq` with its original bytes and `dlq-*` headers naming the error.",
        "",
        "## Wire rules",
        "",
        "- **Record value**: one JSON object (RFC 8259) in UTF-8, no byte order mark. Other",
        "  encodings (UTF-16, UTF-32), `NaN`/`Infinity`/`-Infinity`, fractional JSON numbers",
        "  (anywhere, even in fields no model reads), strings with an unpaired surrogate",
        "  escape, a name twice in one object, and nesting deeper than",
        f"  {envelope.MAX_JSON_DEPTH} levels (the envelope object is level 1) are refused.",
        "- **Money**: a JSON string of ASCII digits with exactly two fraction digits:",
        f"  `0.00` or a non-zero digit and at most {money.MAX_INTEGER_DIGITS - 1} more before",
        f"  the point (pattern `{money.MONEY_PATTERN}`). No sign, exponent,",
        "  whitespace, leading zero, digit group separator, or digits of other scripts",
        "  (fullwidth, Arabic-Indic, Devanagari, ...). JSON numbers are refused.",
        f"- **Percent** (merchant fee): a string matching `{money.PERCENT_PATTERN}`, at most 100.",
        "- **Times**: RFC 3339 strings with seconds and a zone: `2026-11-20T09:15:00Z`,",
        "  `2026-11-20T10:15:00.250+01:00`. `T` and `Z` may be lower case; 1 to 9 fraction",
        "  digits (kept to the microsecond). Unix numbers, numeric strings, times without",
        "  seconds or zone, a space for `T`, `+0100` offsets and leap seconds are refused.",
        f"  Pattern: `{times.DATE_TIME_PATTERN}`.",
        f"- **Dates**: `YYYY-MM-DD` strings of ASCII digits (`{times.DATE_PATTERN}`), a real date.",
        "- **Integers**: JSON integers; `true`/`false` are not integers.",
        "- **Unknown data fields** are ignored (a minor version may add fields); an unknown",
        "  `type` is dead-lettered.",
        "",
        "## Bounds",
        "",
        "The platform's own (EVENTS.md sets none); lengths count characters, not bytes.",
        "",
        "| what | bound |",
        "|---|---|",
        f"| identifiers (`*_id`, invoice and credit note numbers, reviewer, ruleset version,"
        f" command type, registration number, VAT id) | {e.MAX_ID_LENGTH} characters |",
        f"| IBANs (`*_iban`, `viban`), electronic format | {e.MAX_IBAN_LENGTH} characters |",
        f"| names (merchant, company, debtor) | {e.MAX_NAME_LENGTH} characters |",
        "| address parts, legal form, industry, external code, rule name |"
        f" {e.MAX_LINE_LENGTH} characters |",
        "| free text (reasons, descriptions, remittance information, details) |"
        f" {e.MAX_TEXT_LENGTH} characters |",
        f"| `invoice_url` | {e.MAX_URL_LENGTH} characters |",
        f"| `line_items` | {e.MAX_LINE_ITEMS} items |",
        f"| line item `quantity` | 1–{e.MAX_QUANTITY} |",
        f"| `rule_hits` | {e.MAX_RULE_HITS} items |",
        f"| `allocations` | {e.MAX_ALLOCATIONS} items |",
        f"| money | {money.MAX_INTEGER_DIGITS} digits before the point |",
        f"| JSON nesting | {envelope.MAX_JSON_DEPTH} levels |",
        "",
        "## Envelope (CloudEvents 1.0, structured JSON)",
        "",
        *_fields_table(envelope._Envelope.model_json_schema(), None, None),
        "",
        "`data` is the object of the `type`'s section below. Other attributes are CloudEvents",
        "extension attributes: accepted and passed through.",
        "",
        "## Topics",
        "",
        "Input topics (published by other systems):",
        "",
        *_topics_table(INPUT_EVENTS, consumed=True),
        "",
        "Output topics (published by the platform; other systems read them):",
        "",
        *_topics_table(OUTPUT_EVENTS, consumed=False),
        "",
        "Internal topics (service to service, not part of the public contract):",
        "",
        *_topics_table(INTERNAL_EVENTS, consumed=True),
        "",
        *_additions(),
        "## Input events",
        "",
    ]
    for model in INPUT_EVENTS:
        lines += _event_section(model, consumed=True)
    lines += ["## Output events", ""]
    for model in OUTPUT_EVENTS:
        lines += _event_section(model, consumed=False)
    lines += ["## Internal events", ""]
    for model in INTERNAL_EVENTS:
        lines += _event_section(model, consumed=True)
    lines += _parts_section()
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Generate docs/contract.md")
    parser.add_argument("--check", action="store_true", help="fail if the document is stale")
    args = parser.parse_args()
    return write_or_check(DOCUMENT, render(), check=args.check, make_target="contract-doc")


if __name__ == "__main__":
    sys.exit(main())
