#!/usr/bin/env bash
# `just dev`: from a fresh clone to a running, migrated counseling-api on APP_PORT (8000).
# Thin on purpose: configuration is read, secrets made and the database chosen by our binaries
# (local-postgres, migration, counseling-api), never here. `local-postgres provide` takes, in
# order: DATABASE_URL if it answers; compose's db if Docker and its compose plugin work; else the
# project-local PostgreSQL, saying in one line why it passed over each. A problem in the database
# settings stops it (exit 2) before anything starts; counseling-api checks its other settings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "dev: $*" >&2; }
local_postgres() { cargo run --quiet --locked --bin local-postgres -- "$@"; }

# .env from .env.example with fresh passwords, unless there is one.
local_postgres env-file
local_postgres provide

say "applying migrations"
cargo run --locked --quiet --bin migration -- up
say "starting counseling-api (Ctrl-C to stop)"
exec cargo run --locked --quiet --bin counseling-api
