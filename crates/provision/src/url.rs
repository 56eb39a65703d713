//! Database URLs of our servers, built from parts: the one place our tools make a URL.

use counseling_config::{DatabaseUrl, UrlParts};
use secrecy::{ExposeSecret, SecretString};

use crate::{ProvisionError, Result};

/// `postgres://user:password@127.0.0.1:port/database?parameters`, every part percent-encoded by
/// `DatabaseUrl::from_parts`, so a password of any characters stays a password.
pub fn local_url(
    port: u16,
    user: &str,
    password: Option<&SecretString>,
    database: &str,
    parameters: &[(&str, &str)],
) -> Result<DatabaseUrl> {
    let password = password.map(ExposeSecret::expose_secret);
    let parts = UrlParts {
        host: "127.0.0.1",
        port,
        user,
        password,
        database,
        parameters,
    };
    DatabaseUrl::from_parts(parts)
        .map_err(|error| ProvisionError::Failed(format!("a URL for {user} on {database} {error}")))
}

/// `url` naming `database` instead, with `parameters` added to its own.
pub fn with_database(
    url: &DatabaseUrl,
    database: &str,
    parameters: &[(&str, &str)],
) -> Result<DatabaseUrl> {
    let mut all: Vec<(&str, &str)> = url.parameters().collect();
    all.extend_from_slice(parameters);
    let password = url.password().map(ExposeSecret::expose_secret);
    let (host, port, user) = (url.host(), url.port(), url.username());
    let parts = UrlParts {
        host,
        port,
        user,
        password,
        database,
        parameters: &all,
    };
    DatabaseUrl::from_parts(parts)
        .map_err(|error| ProvisionError::Failed(format!("a URL for {database} {error}")))
}
