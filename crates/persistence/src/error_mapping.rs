//! Database errors become domain errors here, and nowhere else.
//!
//! Only fixed text and SQLSTATE codes cross this boundary: driver messages can quote SQL, values
//! or host names, so none of them is passed on. An error no operation expects is logged once,
//! here, with its SQLSTATE and the server's message (never the URL, never bound values: the
//! server's primary message does not carry parameters; its detail, which may, is not logged).

use std::io::ErrorKind;

use counseling_config::ConnectError;
use counseling_domain::{
    Conflict, CreateUserError, DeleteUserError, StoreError, TlsFailure, Unavailability,
    UpdateUserError,
};
use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};

use crate::database_metrics::Discard;

/// The unique indexes of username identity: the database's own rule, and (until a contract
/// migration drops it) the previous release's key, which a plain INSERT's key also enters.
const USERNAME_UNIQUE_INDEXES: [&str; 2] = ["idx_users_username_identity", "idx_users_username"];

/// A database failure, classified once; each operation then keeps what it can return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    UsernameTaken,
    Rejected {
        rule: String,
    },
    NotFound,
    /// The server cancelled the statement (`statement_timeout`, or `pg_cancel_backend`): the
    /// caller sees a timeout, but the connection is fine and is kept, unlike one cut off by our
    /// own deadline or by the network.
    Cancelled,
    Store(StoreError),
}

impl Failure {
    /// Why the connection that saw this failure must be closed rather than reused, if it must: it
    /// broke, or it reaches a server that can no longer take writes (a demoted primary).
    pub(crate) fn discard_reason(&self) -> Option<Discard> {
        match self {
            Failure::Store(StoreError::Unavailable(why)) => match why {
                Unavailability::ReadOnly => Some(Discard::ReadOnly),
                Unavailability::Timeout => Some(Discard::Timeout),
                Unavailability::ConnectionLost
                | Unavailability::ConnectionRefused
                | Unavailability::HostNotResolved
                | Unavailability::Rejected
                | Unavailability::AuthenticationFailed
                | Unavailability::UnknownDatabase
                | Unavailability::TlsNotOffered
                | Unavailability::TlsHandshakeFailed(_) => Some(Discard::Broken),
                Unavailability::PoolExhausted
                | Unavailability::LockTimeout
                | Unavailability::SchemaMissing
                | Unavailability::PermissionDenied => None,
            },
            _ => None,
        }
    }

    /// For operations that cannot see `what` happen: it is logged once and reported as unexpected.
    fn unexpected(self, operation: &'static str) -> StoreError {
        match self {
            Failure::Store(error) => error,
            Failure::Cancelled => StoreError::Unavailable(Unavailability::Timeout),
            other => {
                tracing::error!(operation, failure = ?other, "database failure this operation cannot produce");
                StoreError::Unexpected(format!("{operation} failed unexpectedly"))
            }
        }
    }

    pub(crate) fn into_store_error(self) -> StoreError {
        self.unexpected("a read")
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        failure.into_store_error()
    }
}

impl From<Failure> for CreateUserError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::UsernameTaken => CreateUserError::UsernameTaken,
            Failure::Rejected { rule } => CreateUserError::Rejected { rule },
            other => CreateUserError::Store(other.unexpected("create")),
        }
    }
}

impl From<Failure> for UpdateUserError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::NotFound => UpdateUserError::NotFound,
            Failure::Rejected { rule } => UpdateUserError::Rejected { rule },
            other => UpdateUserError::Store(other.unexpected("update")),
        }
    }
}

impl From<Failure> for DeleteUserError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::NotFound => DeleteUserError::NotFound,
            other => DeleteUserError::Store(other.unexpected("delete")),
        }
    }
}

