//! `local-postgres provide`, `just dev`'s choice of database, on a machine where Docker is only
//! half there: a stand-in `docker` first on `PATH` plays each case (no engine, no compose plugin,
//! a pull that fails, a db that starts where DATABASE_URL does not point). Each time the project-local PostgreSQL is started instead, after one line
//! saying why, and `DATABASE_URL` then answers. A configuration problem stops before Docker.
//!
//! Unix only, like the project-local cluster.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use counseling_local_postgres::LocalCluster;
use counseling_provision::password::generate_password;
use counseling_provision::server::free_port;
use counseling_provision::url::local_url;
use secrecy::ExposeSecret;

const NO_ENGINE: &str = r#"case "$1" in
  info) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1;;
esac
exit 0"#;

/// Debian 12's docker.io: the CLI knows no `compose`, and takes `--env-file` for its own flag.
const NO_COMPOSE_PLUGIN: &str = r#"case "$1 $2" in
  "info "*) exit 0;;
  "compose version") echo "docker: 'compose' is not a docker command." >&2; exit 1;;
  compose*) echo "unknown flag: --env-file" >&2; exit 125;;
esac
exit 0"#;

/// Compose's db "starts", but nothing answers at DATABASE_URL (compose publishes 5432 only).
const STARTS_ELSEWHERE: &str = r#"case "$1 $2" in
  "info "*) exit 0;;
  "compose version") echo "Docker Compose version v2.29.7"; exit 0;;
esac
exit 0"#;

const PULL_FAILS: &str = r#"case "$1 $2" in
  "info "*) exit 0;;
  "compose version") echo "Docker Compose version v2.29.7"; exit 0;;
  compose*) echo " db Pulling" >&2; echo "Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host" >&2; exit 18;;
esac
exit 0"#;

/// A scratch checkout whose `bin/` comes first on `PATH`, for a stand-in `docker`. Dropping
/// it stops the checkout's cluster and deletes it, whatever the test did.
struct Checkout {
    dir: tempfile::TempDir,
    path: String,
}

impl Checkout {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        Self { dir, path }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Where the stand-in `docker` logs its arguments, a line a call.
    fn docker_log(&self) -> PathBuf {
        self.root().join("docker.log")
    }

