//! The servers' user, and the folders and files we make for them.
//!
//! The rule: we (often root) write only inside folders that we or root own, never through a
//! symlink. What a server writes (its data folder) is made empty by us, handed to its user, and
//! never written by us again; what it only reads (`pg_hba.conf`, keys) we write in our own
//! folder and hand over. Our folders are opened to the server's user for passing through only
//! (mode 0710, its group).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use secrecy::ExposeSecret;

use crate::{ProvisionError, Result};

/// Who runs the servers: the `postgres` user when we are root (initdb and postgres refuse to
/// run as root), else this process's own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerUser {
    /// (uid, gid) of another user; `None` when it is ours.
    other: Option<(u32, u32)>,
}

// Elsewhere the servers run as this process's user: nothing to switch or hand over.
#[cfg_attr(not(unix), allow(unused_mut, unused_variables))]
impl ServerUser {
    pub fn of_this_process() -> Result<Self> {
        #[cfg(unix)]
        if nix::unistd::Uid::effective().is_root() {
            let user = nix::unistd::User::from_name(crate::SUPERUSER)
                .ok()
                .flatten();
            let user = user.ok_or_else(|| {
                ProvisionError::Failed(
                    "running as root, but there is no `postgres` user to run the servers as \
                     (install the postgresql package, or run as a normal user)"
                        .into(),
                )
            })?;
            let other = Some((user.uid.as_raw(), user.gid.as_raw()));
            return Ok(Self { other });
        }
        Ok(Self { other: None })
    }

    /// Whether the servers run as another user than this process.
    pub fn is_another(&self) -> bool {
        self.other.is_some()
    }

    /// The user id that owns what the servers write.
    #[cfg(unix)]
    pub fn uid(&self) -> u32 {
        let ours = || nix::unistd::Uid::effective().as_raw();
        self.other.map_or_else(ours, |(uid, _)| uid)
    }

    /// `program`, to be run as this user (from `/`, which every user may enter), with none of
    /// our environment but `PATH` and `TZ` (on unix; elsewhere the system needs more of it):
    /// ours may hold passwords (`PGPASSWORD`, URLs, CI's tokens), and a server's environment is
    /// readable by whoever runs code as its user.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        #[cfg(unix)]
        {
            command.env_clear();
            for kept in ["PATH", "TZ"] {
                if let Some(value) = std::env::var_os(kept) {
                    command.env(kept, value);
                }
            }
        }
        #[cfg(unix)]
        if let Some((uid, gid)) = self.other {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid).current_dir("/");
        }
        command
    }

    /// Hands `path`, which we made in a folder of ours, to this user (the link itself, never
    /// what a symlink points to).
    pub fn give(&self, path: &Path) -> Result<()> {
        #[cfg(unix)]
        if let Some((uid, gid)) = self.other {
            let what = format!("handing {} to the postgres user", path.display());
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(ProvisionError::io(what))?;
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
            let mode = std::fs::Permissions::from_mode(0o710);
            std::fs::set_permissions(folder, mode).map_err(ProvisionError::io(what()))?;
        }
        Ok(())
    }
}

/// A new private folder (see [`private_folder`]) in `parent`, named `prefix` and 12 random hex
/// digits.
pub fn private_temp_folder(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let random = crate::password::generate_password()?;
    let path = parent.join(format!("{prefix}{}", &random.expose_secret()[..12]));
    private_folder(&path)?;
    Ok(path)
}

/// Creates `path` as a new folder of ours, mode 0700; anything already there (a leftover, a
/// symlink) is an error, and so is a parent folder that belongs to another user.
#[cfg_attr(not(unix), allow(unused_mut))]
pub fn private_folder(path: &Path) -> Result<()> {
    check_parent(path)?;
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let what = format!("creating {}", path.display());
    builder.create(path).map_err(ProvisionError::io(what))
}

/// Makes `path` (and any missing parent) a folder of ours, mode 0700 whatever the umask, or
/// checks the one in place: ours or root's, and neither its group nor others may write it. A
/// user who could write it would rename what we make in it away and put their own there.
#[cfg_attr(not(unix), allow(unused_mut))]
pub fn owned_folder(path: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let what = format!("creating {}", path.display());
    builder.create(path).map_err(ProvisionError::io(what))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let what = format!("inspecting {}", path.display());
        let metadata = std::fs::metadata(path).map_err(ProvisionError::io(what))?;
        let ours = nix::unistd::Uid::effective().as_raw();
        if ![0, ours].contains(&metadata.uid()) || metadata.mode() & 0o022 != 0 {
            return Err(ProvisionError::Failed(format!(
                "{} belongs to another user, or its group or others may write it: another user \
                 could replace what is made in it (chmod 700 it)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Checks that `path`, found in place, is a folder as we make them: a real folder (no symlink)
/// owned by `uid` with exactly `mode`. Anything else may be someone else's trap.
#[cfg(unix)]
pub fn check_private_folder(path: &Path, uid: u32, mode: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let what = format!("inspecting {}", path.display());
    let metadata = std::fs::symlink_metadata(path).map_err(ProvisionError::io(what))?;
    if !metadata.is_dir() || metadata.mode() & 0o777 != mode || metadata.uid() != uid {
        return Err(ProvisionError::Failed(format!(
            "{} is not a private folder as this tool makes them (a symlink, another owner or \
             another mode): remove it and start again",
            path.display()
        )));
    }
    Ok(())
}

/// Writes `contents` to `path`, a new file readable by its owner only (0600), created
/// exclusively: an existing file or symlink there is an error, and so is a folder that belongs
/// to another user.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut file = open(path, OpenOptions::new().write(true).create_new(true))?;
    let what = format!("writing {}", path.display());
    file.write_all(contents.as_bytes())
        .map_err(ProvisionError::io(what))
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
        options.custom_flags(nix::libc::O_NOFOLLOW).mode(0o600);
    }
    let what = format!("opening {}", path.display());
    options.open(path).map_err(ProvisionError::io(what))
}

/// Refuses to write into a folder that another user (root aside) owns: they could swap what we
/// open there for a link to a file of ours.
fn check_parent(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let parent = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        let what = format!("inspecting {}", parent.display());
        let owner = std::fs::metadata(parent)
            .map_err(ProvisionError::io(what))?
            .uid();
        if owner != 0 && owner != nix::unistd::Uid::effective().as_raw() {
            let parent = parent.display();
            let refused =
                format!("refusing to write in {parent}: the folder belongs to another user");
            return Err(ProvisionError::Failed(refused));
        }
    }
    let _ = path;
    Ok(())
}