/// What a write on its way (a statement that commits on its own, or a unit's COMMIT) learns from
/// `error`: a connection that broke (its TLS layer included), timed out or was ended before the
/// answer came leaves its outcome unknown (the server may have applied it, or committed it). Any other error is the
/// server's answer, which refused it ([`ended_while_idle`] is one); a row it returned but that
/// could not be decoded is `Unexpected`, stored or not.
pub(crate) fn of_sent_write(error: StoreError) -> StoreError {
    match error {
        // A TLS failure here is not a handshake's (the connection was open when the write was
        // sent): a record that could not be read, an alert from a proxy, the connection gone.
        StoreError::Unavailable(
            Unavailability::ConnectionLost
            | Unavailability::Timeout
            | Unavailability::TlsHandshakeFailed(_),
        ) => {
            // The one error someone may have to reconcile: said at the default level.
            tracing::warn!("a write was sent but not confirmed: it may or may not be stored");
            StoreError::OutcomeUnknown
        }
        other => other,
    }
}

/// Whether the server ended the session while it sat idle (`idle_session_timeout`,
/// `idle_in_transaction_session_timeout`): it never read the statement that met the error, so
/// that statement did not run, and a transaction open on it was rolled back.
pub(crate) fn ended_while_idle(error: &DbErr) -> bool {
    let (DbErr::Conn(RuntimeErr::SqlxError(error))
    | DbErr::Exec(RuntimeErr::SqlxError(error))
    | DbErr::Query(RuntimeErr::SqlxError(error))) = error
    else {
        return false;
    };
    let code = error
        .as_database_error()
        .and_then(|error| error.code().map(|code| code.into_owned()));
    matches!(code.as_deref(), Some("25P03" | "57P05"))
}

impl Failure {
    /// [`of_sent_write`] for a failure of a write on its way.
    pub(crate) fn of_sent_write(self) -> Failure {
        match self {
            Failure::Store(error) => Failure::Store(of_sent_write(error)),
            other => other,
        }
    }
}

/// Classifies any SeaORM error.
pub(crate) fn from_db_err(error: &DbErr) -> Failure {
    match error {
        DbErr::Conn(RuntimeErr::SqlxError(error))
        | DbErr::Exec(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error)) => from_sqlx(error),
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => {
            Failure::Store(StoreError::Unavailable(Unavailability::ConnectionLost))
        }
        DbErr::RecordNotFound(_) | DbErr::RecordNotUpdated => Failure::NotFound,
        DbErr::Type(_) | DbErr::TryIntoErr { .. } => {
            unexpected("a stored value could not be decoded")
        }
        _ => unexpected("the database layer reported an internal error"),
    }
}

/// Whether `error` may have aborted the transaction it happened in: every error but those the
/// client makes up without the server (no such row, a value it could not decode). When unsure,
/// yes: a commit refused wrongly is an error the caller sees; one that kept nothing is not.
pub(crate) fn aborts_transaction(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match error {
        DbErr::RecordNotFound(_)
        | DbErr::RecordNotUpdated
        | DbErr::Type(_)
        | DbErr::TryIntoErr { .. } => false,
        DbErr::Conn(RuntimeErr::SqlxError(error))
        | DbErr::Exec(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error)) => !matches!(
            error.as_ref(),
            Sqlx::RowNotFound
                | Sqlx::ColumnNotFound(_)
                | Sqlx::ColumnIndexOutOfBounds { .. }
                | Sqlx::ColumnDecode { .. }
                | Sqlx::Decode(_)
        ),
        _ => true,
    }
}

