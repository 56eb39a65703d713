//! Everything in the test kit that differs between operating systems.
//!
//! The private cluster ([`PgCluster`]) is unix-only: it runs the server as the `postgres` user
//! when the tests run as root, ties the postmaster to the test process with a parent-death
//! signal, and stops, crashes and freezes it with signals. On Windows `PgCluster` keeps its API,
//! so every test compiles, but cannot be started: the tests then need `DATABASE_URL_TEST`
//! ([`crate::TestkitError::PrivateClusterUnsupported`] says so), and those that stop, crash or
//! freeze a cluster of their own cannot run.
//!
//! Both variants export `PgCluster`, `process_is_alive` and `process_space` (crate-internal);
//! unix also `locate_binaries`. The crate root re-exports what is public.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

use crate::Result;
use crate::database::TestDatabase;
use crate::tls::ServerTls;

/// The role that owns the application's databases and runs migrations, on our clusters.
pub const OWNER_ROLE: &str = "testkit_owner";
/// The service's role on our clusters: it may read and write rows of the application's tables,
/// nothing else (no DDL, no superuser, no `CREATE` on the schema).
pub const SERVICE_ROLE: &str = "testkit_service";

/// A password from the operating system's CSPRNG (a v4 UUID's 122 random bits, twice), hex.
pub(crate) fn random_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What kind of cluster [`PgCluster::start_with`] starts; the default is [`PgCluster::start`]'s.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serve TLS (`ssl=on`) with certificates made for this cluster.
    pub tls: Option<ServerTls>,
    /// Server settings (`name`, `value`) that override the kit's defaults, for example a larger
    /// `shared_buffers` for `just bench`.
    pub server_settings: Vec<(String, String)>,
}

/// What every platform's cluster offers on top of its own start and stop.
impl PgCluster {
    /// A new migrated database on this cluster, dropped with the handle.
    pub async fn migrated_database(&self) -> Result<TestDatabase> {
        TestDatabase::on_cluster(self, true).await
    }

    /// A new empty database on this cluster, dropped with the handle.
    pub async fn empty_database(&self) -> Result<TestDatabase> {
        TestDatabase::on_cluster(self, false).await
    }
}
