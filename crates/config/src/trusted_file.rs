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
        use nix::fcntl::OFlag;
        use std::os::unix::fs::OpenOptionsExt;
        // Nor may a terminal put in a file's place become this process's controlling terminal.
        options.custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits());
    }
    options.open(path)
}

/// All of `file`, unless it holds more than `limit` bytes (`None`): of a file put in a setting's
/// place, no more than `limit + 1` bytes are read.
pub(crate) fn read_at_most(file: File, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
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

/// The file's mode when its group or other users may read it.
#[cfg(unix)]
pub(crate) fn readable_by_group_or_others(metadata: &Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// Windows has no mode bits; its ACLs are not read.
#[cfg(not(unix))]
pub(crate) fn readable_by_group_or_others(_metadata: &Metadata) -> Option<u32> {
    None
}

/// Why a folder on the way to `path` lets another user choose what `path` is, if one does: the
/// file's own checks cannot see that. Every folder the path passes through, through its
/// symlinks too, must belong to this process's user or root and be writable by no other user:
/// not by others (unless sticky, and then the entry taken from it must be ours or root's, and a
/// file there no hard link), and by its group only when that is this process's user-private
/// group (named as the user, no other members), as umask 002 leaves a checkout. The way is
/// walked after `opened` was opened, and must end at that same file: folders found safe now
/// could not have been changed by another user since, and anything that cannot be checked is a
/// problem, never a pass.
#[cfg(unix)]
pub(crate) fn path_problem(path: &Path, opened: &Metadata) -> Option<String> {
    use std::collections::VecDeque;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Component, PathBuf};

    const STICKY: u32 = 0o1000;
    let ours = |uid: u32| uid == 0 || uid == nix::unistd::geteuid().as_raw();
    let cannot = |what: &Path, error: std::io::Error| {
        Some(format!("cannot check {}: {}", what.display(), error.kind()))
    };
    let start = if path.is_relative() {
        match std::env::current_dir() {
            Ok(current) => current.join(path),
            Err(error) => return cannot(Path::new("."), error),
        }
    } else {
        path.to_path_buf()
    };
    let mut pending: VecDeque<PathBuf> = start
        .components()
        .map(|component| component.as_os_str().into())
        .collect();
    let mut resolved = PathBuf::from("/");
    let mut last = None;
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        match Path::new(&part).components().next() {
            Some(Component::RootDir) => resolved = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::Normal(name)) => {
                let folder = match std::fs::metadata(&resolved) {
                    Ok(folder) => folder,
                    Err(error) => return cannot(&resolved, error),
                };
                let shown = resolved.display();
                if !ours(folder.uid()) {
                    return Some(format!(
                        "the folder {shown} belongs to another user (uid {})",
                        folder.uid()
                    ));
                }
                let mode = folder.permissions().mode();
                // Sticky (as /tmp, or the root of a Kubernetes Secret's volume): only an entry's
                // owner may replace it.
                let sticky = mode & STICKY != 0;
                let others_may_write = mode & 0o002 != 0
                    || (mode & 0o020 != 0 && !is_user_private_group(folder.gid()));
                if others_may_write && !sticky {
                    return Some(format!(
                        "the folder {shown} may be written by other users, who could put another \
                         file in its place"
                    ));
                }
                let entry = resolved.join(name);
                let found = match std::fs::symlink_metadata(&entry) {
                    Ok(found) => found,
                    Err(error) => return cannot(&entry, error),
                };
                if others_may_write && !ours(found.uid()) {
                    return Some(format!(
                        "{} belongs to another user (uid {}) in the shared folder {shown}",
                        entry.display(),
                        found.uid()
                    ));
                }
                // Where hard links to others' files are allowed (fs.protected_hardlinks=0), one
                // in a shared folder would pass as root's.
                if others_may_write && found.is_file() && found.nlink() > 1 {
                    return Some(format!(
                        "{} has other hard links, in the shared folder {shown}",
                        entry.display()
                    ));
                }
                if found.file_type().is_symlink() {
                    links += 1;
                    // As the kernel's limit: a loop is not followed for ever.
                    if links > 40 {
                        return Some(format!("{} has too many symlinks", path.display()));
                    }
                    let target = match std::fs::read_link(&entry) {
                        Ok(target) => target,
                        Err(error) => return cannot(&entry, error),
                    };
                    for component in target.components().rev() {
                        pending.push_front(component.as_os_str().into());
                    }
                } else {
                    resolved = entry;
                    last = Some(found);
                }
            }
            // `.`, and prefixes, which unix has none of.
            _ => {}
        }
    }
    // The file opened must be the one this way leads to (it was not swapped meanwhile).
    match last {
        Some(found) if found.dev() == opened.dev() && found.ino() == opened.ino() => None,
        _ => Some(format!(
            "{} changed while it was being checked",
            path.display()
        )),
    }
}

