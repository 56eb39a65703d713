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

# Create migration/src/m<today>_<NNNNNN>_NAME.rs from a template and register it in lib.rs.
migrate-new NAME:
    @cargo run --quiet --locked -p migration -- new {{NAME}}

# Start the project-local PostgreSQL (.data/postgres), creating it on first use.
db-start:
    @scripts/local-postgres.sh start

# Stop the project-local PostgreSQL.
db-stop:
    @scripts/local-postgres.sh stop

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
