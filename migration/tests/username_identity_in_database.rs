//! `m20261203_000001_username_identity_in_database`: the database's own identity rule, as any
//! writer meets it (plain SQL as the service's role, on databases of every sample locale), and
//! the migration itself: on populated tables, its failure paths (before it changes anything,
//! and while it runs), a killed run, down and up again, a server without ICU.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{
    HASH, connect, connect_as_service, database_before, insert, insert_previous_release,
    insert_refusal, insert_returning_id, migration_binary, position, refusal, rows,
    schema_snapshot, sqlstate, text, up_fails_changing_nothing, up_to,
};
use counseling_testkit::fixtures::eventually;
use counseling_testkit::{DatabaseLocale, TestDatabase};
use migration::m20261130_000001_username_identity::identity_key;
use migration::m20261203_000001_username_identity_in_database::WHITE_SPACE_BRACKET;
use migration::sea_orm::DatabaseConnection;
use migration::sea_orm::sqlx::{self, Connection, PgConnection};
use migration::{MigrationStatus, RunOptions};
use std::time::Duration;

const IDENTITY_IN_DATABASE: &str = "m20261203_000001_username_identity_in_database";

/// The lookup any client can write (the function's comment says so); it uses the unique index.
const LOOKUP: &str = r#"SELECT username::text FROM users
                        WHERE username_identity(username) COLLATE "C" = username_identity($1)"#;

/// What a plain `INSERT` of each name answers, in order, then what a lookup of each spelling
/// finds: one line each, so transcripts of several databases compare as a whole.
async fn plain_sql_transcript(conn: &mut PgConnection) -> Vec<String> {
    let expanding = format!(r"\d\{}", "\u{fdfa}".repeat(100));
    let creations: Vec<&str> = vec![
        r"\school\Émile",
        r"\SCHOOL\ÉMILE",
        // Not NFC: a writer must compose it (the domain does).
        "\\school\\e\u{301}mile",
        // ß is kept by lower case: two accounts, as in RFC 8265's UsernameCaseMapped.
        r"\s\straße",
        r"\s\STRASSE",
        r"\s\STRAẞE",
        r"\s\Strasse",
        // I is i whatever the locale; dotted İ and dotless ı are letters of their own.
        r"\s\KIZ",
        r"\s\kiz",
        r"\s\kız",
        r"\s\KİZ",
        "\\s\\ki\u{307}z",
        // Capital sigma lowers to final ς at the end of a word.
        r"\s\ΣΊΣΥΦΟΣ",
        r"\s\σίσυφος",
        r"\s\σίσυφοσ",
        // Width and ligatures fold (NFKC).
        r"\ｓｃｈｏｏｌ\ＡＬＩＣＥ",
        r"\school\alice",
        r"\s\ﬁnn",
        r"\s\FINN",
        // What folds to a backslash would move the split between domain and user.
        r"\a\b＼c",
        r"\a\b﹨c",
        r"\a＼b\c",
        // White space at either end of a part; inside is fine.
        r"\s\alice ",
        r"\s \alice",
        "\\s\\\u{3000}bob",
        "\\s\\bob\u{a0}",
        r"\my school\anne marie",
        // An identity too long for an index entry: a check violation, not error 54000.
        &expanding,
        // The character rules of the previous migration still hold.
        "\\school\\ali\u{200b}ce",
        "\\school\\ali\u{e000}ce",
        "\\school\\ali\u{2028}ce",
    ];
    let mut transcript = Vec::new();
    for name in creations {
        let outcome = match insert(conn, name, HASH).await {
            Ok(()) => "created".to_owned(),
            Err(code) => code,
        };
        transcript.push(format!("create {}: {outcome}", shown(name)));
    }
    for name in [
        r"\SCHOOL\émile",
        "\\school\\E\u{301}MILE",
        r"\S\STRASSE",
        r"\s\STRAẞE",
        r"\s\kiz",
        "\\s\\KI\u{307}Z",
        r"\school\ａｌｉｃｅ",
        r"\s\σίσυφος",
        r"\s\fInN",
        r"\s\nobody",
    ] {
        let found: Vec<String> = sqlx::query_scalar(LOOKUP)
            .bind(name)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        transcript.push(format!(
            "find {}: {}",
            shown(name),
            found
                .first()
                .map_or("nobody".to_owned(), |found| shown(found))
        ));
    }
    transcript
}

