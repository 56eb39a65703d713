//! The servers' user, and the folders and files we make for them.
//!
//! The rule: we (often root) write only inside folders that we or root own, never through a
//! symlink. What a server needs to write (its data folder) is made empty by us, then handed to
//! its user, and we never write inside it again; what it only reads (`pg_hba.conf`, keys) is
//! written by us in our own folder, then handed over. Our own folders are opened to the server's
//! user for traversal only (mode 0710, its group).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ProvisionError, Result};

/// Who runs the servers: the `postgres` user when we are root (initdb and postgres refuse to
/// run as root), else this process's own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerUser {
    /// (uid, gid) of another user; `None` when it is ours.
    other: Option<(u32, u32)>,
}

impl ServerUser {
    #[cfg(unix)]
    pub fn of_this_process() -> Result<Self> {
        use nix::unistd::{Uid, User};
        if !Uid::effective().is_root() {
            return Ok(Self { other: None });
        }
        let user = User::from_name(crate::SUPERUSER)
            .ok()
            .flatten()
            .ok_or_else(|| {
                ProvisionError::Failed(
                    "running as root, but there is no `postgres` user to run the servers as \
                 (install the postgresql package, or run as a normal user)"
                        .into(),
                )
            })?;
        let other = Some((user.uid.as_raw(), user.gid.as_raw()));
        Ok(Self { other })
    }

    #[cfg(not(unix))]
    pub fn of_this_process() -> Result<Self> {
        Ok(Self { other: None })
    }

    /// Whether the servers run as another user than this process.
    pub fn is_another(&self) -> bool {
        self.other.is_some()
    }

    /// The user id that owns what the servers write.
    #[cfg(unix)]
    pub fn uid(&self) -> u32 {
        self.other
            .map_or_else(|| nix::unistd::Uid::effective().as_raw(), |(uid, _)| uid)
    }

    /// `program`, to be run as this user (from `/`, which every user may enter).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        #[cfg(unix)]
        if let Some((uid, gid)) = self.other {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid).current_dir("/");
        }
        command
    }

    /// Hands `path`, which we made in a folder of ours, to this user.
    pub fn give(&self, path: &Path) -> Result<()> {
        #[cfg(unix)]
        if let Some((uid, gid)) = self.other {
            // lchown: a symlink would be handed over itself, never what it points to.
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(ProvisionError::io(
                format!("handing {} to the postgres user", path.display()),
            ))?;
        }
        Ok(())
    }

    /// Lets this user pass through `folder` (ours) to what we handed over inside it, without
    /// listing or writing it: mode 0710 with its group. Nothing to do when it is us.
    pub fn may_enter(&self, folder: &Path) -> Result<()> {
        #[cfg(unix)]
        if let Some((_, gid)) = self.other {
            use std::os::unix::fs::PermissionsExt;
            let what = || format!("opening {} to the postgres user", folder.display());
            std::os::unix::fs::lchown(folder, None, Some(gid))
                .map_err(ProvisionError::io(what()))?;
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o710))
                .map_err(ProvisionError::io(what()))?;
        }
        Ok(())
    }
}

/// A new folder under a random name in `parent`, created exclusively with mode 0700 (nothing
/// that exists, symlinks included, is reused). The name starts with `prefix`.
pub fn private_temp_folder(parent: &Path, prefix: &str) -> Result<PathBuf> {
    check_parent(&parent.join("x"))?;
    let builder = tempfile::Builder::new().prefix(prefix).to_owned();
    #[cfg(unix)]
    let builder = {
        use std::os::unix::fs::PermissionsExt;
        let mut builder = builder;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
        builder
    };
    Ok(builder
        .tempdir_in(parent)
        .map_err(ProvisionError::io(format!(
            "creating a folder in {}",
            parent.display()
        )))?
        .keep())
}

/// Creates `path` as a new folder of ours, mode 0700; anything already there (a leftover, a
/// symlink) is an error.
pub fn private_folder(path: &Path) -> Result<()> {
    check_parent(path)?;
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(ProvisionError::io(format!("creating {}", path.display())))
}

/// Writes `contents` to `path`, a new file readable by its owner only (0600), created
/// exclusively: an existing file or symlink there is an error, and so is a folder that belongs
/// to another user.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut file = open(path, OpenOptions::new().write(true).create_new(true))?;
    file.write_all(contents.as_bytes())
        .map_err(ProvisionError::io(format!("writing {}", path.display())))
}

/// `path` opened for appending (created 0600 if missing), for a server's output: never through
/// a symlink, never in a folder that belongs to another user.
pub fn append_log(path: &Path) -> Result<File> {
    open(path, OpenOptions::new().append(true).create(true))
}

fn open(path: &Path, options: &mut OpenOptions) -> Result<File> {
    check_parent(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(nix::libc::O_NOFOLLOW);
    }
    options
        .open(path)
        .map_err(ProvisionError::io(format!("opening {}", path.display())))
}

/// Refuses to write into a folder that another user (root aside) owns: they could swap what we
/// open there for a link to a file of ours.
fn check_parent(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let owner = std::fs::metadata(parent)
            .map_err(ProvisionError::io(format!(
                "inspecting {}",
                parent.display()
            )))?
            .uid();
        if owner != 0 && owner != nix::unistd::Uid::effective().as_raw() {
            return Err(ProvisionError::Failed(format!(
                "refusing to write in {}: the folder belongs to another user",
                parent.display()
            )));
        }
    }
    let _ = path;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_files_are_0600_created_once_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, "one").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_private(&path, "two").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");

        let target = dir.path().join("target");
        std::fs::write(&target, "mine").unwrap();
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(write_private(&planted, "theirs").is_err());
        assert!(append_log(&planted).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
    }

    #[test]
    fn nothing_is_written_in_a_folder_of_another_user() {
        if !nix::unistd::Uid::effective().is_root() {
            return; // only root can make a folder another user owns
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let error = write_private(&theirs.join("file"), "x").unwrap_err();
        assert!(error.to_string().contains("another user"), "{error}");
        assert!(append_log(&theirs.join("log")).is_err());
        assert!(private_folder(&theirs.join("sub")).is_err());
    }
}
