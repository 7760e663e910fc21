"""A local HTTP server standing in for an external system: it counts requests per
``Idempotency-Key``, tracks how many are in progress at once (overall and per key), answers
after ``delay`` seconds, fails the next requests on demand, or holds them until released."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from scripts.processes import free_port


@dataclass
class HttpDouble:
    delay: float = 0.0
    port: int = field(default_factory=free_port)
    requests: Counter[str] = field(default_factory=Counter)
    in_progress: Counter[str] = field(default_factory=Counter)
    max_per_key: int = 0
    max_in_progress: int = 0
    failures: list[int] = field(default_factory=list)  # statuses for the next requests
    hold: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/calls"

    def fail_next(self, *statuses: int) -> None:
        self.failures.extend(statuses)

    def release(self) -> None:
        self.hold = False
        self._released.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key", b"").decode()
        self.requests[key] += 1
        self.in_progress[key] += 1
        self.max_per_key = max(self.max_per_key, self.in_progress[key])
        self.max_in_progress = max(self.max_in_progress, sum(self.in_progress.values()))
        self.arrived.set()
        try:
            if self.hold:
                await self._released.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.failures.pop(0) if self.failures else 200
        finally:
            self.in_progress[key] -= 1
        body = b'{"ok": true}' if status == 200 else b'{"error": "on demand"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_config=None, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        # uvicorn offers no event to wait on
        while not self._server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)


async def _serve(port: int, delay: float) -> None:
    server = HttpDouble(delay=delay, port=port)
    await server.start()
    await asyncio.Event().wait()


if __name__ == "__main__":  # a process of its own, for benchmarks: --port N --delay S
    import argparse

    parser = argparse.ArgumentParser(description="the HTTP double as a process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    options = parser.parse_args()
    asyncio.run(_serve(options.port, options.delay))
