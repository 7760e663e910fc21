"""Name-based (RFC 4122 version 5) ids, computed without building ``uuid.UUID`` objects:
every output event and every payout, clawback and release needs one, and the uuid module's
object construction was a visible share of a worker's CPU. Tests hold both equal to
``uuid.uuid5``."""

from __future__ import annotations

import hashlib
import uuid


def uuid5_hex(namespace: uuid.UUID, name: str) -> str:
    """``uuid.uuid5(namespace, name).hex``."""
    digest = bytearray(
        hashlib.sha1(namespace.bytes + name.encode()).digest()[:16]  # noqa: S324 - RFC 4122 v5
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def uuid5_str(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``."""
    h = uuid5_hex(namespace, name)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
