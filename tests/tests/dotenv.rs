//! `.env`: read from the working directory only (never a parent folder's), the environment wins,
//! and a malformed line is an error naming its number, for both binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use counseling_e2e::{Api, TempDir, api_binary, run_to_exit_in, wait_for_status, workspace_binary};
use counseling_testkit::TestDatabase;

fn write_env(dir: &std::path::Path, text: &str) {
    std::fs::write(dir.join(".env"), text).unwrap();
    // Not group-writable whatever the umask (002 would be refused).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.join(".env"), private).unwrap();
    }
}

/// Runs `migration status` in `dir` with an otherwise empty environment.
fn migration_status_in(dir: &std::path::Path) -> (Option<i32>, String) {
    run_in(dir, workspace_binary("migration"), Some("status"))
}

/// Runs `binary` to exit in `dir` with an empty environment; its exit code and output.
fn run_in(dir: &std::path::Path, binary: PathBuf, argument: Option<&str>) -> (Option<i32>, String) {
    let output = Command::new(binary)
        .args(argument)
        .current_dir(dir)
        .env_clear()
        // Without HOME, libpq's files would be looked for in the user's real home.
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[test]
fn the_working_directorys_env_is_read_by_both_binaries() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::migrated()).unwrap();
    let dir = TempDir::new("dotenv-here");
    write_env(
        dir.path(),
        &format!("DATABASE_URL={}\nLOG_FORMAT=json\n", db.url()),
    );

    let (code, output) = migration_status_in(dir.path());
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("applied"), "{output}");

    let api = Api::spawn_in(dir, &[]);
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(10));
}

#[test]
fn a_parent_folders_env_is_never_read() {
    let parent = TempDir::new("dotenv-parent");
    write_env(
        parent.path(),
        "DATABASE_URL=postgres://u:p@127.0.0.1:1/db\n",
    );
    let child = parent.path().join("child");
    std::fs::create_dir(&child).unwrap();

    let (code, output) = migration_status_in(&child);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("DATABASE_URL is not set"), "{output}");

    let (code, output) = run_in(&child, api_binary(), None);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("DATABASE_URL is not set"), "{output}");
}

#[test]
fn the_environment_wins_over_env() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::migrated()).unwrap();
    let dir = TempDir::new("dotenv-wins");
    // .env names a database nobody serves; the environment the real one.
    write_env(dir.path(), "DATABASE_URL=postgres://u:p@127.0.0.1:1/db\n");
    let url = db.url();
    let api = Api::spawn_in(dir, &[("DATABASE_URL", url.as_str())]);
    wait_for_status(&api.url("/health"), 200, Duration::from_secs(10));
}

#[test]
fn a_malformed_line_is_named_by_number_and_its_value_never_shown() {
    let dir = TempDir::new("dotenv-malformed");
    write_env(
        dir.path(),
        "# settings\nAPP_PORT=8000\n\nDATABASE_URL='postgres://u:hunter2@h/db\nRUST_LOG=info\n",
    );
    let (status, output) = run_to_exit_in(&dir, &[]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert_eq!(output.trim().lines().count(), 1, "{output}");
    assert!(output.contains(".env line 4 is malformed"), "{output}");
    assert!(!output.contains("hunter2"), "{output}");

    let (code, output) = migration_status_in(dir.path());
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains(".env line 4 is malformed"), "{output}");
    assert!(!output.contains("hunter2"), "{output}");
}
