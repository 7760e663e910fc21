"""Runs a worker as a process: the ASGI app (FastStream broker + HTTP routes) under uvicorn,
which turns SIGTERM into a graceful stop: the batch in hand finishes, offsets are committed."""

from __future__ import annotations

import gc

import uvicorn

from shared.runtime.app import Worker
from shared.runtime.logging import configure_logging


def run_worker(worker: Worker) -> None:
    # Collection happens between batches (Worker._collect_garbage), not during them; what
    # start-up allocated lives for the whole process and is never traversed again.
    gc.freeze()
    gc.disable()
    configure_logging(worker.settings.log_level)  # before uvicorn says its first line
    uvicorn.run(
        worker.asgi_app(),
        host=worker.settings.http_host,
        port=worker.settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