/// Names with their invisible and combining characters spelled out.
fn shown(name: &str) -> String {
    if name.chars().count() > 40 {
        let start: String = name.chars().take(4).collect();
        return format!("{start}... ({} characters)", name.chars().count());
    }
    name.chars()
        .map(|c| match c {
            '\u{301}' | '\u{307}' | '\u{200b}' | '\u{e000}' | '\u{2028}' | '\u{3000}'
            | '\u{a0}' => {
                format!("<U+{:04X}>", u32::from(c))
            }
            c => c.to_string(),
        })
        .collect()
}

fn expected_transcript() -> Vec<String> {
    [
        r"create \school\Émile: created",
        r"create \SCHOOL\ÉMILE: 23505",
        r"create \school\e<U+0301>mile: 23514",
        r"create \s\straße: created",
        r"create \s\STRASSE: created",
        r"create \s\STRAẞE: 23505",
        r"create \s\Strasse: 23505",
        r"create \s\KIZ: created",
        r"create \s\kiz: 23505",
        r"create \s\kız: created",
        r"create \s\KİZ: created",
        r"create \s\ki<U+0307>z: 23505",
        r"create \s\ΣΊΣΥΦΟΣ: created",
        r"create \s\σίσυφος: 23505",
        r"create \s\σίσυφοσ: created",
        r"create \ｓｃｈｏｏｌ\ＡＬＩＣＥ: created",
        r"create \school\alice: 23505",
        r"create \s\ﬁnn: created",
        r"create \s\FINN: 23505",
        r"create \a\b＼c: 23514",
        r"create \a\b﹨c: 23514",
        r"create \a＼b\c: 23514",
        r"create \s\alice : 23514",
        r"create \s \alice: 23514",
        r"create \s\<U+3000>bob: 23514",
        r"create \s\bob<U+00A0>: 23514",
        r"create \my school\anne marie: created",
        r"create \d\ﷺ... (103 characters): 23514",
        r"create \school\ali<U+200B>ce: 23514",
        r"create \school\ali<U+E000>ce: 23514",
        r"create \school\ali<U+2028>ce: 23514",
        r"find \SCHOOL\émile: \school\Émile",
        r"find \school\E<U+0301>MILE: \school\Émile",
        r"find \S\STRASSE: \s\STRASSE",
        r"find \s\STRAẞE: \s\straße",
        r"find \s\kiz: \s\KIZ",
        r"find \s\KI<U+0307>Z: \s\KİZ",
        r"find \school\ａｌｉｃｅ: \ｓｃｈｏｏｌ\ＡＬＩＣＥ",
        r"find \s\σίσυφος: \s\ΣΊΣΥΦΟΣ",
        r"find \s\fInN: \s\ﬁnn",
        r"find \s\nobody: nobody",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn a_plain_insert_gets_the_same_answers_on_databases_of_every_sample_locale() {
    for locale in DatabaseLocale::samples() {
        let db = TestDatabase::migrated_with_locale(&locale).await.unwrap();
        let mut conn = connect_as_service(&db).await;
        assert_eq!(
            plain_sql_transcript(&mut conn).await,
            expected_transcript(),
            "on a database with {locale}"
        );
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (COSTS OFF) {}",
            LOOKUP.replace("$1", r"'\s\KIZ'")
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|line| line.contains("Index Scan using idx_users_username_identity")),
            "{locale}: {plan:#?}"
        );
    }
}

/// Every code point, through the database's own function: the characters whose identity holds a
/// backslash are the backslash and its two compatibility forms, and a name with either of those
/// is refused.
#[tokio::test]
async fn exactly_two_characters_fold_to_a_backslash_and_the_database_refuses_them() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    let folding: Vec<i32> = sqlx::query_scalar(
        r"SELECT c FROM generate_series(1, 1114111) AS c
          WHERE c NOT BETWEEN 55296 AND 57343 AND strpos(username_identity(chr(c)), '\') > 0
          ORDER BY c",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(folding, [0x5c, 0xfe68, 0xff3c]);
    for c in ['\u{fe68}', '\u{ff3c}'] {
        assert_eq!(
            insert(&mut conn, &format!(r"\d\a{c}b"), HASH).await,
            Err("23514".into())
        );
    }
}

/// The database's bracket of white space is exactly what Rust (and so the domain's `trim`)
/// calls white space, checked on every code point by the database itself.
#[tokio::test]
async fn the_database_refuses_exactly_unicode_white_space_around_a_part() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    let refused: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        r"SELECT c FROM generate_series(1, 1114111) AS c
          WHERE c NOT BETWEEN 55296 AND 57343 AND ('\d\a' || chr(c)) ~ '{WHITE_SPACE_BRACKET}$'
          ORDER BY c"
    )))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let rust: Vec<i32> = ('\u{1}'..=char::MAX)
        .filter(|c| c.is_whitespace())
        .map(|c| u32::from(c) as i32)
        .collect();
    assert_eq!(refused, rust);
}

/// Whatever key a writer supplies, an identity too long for an index entry is a check violation
/// (without the check, error 54000 from the index).
#[tokio::test]
async fn an_identity_too_long_for_the_index_is_refused_by_its_check() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect_as_service(&db).await;
    let expanding = format!(r"\d\{}", "\u{fdfa}".repeat(100));
    let refused = sqlx::query(
        "INSERT INTO users (username, password_hash, username_key) VALUES ($1, $2, 'short')",
    )
    .bind(&expanding)
    .bind(HASH)
    .execute(&mut conn)
    .await
    .unwrap_err();
    let check = "ck_users_username_identity_length";
    assert_eq!(refusal(&refused), ("23514".into(), check.into()));
    insert(&mut conn, &format!(r"\d\{}", "\u{fdfa}".repeat(60)), HASH)
        .await
        .unwrap();
}

const ALL_COLUMNS: &str = "SELECT id::text, username::text, password_hash::text, is_blocked::text, \
                           created_at::text, updated_at::text, username_key FROM users ORDER BY id";

/// Where the migration stands: `applied`, or `applying` after an `up` that failed (it runs
/// again from the start).
fn status(states: &[migration::MigrationState]) -> migration::MigrationStatus {
    states[position(IDENTITY_IN_DATABASE)].status
}

#[tokio::test]
async fn on_a_populated_table_every_row_stays_and_the_previous_release_keeps_working() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    for name in [r"\school\Émile", r"\s\straße", r"\ｓｃｈｏｏｌ\KIZ"] {
        insert_previous_release(&mut conn, name, HASH)
            .await
            .unwrap();
    }
    sqlx::query(
        r"INSERT INTO users (username, password_hash, username_key)
          SELECT format('\dom%s\User%s', i % 7, i), $1, format('\dom%s\user%s', i % 7, i)
          FROM generate_series(1, 3000) AS i",
    )
    .bind(HASH)
    .execute(&mut conn)
    .await
    .unwrap();
    let before = rows(&mut conn, ALL_COLUMNS).await;

    assert_eq!(up_to(&orm, IDENTITY_IN_DATABASE).await, 1);
    assert_eq!(rows(&mut conn, ALL_COLUMNS).await, before, "no row touched");

    // The previous release: writes with its key, looks up by it.
    let mut service = connect_as_service(&db).await;
    insert_previous_release(&mut service, r"\school\bob", HASH)
        .await
        .unwrap();
    let db = &db;
    let by_key = |name: &str| {
        let key = identity_key(name);
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT username::text FROM users WHERE username_key = $1",
            )
            .bind(key)
            .fetch_optional(&mut connect(db).await)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        by_key(r"\SCHOOL\BOB").await.as_deref(),
        Some(r"\school\bob")
    );
    // A plain INSERT (the new release, an administrator): the key is filled in, so the previous
    // release finds the row as well (wherever its rule and the new one agree).
    insert(&mut service, r"\school\Alice", HASH).await.unwrap();
    assert_eq!(
        by_key(r"\SCHOOL\ALICE").await.as_deref(),
        Some(r"\school\Alice")
    );
    // Renamed by plain SQL: the key follows.
    sqlx::query(r"UPDATE users SET username = '\school\Alicia' WHERE username = '\school\Alice'")
        .execute(&mut service)
        .await
        .unwrap();
    assert_eq!(
        by_key(r"\school\alicia").await.as_deref(),
        Some(r"\school\Alicia")
    );
    // While both unique indexes exist, a name must be free under both rules.
    let taken = |index: &str| ("23505".to_owned(), index.to_owned());
    let refused = insert_refusal(&mut service, r"\s\STRASSE").await;
    assert_eq!(refused, taken("idx_users_username"));
    let refused = insert_refusal(&mut service, r"\s\Straße").await;
    assert_eq!(refused, taken("idx_users_username_identity"));
}

/// A writer that supplied `key`, whatever either rule says.
async fn insert_with_key(conn: &mut PgConnection, username: &str, key: &str) -> String {
    sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, username_key) VALUES ($1, $2, $3) \
         RETURNING id::text",
    )
    .bind(username)
    .bind(HASH)
    .bind(key)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// A writer that supplied a key of its own (`lower(username)`), as the issue found them.
async fn insert_with_own_key(conn: &mut PgConnection, username: &str) -> String {
    sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, username_key) VALUES ($1, $2, lower($1)) \
         RETURNING id::text",
    )
    .bind(username)
    .bind(HASH)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn up_over_rows_breaking_the_rules_fails_listing_their_ids_and_changes_nothing() {
    let (_db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    let fine = insert_previous_release(&mut conn, r"\school\bob", HASH)
        .await
        .unwrap();
    let alice = insert_previous_release(&mut conn, r"\school\alice", HASH)
        .await
        .unwrap();
    let fullwidth = insert_with_own_key(&mut conn, r"\school\ＡＬＩＣＥ").await;
    let backslash = insert_previous_release(&mut conn, r"\a\b＼c", HASH)
        .await
        .unwrap();
    let spaced = insert_previous_release(&mut conn, r"\school\carol ", HASH)
        .await
        .unwrap();

    let error = up_fails_changing_nothing(&orm, &mut conn, ALL_COLUMNS).await;
    assert!(
        error.contains(&format!("U+FF3C or U+FE68): {backslash};")),
        "{error}"
    );
    assert!(error.contains(&format!("user name: {spaced};")), "{error}");
    let mut pair = [alice.clone(), fullwidth.clone()];
    pair.sort();
    assert!(
        error.contains(&format!(
            "one account under the new identity rule: [{}, {}]",
            pair[0], pair[1]
        )),
        "{error}"
    );
    assert!(error.contains("nothing was changed"), "{error}");
    assert!(!error.contains(&fine), "{error}");
    assert!(!error.contains("alice"), "ids, not usernames: {error}");
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::Applying
    );

    sqlx::query("DELETE FROM users WHERE id::text = ANY($1)")
        .bind(vec![fullwidth, backslash, spaced])
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        migration::apply_pending(&orm).await.unwrap(),
        migration::migrations().len() - position(IDENTITY_IN_DATABASE)
    );
}

/// Runs `up` while `writer` holds an uncommitted row: the migration's first step waits for it
/// (its ALTER needs the table to itself), so the row commits after the check of existing rows
/// and before the constraints exist. Returns the error of `up`.
async fn up_while_a_row_commits(
    db: &TestDatabase,
    orm: &DatabaseConnection,
    writer: sqlx::Transaction<'_, sqlx::Postgres>,
) -> String {
    let up = {
        let orm = orm.clone();
        tokio::spawn(async move { migration::apply_pending(&orm).await })
    };
    common::until_someone_waits_for_users(&mut connect(db).await).await;
    writer.commit().await.unwrap();
    up.await.unwrap().unwrap_err().to_string()
}

#[tokio::test]
async fn a_row_breaking_a_rule_written_while_up_runs_makes_it_undo_everything() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    insert_previous_release(&mut conn, r"\school\bob", HASH)
        .await
        .unwrap();
    let schema = schema_snapshot(&mut conn).await;
    let mut writer_conn = connect(&db).await;
    let mut writer = writer_conn.begin().await.unwrap();
    let late = insert_previous_release(&mut writer, r"\a\b＼c", HASH)
        .await
        .unwrap();

    let error = up_while_a_row_commits(&db, &orm, writer).await;
    assert!(
        error.contains(&format!("U+FF3C or U+FE68): {late}")),
        "{error}"
    );
    assert!(error.contains("it undid its changes"), "{error}");
    assert_eq!(schema_snapshot(&mut conn).await, schema);
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::Applying
    );
}

#[tokio::test]
async fn two_users_becoming_one_account_while_up_runs_make_it_undo_everything() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    let alice = insert_previous_release(&mut conn, r"\school\alice", HASH)
        .await
        .unwrap();
    let schema = schema_snapshot(&mut conn).await;
    let mut writer_conn = connect(&db).await;
    let mut writer = writer_conn.begin().await.unwrap();
    let twin = insert_with_own_key(&mut writer, r"\school\ＡＬＩＣＥ").await;

    let error = up_while_a_row_commits(&db, &orm, writer).await;
    let mut pair = [alice, twin];
    pair.sort();
    assert!(
        error.contains(&format!("[{}, {}]", pair[0], pair[1])),
        "{error}"
    );
    assert!(error.contains("it undid its changes"), "{error}");
    assert_eq!(schema_snapshot(&mut conn).await, schema);
    let invalid: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(invalid, 0, "the failed build's INVALID index is gone");
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::Applying
    );
}

#[tokio::test]
async fn a_run_killed_during_the_index_build_is_finished_by_the_next() {
    let reference = TestDatabase::migrated().await.unwrap();
    let expected = schema_snapshot(&mut connect(&reference).await).await;

    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    // What a killed run leaves: its first step done, an INVALID index of the name (here from a
    // build that met a duplicate), no history row.
    let alice = insert_previous_release(&mut conn, r"\school\alice", HASH)
        .await
        .unwrap();
    let twin = insert_with_own_key(&mut conn, r"\school\ＡＬＩＣＥ").await;
    let mut owner = PgConnection::connect(&db.owner_url()).await.unwrap();
    sqlx::raw_sql(
        r#"CREATE FUNCTION username_identity(username text) RETURNS text
               LANGUAGE sql IMMUTABLE PARALLEL SAFE
               RETURN normalize(lower(normalize(username, NFKC) COLLATE "und-x-icu"), NFKC) COLLATE "C";
           ALTER TABLE users ALTER COLUMN username_key DROP NOT NULL"#,
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let failed = sqlx::raw_sql(
        r#"CREATE UNIQUE INDEX CONCURRENTLY idx_users_username_identity
               ON users ((username_identity(username::text) COLLATE "C"))"#,
    )
    .execute(&mut owner)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(failed), "23505");
    sqlx::query("DELETE FROM users WHERE id::text = $1")
        .bind(&twin)
        .execute(&mut conn)
        .await
        .unwrap();

    assert_eq!(
        migration::apply_pending(&orm).await.unwrap(),
        migration::migrations().len() - position(IDENTITY_IN_DATABASE)
    );
    assert_eq!(schema_snapshot(&mut conn).await, expected);
    let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM users")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids, [alice]);
}

#[tokio::test]
async fn down_refills_keys_by_the_previous_rule_and_restores_its_schema_exactly() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    insert_previous_release(&mut conn, r"\school\Émile", HASH)
        .await
        .unwrap();
    let previous = schema_snapshot(&mut conn).await;
    assert_eq!(up_to(&orm, IDENTITY_IN_DATABASE).await, 1);
    let identity = schema_snapshot(&mut conn).await;
    // Written through the trigger, by the new rule: ß kept, final ς kept.
    let mut service = connect_as_service(&db).await;
    for name in [r"\s\straße", r"\s\ΣΊΣΥΦΟΣ", r"\s\alice"] {
        insert(&mut service, name, HASH).await.unwrap();
    }
    let keys =
        r"SELECT username::text, username_key, updated_at::text FROM users ORDER BY username";
    let written = rows(&mut conn, keys).await;
    assert_eq!(
        written.iter().map(|row| row[1].clone()).collect::<Vec<_>>(),
        [
            Some(r"\s\alice".to_owned()),
            Some(r"\s\straße".to_owned()),
            Some(r"\s\σίσυφος".to_owned()),
            Some(r"\school\émile".to_owned()),
        ]
    );

    assert_eq!(
        migration::roll_back(&orm, 1).await.unwrap(),
        [IDENTITY_IN_DATABASE]
    );
    assert_eq!(schema_snapshot(&mut conn).await, previous);
    let refilled = rows(&mut conn, keys).await;
    for (before, after) in written.iter().zip(&refilled) {
        let name = before[0].clone().unwrap();
        assert_eq!(after[0], before[0]);
        assert_eq!(after[1].as_deref(), Some(identity_key(&name).as_str()));
        assert_eq!(after[2], before[2], "updated_at of {name} kept");
    }
    assert_eq!(refilled[1][1].as_deref(), Some(r"\s\strasse"));

    assert_eq!(up_to(&orm, IDENTITY_IN_DATABASE).await, 1);
    assert_eq!(schema_snapshot(&mut conn).await, identity);
}

/// A key by the previous rule that another stale row holds (a writer gave it to another name) is
/// free once that row is rewritten: `down` writes it in a later round, to the end. The unique
/// index stopped it half-way before, or not, by the order of the rows.
#[tokio::test]
async fn down_writes_a_key_another_stale_row_held_once_that_row_is_rewritten() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    let previous = schema_snapshot(&mut conn).await;
    assert_eq!(up_to(&orm, IDENTITY_IN_DATABASE).await, 1);
    insert_with_key(&mut conn, r"\s\other", r"\s\strasse").await;
    insert(&mut connect_as_service(&db).await, r"\s\Straße", HASH)
        .await
        .unwrap();

    assert_eq!(
        migration::roll_back(&orm, 1).await.unwrap(),
        [IDENTITY_IN_DATABASE]
    );
    assert_eq!(schema_snapshot(&mut conn).await, previous);
    let keys = rows(&mut conn, "SELECT username::text, username_key FROM users").await;
    for row in keys {
        let name = row[0].clone().unwrap();
        assert_eq!(
            row[1].as_deref(),
            Some(identity_key(&name).as_str()),
            "{name}"
        );
    }
}

/// A `down` that finds two users one account under the previous rule after an earlier run undid
/// part of the migration (its trigger gone) says so, not that nothing was rolled back.
#[tokio::test]
async fn down_after_one_stopped_half_way_says_so_when_it_refuses() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    assert_eq!(up_to(&orm, IDENTITY_IN_DATABASE).await, 1);
    let mut owner = PgConnection::connect(&db.owner_url()).await.unwrap();
    // What a down cut off after its first step leaves: the trigger gone.
    sqlx::query("DROP TRIGGER trg_users_fill_username_key ON users")
        .execute(&mut owner)
        .await
        .unwrap();
    insert_with_key(&mut conn, r"\s\straße", r"\s\straße").await;
    insert_with_key(&mut conn, r"\s\STRASSE", r"\s\strasse").await;

    let error = migration::roll_back(&orm, 1).await.unwrap_err().to_string();
    assert!(error.contains("cannot roll back"), "{error}");
    assert!(
        error.contains("this run changed nothing (part of the migration was undone before"),
        "{error}"
    );
    assert!(!error.contains("nothing was rolled back"), "{error}");
}

#[tokio::test]
async fn down_refuses_when_the_previous_rule_would_make_two_users_one() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    assert_eq!(up_to(&orm, IDENTITY_IN_DATABASE).await, 1);
    let mut service = connect_as_service(&db).await;
    insert(&mut service, r"\s\straße", HASH).await.unwrap();
    insert(&mut service, r"\s\STRASSE", HASH).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM users ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let schema = schema_snapshot(&mut conn).await;

    let error = migration::roll_back(&orm, 1).await.unwrap_err().to_string();
    assert!(error.contains("cannot roll back"), "{error}");
    assert!(error.contains("nothing was rolled back"), "{error}");
    assert!(
        error.contains(&format!("[{}, {}]", ids[0], ids[1])),
        "{error}"
    );
    assert_eq!(schema_snapshot(&mut conn).await, schema);
    // Its rollback refused before changing anything, and says so; the mark stays until a
    // person accepts that (or `down` finishes).
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::RollingBack
    );
}

#[tokio::test]
async fn a_server_without_icu_fails_with_one_line_and_nothing_changes() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    // As a build without ICU would have it.
    sqlx::query(r#"DROP COLLATION "und-x-icu""#)
        .execute(&mut conn)
        .await
        .unwrap();
    let schema = schema_snapshot(&mut conn).await;
    let output = migration_binary(&["up"], &[("DATABASE_URL", &db.owner_url())]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(r#"has no ICU collation "und-x-icu""#),
        "{stderr}"
    );
    assert_eq!(schema_snapshot(&mut conn).await, schema);
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::Applying
    );
}

/// A reader's open snapshot, which the concurrent index build of a run must wait for.
async fn open_snapshot(db: &TestDatabase) -> PgConnection {
    let mut reader = connect(db).await;
    for sql in ["BEGIN ISOLATION LEVEL REPEATABLE READ", "SELECT 1"] {
        sqlx::query(sql).execute(&mut reader).await.unwrap();
    }
    reader
}

/// Waits until the run's concurrent index build waits for `reader`'s snapshot, has `reader` take
/// ACCESS SHARE on users as any reader does, and terminates the run's session.
async fn cut_off_the_waiting_build(conn: &mut PgConnection, reader: &mut PgConnection) {
    let waiting = "SELECT pid FROM pg_stat_activity \
                   WHERE wait_event = 'virtualxid' AND datname = current_database()";
    let runner = eventually(
        "the build waits for the reader's snapshot",
        Duration::from_secs(20),
        async || {
            let pid = sqlx::query_scalar::<_, i32>(waiting).fetch_optional(&mut *conn);
            pid.await.unwrap()
        },
    )
    .await
    .unwrap();
    let count = "SELECT count(*) FROM users";
    sqlx::query(count).execute(&mut *reader).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(runner)
        .execute(conn)
        .await
        .unwrap();
}

/// Runs `up` until its index build waits for a reader's old snapshot (its first step, with the
/// trigger, committed), has the service write `name` through the trigger, and lets the build
/// give up (`lock_timeout`). Returns the error of `up` and the written row's id.
async fn up_failing_after_a_row_through_the_trigger(
    db: &TestDatabase,
    orm: &DatabaseConnection,
    conn: &mut PgConnection,
    name: &str,
) -> (String, String) {
    let mut reader = open_snapshot(db).await;
    let options = RunOptions {
        lock_timeout: Duration::from_secs(3),
        ..RunOptions::default()
    };
    let run = tokio::spawn({
        let orm = orm.clone();
        async move { migration::apply_pending_with(&orm, options).await }
    });
    let waiting = "SELECT EXISTS (SELECT FROM pg_stat_activity \
                   WHERE wait_event = 'virtualxid' AND datname = current_database())";
    eventually(
        "the build waits for the reader's snapshot",
        Duration::from_secs(20),
        async || {
            let found = sqlx::query_scalar::<_, bool>(waiting).fetch_one(&mut *conn);
            found.await.unwrap().then_some(())
        },
    )
    .await
    .unwrap();
    let written = insert_returning_id(&mut connect_as_service(db).await, name, HASH)
        .await
        .unwrap();
    let error = run.await.unwrap().unwrap_err().to_string();
    sqlx::query("ROLLBACK").execute(&mut reader).await.unwrap();
    assert!(error.contains("lock timeout"), "{error}");
    (error, written)
}

/// A failed run undoes its schema changes, and gives the rows written through its trigger
/// meanwhile their keys by the previous rule: the previous release, which still serves, finds
/// them by its own key and refuses their twins.
#[tokio::test]
async fn a_failed_run_gives_rows_written_meanwhile_the_previous_releases_keys() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    // Another writer's key, by neither rule: undoing leaves it, as it leaves all it did not do.
    let keyed = insert_with_key(&mut conn, r"\s\Bob", "a key of its own").await;
    let previous = schema_snapshot(&mut conn).await;
    let name = r"\s\Straße";
    let (error, _) = up_failing_after_a_row_through_the_trigger(&db, &orm, &mut conn, name).await;
    assert!(!error.contains("undoing"), "{error}");
    assert_eq!(schema_snapshot(&mut conn).await, previous);
    let keys = rows(
        &mut conn,
        &format!("SELECT username_key FROM users WHERE id::text <> '{keyed}'"),
    )
    .await;
    assert_eq!(
        keys,
        [[Some(identity_key(name))]],
        "a key by the new rule (\\s\\straße) stayed"
    );
    let kept = rows(
        &mut conn,
        "SELECT username_key FROM users WHERE username = '\\s\\Bob'",
    );
    assert_eq!(kept.await, [[Some("a key of its own".to_owned())]]);
    let twin = insert_previous_release(&mut conn, r"\s\STRASSE", HASH).await;
    assert!(twin.is_err(), "the previous release took a twin of {name}");
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::Applying
    );
}

