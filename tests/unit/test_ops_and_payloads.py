"""The ops command as a process (its help reads well and names every group and command), and
payloads that could not travel in an event are refused where they are written."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from scripts.processes import REPO
from shared.runtime.jobs import JobKind, Jobs, http_json_call
from shared.runtime.timers import Timers


def ops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.ops", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ops_help_lists_services_groups_and_commands() -> None:
    top = ops("--help")
    assert top.returncode == 0, top.stderr
    for service in ("shipping", "dunning", "reconciliation", "einvoice_status"):
        assert service in top.stdout
    assert "jobs requeue" in top.stdout  # the examples in the description
    group = ops("shipping", "--help")
    assert group.returncode == 0
    assert "timers" in group.stdout
    assert "jobs" in group.stdout
    assert "--database" in group.stdout
    jobs = ops("shipping", "jobs", "--help")
    assert "list" in jobs.stdout
    assert "requeue" in jobs.stdout
    assert ops("shipping").returncode == 2  # a group is required: usage error


def test_payloads_with_floats_are_refused_when_written() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(TypeError, match=r"payload\.rate"):
        Timers.schedule_op(action="a", entity="e", key="e", due_at=now, payload={"rate": 0.5})
    jobs = Jobs("toy", kinds=[JobKind("notify", "remote", http_json_call)])
    with pytest.raises(TypeError, match=r"payload\.json\.items\[0\]"):
        jobs.enqueue_op(
            cause_id="c",
            kind="notify",
            key="k",
            payload={"json": {"items": [1.5]}},
            not_before=now,
            now=now,
        )
    Timers.schedule_op(action="a", entity="e", key="e", due_at=now, payload={"cents": 50})
