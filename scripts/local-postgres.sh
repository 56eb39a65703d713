#!/usr/bin/env bash
# A project-local PostgreSQL for development, from the installed server binaries.
#   scripts/local-postgres.sh start   create (first time) and start it; create the role and
#                                     database named by DATABASE_URL (env, .env, .env.example),
#                                     with pg_stat_statements
#   scripts/local-postgres.sh stop    stop it
# Data lives in .data/postgres and is kept between runs. As root, the server runs as the
# `postgres` user (PostgreSQL refuses root) and the data sits where that user can reach it, with
# .data/postgres pointing there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "local-postgres: $*" >&2; exit 1; }

find_bin_dir() {
    if [[ -n "${PG_BIN_DIR:-}" ]]; then echo "$PG_BIN_DIR"; return; fi
    local best
    best=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n 1 || true)
    if [[ -n "$best" && -x "$best/initdb" ]]; then echo "$best"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
    die "no PostgreSQL server binaries: install them (sudo apt-get install postgresql) or set PG_BIN_DIR"
}

# DATABASE_URL: the environment, else .env, else .env.example.
database_url() {
    if [[ -n "${DATABASE_URL:-}" ]]; then echo "$DATABASE_URL"; return; fi
    local file
    for file in .env .env.example; do
        if [[ -f "$file" ]] && grep -q '^DATABASE_URL=' "$file"; then
            grep '^DATABASE_URL=' "$file" | tail -n 1 | cut -d= -f2- | tr -d '"'"'"
            return
        fi
    done
    die "DATABASE_URL is not set and there is no .env or .env.example"
}

BIN=$(find_bin_dir)
URL=$(database_url)
# postgres://user:password@host:port/database
re='^postgres(ql)?://([^:@/]+):([^@/]*)@([^:/]+):?([0-9]*)/([^?]+)'
[[ "$URL" =~ $re ]] || die "DATABASE_URL must look like postgres://user:password@host:port/database"
DB_USER=${BASH_REMATCH[2]}; DB_PASSWORD=${BASH_REMATCH[3]}; DB_HOST=${BASH_REMATCH[4]}
DB_PORT=${BASH_REMATCH[5]:-5432}; DB_NAME=${BASH_REMATCH[6]}
case "$DB_HOST" in localhost|127.0.0.1) ;; *) die "DATABASE_URL points at $DB_HOST, not this machine";; esac

if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no postgres user (install the postgresql package)"
    RUN_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    # postgres cannot enter root-only directories such as a clone under /root or mktemp -d.
    STATE="/var/tmp/counseling-platform-$(pwd | sha256sum | cut -c1-12)"
    mkdir -p "$STATE" .data
    chown postgres:postgres "$STATE"
    ROOT="$STATE"
else
    RUN_AS=()
    ROOT="$PWD/.data"
    mkdir -p "$ROOT"
fi
DATA="$ROOT/postgres"
SOCKET="$ROOT/socket"
LOG="$ROOT/postgres.log"
[[ $(id -u) -eq 0 ]] && ln -sfn "$DATA" .data/postgres

run() { (cd / && "${RUN_AS[@]}" "$@"); }

case "${1:-}" in
start)
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        echo "local-postgres: creating a cluster in $DATA"
        run mkdir -p "$DATA" "$SOCKET"
        run "$BIN/initdb" -D "$DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    fi
    run mkdir -p "$SOCKET"
    if run "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        echo "local-postgres: already running on port $DB_PORT"
    else
        if (exec 3<>"/dev/tcp/127.0.0.1/$DB_PORT") 2>/dev/null; then
            die "port $DB_PORT is in use by another program: stop it, or set DATABASE_URL to another port"
        fi
        run "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 \
            -o "-p $DB_PORT -k $SOCKET -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements" start >/dev/null \
            || die "the server did not start; see $LOG"
        echo "local-postgres: started on 127.0.0.1:$DB_PORT (log: $LOG)"
    fi
    psql_admin() { run "$BIN/psql" -h "$SOCKET" -p "$DB_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
    if [[ -z $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '${DB_USER//\'/\'\'}'") ]]; then
        # psql variables quote the values (they only interpolate in scripts read from stdin).
        echo "CREATE ROLE :\"user\" LOGIN CREATEDB PASSWORD :'password';" \
            | psql_admin -v user="$DB_USER" -v password="$DB_PASSWORD" >/dev/null
        echo "local-postgres: created role $DB_USER"
    fi
    if [[ -z $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '${DB_NAME//\'/\'\'}'") ]]; then
        echo "CREATE DATABASE :\"db\" OWNER :\"user\";" \
            | psql_admin -v user="$DB_USER" -v db="$DB_NAME" >/dev/null
        echo "local-postgres: created database $DB_NAME"
    fi
    # Query statistics (the library is preloaded above); the migrations never need it.
    psql_admin -d "$DB_NAME" -c "SET client_min_messages TO warning" \
        -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    ;;
stop)
    if [[ -f "$DATA/PG_VERSION" ]] && run "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        run "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        echo "local-postgres: stopped"
    else
        echo "local-postgres: not running"
    fi
    ;;
*)
    die "usage: $0 start|stop"
    ;;
esac
