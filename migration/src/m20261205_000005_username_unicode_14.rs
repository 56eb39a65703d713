//! No character the database's Unicode tables do not know.
//!
//! PostgreSQL 15 normalizes with Unicode 14.0's tables (`IS NFC NORMALIZED`, `normalize`, and so
//! `username_identity`); the domain's data is Unicode 16's. A character assigned after 14.0 is
//! left as it is where newer tables compose or fold it: the outlined `𜳖` (U+1CCD6, Unicode 16,
//! NFKC `A`) made `\s\𜳖LICE` another account than `\s\alice`, Garay's capital and small letters
//! two accounts, and U+16D67 twice (which Unicode 16 composes into U+16D68) a second row of a name
//! the domain reads as the first one's. Check `ck_users_username_unicode_14` refuses the 10,301
//! code points assigned in Unicode 15.0, 15.1 and 16.0 ([`NEWER_THAN_UNICODE_14`], a frozen copy
//! of the domain's `NEWER_THAN_DATABASE`; a test compares them), in the database, so a plain
//! `INSERT` obeys it; `Username::parse` refuses the same. A later migration may allow them once
//! the oldest supported server's tables know them (PostgreSQL 18 has Unicode 16.0).
//!
//! The migration runs as `m20261205_000001` does, without a transaction: one short transaction
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

pub const NAME: &str = "m20261205_000005_username_unicode_14";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        NAME
    }
}

/// The check this migration adds.
pub const CONSTRAINT: &str = "ck_users_username_unicode_14";

/// The code points assigned in Unicode 15.0, 15.1 and 16.0, as inclusive ranges.
pub const NEWER_THAN_UNICODE_14: [(u32, u32); 75] = [
    (0x0897, 0x0897),
    (0x0CF3, 0x0CF3),
    (0x0ECE, 0x0ECE),
    (0x1B4E, 0x1B4F),
    (0x1B7F, 0x1B7F),
    (0x1C89, 0x1C8A),
    (0x2427, 0x2429),
    (0x2FFC, 0x2FFF),
    (0x31E4, 0x31E5),
    (0x31EF, 0x31EF),
    (0xA7CB, 0xA7CD),
    (0xA7DA, 0xA7DC),
    (0x105C0, 0x105F3),
    (0x10D40, 0x10D65),
    (0x10D69, 0x10D85),
    (0x10D8E, 0x10D8F),
    (0x10EC2, 0x10EC4),
    (0x10EFC, 0x10EFF),
    (0x1123F, 0x11241),
    (0x11380, 0x11389),
    (0x1138B, 0x1138B),
    (0x1138E, 0x1138E),
    (0x11390, 0x113B5),
    (0x113B7, 0x113C0),
    (0x113C2, 0x113C2),
    (0x113C5, 0x113C5),
    (0x113C7, 0x113CA),
    (0x113CC, 0x113D5),
    (0x113D7, 0x113D8),
    (0x113E1, 0x113E2),
    (0x116D0, 0x116E3),
    (0x11B00, 0x11B09),
    (0x11BC0, 0x11BE1),
    (0x11BF0, 0x11BF9),
    (0x11F00, 0x11F10),
    (0x11F12, 0x11F3A),
    (0x11F3E, 0x11F5A),
    (0x1342F, 0x1342F),
    (0x13439, 0x13455),
    (0x13460, 0x143FA),
    (0x16100, 0x16139),
    (0x16D40, 0x16D79),
    (0x18CFF, 0x18CFF),
    (0x1B132, 0x1B132),
    (0x1B155, 0x1B155),
    (0x1CC00, 0x1CCF9),
    (0x1CD00, 0x1CEB3),
    (0x1D2C0, 0x1D2D3),
    (0x1DF25, 0x1DF2A),
    (0x1E030, 0x1E06D),
    (0x1E08F, 0x1E08F),
    (0x1E4D0, 0x1E4F9),
    (0x1E5D0, 0x1E5FA),
    (0x1E5FF, 0x1E5FF),
    (0x1F6DC, 0x1F6DC),
    (0x1F774, 0x1F776),
    (0x1F77B, 0x1F77F),
    (0x1F7D9, 0x1F7D9),
    (0x1F8B2, 0x1F8BB),
    (0x1F8C0, 0x1F8C1),
    (0x1FA75, 0x1FA77),
    (0x1FA87, 0x1FA89),
    (0x1FA8F, 0x1FA8F),
    (0x1FAAD, 0x1FAAF),
    (0x1FABB, 0x1FABF),
    (0x1FAC6, 0x1FAC6),
    (0x1FACE, 0x1FACF),
    (0x1FADA, 0x1FADC),
    (0x1FADF, 0x1FADF),
    (0x1FAE8, 0x1FAE9),
    (0x1FAF7, 0x1FAF8),
    (0x1FBCB, 0x1FBEF),
    (0x2B739, 0x2B739),
    (0x2EBF0, 0x2EE5D),
    (0x31350, 0x323AF),
];

/// How many ids an error message lists.
const LISTED_IDS: usize = 50;

/// [`NEWER_THAN_UNICODE_14`] as a PostgreSQL regex bracket (ranges compare code points, whatever
/// the locale).
pub fn newer_bracket() -> String {
    let escape = |code: u32| {
        if code <= 0xFFFF {
            format!(r"\u{code:04x}")
        } else {
            format!(r"\U{code:08x}")
        }
    };
    let ranges: String = NEWER_THAN_UNICODE_14
        .iter()
        .map(|&(start, end)| {
            if start == end {
                escape(start)
            } else {
                format!("{}-{}", escape(start), escape(end))
            }
        })
        .collect();
    format!("[{ranges}]")
}

/// Whether `character` is in [`NEWER_THAN_UNICODE_14`].
pub fn is_newer_than_unicode_14(character: char) -> bool {
    let code = u32::from(character);
    NEWER_THAN_UNICODE_14
        .iter()
        .any(|&(start, end)| (start..=end).contains(&code))
}

fn add_check() -> String {
    format!(
        "ALTER TABLE users DROP CONSTRAINT IF EXISTS {CONSTRAINT}, \
         ADD CONSTRAINT {CONSTRAINT} CHECK (username::text !~ '{}') NOT VALID",
        newer_bracket()
    )
}

/// The ids of the stored users whose username breaks the rule (at most one more than listed).
async fn breaking(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT id::text FROM users WHERE username::text ~ '{}' ORDER BY id LIMIT {}",
                newer_bracket(),
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
        "{NAME}: users whose username holds a character added to Unicode after version 14.0, \
         which the database's identity rule cannot compare: {}{more}; rename them, then run the \
         migration again ({outcome})",
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
