//! Database errors become domain errors here, and nowhere else.
//!
//! Only fixed text and SQLSTATE codes cross this boundary: driver messages can quote SQL, values
//! or host names, so none of them is passed on.

use std::io::ErrorKind;

use counseling_domain::{RepositoryError, Unavailability};
use sea_orm::sqlx;
use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

/// The unique index that makes usernames case-insensitively unique.
const USERNAME_UNIQUE_INDEX: &str = "idx_users_username";

/// Maps any SeaORM error to the domain's error; for adapters of other tables too.
pub fn from_db_err(error: &DbErr) -> RepositoryError {
    match error {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => {
            RepositoryError::Unavailable(Unavailability::Timeout)
        }
        DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed) => {
            RepositoryError::Unavailable(Unavailability::ConnectionLost)
        }
        DbErr::Conn(RuntimeErr::SqlxError(error))
        | DbErr::Exec(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error)) => from_sqlx(error),
        DbErr::Conn(_) => RepositoryError::Unavailable(Unavailability::ConnectionLost),
        DbErr::RecordNotFound(_) | DbErr::RecordNotUpdated => RepositoryError::NotFound,
        DbErr::Type(_) | DbErr::TryIntoErr { .. } => {
            RepositoryError::Unexpected("a stored value could not be decoded".into())
        }
        _ => RepositoryError::Unexpected("the database layer reported an internal error".into()),
    }
}

pub(crate) fn from_sqlx(error: &sqlx::Error) -> RepositoryError {
    use RepositoryError::Unavailable;
    match error {
        sqlx::Error::Database(db_error) => {
            let code = db_error.code().unwrap_or_default();
            from_sqlstate(&code, db_error.constraint())
        }
        sqlx::Error::Io(io) => Unavailable(match io.kind() {
            ErrorKind::ConnectionRefused => Unavailability::ConnectionRefused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Unavailability::Timeout,
            _ => Unavailability::ConnectionLost,
        }),
        sqlx::Error::PoolTimedOut => Unavailable(Unavailability::Timeout),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Unavailable(Unavailability::ConnectionLost)
        }
        // The server closed the stream in the middle of a message: a lost connection.
        sqlx::Error::Protocol(_) => Unavailable(Unavailability::ConnectionLost),
        sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => {
            Unavailable(Unavailability::Rejected)
        }
        sqlx::Error::RowNotFound => RepositoryError::NotFound,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            RepositoryError::Unexpected("a stored value could not be decoded".into())
        }
        _ => RepositoryError::Unexpected("the database driver reported an error".into()),
    }
}

fn from_sqlstate(code: &str, constraint: Option<&str>) -> RepositoryError {
    use RepositoryError::Unavailable;
    match code {
        "23505" if constraint == Some(USERNAME_UNIQUE_INDEX) => RepositoryError::UsernameTaken,
        // Check, not-null, unique (other than username) and too-long values all name the rule.
        "23505" | "23514" | "23502" => RepositoryError::Rejected {
            rule: constraint.unwrap_or("a table constraint").to_owned(),
        },
        "22001" => RepositoryError::Rejected {
            rule: "value too long for its column".into(),
        },
        // query_canceled: statement_timeout fired.
        "57014" => Unavailable(Unavailability::Timeout),
        // admin_shutdown, crash_shutdown: "terminating connection".
        "57P01" | "57P02" => Unavailable(Unavailability::ConnectionLost),
        // cannot_connect_now (starting up or shutting down), too_many_connections,
        // invalid authorization.
        "57P03" | "53300" => Unavailable(Unavailability::Rejected),
        code if code.starts_with("28") => Unavailable(Unavailability::Rejected),
        // Class 08: connection exceptions.
        code if code.starts_with("08") => Unavailable(Unavailability::ConnectionLost),
        code => RepositoryError::Unexpected(format!("database error SQLSTATE {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_actionable_errors() {
        assert_eq!(
            from_sqlstate("23505", Some("idx_users_username")),
            RepositoryError::UsernameTaken
        );
        assert_eq!(
            from_sqlstate("23514", Some("ck_users_username_format")),
            RepositoryError::Rejected {
                rule: "ck_users_username_format".into()
            }
        );
        assert_eq!(
            from_sqlstate("57P01", None),
            RepositoryError::Unavailable(Unavailability::ConnectionLost)
        );
        assert_eq!(
            from_sqlstate("08006", None),
            RepositoryError::Unavailable(Unavailability::ConnectionLost)
        );
        assert_eq!(
            from_sqlstate("57014", None),
            RepositoryError::Unavailable(Unavailability::Timeout)
        );
        assert_eq!(
            from_sqlstate("28P01", None),
            RepositoryError::Unavailable(Unavailability::Rejected)
        );
        assert_eq!(
            from_sqlstate("42P01", None),
            RepositoryError::Unexpected("database error SQLSTATE 42P01".into())
        );
    }

    #[test]
    fn io_errors_map_by_kind() {
        let refused = sqlx::Error::Io(std::io::Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(
            from_sqlx(&refused),
            RepositoryError::Unavailable(Unavailability::ConnectionRefused)
        );
        let reset = sqlx::Error::Io(std::io::Error::from(ErrorKind::ConnectionReset));
        assert_eq!(
            from_sqlx(&reset),
            RepositoryError::Unavailable(Unavailability::ConnectionLost)
        );
    }
}
