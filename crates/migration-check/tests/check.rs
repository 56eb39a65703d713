//! `migrate-check` on the real migrations and on deliberately bad ones kept here, in test
//! fixtures (never in the real list).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

#[path = "fixtures/m20990101_000002_no_lock_timeout.rs"]
mod no_lock_timeout;
#[path = "fixtures/m20990101_000001_plain_index_on_users.rs"]
mod plain_index_on_users;

use counseling_migration_check::{CheckOptions, check};
use migration::MigrationFile;

/// The real first migration (it creates `users`), then one fixture.
fn after_create_users(fixture: fn() -> MigrationFile) -> impl Fn() -> Vec<MigrationFile> {
    move || vec![migration::migrations().remove(0), fixture()]
}

fn plain_index() -> MigrationFile {
    MigrationFile::new(
        Box::new(plain_index_on_users::Migration),
        "crates/migration-check/tests/fixtures/m20990101_000001_plain_index_on_users.rs",
        include_str!("fixtures/m20990101_000001_plain_index_on_users.rs"),
    )
}

fn lock_timeout_off() -> MigrationFile {
    MigrationFile::new(
        Box::new(no_lock_timeout::Migration),
        "crates/migration-check/tests/fixtures/m20990101_000002_no_lock_timeout.rs",
        include_str!("fixtures/m20990101_000002_no_lock_timeout.rs"),
    )
}

#[tokio::test]
async fn a_plain_create_index_on_users_fails_the_check_with_its_defaults() {
    let report = check(&after_create_users(plain_index), &CheckOptions::default())
        .await
        .unwrap();
    println!("{}", report.render());
    let failures = report.failures();
    assert_eq!(failures.len(), 2, "up and up again: {failures:#?}");
    for (failure, pass) in failures.iter().zip(["up", "up again"]) {
        assert!(
            failure.starts_with(&format!(
                "m20990101_000001_plain_index_on_users ({pass}) held ShareLock on users for"
            )),
            "{failure}"
        );
        assert!(
            failure.ends_with(
                "CREATE INDEX idx_users_password_hash ON users (password_hash, username)"
            ),
            "{failure}"
        );
    }
}

#[tokio::test]
async fn a_migration_turning_lock_timeout_off_fails_the_check() {
    let options = CheckOptions {
        users: 1000,
        ..CheckOptions::default()
    };
    let report = check(&after_create_users(lock_timeout_off), &options)
        .await
        .unwrap();
    let failures = report.failures();
    let set = migration::DEFAULT_LOCK_TIMEOUT.as_millis();
    let changed = format!(
        "m20990101_000002_no_lock_timeout (up) changed the runner's lock_timeout: it set {set} ms, \
         the migration left 0 ms"
    );
    assert!(
        failures.iter().any(|failure| failure.contains(&changed)),
        "{failures:#?}"
    );
    assert!(
        failures.iter().any(|failure| failure
            .starts_with("m20990101_000002_no_lock_timeout (up) sets lock_timeout itself")),
        "{failures:#?}"
    );
}

#[tokio::test]
async fn the_real_migrations_pass() {
    let options = CheckOptions {
        users: 20_000,
        ..CheckOptions::default()
    };
    let report = check(&migration::migrations, &options).await.unwrap();
    assert_eq!(
        report.failures(),
        Vec::<String>::new(),
        "{}",
        report.render()
    );
    let passes = report.migrations.len();
    assert_eq!(
        passes,
        migration::migrations().len() * 3,
        "up, down, up again"
    );
}
