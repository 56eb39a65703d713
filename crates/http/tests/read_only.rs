//! Readiness means writable: a server that answers but cannot take writes is not ready, and the
//! pool does not keep handing out connections to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)] // a private cluster of the test's own

mod common;

use std::time::Duration;

use common::spawn_app;
use counseling_domain::{
    CreateUserError, NewUser, PasswordHash, StoreError, Unavailability, UserRepository, Username,
};
use counseling_persistence::{Database, DatabaseSettings, PgUserRepository};
use counseling_testkit::{PgCluster, Scrape};
use sea_orm::sqlx::{Connection, Executor, PgConnection};
use serde_json::Value;

const HASH: &str = "$2b$12$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234";

async fn get(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = agent.get(&url).call().unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap()
}

async fn health(port: u16) -> (u16, Value) {
    let (status, body) = get(port, "/health").await;
    (status, serde_json::from_str(&body).unwrap())
}

/// `ALTER SYSTEM SET default_transaction_read_only` and a reload: every new transaction of every
/// session (existing ones included) is read-only, as on a primary an operator fenced.
async fn set_read_only(cluster: &PgCluster, on: bool) {
    let mut admin = PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    let statement = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    admin.execute(statement).await.unwrap();
    admin.execute("SELECT pg_reload_conf()").await.unwrap();
    admin.close().await.unwrap();
    // A reload reaches the backends asynchronously; a new session sees it at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let mut settings =
        DatabaseSettings::new(counseling_config::DatabaseUrl::parse(&db.url()).unwrap());
    settings.pool.min_connections = 0;
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    let users = PgUserRepository::new(database.clone());
    users.create(new_user(r"\s\before")).await.unwrap();

    set_read_only(&cluster, true).await;
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

    set_read_only(&cluster, false).await;
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
