//! The second migration, `m20261130_000001_username_identity`: up on an empty and on a populated
//! database, the failure path, down, up again. (Its rule was replaced by the database's own in
//! `m20261203_000001_username_identity_in_database`; see `username_identity_in_database.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{
    HASH, database_before, insert, insert_before_identity, insert_previous_release,
    newest_first_from, position, rows, schema_snapshot, strings, up_fails_changing_nothing, up_to,
};
use migration::m20261130_000001_username_identity::identity_key;
use migration::sea_orm::sqlx::{self, PgConnection};

const IDENTITY: &str = "m20261130_000001_username_identity";

/// Inserts as the releases between this migration and the next identity migration did.
async fn insert_with_key(conn: &mut PgConnection, username: &str) -> Result<(), String> {
    insert_previous_release(conn, username, HASH)
        .await
        .map(|_| ())
}

const ALL_COLUMNS: &str = "SELECT id::text, username::text, password_hash::text, is_blocked::text, \
                           created_at::text, updated_at::text FROM users ORDER BY id";

/// `(username, username_key, updated_at as epoch text)` of every user, by username.
async fn users(conn: &mut PgConnection) -> Vec<Vec<Option<String>>> {
    rows(
        conn,
        "SELECT username::text, username_key, extract(epoch from updated_at)::text \
         FROM users ORDER BY username",
    )
    .await
}

#[tokio::test]
async fn up_on_an_empty_database_adds_the_key_and_rules() {
    let (_db, orm, mut conn) = database_before(IDENTITY).await;
    assert_eq!(up_to(&orm, IDENTITY).await, 1);
    insert_with_key(&mut conn, r"\school\Émile").await.unwrap();
    assert_eq!(
        insert_with_key(&mut conn, r"\SCHOOL\ÉMILE").await,
        Err("23505".into())
    );
}

