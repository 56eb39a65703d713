//! TLS to PostgreSQL with libpq's settings and meanings.
//!
//! The driver (sqlx on rustls) parses `sslmode`, `sslrootcert`, `sslcert` and `sslkey` from the
//! URL and does the handshake. What it lacks is added here, at start-up:
//!
//! * libpq's rules: `require` with a CA file verifies like `verify-ca`; `verify-ca`/`verify-full`
//!   without `sslrootcert` are refused (libpq would look for `~/.postgresql/root.crt`; we ask for
//!   the file, or `system`, explicitly); `sslrootcert=system` means the public roots compiled into
//!   the binary (Mozilla's, via webpki-root-certs), defaults to `verify-full` and refuses weaker
//!   modes.
//! * A CA file is the whole trust, as in libpq. The driver would add it to Mozilla's roots; the
//!   workspace patches those away (crates/webpki-roots-none), and `system` passes them in itself.
//! * `allow` is refused: the driver treats it as `disable`, which is not what libpq does.
//! * Every CA, certificate and key file named is read and parsed now, so a missing or malformed
//!   file is a configuration error at start, not a connection failure at the first request.
//! * The overrides `DATABASE_SSL_MODE` and `DATABASE_SSL_ROOT_CERT` ([`TlsOverrides`]) win over
//!   the URL's parameters.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{DatabaseUrl, Problem, Problems};

/// The variables that override the URL's TLS parameters, for deployments that keep paths out of
/// the URL: `DATABASE_SSL_MODE` and `DATABASE_SSL_ROOT_CERT` (read with
/// `Sources::group::<TlsOverrides>("DATABASE")`). They win over the URL's `sslmode` and
/// `sslrootcert`. The migration CLI reads them so; the service reads the same two fields as part
/// of its `DatabaseSettings` (a test there checks that the names agree).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TlsOverrides {
    /// Overrides the URL's `sslmode`; unset keeps the URL's (libpq's default: `prefer`).
    #[serde(default, deserialize_with = "crate::empty_is_none")]
    pub ssl_mode: Option<SslMode>,
    /// Overrides the URL's `sslrootcert` (a CA file, or `system`); unset keeps the URL's.
    #[serde(default, deserialize_with = "crate::empty_is_none")]
    pub ssl_root_cert: Option<SslRootCert>,
}

impl TlsOverrides {
    /// The TLS settings in effect for `url` with these overrides: see [`resolve`].
    pub fn resolve(&self, url: &DatabaseUrl) -> Result<ResolvedTls, TlsErrors> {
        resolve(url, self.ssl_mode, self.ssl_root_cert.as_ref())
    }
}

/// A TLS setting that is invalid, or a file it names that cannot be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct TlsError {
    pub setting: TlsSetting,
    pub problem: String,
}

/// libpq's `sslmode`, less `allow` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Serialize for SslRootCert {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SslRootCert::System => serializer.serialize_str("system"),
            SslRootCert::File(path) => serializer.serialize_str(&path.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for SslRootCert {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SslRootCert::parse(&String::deserialize(deserializer)?))
    }
}

impl FromStr for SslRootCert {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(SslRootCert::parse(text))
    }
}

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

/// The setting a TLS configuration error is about. The URL's parameters are named as in the
/// URL; the overrides by their field names (the binary maps those to its variables); libpq's
/// environment variables by their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSetting {
    SslMode,
    SslRootCert,
    UrlSslMode,
    UrlSslRootCert,
    UrlSslCert,
    UrlSslKey,
    EnvSslMode,
    EnvSslRootCert,
    EnvSslCert,
    EnvSslKey,
}

impl TlsSetting {
    /// libpq's environment variable for a URL parameter, read when the URL does not set it.
    fn environment_variable(self) -> Option<&'static str> {
        match self {
            TlsSetting::EnvSslMode => Some("PGSSLMODE"),
            TlsSetting::EnvSslRootCert => Some("PGSSLROOTCERT"),
            TlsSetting::EnvSslCert => Some("PGSSLCERT"),
            TlsSetting::EnvSslKey => Some("PGSSLKEY"),
            _ => None,
        }
    }
}

