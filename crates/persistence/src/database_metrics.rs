//! What the pool and the repositories report, through the `metrics` facade only: the binary
//! chooses the recorder (see `counseling-http`'s `metrics` module).
//!
//! Every handle is registered once, when the [`crate::Database`] is built, with the recorder
//! current at that moment (`metrics::with_local_recorder` or the global one; none means no-ops).
//! Recording is then an atomic add, with no lookup and no allocation on the hot path, and labels
//! only ever take values from the fixed sets below.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use counseling_domain::StoreError;
use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

use crate::Database;
use crate::error_mapping::Failure;
use crate::session::Session;

pub(crate) const OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
pub(crate) const OPERATIONS: &str = "db_client_operations_total";
pub(crate) const CONNECTION_WAIT_TIME: &str = "db_client_connection_wait_time_seconds";
pub(crate) const CONNECTION_TIMEOUTS: &str = "db_client_connection_timeouts_total";
pub(crate) const CONNECTIONS_DISCARDED: &str = "db_client_connections_discarded_total";
const POOL_OPEN: &str = "db_client_connections_open";
const POOL_IDLE: &str = "db_client_connections_idle";
const POOL_USED: &str = "db_client_connections_used";
const POOL_MAX: &str = "db_client_connections_max";
const POOL_MIN: &str = "db_client_connections_min";

/// A repository operation, or a whole unit of work: the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    FindById,
    FindByUsername,
    SetBlocked,
    UpdatePasswordHash,
    List,
    Delete,
    Transaction,
}

impl Operation {
    const ALL: [Operation; 8] = [
        Operation::Create,
        Operation::FindById,
        Operation::FindByUsername,
        Operation::SetBlocked,
        Operation::UpdatePasswordHash,
        Operation::List,
        Operation::Delete,
        Operation::Transaction,
    ];

    /// Whether the operation writes: its failure after it was sent may leave it unconfirmed.
    pub(crate) const fn writes(self) -> bool {
        matches!(
            self,
            Operation::Create
                | Operation::SetBlocked
                | Operation::UpdatePasswordHash
                | Operation::Delete
        )
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::FindById => "find_by_id",
            Operation::FindByUsername => "find_by_username",
            Operation::SetBlocked => "set_blocked",
            Operation::UpdatePasswordHash => "update_password_hash",
            Operation::List => "list",
            Operation::Delete => "delete",
            Operation::Transaction => "transaction",
        }
    }
}

/// How an operation ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done (a lookup that found nothing is done too).
    Ok,
    /// An update or delete named no row.
    NotFound,
    /// A taken username, a serialization failure or a deadlock.
    Conflict,
    /// The database could not be reached or did not answer in time.
    Unavailable,
    /// A write was sent but its connection failed before the answer, or its caller stopped
    /// waiting for the answer: it may be stored. Counted apart, as each one may need reconciling.
    Unknown,
    /// Anything else: rejected data, unexpected errors.
    Error,
    /// The caller stopped waiting (dropped the future) before anything it asked could be stored:
    /// a read, a write still waiting for a connection, a call inside a unit of work, or a unit
    /// before its `COMMIT`.
    Abandoned,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::Conflict,
        Outcome::Unavailable,
        Outcome::Unknown,
        Outcome::Error,
        Outcome::Abandoned,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Conflict => "conflict",
            Outcome::Unavailable => "unavailable",
            Outcome::Unknown => "unknown",
            Outcome::Error => "error",
            Outcome::Abandoned => "abandoned",
        }
    }

    pub(crate) fn of_result<T>(result: &Result<T, Failure>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(failure) => Outcome::of_failure(failure),
        }
    }

    pub(crate) fn of_failure(failure: &Failure) -> Self {
        match failure {
            Failure::NotFound => Outcome::NotFound,
            Failure::UsernameTaken => Outcome::Conflict,
            Failure::Rejected { .. } => Outcome::Error,
            Failure::Cancelled => Outcome::Unavailable,
            Failure::Store(error) => Outcome::of_store_error(error),
        }
    }

    pub(crate) fn of_store_error(error: &StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Outcome::Unavailable,
            StoreError::OutcomeUnknown => Outcome::Unknown,
            StoreError::Conflict(_) => Outcome::Conflict,
            StoreError::Unexpected(_) => Outcome::Error,
        }
    }
}

