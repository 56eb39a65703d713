//! No U+11A7 HANGUL JUNGSEONG O-YAE: PostgreSQL's normalization drops it.
//!
//! PostgreSQL 15's `normalize` (and so `username_identity`, and `IS NFC NORMALIZED` where its
//! quick check is unsure) composes a syllable of consonant and vowel with a following U+11A7 as if
//! U+11A7 were the Hangul composition's "no final consonant" (UAX #15 counts the finals from
//! U+11A7 but composes only those after it), so the character vanishes: `\s\가` + U+11A7 had the
//! identity of `\s\가`, the unique index took the two names for one account, and a lookup of one
//! found the other's row, where Unicode's rule and the domain's keep them apart. The same happens
//! after a syllable NFKC composes from compatibility letters (`ㄱㅏ`). Check
//! `ck_users_username_hangul_o_yae` refuses the character wherever it appears (an archaic vowel:
//! no modern Korean name holds it), in the database, so a plain `INSERT` obeys it;
//! `Username::parse` refuses the same ([`UNCOMPARABLE`] is a frozen copy of the domain's
//! `UNCOMPARABLE_IN_DATABASE`; a test compares them).
//!
//! The migration runs as `m20261205_000005` does, without a transaction: one short transaction
//! checks the existing rows (failing, changing nothing, with the ids of those that break the
//! rule: rename them first) and adds the check `NOT VALID`, whose ACCESS EXCLUSIVE lock lasts
//! until that commit only; then the check is validated, which scans without blocking reads or
//! writes. A row committed between the scan and the ALTER fails validation, and the migration
//! drops the check again and lists that row. Cut off, it runs again from the start. `down` drops
//! the check.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseExecutor, DbBackend, Statement, TransactionTrait,
};

#[derive(Debug)]
pub struct Migration;

pub const NAME: &str = "m20261206_000001_username_hangul_o_yae";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        NAME
    }
}

/// The check this migration adds.
pub const CONSTRAINT: &str = "ck_users_username_hangul_o_yae";

/// The characters the check refuses.
pub const UNCOMPARABLE: [char; 1] = ['\u{11a7}'];

/// How many ids an error message lists.
const LISTED_IDS: usize = 50;

/// The rule as a PostgreSQL regex: any of [`UNCOMPARABLE`] (escaped: a code point, whatever the
/// locale).
fn pattern() -> String {
    let escaped: String = UNCOMPARABLE
        .iter()
        .map(|&character| format!(r"\u{:04x}", u32::from(character)))
        .collect();
    format!("[{escaped}]")
}

fn add_check() -> String {
    format!(
        "ALTER TABLE users DROP CONSTRAINT IF EXISTS {CONSTRAINT}, \
         ADD CONSTRAINT {CONSTRAINT} CHECK (username::text !~ '{}') NOT VALID",
        pattern()
    )
}

/// The ids of the stored users whose username breaks the rule (at most one more than listed).
async fn breaking(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT id::text FROM users WHERE username::text ~ '{}' ORDER BY id LIMIT {}",
                pattern(),
                LISTED_IDS + 1
            ),
        ))
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
        "{NAME}: users whose username holds U+11A7 HANGUL JUNGSEONG O-YAE, which the database's \
         identity rule drops: {}{more}; rename them, then run the migration again ({outcome})",
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
        tx.execute_unprepared(&add_check()).await?;
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
