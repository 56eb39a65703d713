//! One pooled connection, checked out for one repository call or one unit of work, on which
//! SeaORM runs its statements.
//!
//! SeaORM's own pool handle returns a connection to the pool whatever happened to it, and its
//! transaction queues a `ROLLBACK` for the connection's next user. A connection cut off by a
//! deadline, broken, or inside a transaction that never finished must not go back: so we hold the
//! connection ourselves, and [`Drop`] decides whether it goes back to the pool or is closed. The
//! pool takes back what we return without checking it again (see [`crate::pool`]).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex as StdMutex, PoisonError};

use counseling_config::{SessionState, panic_as_protocol_error};

use sea_orm::sqlx::postgres::{PgConnection, PgDatabaseError, PgSeverity};
use sea_orm::sqlx::{self, Executor};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use crate::database_metrics::{Discard, Outcome};
use crate::error_mapping::Failure;
use crate::pool::PooledConnection;

pub(crate) struct Session {
    connection: Mutex<Option<PooledConnection>>,
    /// The connection failed in a way that makes it unfit for reuse.
    unfit: AtomicBool,
    /// A statement was started and has not finished (its future may have been dropped): the
    /// connection's state is unknown. The next statement turns it into `unfit` (see
    /// `with_raw_connection`). Apart from `unfit`, so that a statement ending cannot erase a
    /// discard another call of the same unit noted meanwhile.
    in_flight: AtomicBool,
    /// `BEGIN` was sent and neither `COMMIT` nor `ROLLBACK` has completed.
    in_transaction: AtomicBool,
    /// The unit of work this session serves has sent its COMMIT or ROLLBACK, or ended: nothing
    /// else may run on it (it would run outside the transaction, with no deadline), a call
    /// already waiting for the connection included.
    ended: AtomicBool,
    /// `COMMIT` was sent: from then on, a failure leaves the unit's outcome unknown.
    commit_sent: AtomicBool,
    /// A write of the unit's was sent: a COMMIT that is not confirmed may have stored it.
    wrote: AtomicBool,
    /// Why the connection is unfit (a [`Discard`] as `u8`), for the metric when it is closed;
    /// [`NO_REASON`] counts as broken.
    discard_reason: AtomicU8,
    /// How the last repository call that failed inside this unit of work failed (metrics).
    failed_call: StdMutex<Option<Outcome>>,
    /// Whether a call inside this unit of work failed in a way that aborted its transaction on
    /// the server (anything but the errors the client makes up: no such row, a value it could
    /// not decode): PostgreSQL then answers COMMIT with ROLLBACK.
    aborted: AtomicBool,
    /// A unit of work's deadline: every statement on its session ends by then, a call the unit
    /// left behind included (nothing else bounds that one once the unit has gone). `None` for a
    /// single call, which its caller bounds.
    deadline: Option<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field(
                "in_transaction",
                &self.in_transaction.load(Ordering::SeqCst),
            )
            .finish_non_exhaustive()
    }
}

/// No reason recorded yet.
const NO_REASON: u8 = u8::MAX;

impl Session {
    pub(crate) fn new(connection: PooledConnection) -> Self {
        Self::with_deadline(connection, None)
    }

    /// The session of a unit of work that must end by `deadline`.
    pub(crate) fn for_unit(connection: PooledConnection, deadline: Instant) -> Self {
        Self::with_deadline(connection, Some(deadline))
    }

    fn with_deadline(connection: PooledConnection, deadline: Option<Instant>) -> Self {
        Self {
            connection: Mutex::new(Some(connection)),
            unfit: AtomicBool::new(false),
            in_flight: AtomicBool::new(false),
            in_transaction: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            commit_sent: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            discard_reason: AtomicU8::new(NO_REASON),
            failed_call: StdMutex::new(None),
            aborted: AtomicBool::new(false),
            deadline,
        }
    }

