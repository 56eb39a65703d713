use std::fmt;
use std::future::Future;

use crate::{NewUser, PasswordHash, User, UserId, Username};

/// Why the store could not be reached. Each reason is short, fixed text that is safe to show to
/// an operator or a client: it never carries a host, a user, a password or SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// Nothing accepted the connection.
    ConnectionRefused,
    /// The database did not answer in time (connect, query or statement timeout).
    Timeout,
    /// Every pooled connection was busy for the whole acquire timeout.
    PoolExhausted,
    /// An established connection broke or the server is shutting down.
    ConnectionLost,
    /// The server refused the session (authentication, too many clients, starting up...).
    Rejected,
}

impl Unavailability {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Unavailability::ConnectionRefused => "connection refused",
            Unavailability::Timeout => "timeout",
            Unavailability::PoolExhausted => "pool exhausted",
            Unavailability::ConnectionLost => "connection lost",
            Unavailability::Rejected => "connection rejected",
        }
    }
}

impl fmt::Display for Unavailability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can go wrong in the user store, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryError {
    /// Another user already has this username's identity (see [`Username::identity_key`]).
    #[error("that username is already taken")]
    UsernameTaken,
    /// No user has the given id.
    #[error("no such user")]
    NotFound,
    /// The database refused the data; `rule` names the constraint that failed.
    #[error("the database rejected the data: {rule}")]
    Rejected { rule: String },
    /// The database could not be reached or did not answer in time; retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(Unavailability),
    /// Anything else. The text is sanitized (an error class or SQLSTATE, no SQL, no credentials).
    #[error("unexpected database error: {0}")]
    Unexpected(String),
}

/// The port through which the application stores users. Implemented by the persistence adapter.
///
/// Username lookups and uniqueness go by [`Username::identity_key`] (case and width folded), which
/// the adapter stores under a unique index, so they do not depend on the database's locale.
pub trait UserRepository: Send + Sync {
    /// Stores a new user and returns the row as stored (database-generated id and timestamps).
    fn create(
        &self,
        new_user: NewUser,
    ) -> impl Future<Output = Result<User, RepositoryError>> + Send;

    fn find_by_id(
        &self,
        id: UserId,
    ) -> impl Future<Output = Result<Option<User>, RepositoryError>> + Send;

    /// Finds the user whose username has the identity of `username` (equal as [`Username`]s).
    fn find_by_username(
        &self,
        username: &Username,
    ) -> impl Future<Output = Result<Option<User>, RepositoryError>> + Send;

    /// Blocks or unblocks a user; `NotFound` when no such user exists.
    fn set_blocked(
        &self,
        id: UserId,
        blocked: bool,
    ) -> impl Future<Output = Result<User, RepositoryError>> + Send;

    /// Replaces a user's password hash; `NotFound` when no such user exists.
    fn update_password_hash(
        &self,
        id: UserId,
        password_hash: PasswordHash,
    ) -> impl Future<Output = Result<User, RepositoryError>> + Send;

    /// Up to `limit` users ordered by id, starting after `after` (keyset pagination): pass the
    /// last id of one page to get the next. The order is stable across calls and inserts.
    fn list(
        &self,
        after: Option<UserId>,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<User>, RepositoryError>> + Send;

    /// Deletes a user; `NotFound` when no such user exists.
    fn delete(&self, id: UserId) -> impl Future<Output = Result<(), RepositoryError>> + Send;
}
