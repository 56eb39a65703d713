//! TLS to PostgreSQL against clusters of the test kit that serve TLS with certificates made in
//! the run: libpq's sslmodes, wrong CAs and host names, client certificates, and proof from the
//! server (`pg_stat_ssl`) that the service's connections are encrypted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::spawn_app;
use counseling_domain::{NewUser, PasswordHash, UserRepository, Username};
use counseling_persistence::{Database, PgUserRepository, StoreError, TlsFailure, Unavailability};
use counseling_testkit::fixtures::untrusted_ca_file;
use counseling_testkit::fixtures::{BCRYPT_HASH, eventually, get_local, pool_settings};
use counseling_testkit::tls::ServerTls;
use counseling_testkit::{ClusterOptions, PgCluster, TestDatabase};
use sea_orm::sqlx::{self, Connection, PgConnection};
use serde_json::Value;

/// One TLS cluster (certificate for localhost and 127.0.0.1) shared by the tests that do not
/// break it; it also accepts plaintext, so that `pg_stat_ssl` can tell the two apart.
fn tls_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let tls = ClusterOptions {
            tls: Some(ServerTls::default()),
            ..ClusterOptions::default()
        };
        PgCluster::start_blocking_with(tls).unwrap()
    })
}

/// `sslmode` with the cluster's own CA as `sslrootcert`.
fn verified<'a>(cluster: &'a PgCluster, sslmode: &'a str) -> Vec<(&'a str, &'a str)> {
    cluster.tls_files().unwrap().parameters(sslmode)
}

async fn get(port: u16, path: &str) -> (u16, Value) {
    let reply = get_local(port, path).await.unwrap();
    (reply.status, reply.json())
}

/// The test kit's pool on `url`, known to the server as `application_name`.
fn database_named(url: &str, application_name: &str) -> Database {
    let mut settings = pool_settings(url).unwrap();
    settings.application_name = application_name.into();
    Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap()
}

fn database(url: &str) -> Database {
    database_named(url, "tls-test")
}

async fn ping(database: &Database) -> Result<(), StoreError> {
    database.ping(Duration::from_secs(3)).await
}

fn tls_failure(why: TlsFailure) -> Result<(), StoreError> {
    Err(StoreError::Unavailable(Unavailability::TlsHandshakeFailed(
        why,
    )))
}

/// `(connections, encrypted)` of `application_name` as the server sees them.
async fn encrypted_connections(cluster: &PgCluster, application_name: &str) -> (i64, i64) {
    let mut admin = PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    let counts = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
    )
    .bind(application_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
    counts
}

#[tokio::test]
async fn verify_full_with_the_right_ca_works_and_is_encrypted() {
    let cluster = tls_cluster();
    let db = cluster.migrated_database().await.unwrap();
    let url = db.url_with(&verified(cluster, "verify-full"));
    let port = spawn_app(&url, &[]);
    let (status, body) = get(port, "/health").await;
    assert_eq!(status, 200, "{body}");
    let (connections, encrypted) = encrypted_connections(cluster, "counseling-api").await;
    assert!(connections >= 1);
    assert_eq!(encrypted, connections, "every connection of the service");

    let users = PgUserRepository::new(database(&url));
    let username = Username::parse(r"\campus\tls").unwrap();
    let password_hash = PasswordHash::parse(BCRYPT_HASH).unwrap();
    let created = users
        .create(NewUser {
            username,
            password_hash,
        })
        .await
        .unwrap();
    let found = users
        .find_by_username(&Username::parse(r"\campus\tls").unwrap())
        .await
        .unwrap();
    assert_eq!(found.map(|user| user.id), Some(created.id));
}

#[tokio::test]
async fn disable_is_plaintext_on_the_same_server() {
    // The counterpart of the check above: pg_stat_ssl does tell plaintext apart.
    let cluster = tls_cluster();
    let db = cluster.migrated_database().await.unwrap();
    let plain = database_named(&db.url_with(&[("sslmode", "disable")]), "plaintext-test");
    ping(&plain).await.unwrap();
    assert_eq!(
        encrypted_connections(cluster, "plaintext-test").await,
        (1, 0)
    );
}

#[tokio::test]
async fn a_wrong_ca_gives_503_keeps_serving_and_recovers_when_the_ca_file_is_fixed() {
    let cluster = tls_cluster();
    let db = cluster.migrated_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = untrusted_ca_file(dir.path(), "ca.crt").unwrap();
    let url = db.url_with(&[
        ("sslmode", "verify-full"),
        ("sslrootcert", ca_file.to_str().unwrap()),
    ]);

    assert_eq!(
        ping(&database(&url)).await,
        tls_failure(TlsFailure::UntrustedCertificate)
    );
    let port = spawn_app(&url, &[]);
    for _ in 0..3 {
        let (status, body) = get(port, "/health").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "tls handshake failed");
        assert_eq!(get(port, "/health/live").await.0, 200);
    }
    // The driver reads the CA file at every connection attempt: fixing it is enough.
    std::fs::remove_file(&ca_file).unwrap();
    std::fs::copy(&cluster.tls_files().unwrap().root_cert, &ca_file).unwrap();
    let healthy = async || get(port, "/health").await.0 == 200;
    eventually("/health answers 200", Duration::from_secs(10), healthy)
        .await
        .unwrap();
}

