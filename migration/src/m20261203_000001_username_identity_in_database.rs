//! The database owns username identity (issue #21): one SQL function, used by the unique index,
//! the checks and every lookup, so a plain `INSERT` obeys every rule and no writer needs a copy.
//!
//! `username_identity(text)` is `normalize(lower(normalize(x, NFKC) COLLATE "und-x-icu"), NFKC)`:
//! width and compatibility folding (NFKC: fullwidth `ＡＬＩＣＥ` and the ligature `ﬁ` become
//! `ALICE` and `fi`), then ICU's root-locale lower case (context-sensitive: a final capital
//! sigma becomes `ς`; `I` becomes `i` and `İ` becomes `i̇`, never Turkish `ı`; `ß` stays `ß`),
//! then NFKC again, as RFC 8265's UsernameCaseMapped profile does (width mapping, toLowerCase,
//! normalization). The ICU collation exists in every database whatever its `LC_CTYPE`, so the
//! rule does not follow the database's locale. Two names are one account exactly when their
//! identities are equal, in a unique index collated `"C"` (plain byte order: no collation library
//! can reorder it).
//!
//! Added (every name below is checked by `migration/tests/username_identity_in_database.rs`):
//! - the function, `IMMUTABLE PARALLEL SAFE`, written as one SQL expression;
//! - unique index `idx_users_username_identity` on `(username_identity(username) COLLATE "C")`,
//!   built `CONCURRENTLY`: reads and writes go on while it builds;
//! - checks `ck_users_username_identity_format` (the identity still has the `\domain\user` shape:
//!   refuses U+FE68 and U+FF3C, which fold to a backslash and would move the split),
//!   `ck_users_username_identity_length` (at most 2048 bytes, so an index entry always fits: a
//!   longer one is a clean check violation rather than error 54000) and
//!   `ck_users_username_parts_trimmed` (no Unicode White_Space at either end of the domain or the
//!   user name, as the domain refuses), added `NOT VALID` and validated afterwards, which scans
//!   without blocking reads or writes.
//!
//! Expand now, contract later. The previous release reads and writes `username_key` (its own
//! Rust rule) and the service of that release keeps running while this migration is applied, so
//! `username_key`, its unique index `idx_users_username` and its checks stay; only its `NOT NULL`
//! goes, and trigger `trg_users_fill_username_key` fills it from `username_identity` when a
//! writer leaves it out (a plain `INSERT`, the new binary), so the previous release's lookups by
//! key find those rows too, for all but the names where the two rules differ (`ß`, final sigma).
//! While both indexes exist a name must be free under both. The new binary never touches
//! `username_key`. A later contract migration drops the trigger, its function,
//! `idx_users_username`, `ck_users_username_key_length` and the column, once no process of the
//! previous release can run again (every replica upgraded and a rollback of the binary no longer
//! planned): from then on a rollback to that release would need this migration's down first.
//!
//! The migration runs without a transaction (the concurrent build cannot run in one), as steps
//! that each take their strong locks for milliseconds only; it checks the existing rows before it
//! changes anything and fails listing their ids (rules broken, or two users becoming one
//! account). If a step fails later (a row written meanwhile breaks a rule, a lock timeout), it
//! undoes what it did, keys of rows written meanwhile included (refilled by the previous rule, as
//! `down` does); if it is cut off, running it again first drops the INVALID index a killed
//! concurrent build leaves, then carries on. `down` refills `username_key` by the previous rule
//! (the frozen Rust copy in `m20261130_000001_username_identity`) and restores the previous
//! schema exactly, refusing (and changing nothing) when that rule would make two users one.

use std::collections::BTreeSet;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseExecutor, DbBackend, Statement, TransactionTrait,
};

use crate::m20261130_000001_username_identity as previous;

#[derive(Debug)]
pub struct Migration;

const NAME: &str = "m20261203_000001_username_identity_in_database";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        NAME
    }
}

/// The unique index on the identity.
pub const IDENTITY_INDEX: &str = "idx_users_username_identity";

/// The longest identity, in bytes: a B-tree entry must stay under 2704 bytes; names of 255
/// ordinary characters stay far below (only characters such as U+FDFA, which folds to 18
/// letters, come near).
pub const MAX_IDENTITY_BYTES: usize = 2048;

