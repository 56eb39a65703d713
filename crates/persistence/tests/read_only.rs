//! A node that answers but can no longer write (a demoted or fenced primary): a write that meets
//! it fails as read-only, its connection is closed, and every idle connection is checked before
//! it is used again, so the pool does not keep handing out connections to that node.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)] // a private cluster of the test's own

mod common;

use std::time::Duration;

use common::{HASH, open_idle_connections, private_database};

use counseling_domain::{
    CreateUserError, NewUser, PasswordHash, StoreError, Unavailability, UserRepository, Username,
};
use counseling_persistence::{Database, PgUserRepository};

#[tokio::test]
async fn after_a_read_only_failure_every_idle_connection_is_checked_before_reuse() {
    let (cluster, _db, mut settings) = private_database().await;
    // Long enough that no connection here is checked for having been idle.
    settings.pool.ping_if_idle_for = Duration::from_secs(60);
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    open_idle_connections(&database, 4).await;
    assert_eq!(database.status().open, 4);

    cluster.set_read_only(true).await.unwrap();

    let users = PgUserRepository::new(database.clone());
    let new_user = NewUser {
        username: Username::parse(r"\s\alice").unwrap(),
        password_hash: PasswordHash::parse(HASH).unwrap(),
    };
    assert_eq!(
        users.create(new_user).await.unwrap_err(),
        CreateUserError::Store(StoreError::Unavailable(Unavailability::ReadOnly))
    );
    // The failed connection is gone; the next call checks the idle ones (all read-only now),
    // closes them, and runs on a connection of its own.
    assert_eq!(database.status().open, 3);
    users.list(None, 1).await.unwrap();
    assert_eq!(database.status().open, 1, "{:?}", database.status());
}

/// A connection idle for `DATABASE_PING_IF_IDLE_MS` gets a role check in place of its ping: one
/// that still answers but reaches a node that can no longer write is closed, not used.
#[tokio::test]
async fn an_idle_connection_to_a_node_that_can_no_longer_write_is_closed_at_checkout() {
    let (cluster, _db, mut settings) = private_database().await;
    settings.pool.ping_if_idle_for = Duration::from_millis(300);
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    open_idle_connections(&database, 4).await;

    cluster.set_read_only(true).await.unwrap();
    // Idle past DATABASE_PING_IF_IDLE_MS.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let users = PgUserRepository::new(database.clone());
    users.list(None, 1).await.unwrap();
    assert_eq!(database.status().open, 1, "{:?}", database.status());
}
