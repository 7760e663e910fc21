"""Runs a worker as a process: the ASGI app (FastStream broker + HTTP routes) under uvicorn,
which turns SIGTERM into a graceful stop: the batch in hand finishes if it can, offsets are
committed for what was published. The stop is bounded: retry loops give up at once, and a
watchdog ends the process ``shutdown_timeout_seconds`` after the signal whatever it is doing
(an outage, a publish awaiting a broker that is gone). Nothing is lost by that: what was
stored and not published is uncommitted, and the next start replays it from the inbox."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from types import FrameType

import uvicorn

from shared.runtime.app import Worker
from shared.runtime.logging import configure_logging, get_logger

log = get_logger("worker")


class _BoundedShutdownServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, worker: Worker) -> None:
        super().__init__(config)
        self.worker = worker
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: threading.Timer | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.worker.engine.request_stop)
        if self._watchdog is None:
            timeout = self.worker.settings.shutdown_timeout_seconds
            self._watchdog = threading.Timer(timeout, _exit_now, (timeout,))
            self._watchdog.daemon = True
            self._watchdog.start()


def _exit_now(timeout: float) -> None:
    log.error("shutdown_timed_out_exiting", timeout_s=timeout)
    os._exit(1)


def run_worker(worker: Worker) -> None:
    # Collection happens between batches (Worker._collect_garbage), not during them; what
    # start-up allocated lives for the whole process and is never traversed again.
    gc.freeze()
    gc.disable()
    configure_logging(worker.settings.log_level)  # before uvicorn says its first line
    config = uvicorn.Config(
        worker.asgi_app(),
        host=worker.settings.http_host,
        port=worker.settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop=worker.settings.event_loop,
    )
    _BoundedShutdownServer(config, worker).run()