/// `system` trusts the public roots only: a server with a certificate from a private CA is
/// refused, as by libpq.
#[tokio::test]
async fn system_roots_refuse_a_private_ca() {
    let db = tls_cluster().migrated_database().await.unwrap();
    let url = db.url_with(&[("sslrootcert", "system")]);
    assert_eq!(
        ping(&database(&url)).await,
        tls_failure(TlsFailure::UntrustedCertificate)
    );
}

/// A cluster serving `tls`, whose certificate `verify-full` with the cluster's own CA refuses as
/// `why`: the pool says so, and an app's `/health` answers 503 `tls handshake failed`. Returns
/// the cluster, a migrated database on it and the app's port.
async fn refused_under_verify_full(
    tls: ServerTls,
    why: TlsFailure,
) -> (PgCluster, TestDatabase, u16) {
    let cluster = PgCluster::start_tls(tls).await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let full = db.url_with(&verified(&cluster, "verify-full"));
    assert_eq!(ping(&database(&full)).await, tls_failure(why));
    let port = spawn_app(&full, &[]);
    let (status, body) = get(port, "/health").await;
    assert_eq!(
        (status, &body["error"]),
        (503, &"tls handshake failed".into())
    );
    (cluster, db, port)
}

#[tokio::test]
async fn an_expired_server_certificate_gives_503_under_verify_full() {
    let expired = ServerTls {
        expired: true,
        ..ServerTls::default()
    };
    let (_cluster, db, port) =
        refused_under_verify_full(expired, TlsFailure::CertificateExpired).await;
    assert_eq!(get(port, "/health/live").await.0, 200);
    // The same server over plaintext is fine: it is the certificate that is refused.
    let plain = db.url_with(&[("sslmode", "disable")]);
    ping(&database(&plain)).await.unwrap();
}

#[tokio::test]
async fn a_host_name_mismatch_fails_verify_full_but_passes_verify_ca() {
    let elsewhere = ServerTls {
        server_names: vec!["db.internal.example".into()],
        ..ServerTls::default()
    };
    let (cluster, db, _port) =
        refused_under_verify_full(elsewhere, TlsFailure::HostNameMismatch).await;

    let ca = db.url_with(&verified(&cluster, "verify-ca"));
    ping(&database(&ca)).await.unwrap();
    // libpq: require with a CA file verifies like verify-ca, so the CA is checked.
    let require = db.url_with(&verified(&cluster, "require"));
    ping(&database(&require)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = untrusted_ca_file(dir.path(), "other.crt").unwrap();
    let other = [
        ("sslmode", "require"),
        ("sslrootcert", other.to_str().unwrap()),
    ];
    assert_eq!(
        ping(&database(&db.url_with(&other))).await,
        tls_failure(TlsFailure::UntrustedCertificate)
    );
}

#[tokio::test]
async fn require_is_refused_by_a_server_without_tls_and_prefer_falls_back() {
    let cluster = PgCluster::start().await.unwrap();
    let db: TestDatabase = cluster.migrated_database().await.unwrap();

    let require = db.url_with(&[("sslmode", "require")]);
    assert_eq!(
        ping(&database(&require)).await,
        Err(StoreError::Unavailable(Unavailability::TlsNotOffered))
    );
    let port = spawn_app(&require, &[]);
    let (status, body) = get(port, "/health").await;
    assert_eq!(
        (status, &body["error"]),
        (503, &"server does not offer tls".into())
    );

    let port = spawn_app(&db.url_with(&[("sslmode", "prefer")]), &[]);
    assert_eq!(get(port, "/health").await.0, 200);
    let (connections, encrypted) = encrypted_connections(&cluster, "counseling-api").await;
    assert!(connections >= 1);
    assert_eq!(encrypted, 0);

    // And where the server offers TLS, prefer takes it.
    let tls = tls_cluster();
    let db = tls.migrated_database().await.unwrap();
    let name = "prefer-takes-tls";
    let port = spawn_app(
        &db.url_with(&[("sslmode", "prefer"), ("application_name", name)]),
        &[],
    );
    assert_eq!(get(port, "/health").await.0, 200);
    let (connections, encrypted) = encrypted_connections(tls, name).await;
    assert!(connections >= 1);
    assert_eq!(encrypted, connections);
}

#[tokio::test]
async fn a_client_certificate_cluster_admits_only_clients_with_a_certificate() {
    let client_certificates = ServerTls {
        client_certificates: true,
        ..ServerTls::default()
    };
    let cluster = PgCluster::start_tls(client_certificates).await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let (cert, key) = cluster.tls_files().unwrap().client.clone().unwrap();
    let mut with_certificate = verified(&cluster, "verify-full");
    with_certificate.extend([
        ("sslcert", cert.to_str().unwrap()),
        ("sslkey", key.to_str().unwrap()),
    ]);
    let port = spawn_app(&db.url_with(&with_certificate), &[]);
    assert_eq!(get(port, "/health").await.0, 200);

    let without = db.url_with(&verified(&cluster, "verify-full"));
    let refused = ping(&database(&without)).await;
    assert_eq!(
        refused,
        Err(StoreError::Unavailable(
            Unavailability::AuthenticationFailed
        ))
    );
    let port = spawn_app(&without, &[]);
    assert_eq!(get(port, "/health").await.0, 503);
}
