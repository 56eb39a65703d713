//! `counseling-api`: configuration from the environment (and `.env`), then serve. It takes no
//! arguments but `--help` and `--version`: any other is refused, never ignored (a `--port 9000`
//! would otherwise start on another port than meant).
//!
//! Exit codes: 0 after a clean shutdown, 1 when the service fails at run time (for example the
//! port is taken) or a Ctrl-C cut the drain short, 2 when the configuration or an argument is
//! missing or invalid.

use std::process::ExitCode;
use std::time::Duration;

use counseling_config::{say as println, say_err as eprintln};
use counseling_http::{Application, Settings, StoppedWithoutDraining, telemetry};

/// How long the database runtime may take to finish its tasks once the server has stopped.
const DATABASE_RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: counseling-api [--help | --version]
Serves the counseling platform's HTTP API (GET /health, /health/ready, /health/live, /metrics).
It takes no other arguments: every setting comes from the environment, else from the working
directory's .env (see .env.example and the README's configuration table).
Exit codes: 0 after a clean shutdown, 1 a failure at run time or a drain cut short by a second
Ctrl-C, 2 a configuration or argument problem";

/// What the arguments ask for: `None` to serve, else the exit.
fn answer_arguments() -> Option<ExitCode> {
    let arguments = match counseling_config::arguments() {
        Ok(arguments) => arguments,
        Err(problem) => {
            eprintln!("counseling-api: {problem}\n{USAGE}");
            return Some(ExitCode::from(2));
        }
    };
    match arguments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => None,
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Some(ExitCode::SUCCESS)
        }
        ["-V" | "--version"] => {
            println!("counseling-api {}", env!("CARGO_PKG_VERSION"));
            Some(ExitCode::SUCCESS)
        }
        _ => {
            // Not repeated: a URL with its password is an easy thing to pass here by mistake.
            eprintln!(
                "counseling-api: takes no arguments ({} given): settings come from the \
                 environment or .env\n{USAGE}",
                arguments.len()
            );
            Some(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    if let Some(exit) = answer_arguments() {
        return exit;
    }
    // Every setting is read and checked here, before anything is bound or connected; all
    // problems are reported together, one line each.
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(problems) => {
            for problem in &problems.0 {
                eprintln!("counseling-api: configuration error: {problem}");
            }
            return ExitCode::from(2);
        }
    };
    if let Err(error) = telemetry::init(&settings.log) {
        eprintln!("counseling-api: configuration error: {error}");
        return ExitCode::from(2);
    }
    // All database I/O runs on this runtime, not on actix-web's per-worker runtimes: a socket
    // belongs to the runtime that opened it, and workers stop one by one during a graceful
    // shutdown while requests on other workers still use pooled connections.
    let database_runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.database.pool.io_threads)
        .thread_name("database-io")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("counseling-api: the database runtime could not be started: {error}");
            return ExitCode::FAILURE;
        }
    };
    let io = database_runtime.handle().clone();
    let outcome = actix_web::rt::System::new().block_on(serve(settings, io));
    match &outcome {
        Err(error) if error.is::<StoppedWithoutDraining>() => {
            database_runtime.shutdown_background()
        }
        _ => database_runtime.shutdown_timeout(DATABASE_RUNTIME_SHUTDOWN),
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "counseling-api failed");
            eprintln!("counseling-api: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings, io: tokio::runtime::Handle) -> anyhow::Result<()> {
    // Said once, now that logging is set up: a secret file readable by others (never a value).
    for warning in settings.database.target.warnings() {
        tracing::warn!("{warning}");
    }
    let application = Application::build(&settings, io)?;
    tracing::info!(
        host = %settings.app.host,
        port = application.port(),
        // Only with METRICS_PORT (0 picks a free one: this says which).
        metrics_port = application.metrics_port(),
        health_timeout_ms = settings.health.timeout.as_millis() as u64,
        max_connections = settings.database.pool.max_connections,
        "counseling-api listening"
    );
    application.run_until_stopped().await
}