    /// A stand-in `docker`: logs its arguments, then answers as `script` says.
    fn stand_in_docker(&self, script: &str) {
        let path = self.root().join("bin/docker");
        let log = self.docker_log();
        let text = format!("#!/bin/sh\necho \"$*\" >> '{}'\n{script}\n", log.display());
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn write_env(&self, env: &str) {
        std::fs::write(self.root().join(".env"), env).unwrap();
        // Not group-writable whatever the umask (002 would be refused).
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(self.root().join(".env"), private).unwrap();
    }

    fn local_postgres(&self, command: &str) -> Output {
        self.local_postgres_with(command, &[])
    }

    /// [`Checkout::local_postgres`] with `exported` in its environment.
    fn local_postgres_with(&self, command: &str, exported: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_local-postgres"))
            .arg(command)
            .current_dir(self.root())
            .env_clear()
            .env("PATH", &self.path)
            .envs(std::env::var_os("PG_BIN_DIR").map(|dir| ("PG_BIN_DIR", dir)))
            .envs(exported.iter().copied())
            .output()
            .unwrap()
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Ok(cluster) = LocalCluster::of_checkout(self.root()) {
            let _ = cluster.stop();
            let _ = std::fs::remove_dir_all(cluster.root());
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn without_a_working_docker_compose_the_project_local_postgres_is_started() {
    let checkout = Checkout::new();
    let port = free_port().unwrap();
    let url = |user: &str| {
        let password = generate_password().unwrap();
        local_url(port, user, Some(&password), "counseling_platform", &[]).unwrap()
    };
    let (service, owner) = (url("counseling"), url("counseling_owner"));
    let env = format!(
        "DATABASE_URL={}\nDATABASE_OWNER_URL={}\n",
        service.expose_secret(),
        owner.expose_secret()
    );
    checkout.write_env(&env);
    let log = checkout.docker_log();

    let cases = [
        (NO_ENGINE, "the Docker engine does not answer", "info\n"),
        (
            NO_COMPOSE_PLUGIN,
            "docker has no compose plugin",
            "info\ncompose version\n",
        ),
        (
            PULL_FAILS,
            "docker compose up failed (Error response from daemon",
            "info\ncompose version\ncompose --env-file .env -f docker/docker-compose.yml up -d --wait db\n",
        ),
        (
            STARTS_ELSEWHERE,
            "compose's db started, but DATABASE_URL still does not answer",
            "info\ncompose version\ncompose --env-file .env -f docker/docker-compose.yml up -d --wait db\n",
        ),
    ];
    for (script, reason, docker_calls) in cases {
        checkout.stand_in_docker(script);
        let _ = std::fs::remove_file(&log);
        let answers = checkout.local_postgres("answers");
        assert_eq!(answers.status.code(), Some(1), "{}", text(&answers.stderr));

        let provided = checkout.local_postgres("provide");
        let (stdout, stderr) = (text(&provided.stdout), text(&provided.stderr));
        assert!(provided.status.success(), "{reason}: {stdout}{stderr}");
        let why: Vec<&str> = stdout
            .lines()
            .filter(|line| line.contains(reason))
            .collect();
        assert_eq!(why.len(), 1, "{reason}: {stdout}");
        assert!(
            why[0].ends_with("; using the project-local PostgreSQL"),
            "{}",
            why[0]
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), docker_calls);
        let answers = checkout.local_postgres("answers");
        assert_eq!(answers.status.code(), Some(0), "{}", text(&answers.stderr));

        let stopped = checkout.local_postgres("stop");
        assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    }

    // Running, the cluster gets the superuser's password only on its own port: with
    // DATABASE_URL moved to another port (where anyone may listen), start refuses.
    let started = checkout.local_postgres("start");
    assert!(started.status.success(), "{}", text(&started.stderr));
    let elsewhere = free_port().unwrap();
    let moved = |url: &counseling_config::DatabaseUrl| {
        let url = url.with_hosts(&[("127.0.0.1", elsewhere)]).unwrap();
        url.expose_secret().to_owned()
    };
    let env = format!(
        "DATABASE_URL={}\nDATABASE_OWNER_URL={}\n",
        moved(&service),
        moved(&owner)
    );
    checkout.write_env(&env);
    let refused = checkout.local_postgres("start");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains(&format!("runs on port {port}")), "{stderr}");
    assert!(checkout.local_postgres("stop").status.success());

    // A configuration problem is said, exit 2, before Docker or a cluster is tried.
    let _ = std::fs::remove_file(&log);
    let typo = format!("{}?sslmod=require", service.expose_secret());
    checkout.write_env(&format!("DATABASE_URL={typo}\n"));
    let provided = checkout.local_postgres("provide");
    assert_eq!(
        provided.status.code(),
        Some(2),
        "{}",
        text(&provided.stderr)
    );
    assert!(text(&provided.stderr).contains("sslmod"));
    assert!(!log.exists(), "docker was run");

    // So is a DATABASE_URL exported beside .env's DATABASE_OWNER_URL, which the migrations of
    // `just dev`'s next step would refuse: said now, before anything is started.
    let env = format!(
        "DATABASE_URL={}\nDATABASE_OWNER_URL={}\n",
        service.expose_secret(),
        owner.expose_secret()
    );
    checkout.write_env(&env);
    let exported = [("DATABASE_URL", service.expose_secret())];
    let provided = checkout.local_postgres_with("provide", &exported);
    let stderr = text(&provided.stderr);
    assert_eq!(provided.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DATABASE_OWNER_URL comes from .env"),
        "{stderr}"
    );
    assert!(!log.exists(), "docker was run");
}

#[test]
fn a_warning_about_the_configuration_is_said_once_however_often_it_is_probed() {
    let checkout = Checkout::new();
    // The URL in a file others may read (a warning, not an error), naming a port where nothing
    // listens: probed, then compose's db "starts", then probed again.
    let password = generate_password().unwrap();
    let url = local_url(
        free_port().unwrap(),
        "counseling",
        Some(&password),
        "x",
        &[],
    )
    .unwrap();
    let url_file = checkout.root().join("database-url");
    std::fs::write(&url_file, url.expose_secret()).unwrap();
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = format!("DATABASE_URL_FILE={}\n", url_file.display());
    checkout.write_env(&env);
    checkout.stand_in_docker(STARTS_ELSEWHERE);

    let provided = checkout.local_postgres("provide");
    let (stdout, stderr) = (text(&provided.stdout), text(&provided.stderr));
    assert!(
        stdout.contains("compose's db started, but DATABASE_URL still does not answer"),
        "{stdout}{stderr}"
    );
    let warnings = stderr.matches("warning: DATABASE_URL_FILE").count();
    assert_eq!(warnings, 1, "{stderr}");
    assert!(!stderr.contains(password.expose_secret()), "{stderr}");
}
