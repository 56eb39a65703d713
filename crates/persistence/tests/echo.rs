//! `DATABASE_ECHO`: every repository statement is logged when on (SQL with placeholders, never
//! the bound values), none when off. Its own test binary, for the same reason as `tracing.rs`: a
//! global subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Captured, HASH, connect, new_user, settings_for};
use counseling_domain::{UserRepository, Username};
use counseling_persistence::PgUserRepository;
use counseling_testkit::TestDatabase;

/// Creates, finds and lists users through a pool with `echo` as given; returns what was logged.
async fn repository_calls(echo: bool, captured: &Captured) -> String {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings = settings_for(test_db.url());
    settings.pool.echo = echo;
    let users = PgUserRepository::new(connect(&settings));
    captured.take();
    let zoe = users.create(new_user(r"\school\zoe")).await.unwrap();
    users
        .find_by_username(&Username::parse(r"\SCHOOL\ZOE").unwrap())
        .await
        .unwrap()
        .unwrap();
    users.find_by_id(zoe.id).await.unwrap().unwrap();
    captured.take()
}

#[tokio::test]
async fn echo_logs_each_statement_with_placeholders_and_never_the_values() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let silent = repository_calls(false, &captured).await;
    assert!(
        !silent.contains("db.statement") && !silent.contains("INSERT INTO"),
        "echo off, yet statements were logged:\n{silent}"
    );

    let echoed = repository_calls(true, &captured).await;
    let statements: Vec<&str> = echoed
        .lines()
        .filter(|line| line.contains("db.statement"))
        .collect();
    assert_eq!(statements.len(), 3, "one line per statement:\n{echoed}");
    assert!(statements[0].contains("INSERT INTO"), "{echoed}");
    assert!(
        statements[1..].iter().all(|line| line.contains("SELECT")),
        "{echoed}"
    );
    assert!(
        statements.iter().all(|line| line.contains("$1")),
        "placeholders are shown:\n{echoed}"
    );
    // Usernames and ids appear in the repository's own spans by design; the hash never does.
    for value in [HASH, &HASH[7..29]] {
        assert!(
            !echoed.contains(value),
            "a bound value ({value}) was logged:\n{echoed}"
        );
    }
}
