//! What tests share besides a database, written once: a fake bcrypt hash, the settings of a pool
//! under test, an HTTP GET that takes every status as an answer, and waiting with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use counseling_config::DatabaseUrl;
use counseling_persistence::DatabaseSettings;

use crate::{Result, TestkitError};

pub use counseling_provision::http::{Reply, get, get_async};
pub use counseling_provision::wait::{Outcome, eventually, wait_until};

/// A well-formed cost-12 bcrypt hash (of no password anyone knows): hashing a real password
/// costs ~0.2 s per user.
pub const BCRYPT_HASH: &str = "$2b$12$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234";
/// Another one, for tests that need two different hashes.
pub const OTHER_BCRYPT_HASH: &str = "$2b$12$ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba9";

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
