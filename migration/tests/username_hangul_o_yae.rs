//! `m20261206_000001_username_hangul_o_yae`: a plain `INSERT` of a name holding U+11A7, which
//! PostgreSQL's normalization drops after a syllable (so that `\s\가` + U+11A7 would be the
//! account `\s\가`), is refused, as the domain refuses it; existing such names stop the
//! migration, which changes nothing and names them; `down` drops the check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{HASH, connect_as_service, insert_returning_id, refusal};
use counseling_domain::{UNCOMPARABLE_IN_DATABASE, Username, UsernameError};
use counseling_testkit::TestDatabase;
use migration::m20261206_000001_username_hangul_o_yae::{CONSTRAINT, NAME, UNCOMPARABLE};
use migration::sea_orm::sqlx::{self, PgConnection};

/// A plain `INSERT`, as any client may write; returns the new row's id.
async fn insert(conn: &mut PgConnection, username: &str) -> Result<String, sqlx::Error> {
    insert_returning_id(conn, username, HASH).await
}

/// `\s\가` + U+11A7: the name the database took for `\s\가`.
const AFTER_A_SYLLABLE: &str = "\\s\\\u{ac00}\u{11a7}";

#[test]
fn the_migrations_frozen_list_is_the_domains() {
    assert_eq!(UNCOMPARABLE, UNCOMPARABLE_IN_DATABASE);
}

#[tokio::test]
async fn the_database_refuses_the_vowel_it_drops_as_the_domain_does() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut service = connect_as_service(&db).await;
    insert(&mut service, "\\s\\\u{ac00}").await.unwrap();
    for name in [
        AFTER_A_SYLLABLE,
        // Composed from compatibility letters only by the identity rule's NFKC.
        "\\s\\\u{3131}\u{314f}\u{11a7}",
        // Inside a name, and alone.
        "\\school\\\u{bbf8}\u{11a7}\u{c900}",
        "\\s\\\u{11a7}",
        // Where PostgreSQL's NFC check is unsure, it normalizes with the same fault: still
        // this check's refusal, which runs before `ck_users_username_nfc` (name order).
        "\\s\\\u{ac00}\u{11a7}\u{300}",
    ] {
        assert_eq!(
            Username::parse(name),
            Err(UsernameError::UncomparableCharacter),
            "{name}"
        );
        let error = insert(&mut service, name).await.unwrap_err();
        assert_eq!(
            refusal(&error),
            ("23514".into(), CONSTRAINT.into()),
            "{name}"
        );
    }
    // Its neighbours are letters like any: the first final consonant, the last vowel (where NFC
    // leaves them apart).
    for name in ["\\s\\x\u{11a8}", "\\s\\\u{ac00}\u{1175}"] {
        let stored = insert(&mut service, name).await;
        assert!(stored.is_ok(), "{name}: {stored:?}");
    }
}

#[tokio::test]
async fn existing_names_with_the_vowel_stop_the_migration_naming_them() {
    let breaking = [AFTER_A_SYLLABLE, "\\school\\\u{11a7}"];
    common::existing_usernames_stop_up_naming_them(NAME, r"\school\fine", &breaking).await;
}

#[tokio::test]
async fn down_drops_the_check() {
    let write = async |conn: &mut PgConnection| insert(conn, AFTER_A_SYLLABLE).await;
    common::down_drops_the_check(NAME, CONSTRAINT, write).await;
}

/// A row committed after the migration looked at the rows, before its check was added, fails the
/// validation: the migration drops its check again and names the row.
#[tokio::test]
async fn a_name_committed_while_up_runs_makes_it_drop_its_check() {
    let write = async |conn: &mut PgConnection| insert(conn, AFTER_A_SYLLABLE).await.unwrap();
    common::a_late_row_makes_up_drop_its_check(NAME, write).await;
}
