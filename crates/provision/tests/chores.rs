//! The provisioning chores that need no server: binaries, files, passwords, processes, literals,
//! URLs, waiting, and the error that names the remedy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use counseling_provision::binaries::locate_binaries;
#[cfg(unix)]
use counseling_provision::files::ServerUser;
use counseling_provision::password::generate_password;
use counseling_provision::url::{local_url, with_database};
use counseling_provision::wait::{eventually, wait_until};
use counseling_provision::{ProvisionError, roles};
use secrecy::{ExposeSecret, SecretString};

#[test]
fn no_binaries_anywhere_names_every_remedy_and_a_wrong_pg_bin_dir_is_no_fallback() {
    let empty = tempfile::tempdir().unwrap();
    let path = Some(empty.path().as_os_str().to_owned());
    let message = locate_binaries(None, empty.path(), path)
        .unwrap_err()
        .to_string();
    for remedy in [
        "apt-get install postgresql",
        "DATABASE_URL_TEST",
        "PG_BIN_DIR",
    ] {
        assert!(message.contains(remedy), "{message}");
    }
    let wrong = Some(PathBuf::from("/nonexistent/bin"));
    let error = locate_binaries(wrong, Path::new("/usr/lib/postgresql"), None).unwrap_err();
    assert!(error.to_string().contains("/nonexistent/bin"));
}

#[test]
fn picks_the_newest_supported_major_with_server_binaries() {
    let root = tempfile::tempdir().unwrap();
    for major in ["9", "14", "15", "17", "18"] {
        let bin = root.path().join(major).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // 18 is a client-only install; 9 and 14 are older than we support.
        if major != "18" {
            std::fs::write(bin.join("initdb"), "").unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
        }
    }
    let found = |root: &Path| locate_binaries(None, root, None);
    assert_eq!(
        found(root.path()).unwrap(),
        root.path().join("17").join("bin")
    );
    std::fs::remove_dir_all(root.path().join("17")).unwrap();
    assert_eq!(
        found(root.path()).unwrap(),
        root.path().join("15").join("bin")
    );
    std::fs::remove_dir_all(root.path().join("15")).unwrap();
    assert!(found(root.path()).is_err(), "14 is too old");
}

/// Debian links `initdb` into PATH, but not `postgres`: the link is followed to the folder that
/// has both.
#[cfg(unix)]
#[test]
fn an_initdb_on_path_leads_to_its_real_folder() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real").join("bin");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("initdb"), "").unwrap();
    std::fs::write(real.join("postgres"), "").unwrap();
    let on_path = dir.path().join("on-path");
    std::fs::create_dir_all(&on_path).unwrap();
    std::os::unix::fs::symlink(real.join("initdb"), on_path.join("initdb")).unwrap();
    let empty_lib = dir.path().join("lib");
    let path = Some(on_path.clone().into_os_string());
    let found = locate_binaries(None, &empty_lib, path).unwrap();
    assert_eq!(found, std::fs::canonicalize(&real).unwrap());
    // A client-only folder behind the link is no server.
    std::fs::remove_file(real.join("postgres")).unwrap();
    let path = Some(on_path.into_os_string());
    assert!(locate_binaries(None, &empty_lib, path).is_err());
}

#[cfg(unix)]
#[test]
fn private_files_are_0600_created_once_and_never_through_a_symlink() {
    use counseling_provision::files::{append_log, write_private};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    write_private(&path, "one").unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(write_private(&path, "two").is_err());
    let (target, planted) = (dir.path().join("target"), dir.path().join("planted"));
    std::fs::write(&target, "mine").unwrap();
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    assert!(write_private(&planted, "theirs").is_err());
    assert!(append_log(&planted).is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
}

#[cfg(unix)]
#[test]
fn nothing_is_written_in_a_folder_of_another_user() {
    use counseling_provision::files::{append_log, private_folder, write_private};
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

/// Cargo gives a test its `CARGO_*` variables: a server's user sees none of them, only `PATH`.
#[cfg(unix)]
#[test]
fn a_servers_command_gets_none_of_our_environment_but_path() {
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let output = ServerUser::of_this_process()
        .unwrap()
        .command("/usr/bin/env")
        .output()
        .unwrap();
    assert!(output.status.success());
    let names: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.to_owned()))
        .collect();
    let allowed = ["PATH", "TZ"];
    assert!(
        names.iter().all(|name| allowed.contains(&name.as_str())),
        "{names:?}"
    );
    assert!(names.iter().any(|name| name == "PATH"), "{names:?}");
}

