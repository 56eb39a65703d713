//! `m20261205_000005_username_unicode_14`: a plain `INSERT` of a name with a character added to
//! Unicode after 14.0 (the tables PostgreSQL 15 normalizes with) is refused, as the domain
//! refuses it; existing such names stop the migration, which changes nothing and names them;
//! `down` drops the check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{HASH, connect_as_service, insert_returning_id, refusal};
use counseling_domain::{NEWER_THAN_DATABASE, Username, UsernameError};
use counseling_testkit::TestDatabase;
use migration::m20261205_000005_username_unicode_14::{CONSTRAINT, NAME, NEWER_THAN_UNICODE_14};
use migration::sea_orm::sqlx::{self, PgConnection};

/// A plain `INSERT`, as any client may write; returns the new row's id.
async fn insert(conn: &mut PgConnection, username: &str) -> Result<String, sqlx::Error> {
    insert_returning_id(conn, username, HASH).await
}

#[test]
fn the_migrations_frozen_list_is_the_domains() {
    assert_eq!(NEWER_THAN_UNICODE_14, NEWER_THAN_DATABASE);
}

#[tokio::test]
async fn the_database_refuses_every_newer_character_as_the_domain_does() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut service = connect_as_service(&db).await;
    let ends = NEWER_THAN_UNICODE_14
        .iter()
        .flat_map(|&(first, last)| [first, last]);
    for code in ends {
        let character = char::from_u32(code).unwrap();
        let name = format!(r"\school\a{character}");
        let error = insert(&mut service, &name).await.unwrap_err();
        match Username::parse(name.as_str()) {
            Err(UsernameError::NewerThanDatabase) => {
                assert_eq!(
                    refusal(&error),
                    ("23514".into(), CONSTRAINT.into()),
                    "U+{code:04X}"
                );
            }
            // A new format control (Cf, U+13439 and on) is an invisible character first, in
            // the domain and in the database (whose checks run in name order).
            Err(UsernameError::InvisibleCharacter) => {
                assert_eq!(
                    refusal(&error),
                    ("23514".into(), "ck_users_username_characters".into()),
                    "U+{code:04X}"
                );
            }
            other => panic!("U+{code:04X}: {other:?}"),
        }
    }
    // What PostgreSQL 15 could not compare: the outlined ALICE next to alice (NFKC folds it in
    // Unicode 16), and U+16D67 twice (Unicode 16 composes it into U+16D68).
    insert(&mut service, r"\s\alice").await.unwrap();
    for name in [
        "\\s\\\u{1ccd6}\u{1cce1}\u{1ccde}\u{1ccd8}\u{1ccda}",
        "\\s\\x\u{16d68}",
    ] {
        let error = insert(&mut service, name).await.unwrap_err();
        assert_eq!(refusal(&error).1, CONSTRAINT, "{name}");
    }
    // A server whose tables know U+16D67 (PostgreSQL 18: Unicode 16) finds the pair not in NFC
    // first (checks run in name order).
    let error = insert(&mut service, "\\s\\x\u{16d67}\u{16d67}")
        .await
        .unwrap_err();
    let refused_by = refusal(&error).1;
    assert!(
        [CONSTRAINT, "ck_users_username_nfc"].contains(&refused_by.as_str()),
        "{refused_by}"
    );
    // Characters of Unicode 14.0 itself are names (Toto, Vithkuqi).
    for name in ["\\s\\\u{1e290}\u{1e2ae}", "\\s\\\u{10570}\u{105bc}"] {
        assert!(Username::parse(name).is_ok(), "{name}");
        insert(&mut service, name).await.unwrap();
    }
}

#[tokio::test]
async fn existing_newer_characters_stop_the_migration_naming_them() {
    // The outlined A; Garay.
    let breaking = ["\\school\\\u{1ccd6}", "\\school\\\u{10d50}"];
    common::existing_usernames_stop_up_naming_them(NAME, r"\school\fine", &breaking).await;
}

#[tokio::test]
async fn down_drops_the_check() {
    let write = async |conn: &mut PgConnection| insert(conn, "\\school\\\u{1ccd6}").await;
    common::down_drops_the_check(NAME, CONSTRAINT, write).await;
}

/// A row committed after the migration looked at the rows, before its check was added, fails the
/// validation: the migration drops its check again and names the row.
#[tokio::test]
async fn a_name_committed_while_up_runs_makes_it_drop_its_check() {
    let write = async |conn: &mut PgConnection| insert(conn, "\\school\\\u{1ccd6}").await.unwrap();
    common::a_late_row_makes_up_drop_its_check(NAME, write).await;
}
