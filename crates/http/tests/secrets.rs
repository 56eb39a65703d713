//! The database password from a mounted secret file, rotated as Kubernetes rotates it, without a
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)] // a private cluster of the test's own, and symlinks

mod common;

use std::path::Path;
use std::time::Duration;

use common::spawn_app;
use counseling_testkit::PgCluster;
use counseling_testkit::fixtures::{eventually, get_local};
use sea_orm::sqlx::{self, Connection, PgConnection};

async fn health_status(port: u16) -> u16 {
    get_local(port, "/health").await.unwrap().status
}

/// Writes `password` as Kubernetes publishes a secret: into a new folder `..<version>`, then
/// `..data` is switched to it by an atomic rename; `password` is a symlink to `..data/password`.
fn publish(dir: &Path, version: u32, password: &str) {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let folder = format!("..{version}");
    std::fs::create_dir(dir.join(&folder)).unwrap();
    let file = dir.join(&folder).join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    // Kubernetes' default mode: the service says so, and works.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    symlink(&folder, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("password").exists() {
        symlink("..data/password", dir.join("password")).unwrap();
    }
}

/// The service role's URL without its password.
fn without_password(url: &str) -> String {
    let (scheme_user, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    format!("{scheme_user}://{user}@{host}")
}

/// The app on `url` less its password, which it reads from a secret published as version 1 (in
/// the folder returned). It opens only the connections probes need: none is still
/// authenticating with a password the test then changes or removes.
fn spawn_with_a_published_password(url: &str) -> (u16, tempfile::TempDir) {
    let password = {
        use secrecy::ExposeSecret;
        let url = counseling_config::DatabaseUrl::parse(url).unwrap();
        url.password().unwrap().expose_secret().to_owned()
    };
    let secrets = tempfile::tempdir().unwrap();
    publish(secrets.path(), 1, &password);
    let password_file = secrets.path().join("password");
    let port = spawn_app(
        &without_password(url),
        &[
            ("DATABASE_PASSWORD_FILE", password_file.to_str().unwrap()),
            ("DATABASE_MIN_CONNECTIONS", "0"),
        ],
    );
    (port, secrets)
}

#[tokio::test]
async fn a_rotated_password_file_is_used_by_new_connections_without_a_restart() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let service_url = counseling_config::DatabaseUrl::parse(&db.url()).unwrap();
    let role = service_url.username().to_owned();
    let old_password = {
        use secrecy::ExposeSecret;
        service_url.password().unwrap().expose_secret().to_owned()
    };
    let (port, secrets) = spawn_with_a_published_password(&db.url());
    assert_eq!(health_status(port).await, 200);

    // Rotate: the role's password changes, the secret is republished, and the service's
    // sessions end (as when the operator also ends them, or the server restarts).
    let mut admin = PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    let new_password = "r0tated-Secret-2";
    cluster.set_password(&role, new_password).await.unwrap();
    publish(secrets.path(), 2, new_password);
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role)
        .execute(&mut admin)
        .await
        .unwrap();

    let healthy = async || health_status(port).await == 200;
    let within = "healthy again after the rotation";
    eventually(within, Duration::from_secs(2), healthy)
        .await
        .unwrap();
    // The old password no longer works: the service really uses the new one.
    let mut old = counseling_config::DatabaseUrl::parse(&db.url())
        .unwrap()
        .connect_options();
    old = old.password(&old_password);
    let refused = PgConnection::connect_with(&old).await.unwrap_err();
    let code = refused.as_database_error().and_then(|error| error.code());
    assert_eq!(code.as_deref(), Some("28P01"), "{refused}");
}

/// A password file gone (an unmounted secret) fails each new connection: the probe says so
/// with the reason a wrong password gives, and without the file's path.
#[tokio::test]
async fn a_password_file_gone_after_start_is_an_authentication_failure() {
    let db = counseling_testkit::TestDatabase::migrated().await.unwrap();
    let (port, secrets) = spawn_with_a_published_password(&db.url());
    std::fs::remove_dir_all(secrets.path().join("..1")).unwrap();
    let reply = get_local(port, "/health").await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(
        reply.json()["error"],
        "authentication failed",
        "{}",
        reply.body
    );
    let folder = secrets.path().display().to_string();
    assert!(!reply.body.contains(&folder), "{}", reply.body);
}
