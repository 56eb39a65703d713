//! Helpers for the black-box tests in `tests/*.rs`: run the real `counseling-api` binary and
//! talk to it over HTTP.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use counseling_testkit::fixtures::{get, wait_until};

#[cfg(unix)]
pub mod signal;

/// The `counseling-api` binary that `cargo test --workspace` builds next to the test binaries.
pub fn api_binary() -> PathBuf {
    workspace_binary("counseling-api")
}

/// A binary of the workspace (`counseling-api`, `migration`), built next to the test binaries.
pub fn workspace_binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
            Some(exe.parent()?.parent()?.join(file))
        })
        .unwrap_or_default();
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
        binary.display()
    );
    binary
}

/// Runs `migration up` as the owner (`owner_url`), with the service's role (`service_url`) to
/// grant rows to, in an empty folder (no `.env`); fails the test unless it succeeds.
pub fn migrate_up(owner_url: &str, service_url: &str) {
    let workdir = TempDir::new("migrate");
    let migrated = Command::new(workspace_binary("migration"))
        .arg("up")
        .current_dir(workdir.path())
        .env("DATABASE_OWNER_URL", owner_url)
        .env("DATABASE_URL", service_url)
        .output()
        .unwrap_or_else(|error| panic!("cannot run migration: {error}"));
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
}

/// A free TCP port on loopback (released before use; the window for a clash is tiny).
pub fn free_port() -> u16 {
    counseling_testkit::fixtures::free_port().unwrap_or_else(|error| panic!("{error}"))
}

/// A running `counseling-api` process, killed when dropped.
#[derive(Debug)]
pub struct Api {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    _workdir: TempDir,
}

impl Api {
    /// Starts the binary in an empty directory (no `.env`) with exactly `vars` (plus PATH).
    pub fn spawn(vars: &[(&str, &str)]) -> Api {
        Self::spawn_in(TempDir::new("api"), vars)
    }

    /// Starts the binary in `workdir` (with whatever `.env` it holds) and exactly `vars`.
    pub fn spawn_in(workdir: TempDir, vars: &[(&str, &str)]) -> Api {
        let port = free_port();
        let log = workdir.path().join("output.log");
        let child = run_binary(workdir.path(), vars, Some(port), &log);
        Api {
            child,
            port,
            log,
            _workdir: workdir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until the port accepts connections.
    pub fn wait_listening(&mut self) {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let listening = wait_until("listening", Duration::from_secs(20), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("counseling-api exited early ({status}):\n{}", self.output());
            }
            std::net::TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok()
        });
        listening.unwrap_or_else(|error| panic!("{error}:\n{}", self.output()));
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let exited = wait_until("an exit", limit, || self.child.try_wait().ok().flatten());
        exited.unwrap_or_else(|error| panic!("{error}:\n{}", self.output()))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for configuration errors); returns its status and output.
pub fn run_to_exit(vars: &[(&str, &str)]) -> (ExitStatus, String) {
    run_to_exit_in(&TempDir::new("api-exit"), vars)
}

/// [`run_to_exit`] in `workdir`.
pub fn run_to_exit_in(workdir: &TempDir, vars: &[(&str, &str)]) -> (ExitStatus, String) {
    let log = workdir.path().join("output.log");
    let mut child = run_binary(workdir.path(), vars, None, &log);
    let exited = wait_until("counseling-api exits", Duration::from_secs(10), || {
        child.try_wait().ok().flatten()
    });
    let _ = child.kill();
    let status = exited.unwrap_or_else(|error| panic!("{error}"));
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

fn run_binary(dir: &Path, vars: &[(&str, &str)], port: Option<u16>, log: &Path) -> Child {
    let output = File::create(log).unwrap_or_else(|e| panic!("creating the log: {e}"));
    let errors = output
        .try_clone()
        .unwrap_or_else(|e| panic!("creating the log: {e}"));
    let mut command = Command::new(api_binary());
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "json")
        // Without HOME, libpq's files would be looked for in the user's real home (as libpq
        // does): the test's own folder holds none.
        .env("HOME", dir)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        // A file, not a pipe: nobody would drain a pipe while the test waits.
        .stdout(Stdio::from(output))
        .stderr(Stdio::from(errors));
    if let Some(port) = port {
        command.env("APP_PORT", port.to_string());
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("starting counseling-api: {e}"))
}

/// The test kit's GET: status and JSON body (`Null` when the body is not JSON).
pub fn get_json(url: &str, timeout: Duration) -> Result<(u16, serde_json::Value), String> {
    let reply = get(url, &[], timeout).map_err(|error| error.to_string())?;
    Ok((reply.status, reply.json()))
}

/// The test kit's GET: status, content type and body text.
pub fn get_text(url: &str, timeout: Duration) -> Result<(u16, String, String), String> {
    let reply = get(url, &[], timeout).map_err(|error| error.to_string())?;
    let content_type = reply.header("content-type").unwrap_or_default().to_owned();
    Ok((reply.status, content_type, reply.body))
}

/// Polls `GET url` until it returns `status`; returns how long that took, or panics after `limit`.
pub fn wait_for_status(url: &str, status: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    let answered = || get_json(url, Duration::from_secs(3)).is_ok_and(|(got, _)| got == status);
    let what = format!("{url} answering {status}");
    wait_until(&what, limit, answered).unwrap_or_else(|error| panic!("{error}"));
    started.elapsed()
}

/// A directory of its own, removed on drop: a fresh random name, created exclusively and
/// readable by its owner only (`tempfile`), so nothing another local user prepared is reused.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("counseling-e2e-{label}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}
