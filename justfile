# Recipes for developers. `just` with no arguments lists them.

set dotenv-load := false

# List the recipes.
default:
    @just --list

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