impl fmt::Display for TlsSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsSetting::SslMode => "ssl_mode",
            TlsSetting::SslRootCert => "ssl_root_cert",
            TlsSetting::UrlSslMode => "sslmode (in the database URL)",
            TlsSetting::UrlSslRootCert => "sslrootcert (in the database URL)",
            TlsSetting::UrlSslCert => "sslcert (in the database URL)",
            TlsSetting::UrlSslKey => "sslkey (in the database URL)",
            setting => setting.environment_variable().unwrap_or_default(),
        })
    }
}

/// Every TLS setting found wrong (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct TlsErrors(pub Vec<TlsError>);

impl TlsErrors {
    /// One problem per setting: see [`TlsError::to_problem`].
    pub fn to_problems(&self, url_variable: &str) -> Problems {
        Problems(
            self.0
                .iter()
                .map(|error| error.to_problem(url_variable))
                .collect(),
        )
    }
}

impl TlsError {
    /// This problem, named by the variable a user would change: `DATABASE_SSL_MODE` or
    /// `DATABASE_SSL_ROOT_CERT` for the overrides, else `url_variable` (e.g. `DATABASE_URL`).
    pub fn to_problem(&self, url_variable: &str) -> Problem {
        match self.setting {
            TlsSetting::SslMode => Problem::new("DATABASE_SSL_MODE", self.problem.clone()),
            TlsSetting::SslRootCert => Problem::new("DATABASE_SSL_ROOT_CERT", self.problem.clone()),
            setting => match setting.environment_variable() {
                Some(variable) => Problem::new(variable, self.problem.clone()),
                None => Problem::new(url_variable, format!("has a bad TLS parameter: {self}")),
            },
        }
    }
}

fn tls_error(setting: TlsSetting, problem: impl Into<String>) -> TlsError {
    TlsError {
        setting,
        problem: problem.into(),
    }
}

/// libpq's TLS parameters as written, each with where it came from: the URL (the driver's
/// aliases included; the last one wins, as in the driver), else libpq's environment variable
/// (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`), which the driver reads too.
#[derive(Debug, Default)]
struct LibpqTls {
    mode: Option<(String, TlsSetting)>,
    root_cert: Option<(String, TlsSetting)>,
    cert: Option<(String, TlsSetting)>,
    key: Option<(String, TlsSetting)>,
}

impl LibpqTls {
    fn read(url: &DatabaseUrl, environment: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut found = LibpqTls::default();
        for (key, value) in url.parameters() {
            let (slot, setting) = match key {
                "sslmode" | "ssl-mode" => (&mut found.mode, TlsSetting::UrlSslMode),
                "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                    (&mut found.root_cert, TlsSetting::UrlSslRootCert)
                }
                "sslcert" | "ssl-cert" => (&mut found.cert, TlsSetting::UrlSslCert),
                "sslkey" | "ssl-key" => (&mut found.key, TlsSetting::UrlSslKey),
                _ => continue,
            };
            *slot = Some((value.to_owned(), setting));
        }
        for (slot, setting) in [
            (&mut found.mode, TlsSetting::EnvSslMode),
            (&mut found.root_cert, TlsSetting::EnvSslRootCert),
            (&mut found.cert, TlsSetting::EnvSslCert),
            (&mut found.key, TlsSetting::EnvSslKey),
        ] {
            if slot.is_none() {
                *slot = setting
                    .environment_variable()
                    .and_then(environment)
                    .filter(|value| !value.is_empty())
                    .map(|value| (value, setting));
            }
        }
        found
    }
}

/// The TLS settings in effect, checked: every file named was read and parsed.
#[derive(Debug)]
pub struct ResolvedTls {
    mode: SslMode,
    root_cert: Option<SslRootCert>,
}

