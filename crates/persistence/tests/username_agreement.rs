//! The domain and the database agree on usernames: whatever the domain accepts, the database
//! stores (in the domain's NFC form, with the domain's identity key) and returns byte for byte
//! (equivalently: whatever the database rejects, the domain rejects too). And the database
//! enforces the character rules on its own: text that is not NFC (as far as the server's Unicode
//! tables know) or holds a character of the categories Cc, Cf, Co, Cn, Zl or Zp is refused even
//! when written around the domain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::HASH;
use counseling_domain::{Username, UsernameError};
use counseling_testkit::TestDatabase;
use proptest::prelude::*;
use sea_orm::sqlx::{self, Connection, PgConnection};

/// Strings near the username shape: backslashes, letters of several scripts (mixed, and
/// look-alikes across scripts and widths), decomposed letters, spaces of several kinds, control,
/// format, private-use and unassigned characters, and now and then a very long run.
fn username_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("\\".to_owned()),
        6 => "[a-zA-Z0-9._-]{1,8}",
        2 => "[éÉßİıΣσςЖж中文😀]{1,3}",
        2 => "[a-zA-Z]{1,3}[аеорсхАВЕΑΒΕαο]{1,3}[ａ-ｚＡ-Ｚ０-９]{0,3}",
        2 => "[aeoAEOuU\u{1100}-\u{1112}][\u{300}-\u{36f}\u{1161}-\u{1175}]{1,3}",
        2 => prop::sample::select(vec![" ", "\t", "\u{a0}", "\u{2003}", "\u{3000}", "\n"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["\u{1}", "\u{7f}", "\u{85}", "\u{9f}", "\u{2028}", "\u{2029}"]).prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "\u{200b}", "\u{200c}", "\u{200d}", "\u{202e}", "\u{2066}", "\u{2069}", "\u{feff}",
            "\u{ad}", "\u{2060}", "\u{e0041}",
        ]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["\u{e000}", "\u{f8ff}", "\u{10fffd}", "\u{378}", "\u{ffff}"]).prop_map(str::to_owned),
        1 => (250usize..260).prop_map(|n| "x".repeat(n)),
    ];
    prop::collection::vec(piece, 1..8).prop_map(|pieces| pieces.concat())
}

/// Names of the right shape from any assigned, visible characters (a few of which our older
/// Unicode tables may still call unassigned).
fn well_formed() -> impl Strategy<Value = String> {
    (
        r"[^\\\p{C}\p{Zl}\p{Zp}\s][^\\\p{C}\p{Zl}\p{Zp}]{0,30}",
        r"[^\\\p{C}\p{Zl}\p{Zp}\s][^\\\p{C}\p{Zl}\p{Zp}]{0,30}",
    )
        .prop_map(|(domain, user)| format!(r"\{}\{}", domain.trim_end(), user.trim_end()))
}

// Each case runs to completion in block_on on this one thread, so the RefCell borrow held
// across awaits can never overlap another.
#[allow(clippy::await_holding_refcell_ref)]
#[test]
fn domain_accepted_usernames_are_stored_and_read_back_exactly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (db, conn) = runtime.block_on(async {
        let db = TestDatabase::migrated().await.unwrap();
        let conn = PgConnection::connect_with(&db.options()).await.unwrap();
        (db, conn)
    });
    let config = ProptestConfig {
        cases: 400,
        ..ProptestConfig::default()
    };
    // proptest's closure is `Fn`: state it updates lives in cells.
    let conn = std::cell::RefCell::new(conn);
    let accepted = std::cell::Cell::new(0u32);
    // Each insert in a transaction that is rolled back: no uniqueness clashes between cases.
    let try_insert = |username: &str, key: &str| -> Result<String, sqlx::Error> {
        runtime.block_on(async {
            let mut conn = conn.borrow_mut();
            let mut tx = conn.begin().await.unwrap();
            let stored = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash, username_key) VALUES ($1, $2, $3) \
                 RETURNING username",
            )
            .bind(username)
            .bind(HASH)
            .bind(key)
            .fetch_one(&mut *tx)
            .await;
            tx.rollback().await.unwrap();
            stored
        })
    };
    // PostgreSQL's own NFC, from its Unicode tables (14.0 in PostgreSQL 15, older than ours).
    let server_nfc = |text: &str| -> String {
        runtime.block_on(async {
            sqlx::query_scalar("SELECT normalize($1, NFC)")
                .bind(text)
                .fetch_one(&mut *conn.borrow_mut())
                .await
                .unwrap()
        })
    };
    let sqlstate = |error: &sqlx::Error| -> String {
        error
            .as_database_error()
            .and_then(|e| e.code())
            .unwrap_or_default()
            .into_owned()
    };
    proptest!(config, |(candidate in prop_oneof![username_like(), well_formed()])| {
        prop_assume!(!candidate.contains('\0'));
        match Username::parse(candidate.as_str()) {
            Ok(username) => {
                accepted.set(accepted.get() + 1);
                let stored = try_insert(username.as_str(), username.identity_key())
                    .unwrap_or_else(|e| panic!("database rejected {candidate:?}: {e}"));
                prop_assert_eq!(stored.as_bytes(), username.as_str().as_bytes());
                // Not NFC as typed: the database refuses it as typed, when its Unicode tables
                // know the characters (for newer ones `IS NFC NORMALIZED` cannot tell).
                if username.as_str() != candidate && server_nfc(&candidate) == username.as_str() {
                    let raw = try_insert(&candidate, username.identity_key());
                    prop_assert_eq!(raw.as_ref().map_err(sqlstate).err(), Some("23514".into()), "{:?}", candidate);
                }
            }
            Err(
                UsernameError::ControlCharacter
                | UsernameError::InvisibleCharacter
                | UsernameError::UnassignedCharacter,
            ) => {
                // Refused by the database too, whatever key is written beside it: by the check,
                // or first by the column's length for a name that is also too long.
                let raw = try_insert(&candidate, "key");
                let expected = if candidate.chars().count() > 255 { "22001" } else { "23514" };
                prop_assert_eq!(raw.as_ref().map_err(sqlstate).err(), Some(expected.into()), "{:?}", candidate);
            }
            Err(_) => {
                // Not required, but keep the error a constraint one (not a crash of the check).
                if let Err(error) = try_insert(&candidate, "key") {
                    let code = sqlstate(&error);
                    prop_assert!(["23514", "22001"].contains(&code.as_str()), "{code}");
                }
            }
        }
    });
    let accepted = accepted.get();
    assert!(
        accepted > 100,
        "the generator must produce plenty of valid names ({accepted})"
    );
    drop(conn);
    drop(db);
}
