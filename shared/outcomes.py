"""What a pure domain function answers besides the new state and its effects: a refusal with a
reason, or "not yet" (parked). Every service's domain uses these two; each keeps its own
``Result`` (its state has its own name and shape)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    """A valid command the rules refuse. ``code`` is a closed set (the metric label and the
    start of the published reason); ``detail`` says what was wrong in words."""

    code: str
    detail: str = ""

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


@dataclass(frozen=True)
class Park:
    """Refers to something not seen yet: retry later, reject with ``code`` once expired."""

    code: str
    detail: str
