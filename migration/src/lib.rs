//! Versioned schema migrations for the counseling platform.
//!
//! Migrations are an explicit deployment step (`just migrate-up`), never run by the service at
//! start-up. [`apply_pending`] and [`roll_back`] serialise concurrent runs with a PostgreSQL
//! advisory lock so that several replicas or deploy jobs may run them at once.
//!
//! Two guards, so that a migration cannot hurt the running service or its data:
//! * every run sets `lock_timeout` ([`RunOptions::lock_timeout`]): a migration that cannot get a
//!   table's lock (a long transaction holds it) fails after that long and changes nothing, instead
//!   of waiting while every query of the service queues behind its pending `ACCESS EXCLUSIVE`;
//! * a down that would drop a table holding rows refuses, saying how many, unless
//!   [`RunOptions::force`] is set ([`refuse_to_drop_rows`] is the check each such down runs).

pub use sea_orm_migration::{DbErr, MigratorTrait, sea_orm};

use std::time::Duration;

use sea_orm_migration::MigrationStatus;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    DatabaseConnection, DatabaseTransaction, RuntimeErr, Statement, TransactionTrait,
};

pub mod roles;
pub mod scaffold;

mod m20251220_000001_create_users;
pub mod m20261130_000001_username_identity;
mod m20261130_000002_bcrypt_cost_bounds;

/// How long a migration waits for a table's lock unless told otherwise (`MIGRATION_LOCK_TIMEOUT_MS`
/// in the CLI): long enough for the service's short transactions to finish, short enough that
/// the requests queued behind the migration's lock wait no longer than a slow request.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest `lock_timeout` PostgreSQL accepts, in milliseconds (an `int`).
pub const MAX_LOCK_TIMEOUT_MS: u64 = i32::MAX as u64;

/// The transaction-local setting that lets [`refuse_to_drop_rows`] drop rows.
const FORCE_SETTING: &str = "counseling.migration_force";

/// How one run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// `lock_timeout` of the run's transaction; at least 1 ms, at most [`MAX_LOCK_TIMEOUT_MS`].
    pub lock_timeout: Duration,
    /// Lets a down drop tables that still hold rows (`migration down --force`).
    pub force: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            force: false,
        }
    }
}

/// SQL for a down to run before it drops `table`: fails, naming the number of rows, when the
/// table holds any and the run was not forced. In the migration itself, so that no way of running
/// it (this crate's functions, `sea-orm-cli`) skips the question. `table` is a literal name.
pub fn refuse_to_drop_rows(table: &str) -> String {
    format!(
        "DO $guard$
DECLARE
    doomed bigint;
BEGIN
    IF coalesce(current_setting('{FORCE_SETTING}', true), '') <> 'on' THEN
        SELECT count(*) INTO doomed FROM {table};
        IF doomed > 0 THEN
            RAISE EXCEPTION 'refusing to drop {table}: % rows would be deleted; run `migration down --force` (`just migrate-down --force`) to delete them', doomed
                USING ERRCODE = 'object_in_use';
        END IF;
    END IF;
END
$guard$;"
    )
}

/// Whether `error` is PostgreSQL giving up on a lock after `lock_timeout` (SQLSTATE 55P03).
pub fn is_lock_timeout(error: &DbErr) -> bool {
    match error {
        DbErr::Conn(RuntimeErr::SqlxError(error))
        | DbErr::Exec(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error)) => error
            .as_database_error()
            .and_then(|error| error.code())
            .is_some_and(|code| code == "55P03"),
        _ => false,
    }
}

/// Key of the advisory lock held while migrations run ("counsel" in ASCII). Any process that
/// changes the schema through this crate takes it first.
pub const MIGRATION_LOCK_KEY: i64 = 0x0063_6f75_6e73_656c;

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20251220_000001_create_users::Migration),
            Box::new(m20261130_000001_username_identity::Migration),
            Box::new(m20261130_000002_bcrypt_cost_bounds::Migration),
        ]
    }
}

/// A migration and whether it has been applied, for `migration status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// Applies every pending migration with the default [`RunOptions`]; returns how many were applied.
pub async fn apply_pending(db: &DatabaseConnection) -> Result<usize, DbErr> {
    apply_pending_with(db, RunOptions::default()).await
}

/// Applies every pending migration; returns how many were applied.
///
/// sea-orm-migration takes no lock of its own: two concurrent runs on an empty database would both
/// try to apply the first migration and one would fail on a duplicate key. Here the whole run
/// happens in one transaction that first takes a transaction-scoped advisory lock, so it is on the
/// same connection as the migrations, a second run waits and then finds nothing pending, and the
/// lock cannot outlive the transaction even if this process dies.
pub async fn apply_pending_with(
    db: &DatabaseConnection,
    options: RunOptions,
) -> Result<usize, DbErr> {
    let transaction = begin_run(db, options).await?;
    let pending = Migrator::get_pending_migrations(&transaction).await?.len();
    Migrator::up(&transaction, None).await?;
    transaction.commit().await?;
    Ok(pending)
}

/// [`roll_back_with`] with the default [`RunOptions`]: never drops a table that holds rows.
pub async fn roll_back(db: &DatabaseConnection, steps: u32) -> Result<Vec<String>, DbErr> {
    roll_back_with(db, steps, RunOptions::default()).await
}

/// Rolls back the `steps` most recent migrations (at most as many as are applied), in one
/// transaction under the same lock as [`apply_pending_with`]; returns the names of those rolled
/// back, newest first. If any of them fails (a refused drop, a lock timeout), none is rolled back.
pub async fn roll_back_with(
    db: &DatabaseConnection,
    steps: u32,
    options: RunOptions,
) -> Result<Vec<String>, DbErr> {
    let transaction = begin_run(db, options).await?;
    let applied = Migrator::get_applied_migrations(&transaction).await?;
    let rolled_back = applied
        .iter()
        .rev()
        .take(steps as usize)
        .map(|migration| migration.name().to_owned())
        .collect();
    if !applied.is_empty() {
        Migrator::down(&transaction, Some(steps)).await?;
    }
    transaction.commit().await?;
    Ok(rolled_back)
}

/// Every known migration in order, with whether it is applied. Changes nothing in the database.
pub async fn status(db: &DatabaseConnection) -> Result<Vec<MigrationState>, DbErr> {
    Ok(Migrator::get_migration_with_status_read_only(db)
        .await?
        .into_iter()
        .map(|migration| MigrationState {
            name: migration.name().to_owned(),
            applied: migration.status() == MigrationStatus::Applied,
        })
        .collect())
}

/// Opens a run's transaction: the advisory lock first (waiting for another run is fine, however
/// long), then the lock timeout for everything the migrations lock, and the force setting.
async fn begin_run(
    db: &DatabaseConnection,
    options: RunOptions,
) -> Result<DatabaseTransaction, DbErr> {
    let transaction = db.begin().await?;
    let backend = transaction.get_database_backend();
    transaction
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "SELECT pg_advisory_xact_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await?;
    let lock_timeout_ms = options
        .lock_timeout
        .as_millis()
        .clamp(1, MAX_LOCK_TIMEOUT_MS.into());
    // set_config(..., true) is SET LOCAL: both end with the transaction.
    transaction
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "SELECT set_config('lock_timeout', $1, true), set_config($2, $3, true)",
            [
                format!("{lock_timeout_ms}ms").into(),
                FORCE_SETTING.into(),
                if options.force { "on" } else { "off" }.into(),
            ],
        ))
        .await?;
    Ok(transaction)
}
