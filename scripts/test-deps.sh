#!/usr/bin/env bash
# Makes sure everything the tests need is there: SoftHSM2 (the PKCS#11 token
# of the CA tests), a Redis server (the gateway's shared rate limits;
# BULWARK_TEST_REDIS, default 127.0.0.1:6379) and a PostgreSQL server that accepts the test DSN
# (BULWARK_TEST_POSTGRES, default the local server's "test" database as user
# postgres over TCP). Installs what is missing from Debian's packages and
# starts the local cluster if it is stopped. Idempotent; safe to run before
# every test run.
set -euo pipefail

DSN="${BULWARK_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}"
log() { printf 'test-deps: %s\n' "$*" >&2; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
can_query() { psql "$DSN" -XqAtc 'SELECT 1' >/dev/null 2>&1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
  log "SoftHSM2 is not installed; installing it from Debian's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
fi
log "SoftHSM2 ready"

if [ -z "${BULWARK_TEST_REDIS:-}" ]; then
  redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
  if ! command -v redis-server >/dev/null 2>&1; then
    log "Redis is not installed; installing it from Debian's packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
  if ! redis_up; then
    log "starting Redis on 127.0.0.1:6379 (nothing kept on disk)"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null
    for _ in $(seq 1 40); do redis_up && break; sleep 0.25; done
    redis_up || { log "Redis did not start"; exit 1; }
  fi
  log "Redis ready"
fi

if [ -n "${BULWARK_TEST_POSTGRES:-}" ]; then
  # An explicit server is the caller's; only check it.
  command -v psql >/dev/null || { log "psql not found; cannot check BULWARK_TEST_POSTGRES"; exit 0; }
  can_query || { log "cannot reach BULWARK_TEST_POSTGRES"; exit 1; }
  exit 0
fi


if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  log "PostgreSQL is not installed; installing it from Debian's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

if ! pg_up; then
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  log "starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { log "PostgreSQL did not start"; exit 1; }
fi

if ! can_query; then
  # A fresh Debian cluster refuses passwordless TCP logins and has no "test"
  # database: allow trust on loopback for the test user and create it.
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    log "allowing passwordless loopback connections for tests in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    sleep 1
  fi
  if ! psql "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" -XqAtc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1; then
    log "creating database test"
    psql "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" -Xqc 'CREATE DATABASE test'
  fi
  can_query || { log "PostgreSQL is running but $DSN is refused"; exit 1; }
fi
log "PostgreSQL ready"
