# Recipes for developers. `just` with no arguments lists them.
# Binaries read DATABASE_URL from the environment, else from .env; just itself loads nothing.
# On Windows recipe lines run in cmd.exe (always installed and, unlike Windows PowerShell, it
# passes `--` on to cargo); the recipes that call bash scripts have a [windows] variant.
# Arguments never become shell text: on unix recipes take them as positional arguments ("$1",
# "$@"); on Windows as exported variables read with delayed expansion (`!NAME!`, cmd /v:on),
# which cmd expands after parsing, so `&`, `|` or `%` in a value are not run. An empty variadic
# is left out rather than expanded (cmd may keep an unset `!ARGS!` as text); a variadic's words
# are split again there at spaces, never run.
# Recipes run our debug binaries with `cargo run --bin NAME`, not `-p PACKAGE`: cargo then settles
# the dependencies' features for the whole workspace, so those recipes share one build. Each `-p`
# set is a feature set of its own, which rebuilds some sixty dependencies the first time.

set dotenv-load := false
set shell := ["bash", "-euo", "pipefail", "-c"]
set windows-shell := ["cmd.exe", "/d", "/v:on", "/c"]

# List the recipes.
default:
    @just --list

# From a fresh clone to a running, migrated service on http://127.0.0.1:8000.
[unix]
dev:
    @scripts/dev.sh

# Create .env if missing, migrate (as DATABASE_OWNER_URL, else DATABASE_URL) and start the service (start a database first).
[windows]
dev: env-file
    @cargo run --locked --quiet --bin migration -- up
    @cargo run --locked --quiet --bin counseling-api

# Apply every pending migration, and run an applying one again (as DATABASE_OWNER_URL, else DATABASE_URL).
migrate-up:
    @cargo run --quiet --locked --bin migration -- up

# Roll back the most recent migration (`N`: the N most recent; `--to VERSION`: every one after VERSION; `--force` also drops tables with rows).
[unix]
[positional-arguments]
migrate-down *ARGS:
    @cargo run --quiet --locked --bin migration -- down "$@"

# Roll back the most recent migration (`N`: the N most recent; `--to VERSION`: every one after VERSION; `--force` also drops tables with rows).
[windows]
migrate-down *$ARGS:
    @cargo run --quiet --locked --bin migration -- down {{ if ARGS == "" { "" } else { "!ARGS!" } }}

# List migrations: applied, pending, modified (edited since applied), missing (not in this binary), unrecorded (applied by another tool), rolling-back (a rollback without a transaction stopped part-way) or applying (an up without a transaction started and has not finished).
migrate-status:
    @cargo run --quiet --locked --bin migration -- status

# Record VERSION's current checksum after checking the database matches its file (or clear a stopped rollback, take an applying one as finished, forget a missing one).
[unix]
[positional-arguments]
migrate-accept VERSION:
    @cargo run --quiet --locked --bin migration -- accept "$1"

# Record VERSION's current checksum after checking the database matches its file (or clear a stopped rollback, take an applying one as finished, forget a missing one).
[windows]
migrate-accept $VERSION:
    @cargo run --quiet --locked --bin migration -- accept "!VERSION!"

# What each migration locks, and for how long, on a scratch database of 100,000 users (CI runs it).
[unix]
[positional-arguments]
migrate-check *ARGS:
    cargo run --quiet --locked --bin migrate-check -- "$@"

# Unix only (a private PostgreSQL): run it in WSL or on Linux.
[windows]
migrate-check *ARGS:
    @echo just migrate-check needs a private PostgreSQL (unix): run it in WSL or on Linux. & exit /b 1

# The migration figures of BENCHMARKS.md, at 1,000,000 users (about ten minutes).
[unix]
[positional-arguments]
migrate-bench *ARGS:
    cargo run --release --quiet --locked --bin migrate-check -- --users 1000000 --bench "$@"

# Unix only (a private PostgreSQL): run it in WSL or on Linux.
[windows]
migrate-bench *ARGS:
    @echo just migrate-bench needs a private PostgreSQL (unix): run it in WSL or on Linux. & exit /b 1

# Create migration/src/m<today>_<NNNNNN>_NAME.rs from a template and register it in lib.rs.
[unix]
[positional-arguments]
migrate-new NAME:
    @cargo run --quiet --locked --bin migration -- new "$1"

# Create migration/src/m<today>_<NNNNNN>_NAME.rs from a template and register it in lib.rs.
[windows]
migrate-new $NAME:
    @cargo run --quiet --locked --bin migration -- new "!NAME!"

# Start the project-local PostgreSQL (local-postgres), creating it on first use.
[unix]
db-start:
    @cargo run --quiet --locked --bin local-postgres -- start

# Start compose's PostgreSQL (Docker Desktop) on 127.0.0.1:5432, as .env describes.
[windows]
db-start: env-file
    docker compose --env-file .env -f docker/docker-compose.yml up -d --wait db

# Stop the project-local PostgreSQL.
[unix]
db-stop:
    @cargo run --quiet --locked --bin local-postgres -- stop

# Stop compose's PostgreSQL (its data is kept).
[windows]
db-stop: env-file
    docker compose --env-file .env -f docker/docker-compose.yml stop db

# Start the local HA PostgreSQL (etcd, 2 Patroni nodes, HAProxy) and migrate; URLs in .data/ha/*.env.
ha-up:
    @cargo run --quiet --locked --bin ha-stack -- up

# Stop the HA stack and delete its data.
ha-down:
    @cargo run --quiet --locked --bin ha-stack -- down

# Show the HA stack: ports, members and their roles, processes.
ha-status:
    @cargo run --quiet --locked --bin ha-stack -- status

# Switchover and failover under load, via HAProxy then a libpq host list, and the stack's locks (about 2 min).
ha-test:
    cargo build --quiet --locked --bin counseling-api --bin migration
    cargo test --locked --workspace --test ha -- --ignored --nocapture --test-threads=1

# The HA test three times over on each route, printing the median figures for BENCHMARKS.md.
ha-bench:
    HA_RUNS=3 just ha-test

# Measure /health, find_by_username at 1M users, memory and cold start; writes BENCHMARKS.md.
[unix]
bench:
    @cargo build --release --locked --quiet -p counseling-http -p counseling-bench
    @cargo bench --locked --quiet -p counseling-persistence --bench find_by_username --no-run
    @target/release/bench

# Unix only (wrk, pgbench, a private PostgreSQL): run it in WSL or on Linux.
[windows]
bench:
    @echo just bench needs Linux (wrk, pgbench, a private PostgreSQL): run it in WSL or on Linux. & exit /b 1

# Run every test (starts a throwaway PostgreSQL; on Windows set DATABASE_URL_TEST first).
[unix]
[positional-arguments]
test *ARGS:
    cargo test --workspace "$@"

# Run every test (starts a throwaway PostgreSQL; on Windows set DATABASE_URL_TEST first).
[windows]
test *$ARGS:
    cargo test --workspace {{ if ARGS == "" { "" } else { "!ARGS!" } }}

# Lint as CI does: formatting and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Check dependencies' licenses, bans and sources against deny.toml (needs cargo-deny; see README).
deny:
    cargo deny check bans licenses sources

# Format the code.
fmt:
    cargo fmt --all

# Write .env from .env.example with fresh random passwords (an existing .env is kept).
env-file:
    @cargo run --quiet --locked --bin local-postgres -- env-file
