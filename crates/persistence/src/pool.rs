//! The pool of PostgreSQL connections: deadpool's generic pool over sqlx's `PgConnection`.
//!
//! Why not sqlx's own pool: it pings every connection it takes back before another caller may
//! have it (sqlx 0.9 `PoolConnection::return_to_pool`), so each repository call cost two round
//! trips instead of one (measured: 0.31× pgbench's rate); and it retries a refused connect until
//! the acquire timeout, so a stopped server answered after the whole timeout instead of at once.
//! Here a connection goes back as it is: [`crate::session::Session`] already knows whether it is
//! fit (no statement cut off, no transaction left open) and closes it otherwise. A connect that
//! fails, fails the acquire at once; the caller's deadline bounds everything else.
//!
//! Connections are opened by `counseling_config::Connector` (libpq's host lists and
//! `target_session_attrs`), and an idle one gets a role check before use: a connection that
//! still answers but reaches a node that can no longer write is closed, not handed out.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use counseling_config::{ConnectError, Connector, SessionState, TargetSessionAttrs, session_state};
use deadpool::managed::{
    Manager, Metrics, Object, Pool, RecycleError, RecycleResult, Timeouts, WeakPool,
};
use sea_orm::sqlx::Connection;
use sea_orm::sqlx::postgres::PgConnection;

use crate::database_metrics::{DatabaseMetrics, Discard};

/// Opens connections and decides, at checkout, whether an idle one may be used as is.
pub(crate) struct ConnectionManager {
    connector: Connector,
    metrics: Arc<DatabaseMetrics>,
    /// A connection not checked out for this long gets a role check first (pre-ping).
    ping_if_idle_for: Duration,
    /// A connection older than this is closed instead of used.
    max_lifetime: Duration,
    /// When a connection of this pool last broke (nanoseconds after `epoch`, 0 for never): a
    /// server restart or a failover breaks every idle connection at once, so each one idle since
    /// then is pinged before use, instead of failing one caller after another.
    last_breakage: AtomicU64,
    epoch: Instant,
    /// The pool this manages (set once built): when a check goes unanswered, its other idle
    /// connections are taken for dead too.
    pool: OnceLock<WeakPool<ConnectionManager>>,
    /// Connections open outside the pool's count: goodbyes under way for those that came back
    /// after the pool was closed, and the keeper's spares, from their connect until they are in
    /// the pool or closed. Closing the pool waits for them too.
    farewells: Arc<AtomicUsize>,
    /// The runtime the pool was built on (the database's I/O), where those goodbyes run.
    io: tokio::runtime::Handle,
    /// Connections the keeper opened, on their way into the pool: [`Manager::create`] hands
    /// them out before it opens any.
    spares: Mutex<Vec<Spare>>,
    /// Woken when the pool is closed (see [`close`]): the keeper stops connecting.
    closed: tokio::sync::Notify,
    /// Why the keeper's last connect failed (`None`: it did not): warned once per change, so
    /// that connects failing while old connections still serve (a password rotated wrongly, a
    /// certificate expired) are seen before the last old connection goes.
    keeper_failure: Mutex<Option<String>>,
}

/// A connection the keeper opened, and when.
struct Spare {
    connection: PgConnection,
    opened: Instant,
}

tokio::task_local! {
    /// Set while the keeper hands its spares to the pool: a `create` there takes a spare, and
    /// never connects while the keeper holds idle connections.
    static HANDING_OVER: ();
}

/// Whether a session in `state` may serve this service: it must be able to write, unless
/// `target_session_attrs` asks for a read-only kind of session.
pub(crate) fn fit_for_use(attrs: TargetSessionAttrs, state: SessionState) -> bool {
    match attrs {
        TargetSessionAttrs::Any | TargetSessionAttrs::ReadWrite => !state.read_only,
        TargetSessionAttrs::Primary => !state.read_only && !state.in_recovery,
        TargetSessionAttrs::ReadOnly | TargetSessionAttrs::Standby => attrs.accepts(state),
        TargetSessionAttrs::PreferStandby => true,
    }
}

