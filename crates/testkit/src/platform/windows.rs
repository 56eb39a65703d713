//! Windows: no private cluster. `PgCluster` keeps the unix API so every test compiles, but
//! [`PgCluster::start`] fails with [`TestkitError::PrivateClusterUnsupported`], so no value of it
//! ever exists (it holds an `Infallible`) and its methods are unreachable by construction.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sea_orm::sqlx::postgres::PgConnectOptions;

use crate::{Result, TestkitError};

/// A private PostgreSQL cluster: unix only (see [`TestkitError::PrivateClusterUnsupported`]).
#[derive(Debug, Clone)]
pub struct PgCluster {
    never: Infallible,
}

impl PgCluster {
    pub async fn start() -> Result<Self> {
        Self::start_blocking()
    }

    pub fn start_blocking() -> Result<Self> {
        Err(TestkitError::PrivateClusterUnsupported)
    }

    pub async fn start_with(_options: super::ClusterOptions) -> Result<Self> {
        Self::start_blocking()
    }

    pub fn start_blocking_with(_options: super::ClusterOptions) -> Result<Self> {
        Self::start_blocking()
    }

    pub fn tls_files(&self) -> Option<&crate::tls::ClientTlsFiles> {
        match self.never {}
    }

    pub fn bin_dir(&self) -> &std::path::Path {
        match self.never {}
    }

    pub fn admin_options(&self) -> PgConnectOptions {
        match self.never {}
    }

    pub fn superuser_url(&self, _database: &str) -> String {
        match self.never {}
    }

    pub fn owner_url(&self, _database: &str) -> String {
        match self.never {}
    }

    pub fn service_url(&self, _database: &str) -> String {
        match self.never {}
    }

    pub fn owner_options(&self, _database: &str) -> PgConnectOptions {
        match self.never {}
    }

    pub fn port(&self) -> u16 {
        match self.never {}
    }

    pub fn postmaster_pid(&self) -> Option<u32> {
        match self.never {}
    }

    pub fn password(&self) -> &str {
        match self.never {}
    }

    pub fn log_path(&self) -> PathBuf {
        match self.never {}
    }

    pub async fn stop(&self) -> Result<()> {
        match self.never {}
    }

    pub async fn crash(&self) -> Result<()> {
        match self.never {}
    }

    pub async fn restart(&self) -> Result<()> {
        match self.never {}
    }

    pub fn freeze(&self) -> Result<()> {
        match self.never {}
    }

    pub fn thaw(&self) -> Result<()> {
        match self.never {}
    }
}

/// Where a process id means something: this computer.
pub(crate) fn process_space() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

/// Whether process `pid` exists, asked of `tasklist` (the workspace forbids the `unsafe` a
/// Win32 call would need). When that cannot be asked, the answer is yes: a leftover database
/// is harmless, dropping one a running test uses is not.
pub(crate) fn process_is_alive(pid: u32) -> bool {
    let Ok(output) = Command::new("tasklist")
        .args(["/FI", &format!("PID eq {pid}"), "/FO", "CSV", "/NH"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return true;
    };
    if !output.status.success() {
        return true;
    }
    // A match is a CSV row `"image","<pid>",...`; no match is a (localised) notice.
    String::from_utf8_lossy(&output.stdout).contains(&format!("\",\"{pid}\","))
}

/// Creates a new file (its folder's access rules apply: Windows has no mode bits).
pub(crate) fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}
