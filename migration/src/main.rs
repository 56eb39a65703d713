//! `migration up | down [N | --to VERSION] | status | accept VERSION`: applies or rolls back the
//! schema of the database named by `DATABASE_OWNER_URL` (or `DATABASE_OWNER_URL_FILE`), else
//! `DATABASE_URL` (or `DATABASE_URL_FILE`), from the environment, else from the working
//! directory's `.env` (the environment wins), shows where each migration stands, or records the
//! checksum of one edited migration after a person checked it. It connects as the service does
//! (`counseling_config::DatabaseTarget`): password files, libpq's parameters and host lists, the
//! same TLS rules.
//! `migration new NAME` scaffolds a migration in this crate's source (`just migrate-new NAME`).
//!
//! `DATABASE_SSL_MODE` and `DATABASE_SSL_ROOT_CERT` (same sources) override the URL's TLS
//! parameters, as for the service. `MIGRATION_LOCK_TIMEOUT_MS` (same sources) bounds how long a
//! migration waits for a table lock.
//!
//! Exit codes: 0 success, 1 the database or a migration failed, 2 bad usage or configuration,
//! 3 an applied migration was modified or applied without a checksum by another tool, or (up) a
//! pending one sorts before an applied one (up/down refused to run), 4 an applied migration is
//! missing from this binary (and none modified or unrecorded; the order is checked once none is
//! missing).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use counseling_config::{
    Connector, DatabaseTarget, Problem, Role, SERVICE_LOCK_TIMEOUT, SERVICE_LOCK_TIMEOUT_VARIABLE,
    SessionDefaults, Sources,
};
use migration::sea_orm::DatabaseConnection;
use migration::{Accepted, Direction, Event, Observer, RunError, RunOptions, Runner};

// A closed stream (`migration up | head -1`) must not end a run half-way with a panic.
use counseling_config::{say as println, say_err as eprintln};

/// The usage text, with the lock timeout's default from the constant the run uses.
fn usage() -> String {
    let default_ms = migration::DEFAULT_LOCK_TIMEOUT.as_millis();
    format!(
        "{USAGE_HEAD}\n{LOCK_TIMEOUT} (default {default_ms}): how long to wait for a table lock \
         before giving up"
    )
}

const USAGE_HEAD: &str =
    "usage: migration <up | down [STEPS | --to VERSION] [--force] | status | accept VERSION | new NAME>
  up       apply every pending migration (and run an applying one again from the start)
  down     roll back the most recent migration (or the STEPS most recent, or every one after
           VERSION, which stays: safe to run again after a failure); a table that still holds
           rows is only dropped with --force
  status   list migrations: applied, pending, modified (its file changed since it was applied),
           missing (applied, but not in this binary), unrecorded (applied by another tool,
           without a checksum), rolling-back (a rollback without a transaction stopped
           part-way: up refuses until down finishes it, or accept) or applying (an up without a
           transaction started and has not finished: still running, or stopped part-way; up
           runs it again, down rolls it back first)
  accept   record VERSION's current checksum, after checking the database matches its file,
           or, once it is recorded, clear an unfinished rollback of it (a second accept where
           it was both); for an applying VERSION, take it as applied (if a rollback of it
           stopped too, first only clear that); for a missing VERSION, forget that it was
           applied
  new      create migration/src/m<YYYYMMDD>_<NNNNNN>_NAME.rs and register it (developers only)
up and down refuse to run while an applied migration is modified, missing or unrecorded, with
one message per migration; up also refuses (exit 1) while one is rolling-back. Exit codes: 0
done, 1 the database or a migration failed, 2 bad usage or configuration, 3 an applied
migration is modified or unrecorded (or, for up, a pending one sorts before an applied one), 4
an applied migration is missing (and none is modified or unrecorded; the order is checked once
none is missing)
DATABASE_OWNER_URL, else DATABASE_URL (environment, else ./.env) names the database:
postgres://user:password@host:port/db, or host lists with target_session_attrs as in libpq
DATABASE_OWNER_URL_FILE, DATABASE_URL_FILE: a file holding the URL instead
DATABASE_OWNER_PASSWORD_FILE, DATABASE_PASSWORD_FILE: a file holding the password (read at
each connection), for a URL without one
DATABASE_SSL_MODE, DATABASE_SSL_ROOT_CERT: make the URL's sslmode and sslrootcert stricter
(never weaker); libpq's PG* variables apply where the URL is silent";

