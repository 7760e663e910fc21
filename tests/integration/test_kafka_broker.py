"""What the workers rely on, checked on the broker the project deploys on (Apache Kafka 4.x in
KRaft mode): the protocol versions aiokafka can speak with it, topic and broker configs read
through the admin client, and the size limits the runtime's producer is sized against.
Rebalancing between two worker processes is exercised by
tests/e2e/test_risk_processes.py::test_two_processes_never_exceed_a_debtor_limit."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.protocol import (
    admin,
    commit,
    coordination,
    fetch,
    group,
    metadata,
    offset,
    produce,
    transaction,
)

from tests.infra import Infra, broker_api_versions

# Every request the workers, the ticker, the tests' bus and the benchmark send: producer
# (idempotent), group consumer with manual commits, admin (topics, configs).
REQUESTS_THE_WORKERS_SEND: list[Any] = [
    admin.ApiVersionRequest,
    metadata.MetadataRequest,
    produce.ProduceRequest,
    transaction.InitProducerIdRequest,
    fetch.FetchRequest,
    offset.OffsetRequest,
    coordination.FindCoordinatorRequest,
    group.JoinGroupRequest,
    group.SyncGroupRequest,
    group.HeartbeatRequest,
    group.LeaveGroupRequest,
    commit.OffsetCommitRequest,
    commit.OffsetFetchRequest,
    admin.CreateTopicsRequest,
    admin.DeleteTopicsRequest,
    admin.DescribeConfigsRequest,
    admin.ListGroupsRequest,
    admin.DescribeGroupsRequest,
]
FETCH_API_KEY = 1
CONSUMER_GROUP_HEARTBEAT_API_KEY = 68  # KIP-848's consumer group protocol, GA in Kafka 4.0


async def test_broker_is_kafka_4_and_shares_a_version_of_every_request_aiokafka_sends(
    infra: Infra,
) -> None:
    """The broker dropped Fetch v0–v3 (KIP-896) and speaks KIP-848's group protocol, as Kafka
    4.x does and 3.x does not; for every request type the workers use, aiokafka knows at least
    one version inside the broker's advertised range (it negotiates the highest common one
    per connection), so no request falls back to a version the broker removed."""
    versions = await broker_api_versions(infra.kafka_bootstrap)
    assert versions[FETCH_API_KEY][0] >= 4, f"not a Kafka 4 broker: Fetch {versions[1]}"
    assert CONSUMER_GROUP_HEARTBEAT_API_KEY in versions
    for request in REQUESTS_THE_WORKERS_SEND:
        low, high = versions[request.API_KEY]
        known = {struct.API_VERSION for struct in request._CLASSES}
        common = {v for v in known if low <= v <= high}
        assert common, f"{request.__name__}: aiokafka has {sorted(known)}, broker {low}..{high}"


@pytest.fixture
async def admin_client(infra: Infra) -> Any:
    client = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await client.start()
    yield client
    await client.close()


async def test_topic_retention_is_read_back_through_the_admin_client(
    admin_client: Any, namespace: str
) -> None:
    """A topic created with retention.ms = 2 days reports exactly that from describe_configs,
    and a topic created without it reports the broker's log.retention.hours in milliseconds:
    what a worker reads at start-up to compare with its inbox's memory."""
    short, default = f"{namespace}.short", f"{namespace}.default"
    await admin_client.create_topics(
        [
            NewTopic(short, 1, 1, topic_configs={"retention.ms": str(2 * 86_400_000)}),
            NewTopic(default, 1, 1),
        ]
    )
    responses = await admin_client.describe_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, short, {"retention.ms": None}),
            ConfigResource(ConfigResourceType.TOPIC, default, {"retention.ms": None}),
        ]
    )
    values: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            error_code, _, _, name, entries = resource[:5]
            assert error_code == 0, resource
            values[name] = {e[0]: e[1] for e in entries}["retention.ms"]
    assert values[short] == str(2 * 86_400_000)
    broker = await admin_client.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, "1", {"log.retention.hours": None})]
    )
    hours = {e[0]: e[1] for e in broker[0].resources[0][4]}["log.retention.hours"]
    assert values[default] == str(int(hours) * 3_600_000)
    await admin_client.delete_topics([short, default])


async def test_runtime_batches_fit_the_broker_message_limit_and_oversize_is_refused(
    infra: Infra, admin_client: Any, namespace: str
) -> None:
    """The broker's message.max.bytes (Kafka 4 default 1,048,588) is above the 512 KiB record
    batches the workers' producer builds; a single record above the producer's 1 MiB request
    limit is refused by the client with MessageSizeTooLargeError, never sent partially."""
    responses = await admin_client.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, "1", {"message.max.bytes": None})]
    )
    entries = {e[0]: e[1] for e in responses[0].resources[0][4]}
    assert int(entries["message.max.bytes"]) >= 512 * 1024

    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send_and_wait(f"{namespace}.big", b"x" * (1024 * 1024 + 1))
        small = await producer.send_and_wait(f"{namespace}.big", b"x" * (1000 * 1000))
        assert small.offset == 0
    finally:
        await producer.stop()
