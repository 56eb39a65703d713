//! Versioned schema migrations for the counseling platform.
//!
//! Migrations are an explicit deployment step (`just migrate-up`), never run by the service at
//! start-up. [`migrations`] lists them in order, each with its source file; a [`Runner`] applies
//! and rolls them back (see `runner` for how: one session holding an advisory lock, so several
//! replicas or deploy jobs may run at once, and one transaction per migration unless a migration
//! needs none, such as `CREATE INDEX CONCURRENTLY`).
//!
//! Two guards, so that a migration cannot hurt the running service or its data:
//! * every migration runs under `lock_timeout` ([`RunOptions::lock_timeout`]): a migration that
//!   cannot get a table's lock (a long transaction holds it) fails after that long (in a
//!   transaction, having changed nothing; without one, recorded `applying`, as it may have
//!   stopped part-way), instead of waiting while every query of the service queues behind its
//!   pending `ACCESS EXCLUSIVE`;
//! * a down that would drop a table holding rows refuses, saying how many, unless
//!   [`RunOptions::force`] is set ([`refuse_to_drop_rows`] is the check each such down runs).

pub use sea_orm_migration::{DbErr, MigratorTrait, sea_orm};

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseConnection;

mod checksum;
pub mod roles;
mod runner;
pub mod scaffold;

pub use checksum::Checksum;
use runner::FORCE_SETTING;
pub use runner::{
    Accepted, DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT, DEFAULT_LOCK_TIMEOUT, Direction, Drift,
    DriftProblem, Event, HISTORY_TABLE, LOCK_WAIT_NOTICE, MAX_LOCK_TIMEOUT_MS, MIGRATION_LOCK_KEY,
    MigrationFile, MigrationState, MigrationStatus, Observer, RUN_SETTINGS, RunError, RunOptions,
    Runner, SETTING_QUERY, is_lock_timeout, one_session_pool, sqlstate,
};

mod m20251220_000001_create_users;
pub mod m20261130_000001_username_identity;
mod m20261130_000002_bcrypt_cost_bounds;
pub mod m20261203_000001_username_identity_in_database;
pub mod m20261205_000001_username_default_ignorables;
pub mod m20261205_000002_users_id_and_created_at_fixed;
pub mod m20261205_000003_password_hash_canonical;
pub mod m20261205_000004_users_timestamps_in_range;
pub mod m20261205_000005_username_unicode_14;
pub mod m20261206_000001_username_hangul_o_yae;

/// A migration module of this crate with its source file (`src/<module>.rs`).
macro_rules! migration_file {
    ($module:ident) => {
        MigrationFile::new(
            Box::new($module::Migration),
            concat!("migration/src/", stringify!($module), ".rs"),
            include_str!(concat!(stringify!($module), ".rs")),
        )
    };
}

/// Every migration, in the order they apply.
pub fn migrations() -> Vec<MigrationFile> {
    vec![
        migration_file!(m20251220_000001_create_users),
        migration_file!(m20261130_000001_username_identity),
        migration_file!(m20261130_000002_bcrypt_cost_bounds),
        // Mended: a failed `up` now refills the keys of rows written meanwhile by the previous
        // rule, as `down` does. A finished run did the same under either file.
        migration_file!(m20261203_000001_username_identity_in_database).mended_from(&[
            "42fb80737fc0af534c12e7985ca50735b7efe17ba21fda678b60634b19192e10",
            // Earlier versions of the mend, which main carried briefly (79874c1 to bb4e02f).
            "279bb532087010b8f85099088d68a192fc81b07d466aa9872faf48899f8e9910",
            "372fc1c5ec93bae1c28bdab1822079ffbc0ee2cfa5ec751bdfc18dee45d6f62b",
            "c315b6c50513ca3b81b51d1e6118fdcbe6c297b4c188fe2e95a22f44c6bea71e",
            "96db3a812f65bf4628bf1dc0f0429ffeefc910ef53479f9cc60d5e6b15fc53df",
            "ae7cb2950e201f6620f87e2aa6910108a2893a705e24c4b75a97bf6bf220fb45",
        ]),
        migration_file!(m20261205_000001_username_default_ignorables),
        migration_file!(m20261205_000002_users_id_and_created_at_fixed),
        migration_file!(m20261205_000003_password_hash_canonical),
        migration_file!(m20261205_000004_users_timestamps_in_range),
        migration_file!(m20261205_000005_username_unicode_14),
        migration_file!(m20261206_000001_username_hangul_o_yae),
    ]
}

/// SQL for a down to run before it drops `table`: fails, naming the number of rows, when the
/// table holds any and the run was not forced. In the migration itself, so that no way of running
/// it (this crate's functions, `sea-orm-cli`) skips the question. `table` is a literal name.
///
/// It takes the table's ACCESS EXCLUSIVE lock first (as the drop would, under the run's
/// `lock_timeout`), then counts: a row another session commits while the down waits is counted,
/// never dropped unseen with the table.
pub fn refuse_to_drop_rows(table: &str) -> String {
    format!(
        "DO $guard$
DECLARE
    doomed bigint;
BEGIN
    LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;
    IF coalesce(current_setting('{FORCE_SETTING}', true), '') <> 'on' THEN
        SELECT count(*) INTO doomed FROM {table};
        IF doomed > 0 THEN
            RAISE EXCEPTION 'refusing to drop {table}: % would be deleted; run `migration down --force` (`just migrate-down --force`) to delete them',
                CASE doomed WHEN 1 THEN '1 row' ELSE doomed || ' rows' END
                USING ERRCODE = 'object_in_use';
        END IF;
    END IF;
END
$guard$;"
    )
}

/// The same list for sea-orm-migration's own tools (`sea-orm-cli`), which apply migrations
/// without our runner's lock, transactions per migration and history checks: prefer the
/// `migration` CLI. They also take a row of ours that is `applying` (an `up` without a
/// transaction that has not finished) for applied, and skip it.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
            .into_iter()
            .map(MigrationFile::into_definition)
            .collect()
    }
}

/// Applies every pending (or `applying`) migration with the default [`RunOptions`]; returns how
/// many were applied.
pub async fn apply_pending(db: &DatabaseConnection) -> Result<usize, DbErr> {
    apply_pending_with(db, RunOptions::default()).await
}

/// Applies every pending (or `applying`) migration (see [`Runner::up`]); returns how many were
/// applied.
pub async fn apply_pending_with(
    db: &DatabaseConnection,
    options: RunOptions,
) -> Result<usize, DbErr> {
    Ok(Runner::new(migrations())
        .with_options(options)
        .up(db, None)
        .await?
        .len())
}

/// [`roll_back_with`] with the default [`RunOptions`]: never drops a table that holds rows.
pub async fn roll_back(db: &DatabaseConnection, steps: u32) -> Result<Vec<String>, DbErr> {
    roll_back_with(db, steps, RunOptions::default()).await
}

/// Rolls back the `steps` most recent migrations (see [`Runner::down`]); returns the names of
/// those rolled back, newest first.
pub async fn roll_back_with(
    db: &DatabaseConnection,
    steps: u32,
    options: RunOptions,
) -> Result<Vec<String>, DbErr> {
    Ok(Runner::new(migrations())
        .with_options(options)
        .down(db, steps)
        .await?)
}

/// Every known migration in order, then those applied that this binary does not have, with
/// where each stands (see [`MigrationStatus`]). Changes nothing in the database.
pub async fn status(db: &DatabaseConnection) -> Result<Vec<MigrationState>, DbErr> {
    Ok(Runner::new(migrations()).status(db).await?)
}
