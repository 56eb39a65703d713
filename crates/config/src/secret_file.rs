//! Secrets read from files, as Kubernetes and Docker mount them (`DATABASE_PASSWORD_FILE`,
//! `DATABASE_URL_FILE`, ...): the password stays out of the environment, where `docker inspect`,
//! `/proc/<pid>/environ` and crash reporters see it.
//!
//! The rule for a secret file (unix):
//! * it is read through symlinks (Kubernetes mounts `name -> ..data/name`, and swaps `..data`
//!   atomically on rotation);
//! * it must be a regular file of this process's user or root, which no group or other user can
//!   write: whoever can write it chooses the password (or, for a URL, the server) the service
//!   uses;
//! * group or others may read it (Kubernetes' `defaultMode` is 0644, and a pod's files are its
//!   own), but the service says so at start: 0600 or 0400 keeps it to the service's user;
//! * its content is the secret alone: trailing line breaks are dropped (`echo` adds one), an
//!   empty file, a NUL byte or a leading byte order mark is refused, and at most 64 KiB is read.

use std::path::Path;

use secrecy::SecretString;

use crate::trusted_file;

/// The most a secret file may hold.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A secret from a file, and a warning when the file is readable beyond its owner.
#[derive(Debug)]
pub struct SecretRead {
    pub secret: SecretString,
    pub warning: Option<String>,
}

/// Reads the secret in `path` under the rule above. Errors and warnings name the file, never
/// what it holds; and a file that cannot be opened (but for want of permission, which says the
/// path is there) is not named either: the variable may hold the secret itself by mistake
/// (`DATABASE_PASSWORD_FILE=hunter2`), and the error is logged.
pub fn read_secret_file(path: &Path) -> Result<SecretRead, String> {
    read(path, false)
}

/// [`read_secret_file`] for a file read before (at start): a path that opened once is a path,
/// so it is named whatever fails now (a rotation gone wrong).
pub fn reread_secret_file(path: &Path) -> Result<SecretRead, String> {
    read(path, true)
}

fn read(path: &Path, opened_before: bool) -> Result<SecretRead, String> {
    let shown = path.display();
    let file = trusted_file::open(path).map_err(|error| {
        let kind = error.kind();
        if opened_before || kind == std::io::ErrorKind::PermissionDenied {
            format!("cannot read {shown}: {kind}")
        } else {
            format!(
                "cannot open the file it names: {kind} (the name is not shown: it may be the \
                 secret itself, set by mistake)"
            )
        }
    })?;
    let unreadable = |error: std::io::Error| format!("cannot read {shown}: {}", error.kind());
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if let Some(owner) = trusted_file::foreign_owner(&metadata) {
        return Err(format!(
            "{shown} belongs to another user (uid {owner}): a secret file must be this \
             service's user's or root's"
        ));
    }
    if let Some(problem) = trusted_file::path_problem(path, &metadata) {
        return Err(format!("{shown}: {problem}"));
    }
    let warning = check_mode(path, &metadata)?;
    let Some(bytes) = trusted_file::read_at_most(file, MAX_SECRET_BYTES).map_err(unreadable)?
    else {
        return Err(format!("{shown} is larger than 64 KiB: not a secret file"));
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    if secret.contains('\0') {
        return Err(format!("{shown} holds a NUL byte"));
    }
    // A byte order mark (Windows editors write one) would become part of the password.
    if secret.starts_with('\u{feff}') {
        return Err(format!(
            "{shown} starts with a byte order mark: save it as UTF-8 without one"
        ));
    }
    Ok(SecretRead {
        secret: SecretString::from(secret.to_owned()),
        warning,
    })
}

#[cfg(unix)]
fn check_mode(path: &Path, metadata: &std::fs::Metadata) -> Result<Option<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if trusted_file::writable_by_group_or_others(metadata) {
        return Err(format!(
            "{} may be written by group or others (mode {mode:04o}): whoever can write it \
             chooses the secret; allow at most 0644, better 0600",
            path.display()
        ));
    }
    Ok(trusted_file::readable_by_group_or_others(metadata).map(|mode| {
        format!(
            "{} may be read by group or others (mode {mode:04o}); 0600 or 0400 keeps it to this \
             service's user",
            path.display()
        )
    }))
}

