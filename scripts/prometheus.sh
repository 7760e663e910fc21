#!/usr/bin/env bash
# A local Prometheus (Debian's package, 2.42: the same version docker-compose.yml deploys) for
# the demo and for people: scrapes the workers with deploy/prometheus/alerts.yml loaded.
#
#   scripts/prometheus.sh install   apt-get install prometheus (root), else says what to install
#   scripts/prometheus.sh up        start .local/prometheus on 127.0.0.1:$PROMETHEUS_PORT (9090)
#   scripts/prometheus.sh reload    re-read .local/prometheus/prometheus.yml (new targets)
#   scripts/prometheus.sh down      stop it
#   scripts/prometheus.sh status    running or not, and where
#   scripts/prometheus.sh promtool ARGS...   promtool, installed first when missing
#
# `up` writes .local/prometheus/prometheus.yml from deploy/prometheus/prometheus.yml (targets on
# the workers' default ports 8001/8002) unless one is there; the demo writes its own with the
# ports its workers got (scripts/prom.py), then calls `up` or `reload`.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
HOME_DIR=$REPO/.local/prometheus
PORT=${PROMETHEUS_PORT:-9090}
PIDFILE=$HOME_DIR/prometheus.pid
PY=${PYTHON:-$REPO/.venv/bin/python}

installed() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

install() {
    if installed; then return 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "prometheus.sh: Prometheus is not installed. As root run:" >&2
        echo "    apt-get update && apt-get install -y --no-install-recommends prometheus" >&2
        echo "(Debian's package 'prometheus', 2.42: the server and promtool)" >&2
        exit 1
    fi
    # The package's postinst starts its own service on :9090 where it can. We run our own
    # instance, so forbid service starts during the install (policy-rc.d, exit 101) unless
    # the machine already has such a policy, and stop whatever the package started anyway.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
        >/dev/null
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
    stop_package_service
    installed || { echo "prometheus.sh: install failed" >&2; exit 1; }
    echo "prometheus.sh: installed $(prometheus --version 2>&1 | head -1)"
}

stop_package_service() {
    # Only the Debian service's own process (its pid file, its init script); then make sure
    # nothing the package started is left listening on its default port.
    local pidfile
    for pidfile in /run/prometheus/prometheus.pid /run/prometheus.pid; do
        if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
    if command -v invoke-rc.d >/dev/null; then
        invoke-rc.d prometheus stop >/dev/null 2>&1 || true
    fi
    if [ -x /usr/bin/systemctl ] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
}

running() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

port_of_running() { cat "$HOME_DIR/port" 2>/dev/null || echo "$PORT"; }

wait_ready() {
    if ! "$PY" -m scripts.prom ready "http://127.0.0.1:$1"; then
        echo "prometheus.sh: last log lines:" >&2
        tail -n 20 "$HOME_DIR/prometheus.log" >&2
        exit 1
    fi
}

up() {
    install
    mkdir -p "$HOME_DIR/data"
    if running; then
        echo "prometheus.sh: already running on http://127.0.0.1:$(port_of_running)"
        return 0
    fi
    if [ ! -s "$HOME_DIR/prometheus.yml" ]; then
        "$PY" -m scripts.prom config --out "$HOME_DIR/prometheus.yml" \
            --target risk=127.0.0.1:8001 --target shipping=127.0.0.1:8002
    fi
    if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "prometheus.sh: 127.0.0.1:$PORT is taken by another program; set PROMETHEUS_PORT" >&2
        exit 1
    fi
    # setsid: the instance outlives this script and the terminal it was started from.
    setsid prometheus \
        --config.file="$HOME_DIR/prometheus.yml" \
        --storage.tsdb.path="$HOME_DIR/data" \
        --storage.tsdb.retention.time=2d \
        --web.listen-address="127.0.0.1:$PORT" \
        --web.enable-lifecycle \
        >"$HOME_DIR/prometheus.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    echo "$PORT" >"$HOME_DIR/port"
    wait_ready "$PORT"
    echo "prometheus.sh: running on http://127.0.0.1:$PORT (log $HOME_DIR/prometheus.log)"
}

reload() {
    running || { echo "prometheus.sh: not running" >&2; exit 1; }
    "$PY" -m scripts.prom reload "http://127.0.0.1:$(port_of_running)"
}

down() {
    if running; then
        local pid
        pid=$(cat "$PIDFILE")
        kill "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        echo "prometheus.sh: stopped"
    fi
    rm -f "$PIDFILE" "$HOME_DIR/port"
}

status() {
    if running; then
        echo "prometheus: running (pid $(cat "$PIDFILE")) on http://127.0.0.1:$(port_of_running)"
    else
        echo "prometheus: stopped"
        return 1
    fi
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    reload) reload ;;
    down) down ;;
    status) status ;;
    promtool) shift; install; exec promtool "$@" ;;
    *) echo "usage: $0 install|up|reload|down|status|promtool ARGS..." >&2; exit 2 ;;
esac