/// Unicode's White_Space characters (what Rust's `char::is_whitespace` and `str::trim` use), as
/// a regex bracket of code points: PostgreSQL's `\s` follows the locale.
pub const WHITE_SPACE_BRACKET: &str =
    r"[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// How many ids an error message lists per kind of problem.
const LISTED_IDS: usize = 50;

/// How many keys one refill UPDATE of `down` writes.
const REFILL_BATCH: usize = 5_000;

const NO_ICU: &str = "this PostgreSQL server has no ICU collation \"und-x-icu\" (it was built \
                      without ICU); username identity needs one built with ICU, as the official \
                      image and Debian's, Ubuntu's, RDS's, Azure's and Cloud SQL's are; nothing \
                      was changed";

const CREATE_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION username_identity(username text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN normalize(lower(normalize(username, NFKC) COLLATE "und-x-icu"), NFKC) COLLATE "C";
COMMENT ON FUNCTION username_identity(text) IS
    'Account identity of a username: NFKC, then ICU root-locale lower case, then NFKC. Two usernames are one account exactly when their identities are equal (unique index idx_users_username_identity). Look up with: WHERE username_identity(username) COLLATE "C" = username_identity($1)';
"#;

/// The expand phase's trigger: `username_key` for writers that leave it out.
const CREATE_KEY_TRIGGER: &str = r#"
CREATE OR REPLACE FUNCTION users_fill_username_key() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.username_key IS NULL
       OR (TG_OP = 'UPDATE' AND NEW.username IS DISTINCT FROM OLD.username
           AND NEW.username_key IS NOT DISTINCT FROM OLD.username_key) THEN
        NEW.username_key := username_identity(NEW.username);
    END IF;
    RETURN NEW;
END;
$$;
CREATE OR REPLACE TRIGGER trg_users_fill_username_key
    BEFORE INSERT OR UPDATE OF username, username_key ON users
    FOR EACH ROW EXECUTE FUNCTION users_fill_username_key();
"#;

/// A rule of this migration: a check constraint and the problem it names in messages.
struct Rule {
    constraint: &'static str,
    problem: &'static str,
    /// The condition on a user, with `{identity}` standing for its identity.
    condition: fn(identity: &str) -> String,
}

const RULES: [Rule; 3] = [
    Rule {
        constraint: "ck_users_username_identity_format",
        problem: r"identity not of the form \domain\user (a character that folds to a backslash, \
                   such as U+FF3C or U+FE68)",
        condition: |identity| format!(r"{identity} ~ '^\\[^\\]+\\[^\\]+$'"),
    },
    Rule {
        constraint: "ck_users_username_identity_length",
        problem: "identity longer than 2048 bytes",
        condition: |identity| format!("octet_length({identity}) <= {MAX_IDENTITY_BYTES}"),
    },
    Rule {
        constraint: "ck_users_username_parts_trimmed",
        problem: "a space at the start or end of the domain or the user name",
        condition: |_| {
            let space = WHITE_SPACE_BRACKET;
            format!(r"username::text !~ '\\{space}|{space}\\|{space}$'")
        },
    },
];

/// The identity of the stored username, as the checks and the index compute it.
const IDENTITY_OF_USERNAME: &str = "username_identity(username::text)";

/// Added in the first step and validated once every statement that saw the table before it was
/// added has ended.
fn add_constraints_not_valid() -> String {
    let clauses: Vec<String> = RULES
        .iter()
        .map(|rule| {
            format!(
                "DROP CONSTRAINT IF EXISTS {name}, ADD CONSTRAINT {name} CHECK ({check}) NOT VALID",
                name = rule.constraint,
                check = (rule.condition)(IDENTITY_OF_USERNAME)
            )
        })
        .collect();
    format!(
        "ALTER TABLE users ALTER COLUMN username_key DROP NOT NULL, {}",
        clauses.join(", ")
    )
}

fn validate_constraints() -> String {
    let clauses: Vec<String> = RULES
        .iter()
        .map(|rule| format!("VALIDATE CONSTRAINT {}", rule.constraint))
        .collect();
    format!("ALTER TABLE users {}", clauses.join(", "))
}

fn create_index() -> String {
    format!(
        r#"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {IDENTITY_INDEX} ON users (({IDENTITY_OF_USERNAME} COLLATE "C"))"#
    )
}

/// What is wrong with the stored users under this migration's rules, by id.
#[derive(Debug, Default)]
struct Violations {
    /// Per rule (in [`RULES`] order), the ids breaking it.
    broken: [Vec<String>; 3],
    /// Groups of users (two or more) that would be one account.
    same_identity: Vec<Vec<String>>,
}

impl Violations {
    async fn find(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let mut violations = Violations::default();
        let failing: Vec<String> = RULES
            .iter()
            .map(|rule| format!("NOT ({})", (rule.condition)("identity")))
            .collect();
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT id::text, {failing} FROM \
                     (SELECT id, username, {IDENTITY_OF_USERNAME} AS identity FROM users) AS u \
                     WHERE {any} ORDER BY id",
                    failing = failing.join(", "),
                    any = failing.join(" OR "),
                ),
            ))
            .await?;
        for row in rows {
            let id: String = row.try_get_by_index(0)?;
            for (index, ids) in violations.broken.iter_mut().enumerate() {
                if row.try_get_by_index::<bool>(index + 1)? {
                    ids.push(id.clone());
                }
            }
        }
        violations.same_identity = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    r#"SELECT array_agg(id::text ORDER BY id) FROM users
                       GROUP BY {IDENTITY_OF_USERNAME} COLLATE "C" HAVING count(*) > 1
                       ORDER BY min(id::text)"#
                ),
            ))
            .await?
            .into_iter()
            .map(|row| row.try_get_by_index::<Vec<String>>(0))
            .collect::<Result<_, _>>()?;
        Ok(violations)
    }

    fn is_empty(&self) -> bool {
        self.broken.iter().all(Vec::is_empty) && self.same_identity.is_empty()
    }

    /// One message naming every problem and the ids concerned (never the usernames).
    fn describe(&self, what_happened: &str) -> String {
        let mut parts = Vec::new();
        for (rule, ids) in RULES.iter().zip(&self.broken) {
            if !ids.is_empty() {
                parts.push(format!("{}: {}", rule.problem, list(ids)));
            }
        }
        if !self.same_identity.is_empty() {
            let groups: Vec<String> = self
                .same_identity
                .iter()
                .take(LISTED_IDS)
                .map(|group| format!("[{}]", list(group)))
                .collect();
            let more = self.same_identity.len().saturating_sub(LISTED_IDS);
            let more = if more > 0 {
                format!(" and {more} more groups")
            } else {
                String::new()
            };
            parts.push(format!(
                "one account under the new identity rule: {}{more}",
                groups.join(", ")
            ));
        }
        format!(
            "{NAME}: existing users break the new username rules, {what_happened}; fix or remove \
             these users (by id) and run the migration again. {}",
            parts.join("; ")
        )
    }
}

