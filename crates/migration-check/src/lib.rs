//! `migrate-check`: what each migration locks, and for how long, on a scratch database holding
//! users (dev tooling: nothing of the product depends on this crate).
//!
//! [`check`] starts a private PostgreSQL (the test kit's, with `pg_stat_statements`), applies a
//! list of migrations up (loading [`CheckOptions::users`] users as soon as `users` exists), down
//! (forced: the database is scratch) and up again, each through the real runner, one migration
//! at a time. Meanwhile a watcher on a connection of its own samples `pg_locks` joined with
//! `pg_stat_activity` every few milliseconds for the runner's backend. Per migration the
//! [`Report`] has its statements (from `pg_stat_statements`), its duration, and the longest time
//! it held a lock that blocks reads or writes of a table that existed before it: a mode that
//! conflicts with ROW EXCLUSIVE (what INSERT, UPDATE and DELETE take) or ACCESS SHARE (what
//! SELECT takes), that is SHARE, SHARE ROW EXCLUSIVE, EXCLUSIVE or ACCESS EXCLUSIVE, on the table
//! or one of its indexes. [`Report::failures`] names every migration that held such a lock
//! longer than the threshold ([`CheckOptions::threshold`]), going up or down (released migrations listed in
//! [`KNOWN_EXCEPTIONS`] only have their figures printed) and every one that changed the runner's
//! `lock_timeout`.

mod bench;
mod report;
mod watcher;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use counseling_config::TargetSessionAttrs;
use counseling_testkit::fixtures::BCRYPT_HASH;
use counseling_testkit::{ClusterOptions, PgCluster, TestDatabase, TestkitError};
use migration::sea_orm::DatabaseConnection;
use migration::sea_orm::sqlx::postgres::PgConnectOptions;
use migration::sea_orm::sqlx::{self, Connection, PgConnection};
use migration::{Event, MigrationFile, Observer, RunError, RunOptions, Runner};

pub use bench::{BenchFigures, bench, write_benchmarks_block};
pub use report::{HeldLock, MigrationFigures, Pass, Report, StatementFigure};

/// Migrations released before this check existed: their figures are printed, but a lock held
/// longer than the threshold does not fail them (they already ran in production); every other
/// rule holds for them too. A new migration may not be added here.
pub const KNOWN_EXCEPTIONS: [&str; 3] = [
    "m20251220_000001_create_users",
    "m20261130_000001_username_identity",
    "m20261130_000002_bcrypt_cost_bounds",
];

/// Users in the scratch database unless told otherwise.
pub const DEFAULT_USERS: u64 = 100_000;

/// The longest a migration may block reads or writes of an existing table, per user in it:
/// 20 ms at the default 100,000 users, 200 ms at 1,000,000. A lock whose time grows with the
/// table is the mistake to catch (a plain `CREATE INDEX` on `users` holds SHARE for about 50 to
/// 150 ms per 100,000 users here); a lock for a change of the catalog only lasts milliseconds
/// whatever the size.
pub const THRESHOLD_PER_USER: Duration = Duration::from_nanos(200);

/// The threshold never goes below this, however few users (scheduling noise).
pub const MIN_THRESHOLD: Duration = Duration::from_millis(10);

/// How a check runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub users: u64,
    /// `None`: [`THRESHOLD_PER_USER`] times `users`, at least [`MIN_THRESHOLD`].
    pub threshold: Option<Duration>,
    /// The runner's `lock_timeout`.
    pub lock_timeout: Duration,
    /// How often the watcher samples the locks.
    pub sample_every: Duration,
    pub known_exceptions: Vec<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            users: DEFAULT_USERS,
            threshold: None,
            lock_timeout: migration::DEFAULT_LOCK_TIMEOUT,
            sample_every: Duration::from_millis(2),
            known_exceptions: KNOWN_EXCEPTIONS
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
        }
    }
}

impl CheckOptions {
    /// The threshold in force.
    pub fn threshold(&self) -> Duration {
        self.threshold.unwrap_or_else(|| {
            let per_user =
                THRESHOLD_PER_USER.saturating_mul(u32::try_from(self.users).unwrap_or(u32::MAX));
            per_user.max(MIN_THRESHOLD)
        })
    }
}