/// Windows has no mode bits; its ACLs are not checked.
#[cfg(not(unix))]
fn check_mode(_path: &Path, _metadata: &std::fs::Metadata) -> Result<Option<String>, String> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use secrecy::ExposeSecret;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    /// A file over 64 KiB is refused, not cut short into another password; one of 64 KiB is read
    /// whole.
    #[test]
    fn a_secret_file_over_64_kib_is_refused_and_one_of_64_kib_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let size = usize::try_from(MAX_SECRET_BYTES).unwrap();
        let path = write(dir.path(), "whole", &"s".repeat(size), 0o600);
        let read = read_secret_file(&path).unwrap();
        assert_eq!(read.secret.expose_secret().len(), size);
        let path = write(dir.path(), "over", &"s".repeat(size + 1), 0o600);
        let error = read_secret_file(&path).unwrap_err();
        assert!(
            error.ends_with("is larger than 64 KiB: not a secret file"),
            "{error}"
        );
    }

    /// The value of a `*_FILE` variable that names no file may be the secret itself, put there
    /// by mistake: the error, which is logged, does not repeat it.
    #[test]
    fn a_file_that_cannot_be_opened_is_not_named() {
        for value in [
            "postgres://app:hunter2@db/app",
            "hunter2",
            "/run/secrets/hunter2",
        ] {
            let error = read_secret_file(Path::new(value)).unwrap_err();
            assert!(
                error.starts_with("cannot open the file it names: "),
                "{error}"
            );
            assert!(!error.contains("hunter2"), "{error}");
            // Read again after a start that opened it, it is a path: named.
            let error = reread_secret_file(Path::new(value)).unwrap_err();
            assert!(error.contains(value), "{error}");
        }
    }

    /// A file refused for want of permission is there: its path is named, and is no secret.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_refused_for_permission_is_named() {
        // Root may open any file, but not a write-only sysfs attribute for reading: the
        // kernel answers EACCES. (The tests run as root in CI, where no file mode refuses.)
        let write_only = Path::new("/sys/bus/pci/rescan");
        let refused = std::fs::File::open(write_only)
            .is_err_and(|error| error.kind() == std::io::ErrorKind::PermissionDenied);
        if !refused {
            eprintln!("skipped: {} is not refused here", write_only.display());
            return;
        }
        let error = read_secret_file(write_only).unwrap_err();
        assert_eq!(
            error, "cannot read /sys/bus/pci/rescan: permission denied",
            "{error}"
        );
    }

    #[test]
    fn the_secret_is_the_text_less_its_trailing_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "password", "s3cret word\r\n\n", 0o600);
        let read = read_secret_file(&path).unwrap();
        assert_eq!(read.secret.expose_secret(), "s3cret word");
        assert!(read.warning.is_none());
        let marked = "\u{feff}s3cret word\n";
        for (text, problem) in [
            ("\n", "is empty"),
            ("a\0b", "NUL"),
            (marked, "byte order mark"),
        ] {
            let path = write(dir.path(), "bad", text, 0o600);
            let error = read_secret_file(&path).unwrap_err();
            assert!(error.contains(problem), "{error}");
            assert!(!error.contains("a\0b"));
        }
        assert!(
            read_secret_file(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    /// As Kubernetes mounts a secret: `password -> ..data/password`, `..data -> ..2026_12_03`.
    #[cfg(unix)]
    #[test]
    fn secrets_are_read_through_symlinks_and_their_mode_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("..2026_12_03");
        std::fs::create_dir(&version).unwrap();
        write(&version, "password", "s3cret\n", 0o644);
        std::os::unix::fs::symlink("..2026_12_03", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/password", dir.path().join("password")).unwrap();
        let read = read_secret_file(&dir.path().join("password")).unwrap();
        assert_eq!(read.secret.expose_secret(), "s3cret");
        let warning = read.warning.unwrap();
        assert!(
            warning.contains("0644") && warning.contains("0600"),
            "{warning}"
        );
        assert!(!warning.contains("s3cret"));

        for mode in [0o666, 0o620, 0o602] {
            let path = write(dir.path(), "writable", "s3cret", mode);
            let error = read_secret_file(&path).unwrap_err();
            assert!(error.contains("written by group or others"), "{error}");
        }
        let private = write(dir.path(), "private", "s3cret", 0o400);
        assert!(read_secret_file(&private).unwrap().warning.is_none());
    }

    /// What is checked is what is read: a FIFO in the file's place is refused at once (it would
    /// block a connect until someone writes to it), and a file of another user is refused.
    #[cfg(unix)]
    #[test]
    fn a_fifo_or_another_users_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let error = read_secret_file(&fifo).unwrap_err();
        assert!(error.contains("not a regular file"), "{error}");
        if nix::unistd::geteuid().is_root() {
            let path = write(dir.path(), "theirs", "s3cret", 0o600);
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let error = read_secret_file(&path).unwrap_err();
            assert!(error.contains("belongs to another user"), "{error}");
        }
    }
}