/// Up to [`LISTED_IDS`] ids, and how many more.
fn list(ids: &[String]) -> String {
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
}

async fn execute(db: &impl ConnectionTrait, sql: &str) -> Result<(), DbErr> {
    db.execute_unprepared(sql).await.map(|_| ())
}

async fn query_bool(db: &impl ConnectionTrait, sql: &str) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?;
    Ok(row
        .map(|row| row.try_get_by_index::<bool>(0))
        .transpose()?
        .unwrap_or(false))
}

/// Fails with one line when the server cannot compute the identity at all.
async fn require_icu(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    if !query_bool(
        db,
        "SELECT EXISTS (SELECT FROM pg_collation WHERE collname = 'und-x-icu')",
    )
    .await?
    {
        return Err(DbErr::Migration(format!("{NAME}: {NO_ICU}")));
    }
    if !query_bool(db, "SELECT current_setting('server_encoding') = 'UTF8'").await? {
        return Err(DbErr::Migration(format!(
            "{NAME}: the database's encoding is not UTF8, which normalize() needs; nothing was \
             changed"
        )));
    }
    Ok(())
}

/// Drops the index if a concurrent build left it INVALID (it failed, or its run was killed).
async fn drop_invalid_index(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let invalid = query_bool(
        db,
        &format!(
            "SELECT EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('{IDENTITY_INDEX}') \
             AND NOT indisvalid)"
        ),
    )
    .await?;
    if invalid {
        execute(
            db,
            &format!("DROP INDEX CONCURRENTLY IF EXISTS {IDENTITY_INDEX}"),
        )
        .await?;
    }
    Ok(())
}

/// When [`undo`] runs, which decides which keys it rewrites.
#[derive(Debug, Clone, Copy)]
enum Undoing {
    /// `down`.
    Down,
    /// A failed `up`, after its first step: rows written meanwhile got the new rule's keys.
    FailedUp,
}

