//! A highly available PostgreSQL on this machine, as the field runs it: one etcd, two
//! Patroni-managed PostgreSQL nodes with synchronous replication, and HAProxy with a port that
//! always leads to the primary (health-checked through Patroni's REST API) and one for replicas.
//!
//! Everything listens on 127.0.0.1 only and lives in a fresh 0700 directory created exclusively.
//! Passwords are generated per run from the operating system's cryptographic source, kept in
//! 0600 files and handed to Patroni through its environment, never on a command line. The fixed
//! configuration is `ha/patroni.yml` and `ha/haproxy.cfg` in the repository; what differs per
//! run (ports, directories, passwords) is filled in through the programs' own environment
//! overrides.
//!
//! Used by the `ha-stack` binary (`just ha-up`, `ha-down`, `ha-status`) and by the HA tests.
//! Unix only (Patroni, etcd and HAProxy from Debian's packages; user switching, signals): on
//! other platforms the crate is empty.
#![cfg(unix)]

mod ports;
mod rest;
mod secrets;
mod stack;

pub use ports::Ports;
pub use rest::{Member, cluster_members};
pub use secrets::{Password, generate_password, write_private};
pub use stack::{APP_DATABASE, APP_ROLE, HaStack, NODES, OWNER_ROLE, SavedStack, StackOptions};

/// Everything that can go wrong while running the stack.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not installed (apt-get install patroni etcd-server python3-etcd haproxy)")]
    Missing(String),
    #[error("no port range of {0} free ports found on 127.0.0.1")]
    NoFreePorts(u16),
    #[error("{0}")]
    Invalid(String),
    #[error("{what} did not happen within {seconds} s{detail}")]
    Timeout {
        what: String,
        seconds: u64,
        detail: String,
    },
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: sea_orm::sqlx::Error,
    },
    #[error("{0} failed")]
    Command(String),
    #[error("{0} exited while starting (see its log)")]
    Exited(String),
}

impl HaError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| HaError::Io { what, source }
    }
}

pub type Result<T, E = HaError> = std::result::Result<T, E>;
