//! Versioned schema migrations for the counseling platform.
//!
//! Migrations are an explicit deployment step (`just migrate-up`), never run by the service at
//! start-up. [`apply_pending`] and [`roll_back`] serialise concurrent runs with a PostgreSQL
//! advisory lock so that several replicas or deploy jobs may run them at once.

pub use sea_orm_migration::{DbErr, MigratorTrait, sea_orm};

use sea_orm_migration::MigrationStatus;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseConnection, Statement, TransactionTrait};

pub mod scaffold;

mod m20251220_000001_create_users;
pub mod m20261130_000001_username_identity;
mod m20261130_000002_bcrypt_cost_bounds;

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

/// Applies every pending migration; returns how many were applied.
///
/// sea-orm-migration takes no lock of its own: two concurrent runs on an empty database would both
/// try to apply the first migration and one would fail on a duplicate key. Here the whole run
/// happens in one transaction that first takes a transaction-scoped advisory lock, so it is on the
/// same connection as the migrations, a second run waits and then finds nothing pending, and the
/// lock cannot outlive the transaction even if this process dies.
pub async fn apply_pending(db: &DatabaseConnection) -> Result<usize, DbErr> {
    let transaction = db.begin().await?;
    take_migration_lock(&transaction).await?;
    let pending = Migrator::get_pending_migrations(&transaction).await?.len();
    Migrator::up(&transaction, None).await?;
    transaction.commit().await?;
    Ok(pending)
}

/// Rolls back the `steps` most recent migrations (at most as many as are applied), under the same
/// lock as [`apply_pending`]; returns the names of those rolled back, newest first.
pub async fn roll_back(db: &DatabaseConnection, steps: u32) -> Result<Vec<String>, DbErr> {
    let transaction = db.begin().await?;
    take_migration_lock(&transaction).await?;
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

async fn take_migration_lock(connection: &impl ConnectionTrait) -> Result<(), DbErr> {
    connection
        .execute_raw(Statement::from_sql_and_values(
            connection.get_database_backend(),
            "SELECT pg_advisory_xact_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await?;
    Ok(())
}
