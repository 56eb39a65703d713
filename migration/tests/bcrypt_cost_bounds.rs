//! The third migration, `m20261130_000002_bcrypt_cost_bounds`: the database accepts exactly the
//! bcrypt costs the domain accepts, refuses to apply over rows outside them, and its down restores
//! the previous check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{
    HASH, connect, database_before, insert, insert_previous_release, position, schema_snapshot,
    up_fails_changing_nothing, up_to,
};
use counseling_domain::PasswordHash;
use counseling_testkit::TestDatabase;

const BCRYPT_COST_BOUNDS: &str = "m20261130_000002_bcrypt_cost_bounds";

/// A hash of `HASH`'s salt and digest with another variant and cost.
fn hash_of(variant: char, cost: u32) -> String {
    format!("$2{variant}${cost:02}${}", &HASH[7..])
}

#[tokio::test]
async fn the_database_stores_exactly_the_costs_the_domain_accepts() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut conn = connect(&db).await;
    let mut stored = Vec::new();
    for variant in ['a', 'b', 'y'] {
        for cost in 0..=99 {
            let hash = hash_of(variant, cost);
            let domain = PasswordHash::parse(hash.clone()).is_ok();
            let username = format!(r"\school\{variant}{cost}");
            let database = insert(&mut conn, &username, &hash).await;
            assert!(
                database == Ok(()) || database == Err("23514".into()),
                "{hash}: {database:?}"
            );
            assert_eq!(database.is_ok(), domain, "{hash}");
            if domain {
                stored.push(cost);
            }
        }
    }
    assert_eq!(stored, [12, 13, 14, 15].repeat(3));
}

#[tokio::test]
async fn up_over_rows_outside_the_bounds_fails_naming_them_and_changes_nothing() {
    let (_db, orm, mut conn) = database_before(BCRYPT_COST_BOUNDS).await;
    insert_previous_release(&mut conn, r"\school\ok", &hash_of('b', 12))
        .await
        .unwrap();
    let mut offenders = Vec::new();
    for (name, cost) in [("weak", 4), ("slow", 31)] {
        let username = format!(r"\school\{name}");
        let id = insert_previous_release(&mut conn, &username, &hash_of('b', cost))
            .await
            .unwrap();
        offenders.push(id);
    }
    let all_rows = "SELECT id::text, username, password_hash FROM users ORDER BY id";

    let error = up_fails_changing_nothing(&orm, &mut conn, all_rows).await;
    assert!(
        error.contains("2 users have a password hash of a bcrypt cost outside 12 to 15"),
        "{error}"
    );
    for id in &offenders {
        assert!(error.contains(id.as_str()), "{error}");
    }
    assert!(!migration::status(&orm).await.unwrap()[position(BCRYPT_COST_BOUNDS)].is_applied());
}

#[tokio::test]
async fn down_restores_the_previous_check_exactly() {
    let (_db, orm, mut conn) = database_before(BCRYPT_COST_BOUNDS).await;
    let previous = schema_snapshot(&mut conn).await;
    assert_eq!(up_to(&orm, BCRYPT_COST_BOUNDS).await, 1);
    assert_ne!(schema_snapshot(&mut conn).await, previous);
    assert_eq!(
        insert_previous_release(&mut conn, r"\school\slow", &hash_of('b', 31))
            .await
            .map(|_| ()),
        Err("23514".into())
    );

    assert_eq!(
        migration::roll_back(&orm, 1).await.unwrap(),
        [BCRYPT_COST_BOUNDS]
    );
    assert_eq!(schema_snapshot(&mut conn).await, previous);
    insert_previous_release(&mut conn, r"\school\slow", &hash_of('b', 31))
        .await
        .unwrap();
}
