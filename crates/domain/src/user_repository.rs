use std::fmt;
use std::future::Future;

use crate::{NewUser, PasswordHash, User, UserId, Username};

/// Why the store could not be reached. Each reason is short, fixed text that is safe to show to
/// an operator or a client: it never carries a host, a user, a password or SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unavailability {
    /// Nothing accepted the connection.
    ConnectionRefused,
    /// The database's host name did not resolve to an address: a typo or no DNS, not a server
    /// that went away.
    HostNotResolved,
    /// The database did not answer in time (connect, query, statement or call deadline).
    Timeout,
    /// Every pooled connection was busy for the whole acquire timeout.
    PoolExhausted,
    /// An established connection broke or the server is shutting down.
    ConnectionLost,
    /// The server refused the session (too many clients, starting up, TLS...).
    Rejected,
    /// The server rejected the credentials (SQLSTATE class 28).
    AuthenticationFailed,
    /// The configured database does not exist on the server (SQLSTATE 3D000).
    UnknownDatabase,
    /// The server is a read-only standby, as right after a failover (SQLSTATE 25006).
    ReadOnly,
    /// A row or table lock was not granted within `lock_timeout` (SQLSTATE 55P03).
    LockTimeout,
    /// The database has no users table this role can see (SQLSTATE 42P01): the migrations have
    /// not run there, the URL names another database, or the role lacks `USAGE` on the schema.
    SchemaMissing,
    /// This role lacks a privilege the service needs on the users table (SQLSTATE 42501).
    PermissionDenied,
    /// TLS was required but the server does not offer it: refused, never downgraded.
    TlsNotOffered,
    /// The TLS handshake failed; the detail says why (shown in logs, not to clients).
    TlsHandshakeFailed(TlsFailure),
}

impl Unavailability {
    /// The reason `/health` gives and metrics label: fixed text, never a host or SQL. A timeout
    /// is said as the health contract spells it.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Unavailability::ConnectionRefused => "connection refused",
            Unavailability::HostNotResolved => "host name not resolved",
            Unavailability::Timeout => "Connection timeout",
            Unavailability::PoolExhausted => "pool exhausted",
            Unavailability::ConnectionLost => "connection lost",
            Unavailability::Rejected => "connection rejected",
            Unavailability::AuthenticationFailed => "authentication failed",
            Unavailability::UnknownDatabase => "database does not exist",
            Unavailability::ReadOnly => "database is read-only",
            Unavailability::LockTimeout => "lock timeout",
            Unavailability::SchemaMissing => "schema not migrated",
            Unavailability::PermissionDenied => "permission denied",
            Unavailability::TlsNotOffered => "server does not offer tls",
            Unavailability::TlsHandshakeFailed(_) => "tls handshake failed",
        }
    }
}

impl fmt::Display for Unavailability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailability::TlsHandshakeFailed(why) => write!(f, "{} ({why})", self.as_str()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a TLS handshake with the database failed, as fixed text: never a certificate, a host
/// name or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The server's certificate does not chain to a trusted CA (wrong `sslrootcert`, or none).
    UntrustedCertificate,
    /// The certificate is trusted but names another host (`verify-full`).
    HostNameMismatch,
    /// The certificate has expired or is not valid yet.
    CertificateExpired,
    /// The server refused this client's certificate, or wanted one and got none.
    ClientCertificateRejected,
    /// Anything else in the handshake (protocol versions, ciphers, a malformed certificate).
    Other,
}

