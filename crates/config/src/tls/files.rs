//! The files TLS settings name (CA bundles, a client certificate and its key), read and checked
//! at start, so that a missing, malformed or exposed file is a configuration error then, not a
//! connection failure at the first request. Errors name the file (paths are not secret) and never
//! show what it holds.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {}", path.display(), error.kind()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{} holds a malformed PEM certificate", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

/// A PEM bundle of at least one CA certificate.
pub(super) fn check_ca_file(path: &Path) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for certificate in certificates(path)? {
        store.add(certificate).map_err(|_| {
            format!(
                "{} holds a certificate that is not a valid CA",
                path.display()
            )
        })?;
    }
    Ok(())
}

pub(super) fn check_certificate_file(path: &Path) -> Result<(), String> {
    certificates(path).map(drop)
}

/// A PEM private key, kept from other users as libpq demands: see [`check_key_permissions`].
pub(super) fn check_key_file(path: &Path) -> Result<(), String> {
    check_key_permissions(path)?;
    let pem = read(path)?;
    // The error says nothing about the key's content: no key material is ever shown.
    PrivateKeyDer::from_pem_slice(&pem)
        .map(drop)
        .map_err(|_| format!("{} holds no readable PEM private key", path.display()))
}

/// libpq's rule for a client key (`sslkey`): no access for others, and none for the group unless
/// root owns it (then the group may read: 0640, for keys a system package installs). A key
/// others can read is no longer this service's secret.
#[cfg(unix)]
pub(super) fn check_key_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("cannot read {}: {}", path.display(), error.kind()))?;
    let mode = metadata.mode() & 0o777;
    let allowed = if metadata.uid() == 0 { 0o640 } else { 0o600 };
    if mode & !allowed != 0 {
        return Err(format!(
            "{} is a private key others may access (mode {mode:04o}): allow at most {allowed:04o} \
             (chmod {allowed:o}), as libpq does",
            path.display()
        ));
    }
    Ok(())
}

/// Windows has no mode bits; its ACLs are not checked (libpq does not check them either).
#[cfg(not(unix))]
pub(super) fn check_key_permissions(_path: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_others_can_read_is_refused_naming_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "not a key\n").unwrap();
        let set = |mode: u32| {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        // Files written by the test are ours (or root's, when tests run as root: then 0640 is
        // libpq's limit).
        let owned_by_root = nix_uid_is_root(&key);
        for (mode, refused) in [
            (0o600, false),
            (0o400, false),
            (0o640, !owned_by_root),
            (0o644, true),
            (0o660, true),
            (0o604, true),
        ] {
            set(mode);
            let outcome = check_key_permissions(&key);
            assert_eq!(outcome.is_err(), refused, "mode {mode:o}: {outcome:?}");
            if let Err(error) = outcome {
                assert!(error.contains(&key.display().to_string()), "{error}");
                assert!(error.contains(&format!("{mode:04o}")), "{error}");
            }
        }
    }

    fn nix_uid_is_root(path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().uid() == 0
    }
}
