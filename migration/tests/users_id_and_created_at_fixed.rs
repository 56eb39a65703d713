//! `m20261205_000002_users_id_and_created_at_fixed`: no client changes a user's id or
//! created_at; every other column stays writable; `down` lifts the rule.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{HASH, connect_as_service, database_before, insert, refusal, up_to};
use migration::sea_orm::sqlx::{self, PgConnection};

const NAME: &str = "m20261205_000002_users_id_and_created_at_fixed";

async fn update(conn: &mut PgConnection, set: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE users SET {set}")))
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
}

#[tokio::test]
async fn an_update_of_id_or_created_at_is_refused_and_other_columns_stay_writable() {
    let (db, orm, _) = database_before(NAME).await;
    up_to(&orm, NAME).await;
    let mut service = connect_as_service(&db).await;
    insert(&mut service, r"\school\alice", HASH).await.unwrap();
    for (set, rule) in [
        ("id = gen_random_uuid()", "users_id_fixed"),
        ("created_at = '1999-01-01'", "users_created_at_fixed"),
        ("created_at = NULL", "users_created_at_fixed"),
    ] {
        let error = update(&mut service, set).await.unwrap_err();
        assert_eq!(
            refusal(&error),
            ("23514".to_owned(), rule.to_owned()),
            "{set}"
        );
    }
    // The same values (a write of the whole row), and other columns, go through.
    assert_eq!(
        update(
            &mut service,
            "id = id, created_at = created_at, is_blocked = true"
        )
        .await
        .unwrap(),
        1
    );
}

#[tokio::test]
async fn down_lifts_the_rule() {
    let (db, orm, _) = database_before(NAME).await;
    up_to(&orm, NAME).await;
    assert_eq!(migration::roll_back(&orm, 1).await.unwrap(), [NAME]);
    let mut service = connect_as_service(&db).await;
    insert(&mut service, r"\school\alice", HASH).await.unwrap();
    assert_eq!(
        update(&mut service, "id = gen_random_uuid()")
            .await
            .unwrap(),
        1
    );
}