/// Whether `gid` is this process's user-private group: its primary group, named as the user,
/// with no other members listed, and no other local user's primary group (`useradd -g` makes
/// such a member, whom the group's own list does not name). A primary group shared by many, as
/// macOS's `staff`, is not; neither is any when `/etc/passwd` cannot be read.
#[cfg(unix)]
fn is_user_private_group(gid: u32) -> bool {
    use nix::unistd::{Gid, Group, User, getegid, geteuid};
    if gid != getegid().as_raw() {
        return false;
    }
    let (Ok(Some(group)), Ok(Some(user))) = (
        Group::from_gid(Gid::from_raw(gid)),
        User::from_uid(geteuid()),
    ) else {
        return false;
    };
    // `/etc/passwd` is read only for a group that is private by its own list.
    is_private_to(&group.name, &group.mem, &user.name, gid, || {
        std::fs::read_to_string("/etc/passwd").ok()
    })
}

/// Whether the group `name` (`gid`, listing `members`) is `user`'s alone: named as the user, no
/// other member listed, and no other user of `passwd` (its text; none: unknown, so no) with it
/// as primary group.
#[cfg(unix)]
fn is_private_to(
    name: &str,
    members: &[String],
    user: &str,
    gid: u32,
    passwd: impl FnOnce() -> Option<String>,
) -> bool {
    if name != user || members.iter().any(|member| member != user) {
        return false;
    }
    let Some(passwd) = passwd() else {
        return false;
    };
    let gid = gid.to_string();
    !passwd.lines().any(|line| {
        let mut fields = line.split(':');
        let (name, primary) = (fields.next(), fields.nth(2));
        name.is_some_and(|name| name != user) && primary == Some(gid.as_str())
    })
}

