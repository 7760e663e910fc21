"""Placeholder until the infra helper lands: reads explicit addresses from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    mongodb_uri: str
    origin: str


def ensure_infra() -> Infra:
    return Infra(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URI"], "env")
