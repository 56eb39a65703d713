//! Test support: a real, throwaway PostgreSQL for every test.
//!
//! * [`TestDatabase::migrated`] gives a test its own database, cloned in ~25 ms from a template
//!   that is migrated once per test process; [`TestDatabase::empty`] gives an unmigrated one.
//! * The server is `DATABASE_URL_TEST` when set (only databases named `test_*`/`tmpl_*` by this
//!   kit are created or dropped there), otherwise a private cluster started from the installed
//!   PostgreSQL binaries, shared by the tests of one process.
//! * [`PgCluster::start`] gives a test a cluster of its own to stop, crash, freeze and restart.
//!
//! Nothing is left running: postmasters die with the test process (parent-death signal), test
//! databases are dropped when their handle is, and leftovers of killed runs are swept at start.
//! See `shared/design/testing.md` for the measurements behind these choices.

mod binaries;
mod cluster;
mod database;
mod scrape;
mod spawner;

pub use binaries::locate_binaries;
pub use cluster::PgCluster;
pub use database::TestDatabase;
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
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| TestkitError::Io { what, source }
    }

    fn db(what: impl Into<String>) -> impl FnOnce(sea_orm::sqlx::Error) -> Self {
        let what = what.into();
        move |source| TestkitError::Database { what, source }
    }
}

pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
