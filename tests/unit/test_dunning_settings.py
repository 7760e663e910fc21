"""The worker's ladder, zone and pause lengths come from DUNNING_* settings."""

from __future__ import annotations

import pytest

from services.dunning.domain import DunningConfig
from services.dunning.settings import DunningSettings


def test_the_defaults_are_the_issue_ladder_in_berlin() -> None:
    assert DunningSettings().dunning_config() == DunningConfig()


def test_the_ladder_zone_and_pauses_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUNNING_NOTICE_DAYS", "[2,10,20]")
    monkeypatch.setenv("DUNNING_HAND_OVER_DAY", "30")
    monkeypatch.setenv("DUNNING_TIME_ZONE", "Europe/Lisbon")
    monkeypatch.setenv("DUNNING_MERCHANT_PAUSE_WINDOW", "[2,5]")
    monkeypatch.setenv("DUNNING_MERCHANT_PAUSE_DAYS", "3")
    monkeypatch.setenv("DUNNING_OPS_PAUSE_DAYS", "10")
    assert DunningSettings().dunning_config() == DunningConfig(
        time_zone="Europe/Lisbon",
        notice_days=(2, 10, 20),
        hand_over_day=30,
        merchant_pause_days=3,
        merchant_pause_window=(2, 5),
        ops_pause_days=10,
    )


def test_a_ladder_that_does_not_increase_stops_the_worker_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUNNING_NOTICE_DAYS", "[1,21,14]")
    with pytest.raises(ValueError, match="increasing"):
        DunningSettings().dunning_config()