/// Why a check could not run to its end (a failed rule is in the report, not here).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the scratch PostgreSQL: {0}")]
    Testkit(#[from] TestkitError),
    #[error("{what}: {source}")]
    Database {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{pass}: {source}")]
    Migration {
        pass: Pass,
        #[source]
        source: RunError,
    },
    #[error("the lock watcher failed: {0}")]
    Watcher(String),
}

fn db_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> CheckError {
    move |source| CheckError::Database { what, source }
}

/// A private cluster with `pg_stat_statements` (every statement, nested ones too) and one
/// scratch database on it, owned by the owner role that runs the migrations.
#[derive(Debug)]
pub struct Scratch {
    // Dropped after the database (fields drop in order): the database first, then the cluster.
    database: TestDatabase,
    _cluster: PgCluster,
}

impl Scratch {
    pub async fn start() -> Result<Self, CheckError> {
        let cluster = PgCluster::start_with(ClusterOptions {
            server_settings: vec![
                (
                    "shared_preload_libraries".to_owned(),
                    "pg_stat_statements".to_owned(),
                ),
                ("pg_stat_statements.track".to_owned(), "all".to_owned()),
                ("max_connections".to_owned(), "100".to_owned()),
            ],
            ..ClusterOptions::default()
        })
        .await?;
        let database = cluster.empty_database().await?;
        let mut admin = PgConnection::connect_with(&database.options())
            .await
            .map_err(db_error("connecting to the scratch database"))?;
        sqlx::query("CREATE EXTENSION pg_stat_statements")
            .execute(&mut admin)
            .await
            .map_err(db_error("creating pg_stat_statements"))?;
        let _ = admin.close().await;
        Ok(Self {
            database,
            _cluster: cluster,
        })
    }

    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// A connection as the superuser, for the watcher and the statistics.
    async fn admin(&self) -> Result<PgConnection, CheckError> {
        PgConnection::connect_with(&self.database.options())
            .await
            .map_err(db_error("connecting as the superuser"))
    }

    /// What the runner is given: the owner role, on one session that is never replaced, as
    /// `migrate-up` runs in production.
    fn owner(&self) -> Result<DatabaseConnection, CheckError> {
        let options: PgConnectOptions = self
            .database
            .owner_url()
            .parse()
            .map_err(db_error("the owner's URL"))?;
        let (owner, _) = migration::one_session_pool(options, TargetSessionAttrs::Any);
        Ok(owner)
    }

    /// Loads `count` users into an empty `users` table (a plain INSERT of the story's columns,
    /// as right after the table is created), then ANALYZE. Returns whether it did.
    async fn load_users_if_empty(&self, count: u64) -> Result<bool, CheckError> {
        let mut owner = PgConnection::connect(&self.database.owner_url())
            .await
            .map_err(db_error("connecting as the owner"))?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('users') IS NOT NULL")
            .fetch_one(&mut owner)
            .await
            .map_err(db_error("looking for users"))?;
        if !exists || count == 0 {
            return Ok(false);
        }
        let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT FROM users)")
            .fetch_one(&mut owner)
            .await
            .map_err(db_error("looking at users"))?;
        if !empty {
            return Ok(false);
        }
        sqlx::query(
            r"INSERT INTO users (username, password_hash)
              SELECT format('\dom%s\user%s', i % 100, i), $1 FROM generate_series(1, $2::bigint) AS i",
        )
        // A valid cost-12 hash for every loaded user (hashing a password each would take hours).
        .bind(BCRYPT_HASH)
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .execute(&mut owner)
        .await
        .map_err(db_error("loading users"))?;
        sqlx::query("ANALYZE users")
            .execute(&mut owner)
            .await
            .map_err(db_error("analyzing users"))?;
        let _ = owner.close().await;
        Ok(true)
    }
}

/// Up, down (forced), up again, on a fresh scratch database; see the crate's documentation.
pub async fn check(
    migrations: &dyn Fn() -> Vec<MigrationFile>,
    options: &CheckOptions,
) -> Result<Report, CheckError> {
    let scratch = Scratch::start().await?;
    let mut report = Report::new(options);
    for pass in [Pass::Up, Pass::Down, Pass::UpAgain] {
        let figures = run_pass(&scratch, migrations, pass, options).await?;
        report.migrations.extend(figures);
    }
    Ok(report)
}

/// One pass, watched; returns each migration's figures.
pub(crate) async fn run_pass(
    scratch: &Scratch,
    migrations: &dyn Fn() -> Vec<MigrationFile>,
    pass: Pass,
    options: &CheckOptions,
) -> Result<Vec<MigrationFigures>, CheckError> {
    let recorder = Arc::new(Recorder::new(scratch.admin().await?, pass));
    let watcher = watcher::Watcher::spawn(
        scratch.admin().await?,
        Arc::clone(&recorder.shared),
        options.sample_every,
    );
    let owner = scratch.owner()?;
    let runner = || {
        Runner::new(migrations())
            .with_options(RunOptions {
                lock_timeout: options.lock_timeout,
                force: pass == Pass::Down,
                ..RunOptions::default()
            })
            .with_observer(recorder.clone())
    };
    let failed = |source| CheckError::Migration { pass, source };
    let outcome = async {
        match pass {
            Pass::Down => {
                runner().down(&owner, u32::MAX).await.map_err(failed)?;
            }
            Pass::Up | Pass::UpAgain => loop {
                scratch.load_users_if_empty(options.users).await?;
                if runner()
                    .up(&owner, Some(1))
                    .await
                    .map_err(failed)?
                    .is_empty()
                {
                    break;
                }
            },
        }
        Ok::<(), CheckError>(())
    }
    .await;
    let watched = watcher.stop().await;
    let _ = owner.close().await;
    outcome?;
    watched?;
    Ok(recorder.take_figures())
}

