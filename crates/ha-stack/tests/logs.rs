//! The harness runs as root and writes next to folders the servers' user (postgres) writes: what
//! it writes is never written through a symlink, and never into a folder another user owns.
#![cfg(unix)] // the HA harness is unix-only
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use counseling_ha::{HaStack, Ports, SavedStack};
use counseling_provision::files::ServerUser;

/// A stack folder (no servers) whose `logs/` holds one log, for `copy_logs`.
fn stack_with_a_log(parent: &Path) -> HaStack {
    let dir = parent.join("counseling-ha-test");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/etcd.log"), "what etcd said\n").unwrap();
    let saved = SavedStack {
        dir,
        ports: Ports::new(40_000).unwrap(),
        pg_bin_dir: parent.to_owned(),
        etcd: 0,
        haproxy: 0,
        patroni: [None, None],
    };
    HaStack::attach(saved).unwrap()
}

/// In `parent`: a stack with a log, a file `victim` that says "precious", and a folder `into`
/// where a link named like the log points at the victim. Returns the three.
fn planted_link(parent: &Path, into: &str) -> (HaStack, PathBuf, PathBuf) {
    let stack = stack_with_a_log(parent);
    let victim = parent.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let into = parent.join(into);
    std::fs::create_dir(&into).unwrap();
    std::os::unix::fs::symlink(&victim, into.join("etcd.log")).unwrap();
    (stack, victim, into)
}

#[test]
fn copied_logs_replace_a_planted_symlink_and_never_follow_it() {
    let scratch = tempfile::tempdir().unwrap();
    let (stack, victim, into) = planted_link(scratch.path(), "copied");

    stack.copy_logs(&into);

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let copy = into.join("etcd.log");
    assert!(std::fs::symlink_metadata(&copy).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "what etcd said\n");
}

#[test]
fn logs_are_not_copied_into_a_folder_the_servers_user_owns() {
    let user = ServerUser::of_this_process().unwrap();
    if !user.is_another() {
        // Not root: the servers run as we do, and no other user owns anything of ours.
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    // postgres's folder, where postgres planted a link to a file of root's.
    let (stack, victim, into) = planted_link(scratch.path(), "theirs");
    user.give(&into.join("etcd.log")).unwrap();
    user.give(&into).unwrap();

    stack.copy_logs(&into);

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let planted = std::fs::symlink_metadata(into.join("etcd.log")).unwrap();
    assert!(
        planted.is_symlink(),
        "the harness touched postgres's folder"
    );
}
