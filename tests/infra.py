"""Where the tests find real Kafka and MongoDB, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` and ``MONGODB_URI`` when both are set (CI elsewhere, a laptop);
2. testcontainers, when a Docker engine answers;
3. the project's own ``scripts/infra.sh up`` (Apache Kafka 4.4 in KRaft mode from Maven Central,
   mongod 6.0.5 from a PyPI wheel, on loopback).

Every path runs the same versions: ``KAFKA_IMAGE`` and ``MONGO_IMAGE`` below, the versions
``scripts/infra.sh`` installs and the images of ``docker-compose.yml`` are held equal by
``tests/unit/test_stack_versions.py``.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KAFKA_IMAGE = "apache/kafka:4.4.0"
MONGO_IMAGE = "mongo:6.0.5"
# The broker's JVM options: ZGC instead of the launcher's G1, whose young collections paused a
# broker on a loaded machine 15-30 ms every few seconds (scripts/infra.sh; docs/benchmarks.md).
KAFKA_JVM_PERFORMANCE_OPTS = "-server -XX:+UseZGC -Djava.awt.headless=true"


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    mongodb_uri: str
    origin: str  # env | testcontainers | local

    def describe(self) -> str:
        return f"{self.origin}: Kafka at {self.kafka_bootstrap}, MongoDB at {self.mongodb_uri}"


def ensure_infra() -> Infra:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    mongo = os.environ.get("MONGODB_URI")
    if kafka and mongo:
        return Infra(kafka, mongo, "env")
    if _docker_answers():
        return _start_containers()
    return _start_local()


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False


def _start_containers() -> Infra:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.mongodb import MongoDbContainer

    # Apache's own image in KRaft mode, configured like scripts/infra.sh. The broker must
    # advertise the address the tests reach it on, so the host port is chosen before start.
    port = _free_port()
    kafka: Any = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        )
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_NUM_PARTITIONS", "4")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")
        .with_env("KAFKA_JVM_PERFORMANCE_OPTS", KAFKA_JVM_PERFORMANCE_OPTS)
    )
    kafka.start()
    atexit.register(kafka.stop)
    wait_for_logs(kafka, "Kafka Server started", timeout=120)
    # Transactions need a replica set: a single-node one, initiated once.
    mongo: Any = MongoDbContainer(MONGO_IMAGE).with_command("--replSet rs0 --bind_ip_all")
    mongo.start()
    atexit.register(mongo.stop)
    host = mongo.get_container_host_ip()
    mongo_port = int(mongo.get_exposed_port(27017))
    _initiate_replica_set(host, mongo_port)
    uri = f"mongodb://{host}:{mongo_port}/?replicaSet=rs0&directConnection=true"
    return Infra(f"localhost:{port}", uri, "testcontainers")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _initiate_replica_set(host: str, port: int) -> None:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        host, port, directConnection=True, serverSelectionTimeoutMS=30000
    )
    try:
        client.admin.command(
            "replSetInitiate", {"_id": "rs0", "members": [{"_id": 0, "host": "localhost:27017"}]}
        )
    except pymongo.errors.OperationFailure as exc:
        if exc.code != 23:  # already initiated
            raise
    deadline = time.monotonic() + 30
    while not client.admin.command("hello").get("isWritablePrimary"):
        if time.monotonic() > deadline:
            raise TimeoutError("MongoDB container never became primary")
        time.sleep(0.2)
    client.close()


def _start_local() -> Infra:
    subprocess.run(["bash", str(REPO / "scripts" / "infra.sh"), "up"], check=True)
    port_kafka = os.environ.get("KAFKA_PORT", "9092")
    port_mongo = os.environ.get("MONGODB_PORT", "27017")
    return Infra(
        f"127.0.0.1:{port_kafka}",
        f"mongodb://127.0.0.1:{port_mongo}/?replicaSet=rs0",
        "local",
    )


async def broker_api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions table (API key -> (min, max)), as aiokafka reads it on
    connecting: the versions every later request on that connection is negotiated from."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        conn = await client._get_conn(node)
        assert conn is not None, f"no connection to broker {node} at {bootstrap}"
        versions: dict[int, tuple[int, int]] = dict(conn._versions)
        return versions
    finally:
        await client.close()


def describe_versions(infra: Infra) -> str:
    """One line for the test log: which broker and database the run is on."""
    import asyncio

    import pymongo

    produce_low, produce_high = asyncio.run(broker_api_versions(infra.kafka_bootstrap))[0]
    release = os.environ.get("KAFKA_VERSION") or (
        _local_kafka_version() if infra.origin == "local" else KAFKA_IMAGE.split(":")[1]
    )
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        infra.mongodb_uri, serverSelectionTimeoutMS=10000
    )
    try:
        mongo_version = client.server_info()["version"]
    finally:
        client.close()
    return (
        f"infra ({infra.origin}): Apache Kafka {release} at {infra.kafka_bootstrap} "
        f"(broker speaks Produce v{produce_low}-v{produce_high}); "
        f"MongoDB {mongo_version} at {infra.mongodb_uri}"
    )


def _local_kafka_version() -> str:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "infra.sh"), "version"],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.split()[1]
