//! Test support: a real, throwaway PostgreSQL for every test.
//!
//! * [`TestDatabase::migrated`] gives a test its own database, cloned in ~25 ms from a template
//!   that is migrated once per test process; [`TestDatabase::empty`] gives an unmigrated one, and
//!   [`TestDatabase::migrated_with_locale`] one created with a chosen `LC_CTYPE` or ICU locale.
//! * The server is `DATABASE_URL_TEST` when set (only databases named `test_*`/`tmpl_*` by this
//!   kit are created or dropped there), otherwise a private cluster started from the installed
//!   PostgreSQL binaries, shared by the tests of one process. The private cluster is unix-only:
//!   on Windows `DATABASE_URL_TEST` is required (see `platform`).
//! * [`PgCluster::start`] gives a test a cluster of its own to stop, crash, freeze and restart.
//!   [`PgCluster::start_with`] one with TLS ([`tls::ServerTls`]): a CA and certificates made in
//!   the run, optionally TLS-only access and client certificates.
//!
//! Nothing is left running: postmasters die with the test process (parent-death signal), test
//! databases are dropped when their handle is, and leftovers of killed runs are swept at start.
//! See `shared/design/testing.md` for the measurements behind these choices.

mod database;
pub mod dev_env;
mod platform;
mod scrape;
pub mod tls;

pub use database::{DatabaseLocale, TestDatabase};
// `PgCluster` and `ClusterOptions` everywhere, `locate_binaries` on unix (see `platform`).
pub use platform::*;
pub use scrape::{MetricKind, Scrape};

pub use sea_orm::sqlx::postgres::PgConnectOptions;

/// Everything that can go wrong while providing a test database.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "no PostgreSQL server binaries found ({searched}). Either install them \
         (`apt-get install postgresql`, or set PG_BIN_DIR to the directory holding initdb and \
         postgres), or point DATABASE_URL_TEST at a running PostgreSQL server"
    )]
    NoBinaries { searched: String },
    #[error("DATABASE_URL_TEST is not a valid postgres:// URL")]
    InvalidTestUrl,
    /// Only on platforms without the private cluster (Windows; see `platform`).
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
    #[error("{0}")]
    Server(String),
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: sea_orm::sqlx::Error,
    },
    #[error("migrating the template database failed: {0}")]
    Migration(#[from] sea_orm::DbErr),
}

impl TestkitError {
    fn db(what: impl Into<String>) -> impl FnOnce(sea_orm::sqlx::Error) -> Self {
        let what = what.into();
        move |source| TestkitError::Database { what, source }
    }
}

pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| TestkitError::Io { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::TestkitError;

    #[test]
    fn the_windows_error_names_the_remedy_and_what_cannot_run() {
        let message = TestkitError::PrivateClusterUnsupported.to_string();
        assert!(message.contains("set DATABASE_URL_TEST"), "{message}");
        assert!(message.contains("cannot run"), "{message}");
    }
}
