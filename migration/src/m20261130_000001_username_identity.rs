//! Username identity that does not depend on the server's locale (issue #14).
//!
//! Before: one unique index on `lower(username)`, whose meaning follows the database's `LC_CTYPE`
//! (under `C` only ASCII folds; under a Turkish ICU locale `I` lowers to `ı`) and can change with a
//! glibc or ICU upgrade. After:
//! - `username_key text COLLATE "C" NOT NULL`: the identity key, computed in Rust by one rule
//!   (Unicode's compatibility caseless match with default case folding, in NFC) and written by
//!   the application; unique index `idx_users_username` on it. Collation `C` makes the index order
//!   plain byte order, so no locale library can reorder it under the index.
//! - checks that `username` is NFC (`IS NFC NORMALIZED`, locale independent) and contains no
//!   character of the categories Cc, Cf, Co, Cn, Zl, Zp, and that the key fits a B-tree entry.
//!
//! The migration may not depend on our crates, so the rule is repeated here with the same
//! third-party functions as `counseling_domain::Username`; `migration/tests/identity_key.rs` shows
//! they agree. Existing rows are checked before anything changes: if any breaks the new rules or
//! two share a key, the migration fails listing their ids and leaves the schema as it was.

use std::collections::BTreeMap;

use caseless::Caseless;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::{UnicodeNormalization, is_nfc};

#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000001_username_identity"
    }
}

/// Longest key in bytes; equal to `counseling_domain::MAX_USERNAME_KEY_BYTES`.
pub const MAX_KEY_BYTES: usize = 2048;

/// How many rows one backfill UPDATE writes.
const BACKFILL_BATCH: usize = 5_000;

/// How many ids an error message lists per kind of problem.
const LISTED_IDS: usize = 50;

/// The identity key of a username: `NFC(NFKD(casefold(NFKD(casefold(NFD(x))))))`.
pub fn identity_key(username: &str) -> String {
    username
        .chars()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkd()
        .nfc()
        .collect()
}

/// Whether `character` is of a category usernames may not contain: Cc, Cf, Co, Cn, Zl, Zp
/// (and Cs, which neither a Rust string nor PostgreSQL text can hold).
pub fn is_forbidden(character: char) -> bool {
    matches!(
        get_general_category(character),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// A PostgreSQL regex bracket expression matching every forbidden character but NUL (which text
/// cannot hold), as code-point ranges. PostgreSQL compares regex ranges by code point, whatever
/// the locale.
pub fn forbidden_characters_bracket() -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for character in ('\u{1}'..=char::MAX).filter(|&c| is_forbidden(c)) {
        let code = u32::from(character);
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == code => *end = code,
            _ => ranges.push((code, code)),
        }
    }
    let escape = |code: u32| {
        if code <= 0xFFFF {
            format!(r"\u{code:04x}")
        } else {
            format!(r"\U{code:08x}")
        }
    };
    let mut bracket = String::from("[");
    for (start, end) in ranges {
        bracket.push_str(&escape(start));
        if end != start {
            bracket.push('-');
            bracket.push_str(&escape(end));
        }
    }
    bracket.push(']');
    bracket
}

/// What is wrong with the stored users, by id, if anything.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Violations {
    pub not_nfc: Vec<String>,
    pub forbidden_character: Vec<String>,
    pub key_too_long: Vec<String>,
    /// Groups of users (two or more) whose usernames have the same key.
    pub same_identity: Vec<Vec<String>>,
}

impl Violations {
    /// Checks `(id, username)` rows against the new rules.
    pub fn find<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut violations = Violations::default();
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, username) in rows {
            if !is_nfc(username) {
                violations.not_nfc.push(id.to_owned());
            }
            if username.chars().any(is_forbidden) {
                violations.forbidden_character.push(id.to_owned());
            }
            let key = identity_key(username);
            if key.len() > MAX_KEY_BYTES {
                violations.key_too_long.push(id.to_owned());
            }
            by_key.entry(key).or_default().push(id.to_owned());
        }
        violations.same_identity = by_key.into_values().filter(|ids| ids.len() > 1).collect();
        for list in [
            &mut violations.not_nfc,
            &mut violations.forbidden_character,
            &mut violations.key_too_long,
        ] {
            list.sort();
        }
        for group in &mut violations.same_identity {
            group.sort();
        }
        violations.same_identity.sort();
        violations
    }

    pub fn is_empty(&self) -> bool {
        *self == Violations::default()
    }

    /// One message naming every problem and the ids concerned (never the usernames).
    pub fn describe(&self) -> String {
        let list = |ids: &[String]| {
            let mut text = ids
                .iter()
                .take(LISTED_IDS)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if ids.len() > LISTED_IDS {
                text.push_str(&format!(" and {} more", ids.len() - LISTED_IDS));
            }
            text
        };
        let mut parts = Vec::new();
        if !self.not_nfc.is_empty() {
            parts.push(format!("not in Unicode NFC: {}", list(&self.not_nfc)));
        }
        if !self.forbidden_character.is_empty() {
            parts.push(format!(
                "a character of category Cc, Cf, Co, Cn, Zl or Zp: {}",
                list(&self.forbidden_character)
            ));
        }
        if !self.key_too_long.is_empty() {
            parts.push(format!(
                "identity key longer than {MAX_KEY_BYTES} bytes: {}",
                list(&self.key_too_long)
            ));
        }
        if !self.same_identity.is_empty() {
            let groups: Vec<String> = self
                .same_identity
                .iter()
                .take(LISTED_IDS)
                .map(|group| format!("[{}]", list(group)))
                .collect();
            parts.push(format!(
                "one account under the new identity rule: {}",
                groups.join(", ")
            ));
        }
        format!(
            "m20261130_000001_username_identity: existing users break the new username rules, \
             nothing was changed; fix or remove these users (by id) and run the migration again. \
             {}",
            parts.join("; ")
        )
    }
}

