//! Where the test kit writes (as root, for servers run by `postgres`), a planted symlink is never
//! followed: the kit's folder is one the `postgres` user may only pass through, and the files the
//! kit writes there are opened without following links or replaced rather than rewritten.
#![cfg(unix)] // the kit's private clusters are unix-only
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use counseling_testkit::PgCluster;

/// A file of ours, outside the cluster's folder, that a planted link points to.
fn victim(dir: &Path) -> PathBuf {
    let path = dir.join("victim");
    std::fs::write(&path, "untouched\n").unwrap();
    path
}

fn plant(link: &Path, target: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[tokio::test]
async fn links_planted_where_the_kit_writes_are_not_followed() {
    let cluster = PgCluster::start().await.unwrap();
    let root = cluster.log_path().parent().unwrap().to_path_buf();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = victim(elsewhere.path());

    // The server's user cannot plant anything in the kit's folder: it may pass through only.
    if nix::unistd::Uid::effective().is_root() {
        let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        let planted = root.join("planted-by-postgres");
        let status = std::process::Command::new("ln")
            .arg("-s")
            .arg(&victim)
            .arg(&planted)
            .uid(postgres.uid.as_raw())
            .gid(postgres.gid.as_raw())
            .current_dir("/")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "postgres wrote in {}", root.display());
        assert!(std::fs::symlink_metadata(&planted).is_err());
    }

    // Were a link there anyway: the server's log is appended to at each start, never through it.
    plant(&cluster.log_path(), &victim);
    let refused = cluster.restart().await;
    assert!(
        refused.is_err(),
        "the server was started with its log through a link"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");

    // pg_hba.conf is rewritten (here, for a standby's replication) by replacing the file: the
    // link goes, the victim stays as it was.
    std::fs::remove_file(cluster.log_path()).unwrap();
    cluster.restart().await.unwrap();
    let hba = root.join("pg_hba.conf");
    plant(&hba, &victim);
    let standby = cluster.start_standby().await.unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    let hba_file = std::fs::symlink_metadata(&hba).unwrap();
    assert!(hba_file.file_type().is_file(), "{hba_file:?}");
    assert!(
        std::fs::read_to_string(&hba)
            .unwrap()
            .contains("replication")
    );
    drop(standby);
}
