//! Nothing is left running: a test process killed with SIGKILL takes its PostgreSQL along.
//! Linux only: it reads /proc, and the parent-death signal it checks is Linux's.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use counseling_provision::process::process_is_alive as alive;
use counseling_testkit::fixtures::wait_until;

/// Starts `hold-cluster` with `args`; returns it with the postmaster's pid and the port it prints.
fn hold_cluster(args: &[&std::ffi::OsStr]) -> (std::process::Child, u32, u16) {
    let mut holder = Command::new(env!("CARGO_BIN_EXE_hold-cluster"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut fields = line.split_whitespace();
    let postmaster = fields.next().unwrap().parse().unwrap();
    let port = fields.next().unwrap().parse().unwrap();
    (holder, postmaster, port)
}

#[test]
fn a_killed_test_process_takes_its_postgres_along() {
    let (mut holder, postmaster, port) = hold_cluster(&[]);
    assert!(
        alive(postmaster),
        "the postmaster runs while its test process does"
    );
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok());

    holder.kill().unwrap(); // SIGKILL: no destructor, no exit hook runs.
    holder.wait().unwrap();

    wait_until(
        "postgres goes with its test process",
        Duration::from_secs(10),
        || !alive(postmaster),
    )
    .unwrap();
    assert!(std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err());
}

#[test]
fn hold_cluster_applies_its_settings_and_cleans_up_on_sigterm() {
    let env_dir = tempfile::tempdir().unwrap();
    let env_file = env_dir.path().join(".env");
    let (mut holder, postmaster, _port) = hold_cluster(&[
        "--env-file".as_ref(),
        env_file.as_os_str(),
        "--tls".as_ref(),
        "--set".as_ref(),
        "work_mem=7MB".as_ref(),
    ]);
    // Read as every .env of ours is read.
    let variables: std::collections::HashMap<String, String> =
        counseling_config::read_env_file(env_dir.path())
            .unwrap()
            .into_iter()
            .collect();
    let ca_file = std::path::PathBuf::from(&variables["CLUSTER_CA_FILE"]);
    assert!(ca_file.is_file(), "{ca_file:?}");
    assert!(
        std::path::Path::new(&variables["CLUSTER_BIN_DIR"])
            .join("psql")
            .exists()
    );
    // The server runs with the setting asked for, and serves TLS from the run's own CA.
    let psql = |sql: &str| {
        Command::new(std::path::Path::new(&variables["CLUSTER_BIN_DIR"]).join("psql"))
            .args(["-Atc", sql])
            .env_clear()
            .env("PGHOST", &variables["PGHOST"])
            .env("PGPORT", &variables["PGPORT"])
            .env("PGUSER", &variables["PGUSER"])
            .env("PGPASSWORD", &variables["PGPASSWORD"])
            .env("PGDATABASE", "postgres")
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &ca_file)
            .output()
            .unwrap()
    };
    let shown = psql("SHOW work_mem");
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), "7MB");
    // The cluster's folder holds the CA file the env file names.
    let cluster_dir = ca_file.ancestors().nth(2).unwrap().to_path_buf();
    assert!(cluster_dir.is_dir());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(holder.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = holder.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!alive(postmaster), "the server stopped with hold-cluster");
    assert!(!cluster_dir.exists(), "{cluster_dir:?} was deleted");
}

/// `hold-cluster -- COMMAND` runs COMMAND against the cluster (here psql, through the
/// environment it is given), passes its exit status on, and fails a COMMAND that leaves a test
/// database behind.
#[test]
fn hold_cluster_runs_a_command_and_reports_test_databases_left_behind() {
    let run = |script: &str| {
        Command::new(env!("CARGO_BIN_EXE_hold-cluster"))
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let psql = |sql: &str| format!(r#""$CLUSTER_BIN_DIR/psql" -v ON_ERROR_STOP=1 -Atc "{sql}""#);
    let fine = run(&format!("{} && exit 3", psql("SELECT 1")));
    assert_eq!(
        fine.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );
    let left = run(&psql("CREATE DATABASE test_left_behind"));
    let stderr = String::from_utf8_lossy(&left.stderr);
    assert_eq!(left.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("left 1 test databases behind"), "{stderr}");
}

/// `--app-only` hands the command the application's two URLs and nothing of the superuser's
/// (its URL, libpq's `PG*` login, the binaries), even where the caller exported such names, nor
/// any other `PG*` or `DATABASE_*` variable exported to it; without it the command gets them all.
#[test]
fn hold_cluster_app_only_gives_the_command_no_superuser_credentials() {
    let names = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hold-cluster"))
            .env("PGPASSWORD", "exported-by-a-developer")
            .env("CLUSTER_BIN_DIR", "/exported")
            .env("PGSSLKEY", "/exported/client.key")
            .env("PGPASSFILE", "/exported/pgpass")
            .env("DATABASE_OWNER_PASSWORD_FILE", "/exported/owner-password")
            .args(extra)
            .args(["--", "/usr/bin/env"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let names: Vec<String> = text
            .lines()
            .filter_map(|line| Some(line.split_once('=')?.0.to_owned()))
            .collect();
        names
    };
    let superuser = [
        "PGSSLKEY",
        "PGPASSFILE",
        "DATABASE_OWNER_PASSWORD_FILE",
        "DATABASE_URL_TEST",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "CLUSTER_BIN_DIR",
    ];
    let all = names(&[]);
    let app_only = names(&["--app-only"]);
    for given in [&all, &app_only] {
        for name in ["DATABASE_URL", "DATABASE_OWNER_URL"] {
            assert!(given.iter().any(|n| n == name), "{name} missing: {given:?}");
        }
    }
    for name in superuser {
        assert!(all.iter().any(|n| n == name), "{name} missing: {all:?}");
        assert!(
            !app_only.iter().any(|n| n == name),
            "{name} given: {app_only:?}"
        );
    }
}
