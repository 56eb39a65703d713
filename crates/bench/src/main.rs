//! `just bench`: the release build of the service against a private PostgreSQL of the test kit
//! (durability as PostgreSQL ships it, TLS from a CA made for this run next to plaintext), then
//! `wrk`, `pgbench` and the repository's own benchmark in paired rounds, written to
//! BENCHMARKS.md (see `report.rs` for what is kept of the file). About two minutes. Needs the
//! PostgreSQL server binaries (with pgbench) and wrk (installed with apt when run as root).
//! Expects the release binaries next to itself (`just bench` builds them).
// Off unix only `main` is left: the statistics and the report serve the run.
#![cfg_attr(not(unix), allow(dead_code))]

mod report;
mod stats;
mod tools;

#[cfg(unix)]
mod run;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    match run::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("bench: needs Linux (wrk, pgbench, a private PostgreSQL): run it in WSL or on Linux");
    std::process::ExitCode::from(2)
}