/// Undoes whatever of `up` exists, leaving the schema as before it, each step safe to run again;
/// once nothing fills keys by the new rule any more, rewrites `username_key` by the previous
/// rule. After a failed `up` too: the previous release still serves, and a row written through
/// the trigger meanwhile would keep a key its lookups never find. Returns the users written then
/// whose key could not be rewritten (see [`refill_previous_keys`]); none after `down`.
async fn undo(db: &DatabaseConnection, undoing: Undoing) -> Result<Left, DbErr> {
    let key_nullable = query_bool(
        db,
        "SELECT NOT attnotnull FROM pg_attribute \
         WHERE attrelid = 'users'::regclass AND attname = 'username_key'",
    )
    .await?;
    let drops: Vec<String> = RULES
        .iter()
        .map(|rule| format!("DROP CONSTRAINT IF EXISTS {}", rule.constraint))
        .collect();
    let tx = db.begin().await?;
    execute(
        &tx,
        "DROP TRIGGER IF EXISTS trg_users_fill_username_key ON users;
         DROP FUNCTION IF EXISTS users_fill_username_key();",
    )
    .await?;
    execute(&tx, &format!("ALTER TABLE users {}", drops.join(", "))).await?;
    if key_nullable {
        // NOT NULL again without a scan under ACCESS EXCLUSIVE: a check validated first (which
        // blocks neither reads nor writes) proves it.
        execute(
            &tx,
            "ALTER TABLE users DROP CONSTRAINT IF EXISTS ck_users_username_key_present,
                 ADD CONSTRAINT ck_users_username_key_present
                 CHECK (username_key IS NOT NULL) NOT VALID",
        )
        .await?;
    }
    tx.commit().await?;
    // Nothing fills keys by the new rule any more, and new rows must bring a key.
    let left = refill_previous_keys(db, undoing).await?;
    if key_nullable {
        execute(
            db,
            "ALTER TABLE users VALIDATE CONSTRAINT ck_users_username_key_present",
        )
        .await?;
    }
    if key_nullable {
        let tx = db.begin().await?;
        execute(
            &tx,
            "ALTER TABLE users ALTER COLUMN username_key SET NOT NULL;
             ALTER TABLE users DROP CONSTRAINT ck_users_username_key_present;",
        )
        .await?;
        tx.commit().await?;
    }
    // Last: a concurrent drop marks the index INVALID before it waits for the transactions
    // using it, so one cut off by lock_timeout leaves it so. Here that touches nothing else the
    // previous release needs, and running the same command again finishes the drop.
    execute(
        db,
        &format!("DROP INDEX CONCURRENTLY IF EXISTS {IDENTITY_INDEX}"),
    )
    .await?;
    execute(db, "DROP FUNCTION IF EXISTS username_identity(text)").await?;
    Ok(left)
}

/// The users whose `username_key` is the new rule's (`username_identity`, which exists until
/// [`undo`]'s end), as the trigger writes it.
async fn keys_by_the_new_rule(db: &DatabaseConnection) -> Result<BTreeSet<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id::text FROM users WHERE username_key = username_identity(username::text)",
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
}

/// `(id, username, username_key)` of every user.
async fn stored_keys(
    db: &DatabaseConnection,
) -> Result<Vec<(String, String, Option<String>)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id::text, username::text, username_key FROM users",
        ))
        .await?;
    let mut users = Vec::with_capacity(rows.len());
    for row in rows {
        users.push((
            row.try_get_by_index::<String>(0)?,
            row.try_get_by_index::<String>(1)?,
            row.try_get_by_index::<Option<String>>(2)?,
        ));
    }
    Ok(users)
}

/// Fails if, under the previous release's rule, stored users would be one account or break its
/// rules: then `down` cannot restore its schema. `what_happened` says how far it went.
fn check_previous_rule(
    users: &[(String, String, Option<String>)],
    what_happened: &str,
) -> Result<(), DbErr> {
    let violations = previous::Violations::find(
        users
            .iter()
            .map(|(id, name, _)| (id.as_str(), name.as_str())),
    );
    if violations.is_empty() {
        return Ok(());
    }
    let mut parts: Vec<String> = violations
        .same_identity
        .iter()
        .take(LISTED_IDS)
        .map(|group| format!("[{}]", list(group)))
        .collect();
    for ids in [
        &violations.not_nfc,
        &violations.forbidden_character,
        &violations.key_too_long,
    ] {
        if !ids.is_empty() {
            parts.push(list(ids));
        }
    }
    Err(DbErr::Migration(format!(
        "{NAME}: cannot roll back: under the previous release's identity rule these users would \
         be one account or break its rules, {what_happened}; remove or rename them (by id) and \
         run down again: {}",
        parts.join(", ")
    )))
}