impl ResolvedTls {
    /// Applies these settings to the driver's options (parsed from the same URL).
    pub fn apply(self, options: PgConnectOptions) -> PgConnectOptions {
        let options = options.ssl_mode(self.mode.driver_mode());
        match self.root_cert {
            Some(SslRootCert::File(path)) => options.ssl_root_cert(path),
            // Also replaces a `system` in the URL, which the driver would take for a path.
            Some(SslRootCert::System) => {
                options.ssl_root_cert_from_pem(public_roots_pem().to_vec())
            }
            None => options,
        }
    }
}

/// Roots that Mozilla trusts for some domains only. A PEM bundle cannot carry that limit, so
/// these are left out of `system` rather than trusted for every host name. The subject's common
/// name, as it appears in the certificate (webpki-roots lists the constraint: `.tr` only).
const NAME_CONSTRAINED_ROOTS: &[&[u8]] = &[b"TUBITAK Kamu SM SSL Kok Sertifikasi - Surum 1"];

fn is_name_constrained(root: &[u8]) -> bool {
    NAME_CONSTRAINED_ROOTS
        .iter()
        .any(|name| root.windows(name.len()).any(|window| window == *name))
}

/// Mozilla's roots as one PEM bundle, the form the driver takes CAs in, less those Mozilla
/// constrains to some domains; built once.
fn public_roots_pem() -> &'static [u8] {
    static PEM: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut pem = String::new();
        for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter(|root| !is_name_constrained(root.as_ref()))
        {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            // 48 bytes make one 64-character PEM line.
            for line in root.as_ref().chunks(48) {
                BASE64.encode_string(line, &mut pem);
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    });
    &PEM
}

/// Works out the TLS settings from `url` and the overrides, with libpq's rules, and checks every
/// file they name. Precedence, highest first: the overrides, the URL's parameters, libpq's
/// environment variables (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`), libpq's
/// default. Runs before the driver parses the URL, so that a bad `sslmode` is reported as such.
pub fn resolve(
    url: &DatabaseUrl,
    mode_override: Option<SslMode>,
    root_cert_override: Option<&SslRootCert>,
) -> Result<ResolvedTls, TlsErrors> {
    resolve_in(url, mode_override, root_cert_override, &|name| {
        std::env::var(name).ok()
    })
}

