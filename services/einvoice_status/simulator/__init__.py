"""A faithful, in-memory Billit sandbox for tests and the demo (no network needed).

Start it with ``python -m services.einvoice_status.simulator --port 8090``; see
docs/billit-simulator.md for the admin API (clock, participants, scripts, faults, counters) and
``state.py`` for which of the notes' assumptions it follows.
"""

from services.einvoice_status.simulator.app import build_app
from services.einvoice_status.simulator.state import Credentials, SandboxState

__all__ = ["Credentials", "SandboxState", "build_app"]
