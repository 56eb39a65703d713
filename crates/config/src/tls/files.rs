//! The files TLS settings name (CA bundles, a client certificate and its key), read and checked
//! at start, so that a missing, malformed or exposed file is a configuration error then, not a
//! connection failure at the first request; and read and checked again for each connection, whose
//! driver gets their contents, never a path it would read unchecked (a file or a symlink's target
//! swapped after start must meet the same rule). Errors name the file (paths are not secret) and
//! never show what it holds.

use std::fs::Metadata;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::trusted_file;

/// The most a TLS file may hold: a system's whole CA bundle is some 200 KiB. Each connection
/// reads it again, so a file grown by mistake (or a device) must not be read whole each time.
const MAX_TLS_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a TLS file under the rule for every file that configures us (as a secret file): a
/// regular file of this user's or root's that neither its group nor others may write. Whoever
/// could write the CA file would choose which server the service trusts with its password.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_checked(path, |_| Ok(()))
}

/// [`read`], with `check` too, on the file opened: what is checked is what is read.
fn read_checked(
    path: &Path,
    check: impl FnOnce(&Metadata) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    read_named(path, check, Naming::Always)
}

/// Whether an error names a file that could not be opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Naming {
    Always,
    /// Only once it is known to be a path (it exists, but may not be read, and is no PEM text):
    /// a private key's setting may hold the key itself by mistake (`PGSSLKEY="$(cat
    /// client.key)"`), as a secret file's may (see `read_secret_file`), and the error is logged.
    OnlyAPath,
}

impl Naming {
    /// Whether an error may name `path`, which could not be opened (`kind`).
    fn names_unopened(self, path: &Path, kind: std::io::ErrorKind) -> bool {
        // Permission denied says a path is there, unless the text is PEM (a folder on the
        // relative "path" that may not be entered gives that too).
        let text = path.to_string_lossy();
        let pem = text.contains(['\n', '\r']) || text.contains("-----BEGIN");
        self == Naming::Always || (kind == std::io::ErrorKind::PermissionDenied && !pem)
    }
}

fn read_named(
    path: &Path,
    check: impl FnOnce(&Metadata) -> Result<(), String>,
    naming: Naming,
) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let unreadable = |error: std::io::Error| format!("cannot read {shown}: {}", error.kind());
    let file = trusted_file::open(path).map_err(|error| {
        let kind = error.kind();
        if !naming.names_unopened(path, kind) {
            format!(
                "cannot open the file it names: {kind} (the name is not shown: it may be the key \
                 itself, set by mistake)"
            )
        } else {
            unreadable(error)
        }
    })?;
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    check(&metadata)?;
    if let Some(owner) = trusted_file::foreign_owner(&metadata) {
        return Err(format!(
            "{shown} belongs to another user (uid {owner}): it must be this service's user's \
             or root's"
        ));
    }
    if trusted_file::writable_by_group_or_others(&metadata) {
        return Err(format!(
            "{shown} may be written by its group or other users: whoever can write it chooses \
             whom the service trusts; allow at most 0644"
        ));
    }
    if let Some(problem) = trusted_file::path_problem(path, &metadata) {
        return Err(format!("{shown}: {problem}"));
    }
    trusted_file::read_at_most(file, MAX_TLS_FILE_BYTES)
        .map_err(unreadable)?
        .ok_or_else(|| {
            format!("{shown} is larger than 4 MiB, which no CA bundle, certificate or key is")
        })
}

/// The file's contents and the certificates they hold (at least one).
fn certificates(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{} holds a malformed PEM certificate", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok((pem, certificates))
}

/// A PEM bundle of at least one CA certificate: its contents, checked.
pub(super) fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    let (pem, certificates) = certificates(path)?;
    let mut store = rustls::RootCertStore::empty();
    for certificate in certificates {
        store.add(certificate).map_err(|_| {
            format!(
                "{} holds a certificate that is not a valid CA",
                path.display()
            )
        })?;
    }
    Ok(pem)
}

/// A PEM client certificate: its contents, checked.
pub(super) fn read_certificate_file(path: &Path) -> Result<Vec<u8>, String> {
    certificates(path).map(|(pem, _)| pem)
}

/// A PEM private key, kept from other users as libpq demands (see [`check_key_permissions`]):
/// its contents, checked.
pub(super) fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let check = |metadata: &Metadata| check_key_permissions(path, metadata);
    let pem = read_named(path, check, Naming::OnlyAPath)?;
    // The error says nothing about the key's content: no key material is ever shown.
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| format!("{} holds no readable PEM private key", path.display()))?;
    Ok(pem)
}