/// [`resolve`] with `environment` for the process environment.
fn resolve_in(
    url: &DatabaseUrl,
    mode_override: Option<SslMode>,
    root_cert_override: Option<&SslRootCert>,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedTls, TlsErrors> {
    let from_url = LibpqTls::read(url, environment);

    let (mode, mode_setting) = match (mode_override, &from_url.mode) {
        (Some(mode), _) => (Ok(Some(mode)), TlsSetting::SslMode),
        (None, Some((text, setting))) => (
            text.parse::<SslMode>()
                .map(Some)
                .map_err(|error| tls_error(*setting, error.0)),
            *setting,
        ),
        (None, None) => (Ok(None), TlsSetting::UrlSslMode),
    };
    let (root_cert, root_setting) = match (root_cert_override, &from_url.root_cert) {
        (Some(root), _) => (Some(root.clone()), TlsSetting::SslRootCert),
        (None, Some((text, setting))) => (Some(SslRootCert::parse(text)), *setting),
        (None, None) => (None, TlsSetting::UrlSslRootCert),
    };

    // Every problem is found, not just the first, so that all are fixed at once.
    let mut errors = Vec::new();
    let mode = match mode {
        Ok(mode) => Some(libpq_mode(mode, root_cert.as_ref())),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    errors.extend(check_trust(mode, mode_setting, root_cert.as_ref(), root_setting).err());
    errors.extend(check_client_certificate(
        from_url.cert.as_ref(),
        from_url.key.as_ref(),
    ));
    match mode {
        Some(mode) if errors.is_empty() => Ok(ResolvedTls { mode, root_cert }),
        _ => Err(TlsErrors(errors)),
    }
}

/// The mode in effect: libpq's default and its rules for a root certificate.
fn libpq_mode(mode: Option<SslMode>, root_cert: Option<&SslRootCert>) -> SslMode {
    let mode = match (mode, root_cert) {
        (Some(mode), _) => mode,
        // libpq 16: the public roots make verify-full the default.
        (None, Some(SslRootCert::System)) => SslMode::VerifyFull,
        (None, _) => SslMode::Prefer,
    };
    match (mode, root_cert) {
        // libpq: "if a root CA file exists, require behaves like verify-ca".
        (SslMode::Require, Some(SslRootCert::File(_))) => SslMode::VerifyCa,
        (mode, _) => mode,
    }
}

/// The root certificate fits the mode (when the mode is known), and its file is a CA bundle.
fn check_trust(
    mode: Option<SslMode>,
    mode_setting: TlsSetting,
    root_cert: Option<&SslRootCert>,
    root_setting: TlsSetting,
) -> Result<(), TlsError> {
    match (root_cert, mode) {
        (Some(SslRootCert::System), Some(mode)) if mode != SslMode::VerifyFull => Err(tls_error(
            root_setting,
            format!(
                "system (the public roots) needs sslmode verify-full, not {mode}: any host can \
                 get a public certificate, only the host name check makes it safe"
            ),
        )),
        (None, Some(mode @ (SslMode::VerifyCa | SslMode::VerifyFull))) => Err(tls_error(
            mode_setting,
            format!(
                "{mode} needs sslrootcert: the CA file of the server's certificate, or system \
                 for the public roots"
            ),
        )),
        (Some(SslRootCert::File(path)), _) => check_ca_file(path, root_setting),
        _ => Ok(()),
    }
}

/// The key's setting for a certificate's and the other way round, from the same source: a
/// missing one is named where the present one was found.
fn partner(setting: TlsSetting) -> TlsSetting {
    match setting {
        TlsSetting::EnvSslCert => TlsSetting::EnvSslKey,
        TlsSetting::EnvSslKey => TlsSetting::EnvSslCert,
        TlsSetting::UrlSslKey => TlsSetting::UrlSslCert,
        _ => TlsSetting::UrlSslKey,
    }
}

/// A client certificate and its key come together, and both files are readable.
fn check_client_certificate(
    cert: Option<&(String, TlsSetting)>,
    key: Option<&(String, TlsSetting)>,
) -> Vec<TlsError> {
    match (cert, key) {
        (Some((cert, cert_setting)), Some((key, key_setting))) => [
            check_certificate_file(Path::new(cert), *cert_setting),
            check_key_file(Path::new(key), *key_setting),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect(),
        (Some((_, cert_setting)), None) => vec![tls_error(
            partner(*cert_setting),
            "is missing: sslcert needs the key of its certificate",
        )],
        (None, Some((_, key_setting))) => vec![tls_error(
            partner(*key_setting),
            "is missing: sslkey needs its certificate",
        )],
        (None, None) => Vec::new(),
    }
}

fn read(path: &Path, setting: TlsSetting) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| {
        tls_error(
            setting,
            format!("cannot read {}: {}", path.display(), error.kind()),
        )
    })
}

fn certificates(
    path: &Path,
    setting: TlsSetting,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, setting)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            tls_error(
                setting,
                format!("{} holds a malformed PEM certificate", path.display()),
            )
        })?;
    if certificates.is_empty() {
        return Err(tls_error(
            setting,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certificates)
}

fn check_ca_file(path: &Path, setting: TlsSetting) -> Result<(), TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for certificate in certificates(path, setting)? {
        store.add(certificate).map_err(|_| {
            tls_error(
                setting,
                format!(
                    "{} holds a certificate that is not a valid CA",
                    path.display()
                ),
            )
        })?;
    }
    Ok(())
}

fn check_certificate_file(path: &Path, setting: TlsSetting) -> Result<(), TlsError> {
    certificates(path, setting).map(drop)
}