/// Of `written`, those that under the previous release's rule are one account with another
/// stored user, or break its rules: their keys by that rule cannot be written.
fn at_odds_with_the_previous_rule(
    users: &[(String, String, Option<String>)],
    written: &BTreeSet<&str>,
) -> BTreeSet<String> {
    let violations = previous::Violations::find(
        users
            .iter()
            .map(|(id, name, _)| (id.as_str(), name.as_str())),
    );
    let groups = violations.same_identity.into_iter().flatten();
    let listed = [
        violations.not_nfc,
        violations.forbidden_character,
        violations.key_too_long,
    ];
    groups
        .chain(listed.into_iter().flatten())
        .filter(|id| written.contains(id.as_str()))
        .collect()
}

/// Rewrites every `username_key` that differs from the previous release's rule (rows written
/// through the trigger got the new rule's), in batches that each block writes for milliseconds,
/// without touching `updated_at`. After a failed `up`, only the keys the trigger wrote, and not
/// those of users the previous rule makes one account with another (or refuses), or whose key by
/// that rule another row holds when it writes: they are returned, and the undoing goes on
/// without them. After `down`, any such user stops it.
async fn refill_previous_keys(db: &DatabaseConnection, undoing: Undoing) -> Result<Left, DbErr> {
    let users = stored_keys(db).await?;
    let stale = |(id, name, key): &(String, String, Option<String>)| {
        let wanted = previous::identity_key(name);
        (key.as_deref() != Some(wanted.as_str())).then(|| (id.clone(), name.clone(), wanted))
    };
    let (stale, at_odds): (Vec<(String, String, String)>, Vec<String>) = match undoing {
        // Every key: while applied, only the trigger wrote keys by another rule.
        Undoing::Down => {
            let what_happened = "written while down ran (down stopped half-way)";
            check_previous_rule(&users, what_happened)?;
            (users.iter().filter_map(stale).collect(), Vec::new())
        }
        // Only the keys the trigger wrote: a row another writer gave a key of its own before
        // the run is left as it was, as undoing leaves everything else.
        Undoing::FailedUp => {
            let by_trigger = keys_by_the_new_rule(db).await?;
            let written = users.iter().filter(|(id, ..)| by_trigger.contains(id));
            let mut stale: Vec<(String, String, String)> = written.filter_map(stale).collect();
            let ids: BTreeSet<&str> = stale.iter().map(|(id, ..)| id.as_str()).collect();
            let kept = at_odds_with_the_previous_rule(&users, &ids);
            stale.retain(|(id, ..)| !kept.contains(id));
            (stale, kept.into_iter().collect())
        }
    };
    // In rounds: a key another stale row held is free once that row is rewritten, so what one
    // round leaves the next may write. It stops when a round writes nothing.
    let mut pending = stale;
    while !pending.is_empty() {
        let mut left = Vec::new();
        for batch in pending.chunks(REFILL_BATCH) {
            let written = write_previous_keys(db, batch).await?;
            left.extend(
                batch
                    .iter()
                    .filter(|(id, ..)| !written.contains(id))
                    .cloned(),
            );
        }
        if left.len() == pending.len() {
            break;
        }
        pending = left;
    }
    let unwritable: Vec<String> = pending.into_iter().map(|(id, ..)| id).collect();
    match undoing {
        Undoing::Down if !unwritable.is_empty() => Err(DbErr::Migration(format!(
            "{NAME}: cannot roll back: {HELD_OR_RENAMED} (down stopped half-way; run it again \
             once that is mended): {}",
            list(&unwritable)
        ))),
        _ => Ok(Left {
            at_odds,
            unwritable,
        }),
    }
}

/// Why a refill left some users' keys as they were.
const HELD_OR_RENAMED: &str = "the key these users need by the previous release's rule is \
                               another row's, or they were renamed while it ran (a renamed user \
                               got its key from its writer and needs nothing)";

