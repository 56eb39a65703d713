//! No stored timestamp the service cannot read.
//!
//! `created_at` and `updated_at` are `timestamptz`, which takes `infinity`, `-infinity` and years
//! up to 294276. A plain `INSERT` (an import, another service: an INSERT may give both columns)
//! could store one, and every read of that user would then fail: the driver turns the value into
//! a `chrono` date by adding microseconds to its epoch, which overflows (and panics) for the
//! infinities and past year 262142, and a year past 9999 has no four-digit ISO 8601 form for the
//! API's clients. Check `ck_users_timestamps_in_range` keeps both in [1970-01-01, 10000-01-01)
//! UTC: no account of this platform predates Unix time, and every client reads those dates.
//!
//! It runs as `m20261205_000003` does, without a transaction: one short transaction checks the
//! existing rows (failing, changing nothing, with the ids of those that break the rule: correct
//! their dates first) and adds the check `NOT VALID`, whose ACCESS EXCLUSIVE lock lasts until
//! that commit only; then the check is validated without blocking reads or writes. A row
//! committed between the scan and the ALTER fails validation, and the migration drops the check
//! again and lists that row. Cut off, it runs again from the start. `down` drops the check.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseExecutor, DbBackend, Statement, TransactionTrait,
};

#[derive(Debug)]
pub struct Migration;

pub const NAME: &str = "m20261205_000004_users_timestamps_in_range";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        NAME
    }
}

/// The check this migration adds.
pub const CONSTRAINT: &str = "ck_users_timestamps_in_range";

/// The rule. Literals with an explicit offset: the bounds do not follow the session's time zone.
/// Outside the range includes the infinities.
const IN_RANGE: &str = "created_at >= '1970-01-01 00:00:00+00' \
     AND created_at < '10000-01-01 00:00:00+00' \
     AND updated_at >= '1970-01-01 00:00:00+00' \
     AND updated_at < '10000-01-01 00:00:00+00'";

/// How many ids an error message lists.
const LISTED_IDS: usize = 50;

/// The ids of the stored users whose dates break the rule (at most one more than listed).
async fn breaking(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let query = format!(
        "SELECT id::text FROM users WHERE NOT ({IN_RANGE}) \
         ORDER BY id LIMIT {}",
        LISTED_IDS + 1
    );
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, query))
        .await?;
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
}

fn describe(ids: &[String], outcome: &str) -> String {
    let more = if ids.len() > LISTED_IDS {
        " and more"
    } else {
        ""
    };
    let listed: Vec<&str> = ids.iter().take(LISTED_IDS).map(String::as_str).collect();
    format!(
        "{NAME}: users whose created_at or updated_at is infinite or outside 1970-01-01 to \
         9999-12-31 UTC, which the service cannot read: {}{more}; correct their dates, then run \
         the migration again ({outcome})",
        listed.join(", ")
    )
}

/// The session this migration runs on (it runs without a transaction).
fn connection<'a>(manager: &'a SchemaManager<'_>) -> Result<&'a DatabaseConnection, DbErr> {
    match manager.get_connection() {
        DatabaseExecutor::Connection(db) => Ok(db),
        _ => Err(DbErr::Migration(format!(
            "{NAME} validates its check apart from adding it and must run outside a transaction"
        ))),
    }
}

fn drop_check() -> String {
    format!("ALTER TABLE users DROP CONSTRAINT IF EXISTS {CONSTRAINT}")
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // Validation in the adding transaction would scan the table under ACCESS EXCLUSIVE.
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = connection(manager)?;
        let tx = db.begin().await?;
        let ids = breaking(&tx).await?;
        if !ids.is_empty() {
            tx.rollback().await?;
            return Err(DbErr::Migration(describe(&ids, "nothing was changed")));
        }
        let add = format!(
            "ALTER TABLE users DROP CONSTRAINT IF EXISTS {CONSTRAINT}, \
             ADD CONSTRAINT {CONSTRAINT} CHECK ({IN_RANGE}) NOT VALID"
        );
        tx.execute_unprepared(&add).await?;
        tx.commit().await?;

        let validate = format!("ALTER TABLE users VALIDATE CONSTRAINT {CONSTRAINT}");
        let Err(error) = db.execute_unprepared(&validate).await else {
            return Ok(());
        };
        // The next run starts over by dropping it anyway; the validation's error (a lock
        // timeout, say) is the one to report.
        if db.execute_unprepared(&drop_check()).await.is_err() {
            return Err(error);
        }
        match breaking(db).await {
            Ok(ids) if !ids.is_empty() => Err(DbErr::Migration(describe(
                &ids,
                "written while the migration ran; it dropped its check again",
            ))),
            _ => Err(error),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        connection(manager)?
            .execute_unprepared(&drop_check())
            .await?;
        Ok(())
    }
}