impl ConnectionManager {
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    pub(crate) fn metrics(&self) -> &DatabaseMetrics {
        &self.metrics
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<Spare>> {
        // A panic while pushing or popping leaves a whole Vec: go on with it.
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `spare` if it is as fit as an idle connection would be: one opened before the last
    /// breakage is closed unchecked, and one that waited as long as the check before use is
    /// checked (deadpool takes what `create` returns for new, and never checks it).
    async fn fit_spare(&self, spare: Spare) -> Option<PgConnection> {
        let Spare {
            mut connection,
            opened,
        } = spare;
        if self.idle_since_a_breakage(opened) {
            self.metrics.discarded(Discard::Broken);
            // It may still answer: best effort, as for any goodbye.
            drop(self.io.spawn(close_politely(connection)));
            return None;
        }
        if opened.elapsed() >= self.ping_if_idle_for && self.check(&mut connection).await.is_err() {
            return None;
        }
        Some(connection)
    }

    /// The check before use: one round trip (`session_state`), in place of a ping, that also
    /// finds a connection that answers but reaches a node that can no longer write. `Err` says
    /// why `connection` must not be used, counted in the metrics.
    async fn check(&self, connection: &mut PgConnection) -> RecycleResult<ConnectError> {
        let Ok(checked) = tokio::time::timeout(CHECK_LIMIT, session_state(connection)).await else {
            self.metrics.discarded(Discard::Timeout);
            // Whatever cut this one off while idle (a NAT's idle timeout, a failover without a
            // goodbye) cut the others idle beside it too: they go unchecked, so that a caller
            // waits out the bound once, not once per dead connection.
            self.discard_idle();
            return Err(RecycleError::message(
                "it did not answer the check before use",
            ));
        };
        match checked {
            Ok(state) if fit_for_use(self.connector.target_session_attrs(), state) => Ok(()),
            Ok(_) => {
                self.metrics.discarded(Discard::ReadOnly);
                // What made this one read-only (a failover) has likely reached the others.
                self.note_breakage();
                Err(RecycleError::message(
                    "its server can no longer take writes",
                ))
            }
            Err(error) => {
                self.metrics.discarded(Discard::Broken);
                Err(RecycleError::Backend(ConnectError::Driver(error)))
            }
        }
    }

    /// Logs the keeper's connect failure (or a caller's, for a file of ours it cannot use) when
    /// it differs from the last one, and the recovery (the keeper's connect, or a caller's). The
    /// message is the connect error's (a server's words or a file's name, never the password).
    fn note_keeper_outcome(&self, failure: Option<String>) {
        let mut last = self
            .keeper_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *last == failure {
            return;
        }
        match &failure {
            Some(error) => tracing::warn!(
                %error,
                "the pool could not open a connection; its open ones still serve until they close"
            ),
            None => tracing::info!("the pool opens connections again"),
        }
        *last = failure;
    }

    /// A caller's connect failure: a password or TLS file the service cannot use fails every
    /// connect alike, so it is said once per change, as the keeper's failures are, not once per
    /// caller (each health probe). The message names the variable and the file, never what it
    /// holds. Other failures are the callers' to report (the health check's reason).
    pub(crate) fn note_connect_failure(&self, error: &ConnectError) {
        if matches!(
            error,
            ConnectError::PasswordFile(_) | ConnectError::TlsFile(_)
        ) {
            self.note_keeper_outcome(Some(error.to_string()));
        }
    }

    /// A caller's connect that worked: a failure said before is over.
    pub(crate) fn note_connected(&self) {
        self.note_keeper_outcome(None);
    }

    /// Records that a connection broke (I/O error, connection lost, read-only node) just now.
    pub(crate) fn note_breakage(&self) {
        let since_epoch = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_breakage
            .fetch_max(since_epoch.max(1), Ordering::Relaxed);
    }

    /// Whether a connection last checked out at `checked_out` has been idle since a breakage.
    fn idle_since_a_breakage(&self, checked_out: Instant) -> bool {
        let breakage = self.last_breakage.load(Ordering::Relaxed);
        breakage != 0 && self.epoch + Duration::from_nanos(breakage) >= checked_out
    }

    /// Closes every connection idle in the pool now, and the keeper's spares, unchecked (those
    /// in use are left: each proves itself, or fails, by itself).
    pub(crate) fn discard_idle(&self) {
        let spares = std::mem::take(&mut *self.spares());
        self.farewells.fetch_sub(spares.len(), Ordering::SeqCst);
        let Some(pool) = self.pool.get().and_then(WeakPool::upgrade) else {
            return;
        };
        let idle = pool.retain(|_, _| false).removed.len();
        for _dead in 0..idle + spares.len() {
            self.metrics.discarded(Discard::Broken);
        }
    }
}

/// How long the check before use may take. It is one trivial round trip; an idle connection that
/// does not answer it in this time is taken for dead: its server process hung, or a firewall or
/// NAT dropped it while idle, which nothing else notices (the driver sets no TCP keepalives).
/// Without a bound, every caller that drew such a connection waited out its whole deadline.
pub(crate) const CHECK_LIMIT: Duration = Duration::from_millis(500);

impl Manager for ConnectionManager {
    type Type = PgConnection;
    type Error = ConnectError;

    async fn create(&self) -> Result<PgConnection, ConnectError> {
        loop {
            let spare = self.spares().pop();
            let Some(spare) = spare else { break };
            // Counted outside the pool until decided: in the pool's count once returned, or
            // dropped (with this future, if it is cancelled meanwhile).
            let _outside = Outside(&self.farewells);
            if let Some(connection) = self.fit_spare(spare).await {
                return Ok(connection);
            }
        }
        // A caller took the keeper's last spare: the keeper stops handing over.
        if HANDING_OVER.try_with(|()| ()).is_ok() {
            return Err(ConnectError::TimedOut);
        }
        // Boxed: the connect future (TLS handshake included) is kilobytes, and it would otherwise
        // be part of every checkout's future, copied at each step of every repository call.
        let connected = match Box::pin(self.connector.connect()).await {
            Ok(connected) => connected,
            Err(error) => {
                self.note_connect_failure(&error);
                return Err(error);
            }
        };
        // A caller's connect that works ends a failure the keeper warned of, as the keeper's
        // own would: else the same failure, come back later, would go unsaid.
        self.note_connected();
        Ok(connected.connection)
    }

    /// `metrics.last_used()` counts from the last checkout, not the last return: a connection
    /// held for long looks idle for long and is checked, never the other way round.
    async fn recycle(
        &self,
        connection: &mut PgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<ConnectError> {
        if metrics.age() >= self.max_lifetime {
            self.metrics.discarded(Discard::Lifetime);
            return Err(RecycleError::message("past its maximum lifetime"));
        }
        let checked_out = metrics.recycled.unwrap_or(metrics.created);
        if metrics.last_used() >= self.ping_if_idle_for || self.idle_since_a_breakage(checked_out) {
            self.check(connection).await?;
        }
        Ok(())
    }
}

/// One connection counted in `farewells` (outside the pool's count) while this lives.
struct Outside<'a>(&'a AtomicUsize);

impl<'a> Outside<'a> {
    fn add(farewells: &'a AtomicUsize) -> Self {
        farewells.fetch_add(1, Ordering::SeqCst);
        Self(farewells)
    }

    /// The connection stays counted: it is a spare now, and whoever takes it ends the count.
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Outside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) type ConnectionPool = Pool<ConnectionManager>;
pub(crate) type PooledConnection = Object<ConnectionManager>;

/// What the pool is asked to keep.
pub(crate) struct PoolBounds {
    pub max: u32,
    pub min: u32,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub ping_if_idle_for: Duration,
    pub acquire_timeout: Duration,
}

/// How often the keeper looks at the pool: closes expired idle connections, opens up to `min`.
const KEEPER_PERIOD: Duration = Duration::from_secs(1);

/// How long closing one connection politely (a `Terminate` message) may take.
const POLITE_CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Builds the pool (no connection is opened here) and starts its keeper on the current runtime;
/// the keeper stops when the pool is closed or dropped.
pub(crate) fn build(
    connector: Connector,
    metrics: Arc<DatabaseMetrics>,
    bounds: &PoolBounds,
) -> ConnectionPool {
    let manager = ConnectionManager {
        connector,
        metrics,
        ping_if_idle_for: bounds.ping_if_idle_for,
        max_lifetime: bounds.max_lifetime,
        last_breakage: AtomicU64::new(0),
        epoch: Instant::now(),
        pool: OnceLock::new(),
        farewells: Arc::new(AtomicUsize::new(0)),
        io: tokio::runtime::Handle::current(),
        spares: Mutex::new(Vec::new()),
        closed: tokio::sync::Notify::new(),
        keeper_failure: Mutex::new(None),
    };
    let max = usize::try_from(bounds.max).unwrap_or(usize::MAX);
    let pool = match Pool::builder(manager)
        .max_size(max)
        // The most recently returned connection first: the others stay idle long enough for
        // the keeper to close them when the load drops.
        .queue_mode(deadpool::managed::QueueMode::Lifo)
        .build()
    {
        Ok(pool) => pool,
        // Only a timeout without a runtime is refused by `build`, and we set no timeouts.
        Err(error) => unreachable!("a pool without timeouts always builds: {error}"),
    };
    // Set once, here: it cannot be set already.
    let _ = pool.manager().pool.set(pool.weak());
    tokio::spawn(keep(
        pool.weak(),
        bounds.min,
        bounds.idle_timeout,
        bounds.max_lifetime,
        bounds.acquire_timeout,
    ));
    pool
}

/// The pool's upkeep, until the pool is closed or dropped.
async fn keep(
    pool: WeakPool<ConnectionManager>,
    min: u32,
    idle_timeout: Duration,
    max_lifetime: Duration,
    acquire_timeout: Duration,
) {
    let min = usize::try_from(min).unwrap_or(usize::MAX);
    let mut ticks = tokio::time::interval(KEEPER_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if pool.is_closed() {
            return;
        }
        // Idle connections past the idle timeout (while more than `min` are open) or past their
        // lifetime (always) are closed.
        let mut closable = pool.status().size.saturating_sub(min);
        let discarded = pool.manager().metrics.clone();
        let expired = pool.retain(|_, metrics| {
            if metrics.age() >= max_lifetime {
                discarded.discarded(Discard::Lifetime);
                return false;
            }
            if closable > 0 && metrics.last_used() >= idle_timeout {
                closable -= 1;
                discarded.discarded(Discard::Idle);
                return false;
            }
            true
        });
        for connection in expired.removed {
            close_politely(connection).await;
        }
        fill_to(&pool, min, acquire_timeout).await;
    }
}

/// Opens connections until `min` are open. They are opened first, each within the acquire
/// timeout and holding nothing of the pool, so callers keep every idle connection while a
/// connect is slow. Then they are handed over: deadpool adds a connection only when asked for
/// one with none idle, so every idle connection is checked out (and checked, if due) and given
/// back at once, and the new ones come from `create` as spares. It never waits for a busy pool
/// (callers come first), and a failure waits for the next tick; callers see it themselves.
async fn fill_to(pool: &ConnectionPool, min: usize, acquire_timeout: Duration) {
    let manager = pool.manager();
    let wanted = min.min(pool.status().max_size);
    loop {
        // Enabled before the pool is looked at, so that a close in between is not missed.
        let mut closed = std::pin::pin!(manager.closed.notified());
        closed.as_mut().enable();
        // Callers open connections too (`waiting` counts those connecting): counted again
        // before each connect, so that the keeper adds no more than the minimum asks for.
        let status = pool.status();
        if pool.is_closed() || status.size + status.waiting + manager.spares().len() >= wanted {
            break;
        }
        let outside = Outside::add(&manager.farewells);
        let opened = Instant::now();
        let connect = tokio::time::timeout(acquire_timeout, manager.connector.connect());
        // A close does not wait out a connect to a server that does not answer.
        let connected = tokio::select! {
            connected = connect => connected,
            () = &mut closed => break,
        };
        match connected {
            Ok(Ok(connected)) => {
                manager.spares().push(Spare {
                    connection: connected.connection,
                    opened,
                });
                outside.keep();
                manager.note_keeper_outcome(None);
            }
            Ok(Err(error)) => {
                manager.note_keeper_outcome(Some(error.to_string()));
                break;
            }
            Err(_elapsed) => {
                manager.note_keeper_outcome(Some(format!(
                    "no connection within the acquire timeout ({} ms)",
                    acquire_timeout.as_millis()
                )));
                break;
            }
        }
    }
    let at_once = Timeouts {
        wait: Some(Duration::ZERO),
        create: None,
        recycle: None,
    };
    let mut held = Vec::new();
    HANDING_OVER
        .scope((), async {
            while !manager.spares().is_empty() && pool.status().size < wanted {
                match pool.timeout_get(&at_once).await {
                    Ok(connection) => held.push(connection),
                    Err(_) => break,
                }
            }
        })
        .await;
    // The pool may have been closed meanwhile (a shutdown): then these say goodbye.
    held.into_iter().for_each(give_back);
    // Callers took the room meanwhile, or the pool closed: the spares left over are closed.
    let left_over = std::mem::take(&mut *manager.spares());
    for spare in left_over {
        let _outside = Outside(&manager.farewells);
        close_politely(spare.connection).await;
    }
}

/// Hands `connection` back to its pool; once the pool is closed (which would drop it, and the
/// server would log a lost client), closes it politely instead, on the pool's runtime, counted
/// in [`farewells_pending`] until done.
pub(crate) fn give_back(connection: PooledConnection) {
    let Some(pool) = PooledConnection::pool(&connection) else {
        return;
    };
    if !pool.is_closed() {
        return drop(connection);
    }
    let manager = pool.manager();
    let farewells = Arc::clone(&manager.farewells);
    // Counted before `take` leaves the pool's size: a closing pool is never seen empty early.
    farewells.fetch_add(1, Ordering::SeqCst);
    let raw = PooledConnection::take(connection);
    drop(manager.io.spawn(async move {
        close_politely(raw).await;
        farewells.fetch_sub(1, Ordering::SeqCst);
    }));
}

/// Closes `pool` (new checkouts fail, connections given back are closed) and stops a connect
/// of the keeper's under way.
pub(crate) fn close(pool: &ConnectionPool) {
    pool.close();
    pool.manager().closed.notify_waiters();
}

/// Connections open outside `pool`'s count: goodbyes still under way for connections given back
/// after it was closed, and the keeper's spares.
pub(crate) fn farewells_pending(pool: &ConnectionPool) -> usize {
    pool.manager().farewells.load(Ordering::SeqCst)
}

/// Closes a connection with PostgreSQL's `Terminate` message, or just drops it (the server sees
/// the socket close) when the server does not take it in time.
pub(crate) async fn close_politely(connection: PgConnection) {
    let _ = tokio::time::timeout(POLITE_CLOSE_LIMIT, connection.close()).await;
}
