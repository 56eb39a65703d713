# Recipes for developers. `just` with no arguments lists them.
# Binaries read DATABASE_URL from the environment, else from .env; just itself loads nothing.

set dotenv-load := false
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# From a fresh clone to a running, migrated service on http://127.0.0.1:8000.
dev:
    @scripts/dev.sh

# Apply every pending migration to DATABASE_URL.
migrate-up:
    @cargo run --quiet --locked -p migration -- up

# Roll back exactly one migration (the most recent) on DATABASE_URL.
migrate-down:
    @cargo run --quiet --locked -p migration -- down

# List migrations and whether each is applied on DATABASE_URL.
migrate-status:
    @cargo run --quiet --locked -p migration -- status

# Start the project-local PostgreSQL (.data/postgres), creating it on first use.
db-start:
    @scripts/local-postgres.sh start

# Stop the project-local PostgreSQL.
db-stop:
    @scripts/local-postgres.sh stop

# Start the local highly available PostgreSQL (etcd, two Patroni nodes, HAProxy) on 127.0.0.1
# and apply the migrations through HAProxy; DATABASE_URL for it is in .data/ha/database.env.
ha-up:
    @cargo run --quiet --locked -p counseling-ha --bin ha-stack -- up
    @set -a && . .data/ha/database.env && set +a && just migrate-up

# Stop the HA stack and delete its data.
ha-down:
    @cargo run --quiet --locked -p counseling-ha --bin ha-stack -- down

# Show the HA stack: ports, members and their roles, processes.
ha-status:
    @cargo run --quiet --locked -p counseling-ha --bin ha-stack -- status

# Switchover and failover under load, three counseling-api replicas through HAProxy (about 1 min).
ha-test:
    cargo build --quiet --locked -p counseling-http -p migration
    cargo test --locked -p counseling-e2e --test ha -- --ignored --nocapture

# The HA test three times over, printing the median downtime figures for BENCHMARKS.md.
ha-bench:
    HA_RUNS=3 just ha-test

# Measure /health, find_by_username at 1M users, memory and cold start; writes BENCHMARKS.md.
bench:
    @scripts/bench.sh

# Run every test (starts a throwaway PostgreSQL; no server needed).
test *ARGS:
    cargo test --workspace {{ARGS}}

# Lint as CI does: formatting and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Format the code.
fmt:
    cargo fmt --all