/// Windows has no owner or mode bits here; its ACLs are not read.
#[cfg(not(unix))]
pub(crate) fn path_problem(_path: &Path, _opened: &Metadata) -> Option<String> {
    None
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, chown, symlink};
    use std::path::Path;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// [`super::path_problem`] for `path` as opened now.
    fn path_problem(path: &Path) -> Option<String> {
        let opened = super::open(path).unwrap().metadata().unwrap();
        super::path_problem(path, &opened)
    }

    /// Another user's uid and gid (Debian's `nobody`), for a folder or entry a stranger owns.
    const STRANGER: u32 = 65534;

    /// Two folders of ours, `safe` and `open`, each with a file `secret`.
    fn folders() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let (safe, open) = (root.path().join("safe"), root.path().join("open"));
        for folder in [&safe, &open] {
            std::fs::create_dir(folder).unwrap();
            std::fs::write(folder.join("secret"), "x").unwrap();
            chmod(folder, 0o755);
        }
        (root, safe, open)
    }

    /// A user whose primary group is ours is a member the group's own list does not name.
    #[test]
    fn another_users_primary_group_is_no_private_group() {
        let private = |members: &[&str], passwd: Option<&str>| {
            let members: Vec<String> = members.iter().map(|&member| member.to_owned()).collect();
            super::is_private_to("svc", &members, "svc", 1001, || passwd.map(str::to_owned))
        };
        let alone = "root:x:0:0:root:/root:/bin/bash\nsvc:x:1001:1001::/home/svc:/bin/sh\n";
        assert!(private(&[], Some(alone)));
        assert!(private(&["svc"], Some(alone)));
        let shared = format!("{alone}bob:x:1002:1001::/home/bob:/bin/sh\n");
        assert!(!private(&[], Some(&shared)));
        assert!(!private(&["bob"], Some(alone)));
        // The gid field, not the uid (bob's uid is 1001 here).
        let uid_only = "svc:x:1000:1001::/:/bin/sh\nbob:x:1001:1002::/:/bin/sh\n";
        assert!(private(&[], Some(uid_only)));
        // Unknown users: not private.
        assert!(!private(&[], None));
        let other_name = super::is_private_to("staff", &[], "svc", 1001, || Some(alone.into()));
        assert!(!other_name);
    }

    #[test]
    fn a_folder_on_the_way_that_others_may_write_is_named() {
        let (_root, safe, open) = folders();
        assert_eq!(path_problem(&safe.join("secret")), None);
        // Relative, and through `..`: the same folders.
        let relative = safe.join("../safe/secret");
        assert_eq!(path_problem(&relative), None);
        // Writable by others: the file could be swapped.
        chmod(&open, 0o777);
        let problem = path_problem(&open.join("secret")).unwrap();
        assert!(problem.contains("may be written"), "{problem}");
        // Reached through a symlink, the open folder is on the way too.
        symlink("../open/secret", safe.join("link")).unwrap();
        let problem = path_problem(&safe.join("link")).unwrap();
        assert!(problem.contains(&open.display().to_string()), "{problem}");
        // Sticky (as /tmp): entries of ours are fine, a hard-linked file is not.
        chmod(&open, 0o1777);
        assert_eq!(path_problem(&open.join("secret")), None);
        std::fs::hard_link(safe.join("secret"), open.join("twin")).unwrap();
        let problem = path_problem(&open.join("twin")).unwrap();
        assert!(problem.contains("hard links"), "{problem}");
    }

    #[test]
    fn a_file_swapped_after_it_was_opened_is_refused() {
        let (_root, safe, _open) = folders();
        let secret = safe.join("secret");
        // Held open, as the reader holds it: its inode cannot be reused meanwhile.
        let file = super::open(&secret).unwrap();
        let opened = file.metadata().unwrap();
        std::fs::remove_file(&secret).unwrap();
        // Gone: it cannot be checked, which is no pass.
        assert!(super::path_problem(&secret, &opened).is_some());
        std::fs::write(&secret, "y").unwrap();
        let problem = super::path_problem(&secret, &opened).unwrap();
        assert!(problem.contains("changed"), "{problem}");
        drop(file);
    }

    #[test]
    fn folders_of_other_users_and_groups_are_named() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: giving files to another user needs root");
            return;
        }
        let (_root, safe, open) = folders();
        symlink("../open/secret", safe.join("link")).unwrap();
        let secret = safe.join("secret");
        // A sticky shared folder: another user's entry is not taken.
        chmod(&open, 0o1777);
        chown(open.join("secret"), Some(STRANGER), None).unwrap();
        let problem = path_problem(&open.join("secret")).unwrap();
        assert!(problem.contains("belongs to another user"), "{problem}");
        // A folder of another user's, however closed.
        chmod(&open, 0o755);
        chown(&open, Some(STRANGER), None).unwrap();
        let problem = path_problem(&safe.join("link")).unwrap();
        assert!(problem.contains("belongs to another user"), "{problem}");
        // Group-writable: fine for our own private group (umask 002), not for another.
        chmod(&safe, 0o775);
        assert_eq!(path_problem(&secret), None);
        chown(&safe, None, Some(STRANGER)).unwrap();
        assert!(path_problem(&secret).unwrap().contains("may be written"));
        // A Kubernetes Secret's volume: a sticky folder its group (fsGroup) and others may
        // write, holding root's entries.
        chmod(&safe, 0o3777);
        assert_eq!(path_problem(&secret), None);
    }

    #[test]
    fn a_symlink_loop_ends_with_a_problem_not_a_hang() {
        let root = tempfile::tempdir().unwrap();
        symlink("b", root.path().join("a")).unwrap();
        symlink("a", root.path().join("b")).unwrap();
        let folder = std::fs::metadata(root.path()).unwrap();
        let problem = super::path_problem(&root.path().join("a"), &folder).unwrap();
        assert!(problem.contains("symlinks"), "{problem}");
    }
}
