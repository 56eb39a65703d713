//! Roles, databases and grants on our servers, made as the superuser: the one place our tools
//! create roles. What each role may do is `migration::roles` (as in production). And the
//! migrations, applied as the owner.

use counseling_config::TargetSessionAttrs;
use migration::roles::{grant_statements, quoted};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::{AssertSqlSafe, Connection, PgConnection};
use secrecy::{ExposeSecret, SecretString};

use crate::{ProvisionError, Result};

/// The application's database with its two roles: the owner, which runs migrations, and the
/// service's role, which may only read and write rows.
#[derive(Debug, Clone, Copy)]
pub struct Application<'a> {
    pub database: &'a str,
    /// (name, password)
    pub owner: (&'a str, &'a SecretString),
    pub service: (&'a str, &'a SecretString),
    /// Extensions to create in the database (e.g. `pg_stat_statements`, where it is preloaded).
    pub extensions: &'a [&'a str],
}

/// Makes `application` so, idempotently: both roles exist with these passwords and no other
/// power, the database exists, belongs to the owner and keeps time in UTC, and its grants are
/// those of `migration::roles`. `admin` is the superuser's.
pub async fn provision_application(
    admin: &PgConnectOptions,
    application: &Application<'_>,
) -> Result<()> {
    let Application {
        database,
        owner,
        service,
        extensions,
    } = *application;
    let mut session = admin_session(&admin.clone().database("postgres")).await?;
    for (role, password) in [owner, service] {
        ensure_login_role(&mut session, role, password).await?;
    }
    let exists: bool =
        sea_orm::sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut session)
            .await
            .map_err(ProvisionError::db("looking up the database"))?;
    let (name, owner_name) = (quoted(database), quoted(owner.0));
    if !exists {
        execute(
            &mut session,
            &format!("CREATE DATABASE {name} OWNER {owner_name}"),
        )
        .await?;
    }
    execute(
        &mut session,
        &format!("ALTER DATABASE {name} SET timezone TO 'UTC'"),
    )
    .await?;
    let _ = session.close().await;

    let mut inside = admin_session(&admin.clone().database(database)).await?;
    let mut statements = grant_statements(database, owner.0, service.0);
    let create = |extension: &&str| format!("CREATE EXTENSION IF NOT EXISTS {}", quoted(extension));
    statements.extend(extensions.iter().map(create));
    for statement in statements {
        execute(&mut inside, &statement).await?;
    }
    let _ = inside.close().await;
    Ok(())
}

/// Applies every pending migration to the database `owner` names, as that role (the owner),
/// on one session that is never replaced, closed afterwards (a template database cannot be
/// cloned while anyone is connected to it).
pub async fn apply_migrations(owner: PgConnectOptions) -> Result<()> {
    let (database, _) = migration::one_session_pool(owner, TargetSessionAttrs::Any);
    let applied = migration::apply_pending(&database).await;
    let _ = database.close().await;
    applied.map(drop).map_err(ProvisionError::Migration)
}

/// A superuser session that keeps its statements out of the server's log and statistics, and
/// out of the driver's statement log (a test with a logger installed would print them): they
/// carry passwords.
pub async fn admin_session(options: &PgConnectOptions) -> Result<PgConnection> {
    use sea_orm::sqlx::ConnectOptions;
    let options = options.clone().disable_statement_logging();
    let mut session = PgConnection::connect_with(&options)
        .await
        .map_err(ProvisionError::db("connecting as the superuser"))?;
    for setting in [
        "SET standard_conforming_strings = on",
        "SET log_statement = 'none'",
        "SET log_min_duration_statement = -1",
        "SET log_min_error_statement = panic",
        "SET pg_stat_statements.track_utility = off",
    ] {
        execute(&mut session, setting).await?;
    }
    Ok(session)
}

/// Makes `role` a login role with `password` and no other power (no superuser, CREATEDB,
/// CREATEROLE, REPLICATION or BYPASSRLS); an existing one gets the password and loses any such
/// power.
pub async fn ensure_login_role(
    session: &mut PgConnection,
    role: &str,
    password: &SecretString,
) -> Result<()> {
    let exists: bool =
        sea_orm::sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *session)
            .await
            .map_err(ProvisionError::db("looking up roles"))?;
    let verb = if exists { "ALTER" } else { "CREATE" };
    let powers = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
    execute(session, &format!("{verb} ROLE {} {powers}", quoted(role))).await?;
    set_password(session, role, password).await
}

/// Gives `role` the password `password`, and nothing else.
pub async fn set_password(
    session: &mut PgConnection,
    role: &str,
    password: &SecretString,
) -> Result<()> {
    let password = literal(password.expose_secret());
    execute(
        session,
        &format!("ALTER ROLE {} PASSWORD {password}", quoted(role)),
    )
    .await
}

/// Runs one statement; an error names its first two words, never the rest (a password).
pub async fn execute(session: &mut PgConnection, statement: &str) -> Result<()> {
    let words: Vec<&str> = statement.split_whitespace().take(2).collect();
    sea_orm::sqlx::query(AssertSqlSafe(statement))
        .execute(session)
        .await
        .map(drop)
        .map_err(ProvisionError::db(words.join(" ")))
}

/// `text` as a SQL string literal (quotes doubled; backslashes are plain characters under
/// `standard_conforming_strings`, which [`admin_session`] sets).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
