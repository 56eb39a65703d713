//! `local-postgres start | stop | answers | env-file`: the development database behind `just dev`
//! and `just db-start`/`db-stop`, configured by the same sources as every binary of ours (the
//! working directory's `.env`, the environment).
//!
//! * `env-file`: writes `.env` from `.env.example` with fresh passwords, unless `.env` exists.
//! * `answers`: exit 0 when `DATABASE_URL` accepts a connection within 3 s, else 1.
//! * `start`: creates (first time) and starts the project-local cluster, with the roles and
//!   database of `DATABASE_URL`/`DATABASE_OWNER_URL`. `stop`: stops it.
//!
//! Exit codes: 0 done, 1 failed, 2 bad usage or configuration.

use std::process::ExitCode;
use std::time::Duration;

use counseling_config::{DatabaseUrl, Sources};
use counseling_local_postgres::{LocalCluster, write_env_file};
use counseling_provision::ProvisionError;
use sea_orm::sqlx::{Connection, PgConnection};

const USAGE: &str = "usage: local-postgres <start | stop | answers | env-file>";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().map(String::as_str).filter(|_| args.len() == 1) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(checkout) = std::env::current_dir() else {
        eprintln!("local-postgres: no working directory");
        return ExitCode::FAILURE;
    };
    if command == "env-file" {
        return match write_env_file(&checkout) {
            Ok(written) => {
                if written {
                    println!("local-postgres: wrote .env from .env.example with fresh passwords");
                }
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    let sources = match Sources::load() {
        Ok(sources) => sources,
        Err(problem) => {
            eprintln!("local-postgres: {problem}");
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        "answers" => return answers(&sources).await,
        "start" => match LocalCluster::of_checkout(&checkout) {
            Ok(cluster) => cluster.start(&sources).await,
            Err(error) => Err(error),
        },
        "stop" => LocalCluster::of_checkout(&checkout)
            .and_then(|cluster| cluster.stop())
            .map(|state| format!("{state}\n")),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(report) => {
            for line in report.lines() {
                println!("local-postgres: {line}");
            }
            ExitCode::SUCCESS
        }
        Err(ProvisionError::PrivateClusterUnsupported) => {
            eprintln!(
                "local-postgres: the project-local cluster is unix-only; on Windows use the \
                 PostgreSQL installer's service or compose's db (see the README's Windows section)"
            );
            ExitCode::from(2)
        }
        Err(error) => fail(&error),
    }
}

/// Whether `DATABASE_URL` accepts a connection (credentials included) within 3 s.
async fn answers(sources: &Sources) -> ExitCode {
    let Some(url) = sources
        .get("DATABASE_URL")
        .and_then(|text| DatabaseUrl::parse(text).ok())
    else {
        return ExitCode::FAILURE;
    };
    let options = url.connect_options();
    let connecting = PgConnection::connect_with(&options);
    match tokio::time::timeout(Duration::from_secs(3), connecting).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            ExitCode::SUCCESS
        }
        _ => ExitCode::FAILURE,
    }
}

fn fail(error: &ProvisionError) -> ExitCode {
    eprintln!("local-postgres: {error}");
    ExitCode::FAILURE
}
