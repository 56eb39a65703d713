//! TLS to PostgreSQL with libpq's settings and meanings.
//!
//! The driver (sqlx on rustls) does the handshake. What it lacks is added here, at start-up:
//!
//! * [`precedence`]: where each setting comes from (the overrides `DATABASE_SSL_MODE` and
//!   `DATABASE_SSL_ROOT_CERT`, the URL, libpq's `PG*` variables, libpq's default), libpq's rules
//!   (`require` with a CA file verifies like `verify-ca`; `verify-*` need `sslrootcert`;
//!   `system` means verify-full) and that an override never weakens what another source asked.
//! * [`files`]: every CA, certificate and key file named is read and parsed now (and a key must be
//!   private, as libpq demands), so a bad file is a configuration error at start.
//! * [`roots`]: `sslrootcert=system`, the public roots compiled into the binary. A CA file is the
//!   whole trust, as in libpq (the driver's built-in roots are patched away).
//! * `allow` is refused: the driver treats it as `disable`, which is not what libpq does.

mod files;
mod precedence;
mod roots;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) use precedence::{MODE_OVERRIDE, ROOT_CERT_OVERRIDE, TlsInputs, resolve};
#[cfg(all(test, unix))]
pub(crate) use roots::public_roots_pem;

use crate::Problem;

/// libpq's `sslmode`, less `allow` (see the module docs), weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS if the server offers it, without verifying the certificate; plaintext otherwise.
    /// libpq's default.
    Prefer,
    /// TLS or nothing, without verifying the certificate (unless a CA file is given: then as
    /// `VerifyCa`).
    Require,
    /// TLS, with a certificate issued by a trusted CA, for any host name.
    VerifyCa,
    /// TLS, with a certificate issued by a trusted CA for the host name connected to.
    VerifyFull,
}

impl SslMode {
    pub const fn as_str(&self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn driver_mode(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `sslmode` value that is not one of the supported five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedSslMode(&'static str);

impl FromStr for SslMode {
    type Err = UnsupportedSslMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(UnsupportedSslMode(
                "allow is not supported (use prefer, or disable)",
            )),
            _ => Err(UnsupportedSslMode(
                "must be one of disable, prefer, require, verify-ca, verify-full",
            )),
        }
    }
}

impl Serialize for SslMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SslMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(|error: UnsupportedSslMode| serde::de::Error::custom(error.0))
    }
}

/// Which certificate authorities to trust: libpq's `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslRootCert {
    /// `system`: the public roots compiled into the binary (Mozilla's list).
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

impl SslRootCert {
    /// `system`, else a path (as libpq reads the value).
    pub fn parse(text: &str) -> Self {
        if text == "system" {
            SslRootCert::System
        } else {
            SslRootCert::File(PathBuf::from(text))
        }
    }
}

impl fmt::Display for SslRootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SslRootCert::System => f.write_str("system"),
            SslRootCert::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for SslRootCert {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(SslRootCert::parse(text))
    }
}

impl Serialize for SslRootCert {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SslRootCert {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SslRootCert::parse(&String::deserialize(deserializer)?))
    }
}

/// Where a TLS setting was found, to name it in a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSource {
    /// The URL's parameter of this name.
    Url(&'static str),
    /// libpq's environment variable of this name (the URL leaves the parameter out).
    Environment(&'static str),
    /// Our override variable of this name (`DATABASE_SSL_MODE`, `DATABASE_SSL_ROOT_CERT`).
    Override(&'static str),
}

/// What is wrong with one TLS setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem {
    pub source: TlsSource,
    pub problem: String,
}

impl TlsProblem {
    pub(crate) fn new(source: TlsSource, problem: impl Into<String>) -> Self {
        Self {
            source,
            problem: problem.into(),
        }
    }

    /// One line for the user, named by the variable they would change: the override or libpq
    /// variable itself, else `url_variable` (such as `DATABASE_URL`) and the parameter in it.
    pub fn to_problem(&self, url_variable: &str) -> Problem {
        match self.source {
            TlsSource::Url(parameter) => Problem::new(
                url_variable,
                format!(
                    "has a bad TLS parameter: {parameter} (in the database URL): {}",
                    self.problem
                ),
            ),
            TlsSource::Environment(variable) | TlsSource::Override(variable) => {
                Problem::new(variable, self.problem.clone())
            }
        }
    }
}

/// The TLS settings in effect, checked: every file named was read and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    mode: SslMode,
    root_cert: Option<SslRootCert>,
    /// A client certificate and its key, sent when the server asks for one.
    client: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    pub fn root_cert(&self) -> Option<&SslRootCert> {
        self.root_cert.as_ref()
    }

    /// Applies these settings to the driver's options, for one connection: the files named are
    /// read and checked now (as at start), and the driver gets what they hold. Given a path,
    /// it would read the file again itself, unchecked: a CA file made group-writable, or a
    /// symlink pointed elsewhere, after start would choose the server.
    pub fn apply(&self, options: PgConnectOptions) -> Result<PgConnectOptions, String> {
        let mut options = options.ssl_mode(self.mode.driver_mode());
        options = match &self.root_cert {
            Some(SslRootCert::File(path)) => {
                options.ssl_root_cert_from_pem(files::read_ca_file(path)?)
            }
            Some(SslRootCert::System) => {
                options.ssl_root_cert_from_pem(roots::public_roots_pem().to_vec())
            }
            None => options,
        };
        if let Some((certificate, key)) = &self.client {
            options = options
                .ssl_client_cert_from_pem(files::read_certificate_file(certificate)?)
                .ssl_client_key_from_pem(files::read_key_file(key)?);
        }
        Ok(options)
    }
}
