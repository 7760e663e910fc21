# One entry point. On a fresh machine `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup services-up services-down services-status services-reset demo test test-unit test-integration \
        lint typecheck check check-prometheus test-alerts asyncapi contract-doc lock bench clean

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	@$(VENV)/bin/uv pip sync --quiet --python $(PY) requirements.lock
	@$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)
	@echo "setup: virtualenv ready in $(VENV)"

setup: $(STAMP)

services-up: setup
	@bash scripts/infra.sh up

services-down:
	@bash scripts/infra.sh down

services-status:
	@bash scripts/infra.sh status

# Stop Kafka and MongoDB, delete every topic and database, start them empty.
services-reset:
	@bash scripts/infra.sh reset

# The main job: real Kafka and MongoDB, the workers as processes, a scenario through them.
demo: services-up
	@$(PY) -m scripts.demo

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

typecheck: setup
	@$(VENV)/bin/mypy

asyncapi: setup
	@$(PY) -m shared.asyncapi

contract-doc: setup
	@$(PY) -m shared.contract_doc

check: lint typecheck check-prometheus
	@$(PY) -m shared.asyncapi --check
	@$(PY) -m shared.contract_doc --check

# The alert rules and the deployed scrape config as Prometheus 2.42 (Debian's, the version
# docker-compose.yml runs) reads them; the config with the compose mounts mapped to a temp dir.
PROMTOOL := bash scripts/prometheus.sh promtool
check-prometheus: setup
	@$(PROMTOOL) check rules --lint-fatal deploy/prometheus/alerts.yml
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	    cp deploy/prometheus/alerts.yml "$$tmp/alerts.yml" && \
	    sed "s|/etc/prometheus/alerts.yml|$$tmp/alerts.yml|" deploy/prometheus/prometheus.yml \
	        >"$$tmp/prometheus.yml" && \
	    $(PROMTOOL) check config --lint-fatal "$$tmp/prometheus.yml"

# Each alert fires on a series that should page and stays quiet on one that should not.
test-alerts: setup
	@$(PROMTOOL) test rules deploy/prometheus/alerts_test.yml

test-unit: setup
	@$(VENV)/bin/pytest tests/unit -q

test-integration: services-up
	@eval "$$(bash scripts/infra.sh env)" && $(VENV)/bin/pytest tests/integration tests/e2e -q

# Everything CI runs: static checks, then the whole suite on real Kafka and MongoDB.
test: services-up check test-alerts
	@eval "$$(bash scripts/infra.sh env)" && $(VENV)/bin/pytest tests -q

bench: services-up
	@eval "$$(bash scripts/infra.sh env)" && $(PY) -m bench.run $(BENCH_ARGS)

# Regenerate the hashed lock after changing dependencies in pyproject.toml.
lock:
	@$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
	    --python-version 3.11 -o requirements.lock --quiet

clean: services-down
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache
