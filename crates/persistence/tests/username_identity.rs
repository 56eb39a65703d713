//! One account per username identity, decided by the database, with the same answers through
//! the repository and through plain SQL as the service's role, on databases of every sample
//! locale; and lookups by identity served by the unique index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{HASH, repository, repository_on};
use counseling_domain::{CreateUserError, NewUser, PasswordHash, UserRepository, Username};
use counseling_persistence::PgUserRepository;
use counseling_testkit::fixtures::eventually;
use counseling_testkit::{DatabaseLocale, TestDatabase};
use sea_orm::sqlx::{self, Connection, PgConnection};

/// Names to create, in order (each in NFC, as a careful writer sends it), and spellings to look
/// up afterwards: the decisions of docs/migrations.md's "Username identity", each of them.
const CREATIONS: &[&str] = &[
    r"\school\ÉMILE",
    r"\school\émile",
    // ß is kept by lower case: two accounts (RFC 8265's UsernameCaseMapped does the same).
    r"\school\straße",
    r"\school\STRASSE",
    r"\school\STRAẞE",
    // I is i in every locale; dotted İ and dotless ı are letters of their own.
    r"\school\KIZ",
    r"\school\kız",
    r"\school\KİZ",
    r"\school\kiz",
    // Capital sigma lowers to final ς at the end of a word (ICU's context-sensitive lower case).
    r"\school\ΣΊΣΥΦΟΣ",
    r"\school\σίσυφος",
    r"\school\σίσυφοσ",
    // Width and compatibility forms fold (NFKC): fullwidth letters, ligatures.
    r"\ｓｃｈｏｏｌ\ａｌｉｃｅ",
    r"\school\Alice",
    r"\school\ﬁnn",
    r"\school\FINN",
    r"\école\Zoë",
    // Refused: a character that stands for a backslash, white space at a part's end.
    r"\a\b＼c",
    r"\school\carol ",
];

const LOOKUPS: &[&str] = &[
    r"\SCHOOL\émile",
    "\\school\\E\u{301}MILE",
    r"\school\Strasse",
    r"\school\strasse",
    r"\school\kiz",
    r"\school\kız",
    "\\school\\ki\u{307}z",
    r"\SCHOOL\Σίσυφος",
    r"\school\alice",
    r"\SCHOOL\fInN",
    "\\E\u{301}COLE\\ZOE\u{308}",
    r"\school\nobody",
];

