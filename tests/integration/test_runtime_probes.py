"""The readiness probe is cheap for the broker and for the worker's own event loop."""

from __future__ import annotations

from typing import Any

from services.shipping.app import build_worker
from services.shipping.settings import ShippingSettings
from shared.runtime.app import Worker


async def test_readiness_asks_the_broker_about_one_input_topic_not_every_topic(
    run_worker: Any,
) -> None:
    """A running shipping worker answers ready; every metadata request its probe makes names
    exactly one topic, one of the worker's inputs. Asking for every topic of the cluster (what
    FastStream's ping does) makes the broker send, and the event loop parse, the metadata of
    all its topics on every probe, holding batches up on a broker with many topics."""
    worker: Worker = await run_worker(build_worker, ShippingSettings)
    admin = worker.broker.config.admin_client
    asked: list[list[str] | None] = []
    original = admin._get_cluster_metadata

    async def recording(topics: list[str] | None = None) -> Any:
        asked.append(topics)
        return await original(topics=topics)

    admin._get_cluster_metadata = recording
    try:
        assert await worker.ready()
    finally:
        admin._get_cluster_metadata = original
    prefix = worker.settings.topic_prefix
    inputs = {prefix + t for t in worker.service.input_topics}
    assert asked, "the probe asked the broker nothing"
    assert all(t is not None and len(t) == 1 and t[0] in inputs for t in asked), asked