/// Why a pooled connection was closed instead of used again: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Its server can no longer take writes (a standby, a demoted or read-only primary).
    ReadOnly,
    /// It failed (I/O, protocol), or was left in an unknown state (a statement cut off).
    Broken,
    /// A call on it outlived its deadline.
    Timeout,
    /// It reached `DATABASE_MAX_LIFETIME_SECS`.
    Lifetime,
    /// It sat idle past `DATABASE_IDLE_TIMEOUT_SECS` above the pool's minimum.
    Idle,
}

impl Discard {
    const ALL: [Discard; 5] = [
        Discard::ReadOnly,
        Discard::Broken,
        Discard::Timeout,
        Discard::Lifetime,
        Discard::Idle,
    ];

    /// The reason stored as `reason as u8`.
    pub(crate) fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    const fn as_str(self) -> &'static str {
        match self {
            Discard::ReadOnly => "read_only",
            Discard::Broken => "broken",
            Discard::Timeout => "timeout",
            Discard::Lifetime => "lifetime",
            Discard::Idle => "idle",
        }
    }
}

/// The handles of one [`crate::Database`], shared by its clones.
#[derive(Debug)]
pub(crate) struct DatabaseMetrics {
    /// Per operation: its duration histogram and one counter per outcome.
    operations: Vec<(Histogram, Vec<Counter>)>,
    wait_time: Histogram,
    timeouts: Counter,
    /// One counter per [`Discard`] reason, in its declaration order.
    discarded: Vec<Counter>,
    pool: PoolGauges,
}

/// The pool's sizes, set when a scrape asks ([`crate::Database::record_pool_status`]).
#[derive(Debug)]
struct PoolGauges {
    open: Gauge,
    idle: Gauge,
    used: Gauge,
    max: Gauge,
    min: Gauge,
}

impl DatabaseMetrics {
    /// Describes and registers every series with the current recorder.
    pub(crate) fn register() -> Self {
        describe_histogram!(
            OPERATION_DURATION,
            Unit::Seconds,
            "Duration of repository operations and units of work, connection wait included."
        );
        describe_counter!(
            OPERATIONS,
            "Repository operations and units of work by outcome (ok, not_found, conflict, unavailable, unknown, error, abandoned)."
        );
        describe_histogram!(
            CONNECTION_WAIT_TIME,
            Unit::Seconds,
            "Time spent waiting for a connection from the pool."
        );
        describe_counter!(
            CONNECTION_TIMEOUTS,
            "Waits for a pooled connection that gave up: every connection stayed busy."
        );
        let operations = Operation::ALL
            .iter()
            .map(|operation| {
                let name = operation.as_str();
                let duration = histogram!(OPERATION_DURATION, "operation" => name);
                let outcomes = Outcome::ALL
                    .iter()
                    .map(|outcome| {
                        counter!(OPERATIONS, "operation" => name, "outcome" => outcome.as_str())
                    })
                    .collect();
                (duration, outcomes)
            })
            .collect();
        describe_counter!(
            CONNECTIONS_DISCARDED,
            "Pooled connections closed instead of reused, by reason (read_only, broken, timeout, lifetime, idle)."
        );
        describe_gauge!(POOL_OPEN, "Open connections in the pool, idle or in use.");
        describe_gauge!(POOL_IDLE, "Open connections waiting in the pool.");
        describe_gauge!(POOL_USED, "Connections checked out of the pool.");
        describe_gauge!(POOL_MAX, "Configured maximum of open connections.");
        describe_gauge!(POOL_MIN, "Configured minimum of open connections.");
        Self {
            operations,
            wait_time: histogram!(CONNECTION_WAIT_TIME),
            timeouts: counter!(CONNECTION_TIMEOUTS),
            discarded: Discard::ALL
                .iter()
                .map(|reason| counter!(CONNECTIONS_DISCARDED, "reason" => reason.as_str()))
                .collect(),
            pool: PoolGauges {
                open: gauge!(POOL_OPEN),
                idle: gauge!(POOL_IDLE),
                used: gauge!(POOL_USED),
                max: gauge!(POOL_MAX),
                min: gauge!(POOL_MIN),
            },
        }
    }

    /// One connection closed instead of reused.
    pub(crate) fn discarded(&self, reason: Discard) {
        // `Discard::ALL` lists every variant in declaration order (a test checks it).
        if let Some(counter) = self.discarded.get(reason as usize) {
            counter.increment(1);
        }
    }