impl TlsFailure {
    pub const fn as_str(&self) -> &'static str {
        match self {
            TlsFailure::UntrustedCertificate => "server certificate not issued by a trusted CA",
            TlsFailure::HostNameMismatch => "server certificate does not match the host name",
            TlsFailure::CertificateExpired => "server certificate expired or not yet valid",
            TlsFailure::ClientCertificateRejected => "server rejected the client certificate",
            TlsFailure::Other => "handshake error",
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Two transactions got in each other's way; running the whole unit of work again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conflict {
    /// SQLSTATE 40001: a serializable or repeatable-read transaction lost a race.
    SerializationFailure,
    /// SQLSTATE 40P01: the server broke a deadlock by aborting this transaction.
    Deadlock,
}

impl Conflict {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Conflict::SerializationFailure => "serialization failure",
            Conflict::Deadlock => "deadlock",
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What any store operation can fail with, whatever it does: the store was unreachable, a
/// transaction conflicted, or something unexpected happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer in time; retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(Unavailability),
    /// The unit of work conflicted with another; run it again (see [`StoreError::is_retryable`]).
    #[error("the transaction conflicted with another one ({0}); run it again")]
    Conflict(Conflict),
    /// The connection broke or timed out while a write was on its way (a call's own, or a unit
    /// of work's `COMMIT` after its writes) and before the database answered: the write may or
    /// may not be stored. Read it back before writing it again: done blindly, it may be done
    /// twice.
    #[error("the database did not confirm the write, which may or may not be stored")]
    OutcomeUnknown,
    /// Anything else. The text is sanitized (an error class or SQLSTATE, no SQL, no credentials).
    #[error("unexpected database error: {0}")]
    Unexpected(String),
}

impl StoreError {
    /// Whether running the same unit of work again, at once, may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

/// Why [`UserRepository::create`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateUserError {
    /// Another user's username is the same account as this one, by the store's identity rule
    /// (case, width and compatibility forms folded).
    #[error("that username is already taken")]
    UsernameTaken,
    /// The database refused the data; `rule` names the constraint that failed.
    #[error("the database rejected the data: {rule}")]
    Rejected { rule: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why changing an existing user ([`UserRepository::set_blocked`],
/// [`UserRepository::update_password_hash`]) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateUserError {
    /// No user has the given id.
    #[error("no such user")]
    NotFound,
    /// The database refused the data; `rule` names the constraint that failed.
    #[error("the database rejected the data: {rule}")]
    Rejected { rule: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`UserRepository::delete`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteUserError {
    /// No user has the given id.
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The port through which the application stores users. Implemented by the persistence adapter,
/// both directly on the pool and inside a unit of work (a transaction): the same calls, the same
/// errors.
///
/// Username lookups and uniqueness go by account identity, which the store decides (the database
/// folds case, width and compatibility forms by one rule, whatever its locale), not by
/// [`Username`]'s equality, which is the exact spelling.
pub trait UserRepository: Send + Sync {
    /// Stores a new user and returns the row as stored (database-generated id and timestamps).
    fn create(
        &self,
        new_user: NewUser,
    ) -> impl Future<Output = Result<User, CreateUserError>> + Send;

    fn find_by_id(
        &self,
        id: UserId,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Finds the user whose username is the same account as `username` (in any case, width or
    /// normalization form).
    fn find_by_username(
        &self,
        username: &Username,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Blocks or unblocks a user.
    fn set_blocked(
        &self,
        id: UserId,
        blocked: bool,
    ) -> impl Future<Output = Result<User, UpdateUserError>> + Send;

    /// Replaces a user's password hash.
    fn update_password_hash(
        &self,
        id: UserId,
        password_hash: PasswordHash,
    ) -> impl Future<Output = Result<User, UpdateUserError>> + Send;

    /// Up to `limit` users ordered by id, starting after `after` (keyset pagination): pass the
    /// last id of one page to get the next. The order is stable across calls and inserts.
    fn list(
        &self,
        after: Option<UserId>,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<User>, StoreError>> + Send;

    /// Deletes a user.
    fn delete(&self, id: UserId) -> impl Future<Output = Result<(), DeleteUserError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_conflicts_are_retryable() {
        assert!(StoreError::Conflict(Conflict::Deadlock).is_retryable());
        assert!(StoreError::Conflict(Conflict::SerializationFailure).is_retryable());
        assert!(!StoreError::Unavailable(Unavailability::Timeout).is_retryable());
        assert!(!StoreError::Unexpected("x".into()).is_retryable());
        // Run again blindly, an unconfirmed write may be done twice.
        assert!(!StoreError::OutcomeUnknown.is_retryable());
    }

    #[test]
    fn operation_errors_wrap_store_errors_transparently() {
        let store = StoreError::Unavailable(Unavailability::ReadOnly);
        assert_eq!(
            CreateUserError::from(store.clone()).to_string(),
            store.to_string()
        );
        assert_eq!(
            store.to_string(),
            "the database is unavailable: database is read-only"
        );
    }

    #[test]
    fn tls_failures_show_one_fixed_reason_and_log_the_detail() {
        let why = Unavailability::TlsHandshakeFailed(TlsFailure::HostNameMismatch);
        assert_eq!(why.as_str(), "tls handshake failed");
        assert_eq!(
            why.to_string(),
            "tls handshake failed (server certificate does not match the host name)"
        );
    }
}
