//! The PostgreSQL adapter of the user store.
//!
//! * [`DatabaseSettings`]: every pool option, explicit, with the URL as a secret.
//! * [`Database`]: a lazily connecting pool (the service starts while the database is down), with
//!   a [`Database::ping`] that returns within its timeout whatever the server does.
//! * [`PgUserRepository`]: the domain's `UserRepository` over SeaORM, mapping database errors to
//!   the domain's `RepositoryError` at this boundary.

mod coalesced_ping;
mod database;
pub mod entity;
mod error_mapping;
mod settings;
mod user_repository;

pub use coalesced_ping::CoalescedPing;
pub use database::Database;
pub use error_mapping::from_db_err as repository_error;
pub use settings::{DatabaseSettings, SettingsError};
pub use user_repository::PgUserRepository;

pub use counseling_domain::{RepositoryError, Unavailability};
