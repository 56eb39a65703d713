//! `migrate-check [--users N] [--threshold-ms MS] [--bench [--benchmarks PATH]]`
//!
//! Applies every migration up, down (forced) and up again on a scratch PostgreSQL holding N users
//! (default 100,000), watching what each one locks, and prints a table per migration: its
//! duration, the longest time it held a lock blocking reads or writes of an existing table, its
//! statements. Fails (exit 1) when a migration, going up or down, holds such a lock longer than the
//! threshold (default 0.2 µs per user: 20 ms at 100,000 users; released migrations excepted) or changes the runner's
//! `lock_timeout`. `--bench` also plays a deploy under load, never fails on the rules, and
//! writes the figures into PATH (default BENCHMARKS.md) between its migration markers.
//! Exit codes: 0 passed, 1 a rule broken (or the check could not run), 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use counseling_migration_check::{CheckOptions, bench, check, write_benchmarks_block};

const USAGE: &str =
    "usage: migrate-check [--users N] [--threshold-ms MS] [--bench [--benchmarks PATH]]";

struct Arguments {
    options: CheckOptions,
    bench: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Arguments, String> {
    let mut options = CheckOptions::default();
    let mut bench = false;
    let mut benchmarks = PathBuf::from("BENCHMARKS.md");
    let mut args = args.iter();
    let number = |name: &str, value: Option<&String>| -> Result<u64, String> {
        value
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| format!("{name} takes a whole number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--users" => options.users = number("--users", args.next())?,
            "--threshold-ms" => {
                options.threshold = Some(Duration::from_millis(number(
                    "--threshold-ms",
                    args.next(),
                )?))
            }
            "--bench" => bench = true,
            "--benchmarks" => {
                benchmarks = PathBuf::from(args.next().ok_or("--benchmarks takes a path")?)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Arguments {
        options,
        bench: bench.then_some(benchmarks),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match counseling_config::arguments() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("migrate-check: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let arguments = match parse(&args) {
        Ok(arguments) => arguments,
        Err(message) => {
            eprintln!("migrate-check: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = arguments.bench {
        return match bench(&migration::migrations, &arguments.options).await {
            Ok(figures) => {
                println!("{}", figures.check.render());
                let block = figures.render("just migrate-bench");
                println!("{block}");
                match write_benchmarks_block(&path, &block) {
                    Ok(()) => {
                        eprintln!(
                            "migrate-check: wrote the migration figures to {}",
                            path.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("migrate-check: {}: {error}", path.display());
                        ExitCode::FAILURE
                    }
                }
            }
            Err(error) => {
                eprintln!("migrate-check: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match check(&migration::migrations, &arguments.options).await {
        Ok(report) => {
            println!("{}", report.render());
            let failures = report.failures();
            if failures.is_empty() {
                println!("migrate-check: passed");
                ExitCode::SUCCESS
            } else {
                for failure in failures {
                    eprintln!("migrate-check: FAIL: {failure}");
                }
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("migrate-check: {error}");
            ExitCode::FAILURE
        }
    }
}
