//! Certificates made in the test run (rcgen, on ring): a CA, a server certificate for chosen
//! names, client certificates. Nothing is checked in; every run has its own keys.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{Result, TestkitError};

/// How a cluster serves TLS; see [`crate::ClusterOptions`].
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The names the server certificate is issued for: DNS names or IP addresses.
    pub server_names: Vec<String>,
    /// Refuse connections without TLS (`hostssl` lines only in `pg_hba.conf`).
    pub tls_only: bool,
    /// Require a client certificate issued by the cluster's CA whose common name is the user
    /// (`clientcert=verify-full`); implies `tls_only`.
    pub client_certificates: bool,
    /// Serve a server certificate that expired in 2020 (for tests of what clients make of it).
    pub expired: bool,
}

impl Default for ServerTls {
    /// A certificate for `localhost` and `127.0.0.1`; plaintext still accepted.
    fn default() -> Self {
        Self {
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            tls_only: false,
            client_certificates: false,
            expired: false,
        }
    }
}

/// A certificate authority of the test run.
#[derive(Debug)]
pub struct CertificateAuthority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
}

fn rcgen_error(what: &str) -> impl FnOnce(rcgen::Error) -> TestkitError + '_ {
    move |error| TestkitError::Server(format!("{what}: {error}"))
}

impl CertificateAuthority {
    /// A new self-signed CA whose common name is `name`.
    pub fn new(name: &str) -> Result<Self> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("CA parameters"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(rcgen_error("CA key"))?;
        let pem = params
            .self_signed(&key)
            .map_err(rcgen_error("CA certificate"))?
            .pem();
        Ok(Self { params, key, pem })
    }

    /// The CA's certificate, PEM: what a client trusts (`sslrootcert`).
    pub fn certificate_pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCertificate> {
        self.issue(Self::server_params(names)?)
    }

    /// Like [`CertificateAuthority::issue_server`], valid only during 2020.
    pub fn issue_expired_server(&self, names: &[String]) -> Result<IssuedCertificate> {
        let mut params = Self::server_params(names)?;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        self.issue(params)
    }

    fn server_params(names: &[String]) -> Result<CertificateParams> {
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(rcgen_error("server parameters"))?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(params)
    }

    /// A client certificate for the database user `user` (its common name).
    pub fn issue_client(&self, user: &str) -> Result<IssuedCertificate> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(rcgen_error("client parameters"))?;
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<IssuedCertificate> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().map_err(rcgen_error("key"))?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params
            .signed_by(&key, &issuer)
            .map_err(rcgen_error("signing a certificate"))?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to a new file readable by its owner only (keys; PostgreSQL insists on it
/// for its own key, libpq-style clients warn otherwise).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut file = crate::platform::create_private_file(path)
        .map_err(TestkitError::io(format!("creating {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(TestkitError::io(format!("writing {}", path.display())))
}

/// The client-side files of a TLS cluster: what a connection string points at.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// The CA that issued the server certificate (`sslrootcert`).
    pub root_cert: PathBuf,
    /// A client certificate and key for the superuser (`sslcert`, `sslkey`), when the cluster
    /// asks for client certificates.
    pub client: Option<(PathBuf, PathBuf)>,
}
