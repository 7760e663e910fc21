"""The README's main job runs and every scenario outcome is as expected."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts.processes import REPO
from tests.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_demo_passes_and_prints_a_summary(infra: Infra) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.demo"],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "MONGODB_URI": infra.mongodb_uri,
        },
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary of decisions by state and reason" in result.stdout
    assert "demo: PASSED" in result.stdout
    for reason in (
        "debtor_not_identified",
        "debtor_address",
        "risk_scoring_failed",
        "risk_policy",
        "debtor_limit_exceeded",
    ):
        assert reason in result.stdout
    for section in (
        "reduced before shipping",
        "payouts (one per invoice):",
        "clawbacks:",
        "rejected commands:",
        "dunning (m-dunning",
    ):
        assert section in result.stdout
    assert "BAD" not in result.stdout
    assert "shipping_payouts_instructed_total" in result.stdout
    assert "900.00 with the freed limit: created" in result.stdout
    assert "freed by reductions (EUR)    500.00" in result.stdout
    # The reconciliation act's conservation line (its summary fails the demo otherwise).
    assert "money in 2075.00 = allocated 1950.00 + held 0.00 + forwarded 50.00" in result.stdout
