"""What runs the platform elsewhere must agree with the code: every alert has a promtool test
that makes it fire and one that keeps it quiet, every series those tests feed is one a worker
exports (so an alert on a renamed metric fails its promtool test or this file), the deployed
Prometheus is the version the tests run, every worker the manifests start exists and listens
where Prometheus and the probes look. The dashboard's queries are checked on a live Prometheus
(tests/e2e/test_dashboard_live.py)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.prom import render_config
from shared.runtime.app import Worker

DEPLOY = Path(__file__).parents[2] / "deploy"
ROOT = DEPLOY.parent
WORKERS = ("risk", "shipping", "reconciliation", "dunning", "einvoice_status")
PROMETHEUS_VERSION = "2.42.0"  # Debian bookworm's package, which the tests run
# Labels Prometheus adds to every scraped series: the job, the target, and the target labels
# of deploy/prometheus/prometheus.yml.
TARGET_LABELS = frozenset({"job", "instance", "service"})
_SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")


def build(name: str) -> Worker:
    worker: Worker = importlib.import_module(f"services.{name}.app").build_worker()
    return worker


def exported_series() -> dict[str, frozenset[str]]:
    """Every sample name the workers' registries can expose, with its label names."""
    series: dict[str, frozenset[str]] = {"up": frozenset()}
    for name in WORKERS:
        registry = build(name).metrics.registry
        for sample, collector in registry._names_to_collectors.items():
            labels = frozenset(getattr(collector, "_labelnames", ()))
            series[sample] = labels | ({"le"} if sample.endswith("_bucket") else set())
    return series


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_tests() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    tests: list[dict[str, Any]] = doc["tests"]
    return tests


def parse_series(text: str) -> tuple[str, set[str]]:
    match = _SERIES.match(text)
    assert match, f"not a series: {text!r}"
    name, matchers = match.group(1), match.group(2) or ""
    labels = {m.split("=", 1)[0].strip() for m in re.findall(r'\w+\s*=\s*"[^"]*"', matchers)}
    return name, labels


def test_every_alert_is_complete() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert {"summary", "runbook"} <= rule["annotations"].keys(), rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in rule_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts no promtool case makes fire"
    assert alerts - quiet == set(), "alerts no promtool case shows quiet"
    assert (firing | quiet) - alerts == set(), "promtool cases for alerts that do not exist"


def test_the_promtool_cases_feed_series_the_workers_export() -> None:
    exported = exported_series()
    for case in rule_tests():
        for series in case["input_series"]:
            name, labels = parse_series(series["series"])
            assert name in exported, f"{case['name']}: no worker exports {name}"
            unknown = labels - exported[name] - TARGET_LABELS
            assert not unknown, f"{case['name']}: {name} has no labels {unknown}"


def test_the_series_parser_reads_names_and_labels() -> None:
    assert parse_series('worker_events_total{topic="a,b", outcome="x"}') == (
        "worker_events_total",
        {"topic", "outcome"},
    )
    assert parse_series("up") == ("up", set())


def test_the_deployed_prometheus_is_the_tested_version() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["prometheus"]["image"] == f"prom/prometheus:v{PROMETHEUS_VERSION}"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (bash scripts/prometheus.sh install)")
    version = subprocess.run(
        [promtool, "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"version {PROMETHEUS_VERSION}" in version


def test_every_dashboard_panel_has_a_query() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "paylater.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("name", WORKERS)
def test_manifests_run_each_worker_on_its_port(name: str) -> None:
    port = build(name).settings.http_port
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / f"{name}.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", f"services.{name}"]
    assert {"name": "http", "containerPort": port} in container["ports"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert (ROOT / "services" / name / "__main__.py").exists()

    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert f"{name}:{port}" in targets

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"][name]["command"] == ["python", "-m", f"services.{name}"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    ticker = yaml.safe_load((DEPLOY / "k8s" / "ticker.yaml").read_text())
    assert ticker["spec"]["replicas"] == 1


def test_the_local_config_is_the_deployed_one_with_other_targets() -> None:
    """What the demo and the live test run: the deployed job and its target labels, only the
    addresses, the intervals and the rule file's path replaced."""
    deployed = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    local = yaml.safe_load(render_config({"risk": "127.0.0.1:4711"}, interval="1s"))
    assert local["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert local["rule_files"] == [str(DEPLOY / "prometheus" / "alerts.yml")]
    job, deployed_job = local["scrape_configs"][0], deployed["scrape_configs"][0]
    assert {k: v for k, v in job.items() if k != "static_configs"} == {
        k: v for k, v in deployed_job.items() if k != "static_configs"
    }
    assert job["static_configs"] == [{"targets": ["127.0.0.1:4711"], "labels": {"service": "risk"}}]
    with pytest.raises(ValueError, match="ticker"):
        render_config({"ticker": "127.0.0.1:1"})
