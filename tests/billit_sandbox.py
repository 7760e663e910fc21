"""The Billit sandbox simulator as a real HTTP server for tests.

``billit_sim_url`` starts ``python -m services.einvoice_status.simulator`` once per test module
on a free loopback port, exactly as a person would start it, and waits until it answers.
``billit_sim`` (per test) resets its state and gives an admin handle: tests move the simulated
clock, script receivers and inject faults through it, and read its counters.
Import both fixtures into a test module to use them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import IO, Any

import httpx
import pytest

from services.einvoice_status import exact_json
from services.einvoice_status.billit import BillitClient, BillitConfig

API_KEY = "sim-api-key"
PARTY_ID = "1001"
OTHER_API_KEY = "sim-other-key"
OTHER_PARTY_ID = "2002"
DEFAULT_IBAN = "BE71096123456769"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    # Output goes to a file, not a pipe: a pipe nobody reads would fill up and stall the server.
    return subprocess.Popen(
        [sys.executable, "-m", "services.einvoice_status.simulator", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/_sim/clock", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def billit_sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("billit-sim") / "simulator.log"
    with log_path.open("wb") as log:
        for _ in range(3):  # the free port may be taken between probing and binding: try another
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            process = _start(port, log)
            if _wait_ready(process, url, time.monotonic() + 30):
                break
            process.kill()
            process.wait()
        else:
            raise RuntimeError(f"the Billit simulator did not start:\n{log_path.read_text()}")
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class SimAdmin:
    """The simulator's test-only admin API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.AsyncClient(base_url=url, timeout=10)

    async def _post(self, path: str, body: Any) -> Any:
        response = await self._http.post(path, content=exact_json.dumps(body))
        response.raise_for_status()
        return exact_json.loads(response.content)

    async def advance(self, seconds: float) -> str:
        now: str = (await self._post("/_sim/clock", {"advance_seconds": Decimal(str(seconds))}))[
            "now"
        ]
        return now

    async def fault(self, **fault: Any) -> None:
        """Arms one fault (see docs/billit-simulator.md); float options are sent as decimals."""
        await self._post(
            "/_sim/faults",
            {k: Decimal(str(v)) if isinstance(v, float) else v for k, v in fault.items()},
        )

    async def participant(self, identifier: str, **spec: Any) -> None:
        await self._post("/_sim/participants", {"Identifier": identifier, **spec})

    async def script_order(self, order_id: int, script: dict[str, Any]) -> None:
        response = await self._http.put(
            f"/_sim/orders/{order_id}/script", content=exact_json.dumps(script)
        )
        response.raise_for_status()

    async def counters(self) -> dict[str, Any]:
        response = await self._http.get("/_sim/counters")
        response.raise_for_status()
        counters: dict[str, Any] = exact_json.loads(response.content)
        return counters

    async def reset(self) -> None:
        await self._post("/_sim/reset", {})

    async def raw(
        self, method: str, path: str, body: Any = None, *, key: str = API_KEY
    ) -> httpx.Response:
        """A Billit call without our client, to check what the simulator itself enforces."""
        return await self._http.request(
            method,
            path,
            content=None if body is None else exact_json.dumps(body),
            headers={"ApiKey": key, "PartyID": PARTY_ID},
        )

    async def aclose(self) -> None:
        await self._http.aclose()


@pytest.fixture
async def billit_sim(billit_sim_url: str) -> AsyncIterator[SimAdmin]:
    admin = SimAdmin(billit_sim_url)
    await admin.reset()
    yield admin
    await admin.aclose()


def client_for(sim: SimAdmin, **overrides: Any) -> BillitClient:
    """A client with quick retries, so tests of backoff do not take minutes."""
    settings: dict[str, Any] = {
        "base_url": sim.url,
        "api_key": API_KEY,
        "party_id": PARTY_ID,
        "backoff_base_seconds": 0.05,
        "backoff_max_seconds": 2.0,
        "read_timeout_seconds": 5.0,
        "rate_per_second": 200.0,
        **overrides,
    }
    return BillitClient(BillitConfig(**settings))
