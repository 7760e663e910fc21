"""The ``dlq`` command group (acceptance 4 of issue 17: every command's --help reads well),
and the corrected record's event id, which decides whether the consuming inbox takes a
correction once."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from scripts.processes import REPO
from shared.ops.cli import SERVICES, build_parser
from shared.ops.dead_letters import DeadLetterCommands

DLQ_COMMANDS = ("list", "show", "summary", "replay", "correct", "discard", "sync")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_service_has_the_dlq_group_and_every_command_explains_itself() -> None:
    """For every service and every dlq command: the help renders, says what the command does
    (a description of a sentence or more), and every option and argument has a help text."""
    services = _subparsers(build_parser())
    assert set(SERVICES) <= set(services)
    for service, parser in services.items():
        groups = _subparsers(parser)
        assert "dlq" in groups, service
        commands = _subparsers(groups["dlq"])
        assert set(commands) == set(DLQ_COMMANDS), service
        for name, command in commands.items():
            text = command.format_help()
            assert f"{service} dlq {name}" in text
            assert command.description and len(command.description) > 40, (service, name)
            for action in command._actions:
                assert action.help, (service, name, action.dest)
            assert "%(" not in text


def test_dlq_help_as_a_process_names_commands_ids_and_exit_codes() -> None:
    """What an operator sees first: ``python -m shared.ops shipping dlq --help``."""
    shown = subprocess.run(
        [sys.executable, "-m", "shared.ops", "shipping", "dlq", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    for name in DLQ_COMMANDS:
        assert name in shown.stdout
    assert "shipping:orders.shipped/0/17" in shown.stdout  # what an id looks like
    assert "Exit codes" in shown.stdout


def _corrected(doc: dict[str, Any], **options: Any) -> dict[str, Any]:
    args = argparse.Namespace(file=None, set=[], set_json=[])
    for key, value in options.items():
        setattr(args, key, value)
    value = DeadLetterCommands("shipping")._corrected_bytes(args, doc, doc.get("value"))
    parsed: dict[str, Any] = json.loads(value)
    return parsed


def _doc(offset: int, value: bytes, event_id: str | None) -> dict[str, Any]:
    source = {"topic": "orders.shipped", "partition": 0, "offset": offset}
    return {"source": source, "value": value} | ({"event_id": event_id} if event_id else {})


def test_a_correction_keeps_the_original_event_id_or_derives_one_from_where_it_was_read(
    tmp_path: Any,
) -> None:
    """A corrected event carries the dead letter's own event id whatever the operator's file
    says; a dead letter whose id was unreadable gets one derived from topic, partition and
    offset: the same for two corrections of it, different for another record."""
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"id": "typed-by-hand", "data": {"order_id": "o-1"}}))
    readable = _doc(5, b'{"id": "ev-1", "data": {}}', "ev-1")
    assert _corrected(readable, file=str(fixed))["id"] == "ev-1"
    assert _corrected(readable, set=["data.order_id=o-1"])["data"] == {"order_id": "o-1"}

    unreadable = _doc(5, b"{broken", None)
    first = _corrected(unreadable, file=str(fixed))["id"]
    second = _corrected(unreadable, file=str(fixed))["id"]
    other = _corrected(_doc(6, b"{broken", None), file=str(fixed))["id"]
    assert first == second != other
    assert first != "typed-by-hand"
