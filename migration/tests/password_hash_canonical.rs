//! `m20261205_000003_password_hash_canonical`: a plain `INSERT` of a bcrypt hash that no password
//! matches (unused bits set) is refused, exactly where the domain refuses it; existing such hashes
//! stop the migration, which changes nothing and names them; `down` drops the check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{
    HASH, connect_as_service, database_before, insert_returning_id as insert, refusal,
    up_fails_changing_nothing,
};
use counseling_domain::{PasswordHash, PasswordHashError};
use counseling_testkit::TestDatabase;
use migration::m20261205_000003_password_hash_canonical::{CONSTRAINT, NAME};
use migration::sea_orm::sqlx::PgConnection;

const ALPHABET: &str = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Where the salt's and the digest's last characters are.
const LAST_OF_SALT_AND_DIGEST: [usize; 2] = [28, 59];

/// `HASH` (a real cost-12 hash) with its character at `position` replaced by `character`.
fn with_character(position: usize, character: char) -> String {
    let mut hash = HASH.to_owned();
    hash.replace_range(position..=position, &character.to_string());
    hash
}

#[tokio::test]
async fn the_database_refuses_exactly_the_hashes_the_domain_refuses() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut service = connect_as_service(&db).await;
    let mut stored = String::new();
    for position in LAST_OF_SALT_AND_DIGEST {
        for (index, character) in ALPHABET.chars().enumerate() {
            let hash = with_character(position, character);
            let domain = PasswordHash::parse(hash.clone());
            let username = format!(r"\school\p{position}c{index}");
            match insert(&mut service, &username, &hash).await {
                Ok(_) => {
                    assert!(domain.is_ok(), "{hash}: {domain:?}");
                    stored.push(character);
                }
                Err(error) => {
                    assert_eq!(domain, Err(PasswordHashError::NotCanonical), "{hash}");
                    assert_eq!(refusal(&error), ("23514".into(), CONSTRAINT.into()));
                }
            }
        }
        stored.push(' ');
    }
    assert_eq!(stored, ".Oeu .CGKOSWaeimquy26 ");
    // A hash of another shape is still the format check's to name.
    let error = insert(&mut service, r"\school\shape", &with_character(59, '!'))
        .await
        .unwrap_err();
    assert_eq!(refusal(&error).1, "ck_users_password_hash_format");
}

#[tokio::test]
async fn existing_hashes_no_password_matches_stop_the_migration_naming_them() {
    let (_db, orm, mut conn) = database_before(NAME).await;
    let fine = insert(&mut conn, r"\school\fine", HASH).await.unwrap();
    let salt = insert(&mut conn, r"\school\salt", &with_character(28, 'v'))
        .await
        .unwrap();
    let digest = insert(&mut conn, r"\school\digest", &with_character(59, '3'))
        .await
        .unwrap();
    let all_rows = "SELECT id::text, username, password_hash FROM users ORDER BY id";
    let error = up_fails_changing_nothing(&orm, &mut conn, all_rows).await;
    assert!(error.contains(&salt) && error.contains(&digest), "{error}");
    assert!(!error.contains(&fine), "{error}");
    assert!(error.contains("reset their passwords"), "{error}");
    assert!(error.contains("nothing was changed"), "{error}");
}

#[tokio::test]
async fn down_drops_the_check() {
    let write =
        async |conn: &mut PgConnection| insert(conn, r"\school\a", &with_character(28, 'v')).await;
    common::down_drops_the_check(NAME, CONSTRAINT, write).await;
}

/// A row committed after the migration looked at the rows, before its check was added, fails the
/// validation: the migration drops its check again and names the row.
#[tokio::test]
async fn a_hash_committed_while_up_runs_makes_it_drop_its_check() {
    let write = async |conn: &mut PgConnection| {
        let hash = with_character(59, '3');
        insert(conn, r"\school\late", &hash).await.unwrap()
    };
    common::a_late_row_makes_up_drop_its_check(NAME, write).await;
}
