#!/usr/bin/env bash
# `just dev`: from a fresh clone to a running, migrated counseling-api on APP_PORT (8000).
# The database, in order of preference:
#   1. DATABASE_URL (environment, else .env), if that database answers;
#   2. docker compose's db service, if a Docker engine answers;
#   3. a project-local PostgreSQL from the installed binaries (scripts/local-postgres.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "dev: $*" >&2; }

if [[ ! -f .env ]]; then
    cp .env.example .env
    say "created .env from .env.example"
fi
if [[ -z "${DATABASE_URL:-}" ]]; then
    DATABASE_URL=$(grep '^DATABASE_URL=' .env | tail -n 1 | cut -d= -f2- | tr -d '"'"'")
fi
[[ -n "$DATABASE_URL" ]] || { say "DATABASE_URL is not set in the environment or .env"; exit 2; }
export DATABASE_URL

database_answers() {
    if command -v psql >/dev/null 2>&1; then
        PGCONNECT_TIMEOUT=3 psql "$DATABASE_URL" -Atqc 'SELECT 1' >/dev/null 2>&1
    elif command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -t 3 -d "$DATABASE_URL"
    else
        return 1
    fi
}

has_server_binaries() {
    [[ -n "${PG_BIN_DIR:-}" ]] || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        || command -v initdb >/dev/null 2>&1
}

if database_answers; then
    say "using the database at DATABASE_URL"
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    say "starting PostgreSQL with docker compose"
    docker compose --env-file .env -f docker/docker-compose.yml up -d --wait db
elif has_server_binaries; then
    say "starting the project-local PostgreSQL (.data/postgres)"
    scripts/local-postgres.sh start
else
    say "no database: DATABASE_URL does not answer, no Docker engine runs, and no PostgreSQL"
    say "server binaries are installed. Install one of them:"
    say "  sudo apt-get install postgresql        (Debian/Ubuntu; then run just dev again)"
    say "  or Docker, or point DATABASE_URL at a running PostgreSQL in .env"
    exit 1
fi

say "applying migrations"
cargo run --locked --quiet -p migration -- up
say "starting counseling-api (Ctrl-C to stop)"
exec cargo run --locked --quiet -p counseling-http --bin counseling-api
