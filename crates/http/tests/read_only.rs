//! Readiness means writable: a server that answers but cannot take writes is not ready, and the
//! pool does not keep handing out connections to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)] // a private cluster of the test's own

mod common;

use common::spawn_app;
use counseling_domain::{
    CreateUserError, NewUser, PasswordHash, StoreError, Unavailability, UserRepository, Username,
};
use counseling_persistence::{Database, PgUserRepository};
use counseling_testkit::fixtures::{BCRYPT_HASH as HASH, get_local};
use counseling_testkit::{PgCluster, Scrape};
use serde_json::Value;

async fn get(port: u16, path: &str) -> (u16, String) {
    let reply = get_local(port, path).await.unwrap();
    (reply.status, reply.body)
}

async fn health(port: u16) -> (u16, Value) {
    let reply = get_local(port, "/health").await.unwrap();
    (reply.status, reply.json())
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        password_hash: PasswordHash::parse(HASH).unwrap(),
    }
}

#[tokio::test]
async fn a_server_set_read_only_is_not_ready_and_writes_fail_as_read_only_until_it_is_writable() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let port = spawn_app(&db.url(), &[]);
    assert_eq!(health(port).await.0, 200);
    let settings = db.pool_settings().unwrap();
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    let users = PgUserRepository::new(database.clone());
    users.create(new_user(r"\s\before")).await.unwrap();

    cluster.set_read_only(true).await.unwrap();
    // Within one probe: the check's round trip asks the server whether it takes writes.
    let (status, body) = health(port).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("database is read-only")),
        "{body}"
    );
    assert_eq!(body["status"], "unhealthy");
    // Liveness is not readiness.
    assert_eq!(get(port, "/health/live").await.0, 200);
    // A write fails at once as read-only; reads still work.
    let failed = users.create(new_user(r"\s\during")).await.unwrap_err();
    assert_eq!(
        failed,
        CreateUserError::Store(StoreError::Unavailable(Unavailability::ReadOnly))
    );
    assert!(
        users
            .find_by_username(&Username::parse(r"\s\before").unwrap())
            .await
            .unwrap()
            .is_some()
    );

    cluster.set_read_only(false).await.unwrap();
    // Back without a restart: the read-only connection was discarded, a new one can write.
    let (status, body) = health(port).await;
    assert_eq!(status, 200, "{body}");
    users.create(new_user(r"\s\after")).await.unwrap();

    // The discarded connections are counted by reason.
    let (_, text) = get(port, "/metrics").await;
    let scrape = Scrape::parse(&text).unwrap();
    assert!(
        scrape.value(
            "db_client_connections_discarded_total",
            &[("reason", "read_only")]
        ) >= 1.0,
        "{text}"
    );
}

/// A real standby (`pg_basebackup -R`) is not ready and refuses writes as read-only; promoted,
/// it is ready and takes writes, without a restart of the service.
#[tokio::test]
async fn a_standby_is_not_ready_until_it_is_promoted() {
    let primary = PgCluster::start().await.unwrap();
    let db = primary.migrated_database().await.unwrap();
    let standby = primary.start_standby().await.unwrap();
    let url = standby.service_url(db.name());
    let port = spawn_app(&url, &[]);
    let (status, body) = health(port).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("database is read-only")),
        "{body}"
    );
    let settings = counseling_testkit::fixtures::pool_settings(&url).unwrap();
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    let users = PgUserRepository::new(database);
    assert_eq!(
        users.create(new_user(r"\s\early")).await.unwrap_err(),
        CreateUserError::Store(StoreError::Unavailable(Unavailability::ReadOnly))
    );

    primary.stop().await.unwrap();
    standby.promote().await.unwrap();
    let (status, body) = health(port).await;
    assert_eq!(status, 200, "{body}");
    users.create(new_user(r"\s\promoted")).await.unwrap();
}
