//! `m20261205_000004_users_timestamps_in_range`: a plain `INSERT` of a date the service cannot
//! read (an infinity, before 1970, past 9999) is refused; the bounds themselves are stored;
//! existing such dates stop the migration, which changes nothing and names them; `down` drops
//! the check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{HASH, connect_as_service, database_before, refusal, up_fails_changing_nothing};
use counseling_testkit::TestDatabase;
use migration::m20261205_000004_users_timestamps_in_range::{CONSTRAINT, NAME};
use migration::sea_orm::sqlx::{self, PgConnection};

/// The first and the last instant the check lets through.
const FIRST: &str = "1970-01-01 00:00:00+00";
const LAST: &str = "9999-12-31 23:59:59.999999+00";
/// Just outside, and the values a timestamp takes that no date is.
const OUTSIDE: [&str; 5] = [
    "1969-12-31 23:59:59.999999+00",
    "10000-01-01 00:00:00+00",
    "290000-01-01 00:00:00+00",
    "infinity",
    "-infinity",
];

/// A plain `INSERT` giving both dates, as an import may; returns the new row's id.
async fn insert(
    conn: &mut PgConnection,
    username: &str,
    created_at: &str,
    updated_at: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at, updated_at) \
         VALUES ($1, $2, $3::timestamptz, $4::timestamptz) RETURNING id::text",
    )
    .bind(username)
    .bind(HASH)
    .bind(created_at)
    .bind(updated_at)
    .fetch_one(conn)
    .await
}

#[tokio::test]
async fn the_database_refuses_dates_the_service_cannot_read() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut service = connect_as_service(&db).await;
    for (index, date) in OUTSIDE.iter().enumerate() {
        for (column, created_at, updated_at) in
            [("created_at", *date, FIRST), ("updated_at", FIRST, *date)]
        {
            let username = format!(r"\school\{column}{index}");
            let error = insert(&mut service, &username, created_at, updated_at)
                .await
                .expect_err(&format!("{column} {date} was stored"));
            assert_eq!(refusal(&error), ("23514".into(), CONSTRAINT.into()));
        }
    }
    insert(&mut service, r"\school\first", FIRST, FIRST)
        .await
        .unwrap();
    insert(&mut service, r"\school\last", LAST, LAST)
        .await
        .unwrap();
}

#[tokio::test]
async fn existing_dates_outside_the_range_stop_the_migration_naming_them() {
    let (_db, orm, mut conn) = database_before(NAME).await;
    let fine = insert(&mut conn, r"\school\fine", FIRST, LAST)
        .await
        .unwrap();
    let created = insert(&mut conn, r"\school\created", "-infinity", FIRST)
        .await
        .unwrap();
    let updated = insert(&mut conn, r"\school\updated", FIRST, "infinity")
        .await
        .unwrap();
    let all_rows = "SELECT id::text, username, created_at::text, updated_at::text \
                    FROM users ORDER BY id";
    let error = up_fails_changing_nothing(&orm, &mut conn, all_rows).await;
    assert!(
        error.contains(&created) && error.contains(&updated),
        "{error}"
    );
    assert!(!error.contains(&fine), "{error}");
    assert!(error.contains("correct their dates"), "{error}");
    assert!(error.contains("nothing was changed"), "{error}");
}

#[tokio::test]
async fn down_drops_the_check() {
    let write = async |conn: &mut PgConnection| insert(conn, r"\school\a", "infinity", FIRST).await;
    common::down_drops_the_check(NAME, CONSTRAINT, write).await;
}

/// A row committed after the migration looked at the rows, before its check was added, fails the
/// validation: the migration drops its check again and names the row.
#[tokio::test]
async fn a_date_committed_while_up_runs_makes_it_drop_its_check() {
    let write = async |conn: &mut PgConnection| {
        insert(conn, r"\school\late", "infinity", FIRST)
            .await
            .unwrap()
    };
    common::a_late_row_makes_up_drop_its_check(NAME, write).await;
}
