use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use counseling_config::{Connector, Problems};
use counseling_domain::{StoreError, Unavailability};
use deadpool::managed::PoolError;
use sea_orm::sqlx::Connection;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::DatabaseSettings;
use crate::database_metrics::{DatabaseMetrics, Discard, Operation, Outcome, Recording};
use crate::error_mapping::{
    Failure, ended_while_idle, from_connect, from_db_err, from_sqlx, of_sent_write,
};
use crate::pool::{self, ConnectionPool, PoolBounds, PooledConnection, fit_for_use};
use crate::session::{Ended, Session};
use crate::unit_of_work::UnitOfWork;

/// Part of a ping's budget kept back to find out why the pool could not hand out a connection.
const DIAGNOSIS_BUDGET: Duration = Duration::from_millis(100);

/// Added to `statement_timeout` for the client-side deadline of a call or a unit of work: the
/// server's own timeout should fire first (the connection stays usable); the deadline is the
/// backstop for a server or network that stopped answering.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// [`Database::transaction`]'s error for a unit that returned `Ok` after one of its calls failed.
const UNIT_WENT_ON_AFTER_A_FAILURE: &str =
    "a call in the unit of work failed and the unit went on: rolled back, nothing was written";

const UNIT_WENT_ON_AFTER_A_CUT_OFF_CALL: &str = "a call in the unit of work was cut off (its future \
     dropped, as by a timeout) and the unit went on: its connection was closed, so the server \
     rolled back, nothing was written";

/// A boxed future borrowing a session: the shape of one repository call's work.
pub(crate) type SessionWork<'s, T> =
    Pin<Box<dyn Future<Output = Result<T, sea_orm::DbErr>> + Send + 's>>;

/// The pool's numbers right now, and its configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Open connections, idle or in use.
    pub open: u32,
    pub idle: u32,
    pub max: u32,
    pub min: u32,
}

impl PoolStatus {
    pub fn in_use(&self) -> u32 {
        self.open.saturating_sub(self.idle)
    }
}

