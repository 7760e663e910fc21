"""What runs the platform elsewhere must agree with the code: every metric an alert or a
dashboard panel queries exists in a worker's registry, every worker the manifests start exists
and listens where Prometheus and the probes look."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.runtime.app import Worker

DEPLOY = Path(__file__).parents[2] / "deploy"
ROOT = DEPLOY.parent
WORKERS = ("risk", "shipping")
# PromQL words that look like metric names but are functions, keywords or label names.
_PROMQL_WORDS = frozenset(
    [
        "sum",
        "by",
        "rate",
        "increase",
        "max",
        "min",
        "avg",
        "histogram_quantile",
        "without",
        "on",
        "ignoring",
        "le",
        "count",
        "service",
        "topic",
        "kind",
        "stage",
        "outcome",
        "state",
        "reason",
        "generation",
        "job",
        "handler",
        "app_name",
        "partition",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ]
)
_METRIC = re.compile(r"\b([a-z_][a-z0-9_]*)\b(?!\s*[(=!~])")


def build(name: str) -> Worker:
    worker: Worker = importlib.import_module(f"services.{name}.app").build_worker()
    return worker


def known_metric_names() -> set[str]:
    names = {"up"}
    for name in WORKERS:
        names |= set(build(name).metrics.registry._names_to_collectors)
    return names


def metrics_in(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    return {
        m
        for m in _METRIC.findall(without_groupings)
        if m not in _PROMQL_WORDS and not re.fullmatch(r"\d.*", m)
    }


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "paylater.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_alert_queries_metrics_the_workers_export() -> None:
    known = known_metric_names()
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
        assert rule["labels"]["severity"] in {"page", "ticket"}
        unknown = metrics_in(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} queries unknown metrics {unknown}"


def test_every_dashboard_panel_queries_metrics_the_workers_export() -> None:
    known = known_metric_names()
    for expr in dashboard_exprs():
        unknown = metrics_in(expr) - known
        assert not unknown, f"panel query {expr!r} uses unknown metrics {unknown}"


def test_the_metric_extraction_sees_metric_names() -> None:
    found = metrics_in('sum by (service) (rate(worker_events_total{topic="x"}[5m])) > up')
    assert found == {"worker_events_total", "up"}


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