/// `{"a","b"}`: a PostgreSQL array literal of texts, each quoted and escaped.
fn text_array_literal<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items
        .into_iter()
        .map(|item| format!("\"{}\"", item.replace('\\', r"\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

const ADD_KEY_COLUMN: &str = r#"
ALTER TABLE users ADD COLUMN username_key text COLLATE "C";
COMMENT ON COLUMN users.username_key IS
    'Identity of username: NFC(NFKD(casefold(NFKD(casefold(NFD(username)))))), default (not Turkic) Unicode 16 case folding; computed by the application (counseling_domain::Username::identity_key).';
ALTER TABLE users DISABLE TRIGGER trg_users_set_updated_at;
"#;

const BACKFILL: &str = r"
UPDATE users SET username_key = backfill.key
FROM unnest($1::uuid[], $2::text[]) AS backfill(id, key)
WHERE users.id = backfill.id";

/// Everything after the backfill; `{forbidden}` is the bracket of forbidden characters.
const ENFORCE: &str = r"
ALTER TABLE users ENABLE TRIGGER trg_users_set_updated_at;
ALTER TABLE users
    ALTER COLUMN username_key SET NOT NULL,
    ADD CONSTRAINT ck_users_username_nfc CHECK (username IS NFC NORMALIZED),
    ADD CONSTRAINT ck_users_username_characters CHECK (username !~ '{forbidden}'),
    ADD CONSTRAINT ck_users_username_key_length CHECK (octet_length(username_key) <= {max_key_bytes});
DROP INDEX idx_users_username;
-- Same name as before, so a unique violation still reads as 'username taken'.
CREATE UNIQUE INDEX idx_users_username ON users (username_key);
";

const DOWN: &str = r"
DROP INDEX idx_users_username;
ALTER TABLE users
    DROP CONSTRAINT ck_users_username_key_length,
    DROP CONSTRAINT ck_users_username_characters,
    DROP CONSTRAINT ck_users_username_nfc,
    DROP COLUMN username_key;
CREATE UNIQUE INDEX idx_users_username ON users (lower(username));
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Runs inside the migration's transaction (PostgreSQL's default in sea-orm-migration, and
        // `apply_pending` wraps the whole run in one): an error anywhere rolls everything back.
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        // No writer may slip a row in between the check below and the new constraints.
        db.execute_unprepared("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            .await?;
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT id::text, username::text FROM users",
            ))
            .await?;
        let mut users = Vec::with_capacity(rows.len());
        for row in rows {
            users.push((
                row.try_get_by_index::<String>(0)?,
                row.try_get_by_index::<String>(1)?,
            ));
        }
        let violations = Violations::find(users.iter().map(|(i, u)| (i.as_str(), u.as_str())));
        if !violations.is_empty() {
            return Err(DbErr::Migration(violations.describe()));
        }

        db.execute_unprepared(ADD_KEY_COLUMN).await?;
        // The trigger would stamp every row's updated_at; filling in a derived column is no edit.
        for batch in users.chunks(BACKFILL_BATCH) {
            let ids = text_array_literal(batch.iter().map(|(id, _)| id.as_str()));
            let keys: Vec<String> = batch.iter().map(|(_, name)| identity_key(name)).collect();
            let keys = text_array_literal(keys.iter().map(String::as_str));
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                BACKFILL,
                [ids.into(), keys.into()],
            ))
            .await?;
        }
        let enforce = ENFORCE
            .replace("{forbidden}", &forbidden_characters_bracket())
            .replace("{max_key_bytes}", &MAX_KEY_BYTES.to_string());
        db.execute_unprepared(&enforce).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_escape_backslashes_and_quotes() {
        assert_eq!(
            text_array_literal([r"\s\a", "q\"x", ""]),
            r#"{"\\s\\a","q\"x",""}"#
        );
    }

    #[test]
    fn the_forbidden_bracket_lists_code_point_ranges() {
        let bracket = forbidden_characters_bracket();
        assert!(
            bracket.starts_with(r"[\u0001-\u001f\u007f-\u009f\u00ad"),
            "{bracket}"
        );
        // U+2028 (Zl), U+2029 (Zp) and the bidirectional embeddings U+202A-U+202E (Cf).
        assert!(bracket.contains(r"\u2028-\u202e"), "{bracket}");
        // Unassigned planes and the private-use planes run together up to the last code point.
        assert!(bracket.ends_with(r"-\U0010ffff]"), "{bracket}");
    }

    #[test]
    fn violations_list_ids_by_problem_and_group_collisions() {
        let rows = [
            ("3", r"\s\ÉMILE"),
            ("1", r"\s\émile"),
            ("2", "\\s\\e\u{301}mile"),
            ("4", "\\s\\zero\u{200b}width"),
            ("5", r"\s\bob"),
        ];
        let violations = Violations::find(rows);
        assert_eq!(violations.not_nfc, vec!["2"]);
        assert_eq!(violations.forbidden_character, vec!["4"]);
        assert!(violations.key_too_long.is_empty());
        assert_eq!(violations.same_identity, vec![vec!["1", "2", "3"]]);
        let message = violations.describe();
        assert!(message.contains("not in Unicode NFC: 2"), "{message}");
        assert!(message.contains("[1, 2, 3]"), "{message}");
        assert!(!message.contains("mile"), "no usernames: {message}");
        assert!(Violations::find([("5", r"\s\bob")]).is_empty());
    }
}
