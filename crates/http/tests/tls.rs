//! TLS to PostgreSQL against clusters of the test kit that serve TLS with certificates made in
//! the run: libpq's sslmodes, wrong CAs and host names, client certificates, and proof from the
//! server (`pg_stat_ssl`) that the service's connections are encrypted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use counseling_domain::{NewUser, PasswordHash, UserRepository, Username};
use counseling_http::{Application, Settings};
use counseling_persistence::{
    Database, DatabaseSettings, PgUserRepository, StoreError, TlsFailure, Unavailability,
};
use counseling_testkit::tls::{CertificateAuthority, ServerTls};
use counseling_testkit::{ClusterOptions, PgCluster, TestDatabase};
use sea_orm::sqlx::{self, Connection, PgConnection};
use serde_json::Value;

/// One TLS cluster (certificate for localhost and 127.0.0.1) shared by the tests that do not
/// break it; it also accepts plaintext, so that `pg_stat_ssl` can tell the two apart.
fn tls_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        PgCluster::start_blocking_with(ClusterOptions {
            tls: Some(ServerTls::default()),
            ..ClusterOptions::default()
        })
        .unwrap()
    })
}

fn root_cert(cluster: &PgCluster) -> String {
    path_text(&cluster.tls_files().unwrap().root_cert)
}

fn path_text(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn with_params(url: &str, params: &str) -> String {
    format!("{url}?{params}")
}

async fn get(port: u16, path: &str) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = agent.get(&url).call().unwrap();
        let status = response.status().as_u16();
        let body = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    })
    .await
    .unwrap()
}

/// The app on a free port with its own runtime for database I/O; stops with the test.
fn spawn_app(database_url: &str) -> u16 {
    let settings = Settings::from_vars([("DATABASE_URL", database_url), ("APP_PORT", "0")])
        .unwrap_or_else(|error| panic!("{error}"));
    let application = Application::build(&settings, tokio::runtime::Handle::current()).unwrap();
    let port = application.port();
    tokio::spawn(application.run());
    port
}

fn database(url: String) -> Database {
    let mut settings = DatabaseSettings::new(counseling_config::DatabaseUrl::parse(&url).unwrap());
    settings.pool.min_connections = 0;
    settings.pool.max_connections = 2;
    settings.pool.acquire_timeout = Duration::from_secs(3);
    settings.application_name = "tls-test".into();
    Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap()
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

async fn wait_for_status(port: u16, status: u16, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (now, body) = get(port, "/health").await;
        if now == status {
            return body;
        }
        assert!(Instant::now() < deadline, "still {now} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn verify_full_with_the_right_ca_works_and_is_encrypted() {
    let cluster = tls_cluster();
    let db = cluster.migrated_database().await.unwrap();
    let url = with_params(
        &db.url(),
        &format!("sslmode=verify-full&sslrootcert={}", root_cert(cluster)),
    );

    let port = spawn_app(&url);
    let (status, body) = get(port, "/health").await;
    assert_eq!(status, 200, "{body}");
    let (connections, encrypted) = encrypted_connections(cluster, "counseling-api").await;
    assert!(connections >= 1);
    assert_eq!(encrypted, connections, "every connection of the service");

    let users = PgUserRepository::new(database(url));
    let created = users
        .create(NewUser {
            username: Username::parse(r"\campus\tls").unwrap(),
            password_hash: PasswordHash::parse(
                "$2b$12$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
            )
            .unwrap(),
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
    let mut settings = DatabaseSettings::new(
        counseling_config::DatabaseUrl::parse(&with_params(&db.url(), "sslmode=disable")).unwrap(),
    );
    settings.pool.min_connections = 0;
    settings.application_name = "plaintext-test".into();
    let plain = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
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
    let dir = tempdir("wrong-ca");
    let ca_file = dir.join("ca.crt");
    let other_ca = CertificateAuthority::new("someone else").unwrap();
    std::fs::write(&ca_file, other_ca.certificate_pem()).unwrap();
    let url = with_params(
        &db.url(),
        &format!("sslmode=verify-full&sslrootcert={}", path_text(&ca_file)),
    );

    assert_eq!(
        ping(&database(url.clone())).await,
        tls_failure(TlsFailure::UntrustedCertificate)
    );
    let port = spawn_app(&url);
    for _ in 0..3 {
        let (status, body) = get(port, "/health").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "tls handshake failed");
        assert_eq!(get(port, "/health/live").await.0, 200);
    }
    // The driver reads the CA file at every connection attempt: fixing it is enough.
    std::fs::copy(&cluster.tls_files().unwrap().root_cert, &ca_file).unwrap();
    wait_for_status(port, 200, Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `system` trusts the public roots only: a server with a certificate from a private CA is
/// refused, as by libpq.
#[tokio::test]
async fn system_roots_refuse_a_private_ca() {
    let db = tls_cluster().migrated_database().await.unwrap();
    let url = with_params(&db.url(), "sslrootcert=system");
    assert_eq!(
        ping(&database(url)).await,
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
    let cluster = PgCluster::start_with(ClusterOptions {
        tls: Some(tls),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let root = root_cert(&cluster);
    let full = with_params(
        &db.url(),
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    assert_eq!(ping(&database(full.clone())).await, tls_failure(why));
    let port = spawn_app(&full);
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
    let plain = with_params(&db.url(), "sslmode=disable");
    ping(&database(plain)).await.unwrap();
}

#[tokio::test]
async fn a_host_name_mismatch_fails_verify_full_but_passes_verify_ca() {
    let elsewhere = ServerTls {
        server_names: vec!["db.internal.example".into()],
        ..ServerTls::default()
    };
    let (cluster, db, _port) =
        refused_under_verify_full(elsewhere, TlsFailure::HostNameMismatch).await;
    let root = root_cert(&cluster);

    let ca = with_params(&db.url(), &format!("sslmode=verify-ca&sslrootcert={root}"));
    ping(&database(ca.clone())).await.unwrap();
    // libpq: require with a CA file verifies like verify-ca, so the CA is checked.
    let require = with_params(&db.url(), &format!("sslmode=require&sslrootcert={root}"));
    ping(&database(require)).await.unwrap();
    let dir = tempdir("mismatch");
    let other = dir.join("other.crt");
    std::fs::write(
        &other,
        CertificateAuthority::new("other")
            .unwrap()
            .certificate_pem(),
    )
    .unwrap();
    let require_other = with_params(
        &db.url(),
        &format!("sslmode=require&sslrootcert={}", path_text(&other)),
    );
    assert_eq!(
        ping(&database(require_other)).await,
        tls_failure(TlsFailure::UntrustedCertificate)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn require_is_refused_by_a_server_without_tls_and_prefer_falls_back() {
    let cluster = PgCluster::start().await.unwrap();
    let db: TestDatabase = cluster.migrated_database().await.unwrap();

    let require = with_params(&db.url(), "sslmode=require");
    assert_eq!(
        ping(&database(require.clone())).await,
        Err(StoreError::Unavailable(Unavailability::TlsNotOffered))
    );
    let port = spawn_app(&require);
    let (status, body) = get(port, "/health").await;
    assert_eq!(
        (status, &body["error"]),
        (503, &"server does not offer tls".into())
    );

    let port = spawn_app(&with_params(&db.url(), "sslmode=prefer"));
    assert_eq!(get(port, "/health").await.0, 200);
    let (connections, encrypted) = encrypted_connections(&cluster, "counseling-api").await;
    assert!(connections >= 1);
    assert_eq!(encrypted, 0);
}

#[tokio::test]
async fn a_client_certificate_cluster_admits_only_clients_with_a_certificate() {
    let cluster = PgCluster::start_with(ClusterOptions {
        tls: Some(ServerTls {
            client_certificates: true,
            ..ServerTls::default()
        }),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let files = cluster.tls_files().unwrap();
    let (cert, key) = files.client.clone().unwrap();
    let base = format!("sslmode=verify-full&sslrootcert={}", root_cert(&cluster));

    let with_certificate = with_params(
        &db.url(),
        &format!(
            "{base}&sslcert={}&sslkey={}",
            path_text(&cert),
            path_text(&key)
        ),
    );
    let port = spawn_app(&with_certificate);
    assert_eq!(get(port, "/health").await.0, 200);

    let without = with_params(&db.url(), &base);
    let refused = ping(&database(without.clone())).await;
    assert_eq!(
        refused,
        Err(StoreError::Unavailable(
            Unavailability::AuthenticationFailed
        ))
    );
    let port = spawn_app(&without);
    assert_eq!(get(port, "/health").await.0, 503);
}

fn tempdir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tls-test-{label}-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
