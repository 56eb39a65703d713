//! The second migration, `m20261130_000001_username_identity`: up on an empty and on a populated
//! database, the failure path, down, up again, and the new rules on databases of several locales.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{
    HASH, connect, insert, insert_before_identity, rows, schema_snapshot, sqlstate, strings,
};
use counseling_domain::Username;
use counseling_testkit::{DatabaseLocale, TestDatabase};
use migration::sea_orm::DatabaseConnection;
use migration::sea_orm::sqlx::{self, PgConnection};
use migration::{Migrator, MigratorTrait};

const IDENTITY: &str = "m20261130_000001_username_identity";
/// The migrations after the first one: this one and what followed it.
const AFTER_FIRST: usize = 2;
const BCRYPT_COST_BOUNDS: &str = "m20261130_000002_bcrypt_cost_bounds";

const ALL_COLUMNS: &str = "SELECT id::text, username::text, password_hash::text, is_blocked::text, \
                           created_at::text, updated_at::text FROM users ORDER BY id";

/// A database with only the first migration applied, as production had before this one.
async fn before_identity() -> (TestDatabase, DatabaseConnection, PgConnection) {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    Migrator::up(&orm, Some(1)).await.unwrap();
    let conn = connect(&db).await;
    (db, orm, conn)
}

/// `(username, username_key, updated_at as epoch text)` of every user, by username.
async fn users(conn: &mut PgConnection) -> Vec<Vec<Option<String>>> {
    rows(
        conn,
        "SELECT username::text, username_key, extract(epoch from updated_at)::text \
         FROM users ORDER BY username",
    )
    .await
}

fn domain_key(username: &str) -> String {
    Username::parse(username).unwrap().identity_key().to_owned()
}

#[tokio::test]
async fn up_on_an_empty_database_adds_the_key_and_rules() {
    let (_db, orm, mut conn) = before_identity().await;
    assert_eq!(migration::apply_pending(&orm).await.unwrap(), AFTER_FIRST);
    insert(&mut conn, r"\school\Émile", HASH).await.unwrap();
    assert_eq!(
        insert(&mut conn, r"\SCHOOL\ÉMILE", HASH).await,
        Err("23505".into())
    );
}