    /// Ends the session when its unit of work ends, whoever still holds it: the connection goes
    /// back to the pool now (or is closed, as on drop), and every later call is refused. If a
    /// call the unit left behind holds the connection, that call releases it when its statement
    /// ends (see [`Session::with_raw_connection`]).
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.release_if_free();
    }

    /// Takes the connection out and releases it, unless someone holds it (who then does).
    fn release_if_free(&self) {
        if let Ok(mut slot) = self.connection.try_lock() {
            self.release_slot(&mut slot);
        }
    }

    /// Releases the connection in `slot`, which the caller holds locked, if it is there.
    fn release_slot(&self, slot: &mut Option<PooledConnection>) {
        if let Some(connection) = slot.take() {
            self.release(connection);
        }
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Notes that a write of the unit's is about to be sent. Conservative: a write refused
    /// after this (the unit ending meanwhile) still counts.
    pub(crate) fn mark_written(&self) {
        self.wrote.store(true, Ordering::SeqCst);
    }

    /// Whether the unit sent its COMMIT after sending a write: if the COMMIT is not confirmed,
    /// whether that write is stored is unknown.
    pub(crate) fn commit_in_doubt(&self) -> bool {
        self.commit_sent.load(Ordering::SeqCst) && self.wrote.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_aborted(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Whether the connection's state is unknown or known bad: a statement cut off half-way,
    /// or a failure that marked it for closing.
    pub(crate) fn is_unfit(&self) -> bool {
        self.unfit.load(Ordering::SeqCst) || self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn record_failed_call(&self, outcome: Outcome) {
        *self
            .failed_call
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }

    pub(crate) fn failed_call(&self) -> Option<Outcome> {
        *self
            .failed_call
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the connection when this session ends instead of returning it to the pool, if
    /// `failure` says it is unfit.
    pub(crate) fn discard_after(&self, failure: &Failure) {
        if let Some(reason) = failure.discard_reason() {
            self.discard(reason);
        }
    }

    /// Closes the connection when this session ends instead of returning it to the pool. Only
    /// for a connection that failed (broken, lost, timed out, read-only), so the pool also checks
    /// its idle connections before their next use (see [`note_breakage`]).
    pub(crate) fn discard(&self, reason: Discard) {
        self.unfit.store(true, Ordering::SeqCst);
        self.note_discard_reason(reason);
        if let Ok(guard) = self.connection.try_lock()
            && let Some(connection) = guard.as_ref()
        {
            note_breakage(connection);
        }
    }

    /// Whether the unit of work this session serves is past its deadline.
    fn past_deadline(&self) -> bool {
        (self.deadline).is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Records why the connection is unfit, unless a reason was recorded before.
    fn note_discard_reason(&self, reason: Discard) {
        let _ = self.discard_reason.compare_exchange(
            NO_REASON,
            reason as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    pub(crate) async fn begin(&self) -> Result<(), DbErr> {
        self.execute_unprepared("BEGIN").await?;
        self.in_transaction.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// COMMIT, unless the unit cannot be committed as it is: a statement of the unit failed on
    /// the server meanwhile (a task it left behind, say), so that PostgreSQL would answer COMMIT
    /// with a silent ROLLBACK (then it sends ROLLBACK); or one was cut off half-way (see
    /// [`Ended::CutOff`]).
    pub(crate) async fn commit(&self) -> Result<Ended, DbErr> {
        self.end_transaction(true).await
    }

    pub(crate) async fn rollback(&self) -> Result<(), DbErr> {
        self.end_transaction(false).await.map(drop)
    }

    /// COMMIT or ROLLBACK, the unit's last statement: marked ended while the connection is
    /// held, so that a call waiting for it (a task the unit spawned) is refused rather than run
    /// outside the transaction once it ends; and the connection goes back to the pool (or is
    /// closed) before it is let go, so that no such call can keep it.
    async fn end_transaction(&self, commit: bool) -> Result<Ended, DbErr> {
        let mut slot = self.connection.lock().await;
        if self.ended.swap(true, Ordering::SeqCst) {
            return Err(as_exec_error(closed()));
        }
        // Past the deadline nothing more is sent: the connection is closed, which rolls back.
        // (Checked first: a call the deadline cut off is no cut-off call of the unit's.)
        if self.past_deadline() {
            self.unfit.store(true, Ordering::SeqCst);
            self.note_discard_reason(Discard::Timeout);
            self.release_slot(&mut slot);
            return Err(as_exec_error(timed_out()));
        }
        let aborted = self.aborted.load(Ordering::SeqCst);
        // Decided with the connection held, where a statement in flight can only be one that was
        // cut off (one still running would hold the connection).
        if commit && !aborted && self.is_unfit() {
            self.unfit.store(true, Ordering::SeqCst);
            self.release_slot(&mut slot);
            return Ok(Ended::CutOff);
        }
        let commit = commit && !aborted;
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let outcome = self
            .run_on(&mut slot, async |connection| {
                // Noted as it is sent, not before: one never sent (the deadline had passed) is
                // in no doubt.
                if commit {
                    self.commit_sent.store(true, Ordering::SeqCst);
                }
                connection.execute(sqlx::AssertSqlSafe(sql)).await
            })
            .await;
        let ended = match outcome {
            Ok(_) => {
                self.in_transaction.store(false, Ordering::SeqCst);
                Ok(if commit {
                    Ended::Committed
                } else {
                    Ended::RolledBack
                })
            }
            // The server refused the COMMIT (a serialization failure, a deferred constraint):
            // it has ended the transaction block, and the connection is fine for the next one
            // (unless the error ended the session: see `run_on`).
            Err(sqlx::Error::Database(error)) if commit => {
                self.in_transaction.store(false, Ordering::SeqCst);
                Err(as_exec_error(sqlx::Error::Database(error)))
            }
            Err(error) => Err(as_exec_error(error)),
        };
        self.release_slot(&mut slot);
        ended
    }

    /// The health check's one round trip: what kind of server this is (in recovery, read-only
    /// sessions), and what this role may do with the users table (see [`Readiness`]).
    pub(crate) async fn readiness(&self) -> Result<Readiness, sqlx::Error> {
        use sea_orm::EntityName;
        let table = crate::entity::users::Entity.table_name();
        self.with_raw_connection(async |connection| {
            let (in_recovery, read_only, reads, writes): (
                bool,
                String,
                Option<bool>,
                Option<bool>,
            ) = panic_as_protocol_error(
                sqlx::query_as(READINESS)
                    .bind(table)
                    .fetch_one(&mut *connection),
            )
            .await?;
            Ok(Readiness {
                state: SessionState {
                    in_recovery,
                    read_only: read_only == "on",
                },
                reads,
                writes,
            })
        })
        .await
    }

    /// Runs one statement with the connection, marking it in flight until the statement ends
    /// in flight: if its future is dropped half-way, the connection's state is unknown.
    async fn with_connection<T>(
        &self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        self.with_raw_connection(statement)
            .await
            .map_err(as_exec_error)
    }

    /// [`Session::with_connection`] with the driver's own error.
    async fn with_raw_connection<T>(
        &self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let outcome = {
            let mut slot = self.connection.lock().await;
            // Checked with the connection held: COMMIT or ROLLBACK may have ended the unit while
            // this call waited for it, or the unit ended otherwise. Nothing else runs on it: it
            // goes now.
            if self.ended.load(Ordering::SeqCst) {
                self.release_slot(&mut slot);
                return Err(closed());
            }
            self.run_on(&mut slot, statement).await
        };
        // The unit ended while this statement ran (a call it left behind), and could not take
        // the connection then: it goes now, unless someone else holds it (who then does).
        if self.ended.load(Ordering::SeqCst) {
            self.release_if_free();
        }
        outcome
    }

    /// Runs `statement` on the connection in `slot`, which the caller holds locked.
    async fn run_on<T>(
        &self,
        slot: &mut Option<PooledConnection>,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let connection = slot.as_mut().ok_or_else(closed)?;
        // Past the unit's deadline nothing more is sent (if the connection is closed for it,
        // that is why).
        if self.past_deadline() {
            self.note_discard_reason(Discard::Timeout);
            return Err(timed_out());
        }
        // One statement at a time: the connection's lock is held until it ends. One still in
        // flight here was cut off (its future dropped): the driver finishes it before this one,
        // unseen, so the session's state stays unknown for good.
        if self.in_flight.swap(true, Ordering::SeqCst) {
            self.unfit.store(true, Ordering::SeqCst);
        }
        let statement = panic_as_protocol_error(statement(&mut **connection));
        let outcome = match self.deadline {
            None => statement.await,
            Some(deadline) => match timeout_at(deadline, statement).await {
                Ok(outcome) => outcome,
                // Cut off by the unit's deadline: what the statement did is unknown (it stays in
                // flight), so the connection is closed, never reused.
                Err(_elapsed) => {
                    self.unfit.store(true, Ordering::SeqCst);
                    self.note_discard_reason(Discard::Timeout);
                    note_breakage(connection);
                    return Err(timed_out());
                }
            },
        };
        self.in_flight.store(false, Ordering::SeqCst);
        let broken = match &outcome {
            Err(sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)) => true,
            // FATAL (or PANIC): the server ended the session (an administrator, a timeout,
            // a recovery conflict), whatever the code says.
            Err(sqlx::Error::Database(error)) => error
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|error| {
                    matches!(error.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                }),
            _ => false,
        };
        // "cached plan must not change result type" (0A000, raised by the server's
        // RevalidateCachedQuery; known by that routine, as the message is translated and the
        // code is a whole class): a migration changed a column's type under statements this
        // connection prepared, which the driver keeps and the server refuses every time. Those
        // of the idle connections are as stale.
        let stale_statements = matches!(&outcome, Err(sqlx::Error::Database(error))
            if error.code().is_some_and(|code| code == "0A000")
                && error
                    .try_downcast_ref::<PgDatabaseError>()
                    .is_some_and(|error| error.routine() == Some("RevalidateCachedQuery")));
        if broken || stale_statements {
            self.unfit.store(true, Ordering::SeqCst);
            note_breakage(connection);
        }
        if stale_statements && let Some(pool) = PooledConnection::pool(connection) {
            pool.manager().discard_idle();
        }
        // An error from the server inside a transaction aborts it: noted before the connection
        // is let go, so that a COMMIT waiting for it knows (see [`Session::commit`]).
        if matches!(outcome, Err(sqlx::Error::Database(_)))
            && self.in_transaction.load(Ordering::SeqCst)
        {
            self.aborted.store(true, Ordering::SeqCst);
        }
        outcome
    }
}

/// The health check's question. `has_table_privilege` with several privileges answers whether
/// any is held, so each is asked alone; a table missing from the search path (migrations not
/// run, or another database) gives NULL.
const READINESS: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     pg_catalog.current_setting('transaction_read_only'), \
     pg_catalog.has_table_privilege(users.oid, 'SELECT'), \
     pg_catalog.has_table_privilege(users.oid, 'INSERT') \
       AND pg_catalog.has_table_privilege(users.oid, 'UPDATE') \
       AND pg_catalog.has_table_privilege(users.oid, 'DELETE') \
     FROM (SELECT pg_catalog.to_regclass($1) AS oid) AS users";

/// What the health check learns in its round trip.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    pub(crate) state: SessionState,
    /// Whether this role may read the users table; `None`: no such table.
    pub(crate) reads: Option<bool>,
    /// Whether it may insert, update and delete there; `None`: no such table.
    pub(crate) writes: Option<bool>,
}

/// How a unit of work's COMMIT ended, when the server did not refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Committed,
    /// A call had failed on the server (the transaction was aborted): ROLLBACK was sent instead.
    RolledBack,
    /// A call was cut off half-way (its future dropped): whether its statement ran is unknown,
    /// and a COMMIT would first finish it and then keep it. Nothing was sent; the connection was
    /// closed, which makes the server roll back.
    CutOff,
}

/// What a call on a session whose unit of work has ended gets (see [`is_refusal`]).
const REFUSED: &str = "refused: the unit of work had ended";

/// Whether `error` is a call's refusal by a session whose unit of work had ended: it ran nothing.
/// Matched by its shape, not its text: a server's message may quote a client's input.
pub(crate) fn is_refusal(error: &DbErr) -> bool {
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            matches!(&**error, sqlx::Error::Protocol(message) if message == REFUSED)
        }
        _ => false,
    }
}

fn timed_out() -> sqlx::Error {
    sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())
}

fn closed() -> sqlx::Error {
    sqlx::Error::Protocol(REFUSED.into())
}

fn as_exec_error(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(error.into()))
}

/// Tells `connection`'s pool that a connection failed: what broke one (a restart, a failover, a
/// network cut) has likely broken the idle ones too.
fn note_breakage(connection: &PooledConnection) {
    if let Some(pool) = PooledConnection::pool(connection) {
        pool.manager().note_breakage();
    }
}

impl Session {
    /// Returns the connection to the pool, or closes it if it is unfit or a transaction is open.
    fn release(&self, connection: PooledConnection) {
        if self.is_unfit() || self.in_transaction.load(Ordering::SeqCst) {
            let reason = Discard::from_u8(self.discard_reason.load(Ordering::SeqCst))
                .unwrap_or(Discard::Broken);
            if let Some(pool) = PooledConnection::pool(&connection) {
                pool.manager().metrics().discarded(reason);
            }
            // Closing the socket makes the server roll back whatever was open; nothing waits for
            // a server that may be frozen.
            drop(PooledConnection::take(connection));
        } else {
            // Back to the pool, or, the pool closed, a goodbye to the server.
            crate::pool::give_back(connection);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.get_mut().take() {
            self.release(connection);
        }
    }
}

fn arguments(statement: &Statement) -> SqlxValues {
    SqlxValues(
        statement
            .values
            .clone()
            .unwrap_or_else(|| sea_orm::Values(Vec::new())),
    )
}

#[async_trait::async_trait]
impl ConnectionTrait for Session {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        self.with_connection(async |connection| {
            sqlx::query_with(
                sqlx::AssertSqlSafe(statement.sql.as_str()),
                arguments(&statement),
            )
            .execute(&mut *connection)
            .await
        })
        .await
        .map(ExecResult::from)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.with_connection(async |connection| connection.execute(sqlx::AssertSqlSafe(sql)).await)
            .await
            .map(ExecResult::from)
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.with_connection(async |connection| {
            sqlx::query_with(
                sqlx::AssertSqlSafe(statement.sql.as_str()),
                arguments(&statement),
            )
            .fetch_optional(&mut *connection)
            .await
        })
        .await
        .map(|row| row.map(QueryResult::from))
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.with_connection(async |connection| {
            sqlx::query_with(
                sqlx::AssertSqlSafe(statement.sql.as_str()),
                arguments(&statement),
            )
            .fetch_all(&mut *connection)
            .await
        })
        .await
        .map(|rows| rows.into_iter().map(QueryResult::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_known_by_its_shape_not_by_its_text() {
        assert!(is_refusal(&as_exec_error(closed())));
        // A server's message may quote a client's input, such as these words.
        let quoted = DbErr::Custom(format!("invalid input syntax: \"{REFUSED}\""));
        assert!(!is_refusal(&quoted));
        let other_protocol_error = sqlx::Error::Protocol(format!("unexpected: {REFUSED}"));
        assert!(!is_refusal(&as_exec_error(other_protocol_error)));
    }
}