/// Bounds every wait for a table lock, in milliseconds.
const LOCK_TIMEOUT: &str = "MIGRATION_LOCK_TIMEOUT_MS";

enum Command {
    Up,
    Down { target: DownTarget, force: bool },
    Status,
    Accept { version: String },
}

const DOWN_USAGE: &str = "down takes STEPS or --to VERSION (one of them, once), and --force";

/// How far `down` goes.
enum DownTarget {
    /// The most recent applied migrations, counted from the newest still applied.
    Steps(u32),
    /// Every applied migration after this one.
    After(String),
}

fn parse_command(args: &[String]) -> Result<Command, String> {
    match args {
        [command] if command == "up" => Ok(Command::Up),
        [command, rest @ ..] if command == "down" => {
            let mut force = false;
            let mut target = None;
            let mut args = rest.iter();
            while let Some(arg) = args.next() {
                let given = match arg.as_str() {
                    "--force" if !force => {
                        force = true;
                        continue;
                    }
                    "--to" => match args.next() {
                        Some(version) if !version.starts_with('-') => {
                            // Before connecting: a typo is bad usage whether or not the
                            // database answers.
                            if !migration::migrations()
                                .iter()
                                .any(|file| file.name() == version)
                            {
                                return Err(RunError::NotInThisBinary(version.clone()).to_string());
                            }
                            DownTarget::After(version.clone())
                        }
                        _ => return Err("--to needs a VERSION".to_owned()),
                    },
                    // Digits only: `parse` also takes a sign (`+1`).
                    steps if !steps.starts_with("--") => match steps.parse::<u32>() {
                        Ok(count) if count > 0 && steps.bytes().all(|b| b.is_ascii_digit()) => {
                            DownTarget::Steps(count)
                        }
                        _ => {
                            return Err(format!(
                                "STEPS must be a positive whole number, not {steps:?}"
                            ));
                        }
                    },
                    _ => return Err(DOWN_USAGE.to_owned()),
                };
                if target.replace(given).is_some() {
                    return Err(DOWN_USAGE.to_owned());
                }
            }
            Ok(Command::Down {
                target: target.unwrap_or(DownTarget::Steps(1)),
                force,
            })
        }
        [command] if command == "status" => Ok(Command::Status),
        [command, version] if command == "accept" => Ok(Command::Accept {
            version: version.clone(),
        }),
        _ => Err(
            "expected one of: up, down [STEPS | --to VERSION] [--force], status, accept VERSION, \
             new NAME"
                .to_owned(),
        ),
    }
}

