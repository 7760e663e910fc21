"""Every threshold the risk rules use, in one versioned place. A change to any of them is a
new ``version``, recorded in each decision (``ruleset_version``) and its audit record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ruleset:
    version: str
    # Scores below this are declined (risk_policy).
    policy_score_threshold: int = 40
    # Scores in this band (inclusive) wait for manual review when the merchant has it on.
    manual_review_band: tuple[int, int] = (40, 59)
    # rapidfuzz token_sort_ratio (0-100) on normalised names / streets / cities.
    name_match_threshold: float = 85.0
    address_match_threshold: float = 85.0


CURRENT_RULESET = Ruleset(version="2026-11-22.1")