/// The users whose keys [`refill_previous_keys`] left, after a failed `up`.
#[derive(Debug, Default)]
struct Left {
    /// The previous rule makes them one account with another user, or refuses them.
    at_odds: Vec<String>,
    /// Their key by that rule is another row's, or they were renamed meanwhile.
    unwritable: Vec<String>,
}

impl Left {
    fn is_empty(&self) -> bool {
        self.at_odds.is_empty() && self.unwritable.is_empty()
    }

    /// What to add to a failed `up`'s error (empty: nothing was left).
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.at_odds.is_empty() {
            parts.push(format!(
                "under its rule they would be one account with another user, or break its \
                 rules: {}",
                list(&self.at_odds)
            ));
        }
        if !self.unwritable.is_empty() {
            parts.push(format!("{HELD_OR_RENAMED}: {}", list(&self.unwritable)));
        }
        parts.join("; ")
    }
}

/// Writes one batch of `(id, name, key)`, in a transaction that blocks writes for milliseconds,
/// without touching `updated_at`; returns the ids written. Writes wait from the DISABLE TRIGGER
/// (SHARE ROW EXCLUSIVE) to the commit, so what the UPDATE finds stays true until then. Only a
/// row still named as read (one renamed meanwhile got its key from its writer, which the old
/// name's must not replace), and only a key no row holds now (a user the previous release took
/// since the read, another writer's key, or another stale row's until it is rewritten): the
/// others are left, not to the unique index.
async fn write_previous_keys(
    db: &DatabaseConnection,
    batch: &[(String, String, String)],
) -> Result<BTreeSet<String>, DbErr> {
    let ids: Vec<String> = batch.iter().map(|(id, ..)| id.clone()).collect();
    let names: Vec<String> = batch.iter().map(|(_, name, _)| name.clone()).collect();
    let keys: Vec<String> = batch.iter().map(|(.., key)| key.clone()).collect();
    let tx = db.begin().await?;
    // A derived column is no edit: updated_at stays.
    execute(
        &tx,
        "ALTER TABLE users DISABLE TRIGGER trg_users_set_updated_at",
    )
    .await?;
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"UPDATE users SET username_key = refill.key
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS refill(id, name, key)
               WHERE users.id = refill.id
                 AND users.username::text COLLATE "C" = refill.name
                 AND NOT EXISTS (SELECT FROM users AS other
                                 WHERE other.username_key = refill.key
                                   AND other.id <> users.id)
               RETURNING users.id::text"#,
            [ids.into(), names.into(), keys.into()],
        ))
        .await?;
    let written = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<BTreeSet<String>, DbErr>>()?;
    execute(
        &tx,
        "ALTER TABLE users ENABLE TRIGGER trg_users_set_updated_at",
    )
    .await?;
    tx.commit().await?;
    Ok(written)
}

/// The session this migration runs on (it runs without a transaction).
fn connection<'a>(manager: &'a SchemaManager<'_>) -> Result<&'a DatabaseConnection, DbErr> {
    match manager.get_connection() {
        DatabaseExecutor::Connection(db) => Ok(db),
        _ => Err(DbErr::Migration(format!(
            "{NAME} builds an index concurrently and must run outside a transaction"
        ))),
    }
}