fn expected_transcript() -> Vec<String> {
    [
        r"create \school\ÉMILE: created",
        r"create \school\émile: taken",
        r"create \school\straße: created",
        r"create \school\STRASSE: created",
        r"create \school\STRAẞE: taken",
        r"create \school\KIZ: created",
        r"create \school\kız: created",
        r"create \school\KİZ: created",
        r"create \school\kiz: taken",
        r"create \school\ΣΊΣΥΦΟΣ: created",
        r"create \school\σίσυφος: taken",
        r"create \school\σίσυφοσ: created",
        r"create \ｓｃｈｏｏｌ\ａｌｉｃｅ: created",
        r"create \school\Alice: taken",
        r"create \school\ﬁnn: created",
        r"create \school\FINN: taken",
        r"create \école\Zoë: created",
        r"create \a\b＼c: refused",
        r"create \school\carol : refused",
        r"find \SCHOOL\émile: \school\ÉMILE",
        "find \\school\\E\u{301}MILE: \\school\\ÉMILE",
        r"find \school\Strasse: \school\STRASSE",
        r"find \school\strasse: \school\STRASSE",
        r"find \school\kiz: \school\KIZ",
        r"find \school\kız: \school\kız",
        "find \\school\\ki\u{307}z: \\school\\KİZ",
        r"find \SCHOOL\Σίσυφος: \school\ΣΊΣΥΦΟΣ",
        r"find \school\alice: \ｓｃｈｏｏｌ\ａｌｉｃｅ",
        r"find \SCHOOL\fInN: \school\ﬁnn",
        "find \\E\u{301}COLE\\ZOE\u{308}: \\école\\Zoë",
        r"find \school\nobody: nobody",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// The transcript through the repository.
async fn repository_transcript(users: &PgUserRepository) -> Vec<String> {
    let mut transcript = Vec::new();
    for name in CREATIONS {
        let outcome = match Username::parse(*name) {
            Err(_) => "refused".to_owned(),
            Ok(username) => {
                let new_user = NewUser {
                    username,
                    password_hash: PasswordHash::parse(HASH).unwrap(),
                };
                match users.create(new_user).await {
                    Ok(_) => "created".to_owned(),
                    Err(CreateUserError::UsernameTaken) => "taken".to_owned(),
                    Err(CreateUserError::Rejected { .. }) => "refused".to_owned(),
                    Err(other) => panic!("create {name}: {other}"),
                }
            }
        };
        transcript.push(format!("create {name}: {outcome}"));
    }
    for name in LOOKUPS {
        let found = users
            .find_by_username(&Username::parse(*name).unwrap())
            .await
            .unwrap();
        transcript.push(format!(
            "find {name}: {}",
            found.map_or("nobody".to_owned(), |user| user.username.into_string())
        ));
    }
    transcript
}

/// The same through plain SQL, as another client of the table writes and reads it.
async fn plain_sql_transcript(conn: &mut PgConnection) -> Vec<String> {
    let mut transcript = Vec::new();
    for name in CREATIONS {
        let outcome =
            match sqlx::query("INSERT INTO users (username, password_hash) VALUES ($1, $2)")
                .bind(name)
                .bind(HASH)
                .execute(&mut *conn)
                .await
            {
                Ok(_) => "created".to_owned(),
                Err(error) => match error.as_database_error().and_then(|e| e.code()).as_deref() {
                    Some("23505") => "taken".to_owned(),
                    Some("23514") => "refused".to_owned(),
                    _ => panic!("create {name}: {error}"),
                },
            };
        transcript.push(format!("create {name}: {outcome}"));
    }
    for name in LOOKUPS {
        let found: Option<String> = sqlx::query_scalar(
            r#"SELECT username::text FROM users
               WHERE username_identity(username) COLLATE "C" = username_identity($1)"#,
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .unwrap();
        transcript.push(format!(
            "find {name}: {}",
            found.unwrap_or_else(|| "nobody".to_owned())
        ));
    }
    transcript
}

#[tokio::test]
async fn the_repository_and_plain_sql_get_the_same_answers_on_every_sample_locale() {
    for locale in DatabaseLocale::samples() {
        let through_repository = TestDatabase::migrated_with_locale(&locale).await.unwrap();
        let (_test_db, database, users) = repository_on(through_repository);
        assert_eq!(
            repository_transcript(&users).await,
            expected_transcript(),
            "through the repository, on a database with {locale}"
        );
        database.close(Duration::from_secs(5)).await;

        let through_sql = TestDatabase::migrated_with_locale(&locale).await.unwrap();
        let mut conn = PgConnection::connect(&through_sql.url()).await.unwrap();
        assert_eq!(
            plain_sql_transcript(&mut conn).await,
            expected_transcript(),
            "through plain SQL as the service's role, on a database with {locale}"
        );
    }
}

/// Loads `count` users straight into the table, as another client would.
async fn load_users(test_db: &TestDatabase, count: i64) {
    let mut conn = PgConnection::connect_with(&test_db.options())
        .await
        .unwrap();
    sqlx::query(
        r"INSERT INTO users (username, password_hash)
          SELECT format('\dom%s\user%s', i % 10, i), $1 FROM generate_series(1, $2::bigint) AS i",
    )
    .bind(HASH)
    .bind(count)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE users")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn the_lookup_query_is_planned_as_a_scan_of_the_unique_index() {
    let (test_db, _database, _users) = repository().await;
    load_users(&test_db, 5_000).await;
    // The statement find_by_username sends, planned as a prepared statement is at first (with
    // the parameters' values) and as it may be later (generic, without them).
    let sql = PgUserRepository::find_by_username_sql();
    let mut conn = PgConnection::connect_with(&test_db.options())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE lookup(text, bigint) AS {sql}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut plan: Vec<String> = Vec::new();
    for setting in ["auto", "force_generic_plan"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET plan_cache_mode = {setting}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let lines: Vec<String> = sqlx::query_scalar(
            r"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE lookup('\DOM4\User1234', 1)",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(
            lines[1]
                .trim_start()
                .starts_with("->  Index Scan using idx_users_username_identity on users"),
            "{setting}: {lines:#?}"
        );
        plan = lines;
    }
    assert!(
        plan.iter().any(|line| line.contains("actual rows=1")),
        "{plan:#?}"
    );
}

#[tokio::test]
async fn find_by_username_reads_through_the_index_not_the_table() {
    let (test_db, database, users) = repository().await;
    load_users(&test_db, 5_000).await;
    for i in 1..=20 {
        let name = Username::parse(format!(r"\DOM{}\User{i}", i % 10)).unwrap();
        assert!(users.find_by_username(&name).await.unwrap().is_some());
    }
    // A backend reports its statistics when it exits: close the pool, then wait for them.
    database.close(Duration::from_secs(5)).await;
    let mut conn = PgConnection::connect_with(&test_db.options())
        .await
        .unwrap();
    let sql = "SELECT i.idx_scan, t.seq_scan FROM pg_stat_user_indexes i \
               JOIN pg_stat_user_tables t USING (relid) \
               WHERE i.indexrelname = 'idx_users_username_identity'";
    let counts = async || -> Option<(i64, i64)> {
        let counts: (i64, i64) = sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap();
        (counts.0 >= 20).then_some(counts)
    };
    let reported = eventually("20 index scans reported", Duration::from_secs(10), counts).await;
    let (index_scans, table_scans) = reported.unwrap();
    assert_eq!((index_scans, table_scans), (20, 0));
}

/// `\school\straße` as the previous release wrote it: its key folds ß to ss, so the key is
/// `\school\strasse` while the database's identity keeps the ß.
async fn insert_as_the_previous_release(test_db: &TestDatabase) {
    let mut conn = PgConnection::connect_with(&test_db.options())
        .await
        .unwrap();
    sqlx::query(
        r"INSERT INTO users (username, password_hash, username_key)
          VALUES ('\school\straße', $1, '\school\strasse')",
    )
    .bind(HASH)
    .execute(&mut conn)
    .await
    .unwrap();
}

/// While the previous release's key and index still exist (expand phase), a twin can collide in
/// either unique index: each is reported as taken.
#[tokio::test]
async fn a_twin_is_taken_whichever_unique_index_finds_it() {
    let (test_db, _database, users) = repository().await;
    insert_as_the_previous_release(&test_db).await;
    let create = |name: &str| {
        let new_user = NewUser {
            username: Username::parse(name).unwrap(),
            password_hash: PasswordHash::parse(HASH).unwrap(),
        };
        users.create(new_user)
    };
    // Only the identity index knows these two are one account (the key written is \school\straße).
    assert_eq!(
        create(r"\school\Straße").await.unwrap_err(),
        CreateUserError::UsernameTaken
    );
    // Only the previous release's index sees this one (its identity is \school\strasse).
    assert_eq!(
        create(r"\school\STRASSE").await.unwrap_err(),
        CreateUserError::UsernameTaken
    );
}

/// A name the domain accepts but the database refuses (its identity would not fit an index
/// entry) comes back as the rule the database named, not as an unexpected failure.
#[tokio::test]
async fn a_name_only_the_database_refuses_is_rejected_naming_its_rule() {
    let (_test_db, _database, users) = repository().await;
    let expanding = format!(r"\d\{}", "\u{fdfa}".repeat(100));
    assert_eq!(
        users
            .create(common::new_user(&expanding))
            .await
            .unwrap_err(),
        CreateUserError::Rejected {
            rule: "ck_users_username_identity_length".into()
        }
    );
}

/// `REINDEX … CONCURRENTLY` renames the old index `…_ccold` and keeps checking it, first, until
/// every session that held a lock on the table when it swapped has ended: a twin is still
/// taken, not a rejection naming `idx_users_username_identity_ccold`.
#[tokio::test]
async fn a_twin_is_taken_while_the_identity_index_is_rebuilt() {
    let (test_db, _database, users) = repository().await;
    // A twin only the identity index sees.
    insert_as_the_previous_release(&test_db).await;
    // A reader idle in its transaction holds its lock but no snapshot: the rebuild stops only
    // at its last waits, after the swap.
    let mut reader = PgConnection::connect_with(&test_db.options())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; SELECT 1 FROM users LIMIT 1")
        .execute(&mut reader)
        .await
        .unwrap();
    let owner_url = test_db.owner_url();
    let rebuild = tokio::spawn(async move {
        let mut owner = PgConnection::connect(&owner_url).await.unwrap();
        sqlx::raw_sql("REINDEX INDEX CONCURRENTLY idx_users_username_identity")
            .execute(&mut owner)
            .await
    });
    let mut observer = PgConnection::connect_with(&test_db.options())
        .await
        .unwrap();
    eventually("the swap", Duration::from_secs(10), async || {
        let renamed: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM pg_class WHERE relname = 'idx_users_username_identity_ccold'",
        )
        .fetch_optional(&mut observer)
        .await
        .unwrap();
        renamed
    })
    .await
    .unwrap();
    assert_eq!(
        users
            .create(common::new_user(r"\school\Straße"))
            .await
            .unwrap_err(),
        CreateUserError::UsernameTaken
    );
    sqlx::raw_sql("COMMIT").execute(&mut reader).await.unwrap();
    rebuild.await.unwrap().unwrap();
}