/// The application's pool of PostgreSQL connections, shared by every repository and the health
/// probe. Cloning is cheap (the pool is reference-counted).
///
/// Everything that touches a connection runs on the runtime handed to
/// [`Database::connect_lazy`]: a socket belongs to the runtime that opened it, and actix-web runs
/// one runtime per worker, which stop one by one during a graceful shutdown. The binary owns that
/// runtime and keeps it alive until the pool is closed.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    pool: ConnectionPool,
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Duration,
    io: Handle,
    /// Bound of one call's statement(s) once it has a connection, and of a whole unit of work.
    call_timeout: Duration,
    metrics: Arc<DatabaseMetrics>,
    /// One permit: the checkout of a health check, which may outlive the check (see
    /// [`Database::ping`]). Checks take turns at checking out, so at most one such checkout is
    /// pending however many checks there are.
    check_checkout: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Database {
    // Hand-written: the connect options hold the password, and sqlx's Debug prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("pool", &self.status())
            .field("call_timeout", &self.inner.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Aborts the task when the caller stops waiting for it (a client that went away): a unit of work
/// whose caller is gone is rolled back, not finished unseen.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Checkout = Pin<Box<dyn Future<Output = Result<PooledConnection, Failure>> + Send>>;

/// A health check's checkout, polled in place (a healthy check pays for no task). Dropped
/// before it ends, when the check stops waiting for it (its deadline, or the check itself
/// dropped), it is moved as it stands to a task of its own on the I/O runtime, which finishes it
/// within the acquire timeout (counted in the metrics then) and gives its connection back to the
/// pool, idle for the next check (or, once the pool is closed, saying goodbye). It holds the
/// check's turn until then.
struct CheckCheckout {
    pending: Option<(Checkout, tokio::sync::OwnedSemaphorePermit)>,
    io: Handle,
}

impl CheckCheckout {
    /// The checkout's outcome; the turn ends with it, so concurrent checks do not wait for each
    /// other's round trips.
    async fn next(&mut self) -> Result<PooledConnection, Failure> {
        let outcome = match &mut self.pending {
            Some((checkout, _turn)) => checkout.as_mut().await,
            // Taken only here, after the outcome: not reached.
            None => Err(Failure::Store(StoreError::Unavailable(
                Unavailability::ConnectionLost,
            ))),
        };
        self.pending = None;
        outcome
    }
}

impl Drop for CheckCheckout {
    fn drop(&mut self) {
        let Some((checkout, turn)) = self.pending.take() else {
            return;
        };
        let leftover = async move {
            if let Ok(connection) = checkout.await {
                pool::give_back(connection);
            }
            // Once the connection is back, not before: the next check finds it idle.
            drop(turn);
        };
        drop(self.io.spawn(leftover.in_current_span()));
    }
}

impl Database {
    /// Builds the pool without connecting: the service can start, and report itself unhealthy,
    /// while the database is down, and connects as soon as it is back. Database I/O runs on
    /// `io`, a runtime owned by the caller that must outlive this pool.
    ///
    /// Pre-ping: the seed's `pool_pre_ping` checks every connection on checkout, which costs one
    /// round trip per query on a busy pool. A connection that was in use moments ago is almost
    /// surely alive, while one that sat idle may have been cut by a restart, a failover or a
    /// firewall. So only connections not checked out for `ping_if_idle_for` or longer are
    /// pinged; the rare dead connection that slips through fails its query with `Unavailable`
    /// and is discarded.
    ///
    /// Metrics (see docs/metrics.md) go to the `metrics` recorder current when this is called: the
    /// caller's `metrics::with_local_recorder`, else the global one, else nowhere.
    pub fn connect_lazy(settings: &DatabaseSettings, io: Handle) -> Result<Self, Problems> {
        settings.problems().into_result(())?;
        let connector = settings.connector()?;
        let pool_settings = &settings.pool;
        let metrics = Arc::new(DatabaseMetrics::register());
        // The pool's keeper task runs on the I/O runtime, with the connections it opens.
        let _io_context = io.enter();
        let pool = pool::build(
            connector,
            Arc::clone(&metrics),
            &PoolBounds {
                max: pool_settings.max_connections,
                min: pool_settings.min_connections,
                idle_timeout: pool_settings.idle_timeout,
                max_lifetime: pool_settings.max_lifetime,
                ping_if_idle_for: pool_settings.ping_if_idle_for,
                acquire_timeout: pool_settings.acquire_timeout,
            },
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                max_connections: pool_settings.max_connections,
                min_connections: pool_settings.min_connections,
                acquire_timeout: pool_settings.acquire_timeout,
                io,
                call_timeout: pool_settings.statement_timeout + DEADLINE_MARGIN,
                metrics,
                check_checkout: Arc::new(tokio::sync::Semaphore::new(1)),
            }),
        })
    }

    /// The pool's size and bounds, for metrics and tests.
    pub fn status(&self) -> PoolStatus {
        let status = self.inner.pool.status();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PoolStatus {
            open: count(status.size),
            idle: count(status.available),
            max: self.inner.max_connections,
            min: self.inner.min_connections,
        }
    }

    /// Sets the pool's gauges (`db_client_connections_*`) to its numbers now: a scrape calls this
    /// just before it renders, so the figures are as fresh as the scrape.
    pub fn record_pool_status(&self) {
        self.inner.metrics.pool_status(&self.status());
    }

    /// Runs `work` on the I/O runtime and waits for it, keeping the caller's tracing span. If the
    /// caller stops waiting, the work is aborted. A panic in `work` is resumed in the caller.
    ///
    /// A caller already on the I/O runtime runs `work` itself: the same runtime, without a task
    /// to allocate and wake (dropping the caller's future drops `work` just as an abort would).
    async fn on_io<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let io = &self.inner.io;
        if Handle::try_current().is_ok_and(|current| current.id() == io.id()) {
            return Ok(work.await);
        }
        let mut task = AbortOnDrop(io.spawn(work.in_current_span()));
        match (&mut task.0).await {
            Ok(value) => Ok(value),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: the I/O runtime is shutting down (a write's caller is told whether it
            // may be stored: see `cut_off_in_doubt`).
            Err(_) => Err(StoreError::Unavailable(Unavailability::ConnectionLost)),
        }
    }

    pub(crate) fn metrics(&self) -> &Arc<DatabaseMetrics> {
        &self.inner.metrics
    }

    /// A connection from the pool, or why none could be had: at once when the server refuses or
    /// rejects the connection, within the acquire timeout when every connection is busy or the
    /// server does not answer.
    async fn acquire(&self) -> Result<PooledConnection, Failure> {
        let started = Instant::now();
        // Boxed: the pool's checkout future (with a ping inside) would otherwise make every
        // call's future large, and futures are copied as they are nested.
        let checkout = Box::pin(self.inner.pool.get());
        let outcome = tokio::time::timeout(self.inner.acquire_timeout, checkout).await;
        let waited = started.elapsed();
        match outcome {
            Ok(Ok(connection)) => {
                self.inner.metrics.connection_wait(waited, false);
                Ok(connection)
            }
            Ok(Err(error)) => {
                self.inner.metrics.connection_wait(waited, false);
                Err(match error {
                    PoolError::Backend(error) => from_connect(&error),
                    // Closed (shutting down), or a timeout or hook we never configure.
                    _ => Failure::Store(StoreError::Unavailable(Unavailability::ConnectionLost)),
                })
            }
            Err(_elapsed) => {
                let exhausted = self.pool_exhausted();
                self.inner.metrics.connection_wait(waited, exhausted);
                Err(Failure::Store(StoreError::Unavailable(if exhausted {
                    Unavailability::PoolExhausted
                } else {
                    Unavailability::Timeout
                })))
            }
        }
    }

    /// The connector the pool opens its connections with.
    fn connector(&self) -> &Connector {
        self.inner.pool.manager().connector()
    }

    /// Every connection the pool may open is open and checked out.
    fn pool_exhausted(&self) -> bool {
        let status = self.inner.pool.status();
        status.size >= status.max_size && status.available == 0
    }

    /// Runs one repository call on a connection of its own: acquired within the acquire timeout,
    /// then bounded by `statement_timeout` plus [`DEADLINE_MARGIN`]. A connection cut off by the
    /// deadline, or that failed in a way that makes it unfit, is closed, never reused. A call
    /// that writes and is cut off, or whose connection breaks, before the answer comes fails
    /// with [`StoreError::OutcomeUnknown`]: it commits on its own, and may have. `operation`
    /// names the repository operation (`None`: not one), recorded however the call ends.
    pub(crate) async fn call<T, W>(
        &self,
        work: W,
        operation: Option<Operation>,
    ) -> Result<T, Failure>
    where
        T: Send + 'static,
        W: for<'s> FnOnce(&'s Session) -> SessionWork<'s, T> + Send + 'static,
    {
        let mut recording = Recording::start(self.clone(), operation);
        // Only a write can be in doubt: reads pay for no flag.
        let doubt = recording.writes().then(|| recording.doubt());
        let called = self.on_io(async move {
            let outcome = Self::call_on_io(&mut recording, work).await;
            recording.finish(Outcome::of_result(&outcome));
            outcome
        });
        match called.await {
            Ok(outcome) => outcome,
            Err(cut_off) => Err(Failure::Store(cut_off_in_doubt(doubt.as_deref(), cut_off))),
        }
    }

    /// [`Database::call`] on the I/O runtime, on the pool `recording` holds.
    async fn call_on_io<T, W>(recording: &mut Recording, work: W) -> Result<T, Failure>
    where
        W: for<'s> FnOnce(&'s Session) -> SessionWork<'s, T>,
    {
        let session = Session::new(recording.database().acquire().await?);
        recording.write_may_be_sent();
        let writes = recording.writes();
        let deadline = Instant::now() + recording.database().inner.call_timeout;
        match timeout_at(deadline, work(&session)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                let failure = from_db_err(&error);
                session.discard_after(&failure);
                Err(match writes && !ended_while_idle(&error) {
                    true => failure.of_sent_write(),
                    false => failure,
                })
            }
            Err(_elapsed) => {
                session.discard(Discard::Timeout);
                let timeout = Failure::Store(StoreError::Unavailable(Unavailability::Timeout));
                Err(if writes {
                    timeout.of_sent_write()
                } else {
                    timeout
                })
            }
        }
    }

    /// Runs `work` as one unit of work: one transaction on one connection, through which every
    /// repository obtained from the [`UnitOfWork`] reads and writes.
    ///
    /// * `Ok` from `work`: the transaction commits; a failed commit is returned as the error.
    /// * `Err` from `work`: it rolls back, and the error is returned as is.
    /// * A panic in `work`, or the caller dropping this future (a client that went away), or the
    ///   deadline (`statement_timeout` plus [`DEADLINE_MARGIN`], for the whole unit) passing:
    ///   the connection is closed, so the server rolls back; nothing is half-written. The
    ///   deadline is reported as `Unavailable(Timeout)` (a call of the unit's that it cuts off
    ///   returns that error to `work`, which should pass it on), a panic is resumed in the
    ///   caller.
    /// * Once `COMMIT` is sent, the unit is the server's: if the deadline passes or the
    ///   connection breaks before its answer, the unit may have committed whole or not at all,
    ///   and fails with [`StoreError::OutcomeUnknown`] (read back before running it again).
    ///
    /// After a repository call inside `work` fails, the transaction can only roll back: return the
    /// error. A unit that returns `Ok` all the same is rolled back and fails with
    /// [`StoreError::Unexpected`], since none of its writes is kept. Conflicts
    /// ([`StoreError::is_retryable`]) mean the whole unit may be run again.
    ///
    /// ```no_run
    /// # use counseling_domain::{CreateUserError, NewUser, UserRepository};
    /// # async fn example(database: counseling_persistence::Database, a: NewUser, b: NewUser)
    /// # -> Result<(), CreateUserError> {
    /// let (alice, bob) = database
    ///     .transaction(|unit| async move {
    ///         let users = unit.users();
    ///         let alice = users.create(a).await?;
    ///         let bob = users.create(b).await?;
    ///         Ok::<_, CreateUserError>((alice, bob))
    ///     })
    ///     .await?;
    /// # let _ = (alice, bob); Ok(()) }
    /// ```
    pub async fn transaction<T, E, W, Fut>(&self, work: W) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        W: FnOnce(UnitOfWork) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let database = self.clone();
        // Started here, not in the task: a task cancelled before it first runs (its caller gone
        // at once) drops it unpolled, and is counted all the same.
        let mut recording = Recording::start(self.clone(), Some(Operation::Transaction));
        let doubt = recording.doubt();
        let unit = async move {
            let outcome = database.unit_of_work(work, &mut recording).await;
            recording.finish(match &outcome {
                Ok(_) => Outcome::Ok,
                Err((_, recorded)) => *recorded,
            });
            outcome.map_err(|(error, _)| error)
        };
        match self.on_io(unit).await {
            Ok(outcome) => outcome,
            Err(cut_off) => Err(E::from(cut_off_in_doubt(Some(&doubt), cut_off))),
        }
    }

    /// [`Database::transaction`] on the I/O runtime; a failure comes with its outcome label.
    async fn unit_of_work<T, E, W, Fut>(
        &self,
        work: W,
        recording: &mut Recording,
    ) -> Result<T, (E, Outcome)>
    where
        E: From<StoreError>,
        W: FnOnce(UnitOfWork) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ours = |error: StoreError| {
            let outcome = Outcome::of_store_error(&error);
            (E::from(error), outcome)
        };
        let connection = self
            .acquire()
            .await
            .map_err(|failure| ours(store(failure)))?;
        let deadline = Instant::now() + self.inner.call_timeout;
        let session = Arc::new(Session::for_unit(connection, deadline));
        recording.unit_session(Arc::clone(&session));
        // However the unit ends (returned, timed out, panicked, dropped), its connection is done
        // with, whoever keeps a repository of it.
        let _ends = EndsSession(&session);
        let bounded = timeout_at(deadline, async {
            if let Err(error) = session.begin().await {
                return Err(ours(fail(&session, &error)));
            }
            let rolled_back = async |error: E| {
                if session.rollback().await.is_err() {
                    // The session closes the connection when dropped; the server rolls back
                    // when it sees it close.
                    session.discard(Discard::Broken);
                }
                // The closure's own error type says nothing we can label; the call inside the
                // unit that failed (if one did) does.
                Err((error, session.failed_call().unwrap_or(Outcome::Error)))
            };
            match work(UnitOfWork::new(Arc::clone(&session), self.clone())).await {
                // A call failed on the server and `work` went on: PostgreSQL has aborted the
                // transaction, and would answer COMMIT with a silent ROLLBACK. Its writes are
                // lost: say so. (A call that found no row aborts nothing: that unit commits.)
                Ok(_) if session.is_aborted() => {
                    tracing::error!("{UNIT_WENT_ON_AFTER_A_FAILURE}");
                    rolled_back(E::from(StoreError::Unexpected(
                        UNIT_WENT_ON_AFTER_A_FAILURE.into(),
                    )))
                    .await
                }
                Ok(value) => match session.commit().await {
                    Ok(Ended::Committed) => Ok(value),
                    // A call was cut off half-way (its future dropped): whether its statement
                    // ran is unknown, and a COMMIT would first finish it. The connection was
                    // closed instead, which makes the server roll back.
                    Ok(Ended::CutOff) => {
                        tracing::error!("{UNIT_WENT_ON_AFTER_A_CUT_OFF_CALL}");
                        Err(ours(StoreError::Unexpected(
                            UNIT_WENT_ON_AFTER_A_CUT_OFF_CALL.into(),
                        )))
                    }
                    // A call failed on the server while the COMMIT waited for the connection
                    // (a task the unit left behind): it rolled back instead.
                    Ok(Ended::RolledBack) => {
                        tracing::error!("{UNIT_WENT_ON_AFTER_A_FAILURE}");
                        Err(ours(StoreError::Unexpected(
                            UNIT_WENT_ON_AFTER_A_FAILURE.into(),
                        )))
                    }
                    // Sent after a write, and not answered: maybe committed. (An answer, even
                    // a cancellation, and a session the server ended while idle, is a no.)
                    Err(error) if session.commit_in_doubt() && !ended_while_idle(&error) => {
                        let failure = from_db_err(&error);
                        session.discard_after(&failure);
                        Err(ours(failure.of_sent_write().into_store_error()))
                    }
                    Err(error) => Err(ours(fail(&session, &error))),
                },
                Err(error) => rolled_back(error).await,
            }
        });
        match bounded.await {
            Ok(outcome) => outcome,
            Err(_elapsed) => {
                session.discard(Discard::Timeout);
                let timeout = StoreError::Unavailable(Unavailability::Timeout);
                Err(ours(if session.commit_in_doubt() {
                    of_sent_write(timeout)
                } else {
                    timeout
                }))
            }
        }
    }

    /// The value of a server setting as this pool's connections see it (`current_setting`): shows
    /// that the settings sent at connect time took effect.
    pub async fn server_setting(&self, name: &str) -> Result<String, StoreError> {
        let name = name.to_owned();
        let row = self
            .call(
                move |session| {
                    Box::pin(async move {
                        let statement = Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "SELECT current_setting($1)",
                            [name.into()],
                        );
                        session.query_one_raw(statement).await
                    })
                },
                None,
            )
            .await?;
        row.and_then(|row| row.try_get_by_index::<String>(0).ok())
            .ok_or_else(|| StoreError::Unexpected("current_setting returned no text".into()))
    }

    /// Checks that the database answers a round trip, within `timeout` whatever happens: refused
    /// connections, a server stopped mid-query, a frozen server or network, an exhausted pool.
    /// Its wait for a connection may outlive it, within the acquire timeout, one at a time.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let database = self.clone();
        let deadline = Instant::now() + timeout;
        self.on_io(async move { database.ping_until(deadline).await })
            .await?
    }

    /// [`Database::ping`] without the hop to the I/O runtime, for callers already on it.
    async fn ping_until(&self, deadline: Instant) -> Result<(), StoreError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let acquire_deadline = deadline - DIAGNOSIS_BUDGET.min(timeout / 10);
        // The checkout is left to finish when the check stops waiting for it (its deadline, or
        // the check itself dropped): see [`CheckCheckout`]. A connect to a host list whose first
        // host is silent takes that host's `connect_timeout`, at least 2 s, longer than a check's
        // deadline: cut off with each check, it never reached the next host, and without traffic
        // (an unready service gets none) readiness never came back. One such checkout at a time:
        // a check waits for the one before it to end (and then finds its connection idle).
        let checkout_turn = Arc::clone(&self.inner.check_checkout).acquire_owned();
        let turn = match timeout_at(acquire_deadline, checkout_turn).await {
            Ok(Ok(turn)) => turn,
            // Never closed: as for a runtime shutting down.
            Ok(Err(_closed)) => {
                return Err(StoreError::Unavailable(Unavailability::ConnectionLost));
            }
            Err(_elapsed) => return Err(self.diagnose(deadline).await),
        };
        let database = self.clone();
        let mut checkout = CheckCheckout {
            pending: Some((Box::pin(async move { database.acquire().await }), turn)),
            io: self.inner.io.clone(),
        };
        let connection = match timeout_at(acquire_deadline, checkout.next()).await {
            Ok(outcome) => outcome.map_err(Failure::into_store_error)?,
            Err(_elapsed) => {
                drop(checkout);
                return Err(self.diagnose(deadline).await);
            }
        };
        // Through a session like every other use: a check cut off (deadline, or the caller gone)
        // leaves its connection unfit, and it is closed instead of going back. The round trip
        // asks whether the server takes writes: a node that answers but cannot write is not
        // ready for this service.
        // It also asks whether this role may use the users table as the service does: a
        // database the migrations never reached, or a grant revoked, fails every call.
        let session = Session::new(connection);
        let attrs = self.connector().target_session_attrs();
        let unavailable = |why| Err(StoreError::Unavailable(why));
        match timeout_at(deadline, session.readiness()).await {
            Ok(Ok(ready)) if !fit_for_use(attrs, ready.state) => {
                session.discard(Discard::ReadOnly);
                unavailable(Unavailability::ReadOnly)
            }
            Ok(Ok(ready)) => {
                // Only a service that writes needs the write grants.
                let needed = [
                    Some(ready.reads),
                    attrs.suits_writers().then_some(ready.writes),
                ];
                match needed
                    .into_iter()
                    .flatten()
                    .find(|granted| *granted != Some(true))
                {
                    None => Ok(()),
                    Some(None) => unavailable(Unavailability::SchemaMissing),
                    Some(Some(_)) => unavailable(Unavailability::PermissionDenied),
                }
            }
            Ok(Err(error)) => {
                let failure = from_sqlx(&error);
                session.discard_after(&failure);
                Err(failure.into_store_error())
            }
            Err(_elapsed) => {
                session.discard(Discard::Timeout);
                Err(StoreError::Unavailable(Unavailability::Timeout))
            }
        }
    }

    /// Why no connection could be had in time: every connection busy, or a server that accepts
    /// TCP but does not answer (refusals are recognised by [`Database::acquire`] already).
    async fn diagnose(&self, deadline: Instant) -> StoreError {
        if self.pool_exhausted() {
            return StoreError::Unavailable(Unavailability::PoolExhausted);
        }
        // Boxed: the connect future (TLS handshake included) is kilobytes, and every check's
        // future would otherwise carry it, once for each place a check diagnoses, copied as it
        // moves (callgrind showed it as memcpy in every healthy check).
        let probe = Box::pin(self.connector().connect());
        match timeout_at(deadline, probe).await {
            Ok(Ok(connected)) => {
                // Connects work again: a failure said before is over.
                self.inner.pool.manager().note_connected();
                // A goodbye within the check's deadline, or none: the socket closes either way.
                let _ = timeout_at(deadline, connected.connection.close()).await;
                StoreError::Unavailable(Unavailability::Timeout)
            }
            Ok(Err(error)) => {
                self.inner.pool.manager().note_connect_failure(&error);
                from_connect(&error).into_store_error()
            }
            Err(_elapsed) => StoreError::Unavailable(Unavailability::Timeout),
        }
    }

    /// Closes the pool: new acquires fail at once, idle connections close, and connections in
    /// use close when returned. Waits at most `limit` for that, so that a hung server cannot
    /// hold up a shutdown; returns whether everything closed in time.
    pub async fn close(&self, limit: Duration) -> bool {
        let pool = self.inner.pool.clone();
        // Aborted when the limit passes: nothing keeps polling a pool that will not drain.
        let mut closing = AbortOnDrop(self.inner.io.spawn(async move {
            // Idle connections say goodbye, all at once (the server logs no lost client); the
            // rest say it when they come back (`pool::give_back`).
            let mut goodbyes = tokio::task::JoinSet::new();
            for connection in pool.retain(|_, _| false).removed {
                goodbyes.spawn(pool::close_politely(connection));
            }
            pool::close(&pool);
            while goodbyes.join_next().await.is_some() {}
            while pool.status().size > 0 || pool::farewells_pending(&pool) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
        matches!(
            tokio::time::timeout(limit, &mut closing.0).await,
            Ok(Ok(()))
        )
    }
}

fn store(failure: Failure) -> StoreError {
    failure.into_store_error()
}

/// What the caller of an operation cut off on the I/O runtime (its shutdown) is told: as the
/// metric counts it, `OutcomeUnknown` if a write of it may be stored (`doubt`, set when the
/// runtime dropped it), else `error` (the operation's connection is gone).
fn cut_off_in_doubt(doubt: Option<&AtomicBool>, error: StoreError) -> StoreError {
    if doubt.is_some_and(|flag| flag.load(Ordering::Acquire)) {
        StoreError::OutcomeUnknown
    } else {
        error
    }
}

/// Ends its session when dropped.
struct EndsSession<'a>(&'a Session);

impl Drop for EndsSession<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Classifies a failed `BEGIN`/`COMMIT`, closing the connection if it is unfit.
fn fail(session: &Session, error: &sea_orm::DbErr) -> StoreError {
    let failure = from_db_err(error);
    session.discard_after(&failure);
    failure.into_store_error()
}