/// Classifies a failure to open a connection (see `counseling_config::Connector::connect`).
pub(crate) fn from_connect(error: &ConnectError) -> Failure {
    let unavailable = |why| Failure::Store(StoreError::Unavailable(why));
    match error {
        ConnectError::Driver(error) => from_sqlx(error),
        ConnectError::TimedOut => unavailable(Unavailability::Timeout),
        ConnectError::HostNotResolved => unavailable(Unavailability::HostNotResolved),
        // No host of the list takes writes: as for a write on a standby.
        ConnectError::NoSuitableHost(attrs) if attrs.wants_writes() => {
            unavailable(Unavailability::ReadOnly)
        }
        ConnectError::NoSuitableHost(_) => unavailable(Unavailability::Rejected),
        // Said by the pool, once per change (`ConnectionManager::create`), not once per caller.
        ConnectError::PasswordFile(_) => unavailable(Unavailability::AuthenticationFailed),
        ConnectError::TlsFile(_) => {
            unavailable(Unavailability::TlsHandshakeFailed(TlsFailure::Other))
        }
    }
}

/// Classifies a driver error.
pub(crate) fn from_sqlx(error: &sqlx::Error) -> Failure {
    let unavailable = |why| Failure::Store(StoreError::Unavailable(why));
    match error {
        sqlx::Error::Database(db_error) => {
            let code = db_error.code().unwrap_or_default();
            let failure = from_sqlstate(&code, db_error.constraint());
            if matches!(failure, Failure::Store(StoreError::Unexpected(_))) {
                tracing::error!(sqlstate = %code, message = db_error.message(), "unexpected database error");
            }
            failure
        }
        sqlx::Error::Io(io) if tls_failure(io).is_some() => unavailable(
            Unavailability::TlsHandshakeFailed(tls_failure(io).unwrap_or(TlsFailure::Other)),
        ),
        sqlx::Error::Io(io) => unavailable(match io.kind() {
            ErrorKind::ConnectionRefused => Unavailability::ConnectionRefused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Unavailability::Timeout,
            _ => Unavailability::ConnectionLost,
        }),
        sqlx::Error::PoolTimedOut => unavailable(Unavailability::Timeout),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            unavailable(Unavailability::ConnectionLost)
        }
        // The server closed the stream in the middle of a message: a lost connection.
        sqlx::Error::Protocol(_) => unavailable(Unavailability::ConnectionLost),
        // sqlx 0.9's words for `require` (or stricter) against a server without TLS.
        sqlx::Error::Tls(error) if error.to_string() == "server does not support TLS" => {
            unavailable(Unavailability::TlsNotOffered)
        }
        sqlx::Error::Tls(_) => unavailable(Unavailability::TlsHandshakeFailed(TlsFailure::Other)),
        sqlx::Error::Configuration(_) => unavailable(Unavailability::Rejected),
        sqlx::Error::RowNotFound => Failure::NotFound,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            unexpected("a stored value could not be decoded")
        }
        _ => unexpected("the database driver reported an error"),
    }
}

/// The handshake failure inside an I/O error, if it is one: rustls reports a failed handshake as
/// `InvalidData` wrapping its own error.
fn tls_failure(io: &std::io::Error) -> Option<TlsFailure> {
    use rustls::{AlertDescription, CertificateError};
    let error = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsFailure::UntrustedCertificate
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::HostNameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::CertificateExpired,
            _ => TlsFailure::Other,
        },
        // The server's verdict on our certificate (or on its absence).
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied,
        ) => TlsFailure::ClientCertificateRejected,
        _ => TlsFailure::Other,
    })
}

fn unexpected(what: &str) -> Failure {
    tracing::error!(what, "unexpected database error");
    Failure::Store(StoreError::Unexpected(what.to_owned()))
}

/// The name of the index `name` stands in for while `REINDEX … CONCURRENTLY` rebuilds it: the
/// copy it builds (`<name>_ccnew`, numbered if taken) and, after the swap, the old index
/// (`<name>_ccold`) are both checked on insert, and the old one first, so a duplicate can name
/// either until the rebuild ends.
fn rebuilt_index(name: &str) -> &str {
    let Some(at) = name.rfind("_cc") else {
        return name;
    };
    let (base, suffix) = name.split_at(at);
    let number = suffix
        .strip_prefix("_ccold")
        .or_else(|| suffix.strip_prefix("_ccnew"));
    match number {
        Some(digits) if digits.bytes().all(|byte| byte.is_ascii_digit()) => base,
        _ => name,
    }
}

