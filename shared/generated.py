"""Documents generated from the models and committed (docs/asyncapi.json, docs/contract.md):
written by their `make` target, checked fresh by `make check` and a unit test."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(document: Path, text: str, *, check: bool, make_target: str) -> int:
    """Write ``text`` to ``document``, or with ``check`` only compare: 1 when it is stale."""
    if check:
        if not document.exists() or document.read_text() != text:
            print(f"{document} is stale: run 'make {make_target}' and commit it", file=sys.stderr)
            return 1
        print(f"{document.name} is up to date")
        return 0
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(text)
    print(f"wrote {document}")
    return 0