/// Where a row written through the trigger is, under the previous rule, one account with a row
/// already there, its key cannot be refilled: the failed run still undoes every change, and
/// names that row, which keeps the new rule's key; the next run (whose rule tells the two apart)
/// finishes.
#[tokio::test]
async fn a_failed_run_names_rows_written_meanwhile_that_the_previous_rule_makes_one() {
    let reference = TestDatabase::migrated().await.unwrap();
    let expected = schema_snapshot(&mut connect(&reference).await).await;
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    let earlier = insert_previous_release(&mut conn, r"\s\strasse", HASH)
        .await
        .unwrap();
    let previous = schema_snapshot(&mut conn).await;
    let name = r"\s\Straße";
    let (error, later) =
        up_failing_after_a_row_through_the_trigger(&db, &orm, &mut conn, name).await;
    for part in [
        "keep the new rule's keys",
        &format!("break its rules: {later};"),
        "run the migration again",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert!(!error.contains(&earlier), "{error}");
    assert!(!error.contains("undoing its changes failed"), "{error}");
    assert_eq!(schema_snapshot(&mut conn).await, previous);
    let key: String = sqlx::query_scalar("SELECT username_key FROM users WHERE id::text = $1")
        .bind(&later)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(key, r"\s\straße");

    assert_eq!(
        migration::apply_pending(&orm).await.unwrap(),
        migration::migrations().len() - position(IDENTITY_IN_DATABASE)
    );
    assert_eq!(schema_snapshot(&mut conn).await, expected);
}

/// Where the key a row written through the trigger needs by the previous rule is another row's
/// already (a key another writer gave, or a user the previous release took since the refill read
/// the table), it is not written: the unique index would stop the undoing half-way. The failed
/// run undoes every change and names the row, which keeps the new rule's key.
#[tokio::test]
async fn a_failed_run_leaves_a_key_another_row_holds_and_undoes_every_change() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    insert_with_key(&mut conn, r"\s\other", r"\s\strasse").await;
    let previous = schema_snapshot(&mut conn).await;
    let name = r"\s\Straße";
    let (error, later) =
        up_failing_after_a_row_through_the_trigger(&db, &orm, &mut conn, name).await;
    assert!(
        error.contains("is another row's, or they were renamed while it ran")
            && error.contains(&format!("needs nothing): {later};")),
        "{error}"
    );
    assert!(!error.contains("one account"), "{error}");
    assert!(!error.contains("undoing its changes failed"), "{error}");
    assert_eq!(schema_snapshot(&mut conn).await, previous);
}

/// The run's session is cut off while the concurrent index build waits for an old snapshot. The
/// clean-up must not go on in a new session, which would hold neither the run's advisory lock
/// nor its `lock_timeout`: its ACCESS EXCLUSIVE would queue behind a reader for good, and every
/// query of the service behind it. The run stops at once, and the next run finishes the job.
#[tokio::test]
async fn a_run_whose_session_is_lost_stops_and_the_next_run_finishes() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    let mut reader = open_snapshot(&db).await;
    let url = db.owner_url();
    let run = std::thread::spawn(move || {
        let variables = [
            ("DATABASE_URL", url.as_str()),
            ("MIGRATION_LOCK_TIMEOUT_MS", "60000"),
        ];
        migration_binary(&["up"], &variables)
    });
    cut_off_the_waiting_build(&mut conn, &mut reader).await;
    eventually("the run stops", Duration::from_secs(30), async || {
        run.is_finished()
    })
    .await
    .expect("the run hangs: its clean-up queued behind the reader in a new session");
    let output = run.join().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("session was lost mid-run"), "{stderr}");
    sqlx::query("ROLLBACK").execute(&mut reader).await.unwrap();
    let again = migration_binary(&["up"], &[("DATABASE_URL", &db.owner_url())]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::Applied
    );
}

/// The same through the library, on a caller's pool of several connections (as the test kit,
/// `just dev`'s templates and `migrate-check` run migrations): the run's own session is never
/// replaced either.
#[tokio::test]
async fn a_library_run_whose_session_is_lost_stops_and_the_next_run_finishes() {
    let (db, orm, mut conn) = database_before(IDENTITY_IN_DATABASE).await;
    let mut reader = open_snapshot(&db).await;
    let options = RunOptions {
        lock_timeout: Duration::from_secs(60),
        force: false,
        ..RunOptions::default()
    };
    let run = tokio::spawn({
        let orm = orm.clone();
        async move { migration::apply_pending_with(&orm, options).await }
    });
    cut_off_the_waiting_build(&mut conn, &mut reader).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run hangs: its clean-up queued behind the reader in a new session");
    // The migration itself fails (its session is gone), not some later step in a new session.
    let error = outcome.unwrap().unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("Migration Error: {IDENTITY_IN_DATABASE}: ")),
        "{error}"
    );
    assert!(error.contains("run the migration again"), "{error}");
    sqlx::query("ROLLBACK").execute(&mut reader).await.unwrap();
    migration::apply_pending(&orm).await.unwrap();
    assert_eq!(
        status(&migration::status(&orm).await.unwrap()),
        MigrationStatus::Applied
    );
}
