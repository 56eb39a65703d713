//! `local-postgres start | stop | answers | provide | env-file`: the development database behind
//! `just dev` and `just db-start`/`db-stop`, configured by the same sources as every binary of
//! ours (the working directory's `.env`, the environment).
//!
//! * `env-file`: writes `.env` from `.env.example` with fresh passwords, unless `.env` exists.
//! * `answers`: exit 0 when `DATABASE_URL` accepts the service's login within 3 s, else 1. It is
//!   read and reached exactly as the service reaches it ([`DatabaseTarget`]: secret files, TLS
//!   rules and overrides, host lists, every libpq parameter honoured or refused), so a
//!   configuration problem is exit 2 naming the variable, never "no database answers".
//! * `provide`: `just dev`'s database, in order of preference: `DATABASE_URL` if it answers;
//!   compose's `db` if Docker and its compose plugin work; else the project-local cluster. Each
//!   step passed over is said in one line. A loopback port another user's program holds is
//!   never probed, and stops it (exit 1): nothing is started in that program's place.
//! * `start`: creates (first time) and starts the project-local cluster, with the roles and
//!   database of `DATABASE_URL`/`DATABASE_OWNER_URL`. `stop`: stops it.
//!
//! Exit codes: 0 done, 1 failed, 2 bad usage or configuration.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use counseling_config::tls::SslMode;
use counseling_config::{DatabaseTarget, Role, SessionDefaults, Sources};
use counseling_config::{say as println, say_err as eprintln};
use counseling_local_postgres::{LocalCluster, Logins, write_env_file};
use counseling_provision::ProvisionError;
use tokio::process::Command;

const USAGE: &str = "usage: local-postgres <start | stop | answers | provide | env-file>";

/// How long `answers` waits for the login, all hosts together.
const ANSWER_LIMIT: Duration = Duration::from_secs(3);

/// How long `docker info` and `docker compose version` may take: a stuck engine is no engine.
const DOCKER_PROBE_LIMIT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = counseling_config::arguments().unwrap_or_default();
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
        Err(problems) => return misconfigured(&problems.to_string()),
    };
    let target = match command {
        "answers" | "provide" => match service_target(&sources) {
            Ok(target) => Some(target),
            Err(problems) => return misconfigured(&problems),
        },
        _ => None,
    };
    // `just dev` migrates next, as the owner: a problem there is said now, before anything is
    // started (its warnings are the migration's to say).
    if command == "provide"
        && let Err(problems) = DatabaseTarget::from_sources(&sources, Role::Owner)
    {
        return misconfigured(&problems.to_string());
    }
    let outcome = match (command, target) {
        ("answers", Some(target)) => {
            return match probe(&target).await {
                Probe::Answers => ExitCode::SUCCESS,
                Probe::DoesNotAnswer(reason) => {
                    eprintln!("local-postgres: DATABASE_URL does not answer: {reason}");
                    ExitCode::FAILURE
                }
                Probe::Misconfigured(problems) => misconfigured(&problems),
                Probe::Held(why) => {
                    eprintln!("local-postgres: {why}");
                    ExitCode::FAILURE
                }
            };
        }
        ("provide", Some(target)) => match probe(&target).await {
            Probe::Answers => Ok("using the database at DATABASE_URL\n".to_owned()),
            Probe::Misconfigured(problems) => return misconfigured(&problems),
            Probe::Held(why) => Err(ProvisionError::Failed(why)),
            Probe::DoesNotAnswer(reason) => {
                println!("local-postgres: DATABASE_URL does not answer ({reason})");
                let composed = match compose_db(&checkout).await {
                    // Compose publishes its db on 127.0.0.1:5432, whatever DATABASE_URL says.
                    Ok(()) => match probe(&target).await {
                        Probe::Answers => Ok(()),
                        Probe::Held(why) => return fail(&ProvisionError::Failed(why)),
                        _ => Err(
                            "compose's db started, but DATABASE_URL still does not answer \
                                  (compose publishes 127.0.0.1:5432)"
                                .to_owned(),
                        ),
                    },
                    Err(why) => Err(why),
                };
                match composed {
                    Ok(()) => Ok("started PostgreSQL with docker compose\n".to_owned()),
                    Err(why) => {
                        println!("local-postgres: {why}; using the project-local PostgreSQL");
                        let logins = match local_logins(&sources) {
                            Ok(logins) => logins,
                            Err(exit) => return exit,
                        };
                        start_local(&checkout, &logins).await
                    }
                }
            }
        },
        ("start", _) => {
            let logins = match local_logins(&sources) {
                Ok(logins) => logins,
                Err(exit) => return exit,
            };
            start_local(&checkout, &logins).await
        }
        ("stop", _) => LocalCluster::of_checkout(&checkout)
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

/// What `DATABASE_URL` does when the service's connect rules reach for it.
enum Probe {
    Answers,
    /// Why not, in one line without secrets.
    DoesNotAnswer(String),
    /// The configuration itself is wrong: one line per problem, naming the variable.
    Misconfigured(String),
    /// Another user's program holds the port: nothing was sent there, and nothing should be
    /// started in its place. Why, in one line.
    Held(String),
}

/// The logins the project-local PostgreSQL is to serve, or the exit when it cannot serve them:
/// a configuration problem, said (a line per problem, naming the variable) before anything is
/// made.
fn local_logins(sources: &Sources) -> Result<Logins, ExitCode> {
    Logins::read(sources).map_err(|problem| misconfigured(&problem.to_string()))
}

/// The checkout's project-local PostgreSQL, started (or found running); what was done.
async fn start_local(checkout: &Path, logins: &Logins) -> Result<String, ProvisionError> {
    LocalCluster::of_checkout(checkout)?.start(logins).await
}

/// The service's target, as the service reads it; its warnings (a secret file others may read)
/// are said once, however often it is probed.
fn service_target(sources: &Sources) -> Result<DatabaseTarget, String> {
    let target = DatabaseTarget::from_sources(sources, Role::Service)
        .map_err(|problems| problems.to_string())?;
    for warning in target.warnings() {
        eprintln!("local-postgres: warning: {warning}");
    }
    Ok(target)
}

/// Reaches `DATABASE_URL` (or its file) as the service does: the same target, the same checks,
/// the same connector, with [`ANSWER_LIMIT`] for the whole attempt. Not a port of this machine
/// that another user's program holds: it would be handed the password (libpq's default
/// `sslmode=prefer` lets any server ask for it in cleartext).
async fn probe(target: &DatabaseTarget) -> Probe {
    let connector = match target.resolve(&SessionDefaults::named("counseling-local-postgres")) {
        Ok(connector) => connector,
        Err(problems) => return Probe::Misconfigured(problems.to_string()),
    };
    // A server that proves who it is with a certificate needs no guessing about its owner.
    // (`require` with a CA file is `verify-ca` by then.)
    let verified = connector.tls().mode() >= SslMode::VerifyCa;
    for endpoint in connector.endpoints().iter().filter(|_| !verified) {
        if let Some(stranger) = stranger_on(&endpoint.host, endpoint.port) {
            return Probe::Held(format!(
                "{endpoint} is held by a program of another user (uid {stranger}), not a \
                 PostgreSQL of this machine's: DATABASE_URL's password is not sent there (stop \
                 that program, or give DATABASE_URL another port)"
            ));
        }
    }
    match tokio::time::timeout(ANSWER_LIMIT, connector.connect()).await {
        Ok(Ok(connected)) => {
            use sea_orm::sqlx::Connection;
            // Closing politely is a courtesy; the answer is already known.
            let _ = connected.connection.close().await;
            Probe::Answers
        }
        Ok(Err(error)) => Probe::DoesNotAnswer(one_line(&error.said())),
        Err(_) => Probe::DoesNotAnswer(format!("no login within {} s", ANSWER_LIMIT.as_secs())),
    }
}

/// The user of a program listening on `port` of this machine, if `host` names this machine's
/// loopback and that user is another regular user: not root (Docker's proxy), not us, not a
/// system account (uid below 1000: `postgres`, a container's server). `None` as well where we
/// cannot tell: not Linux, a socket table the kernel does not show, or in a user namespace,
/// where users outside it all look alike.
#[cfg(unix)]
fn stranger_on(host: &str, port: u16) -> Option<u32> {
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback() || address.is_unspecified());
    if !loopback || !counseling_provision::server::sees_every_user() {
        return None;
    }
    let ours = nix::unistd::Uid::effective().as_raw();
    let listeners = counseling_provision::server::loopback_listeners(port)?;
    listeners
        .into_iter()
        .find(|&uid| uid >= 1000 && uid != ours)
}