    /// Sets the pool gauges to `status`.
    pub(crate) fn pool_status(&self, status: &crate::PoolStatus) {
        self.pool.open.set(status.open);
        self.pool.idle.set(status.idle);
        self.pool.used.set(status.in_use());
        self.pool.max.set(status.max);
        self.pool.min.set(status.min);
    }

    pub(crate) fn operation(&self, operation: Operation, outcome: Outcome, took: Duration) {
        // `Operation::ALL` and `Outcome::ALL` list every variant in declaration order, so the
        // discriminants index them; `get` keeps this free of panics all the same.
        if let Some((duration, outcomes)) = self.operations.get(operation as usize) {
            duration.record(took);
            if let Some(counter) = outcomes.get(outcome as usize) {
                counter.increment(1);
            }
        }
    }

    /// One wait for a connection, and whether it ended because the pool had none to give in time.
    pub(crate) fn connection_wait(&self, took: Duration, timed_out: bool) {
        self.wait_time.record(took);
        if timed_out {
            self.timeouts.increment(1);
        }
    }
}

/// One operation's count and duration, recorded exactly once: with its outcome when it returns,
/// or when its future is dropped first, because its caller stopped waiting (a client gone, a
/// `tokio::time::timeout`). Such an operation is `unknown` if a write of it may have reached the
/// server (and is logged at WARN, as every unconfirmed write is), else `abandoned`.
///
/// It holds the pool (whose metrics it records into): a call moves it to the I/O runtime as the
/// one handle the call needs there, so recording costs no clone of its own.
pub(crate) struct Recording {
    database: Database,
    /// `None`: not a repository operation (nothing is recorded).
    operation: Option<Operation>,
    started: Instant,
    /// A write of this call may have been sent.
    write_sent: bool,
    /// The session of the unit of work this records, once it has one: whether its COMMIT is in
    /// doubt.
    unit: Option<Arc<Session>>,
    recorded: bool,
    /// Set if it ends dropped with a write in doubt (see [`Recording::doubt`]).
    doubt: Option<Arc<AtomicBool>>,
}

impl Recording {
    pub(crate) fn start(database: Database, operation: Option<Operation>) -> Self {
        Self {
            database,
            operation,
            started: Instant::now(),
            write_sent: false,
            unit: None,
            recorded: false,
            doubt: None,
        }
    }

    /// A flag this recording sets if it ends dropped with a write in doubt (`unknown`): a call
    /// cut off on the I/O runtime by its shutdown is dropped there, and its caller, told only
    /// that the task was cancelled, reads from it what to say.
    pub(crate) fn doubt(&mut self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.doubt = Some(Arc::clone(&flag));
        flag
    }

    /// The pool the operation runs on.
    pub(crate) fn database(&self) -> &Database {
        &self.database
    }

    /// Whether the operation writes.
    pub(crate) fn writes(&self) -> bool {
        self.operation.is_some_and(Operation::writes)
    }

    /// From here on a write of this call may reach the server. Conservative: set just before
    /// the statement is sent.
    pub(crate) fn write_may_be_sent(&mut self) {
        self.write_sent = self.writes();
    }

    /// The unit of work being recorded has its session: dropped after a COMMIT that followed a
    /// write, it is `unknown`.
    pub(crate) fn unit_session(&mut self, session: Arc<Session>) {
        self.unit = Some(session);
    }

    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        self.recorded = true;
        if let Some(operation) = self.operation {
            self.database
                .metrics()
                .operation(operation, outcome, self.started.elapsed());
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.recorded || self.operation.is_none() {
            return;
        }
        let in_doubt = self.write_sent
            || self
                .unit
                .as_ref()
                .is_some_and(|unit| unit.commit_in_doubt());
        let outcome = if std::thread::panicking() {
            Outcome::Error
        } else if in_doubt {
            tracing::warn!(
                "a write was sent but its caller stopped waiting for the answer: it may or may not be stored"
            );
            if let Some(flag) = &self.doubt {
                flag.store(true, Ordering::Release);
            }
            Outcome::Unknown
        } else {
            Outcome::Abandoned
        };
        self.record(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_label_sets_are_in_declaration_order() {
        for (index, operation) in Operation::ALL.iter().enumerate() {
            assert_eq!(*operation as usize, index);
        }
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index);
        }
        for (index, reason) in Discard::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
    }
}
