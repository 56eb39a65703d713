//! Certificates made in the test run (rcgen, on ring): a CA, a server certificate for chosen
//! names, client certificates. Nothing is checked in; every run has its own keys.

use std::path::PathBuf;

use counseling_provision::files::{private_folder, write_private};
use counseling_provision::server::{HbaTransport, Server};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{Result, TestkitError};

impl ServerTls {
    /// Makes a CA and the server's certificate (and a client certificate for the superuser when
    /// asked) in `server`'s folder, hands the server's files to its user, and returns what
    /// clients need with the server settings that serve them.
    pub(crate) fn set_up(&self, server: &Server) -> Result<(ClientTlsFiles, Vec<String>)> {
        let ca = CertificateAuthority::new("counseling-testkit CA")?;
        let names = &self.server_names;
        let mut params =
            CertificateParams::new(names.clone()).map_err(rcgen_error("server parameters"))?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if self.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let issued = ca.issue(params)?;
        let in_root = |name: &str| server.root.join(name);
        let (cert, key, ca_file) = (
            in_root("server.crt"),
            in_root("server.key"),
            in_root("ca.crt"),
        );
        // PostgreSQL refuses a key that others can read, or that another user owns.
        let server_files = [
            (&cert, issued.certificate_pem.as_str()),
            (&key, &issued.key_pem),
            (&ca_file, ca.certificate_pem()),
        ];
        for (path, pem) in server_files {
            write_private(path, pem)?;
            server.user.give(path)?;
        }
        let client_dir = in_root("tls-client");
        private_folder(&client_dir)?;
        let root_cert = client_dir.join("root.crt");
        write_private(&root_cert, ca.certificate_pem())?;
        let client = match self.client_certificates {
            true => {
                let issued = ca.issue_client(counseling_provision::SUPERUSER)?;
                let (cert, key) = (client_dir.join("client.crt"), client_dir.join("client.key"));
                write_private(&cert, &issued.certificate_pem)?;
                write_private(&key, &issued.key_pem)?;
                Some((cert, key))
            }
            false => None,
        };
        let mut settings = vec![
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ];
        if self.client_certificates {
            settings.push(format!("ssl_ca_file={}", ca_file.display()));
        }
        Ok((ClientTlsFiles { root_cert, client }, settings))
    }

    /// How logins must come for the access asked for (`pg_hba.conf`).
    pub(crate) fn transport(&self) -> HbaTransport {
        match (self.client_certificates, self.tls_only) {
            (true, _) => HbaTransport::TlsWithClientCertificate,
            (false, true) => HbaTransport::Tls,
            (false, false) => HbaTransport::Any,
        }
    }
}

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
    move |error| TestkitError::Failed(format!("{what}: {error}"))
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

/// The client-side files of a TLS cluster: what a connection string points at.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// The CA that issued the server certificate (`sslrootcert`).
    pub root_cert: PathBuf,
    /// A client certificate and key for the superuser (`sslcert`, `sslkey`), when the cluster
    /// asks for client certificates.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsFiles {
    /// `sslmode` with this CA as `sslrootcert`: query parameters for a test database's URL
    /// (`TestDatabase::url_with`).
    pub fn parameters<'a>(&'a self, sslmode: &'a str) -> Vec<(&'a str, &'a str)> {
        // The kit's own paths are UTF-8 (random ASCII names in a temporary folder).
        let root_cert = self.root_cert.to_str().unwrap_or_default();
        vec![("sslmode", sslmode), ("sslrootcert", root_cert)]
    }
}