fn check_key_file(path: &Path, setting: TlsSetting) -> Result<(), TlsError> {
    let pem = read(path, setting)?;
    // The error says nothing about the key's content: no key material is ever shown.
    PrivateKeyDer::from_pem_slice(&pem).map(drop).map_err(|_| {
        tls_error(
            setting,
            format!("{} holds no readable PEM private key", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// A CA certificate and a key, made once, written to a directory of this test process.
    fn files() -> &'static (PathBuf, PathBuf, PathBuf) {
        static FILES: std::sync::OnceLock<(PathBuf, PathBuf, PathBuf)> = std::sync::OnceLock::new();
        FILES.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("config-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            // Failure cases only; valid files are made by the test kit in the TLS tests.
            let garbage = dir.join("garbage.pem");
            std::fs::write(&garbage, "not a certificate\n").unwrap();
            let truncated = dir.join("truncated.pem");
            std::fs::write(
                &truncated,
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            )
            .unwrap();
            (dir.clone(), garbage, truncated)
        })
    }

    fn parsed(url: &str) -> DatabaseUrl {
        DatabaseUrl::parse(url).unwrap()
    }

    /// [`resolve`] without libpq's environment variables, so that a developer's own `PGSSLMODE`
    /// cannot change what these tests see (those variables have tests of their own below).
    fn resolved(
        url: &str,
        mode: Option<SslMode>,
        root: Option<&SslRootCert>,
    ) -> Result<ResolvedTls, TlsErrors> {
        resolve_in(&parsed(url), mode, root, &|_| None)
    }

    /// The one problem `url` has.
    fn apply_to(url: &str, mode: Option<SslMode>, root: Option<SslRootCert>) -> TlsError {
        only(resolved(url, mode, root.as_ref()).unwrap_err())
    }

    fn only(errors: TlsErrors) -> TlsError {
        assert_eq!(errors.0.len(), 1, "{errors}");
        errors.0[0].clone()
    }

    fn apply(
        options: PgConnectOptions,
        url: &str,
        mode: Option<SslMode>,
        root: Option<&SslRootCert>,
    ) -> Result<PgConnectOptions, TlsErrors> {
        Ok(resolved(url, mode, root)?.apply(options))
    }

    fn setting_of(error: TlsError) -> TlsSetting {
        error.setting
    }

    #[test]
    fn libpqs_default_is_prefer_and_explicit_modes_apply() {
        let url = "postgres://u:p@h/db";
        let options = PgConnectOptions::from_str(url).unwrap();
        let options = apply(options, url, None, None).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Prefer));
        let url = "postgres://u:p@h/db?sslmode=require";
        let options = PgConnectOptions::from_str(url).unwrap();
        let options = apply(options, url, None, None).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
        // The override wins over the URL.
        let options = PgConnectOptions::from_str(url).unwrap();
        let options = apply(options, url, Some(SslMode::Disable), None).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Disable));
    }

    #[test]
    fn system_roots_default_to_verify_full_and_refuse_weaker_modes() {
        let url = "postgres://u:p@h/db?sslrootcert=system";
        let options = PgConnectOptions::from_str(url).unwrap();
        let options = apply(options, url, None, None).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        let url = "postgres://u:p@h/db?sslrootcert=system&sslmode=require";
        assert_eq!(
            setting_of(apply_to(url, None, None)),
            TlsSetting::UrlSslRootCert
        );
        assert_eq!(
            setting_of(apply_to(
                "postgres://u:p@h/db",
                Some(SslMode::VerifyCa),
                Some(SslRootCert::System)
            )),
            TlsSetting::SslRootCert
        );
    }

    /// The driver adds `sslrootcert` to `webpki_roots::TLS_SERVER_ROOTS`; with Mozilla's roots
    /// there, `verify-ca` with a private CA would accept any publicly issued certificate. The
    /// workspace patches that crate empty (crates/webpki-roots-none): this fails without it.
    #[test]
    fn tls_trust_a_ca_file_is_the_whole_trust() {
        assert!(
            webpki_roots::TLS_SERVER_ROOTS.is_empty(),
            "the driver trusts {} built-in roots besides sslrootcert: is the workspace's \
             [patch.crates-io] webpki-roots gone?",
            webpki_roots::TLS_SERVER_ROOTS.len()
        );
    }

    /// A version bump of the driver could bring its roots back past the patch: another major
    /// version of webpki-roots (the patch would not apply) or the platform's store.
    #[test]
    fn tls_trust_the_lock_file_has_only_the_empty_roots() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        let packages: Vec<&str> = lock.split("[[package]]").collect();
        let roots: Vec<&&str> = packages
            .iter()
            .filter(|package| package.contains("\nname = \"webpki-roots\"\n"))
            .collect();
        assert_eq!(roots.len(), 1, "{roots:?}");
        assert!(
            !roots[0].contains("source = "),
            "not the patched copy: {}",
            roots[0]
        );
        assert!(!lock.contains("name = \"rustls-native-certs\""));
    }

    #[test]
    fn tls_trust_system_is_mozillas_roots_less_the_name_constrained() {
        let passed: Vec<_> = CertificateDer::pem_slice_iter(public_roots_pem())
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(passed.len() > 100, "{}", passed.len());
        // Mozilla limits this root to `.tr` (webpki-roots 1.0.10, name_constraints).
        let tubitak = b"TUBITAK Kamu SM SSL Kok Sertifikasi";
        let names = |root: &CertificateDer<'_>| {
            root.as_ref()
                .windows(tubitak.len())
                .any(|window| window == tubitak)
        };
        let all = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        assert_eq!(all.iter().filter(|root| names(root)).count(), 1);
        assert!(!passed.iter().any(names));
        let others: Vec<_> = all.iter().filter(|root| !names(root)).collect();
        assert_eq!(passed.iter().collect::<Vec<_>>(), others);
    }

    fn resolve_with(url: &str, environment: &[(&str, &str)]) -> Result<ResolvedTls, TlsErrors> {
        let environment: Vec<(String, String)> = environment
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        resolve_in(&parsed(url), None, None, &|name| {
            environment
                .iter()
                .find(|(variable, _)| variable == name)
                .map(|(_, value)| value.clone())
        })
    }

    /// Every problem at once, one per setting, so that a user fixes them all in one go.
    #[test]
    fn every_tls_problem_is_reported() {
        let (_, garbage, _) = files();
        let garbage = garbage.to_str().unwrap();
        let url = format!(
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt&sslcert={garbage}&sslkey={garbage}"
        );
        let errors = resolve_with(&url, &[]).unwrap_err();
        let settings: Vec<_> = errors.0.iter().map(|error| error.setting).collect();
        assert_eq!(
            settings,
            [
                TlsSetting::UrlSslRootCert,
                TlsSetting::UrlSslCert,
                TlsSetting::UrlSslKey
            ]
        );
        let variables: Vec<_> = resolve_with(
            "postgres://u:p@h/db",
            &[("PGSSLMODE", "allow"), ("PGSSLCERT", garbage)],
        )
        .unwrap_err()
        .to_problems("DATABASE_URL")
        .0
        .into_iter()
        .map(|problem| problem.variable)
        .collect();
        assert_eq!(variables, ["PGSSLMODE", "PGSSLKEY"]);
    }

    /// libpq's environment variables apply where the URL is silent, as in libpq (and the driver
    /// reads them too): never ignored, so never a silent downgrade.
    #[test]
    fn libpqs_environment_variables_fill_in_what_the_url_leaves_out() {
        let (dir, garbage, _) = files();
        // Any valid CA file will do: resolving checks it, nothing connects.
        let ca = dir.join("public-roots.crt");
        std::fs::write(&ca, public_roots_pem()).unwrap();
        let ca = ca.to_str().unwrap();
        let url = "postgres://u:p@h/db";

        let tls =
            resolve_with(url, &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca)]).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(SslRootCert::File(ca.into())));
        // libpq: require with a CA file verifies the CA, wherever the file came from.
        let tls = resolve_with(url, &[("PGSSLMODE", "require"), ("PGSSLROOTCERT", ca)]).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        let tls = resolve_with(url, &[("PGSSLROOTCERT", "system")]).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        // The URL wins over the environment; empty is unset.
        let tls = resolve_with(
            &format!("{url}?sslmode=disable"),
            &[("PGSSLMODE", "verify-full")],
        );
        assert_eq!(tls.unwrap().mode, SslMode::Disable);
        assert_eq!(
            resolve_with(url, &[("PGSSLMODE", "")]).unwrap().mode,
            SslMode::Prefer
        );

        let error = |environment: &[(&str, &str)]| {
            let error = only(resolve_with("postgres://u:hunter2@h/db", environment).unwrap_err());
            assert!(!error.to_string().contains("hunter2"), "{error}");
            error.to_problem("DATABASE_URL").variable
        };
        assert_eq!(error(&[("PGSSLMODE", "allow")]), "PGSSLMODE");
        assert_eq!(error(&[("PGSSLMODE", "verify-ca")]), "PGSSLMODE");
        assert_eq!(
            error(&[
                ("PGSSLMODE", "verify-ca"),
                ("PGSSLROOTCERT", "/nonexistent")
            ]),
            "PGSSLROOTCERT"
        );
        let garbage = garbage.to_str().unwrap();
        let both = resolve_with(url, &[("PGSSLCERT", garbage), ("PGSSLKEY", garbage)])
            .unwrap_err()
            .to_problems("DATABASE_URL");
        let variables: Vec<&str> = both
            .0
            .iter()
            .map(|problem| problem.variable.as_str())
            .collect();
        assert_eq!(variables, ["PGSSLCERT", "PGSSLKEY"]);
        assert_eq!(error(&[("PGSSLCERT", garbage)]), "PGSSLKEY");
    }

    #[test]
    fn verification_without_a_root_certificate_is_refused() {
        let url = "postgres://u:p@h/db?sslmode=verify-full";
        assert_eq!(
            setting_of(apply_to(url, None, None)),
            TlsSetting::UrlSslMode
        );
        assert_eq!(
            setting_of(apply_to(
                "postgres://u:p@h/db",
                Some(SslMode::VerifyCa),
                None
            )),
            TlsSetting::SslMode
        );
    }

    #[test]
    fn allow_and_unknown_modes_are_refused() {
        // Modes the driver does not know are refused by the URL parser already.
        let error = apply_to("postgres://u:hunter2@h/db?sslmode=allow", None, None);
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert_eq!(setting_of(error), TlsSetting::UrlSslMode);
        assert!("allow".parse::<SslMode>().is_err());
        assert_eq!("Verify-Full".parse::<SslMode>(), Ok(SslMode::VerifyFull));
    }

    #[test]
    fn unreadable_and_malformed_files_name_their_setting_never_the_url() {
        let (dir, garbage, truncated) = files();
        let missing = dir.join("missing.crt");
        let cases = [
            (
                format!("sslmode=verify-full&sslrootcert={}", missing.display()),
                TlsSetting::UrlSslRootCert,
                "cannot read",
            ),
            (
                format!("sslmode=verify-full&sslrootcert={}", garbage.display()),
                TlsSetting::UrlSslRootCert,
                "holds no PEM certificate",
            ),
            (
                format!("sslmode=verify-full&sslrootcert={}", truncated.display()),
                TlsSetting::UrlSslRootCert,
                "not a valid CA",
            ),
            (
                format!("sslcert={}&sslkey={}", garbage.display(), garbage.display()),
                TlsSetting::UrlSslCert,
                "holds no PEM certificate",
            ),
            (
                format!("sslcert={}", garbage.display()),
                TlsSetting::UrlSslKey,
                "is missing",
            ),
        ];
        for (query, setting, problem) in cases {
            let url = format!("postgres://u:hunter2@db.internal/db?{query}");
            // The first problem (a garbage key is one more).
            let error = resolved(&url, None, None).unwrap_err().0.remove(0);
            let shown = error.to_string();
            assert!(shown.contains(problem), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("db.internal"),
                "{shown}"
            );
            assert_eq!(setting_of(error), setting, "{query}");
        }
        // The override is checked the same way, and named as itself.
        let error = apply_to(
            "postgres://u:p@h/db",
            Some(SslMode::VerifyFull),
            Some(SslRootCert::File(missing)),
        );
        assert_eq!(setting_of(error), TlsSetting::SslRootCert);
    }
}
