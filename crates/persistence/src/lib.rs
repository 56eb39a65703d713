//! The PostgreSQL adapter of the user store.
//!
//! * [`DatabaseSettings`]: every pool option, explicit, with the URL as a secret.
//! * [`Database`]: a lazily connecting pool (the service starts while the database is down) on a
//!   runtime the binary owns; every call through it is bounded, and [`Database::ping`] returns
//!   within its timeout whatever the server does.
//! * [`Database::transaction`]: a unit of work; [`UnitOfWork`] hands out repositories inside it.
//! * [`PgUserRepository`]: the domain's `UserRepository` over SeaORM, mapping database errors to
//!   each operation's domain error at this boundary.
//!
//! Nothing public here runs a query around these guarantees: there is no raw connection or pool.

mod database;
mod database_metrics;
pub mod entity;
mod error_mapping;
mod pool;
mod session;
mod settings;
mod unit_of_work;
mod user_repository;

pub use counseling_config::tls::{SslMode, SslRootCert};
pub use database::{DEADLINE_MARGIN, Database, PoolStatus};
pub use settings::{DatabaseSettings, PoolSettings};
pub use unit_of_work::UnitOfWork;
pub use user_repository::PgUserRepository;

pub use counseling_domain::{StoreError, TlsFailure, Unavailability};
