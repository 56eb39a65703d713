//! Opening the files that configure a binary (`.env`, secret files, TLS files) so that what is
//! checked is what is read: opened once, without blocking (a FIFO put in a file's place must not
//! hang a connect), then checked on the open file. Whoever owns such a file, or may write it,
//! chooses where the service connects or which secret it sends; so it must belong to this
//! process's user or to root (as Kubernetes and Docker mount secrets). Secret and TLS files are
//! read so at each new connection too; the driver gets their contents, never their paths.

use std::fs::{File, Metadata};
use std::path::Path;

/// `path` opened for reading, following symlinks, without blocking on a FIFO or device.
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
    }
    options.open(path)
}

/// The owner of `metadata`'s file when it is neither this process's effective user nor root.
#[cfg(unix)]
pub(crate) fn foreign_owner(metadata: &Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let owner = metadata.uid();
    (owner != 0 && owner != nix::unistd::geteuid().as_raw()).then_some(owner)
}

/// Windows has no owner check here; its ACLs are not read.
#[cfg(not(unix))]
pub(crate) fn foreign_owner(_metadata: &Metadata) -> Option<u32> {
    None
}

/// Whether `metadata`'s file may be written by its group or by other users (who would then
/// choose what it says).
#[cfg(unix)]
pub(crate) fn writable_by_group_or_others(metadata: &Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o022 != 0
}

/// Windows has no mode bits; its ACLs are not read.
#[cfg(not(unix))]
pub(crate) fn writable_by_group_or_others(_metadata: &Metadata) -> bool {
    false
}
