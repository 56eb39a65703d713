//! What tests share besides a database, written once: a bcrypt hash, the settings of a pool
//! under test, a role's powers, an HTTP GET that takes every status as an answer, waiting with
//! a deadline, and the median of measured values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use counseling_config::DatabaseUrl;
use counseling_persistence::DatabaseSettings;

use crate::{Result, TestkitError};

pub use counseling_provision::http::{Reply, get, get_async, send};
pub use counseling_provision::server::free_port;
pub use counseling_provision::wait::{Outcome, eventually, wait_until};

/// A real cost-12 bcrypt hash, of `fixture password`, written once: hashing a password costs
/// ~0.2 s per user.
pub const BCRYPT_HASH: &str = "$2b$12$c5G8mzpnmaf2UPnIusjhHuPqJp12Sa.rNY.T9.H7r1WW91mZgm6Sq";
/// Another one, of `other fixture password`, for tests that need two different hashes.
pub const OTHER_BCRYPT_HASH: &str = "$2b$12$wZZPc2Khm11zmM0elFvV9e2.o3aybwQCPBiwwwnQ/VYKcrmcF6JPW";

/// The settings of a pool under test on `url`: small (many tests share one server) and quick to
/// give up (at most 5 connections, none kept idle, 2 s to acquire one).
pub fn pool_settings(url: &str) -> Result<DatabaseSettings> {
    DatabaseUrl::parse(url)
        .map(small_pool)
        .map_err(|error| TestkitError::Failed(format!("the pool's URL {error}")))
}

pub(crate) fn small_pool(url: DatabaseUrl) -> DatabaseSettings {
    let mut settings = DatabaseSettings::new(url);
    settings.pool.min_connections = 0;
    settings.pool.max_connections = 5;
    settings.pool.acquire_timeout = Duration::from_secs(2);
    settings
}

/// What `role` may do beyond logging in (`SUPERUSER`, `CREATEDB`, `CREATEROLE`, `REPLICATION`,
/// `BYPASSRLS`), and `NOLOGIN` if it cannot log in: empty for the powers every application role
/// of ours has (`provision::roles::ensure_login_role`, compose's `03-roles.sql`).
pub async fn powers_beyond_login(
    admin: &mut sea_orm::sqlx::PgConnection,
    role: &str,
) -> Result<Vec<&'static str>> {
    let flags: (bool, bool, bool, bool, bool, bool) = sea_orm::sqlx::query_as(
        "SELECT NOT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, \
         rolbypassrls FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_one(admin)
    .await
    .map_err(TestkitError::db("reading a role's powers"))?;
    let (no_login, superuser, create_db, create_role, replication, bypass_rls) = flags;
    let powers = [
        (no_login, "NOLOGIN"),
        (superuser, "SUPERUSER"),
        (create_db, "CREATEDB"),
        (create_role, "CREATEROLE"),
        (replication, "REPLICATION"),
        (bypass_rls, "BYPASSRLS"),
    ];
    Ok(powers
        .into_iter()
        .filter_map(|(held, name)| held.then_some(name))
        .collect())
}

/// `GET http://127.0.0.1:{port}{path}` from async code, within 10 s.
pub async fn get_local(port: u16, path: &str) -> Result<Reply> {
    get_async(
        &format!("http://127.0.0.1:{port}{path}"),
        &[],
        Duration::from_secs(10),
    )
    .await
}

/// Writes the certificate of a new CA, which nothing trusts, to `dir/name`: an `sslrootcert`
/// that verifies no server of ours.
pub fn untrusted_ca_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let ca = crate::tls::CertificateAuthority::new("nobody's CA")?;
    let path = dir.join(name);
    counseling_provision::files::write_private(&path, ca.certificate_pem())?;
    Ok(path)
}

/// A stand-in server on 127.0.0.1 that answers every startup message with an Authentication
/// message whose length field is 0 (a frame shorter than its own length prefix), as a man in
/// the middle or a compromised server could; sqlx 0.9 panics reading it. Runs until the
/// runtime ends; returns its port.
pub async fn malformed_postgres() -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| TestkitError::Failed(format!("binding a port: {error}")))?;
    let port = listener
        .local_addr()
        .map_err(|error| TestkitError::Failed(format!("the bound port: {error}")))?
        .port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The startup message: its length, then the rest of it.
                let Ok(length) = client.read_u32().await else {
                    return;
                };
                let mut rest = vec![0; usize::try_from(length).unwrap_or(8).saturating_sub(4)];
                if client.read_exact(&mut rest).await.is_ok() {
                    let _ = client.write_all(b"R\0\0\0\0").await;
                    let _ = client.flush().await;
                    // Held open: the client must not take a closed socket for the answer.
                    let _ = client.read_to_end(&mut Vec::new()).await;
                }
            });
        }
    });
    Ok(port)
}

/// The median of `values`: the lower of the two middle values of an even count, so that it is
/// always a value measured. `None` when empty, or when a value does not compare with itself
/// (`NaN`: a failed measure has no place in the order).
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    if values
        .iter()
        .any(|value| value.partial_cmp(value).is_none())
    {
        return None;
    }
    let mut sorted = values.to_vec();
    // Every value compares with itself, so with every other: the fallback is never taken.
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_lower_middle_and_none_without_an_order() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        let millis = |values: &[u64]| {
            values
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            median(&millis(&[40, 10, 30, 20])),
            Some(Duration::from_millis(20)),
            "the lower middle of an even count"
        );
        assert_eq!(median::<f64>(&[]), None);
        assert_eq!(median(&[0.93, f64::NAN, 0.96]), None);
        assert_eq!(median(&[f64::NAN]), None);
    }
}
