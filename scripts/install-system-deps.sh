#!/usr/bin/env bash
# Installs the system packages the local stack needs, only if missing:
# PostgreSQL server (initdb/pg_ctl), a JDK 17 for Neo4j, Maven to fetch
# Neo4j's artifacts, and wrk, the HTTP load generator the benchmarks drive the
# server with (bench/heartbeat.py; a small C program, so in the default list
# rather than a mode of its own). Uses apt-get (Debian/Ubuntu); other systems:
# install the same by hand, or use docker-compose.yml.
# `--browser` (make test): also Debian's chromium, which the docs test drives
# headless (tests/test_docs_offline.py); without apt-get that test is skipped.
set -euo pipefail

browser=false
[[ ${1:-} == --browser ]] && browser=true

need=()
if ! command -v pg_config >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql postgresql-contrib)
fi
if ! command -v java >/dev/null 2>&1; then need+=(openjdk-17-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then need+=(maven); fi
if ! command -v wrk >/dev/null 2>&1; then need+=(wrk); fi
if ! command -v runuser >/dev/null 2>&1; then need+=(util-linux); fi
if $browser && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    need+=(chromium)
  else
    echo "[deps] chromium missing and no apt-get: the headless docs test will be skipped" >&2
  fi
fi

if [[ ${#need[@]} -eq 0 ]]; then
  echo "[deps] system packages present"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "[deps] ERROR: missing ${need[*]} and no apt-get; install them by hand" >&2; exit 1; }
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "[deps] installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's postgresql package starts a cluster on 5432; ours runs on its own port.
echo "[deps] installed ${need[*]}"
