use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use counseling_domain::Unavailability;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sea_orm::sqlx::{self, Connection};
use sea_orm::{DatabaseConnection, SqlxPostgresConnector};
use tokio::runtime::{Handle, Runtime};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::error_mapping::from_sqlx;
use crate::{DatabaseSettings, RepositoryError, SettingsError};

/// Part of a ping's budget kept back to find out why the pool could not hand out a connection.
const DIAGNOSIS_BUDGET: Duration = Duration::from_millis(100);

/// The runtime that owns every pooled connection's socket and the pool's maintenance task.
///
/// A connection's socket belongs to the tokio runtime it was opened on. actix-web runs one
/// single-threaded runtime per worker, and a shared pool would hand a connection opened on
/// worker A to worker B; once A stops (an idle worker stops first during a graceful shutdown)
/// that connection is dead, and B's in-flight request fails. So all database I/O runs here, on a
/// runtime that lives as long as the process.
fn io_runtime() -> Result<&'static Handle, SettingsError> {
    static IO: OnceLock<Result<Runtime, String>> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("database-io")
            .enable_all()
            .build()
            .map_err(|error| error.to_string())
    })
    .as_ref()
    .map(Runtime::handle)
    .map_err(|error| SettingsError::Runtime(error.clone()))
}

/// The application's pool of PostgreSQL connections, shared by every repository and the health
/// probe. Cloning is cheap (the pool is reference-counted).
#[derive(Debug, Clone)]
pub struct Database {
    pool: PgPool,
    connection: DatabaseConnection,
    connect_options: PgConnectOptions,
    io: Handle,
}

impl Database {
    /// Builds the pool without connecting: the service can start, and report itself unhealthy,
    /// while the database is down, and connects as soon as it is back.
    ///
    /// Pre-ping: the seed's `pool_pre_ping` checks every connection on checkout, which costs one
    /// round trip per query on a busy pool. A connection that was in use moments ago is almost
    /// surely alive, while one that sat idle may have been cut by a restart, a failover or a
    /// firewall. So only connections idle for `ping_if_idle_for` or longer are pinged; the rare
    /// dead connection that slips through fails its query with `Unavailable` and is discarded.
    pub fn connect_lazy(settings: &DatabaseSettings) -> Result<Self, SettingsError> {
        let connect_options = settings.connect_options()?;
        let io = io_runtime()?.clone();
        // The pool spawns its maintenance task on the current runtime: make that the I/O one.
        let _io_context = io.enter();
        let ping_if_idle_for = settings.ping_if_idle_for;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .max_lifetime(settings.max_lifetime)
            .test_before_acquire(false)
            .before_acquire(move |connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= ping_if_idle_for {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(connect_options.clone());
        let connection = SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone());
        Ok(Self {
            pool,
            connection,
            connect_options,
            io,
        })
    }

    /// Runs database work on the I/O runtime (see [`io_runtime`]) and waits for its result,
    /// keeping the caller's tracing span. Every adapter method goes through here.
    pub async fn run<T, F, Fut>(&self, work: F) -> Result<T, RepositoryError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, RepositoryError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = work(self.connection.clone()).in_current_span();
        self.io.spawn(task).await.unwrap_or_else(|_| {
            Err(RepositoryError::Unexpected(
                "a database task was aborted".into(),
            ))
        })
    }

    /// The SeaORM handle over the pool.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    /// The underlying sqlx pool, for reading its configuration and state.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs a task on the database runtime without waiting for it.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.io.spawn(task.in_current_span()));
    }

    /// Checks that the database answers a round trip, within `timeout` whatever happens: refused
    /// connections, a server stopped mid-query, a frozen server or network, an exhausted pool.
    ///
    /// sqlx has no client-side query timeout, and a frozen server never answers, so the whole
    /// check runs under a deadline. A connection whose ping failed or was cut off is detached
    /// from the pool rather than returned to it, so the next caller gets a fresh one.
    pub async fn ping(&self, timeout: Duration) -> Result<(), RepositoryError> {
        let database = self.clone();
        let deadline = Instant::now() + timeout;
        self.run(move |_| async move { database.ping_until(deadline).await })
            .await
    }

    /// [`Database::ping`] without the hop to the I/O runtime, for callers already on it.
    pub(crate) async fn ping_until(&self, deadline: Instant) -> Result<(), RepositoryError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let acquire_deadline = deadline - DIAGNOSIS_BUDGET.min(timeout / 10);
        let mut connection = match timeout_at(acquire_deadline, self.pool.acquire()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(from_sqlx(&error)),
            Err(_elapsed) => return Err(self.diagnose(deadline).await),
        };
        match timeout_at(deadline, connection.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                drop(connection.detach());
                Err(from_sqlx(&error))
            }
            Err(_elapsed) => {
                drop(connection.detach());
                Err(RepositoryError::Unavailable(Unavailability::Timeout))
            }
        }
    }

    /// Why no connection could be had in time: every connection busy, nothing listening, or a
    /// server that accepts TCP but does not answer.
    async fn diagnose(&self, deadline: Instant) -> RepositoryError {
        let max = self.pool.options().get_max_connections();
        if self.pool.size() >= max && self.pool.num_idle() == 0 {
            return RepositoryError::Unavailable(Unavailability::PoolExhausted);
        }
        let probe = sqlx::PgConnection::connect_with(&self.connect_options);
        match timeout_at(deadline, probe).await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                RepositoryError::Unavailable(Unavailability::Timeout)
            }
            Ok(Err(error)) => from_sqlx(&error),
            Err(_elapsed) => RepositoryError::Unavailable(Unavailability::Timeout),
        }
    }

    /// Closes the pool: new acquires fail at once, idle connections close, and connections in
    /// use close when returned. Waits at most `limit` for that, so that a hung server cannot
    /// hold up a shutdown; returns whether everything closed in time.
    pub async fn close(&self, limit: Duration) -> bool {
        let pool = self.pool.clone();
        let closing = self.io.spawn(async move { pool.close().await });
        tokio::time::timeout(limit, closing).await.is_ok()
    }
}
