//! The domain and the database agree on usernames: whatever the domain accepts, the database
//! stores and returns byte for byte (equivalently: whatever the database rejects, the domain
//! rejects too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::HASH;
use counseling_domain::Username;
use counseling_testkit::TestDatabase;
use proptest::prelude::*;
use sea_orm::sqlx::{self, Connection, PgConnection};

/// Strings near the username shape: backslashes, letters of several scripts, spaces of several
/// kinds, control characters, and now and then a very long run.
fn username_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("\\".to_owned()),
        6 => "[a-zA-Z0-9._-]{1,8}",
        2 => "[éÉßİıΣσςЖж中文😀]{1,3}",
        2 => prop::sample::select(vec![" ", "\t", "\u{a0}", "\u{2003}", "\n"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["\u{1}", "\u{7f}", "\u{85}", "\u{9f}", "\u{200b}"]).prop_map(str::to_owned),
        1 => (250usize..260).prop_map(|n| "x".repeat(n)),
    ];
    prop::collection::vec(piece, 1..8).prop_map(|pieces| pieces.concat())
}

fn well_formed() -> impl Strategy<Value = String> {
    (
        r"[^\\\p{Cc}\s][^\\\p{Cc}]{0,30}",
        r"[^\\\p{Cc}\s][^\\\p{Cc}]{0,30}",
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
    proptest!(config, |(candidate in prop_oneof![username_like(), well_formed()])| {
        prop_assume!(!candidate.contains('\0'));
        let domain_accepts = Username::parse(candidate.as_str()).is_ok();
        let stored: Result<String, sqlx::Error> = runtime.block_on(async {
            // Each case in a transaction that is rolled back: no uniqueness clashes between cases.
            let mut conn = conn.borrow_mut();
            let mut tx = conn.begin().await.unwrap();
            let stored = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING username",
            )
            .bind(&candidate)
            .bind(HASH)
            .fetch_one(&mut *tx)
            .await;
            tx.rollback().await.unwrap();
            stored
        });
        if domain_accepts {
            accepted.set(accepted.get() + 1);
            let stored = stored.unwrap_or_else(|e| panic!("database rejected {candidate:?}: {e}"));
            prop_assert_eq!(stored.as_bytes(), candidate.as_bytes());
        } else {
            // Not required, but keep the error a constraint one (not a crash of the check).
            if let Err(error) = stored {
                let code = error.as_database_error().and_then(|e| e.code()).unwrap_or_default();
                prop_assert!(["23514", "22001"].contains(&code.as_ref()), "{code}");
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
