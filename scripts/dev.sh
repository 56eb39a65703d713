#!/usr/bin/env bash
# `just dev`: from a fresh clone to a running, migrated counseling-api on APP_PORT (8000).
# Thin on purpose: configuration is read, and secrets made, by our binaries (local-postgres,
# migration, counseling-api), never parsed here. The database, in order of preference:
#   1. DATABASE_URL (environment, else .env), if it accepts a connection;
#   2. docker compose's db service, if a Docker engine answers;
#   3. the project-local PostgreSQL (local-postgres start).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "dev: $*" >&2; }
local_postgres() { cargo run --quiet --locked -p counseling-local-postgres --bin local-postgres -- "$@"; }

# .env from .env.example with fresh passwords, unless there is one.
local_postgres env-file

if local_postgres answers; then
    say "using the database at DATABASE_URL"
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    say "starting PostgreSQL with docker compose"
    docker compose --env-file .env -f docker/docker-compose.yml up -d --wait db
else
    say "starting the project-local PostgreSQL"
    local_postgres start
fi

say "applying migrations"
cargo run --locked --quiet -p migration -- up
say "starting counseling-api (Ctrl-C to stop)"
exec cargo run --locked --quiet -p counseling-http --bin counseling-api