#[tokio::test]
async fn up_on_a_populated_database_backfills_every_key_and_keeps_updated_at() {
    let (_db, orm, mut conn) = before_identity().await;
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

    assert_eq!(migration::apply_pending(&orm).await.unwrap(), AFTER_FIRST);

    let after: Vec<(String, String, String, f64)> = sqlx::query_as(
        "SELECT id::text, username::text, username_key, extract(epoch from updated_at)::float8 \
         FROM users",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(after.len(), 12004);
    for (id, username, key, updated_at) in &after {
        assert_eq!(key, &domain_key(username), "{username}");
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
        insert(&mut conn, r"\school\straße", HASH).await,
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
    let (_db, orm, mut conn) = before_identity().await;
    let fine = insert_before_identity(&mut conn, r"\school\bob").await;
    // Distinct under the old lower(username) index, one account under the new key.
    let upper = insert_before_identity(&mut conn, r"\school\ＥＭＩＬＥ").await;
    let lower = insert_before_identity(&mut conn, r"\school\emile").await;
    let sharp = insert_before_identity(&mut conn, r"\school\straße").await;
    let double = insert_before_identity(&mut conn, r"\school\STRASSE").await;
    let decomposed = insert_before_identity(&mut conn, "\\school\\zoe\u{308}").await;
    let invisible = insert_before_identity(&mut conn, "\\school\\ali\u{200b}ce").await;
    let schema = schema_snapshot(&mut conn).await;
    let data = rows(&mut conn, ALL_COLUMNS).await;

    let error = migration::apply_pending(&orm)
        .await
        .unwrap_err()
        .to_string();

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
    assert_eq!(schema_snapshot(&mut conn).await, schema, "schema untouched");
    assert_eq!(rows(&mut conn, ALL_COLUMNS).await, data);
    let status = migration::status(&orm).await.unwrap();
    assert_eq!(
        (status[1].name.as_str(), status[1].applied),
        (IDENTITY, false)
    );

    // Once the rows are fixed, up goes through.
    sqlx::query("DELETE FROM users WHERE id::text = ANY($1)")
        .bind(vec![lower, double, decomposed, invisible])
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(migration::apply_pending(&orm).await.unwrap(), AFTER_FIRST);
}

#[tokio::test]
async fn down_restores_the_previous_schema_exactly_and_up_applies_again() {
    let (_db, orm, mut conn) = before_identity().await;
    let previous = schema_snapshot(&mut conn).await;
    insert_before_identity(&mut conn, r"\school\Émile").await;

    assert_eq!(migration::apply_pending(&orm).await.unwrap(), AFTER_FIRST);
    let identity = schema_snapshot(&mut conn).await;
    assert_ne!(identity, previous);
    let data = rows(
        &mut conn,
        "SELECT id::text, username::text, updated_at::text FROM users",
    )
    .await;
    let epoch = users(&mut conn).await[0][2].clone();

    assert_eq!(
        migration::roll_back(&orm, AFTER_FIRST as u32)
            .await
            .unwrap(),
        vec![BCRYPT_COST_BOUNDS, IDENTITY]
    );
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

    assert_eq!(migration::apply_pending(&orm).await.unwrap(), AFTER_FIRST);
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
async fn the_rules_hold_on_databases_of_every_sample_locale() {
    for locale in DatabaseLocale::samples() {
        let db = TestDatabase::migrated_with_locale(&locale).await.unwrap();
        let mut conn = connect(&db).await;
        for good in [
            r"\school\Émile",
            r"\école\Zoë",
            r"\ｓｃｈｏｏｌ\bob",
            r"\s\KIZ",
            r"\s\kız",
            r"\s\KİZ",
        ] {
            assert_eq!(
                insert(&mut conn, good, HASH).await,
                Ok(()),
                "{good} on {locale}"
            );
        }
        for taken in [
            r"\SCHOOL\ÉMILE",
            r"\school\émile",
            r"\école\ZOË",
            r"\school\BOB",
            r"\s\kiz",
            r"\s\KIZ",
        ] {
            assert_eq!(
                insert(&mut conn, taken, HASH).await,
                Err("23505".into()),
                "{taken} on {locale}"
            );
        }
        insert(&mut conn, r"\s\straße", HASH).await.unwrap();
        assert_eq!(
            insert(&mut conn, r"\s\STRASSE", HASH).await,
            Err("23505".into())
        );
        for bad in [
            "\\school\\e\u{301}mile2",
            "\\school\\ali\u{200b}ce",
            "\\school\\ali\u{202e}ce",
            "\\school\\ali\u{2066}ce",
            "\\school\\ali\u{feff}ce",
            "\\school\\ali\u{ad}ce",
            "\\school\\ali\u{e000}ce",
            "\\school\\ali\u{378}ce",
            "\\school\\ali\u{2028}ce",
            "\\school\\ali\u{2029}ce",
            "\\school\\ali\u{e0041}ce",
            "\\school\\ali\u{10fffd}ce",
        ] {
            assert_eq!(
                insert(&mut conn, bad, HASH).await,
                Err("23514".into()),
                "{bad:?} on {locale}"
            );
        }
    }
}

#[tokio::test]
async fn a_key_that_does_not_fit_is_refused_by_the_check() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    let expanding = format!(r"\d\{}", "\u{fdfa}".repeat(100));
    assert_eq!(
        insert(&mut conn, &expanding, HASH).await,
        Err("23514".into())
    );
    // Without a key at all the row cannot be stored either.
    let missing = sqlx::query("INSERT INTO users (username, password_hash) VALUES ('\\s\\u', $1)")
        .bind(HASH)
        .execute(&mut conn)
        .await
        .map_err(sqlstate);
    assert_eq!(missing.err().as_deref(), Some("23502"));
}
