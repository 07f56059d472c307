#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for the tests (Debian's postgresql), data under a temp dir.
#
#   pg-local.sh install   apt-get postgresql when its binaries are missing
#   pg-local.sh start     initdb (once) + start on $CHUNKVAULT_PG_PORT (5433); role/db "backup"; idempotent
#   pg-local.sh env       export line for DATABASE_URL
#   pg-local.sh stop
#
# As root the server runs as the "postgres" user (PostgreSQL refuses to run as root).
set -euo pipefail
D=${CHUNKVAULT_PG_DIR:-/var/tmp/chunkvault-pg}
PORT=${CHUNKVAULT_PG_PORT:-5433}
URL=postgres://backup:backup@127.0.0.1:$PORT/backup

die() { echo "pg-local: $*" >&2; exit 1; }
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
up() { PGPASSWORD=backup PGCONNECT_TIMEOUT=2 "$(bindir)/psql" -h 127.0.0.1 -p "$PORT" -U backup -d backup -qAtc 'select 1' >/dev/null 2>&1; }

install() {
  [[ -x $(bindir)/initdb ]] && return
  [[ -n ${CHUNKVAULT_APT_UPDATED:-} ]] || apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends postgresql >/dev/null
}

start() {
  exec 9> "${D%/}.lock"
  flock 9
  [[ -x $(bindir)/initdb ]] || install
  up && { echo "pg-local: already up: $URL"; return; }
  local bin; bin=$(bindir)
  mkdir -p "$D"
  [[ $(id -u) == 0 ]] && chown postgres: "$D"
  if [[ ! -s $D/data/PG_VERSION ]]; then
    echo backup > "$D/pw"
    [[ $(id -u) == 0 ]] && chown postgres: "$D/pw"
    as_pg "$bin/initdb" -D "$D/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile="$D/pw" \
      -E UTF8 --locale=C.UTF-8 --no-sync > "$D/initdb.log" 2>&1 || { cat "$D/initdb.log" >&2; die "initdb failed"; }
    rm -f "$D/pw"
    local fresh=1
  fi
  as_pg "$bin/pg_ctl" -D "$D/data" -l "$D/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $D -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start > /dev/null 9>&- || { tail -20 "$D/server.log" >&2; die "start failed"; }
  if [[ ${fresh:-0} == 1 ]]; then
    as_pg "$bin/psql" -h "$D" -p "$PORT" -U postgres -qAt -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE backup LOGIN CREATEDB PASSWORD 'backup'" -c "CREATE DATABASE backup OWNER backup" > /dev/null
  fi
  up || die "cannot log in as backup"
  echo "pg-local: up: $URL"
}

stop() {
  [[ -s $D/data/postmaster.pid ]] || return 0
  as_pg "$(bindir)/pg_ctl" -D "$D/data" -m fast -w stop > /dev/null || true
}

env_lines() {
  echo "export DATABASE_URL=$URL"
}

source "$(dirname "$0")/lib/command.sh"
script_command 10 "${1:-}"