#[tokio::test]
async fn up_on_a_populated_database_backfills_every_key_and_keeps_updated_at() {
    let (_db, orm, mut conn) = database_before(IDENTITY).await;
    for name in [
        r"\school\ÉMILE",
        r"\school\STRASSE",
        r"\ｓｃｈｏｏｌ\KIZ",
        r"\school\kız",
    ] {
        insert_before_identity(&mut conn, name).await;
    }
    // More rows than one backfill batch.
    sqlx::query(
        r"INSERT INTO users (username, password_hash)
          SELECT format('\dom%s\User%s', i % 7, i), $1 FROM generate_series(1, 12000) AS i",
    )
    .bind(HASH)
    .execute(&mut conn)
    .await
    .unwrap();
    let before: Vec<(String, f64)> =
        sqlx::query_as("SELECT id::text, extract(epoch from updated_at)::float8 FROM users")
            .fetch_all(&mut conn)
            .await
            .unwrap();

    assert_eq!(up_to(&orm, IDENTITY).await, 1);

    let after: Vec<(String, String, String, f64)> = sqlx::query_as(
        "SELECT id::text, username::text, username_key, extract(epoch from updated_at)::float8 \
         FROM users",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(after.len(), 12004);
    for (id, username, key, updated_at) in &after {
        assert_eq!(key, &identity_key(username), "{username}");
        let (_, old) = before.iter().find(|(old_id, _)| old_id == id).unwrap();
        assert_eq!(updated_at, old, "the backfill is not an edit of {username}");
    }
    let keys = rows(
        &mut conn,
        r"SELECT username_key FROM users WHERE username NOT LIKE '\\dom%' ORDER BY username_key",
    )
    .await;
    assert_eq!(
        keys,
        strings(&[
            &[Some(r"\school\kiz")],
            &[Some(r"\school\kız")],
            &[Some(r"\school\strasse")],
            &[Some(r"\school\émile")],
        ])
    );
    // The index now enforces the new identity.
    assert_eq!(
        insert_with_key(&mut conn, r"\school\straße").await,
        Err("23505".into())
    );
    // The trigger is back on.
    let enabled: String = sqlx::query_scalar(
        "SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'trg_users_set_updated_at'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(enabled, "O");
}

#[tokio::test]
async fn up_fails_listing_the_offending_ids_and_changes_nothing() {
    let (_db, orm, mut conn) = database_before(IDENTITY).await;
    let fine = insert_before_identity(&mut conn, r"\school\bob").await;
    // Distinct under the old lower(username) index, one account under the new key.
    let upper = insert_before_identity(&mut conn, r"\school\ＥＭＩＬＥ").await;
    let lower = insert_before_identity(&mut conn, r"\school\emile").await;
    let sharp = insert_before_identity(&mut conn, r"\school\straße").await;
    let double = insert_before_identity(&mut conn, r"\school\STRASSE").await;
    let decomposed = insert_before_identity(&mut conn, "\\school\\zoe\u{308}").await;
    let invisible = insert_before_identity(&mut conn, "\\school\\ali\u{200b}ce").await;

    let error = up_fails_changing_nothing(&orm, &mut conn, ALL_COLUMNS).await;

    for id in [&upper, &lower, &sharp, &double, &decomposed, &invisible] {
        assert!(error.contains(id.as_str()), "{id} missing from: {error}");
    }
    assert!(!error.contains(&fine), "{error}");
    assert!(
        error.contains(&format!("not in Unicode NFC: {decomposed}")),
        "{error}"
    );
    assert!(error.contains(&format!("Zp: {invisible}")), "{error}");
    assert!(!error.contains("emile"), "ids, not usernames: {error}");
    let status = migration::status(&orm).await.unwrap();
    let state = &status[position(IDENTITY)];
    assert_eq!((state.name.as_str(), state.is_applied()), (IDENTITY, false));

    // Once the rows are fixed, up goes through.
    sqlx::query("DELETE FROM users WHERE id::text = ANY($1)")
        .bind(vec![lower, double, decomposed, invisible])
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        migration::apply_pending(&orm).await.unwrap(),
        migration::migrations().len() - position(IDENTITY)
    );
}

#[tokio::test]
async fn down_restores_the_previous_schema_exactly_and_up_applies_again() {
    let (_db, orm, mut conn) = database_before(IDENTITY).await;
    let previous = schema_snapshot(&mut conn).await;
    insert_before_identity(&mut conn, r"\school\Émile").await;

    assert_eq!(up_to(&orm, IDENTITY).await, 1);
    let identity = schema_snapshot(&mut conn).await;
    assert_ne!(identity, previous);
    let data = rows(
        &mut conn,
        "SELECT id::text, username::text, updated_at::text FROM users",
    )
    .await;
    let epoch = users(&mut conn).await[0][2].clone();

    assert_eq!(migration::roll_back(&orm, 1).await.unwrap(), [IDENTITY]);
    assert_eq!(schema_snapshot(&mut conn).await, previous);
    assert_eq!(
        rows(
            &mut conn,
            "SELECT id::text, username::text, updated_at::text FROM users"
        )
        .await,
        data
    );
    // The old rule is back: lower() under this database's locale, no key column.
    insert_before_identity(&mut conn, "\\school\\e\u{301}mile").await;
    sqlx::query("DELETE FROM users WHERE username = $1")
        .bind("\\school\\e\u{301}mile")
        .execute(&mut conn)
        .await
        .unwrap();

    assert_eq!(up_to(&orm, IDENTITY).await, 1);
    assert_eq!(schema_snapshot(&mut conn).await, identity);
    assert_eq!(
        users(&mut conn).await,
        strings(&[&[
            Some(r"\school\Émile"),
            Some(r"\school\émile"),
            epoch.as_deref()
        ]])
    );
}

#[tokio::test]
async fn down_of_everything_after_it_then_of_it_restores_the_schema_before_it() {
    let (_db, orm, mut conn) = database_before(IDENTITY).await;
    let previous = schema_snapshot(&mut conn).await;
    insert_before_identity(&mut conn, r"\school\Émile").await;
    migration::apply_pending(&orm).await.unwrap();
    let newest_first = newest_first_from(IDENTITY);
    assert_eq!(
        migration::roll_back(&orm, newest_first.len() as u32)
            .await
            .unwrap(),
        newest_first
    );
    assert_eq!(schema_snapshot(&mut conn).await, previous);
    // The rule before it is back: lower() under this database's locale, no key column.
    insert(&mut conn, r"\school\kiz", HASH).await.unwrap();
    assert_eq!(
        insert(&mut conn, r"\SCHOOL\KIZ", HASH).await,
        Err("23505".into())
    );
}
