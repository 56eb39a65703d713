//! The domain and the database agree on usernames, each applying the rules on its own: a plain
//! `INSERT` of a candidate in NFC is accepted exactly when the domain accepts the candidate (and
//! the database returns it byte for byte), but for one documented case: an identity longer than
//! the index allows, which only the database can compute. Text that is not NFC (as far as the
//! server's Unicode tables know) is refused as typed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::HASH;
use counseling_domain::{Username, is_newer_than_database};
use counseling_testkit::TestDatabase;
use proptest::prelude::*;
use sea_orm::sqlx::{self, Connection, PgConnection};
use unicode_normalization::UnicodeNormalization;

/// Strings near the username shape: backslashes, letters of several scripts (mixed, and
/// look-alikes across scripts and widths), decomposed letters, spaces of several kinds, control,
/// format, private-use and unassigned characters, and now and then a very long run.
fn username_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("\\".to_owned()),
        1 => prop::sample::select(vec!["\u{ff3c}", "\u{fe68}"]).prop_map(str::to_owned),
        6 => "[a-zA-Z0-9._-]{1,8}",
        2 => "[éÉßİıΣσςЖж中文😀]{1,3}",
        2 => "[a-zA-Z]{1,3}[аеорсхАВЕΑΒΕαο]{1,3}[ａ-ｚＡ-Ｚ０-９]{0,3}",
        2 => "[aeoAEOuU\u{1100}-\u{1112}][\u{300}-\u{36f}\u{1161}-\u{1175}]{1,3}",
        // Hangul syllables followed by vowels and finals, U+11A7 (which PostgreSQL's
        // normalization drops) among them.
        2 => "[\u{ac00}\u{ac1c}\u{ac38}\u{bbf8}\u{ac01}\u{3131}\u{314f}][\u{1161}-\u{1175}\u{11a7}-\u{11c2}]{1,2}",
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
/// Unicode tables may still call unassigned), but for those newer than the database's Unicode
/// (which both refuse, and which would otherwise be in nearly every name this long).
fn well_formed() -> impl Strategy<Value = String> {
    let known = |part: String| -> String {
        part.chars()
            .filter(|&c| !is_newer_than_database(c))
            .collect()
    };
    (
        r"[^\\\p{C}\p{Zl}\p{Zp}\s][^\\\p{C}\p{Zl}\p{Zp}]{0,30}",
        r"[^\\\p{C}\p{Zl}\p{Zp}\s][^\\\p{C}\p{Zl}\p{Zp}]{0,30}",
    )
        .prop_map(move |(domain, user)| {
            let (domain, user) = (known(domain), known(user));
            format!(r"\{}\{}", domain.trim_end(), user.trim_end())
        })
}

/// Names of the right shape whose parts may start or end with white space of several kinds, or
/// hold a character that stands for a backslash: the rules the database checks on each part and
/// on the identity.
fn near_the_edges() -> impl Strategy<Value = String> {
    let edge = || {
        prop::sample::select(vec![
            "", "", "", " ", "\u{a0}", "\u{3000}", "\u{2003}", "\u{1680}",
        ])
    };
    let inside = prop::sample::select(vec!["", "", "", "\u{ff3c}", "\u{fe68}", " ", "ﬁ", "ẞ"]);
    let part = move || {
        (
            edge(),
            "[a-zA-Zé中ａΣ]{1,5}",
            inside.clone(),
            "[a-zς]{0,3}",
            edge(),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a}{b}{c}{d}{e}"))
    };
    (part(), part()).prop_map(|(domain, user)| format!(r"\{domain}\{user}"))
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
    let try_insert = |username: &str| -> Result<String, sqlx::Error> {
        runtime.block_on(async {
            let mut conn = conn.borrow_mut();
            let mut tx = conn.begin().await.unwrap();
            let stored = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING username",
            )
            .bind(username)
            .bind(HASH)
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
    proptest!(config, |(candidate in prop_oneof![username_like(), well_formed(), near_the_edges()])| {
        prop_assume!(!candidate.contains('\0'));
        let composed: String = candidate.nfc().collect();
        let database = try_insert(&composed);
        match Username::parse(candidate.as_str()) {
            Ok(username) => {
                accepted.set(accepted.get() + 1);
                match &database {
                    Ok(stored) => prop_assert_eq!(stored.as_bytes(), username.as_str().as_bytes()),
                    Err(error) => {
                        let database_error = error.as_database_error();
                        prop_assert_eq!(
                            database_error.and_then(|e| e.constraint()),
                            Some("ck_users_username_identity_length"),
                            "database rejected {:?}: {}", candidate, error
                        );
                    }
                }
                // Not NFC as typed: the database refuses it as typed, when its Unicode tables
                // know the characters (for newer ones `IS NFC NORMALIZED` cannot tell).
                if username.as_str() != candidate && server_nfc(&candidate) == username.as_str() {
                    let raw = try_insert(&candidate);
                    prop_assert_eq!(raw.as_ref().map_err(sqlstate).err(), Some("23514".into()), "{:?}", candidate);
                }
            }
            Err(refused) => {
                // Refused by the database too: by a check, or first by the column's length for
                // a name that is also too long. But PostgreSQL cuts a varchar's excess without a
                // word when it is all spaces: the name is then judged as cut, refused by a check
                // or stored cut (the exception docs/migrations.md names), never stored otherwise.
                let excess: String = composed.chars().skip(255).collect();
                if !excess.is_empty() && excess.chars().all(|c| c == ' ') {
                    let cut: String = composed.chars().take(255).collect();
                    match &database {
                        Ok(stored) => prop_assert_eq!(stored, &cut, "{:?}", candidate),
                        Err(error) => prop_assert_eq!(sqlstate(error), "23514", "{:?}", candidate),
                    }
                } else {
                    let expected = if excess.is_empty() { "23514" } else { "22001" };
                    prop_assert_eq!(
                        database.as_ref().map_err(sqlstate).err(),
                        Some(expected.into()),
                        "{:?} ({})", candidate, refused
                    );
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