/// What the watcher and the recorder share: the migration being watched, if any.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Changes at every start and end, so a sample taken for one migration is never counted
    /// for the next.
    pub(crate) generation: u64,
    pub(crate) current: Option<watcher::Watching>,
}

/// The runner's observer: at each migration's start, the tables that exist and a fresh
/// `pg_stat_statements`; at its end, its statements and the watcher's longest lock.
struct Recorder {
    admin: tokio::sync::Mutex<PgConnection>,
    shared: Arc<Mutex<Shared>>,
    pass: Pass,
    figures: Mutex<Vec<MigrationFigures>>,
    /// The runner's backend's role, whose statements are the migration's.
    role: Mutex<Option<i64>>,
}

impl Recorder {
    fn new(admin: PgConnection, pass: Pass) -> Self {
        Self {
            admin: tokio::sync::Mutex::new(admin),
            shared: Arc::new(Mutex::new(Shared::default())),
            pass,
            figures: Mutex::new(Vec::new()),
            role: Mutex::new(None),
        }
    }

    fn take_figures(&self) -> Vec<MigrationFigures> {
        std::mem::take(&mut *lock(&self.figures))
    }

    /// A migration starts: its figures begin, watched from now on if the statistics queries
    /// work (if not, its figures say so, and the report fails it).
    async fn starting(&self, name: &str, backend_pid: i32) {
        let watching = self.watch(backend_pid).await;
        *lock(&self.role) = watching.as_ref().ok().and_then(|(_, role)| *role);
        lock(&self.figures).push(MigrationFigures {
            pass: self.pass,
            name: name.to_owned(),
            duration: Duration::ZERO,
            longest_lock: None,
            lock_timeout_ms: None,
            statements: Vec::new(),
            watched: watching.is_ok(),
        });
        let mut shared = lock(&self.shared);
        shared.generation += 1;
        shared.current = watching.ok().map(|(watching, _)| watching);
    }

    /// The tables to watch and the run's role, with the statement statistics reset.
    async fn watch(
        &self,
        backend_pid: i32,
    ) -> Result<(watcher::Watching, Option<i64>), sqlx::Error> {
        let mut admin = self.admin.lock().await;
        let tables: Vec<(i64, String)> = sqlx::query_as(
            "SELECT oid::int8, relname::text FROM pg_class WHERE relkind IN ('r', 'p') \
             AND relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema') \
             AND relnamespace::regnamespace::text NOT LIKE 'pg_toast%'",
        )
        .fetch_all(&mut *admin)
        .await?;
        let role: Option<i64> =
            sqlx::query_scalar("SELECT usesysid::int8 FROM pg_stat_activity WHERE pid = $1")
                .bind(backend_pid)
                .fetch_optional(&mut *admin)
                .await?;
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut *admin)
            .await?;
        let watching = watcher::Watching::new(
            backend_pid,
            tables
                .into_iter()
                .filter_map(|(oid, name)| Some((u32::try_from(oid).ok()?, name)))
                .collect::<HashMap<_, _>>(),
        );
        Ok((watching, role))
    }

    async fn ran(&self, lock_timeout_ms: u64) -> Result<(), sqlx::Error> {
        let role = *lock(&self.role);
        let mut admin = self.admin.lock().await;
        let rows: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT query, calls, total_exec_time FROM pg_stat_statements \
             WHERE userid::int8 = $1 \
               AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time DESC",
        )
        .bind(role)
        .fetch_all(&mut *admin)
        .await?;
        if let Some(figures) = lock(&self.figures).last_mut() {
            figures.lock_timeout_ms = Some(lock_timeout_ms);
            figures.statements = rows
                .into_iter()
                // The runner's own look at lock_timeout, after the migration's code.
                .filter(|(text, _, _)| text != migration::SETTING_QUERY)
                .map(|(text, calls, total_ms)| StatementFigure {
                    text,
                    calls,
                    total: Duration::from_secs_f64(total_ms.max(0.0) / 1000.0),
                })
                .collect();
        }
        Ok(())
    }

    fn done(&self, elapsed: Duration) {
        let watched = {
            let mut shared = lock(&self.shared);
            shared.generation += 1;
            shared.current.take()
        };
        if let Some(figures) = lock(&self.figures).last_mut() {
            figures.duration = elapsed;
            figures.longest_lock = watched.and_then(|mut watching| watching.finish());
        }
    }
}

#[migration::sea_orm::prelude::async_trait::async_trait]
impl Observer for Recorder {
    async fn event(&self, event: &Event<'_>) {
        // An observer cannot fail the run: a statistics query that fails leaves its figure
        // empty (or the migration unwatched), which the report shows and fails.
        match event {
            Event::Starting {
                name, backend_pid, ..
            } => self.starting(name, *backend_pid).await,
            Event::Ran {
                lock_timeout_ms, ..
            } => {
                let _ = self.ran(*lock_timeout_ms).await;
            }
            Event::Done { elapsed, .. } => self.done(*elapsed),
            Event::Adopted { .. } | Event::WaitingForLock { .. } => {}
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data is still
/// what it was, so go on with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
