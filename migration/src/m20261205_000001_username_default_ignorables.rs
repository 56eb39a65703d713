//! No invisible look-alikes: a username may not contain a default-ignorable code point.
//!
//! `\school\alice` followed by U+3164 HANGUL FILLER, U+034F COMBINING GRAPHEME JOINER, a
//! variation selector (U+FE0F) or U+180B MONGOLIAN FREE VARIATION SELECTOR ONE renders exactly as
//! `\school\alice`, yet was another account: these characters are Unicode's
//! Default_Ignorable_Code_Point (rendered as nothing unless a font gives them meaning, and
//! disallowed by RFC 8264's PRECIS classes), but not of category Cf, so
//! `ck_users_username_characters` let them through. So did U+2800 BRAILLE PATTERN BLANK, a
//! symbol drawn as nothing. Check `ck_users_username_no_ignorables` refuses every
//! default-ignorable code point and U+2800 ([`INVISIBLE`]: Unicode 16's list; a test compares it
//! with the domain's Unicode data), in the database, so a plain `INSERT` obeys it.
//!
//! The migration runs without a transaction, as two steps: one short transaction checks the
//! existing rows (failing, changing nothing, with the ids of those that break the rule: rename
//! them first) and adds the check `NOT VALID`, whose ACCESS EXCLUSIVE lock lasts until that
//! commit only; then the check is validated, which scans without blocking reads or writes. From
//! the ALTER on, the check refuses new rows that break it; one committed between the scan and the
//! ALTER fails validation, and the migration drops the check again and lists that row. Cut off,
//! or unable to drop the check (its error is then the validation's), it runs again from the
//! start. `down` drops the check.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseExecutor, DbBackend, Statement, TransactionTrait,
};

#[derive(Debug)]
pub struct Migration;

pub const NAME: &str = "m20261205_000001_username_default_ignorables";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        NAME
    }
}

/// The check this migration adds.
pub const CONSTRAINT: &str = "ck_users_username_no_ignorables";

/// Unicode 16's Default_Ignorable_Code_Point, as inclusive code-point ranges (those of category
/// Cf or Cn were refused already; the check repeats them, which costs nothing), and U+2800
/// BRAILLE PATTERN BLANK.
pub const INVISIBLE: [(u32, u32); 18] = [
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

/// How many ids an error message lists.
const LISTED_IDS: usize = 50;

/// [`INVISIBLE`] as a PostgreSQL regex bracket (ranges compare code points, whatever
/// the locale).
pub fn invisible_bracket() -> String {
    let escape = |code: u32| {
        if code <= 0xFFFF {
            format!(r"\u{code:04x}")
        } else {
            format!(r"\U{code:08x}")
        }
    };
    let ranges: String = INVISIBLE
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

/// Whether `character` is in [`INVISIBLE`].
pub fn is_invisible(character: char) -> bool {
    let code = u32::from(character);
    INVISIBLE
        .iter()
        .any(|&(start, end)| (start..=end).contains(&code))
}

fn add_check() -> String {
    format!(
        "ALTER TABLE users DROP CONSTRAINT IF EXISTS {CONSTRAINT}, \
         ADD CONSTRAINT {CONSTRAINT} CHECK (username::text !~ '{}') NOT VALID",
        invisible_bracket()
    )
}

/// The ids of the stored users whose username breaks the rule (at most one more than listed).
async fn breaking(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT id::text FROM users WHERE username::text ~ '{}' ORDER BY id LIMIT {}",
                invisible_bracket(),
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
        "{NAME}: users whose username holds an invisible character (Unicode \
         Default_Ignorable_Code_Point, such as U+3164 HANGUL FILLER or a variation selector), \
         so that it looks like another name: {}{more}; rename them, then run the migration again \
         ({outcome})",
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