#[test]
fn passwords_are_long_hex_differ_and_hide_in_debug() {
    let (a, b) = (generate_password().unwrap(), generate_password().unwrap());
    assert_eq!(a.expose_secret().len(), 64);
    assert!(a.expose_secret().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert!(!format!("{a:?}").contains(a.expose_secret()));
}

#[cfg(unix)]
#[test]
fn this_process_lives_and_an_exited_child_does_not_whether_reaped_or_a_zombie() {
    use counseling_provision::process::process_is_alive;
    assert!(process_is_alive(std::process::id()));
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Not yet waited for: once it exits it is a zombie, and counts as gone.
    let gone = wait_until("the child exits", Duration::from_secs(5), || {
        !process_is_alive(pid)
    });
    gone.unwrap();
    child.wait().unwrap();
    assert!(!process_is_alive(pid));
}

#[test]
fn a_literal_cannot_be_left() {
    assert_eq!(roles::literal(r"it's \' x"), r"'it''s \'' x'");
}

#[test]
fn every_part_of_a_url_is_encoded_and_decodes_to_what_was_given() {
    let password = SecretString::from("p@ss:/?#% w'rd %41".to_owned());
    let url = local_url(
        5432,
        "app",
        Some(&password),
        "my db",
        &[("sslmode", "disable")],
    );
    let url = url.unwrap();
    assert_eq!(
        url.password().unwrap().expose_secret(),
        "p@ss:/?#% w'rd %41"
    );
    assert_eq!((url.port(), url.database()), (5432, Some("my db")));
    let other = with_database(&url, "other", &[("application_name", "x")]).unwrap();
    assert_eq!(
        other.password().unwrap().expose_secret(),
        "p@ss:/?#% w'rd %41"
    );
    let parameters: Vec<_> = other.parameters().collect();
    assert_eq!(
        parameters,
        [("sslmode", "disable"), ("application_name", "x")]
    );
}

#[test]
fn waits_until_it_holds_and_times_out_naming_what_did_not_happen() {
    let mut calls = 0;
    let value = wait_until("the third call", Duration::from_secs(5), || {
        calls += 1;
        (calls == 3).then_some(calls)
    });
    assert_eq!(value.unwrap(), 3);
    let started = Instant::now();
    let error = wait_until("never", Duration::from_millis(100), || false).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    // Its limit, not some multiple of it (the pauses never outlast the deadline: a unit test).
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(error.to_string(), "never did not happen within 1 s");
}

#[tokio::test]
async fn eventually_polls_an_async_check() {
    let mut calls = 0;
    let second = eventually("the second call", Duration::from_secs(5), async || {
        calls += 1;
        calls == 2
    });
    second.await.unwrap();
    let never = eventually("never", Duration::from_millis(20), async || false);
    assert!(never.await.is_err());

    // Its pauses let the runtime run other tasks (this test's runtime has one thread): a flag
    // that a task sets is seen.
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn({
        let flag = std::sync::Arc::clone(&flag);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let set = async || flag.load(std::sync::atomic::Ordering::SeqCst);
    eventually("the flag set", Duration::from_secs(1), set)
        .await
        .unwrap();
}

#[cfg(unix)]
#[test]
fn private_folders_are_0700_and_new() {
    use counseling_provision::files::private_folder;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("private");
    private_folder(&folder).unwrap();
    let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // A leftover is never taken for ours (nor a symlink: mkdir refuses whatever is there).
    assert!(private_folder(&folder).is_err(), "a leftover was reused");
}

#[test]
fn the_windows_error_names_the_remedy_and_what_cannot_run() {
    let message = ProvisionError::PrivateClusterUnsupported.to_string();
    assert!(message.contains("set DATABASE_URL_TEST"), "{message}");
    assert!(message.contains("cannot run"), "{message}");
}
