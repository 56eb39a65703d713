//! `migration up | down [N] | status`: applies or rolls back the schema of the database named by
//! `DATABASE_OWNER_URL`, else `DATABASE_URL` (from the environment, else from the working
//! directory's `.env`; the environment wins).
//! `migration new NAME` scaffolds a migration in this crate's source (`just migrate-new NAME`).
//!
//! Exit codes: 0 success, 1 the database or a migration failed, 2 bad usage or configuration.

use std::process::ExitCode;
use std::time::Duration;

use counseling_config::{DatabaseUrl, Sources};
use migration::sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use migration::sea_orm::{DatabaseConnection, SqlxPostgresConnector};

const USAGE: &str = "usage: migration <up | down [STEPS] | status | new NAME>
  up       apply every pending migration
  down     roll back the most recent migration (or the STEPS most recent)
  status   list migrations and whether each is applied
  new      create migration/src/m<YYYYMMDD>_<NNNNNN>_NAME.rs and register it (developers only)
DATABASE_OWNER_URL, else DATABASE_URL (environment, else ./.env) names the database:
postgres://user:password@host:port/db";

/// Overrides `DATABASE_URL` for migrations only.
const OWNER_URL: &str = "DATABASE_OWNER_URL";

enum Command {
    Up,
    Down(u32),
    Status,
}

fn parse_command(args: &[String]) -> Result<Command, String> {
    match args {
        [command] if command == "up" => Ok(Command::Up),
        [command] if command == "down" => Ok(Command::Down(1)),
        [command, steps] if command == "down" => match steps.parse::<u32>() {
            Ok(steps) if steps > 0 => Ok(Command::Down(steps)),
            _ => Err(format!(
                "STEPS must be a positive whole number, not {steps:?}"
            )),
        },
        [command] if command == "status" => Ok(Command::Status),
        _ => Err("expected one of: up, down [STEPS], status, new NAME".to_owned()),
    }
}

/// The database to migrate: `DATABASE_OWNER_URL` when set (the role that owns the schema, where
/// the service's `DATABASE_URL` names a role that may only read and write rows), else
/// `DATABASE_URL`; from the working directory's `.env` and the environment, which wins. Errors
/// name the variable and never contain its value.
fn database_options() -> Result<PgConnectOptions, String> {
    let sources = Sources::load().map_err(|problem| problem.to_string())?;
    let variable = [OWNER_URL, "DATABASE_URL"]
        .into_iter()
        .find(|name| sources.get(name).is_some())
        .ok_or_else(|| {
            "DATABASE_URL is not set: set it in the environment or in .env (see .env.example)"
                .to_owned()
        })?;
    let text = sources.get(variable).unwrap_or_default();
    DatabaseUrl::parse(text)
        .map(|url| url.connect_options())
        .map_err(|error| format!("{variable} {error}"))
}

async fn connect(options: PgConnectOptions) -> DatabaseConnection {
    // One connection is all a migration run needs: it runs in a single transaction.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
}

async fn run(command: Command, db: &DatabaseConnection) -> Result<(), migration::DbErr> {
    match command {
        Command::Up => {
            let applied = migration::apply_pending(db).await?;
            println!("applied {applied} migration(s); the schema is up to date");
        }
        Command::Down(steps) => {
            let rolled_back = migration::roll_back(db, steps).await?;
            if rolled_back.is_empty() {
                println!("nothing to roll back: no migration is applied");
            }
            for name in rolled_back {
                println!("rolled back {name}");
            }
        }
        Command::Status => {
            for state in migration::status(db).await? {
                let mark = if state.applied { "applied" } else { "pending" };
                println!("{mark:8} {}", state.name);
            }
        }
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(
        args.first().map(String::as_str),
        Some("-h" | "--help" | "help")
    ) {
        println!("{USAGE}");
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
            eprintln!("migration: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let options = match database_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("migration: {message}");
            return ExitCode::from(2);
        }
    };
    let db = connect(options).await;
    let outcome = run(command, &db).await;
    // Closing is best effort: the outcome is already decided.
    let _ = db.close().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // sqlx and PostgreSQL messages name the user or the failing SQL object, never the
            // password (it only ever travels inside the connect options).
            eprintln!("migration: failed: {error}");
            ExitCode::FAILURE
        }
    }
}