fn from_sqlstate(code: &str, constraint: Option<&str>) -> Failure {
    let unavailable = |why| Failure::Store(StoreError::Unavailable(why));
    let constraint = constraint.map(rebuilt_index);
    match code {
        "23505" if constraint.is_some_and(|name| USERNAME_UNIQUE_INDEXES.contains(&name)) => {
            Failure::UsernameTaken
        }
        // Check, not-null, unique (other than username) and too-long values all name the rule.
        "23505" | "23514" | "23502" => Failure::Rejected {
            rule: constraint.unwrap_or("a table constraint").to_owned(),
        },
        "22001" => Failure::Rejected {
            rule: "value too long for its column".into(),
        },
        // serialization_failure, deadlock_detected: run the unit of work again.
        "40001" => Failure::Store(StoreError::Conflict(Conflict::SerializationFailure)),
        "40P01" => Failure::Store(StoreError::Conflict(Conflict::Deadlock)),
        // lock_not_available: lock_timeout fired.
        "55P03" => unavailable(Unavailability::LockTimeout),
        // undefined_table, insufficient_privilege: the database is not ready for this service
        // (the health check says the same).
        "42P01" => unavailable(Unavailability::SchemaMissing),
        "42501" => unavailable(Unavailability::PermissionDenied),
        // query_canceled: statement_timeout fired (or someone cancelled the statement).
        "57014" => Failure::Cancelled,
        // read_only_sql_transaction: a standby, typically a primary demoted by a failover.
        "25006" => unavailable(Unavailability::ReadOnly),
        // admin_shutdown, crash_shutdown, idle_session_timeout,
        // idle_in_transaction_session_timeout, transaction_timeout (PostgreSQL 17): the server
        // ended the session.
        "57P01" | "57P02" | "57P05" | "25P03" | "25P04" => {
            unavailable(Unavailability::ConnectionLost)
        }
        // cannot_connect_now (starting up or shutting down), too_many_connections.
        "57P03" | "53300" => unavailable(Unavailability::Rejected),
        "3D000" => unavailable(Unavailability::UnknownDatabase),
        // invalid_authorization_specification, invalid_password.
        code if code.starts_with("28") => unavailable(Unavailability::AuthenticationFailed),
        // Class 08: connection exceptions.
        code if code.starts_with("08") => unavailable(Unavailability::ConnectionLost),
        code => Failure::Store(StoreError::Unexpected(format!(
            "database error SQLSTATE {code}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(why: Unavailability) -> Failure {
        Failure::Store(StoreError::Unavailable(why))
    }

    #[test]
    fn sqlstates_map_to_actionable_errors() {
        use Unavailability::*;
        let cases = [
            (
                ("23505", Some("idx_users_username")),
                Failure::UsernameTaken,
            ),
            (
                ("23505", Some("idx_users_username_identity")),
                Failure::UsernameTaken,
            ),
            // Mid-rebuild (REINDEX CONCURRENTLY), the old index, renamed, is checked first.
            (
                ("23505", Some("idx_users_username_identity_ccold")),
                Failure::UsernameTaken,
            ),
            (
                ("23505", Some("idx_users_username_ccnew1")),
                Failure::UsernameTaken,
            ),
            (
                ("23505", Some("users_pkey_ccold")),
                Failure::Rejected {
                    rule: "users_pkey".into(),
                },
            ),
            (
                ("23505", Some("idx_users_username_ccx")),
                Failure::Rejected {
                    rule: "idx_users_username_ccx".into(),
                },
            ),
            (
                ("23505", Some("users_pkey")),
                Failure::Rejected {
                    rule: "users_pkey".into(),
                },
            ),
            (
                ("23514", Some("ck_users_username_identity_length")),
                Failure::Rejected {
                    rule: "ck_users_username_identity_length".into(),
                },
            ),
            (
                ("23514", Some("ck_users_username_format")),
                Failure::Rejected {
                    rule: "ck_users_username_format".into(),
                },
            ),
            (
                ("40001", None),
                Failure::Store(StoreError::Conflict(Conflict::SerializationFailure)),
            ),
            (
                ("40P01", None),
                Failure::Store(StoreError::Conflict(Conflict::Deadlock)),
            ),
            (
                ("23502", Some("users_password_hash_not_null")),
                Failure::Rejected {
                    rule: "users_password_hash_not_null".into(),
                },
            ),
            (
                ("23502", None),
                Failure::Rejected {
                    rule: "a table constraint".into(),
                },
            ),
            (
                ("22001", None),
                Failure::Rejected {
                    rule: "value too long for its column".into(),
                },
            ),
            (("55P03", None), store(LockTimeout)),
            (("57P01", None), store(ConnectionLost)),
            (("57P02", None), store(ConnectionLost)),
            (("57P03", None), store(Rejected)),
            (("53300", None), store(Rejected)),
            (("57P05", None), store(ConnectionLost)),
            (("25P03", None), store(ConnectionLost)),
            (("25P04", None), store(ConnectionLost)),
            (("25006", None), store(ReadOnly)),
            (("08006", None), store(ConnectionLost)),
            (("57014", None), Failure::Cancelled),
            (("3D000", None), store(UnknownDatabase)),
            (("28P01", None), store(AuthenticationFailed)),
            (("28000", None), store(AuthenticationFailed)),
            (("42P01", None), store(SchemaMissing)),
            (("42501", None), store(PermissionDenied)),
            (
                ("42703", None),
                Failure::Store(StoreError::Unexpected(
                    "database error SQLSTATE 42703".into(),
                )),
            ),
        ];
        for ((code, constraint), expected) in cases {
            assert_eq!(from_sqlstate(code, constraint), expected, "{code}");
        }
    }

    #[test]
    fn a_read_only_standby_and_broken_connections_are_not_reused() {
        assert_eq!(
            store(Unavailability::ReadOnly).discard_reason(),
            Some(Discard::ReadOnly)
        );
        assert_eq!(
            store(Unavailability::ConnectionLost).discard_reason(),
            Some(Discard::Broken)
        );
        assert_eq!(
            store(Unavailability::Timeout).discard_reason(),
            Some(Discard::Timeout)
        );
        assert_eq!(store(Unavailability::LockTimeout).discard_reason(), None);
        assert_eq!(Failure::Cancelled.discard_reason(), None);
        assert_eq!(
            Failure::Cancelled.into_store_error(),
            StoreError::Unavailable(Unavailability::Timeout)
        );
        assert_eq!(Failure::UsernameTaken.discard_reason(), None);
    }

    #[test]
    fn each_operation_keeps_only_what_it_can_return() {
        assert_eq!(
            CreateUserError::from(Failure::UsernameTaken),
            CreateUserError::UsernameTaken
        );
        // A lookup never reports a taken username: such a failure is unexpected there.
        assert!(matches!(
            StoreError::from(Failure::UsernameTaken),
            StoreError::Unexpected(_)
        ));
        assert_eq!(
            DeleteUserError::from(Failure::NotFound),
            DeleteUserError::NotFound
        );
        assert!(matches!(
            CreateUserError::from(Failure::NotFound),
            CreateUserError::Store(StoreError::Unexpected(_))
        ));
    }

    #[test]
    fn a_sent_write_is_unconfirmed_only_when_its_connection_failed_before_the_answer() {
        use Unavailability::*;
        let tls = TlsHandshakeFailed(counseling_domain::TlsFailure::Other);
        for why in [ConnectionLost, Timeout, tls] {
            let error = StoreError::Unavailable(why);
            assert_eq!(of_sent_write(error), StoreError::OutcomeUnknown, "{why}");
        }
        // Answers: the server refused or rolled back the write, so it is not stored.
        let answers = [
            StoreError::Unavailable(ReadOnly),
            StoreError::Unavailable(LockTimeout),
            StoreError::Unavailable(AuthenticationFailed),
            StoreError::Conflict(Conflict::SerializationFailure),
            StoreError::Unexpected("database error SQLSTATE 23503".into()),
        ];
        for answer in answers {
            assert_eq!(of_sent_write(answer.clone()), answer);
        }
        // A dead connection on COMMIT: the server may have committed before it broke.
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let Failure::Store(error) = from_sqlx(&sqlx::Error::Io(broken)) else {
            panic!("a broken pipe is a store failure");
        };
        assert_eq!(of_sent_write(error), StoreError::OutcomeUnknown);
    }

    #[test]
    fn io_errors_map_by_kind() {
        let refused = sqlx::Error::Io(std::io::Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(
            from_sqlx(&refused),
            store(Unavailability::ConnectionRefused)
        );
        let reset = sqlx::Error::Io(std::io::Error::from(ErrorKind::ConnectionReset));
        assert_eq!(from_sqlx(&reset), store(Unavailability::ConnectionLost));
        for kind in [ErrorKind::TimedOut, ErrorKind::WouldBlock] {
            let timed_out = sqlx::Error::Io(std::io::Error::from(kind));
            assert_eq!(
                from_sqlx(&timed_out),
                store(Unavailability::Timeout),
                "{kind}"
            );
        }
    }

    #[test]
    fn driver_errors_map_to_their_reason() {
        let cases = [
            (sqlx::Error::PoolTimedOut, store(Unavailability::Timeout)),
            (
                sqlx::Error::PoolClosed,
                store(Unavailability::ConnectionLost),
            ),
            (
                sqlx::Error::WorkerCrashed,
                store(Unavailability::ConnectionLost),
            ),
            (
                sqlx::Error::Protocol("unexpected message".into()),
                store(Unavailability::ConnectionLost),
            ),
            (
                sqlx::Error::Tls("server does not support TLS".into()),
                store(Unavailability::TlsNotOffered),
            ),
            (
                sqlx::Error::Tls("something else".into()),
                store(Unavailability::TlsHandshakeFailed(TlsFailure::Other)),
            ),
            (
                sqlx::Error::Configuration("bad option".into()),
                store(Unavailability::Rejected),
            ),
            (sqlx::Error::RowNotFound, Failure::NotFound),
            (
                sqlx::Error::Decode("bad bytes".into()),
                Failure::Store(StoreError::Unexpected(
                    "a stored value could not be decoded".into(),
                )),
            ),
        ];
        for (error, expected) in cases {
            let shown = error.to_string();
            assert_eq!(from_sqlx(&error), expected, "{shown}");
        }
    }

    #[test]
    fn rustls_handshake_errors_map_to_their_reason() {
        use rustls::CertificateError;
        let io = |error: rustls::Error| {
            sqlx::Error::Io(std::io::Error::new(ErrorKind::InvalidData, error))
        };
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsFailure::UntrustedCertificate,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                TlsFailure::HostNameMismatch,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                TlsFailure::CertificateExpired,
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
                TlsFailure::ClientCertificateRejected,
            ),
            (rustls::Error::DecryptError, TlsFailure::Other),
        ];
        for (error, expected) in cases {
            assert_eq!(
                from_sqlx(&io(error)),
                store(Unavailability::TlsHandshakeFailed(expected))
            );
        }
        // Other invalid data is not mistaken for TLS.
        let plain = sqlx::Error::Io(std::io::Error::from(ErrorKind::InvalidData));
        assert_eq!(from_sqlx(&plain), store(Unavailability::ConnectionLost));
    }
}