/// libpq's rule for a client key (`sslkey`): no access for others, and none for the group unless
/// root owns it (then the group may read: 0640, for keys a system package installs). A key
/// others can read is no longer this service's secret.
#[cfg(unix)]
fn check_key_permissions(path: &Path, metadata: &Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
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
fn check_key_permissions(_path: &Path, _metadata: &Metadata) -> Result<(), String> {
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
            let outcome = read_checked(&key, |metadata| check_key_permissions(&key, metadata));
            assert_eq!(outcome.is_err(), refused, "mode {mode:o}: {outcome:?}");
            if let Err(error) = outcome {
                assert!(error.contains(&key.display().to_string()), "{error}");
                assert!(error.contains(&format!("{mode:04o}")), "{error}");
            }
        }
    }

    /// A key's setting that holds the key itself (or any name that opens nothing) is not
    /// shown; a CA or certificate setting's is (certificates are public, and the name helps).
    #[test]
    fn a_key_put_where_its_path_belongs_is_not_shown() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
        let error = read_key_file(Path::new(pem)).unwrap_err();
        assert!(
            !error.contains("BEGIN") && !error.contains("MIIE"),
            "{error}"
        );
        assert!(error.contains("cannot open the file it names"), "{error}");
        // Refused entry to a folder on the way: a path, unless it is PEM text.
        let denied = std::io::ErrorKind::PermissionDenied;
        assert!(!Naming::OnlyAPath.names_unopened(Path::new(pem), denied));
        assert!(!Naming::OnlyAPath.names_unopened(Path::new("a\nb"), denied));
        assert!(Naming::OnlyAPath.names_unopened(Path::new("/etc/client.key"), denied));
        let missing = std::io::ErrorKind::NotFound;
        assert!(!Naming::OnlyAPath.names_unopened(Path::new("/etc/client.key"), missing));
        assert!(Naming::Always.names_unopened(Path::new(pem), missing));
        let missing = "/nonexistent/ca.crt";
        assert!(
            read_ca_file(Path::new(missing))
                .unwrap_err()
                .contains(missing)
        );
        assert!(
            read_certificate_file(Path::new(missing))
                .unwrap_err()
                .contains(missing)
        );
    }

    /// A file larger than any TLS file is refused naming it, without being read whole.
    #[test]
    fn a_tls_file_larger_than_4_mib_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        let sparse = std::fs::File::create(&file).unwrap();
        sparse.set_len(MAX_TLS_FILE_BYTES + 1).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        for check in [read_ca_file, read_certificate_file, read_key_file] {
            let error = check(&file).unwrap_err();
            assert_eq!(
                error,
                format!(
                    "{} is larger than 4 MiB, which no CA bundle, certificate or key is",
                    file.display()
                )
            );
        }
        // At the limit it is read (and found to be no PEM).
        sparse.set_len(MAX_TLS_FILE_BYTES).unwrap();
        assert!(
            read_ca_file(&file)
                .unwrap_err()
                .contains("no PEM certificate")
        );
    }

    /// A CA file, certificate or key another user owns, or that its group or others may
    /// write, is refused naming it, before its contents are looked at.
    #[test]
    fn a_tls_file_others_control_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, "not PEM\n").unwrap();
        let set = |mode: u32| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let shown = file.display().to_string();
        for mode in [0o664, 0o646, 0o620] {
            set(mode);
            for check in [read_ca_file, read_certificate_file, read_key_file] {
                let error = check(&file).unwrap_err();
                // The key's own rule (libpq's) may speak first; either names the file.
                assert!(error.contains(&shown), "{mode:o}: {error}");
                assert!(!error.contains("PEM"), "{mode:o}: {error}");
            }
            let error = read_ca_file(&file).unwrap_err();
            assert!(
                error.contains("written by its group or other users"),
                "{error}"
            );
        }
        set(0o644);
        assert!(
            read_ca_file(&file)
                .unwrap_err()
                .contains("no PEM certificate")
        );
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            let error = read_ca_file(&file).unwrap_err();
            assert!(
                error.contains("belongs to another user (uid 65534)"),
                "{error}"
            );
        }
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/dev/null", &file).unwrap();
        assert!(
            read_ca_file(&file)
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    fn nix_uid_is_root(path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().uid() == 0
    }
}
