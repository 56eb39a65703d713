//! No stored password hash that matches no password.
//!
//! `ck_users_password_hash_format` checks a hash's shape: variant, cost, 53 characters of
//! bcrypt's alphabet. But 22 characters carry the salt's 128 bits and 31 the digest's 184, so
//! the last character of each has unused low bits (4 and 2), which every bcrypt writes as zero.
//! A hash with any of them set matches no password (the `bcrypt` crate refuses to decode it; an
//! implementation that ignores them writes the salt back without them and never compares equal):
//! a plain `INSERT` could store an account that can never sign in, and the domain would refuse to
//! read it back. Check `ck_users_password_hash_unused_bits_zero` refuses such a hash, in the
//! database, as `counseling_domain::PasswordHash::parse` does (a test compares the two). Its name
//! sorts after `ck_users_password_hash_format`, and PostgreSQL tests checks in name order, so a
//! hash of another shape is still refused naming the format.
//!
//! It runs as `m20261205_000001` does, without a transaction: one short transaction checks the
//! existing rows (failing, changing nothing, with the ids of those that break the rule: reset
//! their passwords first) and adds the check `NOT VALID`, whose ACCESS EXCLUSIVE lock lasts until
//! that commit only; then the check is validated without blocking reads or writes. A row
//! committed between the scan and the ALTER fails validation, and the migration drops the check
//! again and lists that row. Cut off, it runs again from the start. `down` drops the check.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseExecutor, DbBackend, Statement, TransactionTrait,
};

#[derive(Debug)]
pub struct Migration;

pub const NAME: &str = "m20261205_000003_password_hash_canonical";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        NAME
    }
}

/// The check this migration adds.
pub const CONSTRAINT: &str = "ck_users_password_hash_unused_bits_zero";

/// The rule, on a hash of the format's shape: after `$2b$12$` (7 characters), the salt's 22nd
/// character has its low 4 bits zero (values 0, 16, 32, 48 of `./A-Za-z0-9`), the digest's 31st
/// its low 2 bits. `substr`, not a regex: at 100,000 users a regex scan took 1.2 s, this one 45 ms.
const CANONICAL: &str = "substr(password_hash, 29, 1) IN ('.', 'O', 'e', 'u') \
     AND substr(password_hash, 60, 1) IN \
     ('.', 'C', 'G', 'K', 'O', 'S', 'W', 'a', 'e', 'i', 'm', 'q', 'u', 'y', '2', '6')";

/// How many ids an error message lists.
const LISTED_IDS: usize = 50;

/// The ids of the stored users whose hash breaks the rule (at most one more than listed).
async fn breaking(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let query = format!(
        "SELECT id::text FROM users WHERE NOT ({CANONICAL}) \
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
        "{NAME}: users whose password hash sets bits bcrypt leaves zero, so that no password \
         matches it: {}{more}; reset their passwords, then run the migration again ({outcome})",
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
             ADD CONSTRAINT {CONSTRAINT} CHECK ({CANONICAL}) NOT VALID"
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
