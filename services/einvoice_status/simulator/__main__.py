"""``python -m services.einvoice_status.simulator --port 8090``: one process, state in memory."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

import uvicorn

from services.einvoice_status.simulator.app import build_app
from services.einvoice_status.simulator.state import Credentials, Fault, SandboxState

DEFAULT_KEYS = ["sim-api-key=1001", "sim-other-key=2002"]
DEFAULT_BANK_ACCOUNTS = ["1001=BE71096123456769", "2002=BE68539007547034"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Billit sandbox simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--api-key",
        action="append",
        metavar="KEY=PARTY[,PARTY]",
        help=f"an API key and the PartyIDs it may act for (default {' '.join(DEFAULT_KEYS)})",
    )
    parser.add_argument(
        "--bank-account",
        action="append",
        metavar="PARTY=IBAN",
        help="an IBAN in the party's MyBillit bank list; the first per party is the default",
    )
    parser.add_argument(
        "--start",
        default="2026-06-01T09:00:00",
        help="the simulated clock's start (naive local time, as Billit writes it)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="JSON",
        help='a fault as the admin API takes it, e.g. {"endpoint":"create_order","kind":"status",'
        '"status":429,"retry_after":"1","count":2}',
    )
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def build_state(args: argparse.Namespace) -> SandboxState:
    api_keys: dict[str, frozenset[str]] = {}
    for item in args.api_key or DEFAULT_KEYS:
        key, _, parties = item.partition("=")
        api_keys[key] = frozenset(p for p in parties.split(",") if p)
    bank_accounts: dict[str, list[str]] = {}
    for item in args.bank_account or DEFAULT_BANK_ACCOUNTS:
        party, _, iban = item.partition("=")
        bank_accounts.setdefault(party, []).append(iban)
    state = SandboxState(
        start=datetime.fromisoformat(args.start),
        credentials=Credentials(api_keys=api_keys, bank_accounts=bank_accounts),
    )
    for raw in args.fault:
        state.add_fault(Fault.parse(json.loads(raw)))
    return state


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    uvicorn.run(
        build_app(build_state(args)),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