/// `text` as a number of digits only (Rust's parser would take `+5000` too).
fn digits(text: &str) -> Option<u64> {
    let digits = text.bytes().all(|byte| byte.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// A warning when the run's `lock_timeout` is not below the service's, as these settings give
/// it (else its default): the service's statements that queue behind a migration's lock request
/// would time out (and fail their requests) before the migration gave up. A value the service
/// would refuse is its own check's to say.
fn outlasts_the_service(sources: &Sources, lock_timeout: Duration) -> Option<String> {
    let service = match sources
        .get(SERVICE_LOCK_TIMEOUT_VARIABLE)
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        None => u64::try_from(SERVICE_LOCK_TIMEOUT.as_millis()).ok()?,
        Some(text) => digits(text)?,
    };
    let ours = u64::try_from(lock_timeout.as_millis()).ok()?;
    (ours >= service).then(|| {
        format!(
            "{LOCK_TIMEOUT} ({ours} ms) is not below {SERVICE_LOCK_TIMEOUT_VARIABLE} ({service} ms): the \
             service's statements that queue behind a migration's lock request would fail \
             before the migration gives up; keep it well below (the default is {} ms)",
            migration::DEFAULT_LOCK_TIMEOUT.as_millis()
        )
    })
}

/// `MIGRATION_LOCK_TIMEOUT_MS`, else [`migration::DEFAULT_LOCK_TIMEOUT`].
fn lock_timeout(sources: &Sources) -> Result<Duration, Problem> {
    let Some(text) = sources
        .get(LOCK_TIMEOUT)
        .filter(|text| !text.trim().is_empty())
    else {
        return Ok(migration::DEFAULT_LOCK_TIMEOUT);
    };
    match digits(text.trim()) {
        Some(ms) if (1..=migration::MAX_LOCK_TIMEOUT_MS).contains(&ms) => {
            Ok(Duration::from_millis(ms))
        }
        _ => Err(Problem::new(
            LOCK_TIMEOUT,
            format!(
                "must be a whole number of milliseconds from 1 to {}",
                migration::MAX_LOCK_TIMEOUT_MS
            ),
        )),
    }
}

/// The database to migrate: `DATABASE_OWNER_URL` (or its file) when set (the role that owns
/// the schema, where the service's `DATABASE_URL` names a role that may only read and write rows),
/// else `DATABASE_URL` (or its file); everything checked as for the service, every file read now.
/// Errors name the variable and never contain its value. The run's session starts with
/// `lock_timeout` as each migration sets it, which the URL's `options` and `PGOPTIONS` may then
/// not set: each migration would set it again; nor may they set the other settings the runner
/// sets for each migration ([`migration::RUN_SETTINGS`]).
fn database_options(sources: &Sources, lock_timeout: Duration) -> Result<Connector, String> {
    // The service's pool settings share the prefix: only a misspelling of ours is refused
    // (`DATABASE_SSLMODE` would leave TLS at the URL's mode while the owner's password is sent).
    // `DATABASE_OWNER_` and `MIGRATION_` are ours alone: every unknown name there is refused.
    const OWNER_PREFIX: &str = "DATABASE_OWNER";
    let ours = counseling_config::connection_variables();
    let mut problems = sources.misspellings("DATABASE", &ours);
    // Said once, by `unknown` below; a name like DATABASE_OWNERURL only here.
    let owner_group = format!("{OWNER_PREFIX}_");
    problems
        .0
        .retain(|problem| !(problem.variable.to_ascii_uppercase()).starts_with(&owner_group));
    problems.extend(sources.unknown(OWNER_PREFIX, &ours).0);
    problems.extend(sources.unknown("MIGRATION", &[LOCK_TIMEOUT]).0);
    // The target is resolved (files, TLS, libpq's parameters) even beside other problems: all
    // of them are said at once.
    let connector = DatabaseTarget::from_sources(sources, Role::Owner).and_then(|target| {
        for warning in target.warnings() {
            eprintln!("migration: warning: {warning}");
        }
        let run = RunOptions {
            lock_timeout,
            ..RunOptions::default()
        };
        let lock = run.lock_timeout_ms().to_string();
        let defaults = SessionDefaults {
            settings: vec![("lock_timeout".to_owned(), lock, LOCK_TIMEOUT)],
            set_later: migration::RUN_SETTINGS
                .iter()
                .map(|&name| (name, "the runner sets for every migration"))
                .collect(),
            ..SessionDefaults::named("counseling-migration")
        };
        target.resolve(&defaults)
    });
    if let Err(found) = &connector {
        problems.extend(found.0.iter().cloned());
    }
    problems
        .into_result(())
        .and(connector)
        .map_err(|problems| problems.to_string())
}

/// The run's [`migration::one_session_pool`] on the host the connector reaches now, which checks
/// the session against `target_session_attrs` again; the flag says whether it was opened.
async fn connect(connector: Connector) -> Result<(DatabaseConnection, Arc<AtomicBool>), String> {
    let options = (connector.locate().await)
        .map_err(|error| format!("could not connect: {}", error.said()))?;
    Ok(migration::one_session_pool(
        options,
        connector.target_session_attrs(),
    ))
}

/// Prints each migration as it is applied or rolled back, so a run that fails half-way shows
/// what it did.
struct Progress;

#[migration::sea_orm::prelude::async_trait::async_trait]
impl Observer for Progress {
    async fn event(&self, event: &Event<'_>) {
        match event {
            Event::Done {
                name,
                direction: Direction::Up,
                ..
            } => println!("applied {name}"),
            Event::Done {
                name,
                direction: Direction::Down,
                ..
            } => println!("rolled back {name}"),
            Event::Adopted { name, checksum } => println!(
                "recorded checksum {checksum} for {name} (applied before checksums were kept)"
            ),
            Event::WaitingForLock { holder } => eprintln!(
                "waiting for the migration lock, which {holder} holds (another run, or one cut \
                 off whose session the server has not ended yet)"
            ),
            _ => {}
        }
    }
}

async fn run(
    command: Command,
    db: &DatabaseConnection,
    lock_timeout: Duration,
) -> Result<(), RunError> {
    let options = RunOptions {
        lock_timeout,
        force: false,
        ..RunOptions::default()
    };
    let runner = |options| {
        Runner::new(migration::migrations())
            .with_options(options)
            .with_observer(Arc::new(Progress))
    };
    match command {
        Command::Up => {
            let applied = runner(options).up(db, None).await?;
            println!(
                "applied {} migration(s); the schema is up to date",
                applied.len()
            );
        }
        Command::Down { target, force } => {
            let options = RunOptions { force, ..options };
            match target {
                DownTarget::Steps(steps) => {
                    if runner(options).down(db, steps).await?.is_empty() {
                        println!("nothing to roll back: no migration is applied");
                    }
                }
                DownTarget::After(version) => {
                    if runner(options).down_to(db, &version).await?.is_empty() {
                        println!("nothing to roll back: no migration after {version} is applied");
                    }
                }
            }
        }
        Command::Status => {
            for state in runner(options).status(db).await? {
                println!("{:8} {}", state.status.to_string(), state.name);
            }
        }
        Command::Accept { version } => match runner(options).accept(db, &version).await? {
            Accepted::Recorded { previous, current } => println!(
                "accepted {version}: recorded checksum {current} (was {})",
                previous.map_or_else(|| "none".to_owned(), |previous| previous.to_string())
            ),
            Accepted::Unchanged(current) => {
                println!("{version} already has checksum {current}: nothing to accept")
            }
            Accepted::RollbackCleared(_) => println!(
                "accepted {version}: its unfinished rollback is cleared, and it counts as applied"
            ),
            Accepted::RollbackClearedStillApplying => println!(
                "accepted {version}: its unfinished rollback is cleared; its up had not finished \
                 either, so it is applying again (`up` finishes it)"
            ),
            Accepted::Finished(current) => println!(
                "accepted {version}: its unfinished up counts as finished, and it is applied with \
                 checksum {current}"
            ),
            Accepted::Forgotten { .. } => println!(
                "forgot {version}: it is no longer recorded as applied (its changes, if any, \
                 stay in the database)"
            ),
        },
    }
    Ok(())
}

/// Writes a new migration into this crate's source tree, which only exists where it was built
/// (`just migrate-new` runs it through cargo).
fn scaffold(name: &str) -> ExitCode {
    let source_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    match migration::scaffold::new_migration(&source_dir, name, migration::scaffold::Date::today())
    {
        Ok(path) => {
            println!(
                "created {} and registered it in {}",
                path.display(),
                source_dir.join("lib.rs").display()
            );
            ExitCode::SUCCESS
        }
        Err(error @ migration::scaffold::ScaffoldError::InvalidName) => {
            eprintln!("migration: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("migration: {error}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match counseling_config::arguments() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("migration: {problem}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    if matches!(
        args.first().map(String::as_str),
        Some("-h" | "--help" | "help")
    ) {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    if let [command, name] = args.as_slice()
        && command == "new"
    {
        return scaffold(name);
    }
    let command = match parse_command(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("migration: {message}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let configuration = Sources::load()
        .map_err(|problems| problems.to_string())
        .and_then(|sources| {
            // Every problem at once: a bad lock timeout hides none of the target's.
            let timeout = lock_timeout(&sources);
            let given = timeout
                .as_ref()
                .map_or(migration::DEFAULT_LOCK_TIMEOUT, |t| *t);
            match (database_options(&sources, given), timeout) {
                (Ok(connector), Ok(timeout)) => {
                    if let Some(warning) = outlasts_the_service(&sources, timeout) {
                        eprintln!("migration: warning: {warning}");
                    }
                    Ok((connector, timeout))
                }
                (connector, timeout) => {
                    let timeout = timeout.err().map(|problem| problem.to_string());
                    let lines: Vec<String> = timeout.into_iter().chain(connector.err()).collect();
                    Err(lines.join("\n"))
                }
            }
        });
    let (connector, lock_timeout) = match configuration {
        Ok(configuration) => configuration,
        Err(message) => {
            // One line per problem, each saying where it comes from.
            for line in message.lines() {
                eprintln!("migration: {line}");
            }
            return ExitCode::from(2);
        }
    };
    let (db, opened) = match connect(connector).await {
        Ok(connected) => connected,
        Err(message) => {
            eprintln!("migration: failed: {message}");
            return ExitCode::FAILURE;
        }
    };
    // `down N` counts from the newest migration still applied: repeated after a failure (or a
    // lost answer), it would roll back more than was asked.
    let again = match command {
        Command::Down {
            target: DownTarget::Steps(_),
            ..
        } => {
            "see `migration status`, then roll back only what is left (`down STEPS` counts from \
             the newest migration still applied: the same command again could roll back more; \
             `down --to VERSION` stops at VERSION however often it runs)"
        }
        // A second accept may do another thing than the first (take as finished a migration
        // the first left applying).
        Command::Accept { .. } => {
            "see `migration status` first, and accept again only what it still shows as you \
             checked it"
        }
        _ => "run the same command again: it carries on from where this run stopped",
    };
    // Said after any failure of a `down N` that may have rolled back some of its N first.
    let counts_steps = matches!(
        command,
        Command::Down {
            target: DownTarget::Steps(steps),
            ..
        } if steps > 1
    );
    let outcome = run(command, &db, lock_timeout).await;
    // Lost: it was opened, and the pool holds none now (no idle timeout or lifetime closes it,
    // and every new one after it is refused) or the run failed for want of it (the pool may not
    // have counted a broken connection out yet).
    let pool_empty = db.get_postgres_connection_pool().size() == 0;
    let failed_for_want_of_it = outcome
        .as_ref()
        .err()
        .is_some_and(RunError::is_session_lost);
    let lost = opened.load(Ordering::SeqCst) && (pool_empty || failed_for_want_of_it);
    // Closing is best effort: the outcome is already decided.
    let _ = db.close().await;
    if outcome.is_err() && lost {
        eprintln!(
            "migration: the run's database session was lost mid-run, and its lock and \
             lock_timeout with it; nothing went on in a new session. When it is back, {again}"
        );
    }
    // Left applying (unless its mark could not be written): what that means for the next run.
    let applying = match &outcome {
        Err(RunError::Migration {
            name,
            direction: Direction::Up,
            in_transaction: false,
            ..
        }) => format!(
            "; where `migration status` shows {name} as applying (started, not finished; what \
             it changed, its message says), `up` runs it again from the start and `down` rolls \
             it back before any other"
        ),
        _ => String::new(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Drift(drift)) => {
            eprintln!(
                "migration: refusing to run: the applied migrations differ from this binary's"
            );
            for problem in &drift.problems {
                eprintln!("migration: {problem}");
            }
            ExitCode::from(drift.exit_code())
        }
        Err(
            error @ (RunError::UnknownVersion(_)
            | RunError::NotApplied(_)
            | RunError::NotInThisBinary(_)),
        ) => {
            eprintln!("migration: {error}");
            ExitCode::from(2)
        }
        Err(error) if error.is_lock_timeout() => {
            let changed = match &error {
                RunError::Migration {
                    name,
                    in_transaction: false,
                    ..
                } => format!(
                    "{name} runs without a transaction and may have stopped part-way; when \
                     they have finished, {again}"
                ),
                _ => format!(
                    "the migration waiting for it changed nothing (those listed above as \
                     applied or rolled back stay so); when the transactions holding it have \
                     finished, {again}"
                ),
            };
            // Without a transaction, the wait may be an index built concurrently waiting for
            // older transactions (any long one on the database), not a table's lock.
            let waited_for = match &error {
                RunError::Migration {
                    in_transaction: false,
                    ..
                } => {
                    "a table stayed locked, or a transaction older than a concurrent index \
                      build went on,"
                }
                _ => "a table stayed locked by another session",
            };
            eprintln!(
                "migration: failed: {waited_for} for more than {} ms ({LOCK_TIMEOUT}); \
                 {changed} ({error}){applying}",
                lock_timeout.as_millis()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            // sqlx and PostgreSQL messages name the user or the failing SQL object, never the
            // password (it only ever travels inside the connect options).
            eprintln!("migration: failed: {error}{applying}");
            // A lost session's line says it already.
            if counts_steps && !lost {
                eprintln!("migration: {again}");
            }
            ExitCode::FAILURE
        }
    }
}
