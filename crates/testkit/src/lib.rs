//! Test support: a real, throwaway PostgreSQL for every test, and the fixtures tests share.
//!
//! * [`TestDatabase::migrated`] gives a test its own database, cloned in ~25 ms from a template
//!   that is migrated once per test process; [`TestDatabase::empty`] gives an unmigrated one, and
//!   [`TestDatabase::migrated_with_locale`] one created with a chosen `LC_CTYPE` or ICU locale.
//! * The server is `DATABASE_URL_TEST` when set (only databases named `test_*`/`tmpl_*` by this
//!   kit are created or dropped there), otherwise a private cluster started from the installed
//!   PostgreSQL binaries, shared by the tests of one process. The private cluster is unix-only:
//!   on Windows `DATABASE_URL_TEST` is required.
//! * [`PgCluster::start`] gives a test a cluster of its own to stop, crash, freeze and restart;
//!   [`PgCluster::start_tls`] one with TLS ([`tls::ServerTls`]): a CA and certificates made in
//!   the run, optionally TLS-only access and client certificates.
//! * [`fixtures`]: the bcrypt fixture, a pool's settings, an HTTP GET, waiting with a deadline.
//!
//! Nothing is left running: postmasters die with the test process (parent-death signal), test
//! databases are dropped when their handle is, and leftovers of killed runs are swept at start.
//! PostgreSQL itself is started, and roles made, by `counseling-provision`, as everywhere else.
//! See `shared/design/testing.md` for the measurements behind these choices.

mod cluster;
mod database;
pub mod fixtures;
mod scrape;
pub mod tls;

pub use cluster::{ClusterOptions, OWNER_ROLE, PgCluster, SERVICE_ROLE};
pub use counseling_provision::{ProvisionError as TestkitError, Result};
pub use database::{DatabaseLocale, TestDatabase};
pub use scrape::{MetricKind, Scrape};

pub use sea_orm::sqlx::postgres::PgConnectOptions;
