//! `m20261205_000001_username_default_ignorables`: a plain `INSERT` of a name that looks like
//! another one through an invisible character is refused; existing such names stop the migration,
//! which changes nothing and names them; `down` drops the check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use common::{
    connect_as_service, database_before, insert, insert_before_identity, insert_refusal, up_to,
};
use migration::m20261205_000001_username_default_ignorables::{CONSTRAINT, INVISIBLE, NAME};
use migration::sea_orm::sqlx::PgConnection;

const ALICE: &str = r"\school\alice";

#[tokio::test]
async fn a_plain_insert_of_an_invisible_look_alike_is_refused() {
    let (db, orm, _) = database_before(NAME).await;
    up_to(&orm, NAME).await;
    let mut service = connect_as_service(&db).await;
    insert(&mut service, ALICE, common::HASH).await.unwrap();
    // Both ends of every range, and the look-alikes Cf did not cover.
    let mut characters: Vec<u32> = INVISIBLE
        .iter()
        .flat_map(|&(start, end)| [start, end])
        .collect();
    characters.extend([0x3164, 0x034F, 0xFE0F, 0x180B, 0xE0100]);
    for code in characters {
        let character = char::from_u32(code).unwrap();
        let refusal = insert_refusal(&mut service, &format!("{ALICE}{character}")).await;
        assert_eq!(refusal.0, "23514", "U+{code:04X}");
        // Cf and Cn were refused before, by their own check.
        assert!(
            [CONSTRAINT, "ck_users_username_characters"].contains(&refusal.1.as_str()),
            "U+{code:04X}: {refusal:?}"
        );
    }
    // Combining marks that are visible stay allowed.
    insert(&mut service, "\\school\\q\u{301}", common::HASH)
        .await
        .unwrap();
}

#[tokio::test]
async fn existing_invisible_look_alikes_stop_the_migration_naming_them() {
    let breaking = ["\\school\\alice\u{3164}", "\\school\\ali\u{fe0f}ce"];
    common::existing_usernames_stop_up_naming_them(NAME, ALICE, &breaking).await;
}

#[tokio::test]
async fn down_drops_the_check() {
    let (db, orm, _) = database_before(NAME).await;
    up_to(&orm, NAME).await;
    assert_eq!(migration::roll_back(&orm, 1).await.unwrap(), [NAME]);
    let mut service = connect_as_service(&db).await;
    insert(&mut service, "\\school\\alice\u{3164}", common::HASH)
        .await
        .unwrap();
}

/// A row committed after the migration looked at the rows, before its check was added, fails the
/// validation: the migration drops its check again and names the row.
#[tokio::test]
async fn a_look_alike_committed_while_up_runs_makes_it_drop_its_check() {
    let write = async |conn: &mut PgConnection| {
        insert_before_identity(conn, "\\school\\alice\u{3164}").await
    };
    common::a_late_row_makes_up_drop_its_check(NAME, write).await;
}
