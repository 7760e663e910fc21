"""Prometheus for the demo and the tests: a scrape configuration derived from the deployed one,
a small HTTP API client, and a private instance as a process.

The configuration is ``deploy/prometheus/prometheus.yml`` with only what differs locally
replaced: the targets (the ports the workers got), the rule file's path (the compose file
mounts it at /etc/prometheus/alerts.yml) and the intervals. So the scrape job, its labels and
the alert rules that are tested are the ones that are deployed.

    python -m scripts.prom config --out FILE --target risk=127.0.0.1:8001 [--interval 2s]
    python -m scripts.prom ready URL          # exit 0 once /-/ready answers (30 s at most)
    python -m scripts.prom reload URL         # POST /-/reload
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOYED_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERT_RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
WORKERS_JOB = "paylater-workers"


def render_config(
    targets: Mapping[str, str],
    *,
    interval: str = "15s",
    rule_file: Path = ALERT_RULES,
) -> str:
    """The deployed configuration scraping ``targets`` ({service: host:port}) instead."""
    config: dict[str, Any] = yaml.safe_load(DEPLOYED_CONFIG.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(rule_file)]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == WORKERS_JOB)
    deployed = {c["labels"]["service"]: c for c in job["static_configs"]}
    unknown = set(targets) - set(deployed)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not scraped in {DEPLOYED_CONFIG}")
    job["static_configs"] = [
        {**deployed[service], "targets": [address]} for service, address in targets.items()
    ]
    return yaml.safe_dump(config, sort_keys=False)


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class PrometheusAPI:
    url: str  # http://127.0.0.1:9090

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:  # noqa: S310
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PrometheusError(f"{path} {params}: {body.get('error', exc)}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('error', body)}")
        if body.get("warnings"):
            raise PrometheusError(f"{path} {params}: warnings {body['warnings']}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector; a parse or evaluation error raises PrometheusError."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} is a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (an aggregation to one series), None when empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expr!r} has {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus at {self.url} not ready after {timeout}s")
            time.sleep(0.2)

    def reload(self) -> None:
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            if response.status != 200:
                raise PrometheusError(f"reload answered {response.status}")


@dataclass
class PrivatePrometheus:
    """A Prometheus of its own on a free loopback port, storage in a temporary directory,
    lifecycle API on (so a new configuration is a file write and a POST /-/reload)."""

    port: int
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prometheus-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "prometheus.yml"

    @property
    def api(self) -> PrometheusAPI:
        return PrometheusAPI(f"http://127.0.0.1:{self.port}")

    def start(self, config: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: bash scripts/prometheus.sh install")
        self.config_path.write_text(config)
        log = (self.directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - the installed binary, our arguments
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self.api.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not start:\n{self.log_tail()}")
            time.sleep(0.2)

    def configure(self, config: str) -> None:
        self.config_path.write_text(config)
        self.api.reload()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.directory / "prometheus.log").read_text()
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.prom")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write a local scrape configuration")
    config.add_argument("--out", type=Path, required=True)
    config.add_argument("--target", action="append", default=[], help="service=host:port")
    config.add_argument("--interval", default="2s")
    for name in ("ready", "reload"):
        commands.add_parser(name).add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "config":
        targets = dict(t.split("=", 1) for t in args.target)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render_config(targets, interval=args.interval))
    elif args.command == "ready":
        try:
            PrometheusAPI(args.url).wait_ready()
        except TimeoutError as exc:
            print(exc, file=sys.stderr)
            return 1
    else:
        PrometheusAPI(args.url).reload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