/// The steps of `up` after the first: validation, then the index. `Err` carries what to report.
async fn finish_up(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    execute(db, &validate_constraints()).await?;
    execute(db, &create_index()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // CREATE INDEX CONCURRENTLY cannot run in a transaction.
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = connection(manager)?;
        require_icu(db).await?;
        drop_invalid_index(db).await?;

        // Step 1, one short transaction: the function, then the existing rows checked against
        // it (reading only), then the constraints (NOT VALID) and the trigger, whose ACCESS
        // EXCLUSIVE lasts from the ALTER to the commit.
        let tx = db.begin().await?;
        execute(&tx, CREATE_FUNCTION).await?;
        let violations = Violations::find(&tx).await?;
        if !violations.is_empty() {
            tx.rollback().await?;
            return Err(DbErr::Migration(violations.describe("nothing was changed")));
        }
        execute(&tx, &add_constraints_not_valid()).await?;
        execute(&tx, CREATE_KEY_TRIGGER).await?;
        tx.commit().await?;

        // Steps 2 and 3 block neither reads nor writes. A row written between the check above
        // and the constraints breaking a rule fails validation; two that became one account
        // fail the build. Either way: undo, and say which.
        let Err(error) = finish_up(db).await else {
            return Ok(());
        };
        let undone = undo(db, Undoing::FailedUp).await;
        let violations = match &undone {
            Ok(_) => {
                // The function is gone again: recreate it for the report, in a transaction
                // rolled back.
                let tx = db.begin().await?;
                execute(&tx, CREATE_FUNCTION).await?;
                let found = Violations::find(&tx).await;
                tx.rollback().await?;
                found.ok()
            }
            Err(_) => None,
        };
        let (error, left) = match (undone, violations) {
            (Ok(left), Some(violations)) if !violations.is_empty() => (
                DbErr::Migration(
                    violations.describe("written while the migration ran; it undid its changes"),
                ),
                left,
            ),
            (Ok(left), _) => (error, left),
            (Err(undo_error), _) => {
                return Err(DbErr::Migration(format!(
                    "{NAME}: {error}; undoing its changes failed too ({undo_error}): run the \
                     migration again, which carries on from where it stopped"
                )));
            }
        };
        if left.is_empty() {
            return Err(error);
        }
        Err(DbErr::Migration(format!(
            "{error}; users written while the migration ran keep the new rule's keys, which the \
             previous release's lookups do not find, where {}; mend them (by id), or run the \
             migration again (its rule tells them apart)",
            left.describe()
        )))
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = connection(manager)?;
        let users = stored_keys(db).await?;
        // Undoing drops the trigger first: without it, an earlier run (a down stopped half-way,
        // or a failed up) undid part of the migration already, or an up never got that far.
        let trigger = "SELECT EXISTS (SELECT FROM pg_trigger \
                       WHERE tgname = 'trg_users_fill_username_key' \
                         AND tgrelid = to_regclass('users'))";
        let what_happened = if query_bool(db, trigger).await? {
            "and nothing was rolled back"
        } else {
            "and this run changed nothing (part of the migration was undone before, or never \
             done)"
        };
        check_previous_rule(&users, what_happened)?;
        undo(db, Undoing::Down).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_white_space_bracket_is_unicode_white_space() {
        let listed: Vec<char> = ('\0'..=char::MAX).filter(|c| c.is_whitespace()).collect();
        assert_eq!(listed.len(), 25);
        for c in listed {
            let code = u32::from(c);
            let in_bracket = [
                (0x9, 0xd),
                (0x20, 0x20),
                (0x85, 0x85),
                (0xa0, 0xa0),
                (0x1680, 0x1680),
                (0x2000, 0x200a),
                (0x2028, 0x2029),
                (0x202f, 0x202f),
                (0x205f, 0x205f),
                (0x3000, 0x3000),
            ]
            .iter()
            .any(|(start, end)| (*start..=*end).contains(&code));
            assert!(in_bracket, "U+{code:04X}");
        }
    }

    #[test]
    fn the_constraints_are_added_not_valid_and_validated_by_name() {
        let add = add_constraints_not_valid();
        assert!(add.starts_with("ALTER TABLE users ALTER COLUMN username_key DROP NOT NULL"));
        assert_eq!(add.matches("NOT VALID").count(), 3, "{add}");
        assert!(
            add.contains(r"CHECK (username_identity(username::text) ~ '^\\[^\\]+\\[^\\]+$')"),
            "{add}"
        );
        assert_eq!(
            validate_constraints(),
            "ALTER TABLE users VALIDATE CONSTRAINT ck_users_username_identity_format, \
             VALIDATE CONSTRAINT ck_users_username_identity_length, \
             VALIDATE CONSTRAINT ck_users_username_parts_trimmed"
        );
    }

    #[test]
    fn messages_list_ids_by_problem_and_never_names() {
        let violations = Violations {
            broken: [vec!["a".into()], vec![], vec!["b".into(), "c".into()]],
            same_identity: vec![vec!["d".into(), "e".into()]],
        };
        let message = violations.describe("nothing was changed");
        assert!(message.starts_with(NAME), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");
        assert!(message.contains("U+FF3C or U+FE68): a;"), "{message}");
        assert!(message.contains("user name: b, c;"), "{message}");
        assert!(message.contains("one account under the new identity rule: [d, e]"));
        assert!(!message.contains("2048 bytes"), "{message}");
        let many: Vec<String> = (0..60).map(|i| i.to_string()).collect();
        assert!(list(&many).ends_with("49 and 10 more"));
    }
}