#[cfg(not(unix))]
fn stranger_on(_host: &str, _port: u16) -> Option<u32> {
    None
}

/// Starts compose's `db` as `.env` describes it, or says in a few words why Docker cannot.
async fn compose_db(checkout: &Path) -> Result<(), String> {
    let info = docker(checkout, &["info"], DOCKER_PROBE_LIMIT).await;
    match info {
        Err(DockerFailure::NotInstalled) => return Err("no docker on PATH".into()),
        Err(failure) => return Err(format!("the Docker engine does not answer ({failure})")),
        Ok(()) => {}
    }
    let version = docker(checkout, &["compose", "version"], DOCKER_PROBE_LIMIT).await;
    if let Err(failure) = version {
        return Err(format!("docker has no compose plugin ({failure})"));
    }
    println!("local-postgres: starting PostgreSQL with docker compose");
    let up = [
        "compose",
        "--env-file",
        ".env",
        "-f",
        "docker/docker-compose.yml",
        "up",
        "-d",
        "--wait",
        "db",
    ];
    // Pulling an image may take minutes on a slow link: no limit but compose's own.
    docker(checkout, &up, Duration::MAX)
        .await
        .map_err(|failure| format!("docker compose up failed ({failure})"))
}

#[derive(Debug, thiserror::Error)]
enum DockerFailure {
    #[error("not installed")]
    NotInstalled,
    #[error("{0}")]
    Failed(String),
    #[error("no answer within {} s", .0.as_secs())]
    TimedOut(Duration),
}

/// Runs `docker ARGS` in `checkout`; on failure, the last line it wrote to stderr.
async fn docker(checkout: &Path, args: &[&str], limit: Duration) -> Result<(), DockerFailure> {
    let child = Command::new("docker")
        .args(args)
        .current_dir(checkout)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(DockerFailure::NotInstalled);
        }
        Err(error) => return Err(DockerFailure::Failed(error.to_string())),
    };
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => return Err(DockerFailure::Failed(error.to_string())),
        Err(_) => return Err(DockerFailure::TimedOut(limit)),
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
    Err(DockerFailure::Failed(match last {
        Some(line) => one_line(line),
        None => format!("exit status {}", output.status),
    }))
}

/// `text` on one line, briefly, without control characters (whoever answers on the port wrote
/// it, and a terminal would obey escape sequences): a reason inside a sentence.
fn one_line(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = printable.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

fn misconfigured(problems: &str) -> ExitCode {
    for line in problems.lines() {
        eprintln!("local-postgres: {line}");
    }
    ExitCode::from(2)
}

fn fail(error: &ProvisionError) -> ExitCode {
    eprintln!("local-postgres: {error}");
    ExitCode::FAILURE
}
