//! The one way our tools provision PostgreSQL: the test kit's clusters, the project-local cluster
//! of `just dev` (crates/local-postgres) and the HA harness (where Patroni runs `initdb`) all do
//! their chores here. Dev tooling only: nothing of the product depends on it.
//!
//! * [`binaries`]: the server binaries (`PG_BIN_DIR`, else the newest supported major installed,
//!   else `PATH`).
//! * [`files`]: the user the servers run as (`postgres` when we are root), private folders and
//!   0600 files that are never written through a symlink or inside a folder another user owns.
//! * [`password`]: the one password generator.
//! * [`server`]: `initdb`, `pg_hba.conf`, start, wait until ready, stop, freeze.
//! * [`process`]: whether a process lives (a zombie does not), signals, the parent-death tie.
//! * [`roles`]: roles, databases and grants (`migration::roles`); passwords as quoted literals.
//! * [`url`]: URLs built from parts (`counseling_config::DatabaseUrl::from_parts`).
//! * [`wait`], [`http`]: waiting with a deadline; a plain HTTP GET.

pub mod binaries;
pub mod files;
pub mod http;
pub mod password;
pub mod process;
pub mod roles;
pub mod server;
pub mod url;
pub mod wait;

/// The database superuser of every cluster we make (and the operating-system user the servers
/// run as when we are root).
pub const SUPERUSER: &str = "postgres";

/// Everything that can go wrong while provisioning or driving a server.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "no PostgreSQL server binaries found ({searched}): install them (`apt-get install \
         postgresql`), or set PG_BIN_DIR to the directory holding initdb and postgres \
         (DATABASE_URL_TEST moves the tests' databases to a running server, but the tests that \
         stop, freeze or replicate a server still start their own)"
    )]
    NoBinaries { searched: String },
    /// Only on platforms without our private clusters (Windows).
    #[error(
        "the test kit's private PostgreSQL cluster is unix-only (it relies on user switching, a \
         parent-death signal and unix signals). On Windows set DATABASE_URL_TEST to a running \
         server, such as a local PostgreSQL service or compose's db-test (see DATABASE_URL_TEST \
         in .env.example); tests that stop, crash or freeze a cluster of their own cannot run \
         there"
    )]
    PrivateClusterUnsupported,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: sea_orm::sqlx::Error,
    },
    #[error("migrating the database failed: {0}")]
    Migration(#[from] sea_orm::DbErr),
    #[error("{what} did not happen within {seconds} s")]
    Timeout { what: String, seconds: u64 },
    #[error("{0}")]
    Failed(String),
}

impl ProvisionError {
    /// `map_err(ProvisionError::io("doing what"))`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// `map_err(ProvisionError::db("doing what"))`.
    pub fn db(what: impl Into<String>) -> impl FnOnce(sea_orm::sqlx::Error) -> Self {
        let what = what.into();
        move |source| Self::Database { what, source }
    }
}

pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;

/// Runs `work` to completion on a runtime of its own, in a thread of its own: callable from
/// synchronous code, from `Drop`, and from inside another runtime (where blocking on a second
/// one is not allowed).
pub fn block_on<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ProvisionError::io("starting a runtime"))?
            .block_on(work)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(ProvisionError::Failed(
            "a provisioning task panicked".into(),
        ))
    })
}
