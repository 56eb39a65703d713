//! One account per username identity, the same on databases of every sample locale, and lookups
//! by identity served by the unique index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{HASH, new_user, repository, repository_on};
use counseling_domain::{CreateUserError, UserRepository, Username};
use counseling_persistence::PgUserRepository;
use counseling_persistence::entity::users::{Column, Entity as Users};
use counseling_testkit::{DatabaseLocale, TestDatabase};
use sea_orm::sqlx::{self, Connection, PgConnection};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait};

/// What the repository answers, step by step, for the issue's cases. Each line names the step and
/// its outcome, with users by the name they were created under, so transcripts can be compared.
async fn identity_transcript(users: &PgUserRepository) -> Vec<String> {
    let mut transcript = Vec::new();
    let mut created = Vec::new();
    let creations = [
        r"\school\ÉMILE",
        r"\school\émile",
        "\\school\\e\u{301}mile",
        r"\school\straße",
        r"\school\STRASSE",
        r"\school\KIZ",
        r"\school\kız",
        r"\school\KİZ",
        r"\school\kiz",
        r"\ｓｃｈｏｏｌ\ａｌｉｃｅ",
        r"\school\Alice",
        "\\e\u{301}cole\\Zoe\u{308}",
    ];
    for name in creations {
        let outcome = match users.create(new_user(name)).await {
            Ok(user) => {
                created.push((user.id, name));
                format!("created as {}", user.username)
            }
            Err(CreateUserError::UsernameTaken) => "taken".to_owned(),
            Err(other) => panic!("create {name}: {other}"),
        };
        transcript.push(format!("create {name}: {outcome}"));
    }
    let lookups = [
        r"\SCHOOL\émile",
        "\\school\\E\u{301}MILE",
        r"\school\Strasse",
        r"\school\kiz",
        r"\school\KIZ",
        r"\school\kız",
        "\\school\\ki\u{307}z",
        r"\school\alice",
        r"\ÉCOLE\ZOË",
        r"\school\nobody",
    ];
    for name in lookups {
        let found = users
            .find_by_username(&Username::parse(name).unwrap())
            .await
            .unwrap()
            .map(|user| {
                created
                    .iter()
                    .find(|(id, _)| *id == user.id)
                    .map(|(_, created_as)| *created_as)
                    .unwrap()
            });
        transcript.push(format!("find {name}: {}", found.unwrap_or("nobody")));
    }
    transcript
}

fn expected_transcript() -> Vec<String> {
    [
        r"create \school\ÉMILE: created as \school\ÉMILE",
        r"create \school\émile: taken",
        "create \\school\\e\u{301}mile: taken",
        r"create \school\straße: created as \school\straße",
        r"create \school\STRASSE: taken",
        r"create \school\KIZ: created as \school\KIZ",
        r"create \school\kız: created as \school\kız",
        r"create \school\KİZ: created as \school\KİZ",
        r"create \school\kiz: taken",
        r"create \ｓｃｈｏｏｌ\ａｌｉｃｅ: created as \ｓｃｈｏｏｌ\ａｌｉｃｅ",
        r"create \school\Alice: taken",
        // Typed decomposed, stored composed.
        "create \\e\u{301}cole\\Zoe\u{308}: created as \\école\\Zoë",
        r"find \SCHOOL\émile: \school\ÉMILE",
        "find \\school\\E\u{301}MILE: \\school\\ÉMILE",
        r"find \school\Strasse: \school\straße",
        r"find \school\kiz: \school\KIZ",
        r"find \school\KIZ: \school\KIZ",
        r"find \school\kız: \school\kız",
        "find \\school\\ki\u{307}z: \\school\\KİZ",
        r"find \school\alice: \ｓｃｈｏｏｌ\ａｌｉｃｅ",
        "find \\ÉCOLE\\ZOË: \\e\u{301}cole\\Zoe\u{308}",
        r"find \school\nobody: nobody",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn identity_is_the_same_on_databases_of_every_sample_locale() {
    for locale in DatabaseLocale::samples() {
        let test_db = TestDatabase::migrated_with_locale(&locale).await.unwrap();
        let (_test_db, database, users) = repository_on(test_db);
        assert_eq!(
            identity_transcript(&users).await,
            expected_transcript(),
            "on a database with {locale}"
        );
        database.close(Duration::from_secs(5)).await;
    }
}

/// Loads `count` users straight into the table. The names are lower-case ASCII, whose identity
/// key is the name itself.
async fn load_users(test_db: &TestDatabase, count: i64) {
    let mut conn = PgConnection::connect_with(&test_db.options())
        .await
        .unwrap();
    sqlx::query(
        r"INSERT INTO users (username, password_hash, username_key)
          SELECT format('\dom%s\user%s', i % 10, i), $1, format('\dom%s\user%s', i % 10, i)
          FROM generate_series(1, $2::bigint) AS i",
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
    // The statement find_by_username sends (same builder expression), planned with real values.
    let key = Username::parse(r"\DOM4\User1234")
        .unwrap()
        .identity_key()
        .to_owned();
    let sql = Users::find()
        .filter(Column::UsernameKey.eq(key))
        .build(DbBackend::Postgres)
        .to_string();
    let plan: Vec<String> = test_db
        .connect()
        .await
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    assert!(
        plan[0].starts_with("Index Scan using idx_users_username on users"),
        "{plan:#?}"
    );
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
    let deadline = Instant::now() + Duration::from_secs(10);
    let (index_scans, table_scans) = loop {
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT i.idx_scan, t.seq_scan FROM pg_stat_user_indexes i \
             JOIN pg_stat_user_tables t USING (relid) \
             WHERE i.indexrelname = 'idx_users_username'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if counts.0 >= 20 || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((index_scans, table_scans), (20, 0));
}
