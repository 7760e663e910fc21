"""Publishes the wall clock to ``clock.ticks`` every N seconds.

Time-driven work (parked retries, dunning, e-invoice polling) acts only when a tick arrives,
so the domain never reads a clock; tests publish synthetic ticks instead of running this.

    python -m shared.runtime.ticker --interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from shared.envelope import event_key, event_to_bytes, new_event
from shared.events import ClockTick
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.settings import WorkerSettings

log = get_logger("ticker")


def tick_event_bytes(now: datetime) -> tuple[bytes, bytes]:
    event = new_event(ClockTick(now=now), id=str(uuid.uuid4()), source="/ticker", time=now)
    return event_key(event), event_to_bytes(event)


async def run_ticker(interval: float, settings: WorkerSettings) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="ticker"
    )
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("ticker_started", interval_s=interval)
    try:
        while not stop.is_set():
            key, value = tick_event_bytes(datetime.now(UTC))
            await producer.send_and_wait(settings.topic_prefix + ClockTick.TOPIC, value, key=key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    finally:
        await producer.stop()
        log.info("ticker_stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    args = parser.parse_args()
    settings = WorkerSettings()
    configure_logging(settings.log_level)
    asyncio.run(run_ticker(args.interval, settings))


if __name__ == "__main__":
    main()
