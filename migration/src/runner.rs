//! Our own runner over sea-orm-migration's [`MigrationTrait`], instead of `Migrator::up`.
//!
//! One run holds one connection of its own for its whole length, and on it a session-level
//! advisory lock ([`MIGRATION_LOCK_KEY`]): concurrent runs (replicas, deploy jobs) wait for it
//! and then find nothing to do; the lock goes when the connection closes, even if the process
//! dies. Then each migration runs by itself:
//! * in a transaction of its own (the default), with its own `SET LOCAL lock_timeout`, its
//!   history row written in that same transaction: its locks end when it does, and it is applied
//!   completely or not at all;
//! * or, when it says so ([`MigrationTrait::use_transaction`] returning `Some(false)`, for
//!   `CREATE INDEX CONCURRENTLY`), on the session itself with a session `lock_timeout`. Its
//!   history row is written, marked `apply_started_at` and committed, before its code runs, and
//!   completed once it succeeded: one cut off half-way reads as `applying`, `down` rolls it back
//!   before any other and `up` runs it again. So its `up` must be safe to run again after it was
//!   cut off half-way, and its `down` safe both then and after a `down` cut off half-way (it may
//!   open transactions of its own with `manager.begin()`, but must not use
//!   `manager.get_connection()` while one is open: the run has one connection).
//!
//! An [`Observer`] sees each migration start and end (the lock-aware check uses it).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use counseling_config::{TargetSessionAttrs, session_state};
use sea_orm_migration::sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseConnectionType, DatabaseTransaction, DbBackend,
    DbErr, IsolationLevel, RuntimeErr, SqlxPostgresConnector, Statement, TransactionTrait,
};
use sea_orm_migration::{MigrationTrait, SchemaManager, async_trait};

use crate::checksum::Checksum;

/// How long a migration waits for a table's lock unless told otherwise (`MIGRATION_LOCK_TIMEOUT_MS`
/// in the CLI): long enough for the service's short transactions to finish, short enough that
/// the requests queued behind the migration's lock request wait no longer than a slow request,
/// and well below the service's own `lock_timeout` ([`counseling_config::SERVICE_LOCK_TIMEOUT`]),
/// which would otherwise fail them first.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest `lock_timeout` PostgreSQL accepts, in milliseconds (an `int`).
pub const MAX_LOCK_TIMEOUT_MS: u64 = i32::MAX as u64;

/// Key of the advisory lock held while migrations run ("counsel" in ASCII). Any process that
/// changes the schema through this crate takes it first.
pub const MIGRATION_LOCK_KEY: i64 = 0x0063_6f75_6e73_656c;

/// The setting that lets [`crate::refuse_to_drop_rows`] drop rows (transaction-local, or for the
/// session of a migration that runs without a transaction).
pub(crate) const FORCE_SETTING: &str = "counseling.migration_force";

/// The server settings [`set_run_settings`] sets for every migration besides `lock_timeout`
/// (which `MIGRATION_LOCK_TIMEOUT_MS` sets): a value the session brought (the URL's `options`,
/// `PGOPTIONS`) would be overridden, so the CLI refuses one there. Not
/// `client_connection_check_interval`, which the README suggests for the service's URL (the
/// migrations' too, without `DATABASE_OWNER_URL`): one the session brought is kept.
pub const RUN_SETTINGS: [&str; 5] = [
    FORCE_SETTING,
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "statement_timeout",
    "transaction_timeout",
];

/// The table sea-orm-migration keeps its history in; we keep ours there too.
pub const HISTORY_TABLE: &str = "seaql_migrations";

/// How one run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// `lock_timeout` of every migration; at least 1 ms, at most [`MAX_LOCK_TIMEOUT_MS`].
    pub lock_timeout: Duration,
    /// Lets a down drop tables that still hold rows (`migration down --force`).
    pub force: bool,
    /// `idle_in_transaction_session_timeout` of every migration (see `set_run_settings`).
    pub idle_in_transaction_timeout: Duration,
}

/// How long a transaction of a run may sit idle before the server takes its client for stalled
/// and ends it: the runner sends a migration's statements one after the other, but a migration
/// may work on the client between them (`m20261130_000001` checks every name in Rust, seconds
/// at a million users), and a busy machine may deschedule the client for a moment.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            force: false,
            idle_in_transaction_timeout: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
        }
    }
}

impl RunOptions {
    /// The `lock_timeout` a run sets, in milliseconds (at least 1, at most
    /// [`MAX_LOCK_TIMEOUT_MS`]).
    pub fn lock_timeout_ms(&self) -> u64 {
        u64::try_from(self.lock_timeout.as_millis())
            .unwrap_or(MAX_LOCK_TIMEOUT_MS)
            .clamp(1, MAX_LOCK_TIMEOUT_MS)
    }

    /// The `idle_in_transaction_session_timeout` a run sets, in milliseconds (at least 1, at
    /// most [`MAX_LOCK_TIMEOUT_MS`], PostgreSQL's bound for both).
    pub fn idle_in_transaction_timeout_ms(&self) -> u64 {
        u64::try_from(self.idle_in_transaction_timeout.as_millis())
            .unwrap_or(MAX_LOCK_TIMEOUT_MS)
            .clamp(1, MAX_LOCK_TIMEOUT_MS)
    }
}

/// One migration this binary knows: its definition and the source file it was written in.
pub struct MigrationFile {
    definition: Box<dyn MigrationTrait>,
    file: Cow<'static, str>,
    source: Cow<'static, str>,
    mended_from: &'static [&'static str],
}

impl std::fmt::Debug for MigrationFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationFile")
            .field("name", &self.name())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl MigrationFile {
    /// `file` is the path shown to people (`migration/src/<name>.rs`), `source` its text.
    pub fn new(
        definition: Box<dyn MigrationTrait>,
        file: impl Into<Cow<'static, str>>,
        source: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            definition,
            file: file.into(),
            source: source.into(),
            mended_from: &[],
        }
    }

    /// Checksums this file had before it was mended: changes to what only a failing run does,
    /// so that a database that finished the migration under one of them is as the file says
    /// now. Such a database counts it applied, and keeps the checksum it recorded: the binary of
    /// the release before, which knows only that one, still runs there. Any other edit is
    /// drift. A mend is listed in review, beside the edit itself.
    pub fn mended_from(self, checksums: &'static [&'static str]) -> Self {
        Self {
            mended_from: checksums,
            ..self
        }
    }

    /// The checksums the file was mended from.
    pub fn mended(&self) -> &'static [&'static str] {
        self.mended_from
    }

    pub fn name(&self) -> &str {
        self.definition.name()
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// SHA-256 of the source (see [`Checksum`]): what the history records when it is applied.
    pub fn checksum(&self) -> Checksum {
        Checksum::of_source(&self.source)
    }

    /// Whether it runs in a transaction of its own (PostgreSQL's convention, unless the
    /// migration says otherwise).
    pub fn in_transaction(&self) -> bool {
        self.definition.use_transaction().unwrap_or(true)
    }

    pub fn definition(&self) -> &dyn MigrationTrait {
        self.definition.as_ref()
    }

    pub fn into_definition(self) -> Box<dyn MigrationTrait> {
        self.definition
    }
}

/// Which way a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// What an [`Observer`] is told: adoptions first, then for each migration in this order.
#[derive(Debug)]
pub enum Event<'a> {
    /// An applied migration recorded before checksums existed now has this one (the file's).
    Adopted {
        name: &'a str,
        checksum: &'a Checksum,
    },
    /// The migration's own code is about to run, on the backend with this process id (its
    /// transaction, if it has one, is open and its `lock_timeout` set).
    Starting {
        name: &'a str,
        direction: Direction,
        backend_pid: i32,
    },
    /// Its code returned successfully; `lock_timeout_ms` is the setting as it left it (before
    /// its transaction, if any, commits; 0 is "no timeout").
    Ran {
        name: &'a str,
        direction: Direction,
        lock_timeout_ms: u64,
    },
    /// It is applied (or rolled back) and recorded.
    Done {
        name: &'a str,
        direction: Direction,
        elapsed: Duration,
    },
    /// The run has waited [`LOCK_WAIT_NOTICE`] for the migration lock, which `holder` holds (its
    /// backend, role, application and start, as far as this role may see them): another run,
    /// one cut off whose session the server has not ended yet, or any session that took the
    /// key. Said once; the run goes on waiting.
    WaitingForLock { holder: &'a str },
}

/// How long a run waits for the migration lock before it says who holds it.
pub const LOCK_WAIT_NOTICE: Duration = Duration::from_secs(2);

/// Sees a run's progress. The run waits for each call: an observer may query the database on
/// connections of its own, never on the run's.
#[async_trait::async_trait]
pub trait Observer: Send + Sync {
    async fn event(&self, event: &Event<'_>);
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}", shown(.0))]
    Database(#[from] DbErr),
    /// A migration failed. One that runs in a transaction changed nothing; one that does not
    /// may have stopped part-way, and carries on when run again.
    #[error("{direction} of {name} failed: {}", shown(.error))]
    Migration {
        name: String,
        direction: Direction,
        in_transaction: bool,
        error: DbErr,
    },
    #[error(
        "the connection holding the migration lock was lost; nothing more was applied (run again)"
    )]
    LockLost,
    #[error("migrations run on PostgreSQL only")]
    NotPostgres,
    /// The run's role cannot use the migration history: nothing was run.
    #[error(
        "{0}: migrations run as the role that owns the schema (DATABASE_OWNER_URL, or \
         DATABASE_URL naming that role)"
    )]
    WrongRole(String),
    /// Applied migrations differ from this binary's: nothing was run.
    #[error("{0}")]
    Drift(Drift),
    #[error("{0} is not a migration this binary knows or the database has applied")]
    UnknownVersion(String),
    #[error("{0} is not applied: there is no checksum to accept (run `migration up`)")]
    NotApplied(String),
    #[error(
        "{0} is not a migration of this binary: `down --to` names one of them (see `migration \
         status`)"
    )]
    NotInThisBinary(String),
    /// A migration without a transaction was being rolled back when its run stopped: part of
    /// it may be undone while the history still lists it as applied, so `up` would skip it.
    #[error(
        "{0} was being rolled back when a run stopped, and runs without a transaction: part of \
         it may already be undone. Run `migration down` again to finish the rollback (it carries \
         on), then `up`; or, having checked that its part of the schema is whole (as after a \
         rollback that refused, or timed out, before changing anything), `migration accept {0}`"
    )]
    RollbackUnfinished(String),
}

/// How the applied migrations differ from this binary's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub problems: Vec<DriftProblem>,
}

/// One applied migration that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftProblem {
    /// Its source file changed since it was applied.
    Modified {
        name: String,
        file: String,
        recorded: Checksum,
        current: Checksum,
    },
    /// Applied, but this binary has no such migration.
    Missing {
        name: String,
        recorded: Option<Checksum>,
    },
    /// Applied without a checksum although others have theirs: by another tool (such as
    /// sea-orm-cli with [`crate::Migrator`]), so nothing says which file it ran.
    Unrecorded {
        name: String,
        file: String,
        current: Checksum,
    },
    /// Not applied, though one after it in the list is (as after merging a branch whose
    /// migration sorts before one already applied): `up` refuses to run it out of order, where
    /// `down` would later roll back the wrong one first.
    OutOfOrder {
        name: String,
        file: String,
        applied_after: String,
    },
}

impl Drift {
    /// `migration`'s exit code: 3 when a migration was modified or is unrecorded (whether or
    /// not some are also missing), 4 when some are only missing.
    pub fn exit_code(&self) -> u8 {
        if self
            .problems
            .iter()
            .any(|problem| !matches!(problem, DriftProblem::Missing { .. }))
        {
            3
        } else {
            4
        }
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::fmt::Display for DriftProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriftProblem::Modified {
                name,
                file,
                recorded,
                current,
            } => write!(
                f,
                "{name} was modified after it was applied: the database recorded checksum \
                 {recorded}, {file} has {current}. Either restore {file} as it was when applied \
                 (`git log -p -- {file}` shows its history), or, after checking that the database \
                 matches the file as it is now, record its checksum with `just migrate-accept \
                 {name}`."
            ),
            DriftProblem::Unrecorded {
                name,
                file,
                current,
            } => write!(
                f,
                "{name} was applied without a checksum, by another tool than this one (the \
                 other migrations have theirs), so nothing says it ran {file} as it is now \
                 ({current}). After checking that the database matches the file, record its \
                 checksum with `just migrate-accept {name}`."
            ),
            DriftProblem::OutOfOrder {
                name,
                file,
                applied_after,
            } => write!(
                f,
                "{name} is not applied, but {applied_after}, which comes after it, is: {file} \
                 was probably added on a branch merged after {applied_after} was applied. `up` \
                 will not run it out of order. Give it a name that sorts after \
                 {applied_after} (`just migrate-new` makes one), or roll back to before {name} \
                 with `just migrate-down` and run `up` again."
            ),
            DriftProblem::Missing { name, recorded } => {
                let recorded = recorded
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), ToString::to_string);
                write!(
                    f,
                    "{name} is applied in the database (recorded checksum {recorded}) but this \
                     binary has no migration/src/{name}.rs (checksum none): it comes from another \
                     branch or a newer release. Either run a binary that has that file (to roll \
                     it back with it, if that is the aim), or, after checking that nothing in the \
                     database depends on it, forget it with `just migrate-accept {name}`."
                )
            }
        }
    }
}

/// What [`Runner::accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The file's checksum is now recorded (`previous` is what was, if anything).
    Recorded {
        previous: Option<Checksum>,
        current: Checksum,
    },
    /// The recorded checksum (kept) already was the file's, or one the file was mended from.
    Unchanged(Checksum),
    /// The recorded checksum (kept) was the file's or one it was mended from, and a rollback of
    /// it that had stopped part-way no longer stands in `up`'s way (someone checked its part of
    /// the schema).
    RollbackCleared(Checksum),
    /// An `up` of it that had stopped part-way is taken as finished (someone checked its part
    /// of the schema): it is applied, with the file's checksum.
    Finished(Checksum),
    /// A rollback of it that had stopped part-way is cleared, but its `up` had not finished
    /// either: it is `applying` again (`up` finishes it; a second `accept` takes it as finished).
    RollbackClearedStillApplying,
    /// A migration this binary does not have is no longer recorded as applied.
    Forgotten { recorded: Option<Checksum> },
}

impl RunError {
    /// Whether PostgreSQL gave up waiting for a lock after `lock_timeout` (SQLSTATE 55P03).
    pub fn is_lock_timeout(&self) -> bool {
        match self {
            RunError::Database(error) | RunError::Migration { error, .. } => is_lock_timeout(error),
            _ => false,
        }
    }

    /// Whether the run's session ended under it: the server ended it (an administrator, a
    /// shutdown, a crash), the connection broke, or (a run's pool never replaces its session)
    /// no connection could be had again. Only after the session was opened does this mean lost.
    pub fn is_session_lost(&self) -> bool {
        use sea_orm_migration::sea_orm::sqlx::Error;
        let error = match self {
            RunError::LockLost => return true,
            RunError::Database(error) | RunError::Migration { error, .. } => error,
            _ => return false,
        };
        match sqlx_error(error) {
            Some(Error::Io(_) | Error::Protocol(_) | Error::PoolTimedOut | Error::PoolClosed) => {
                true
            }
            Some(Error::Database(answer)) => answer.code().is_some_and(|code| {
                // connection_exception; admin_shutdown, crash_shutdown, cannot_connect_now.
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        }
    }
}

impl From<RunError> for DbErr {
    fn from(error: RunError) -> Self {
        match error {
            RunError::Database(error) | RunError::Migration { error, .. } => error,
            other => DbErr::Migration(other.to_string()),
        }
    }
}

/// Whether `error` is PostgreSQL giving up on a lock after `lock_timeout` (SQLSTATE 55P03).
pub fn is_lock_timeout(error: &DbErr) -> bool {
    sqlstate(error).is_some_and(|code| code == "55P03")
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(error: &DbErr) -> Option<String> {
    let code = database_error(error)?.code()?;
    Some(code.into_owned())
}

/// What PostgreSQL said, if `error` is its answer.
fn database_error(
    error: &DbErr,
) -> Option<&dyn sea_orm_migration::sea_orm::sqlx::error::DatabaseError> {
    sqlx_error(error)?.as_database_error()
}

/// The driver's error inside `error`, if it is one.
fn sqlx_error(error: &DbErr) -> Option<&sea_orm_migration::sea_orm::sqlx::Error> {
    match error {
        DbErr::Conn(RuntimeErr::SqlxError(error))
        | DbErr::Exec(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error)) => Some(error),
        _ => None,
    }
}

/// `error` for a person: PostgreSQL's own message when it answered, without the wrappers' words
/// around it and sqlx's " at line N" (a line of PostgreSQL's C source, not of a migration).
fn shown(error: &DbErr) -> String {
    match database_error(error) {
        Some(answer) => answer.message().to_owned(),
        None => error.to_string(),
    }
}

/// Where a migration stands, for `migration status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationStatus {
    /// Recorded as applied, with this file's checksum (or none yet: adopted at the next run).
    Applied,
    Pending,
    /// Recorded as applied with another checksum than this file's.
    Modified,
    /// Recorded as applied, unknown to this binary.
    Missing,
    /// Recorded as applied without a checksum while others have theirs: by another tool.
    Unrecorded,
    /// Recorded as applied, but a rollback of it (without a transaction) stopped part-way.
    RollingBack,
    /// Its `up` (without a transaction) started and has not finished: it is still running (in a
    /// run holding the migration lock), or it stopped part-way or failed, and part of it may be
    /// in force. `up` runs it again, `down` rolls it back first.
    Applying,
}

impl std::fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MigrationStatus::Applied => "applied",
            MigrationStatus::Pending => "pending",
            MigrationStatus::Modified => "modified",
            MigrationStatus::Missing => "missing",
            MigrationStatus::Unrecorded => "unrecorded",
            MigrationStatus::RollingBack => "rolling-back",
            MigrationStatus::Applying => "applying",
        })
    }
}

/// A migration, known to this binary or recorded in the database, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub status: MigrationStatus,
    /// What the history table holds for it, if it is applied and has a checksum recorded.
    pub recorded: Option<Checksum>,
    /// Its file's, if this binary has it.
    pub current: Option<Checksum>,
}

impl MigrationState {
    /// Whether the database records it as applied (if only in part: `applying`).
    pub fn is_applied(&self) -> bool {
        self.status != MigrationStatus::Pending
    }

    /// Whether it is applied whole, as this binary's file says: `up` has nothing to do for it
    /// (and nothing in the history stands in its way).
    pub fn is_done(&self) -> bool {
        self.status == MigrationStatus::Applied
    }
}

/// Runs a list of migrations (the real one is [`crate::migrations`]; tests pass fixtures).
pub struct Runner {
    migrations: Vec<MigrationFile>,
    options: RunOptions,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("migrations", &self.migrations)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Runner {
    pub fn new(migrations: Vec<MigrationFile>) -> Self {
        Self {
            migrations,
            options: RunOptions::default(),
            observer: None,
        }
    }

    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn migrations(&self) -> &[MigrationFile] {
        &self.migrations
    }

    /// Applies pending migrations in order (and runs `applying` ones again from the start), at
    /// most `limit` of them (all when `None`); returns the names of those applied. Each one that
    /// succeeded stays applied if a later one fails.
    pub async fn up(
        &self,
        db: &DatabaseConnection,
        limit: Option<usize>,
    ) -> Result<Vec<String>, RunError> {
        let session = RunSession::open(db, self.observer.as_ref()).await?;
        let outcome = self.up_in(&session, limit).await;
        session.close().await;
        outcome
    }

    async fn up_in(
        &self,
        session: &RunSession,
        limit: Option<usize>,
    ) -> Result<Vec<String>, RunError> {
        let applied = self.check_history(session).await?;
        if let Some(name) = history::rolling_back(&session.db).await?.into_iter().next() {
            return Err(RunError::RollbackUnfinished(name));
        }
        self.check_order(&applied)?;
        // An `applying` one is run again, from the start.
        let finished = |file: &&MigrationFile| {
            applied
                .iter()
                .any(|state| state.name == file.name() && state.is_done())
        };
        let mut done = Vec::new();
        for file in self
            .migrations
            .iter()
            .filter(|file| !finished(file))
            .take(limit.unwrap_or(usize::MAX))
        {
            self.run_one(session, file, Direction::Up).await?;
            done.push(file.name().to_owned());
        }
        Ok(done)
    }

    /// Rolls back the `steps` most recent applied migrations, newest first, each by itself;
    /// returns the names of those rolled back. One that fails stops the run; those before it
    /// stay rolled back.
    pub async fn down(&self, db: &DatabaseConnection, steps: u32) -> Result<Vec<String>, RunError> {
        let session = RunSession::open(db, self.observer.as_ref()).await?;
        let outcome = self.down_in(&session, 0, steps as usize).await;
        session.close().await;
        outcome
    }

    /// Rolls back every applied migration listed after `version` (which stays as it is), newest
    /// first, as [`Runner::down`] does. Unlike `down`, which counts from the newest migration
    /// still applied, it ends at the same place however often it runs: after a failure, or an
    /// answer lost with the connection, the same call carries on.
    pub async fn down_to(
        &self,
        db: &DatabaseConnection,
        version: &str,
    ) -> Result<Vec<String>, RunError> {
        let kept = self
            .migrations
            .iter()
            .position(|file| file.name() == version)
            .ok_or_else(|| RunError::NotInThisBinary(version.to_owned()))?;
        let session = RunSession::open(db, self.observer.as_ref()).await?;
        let outcome = self.down_in(&session, kept + 1, usize::MAX).await;
        session.close().await;
        outcome
    }

    /// Rolls back at most `steps` of the applied migrations from the `from`th on in the list.
    async fn down_in(
        &self,
        session: &RunSession,
        from: usize,
        steps: usize,
    ) -> Result<Vec<String>, RunError> {
        let applied = self.check_history(session).await?;
        let mut done = Vec::new();
        for file in self.migrations[from.min(self.migrations.len())..]
            .iter()
            .rev()
            .filter(|file| applied.iter().any(|state| state.name == file.name()))
            .take(steps)
        {
            self.run_one(session, file, Direction::Down).await?;
            done.push(file.name().to_owned());
        }
        Ok(done)
    }

    /// Before up or down: the history table (with its checksum column), then a refusal if any
    /// applied migration is modified, missing or unrecorded, else the checksums of those applied
    /// before checksums existed. Returns the applied migrations (`applying` ones too).
    async fn check_history(&self, session: &RunSession) -> Result<Vec<MigrationState>, RunError> {
        refuse_a_role_that_cannot_write(session).await?;
        revoke_history_writes(session).await?;
        // One transaction for the checksum column, the check and the adoptions: a run cut off
        // half-way must not leave the column added and some rows without theirs, which would
        // then look applied by another tool. A refusal rolls it all back.
        let tx = session.db.begin().await?;
        let kept = history::install(&tx).await?;
        let states = self.states(history::recorded(&tx).await?, kept);
        let file_of = |name: &str| {
            self.file(name)
                .map_or_else(String::new, |file| file.file().to_owned())
        };
        let problems: Vec<DriftProblem> = states
            .iter()
            .filter_map(
                |state| match (state.status, &state.recorded, &state.current) {
                    (MigrationStatus::Unrecorded, _, Some(current)) => {
                        Some(DriftProblem::Unrecorded {
                            name: state.name.clone(),
                            file: file_of(&state.name),
                            current: current.clone(),
                        })
                    }
                    (MigrationStatus::Modified, Some(recorded), Some(current)) => {
                        Some(DriftProblem::Modified {
                            name: state.name.clone(),
                            file: file_of(&state.name),
                            recorded: recorded.clone(),
                            current: current.clone(),
                        })
                    }
                    (MigrationStatus::Missing, recorded, _) => Some(DriftProblem::Missing {
                        name: state.name.clone(),
                        recorded: recorded.clone(),
                    }),
                    _ => None,
                },
            )
            .collect();
        if !problems.is_empty() {
            return Err(RunError::Drift(Drift { problems }));
        }
        let adopted = adopt(&tx, &states).await?;
        tx.commit().await?;
        self.notify_adopted(adopted).await;
        Ok(states
            .into_iter()
            .filter(MigrationState::is_applied)
            .collect())
    }

    /// Before up: a refusal if a pending migration comes before an applied one in the list.
    fn check_order(&self, applied: &[MigrationState]) -> Result<(), RunError> {
        let is_applied =
            |file: &&MigrationFile| applied.iter().any(|state| state.name == file.name());
        let Some(last) = self.migrations.iter().rposition(|file| is_applied(&file)) else {
            return Ok(());
        };
        let problems: Vec<DriftProblem> = self.migrations[..last]
            .iter()
            .filter(|file| !is_applied(file))
            .map(|file| DriftProblem::OutOfOrder {
                name: file.name().to_owned(),
                file: file.file().to_owned(),
                applied_after: self.migrations[last].name().to_owned(),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RunError::Drift(Drift { problems }))
        }
    }

    fn file(&self, name: &str) -> Option<&MigrationFile> {
        self.migrations.iter().find(|file| file.name() == name)
    }

    /// Every known migration in order, then those recorded but unknown, with where each
    /// stands. Reads the history table itself; changes nothing in the database (and needs no
    /// lock).
    pub async fn status(&self, db: &DatabaseConnection) -> Result<Vec<MigrationState>, RunError> {
        if let Some(problem) = history::role_problem(db, false).await? {
            return Err(RunError::WrongRole(problem));
        }
        if !history::exists(db).await? {
            return Ok(self.states(Vec::new(), true));
        }
        let kept = history::checksums_kept(db).await?;
        let mut states = self.states(history::recorded(db).await?, kept);
        let rolling_back = history::rolling_back(db).await?;
        for state in &mut states {
            let recorded = matches!(
                state.status,
                MigrationStatus::Applied | MigrationStatus::Applying
            );
            if recorded && rolling_back.contains(&state.name) {
                state.status = MigrationStatus::RollingBack;
            }
        }
        Ok(states)
    }

    /// `kept`: whether every row of the history carried a checksum before this run (see
    /// `history::checksums_kept`). Before, none was recorded (they are adopted at the next
    /// run); after, a row without one was applied by another tool, even when no other row is
    /// left to say so.
    fn states(&self, recorded: Vec<history::Row>, kept: bool) -> Vec<MigrationState> {
        let mut states: Vec<MigrationState> = self
            .migrations
            .iter()
            .map(|file| {
                let current = file.checksum();
                let (status, recorded) = match recorded.iter().find(|row| row.name == file.name()) {
                    None => (MigrationStatus::Pending, None),
                    // Its checksum is recorded once it finishes (the file may be mended
                    // meanwhile: the run that finishes it records that one's).
                    Some(row) if row.applying => (MigrationStatus::Applying, None),
                    Some(history::Row {
                        checksum: Some(checksum),
                        ..
                    }) if file.mended().contains(&checksum.as_str()) => {
                        (MigrationStatus::Applied, Some(checksum.clone()))
                    }
                    Some(history::Row {
                        checksum: Some(checksum),
                        ..
                    }) if *checksum != current => {
                        (MigrationStatus::Modified, Some(checksum.clone()))
                    }
                    Some(history::Row { checksum: None, .. }) if kept => {
                        (MigrationStatus::Unrecorded, None)
                    }
                    Some(row) => (MigrationStatus::Applied, row.checksum.clone()),
                };
                MigrationState {
                    name: file.name().to_owned(),
                    status,
                    recorded,
                    current: Some(current),
                }
            })
            .collect();
        for row in recorded {
            if self.file(&row.name).is_none() {
                states.push(MigrationState {
                    name: row.name,
                    status: MigrationStatus::Missing,
                    recorded: row.checksum,
                    current: None,
                });
            }
        }
        states
    }

    /// Records the checksum of `version`'s file as applied (after a person checked that the
    /// database matches it), or, for an applied migration this binary does not have, forgets
    /// it. Under the migration lock; touches no other migration.
    pub async fn accept(
        &self,
        db: &DatabaseConnection,
        version: &str,
    ) -> Result<Accepted, RunError> {
        let session = RunSession::open(db, self.observer.as_ref()).await?;
        let outcome = self.accept_in(&session, version).await;
        session.close().await;
        outcome
    }

    async fn accept_in(&self, session: &RunSession, version: &str) -> Result<Accepted, RunError> {
        refuse_a_role_that_cannot_write(session).await?;
        revoke_history_writes(session).await?;
        // As in `check_history`: if this run adds the checksum column, the other rows must get
        // theirs in the same transaction, or the next run takes them for another tool's.
        let tx = session.db.begin().await?;
        let kept = history::install(&tx).await?;
        let states = self.states(history::recorded(&tx).await?, kept);
        let adopted = adopt(&tx, &states).await?;
        let state = states
            .iter()
            .find(|state| state.name == version)
            .ok_or_else(|| RunError::UnknownVersion(version.to_owned()))?;
        let accepted = match (state.status, &state.current, &state.recorded) {
            (MigrationStatus::Pending, ..) => return Err(RunError::NotApplied(version.to_owned())),
            (MigrationStatus::Missing, ..) => {
                history::record(&tx, version, Direction::Down, None).await?;
                Accepted::Forgotten {
                    recorded: state.recorded.clone(),
                }
            }
            // A person checked it: a rollback that stopped part-way no longer stands in `up`'s
            // way. Only for a file as it was applied: a modified one keeps its mark, which its
            // drift message does not mention, until it is accepted again.
            (MigrationStatus::Applied, Some(current), _)
                if history::clear_rollback_mark(&tx, version).await? =>
            {
                Accepted::RollbackCleared(state.recorded.clone().unwrap_or_else(|| current.clone()))
            }
            // A rollback of a half-run `up` stopped, and a person checked that it had changed
            // nothing: the migration is back where the rollback found it, applying.
            (MigrationStatus::Applying, Some(_), _)
                if history::clear_rollback_mark(&tx, version).await? =>
            {
                Accepted::RollbackClearedStillApplying
            }
            // A person checked that the half-run `up` did all the file says: it is applied, with
            // the file's checksum.
            (MigrationStatus::Applying, Some(current), _) => {
                history::record(&tx, version, Direction::Up, Some(current)).await?;
                Accepted::Finished(current.clone())
            }
            // The file's checksum, or one it was mended from (kept: see `mended_from`).
            (MigrationStatus::Applied, Some(_), Some(recorded)) => {
                Accepted::Unchanged(recorded.clone())
            }
            (_, Some(current), _) => {
                history::set_checksum(&tx, version, current).await?;
                Accepted::Recorded {
                    previous: state.recorded.clone(),
                    current: current.clone(),
                }
            }
            (_, None, _) => return Err(RunError::UnknownVersion(version.to_owned())),
        };
        tx.commit().await?;
        self.notify_adopted(adopted).await;
        Ok(accepted)
    }

    async fn notify_adopted(&self, adopted: Vec<(&str, &Checksum)>) {
        for (name, checksum) in adopted {
            self.notify(Event::Adopted { name, checksum }).await;
        }
    }

    async fn run_one(
        &self,
        session: &RunSession,
        file: &MigrationFile,
        direction: Direction,
    ) -> Result<(), RunError> {
        session.ensure_lock_held().await?;
        let started = Instant::now();
        self.run_and_record(session, file, direction)
            .await
            .map_err(|error| match error {
                RunError::Database(error) => RunError::Migration {
                    name: file.name().to_owned(),
                    direction,
                    in_transaction: file.in_transaction(),
                    error,
                },
                other => other,
            })?;
        self.notify(Event::Done {
            name: file.name(),
            direction,
            elapsed: started.elapsed(),
        })
        .await;
        Ok(())
    }

    async fn run_and_record(
        &self,
        session: &RunSession,
        file: &MigrationFile,
        direction: Direction,
    ) -> Result<(), RunError> {
        if file.in_transaction() {
            // READ COMMITTED whatever the role's or database's default: a guard that counts rows
            // after taking its lock (before a DROP) must see the rows committed while it waited,
            // which a snapshot taken at the transaction's first statement would not.
            let transaction = session
                .db
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await?;
            let outcome = self
                .run_in_transaction(session, &transaction, file, direction)
                .await;
            match outcome {
                Ok(()) => transaction.commit().await?,
                Err(error) => {
                    // Roll back now, on this connection, rather than whenever it is next used.
                    let _ = transaction.rollback().await;
                    return Err(error);
                }
            }
        } else {
            let db = &session.db;
            // Under the run's settings (its lock_timeout) already.
            set_run_settings(db, self.options, false).await?;
            // Committed first: if it stops part-way, the history says so. Up: `down` takes it
            // for applied (it rolls it back first), `up` runs it again. Down: `up` does not take
            // it for whole (see `RollbackUnfinished`).
            match direction {
                Direction::Up => history::mark_apply_started(db, file.name()).await?,
                Direction::Down => history::mark_rollback_started(db, file.name()).await?,
            }
            self.run_code(db, session.pid, file, direction).await?;
            history::record(db, file.name(), direction, Some(&file.checksum())).await?;
        }
        Ok(())
    }

    async fn run_in_transaction(
        &self,
        session: &RunSession,
        transaction: &DatabaseTransaction,
        file: &MigrationFile,
        direction: Direction,
    ) -> Result<(), RunError> {
        set_run_settings(transaction, self.options, true).await?;
        let opened = current_transaction(transaction).await?;
        self.run_code(transaction, session.pid, file, direction)
            .await?;
        // A COMMIT or ROLLBACK in the migration's own SQL ends the runner's transaction unseen:
        // what ran before it stays, and what follows runs outside any transaction, without the
        // run's settings. Not recorded, so that the run fails saying so.
        if current_transaction(transaction).await? != opened {
            return Err(DbErr::Custom(
                "it ended the transaction the runner opened for it (a COMMIT or ROLLBACK in its \
                 SQL): what ran before a COMMIT is kept (before a ROLLBACK, undone), what ran \
                 after it ran outside any transaction and is kept, and the migration is not \
                 recorded: check the schema by hand; split it into migrations of their own, or \
                 run it without a transaction"
                    .into(),
            )
            .into());
        }
        history::record(transaction, file.name(), direction, Some(&file.checksum())).await?;
        Ok(())
    }

    /// The migration's own code, between the observer's `Starting` and `Ran`.
    async fn run_code<'c, C>(
        &self,
        connection: &'c C,
        backend_pid: i32,
        file: &MigrationFile,
        direction: Direction,
    ) -> Result<(), RunError>
    where
        C: ConnectionTrait,
        &'c C: sea_orm_migration::IntoSchemaManagerConnection<'c>,
    {
        self.notify(Event::Starting {
            name: file.name(),
            direction,
            backend_pid,
        })
        .await;
        let manager = SchemaManager::new(connection);
        match direction {
            Direction::Up => file.definition.up(&manager).await?,
            Direction::Down => file.definition.down(&manager).await?,
        }
        let lock_timeout_ms = current_lock_timeout_ms(connection).await?;
        self.notify(Event::Ran {
            name: file.name(),
            direction,
            lock_timeout_ms,
        })
        .await;
        Ok(())
    }

    async fn notify(&self, event: Event<'_>) {
        if let Some(observer) = &self.observer {
            observer.event(&event).await;
        }
    }
}

/// `lock_timeout` and the force setting, for the transaction (`local`) or the session; and
/// `idle_in_transaction_session_timeout` ([`RunOptions::idle_in_transaction_timeout`]): a
/// transaction of ours idle that long has a client that stalled (stopped, paused, cut off by the
/// network) and would hold its locks on live tables until the server's TCP keepalive gave up,
/// hours later. The server ends it instead, and rolls the migration back. (An [`Observer`] runs
/// while a migration's transaction is open: it must return well within that.) No
/// `statement_timeout`: one the role or database sets for its sessions (the service's limit,
/// say) would cancel a long backfill or validation part-way, run after run; `lock_timeout`
/// bounds the waits that hold others up. Nor PostgreSQL 17's `transaction_timeout`, for the same
/// reason.
///
/// And `client_connection_check_interval` at 1 s, where the server's platform can check (one the
/// session's options set is kept): a run that is killed (its process, its pod) or cut off leaves
/// its statement to the server, which otherwise goes on waiting for a lock (every query on the
/// table queued behind that request) or running a backfill under it, only to roll it all back
/// when it next reads from the client. It cancels it within a second instead (a migration
/// without a transaction is cut off too: see docs/migrations.md). Servers that cannot check
/// (Windows, 14 on macOS or FreeBSD; before 14, which has no such setting) do without.
async fn set_run_settings(
    connection: &impl ConnectionTrait,
    options: RunOptions,
    local: bool,
) -> Result<(), DbErr> {
    connection
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('lock_timeout', $1, $3), set_config($2, $4, $3), \
             set_config('idle_in_transaction_session_timeout', $5, $3), \
             set_config('default_transaction_isolation', 'read committed', $3), \
             set_config('statement_timeout', '0', $3)",
            [
                format!("{}ms", options.lock_timeout_ms()).into(),
                FORCE_SETTING.into(),
                local.into(),
                if options.force { "on" } else { "off" }.into(),
                format!("{}ms", options.idle_in_transaction_timeout_ms()).into(),
            ],
        ))
        .await?;
    // Settings a server may not have, or not allow: named through pg_settings (set_config of an
    // unknown name is an error), and the check's refusal caught in a block of its own.
    connection
        .execute_unprepared(&format!(
            "DO $settings$ BEGIN
                PERFORM set_config(name, '0', {local}) FROM pg_settings
                    WHERE name = 'transaction_timeout';
                BEGIN
                    PERFORM set_config(name, '1000', {local}) FROM pg_settings
                        WHERE name = 'client_connection_check_interval' AND source <> 'client';
                EXCEPTION WHEN invalid_parameter_value THEN NULL;
                END;
            END $settings$"
        ))
        .await?;
    Ok(())
}

/// How the runner reads a setting after a migration's code (so that tools watching the
/// migration's statements can tell the runner's own from the migration's).
pub const SETTING_QUERY: &str = "SELECT setting::bigint FROM pg_settings WHERE name = $1";

/// The session's `lock_timeout` in milliseconds (`pg_settings` shows it in its base unit).
async fn current_lock_timeout_ms(connection: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let row = connection
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SETTING_QUERY,
            ["lock_timeout".into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("pg_settings has no lock_timeout".into()))?;
    Ok(u64::try_from(row.try_get_by_index::<i64>(0)?).unwrap_or(0))
}

/// The id of the transaction `connection` is in (one is assigned if it has none yet).
async fn current_transaction(connection: &impl ConnectionTrait) -> Result<String, DbErr> {
    query_one(connection, "SELECT pg_current_xact_id()::text").await
}

/// The first column of the one row of `sql`.
async fn query_one<T: sea_orm_migration::sea_orm::TryGetable>(
    connection: &impl ConnectionTrait,
    sql: &str,
) -> Result<T, DbErr> {
    let statement = Statement::from_string(DbBackend::Postgres, sql);
    let row = connection.query_one_raw(statement).await?;
    let row = row.ok_or_else(|| DbErr::Custom(format!("{sql} returned no row")))?;
    row.try_get_by_index::<T>(0)
}

/// The first column of the first row of `sql`, a boolean (false when there is no row).
async fn query_bool(
    db: &impl ConnectionTrait,
    sql: &str,
    values: Vec<sea_orm_migration::sea_orm::Value>,
) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    Ok(row
        .map(|row| row.try_get_by_index::<bool>(0))
        .transpose()?
        .unwrap_or(false))
}

/// Takes the migration lock, waiting for another run as long as it takes (before any
/// `lock_timeout` is set).
///
/// By polling, not with `pg_advisory_lock`: a session blocked in that call sits in a transaction,
/// and a `CREATE INDEX CONCURRENTLY` of the run holding the lock waits for every transaction
/// older than its index to end: the two would wait for each other (PostgreSQL reports a
/// deadlock). Between attempts this session is in no transaction at all.
async fn wait_for_the_lock(
    db: &DatabaseConnection,
    observer: Option<&Arc<dyn Observer>>,
) -> Result<(), DbErr> {
    let mut pause = FIRST_LOCK_POLL_PAUSE;
    let started = Instant::now();
    let mut said = false;
    loop {
        if query_bool(
            db,
            "SELECT pg_try_advisory_lock($1)",
            vec![MIGRATION_LOCK_KEY.into()],
        )
        .await?
        {
            return Ok(());
        }
        if !said
            && started.elapsed() >= LOCK_WAIT_NOTICE
            && let Some(observer) = observer
        {
            said = true;
            // Best effort: what this role may not see is no reason to stop waiting.
            let holder = lock_holder(db)
                .await
                .unwrap_or_else(|_| "a session this role cannot see".to_owned());
            observer
                .event(&Event::WaitingForLock { holder: &holder })
                .await;
        }
        tokio::time::sleep(pause).await;
        pause = next_lock_poll_pause(pause);
    }
}

/// The first pause between tries for the migration lock.
const FIRST_LOCK_POLL_PAUSE: Duration = Duration::from_millis(20);

/// The pause after `pause`: doubling, so a short wait is over soon without hammering the
/// server, but never over 0.5 s, so a run behind a long migration starts soon after it.
fn next_lock_poll_pause(pause: Duration) -> Duration {
    (pause * 2).min(Duration::from_millis(500))
}

/// Who holds the migration lock, as this role may see it (another role's session shows its
/// backend and role, maybe no more).
async fn lock_holder(db: &DatabaseConnection) -> Result<String, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            // An advisory lock is per database: the same key elsewhere on the server is
            // another lock. A prepared transaction holds one without a backend.
            "SELECT CASE WHEN locks.pid IS NULL \
                 THEN 'a prepared transaction (see pg_prepared_xacts; ROLLBACK PREPARED ends it)' \
                 ELSE format('backend %s (role %s, application %s, connected %s)', locks.pid, \
                     coalesce(quote_ident(activity.usename::text), 'unknown'), \
                     coalesce(nullif(activity.application_name, ''), 'unnamed'), \
                     coalesce(to_char(activity.backend_start AT TIME ZONE 'UTC', \
                         'YYYY-MM-DD HH24:MI:SS \"UTC\"'), 'at an unknown time')) END \
             FROM pg_locks AS locks \
             LEFT JOIN pg_stat_activity AS activity ON activity.pid = locks.pid \
             WHERE locks.locktype = 'advisory' AND locks.granted AND locks.objsubid = 1 \
               AND locks.database = (SELECT oid FROM pg_database \
                                     WHERE datname = current_database()) \
               AND ((locks.classid::int8 << 32) | locks.objid::int8) = $1 \
             LIMIT 1",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get_by_index::<String>(0)?,
        // Released between the two queries.
        None => "nobody any more".to_owned(),
    })
}

/// A run that writes the history refuses, before anything, a role that could not: it would fail
/// on the first statement that needs the owner, with the server's bare words.
async fn refuse_a_role_that_cannot_write(session: &RunSession) -> Result<(), RunError> {
    match history::role_problem(&session.db, true).await? {
        Some(problem) => Err(RunError::WrongRole(problem)),
        None => Ok(()),
    }
}

/// The history's revoke (see `history::owner_only`), committed on its own before the history is
/// read: a refusal after it rolls back the run's transaction, and a role that could write the
/// history (to have a future migration skipped) must lose that right even when the rows it
/// wrote make the run refuse.
async fn revoke_history_writes(session: &RunSession) -> Result<(), RunError> {
    if history::exists(&session.db).await? {
        let tx = session.db.begin().await?;
        history::owner_only(&tx).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The run's own connection, holding the migration lock.
struct RunSession {
    db: DatabaseConnection,
    pid: i32,
    /// Whether the pool is the run's own (closed at the end) or the caller's (left open; the
    /// lock is released explicitly).
    owned: bool,
}

/// How long a run's pool waits for its connection: to reach the server at first, and later
/// only when its session was lost (each statement then fails after this long).
const SESSION_WAIT: Duration = Duration::from_secs(5);

/// A pool of exactly one session that is never replaced: no test before acquire, no idle
/// timeout, no lifetime, and a second connect refused. A run's advisory lock and `lock_timeout`
/// live on that session; were it lost mid-run (a cut network, a terminated backend), a new one
/// would lack both, and a migration's clean-up could queue an ACCESS EXCLUSIVE lock behind a
/// long transaction, with every query of the service behind it, while another run starts.
/// Every later statement fails instead; running again carries on. `wanted` is checked on the
/// session when it opens. The flag returned says whether it was opened.
pub fn one_session_pool(
    options: PgConnectOptions,
    wanted: TargetSessionAttrs,
) -> (DatabaseConnection, Arc<AtomicBool>) {
    let connected = Arc::new(AtomicBool::new(false));
    let opened = connected.clone();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(SESSION_WAIT)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .after_connect(move |connection, _| {
            let connected = connected.clone();
            Box::pin(async move {
                if connected.load(Ordering::SeqCst) {
                    // The pool retries until its acquire timeout and then says only that: the
                    // CLI tells the user why.
                    return Err(sea_orm_migration::sea_orm::sqlx::Error::Configuration(
                        "the run's database session was lost, and its locks and lock_timeout \
                         with it: not reconnecting mid-run; run the command again"
                            .into(),
                    ));
                }
                let state = session_state(connection).await?;
                if wanted.accepts(state) {
                    connected.store(true, Ordering::SeqCst);
                    Ok(())
                } else {
                    Err(sea_orm_migration::sea_orm::sqlx::Error::Configuration(
                        format!("the server no longer has a {wanted} session").into(),
                    ))
                }
            })
        })
        .connect_lazy_with(options);
    (SqlxPostgresConnector::from_sqlx_postgres_pool(pool), opened)
}

/// Whether a pool is configured as [`one_session_pool`] makes one: one connection, never
/// tested, closed or replaced by the pool itself. A plain pool of one (sqlx's defaults) is not:
/// it replaces a connection that failed a test or reached its lifetime, and the run's advisory
/// lock and settings would be gone with it, unseen.
fn is_one_session_pool(
    options: &sea_orm_migration::sea_orm::sqlx::pool::PoolOptions<
        sea_orm_migration::sea_orm::sqlx::Postgres,
    >,
) -> bool {
    options.get_max_connections() == 1
        && !options.get_test_before_acquire()
        && options.get_idle_timeout().is_none()
        && options.get_max_lifetime().is_none()
        && options.get_acquire_timeout() == SESSION_WAIT
}

impl RunSession {
    /// The caller's pool when it is a [`one_session_pool`] (the CLI's: whatever checks it makes
    /// of each connection, such as `target_session_attrs`, keep applying), else a
    /// [`one_session_pool`] of the run's own on its connect options. The advisory lock lives on that connection;
    /// [`RunSession::ensure_lock_held`] notices if it was replaced.
    async fn open(
        db: &DatabaseConnection,
        observer: Option<&Arc<dyn Observer>>,
    ) -> Result<Self, RunError> {
        let DatabaseConnectionType::SqlxPostgresPoolConnection(_) = &db.inner else {
            return Err(RunError::NotPostgres);
        };
        let given = db.get_postgres_connection_pool();
        let (db, owned) = if is_one_session_pool(given.options()) {
            (db.clone(), false)
        } else {
            let options = (*given.connect_options()).clone();
            let (db, _) = one_session_pool(options, TargetSessionAttrs::Any);
            (db, true)
        };
        let taken = async {
            wait_for_the_lock(&db, observer).await?;
            query_one::<i32>(&db, "SELECT pg_backend_pid()").await
        }
        .await;
        match taken {
            Ok(pid) => Ok(Self { db, pid, owned }),
            Err(error) => {
                if owned {
                    let _ = db.close().await;
                }
                Err(error.into())
            }
        }
    }

    /// Fails unless this session still holds the migration lock: a connection that broke and
    /// was silently replaced would have lost it.
    async fn ensure_lock_held(&self) -> Result<(), RunError> {
        let held = query_bool(
            &self.db,
            "SELECT pg_backend_pid() = $2 AND EXISTS (
                 SELECT FROM pg_locks
                 WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                   AND objsubid = 1
                   AND classid::bigint = ($1 >> 32) AND objid::bigint = ($1 & 4294967295))",
            vec![MIGRATION_LOCK_KEY.into(), self.pid.into()],
        )
        .await?;
        if held {
            Ok(())
        } else {
            Err(RunError::LockLost)
        }
    }

    /// Releases the lock: by closing the run's own pool, or on the caller's connection (which,
    /// if that fails, releases it when it closes).
    async fn close(self) {
        if self.owned {
            let _ = self.db.close().await;
        } else {
            let _ = self
                .db
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_unlock($1)",
                    [MIGRATION_LOCK_KEY.into()],
                ))
                .await;
        }
    }
}

/// Records the file's checksum for each migration applied before checksums were kept; returns
/// those it recorded.
async fn adopt<'a>(
    db: &impl ConnectionTrait,
    states: &'a [MigrationState],
) -> Result<Vec<(&'a str, &'a Checksum)>, DbErr> {
    let adopted: Vec<(&str, &Checksum)> = states
        .iter()
        .filter_map(
            |state| match (state.status, &state.recorded, &state.current) {
                (MigrationStatus::Applied, None, Some(current)) => {
                    Some((state.name.as_str(), current))
                }
                _ => None,
            },
        )
        .collect();
    for &(name, checksum) in &adopted {
        history::set_checksum(db, name, checksum).await?;
    }
    Ok(adopted)
}

/// The history table (sea-orm-migration's `seaql_migrations`, with the same columns).
mod history {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    pub(super) async fn exists(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
        query_bool(
            db,
            "SELECT to_regclass($1) IS NOT NULL",
            vec![HISTORY_TABLE.into()],
        )
        .await
    }

    /// Why this session's role cannot use the history, if it cannot: a history in a schema of
    /// its search path that it may not use (it would see none, take every migration for pending,
    /// and an `up` would start another history in the next schema it may create in); and for a run
    /// that `writes`, one another role owns (only the owner may add its columns and revoke
    /// others' writes), or none and no schema of its search path to create it in. The catalog
    /// answers, which every role may read.
    pub(super) async fn role_problem(
        db: &impl ConnectionTrait,
        writes: bool,
    ) -> Result<Option<String>, DbErr> {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT coalesce(\
                   (SELECT format('a migration history (%I.%I) is there, in a schema role %I may \
                            not use, so it would take every migration for pending', \
                            n.nspname, c.relname, current_user) \
                      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE to_regclass($1) IS NULL AND c.relname = $1 \
                       AND c.relkind IN ('r', 'p') AND NOT has_schema_privilege(n.oid, 'USAGE') \
                       AND n.nspname IN (SELECT CASE WHEN entry = '$user' THEN current_user \
                                                     ELSE entry END \
                                           FROM unnest(string_to_array(\
                                                  current_setting('search_path'), ',')) AS path, \
                                                LATERAL btrim(path, ' \"') AS entry) \
                     LIMIT 1), \
                   (SELECT format('role %I does not own the migration history (%s, whose owner \
                            is %I)', current_user, c.oid::regclass, \
                            pg_get_userbyid(c.relowner)) \
                      FROM pg_class c \
                     WHERE $2 AND c.oid = to_regclass($1) \
                       AND NOT pg_has_role(current_user, c.relowner, 'USAGE')), \
                   CASE WHEN $2 AND to_regclass($1) IS NULL AND (current_schema() IS NULL \
                          OR NOT has_schema_privilege(current_schema(), 'CREATE')) \
                        THEN format('role %I may create the migration history in no schema of \
                               its search path (%s)', current_user, \
                               current_setting('search_path')) END)",
                vec![HISTORY_TABLE.into(), writes.into()],
            ))
            .await?;
        Ok(row
            .map(|row| row.try_get_by_index::<Option<String>>(0))
            .transpose()?
            .flatten())
    }

    pub(super) async fn has_checksums(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
        has_column(db, "checksum").await
    }

    /// The comment this runner puts on the `checksum` column: from then on every row carries a
    /// checksum, so one without was written by another tool, even in a history emptied by
    /// `down`. (A column without it was added by a runner before the comment existed, which
    /// may have stopped before it recorded any checksum.)
    const KEPT_MARK: &str = "SHA-256 of the migration's source file; every row has one";

    /// Whether every row is known to carry a checksum: the column has [`KEPT_MARK`], or some
    /// row has a checksum.
    pub(super) async fn checksums_kept(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
        if !has_checksums(db).await? {
            return Ok(false);
        }
        Ok(query_bool(
            db,
            "SELECT coalesce(col_description(attrelid, attnum) = $1, false) FROM pg_attribute \
             WHERE attrelid = to_regclass($2) AND attname = 'checksum' AND NOT attisdropped",
            vec![KEPT_MARK.into(), HISTORY_TABLE.into()],
        )
        .await?
            || query_bool(
                db,
                &format!(
                    r#"SELECT EXISTS (SELECT FROM "{HISTORY_TABLE}" WHERE "checksum" IS NOT NULL)"#
                ),
                vec![],
            )
            .await?)
    }

    /// Creates the table (sea-orm-migration's columns and our `checksum`), or adds `checksum` to
    /// one that sea-orm-migration made; returns whether checksums were kept before (a table made
    /// now: yes), and marks the column as keeping them from now on. Only its owner may read or
    /// write the table afterwards. In the caller's transaction, which adopts the checksums of
    /// rows applied before they were kept.
    pub(super) async fn install(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
        let kept = if !exists(db).await? {
            db.execute_unprepared(&format!(
                r#"CREATE TABLE IF NOT EXISTS "{HISTORY_TABLE}" (
                    "version" varchar NOT NULL PRIMARY KEY,
                    "applied_at" bigint NOT NULL,
                    "checksum" text,
                    "{ROLLBACK_STARTED}" bigint,
                    "{APPLY_STARTED}" bigint
                )"#
            ))
            .await?;
            true
        } else if !has_checksums(db).await? {
            db.execute_unprepared(&format!(
                r#"ALTER TABLE "{HISTORY_TABLE}" ADD COLUMN IF NOT EXISTS "checksum" text"#
            ))
            .await?;
            false
        } else {
            checksums_kept(db).await?
        };
        db.execute_unprepared(&format!(
            r#"COMMENT ON COLUMN "{HISTORY_TABLE}"."checksum" IS '{}'"#,
            KEPT_MARK.replace('\'', "''")
        ))
        .await?;
        for mark in [ROLLBACK_STARTED, APPLY_STARTED] {
            // Asked first: ALTER TABLE takes its lock even when the column is there already.
            if !has_column(db, mark).await? {
                db.execute_unprepared(&format!(
                    r#"ALTER TABLE "{HISTORY_TABLE}" ADD COLUMN IF NOT EXISTS "{mark}" bigint"#
                ))
                .await?;
            }
        }
        owner_only(db).await?;
        Ok(kept)
    }

    /// Now, in the history's unit (seconds since the Unix epoch; 0 for a clock before it).
    fn unix_seconds() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            })
    }

    /// When a rollback without a transaction started (Unix seconds), set until it finishes:
    /// one that stopped part-way leaves it, and its row.
    const ROLLBACK_STARTED: &str = "rollback_started_at";

    /// When an `up` without a transaction started (Unix seconds), set until it finishes: one that
    /// stopped part-way leaves it. Its row has no checksum meanwhile, so a binary from before
    /// this mark, which does not read it, takes the migration for applied by another tool and
    /// refuses to run, rather than take it for whole.
    const APPLY_STARTED: &str = "apply_started_at";

    async fn has_column(db: &impl ConnectionTrait, column: &str) -> Result<bool, DbErr> {
        query_bool(
            db,
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attname = $2 AND NOT attisdropped)",
            vec![HISTORY_TABLE.into(), column.into()],
        )
        .await
    }

    /// The applied migrations whose rollback stopped part-way (none before the column existed).
    pub(super) async fn rolling_back(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
        if !has_column(db, ROLLBACK_STARTED).await? {
            return Ok(Vec::new());
        }
        db.query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                r#"SELECT "version" FROM "{HISTORY_TABLE}"
                   WHERE "{ROLLBACK_STARTED}" IS NOT NULL ORDER BY "version" DESC"#
            ),
        ))
        .await?
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
    }

    /// Records `name` as applying (see [`APPLY_STARTED`]); a run that carries it on again marks
    /// it anew.
    pub(super) async fn mark_apply_started(
        db: &impl ConnectionTrait,
        name: &str,
    ) -> Result<(), DbErr> {
        let marked = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    r#"INSERT INTO "{HISTORY_TABLE}" AS history
                           ("version", "applied_at", "{APPLY_STARTED}")
                       VALUES ($1, $2, $2)
                       ON CONFLICT ("version") DO UPDATE
                       SET "{APPLY_STARTED}" = excluded."{APPLY_STARTED}", "checksum" = NULL
                       WHERE history."{APPLY_STARTED}" IS NOT NULL"#
                ),
                [name.into(), unix_seconds().into()],
            ))
            .await?;
        only_row(marked.rows_affected(), name)
    }

    /// An insert or a carry-on of an `applying` row wrote nothing: `name` is recorded as applied
    /// already (two migrations of one name, or another tool that ran it meanwhile, without the
    /// migration lock). Before the `applying` mark, the primary key refused it the same way.
    fn only_row(rows: u64, name: &str) -> Result<(), DbErr> {
        if rows == 1 {
            Ok(())
        } else {
            Err(DbErr::Custom(format!(
                "{name} is recorded as applied already: two migrations of that name, or another \
                 tool applied it meanwhile"
            )))
        }
    }

    pub(super) async fn mark_rollback_started(
        db: &impl ConnectionTrait,
        name: &str,
    ) -> Result<(), DbErr> {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                r#"UPDATE "{HISTORY_TABLE}" SET "{ROLLBACK_STARTED}" = $2 WHERE "version" = $1"#
            ),
            [name.into(), unix_seconds().into()],
        ))
        .await?;
        Ok(())
    }

    /// Whether `name` had a mark, now cleared.
    pub(super) async fn clear_rollback_mark(
        db: &impl ConnectionTrait,
        name: &str,
    ) -> Result<bool, DbErr> {
        let cleared = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    r#"UPDATE "{HISTORY_TABLE}" SET "{ROLLBACK_STARTED}" = NULL
                       WHERE "version" = $1 AND "{ROLLBACK_STARTED}" IS NOT NULL"#
                ),
                [name.into()],
            ))
            .await?;
        Ok(cleared.rows_affected() > 0)
    }

    /// Revokes every privilege but SELECT on the history table (or its columns) that a role
    /// other than its owner holds, with those it passed on: the schema's default privileges give
    /// the service's role the rows of every table the owner creates, and with this one it could
    /// record a migration as applied (which `up` would then skip) or hide drift. Reading stays
    /// (`migration status` with the service's URL). Also mends databases migrated before this
    /// rule. Fails if one is left, naming it (another role's column grant under a grant option
    /// of the table's survives the owner's CASCADE).
    pub(super) async fn owner_only(db: &impl ConnectionTrait) -> Result<(), DbErr> {
        let others = format!(
            r#"SELECT DISTINCT CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE quote_ident(pg_get_userbyid(acl.grantee)) END,
                               acl.privilege_type
               FROM pg_class AS class
               CROSS JOIN LATERAL (
                   SELECT (aclexplode(class.relacl)).*
                   UNION ALL
                   SELECT (aclexplode(attribute.attacl)).*
                   FROM pg_attribute AS attribute
                   WHERE attribute.attrelid = class.oid AND attribute.attacl IS NOT NULL
               ) AS acl
               WHERE class.oid = to_regclass('"{HISTORY_TABLE}"')
                 AND acl.grantee <> class.relowner AND acl.privilege_type <> 'SELECT'"#
        );
        let left = format!(
            r#"SELECT format('%s on %s to %s, granted by %s', acl.privilege_type, acl.place,
                             CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                  ELSE quote_ident(pg_get_userbyid(acl.grantee)) END,
                             quote_ident(pg_get_userbyid(acl.grantor)))
               FROM pg_class AS class
               CROSS JOIN LATERAL (
                   SELECT 'the table' AS place, (aclexplode(class.relacl)).*
                   UNION ALL
                   SELECT 'column ' || attribute.attname, (aclexplode(attribute.attacl)).*
                   FROM pg_attribute AS attribute
                   WHERE attribute.attrelid = class.oid AND attribute.attacl IS NOT NULL
               ) AS acl
               WHERE class.oid = to_regclass('"{HISTORY_TABLE}"')
                 AND acl.grantee <> class.relowner AND acl.privilege_type <> 'SELECT'
               LIMIT 1"#
        );
        db.execute_unprepared(&format!(
            r#"DO $$
            DECLARE
                grantee text;
                privilege text;
                remaining text;
            BEGIN
                FOR grantee, privilege IN {others}
                LOOP
                    -- A table privilege takes its column ones with it; CASCADE, those passed on.
                    EXECUTE format('REVOKE %s ON "{HISTORY_TABLE}" FROM %s CASCADE', privilege, grantee);
                END LOOP;
                IF EXISTS ({others}) THEN
                    -- Left when another role granted a column privilege under a grant option of
                    -- the table's: PostgreSQL keeps it against the owner's CASCADE.
                    SELECT ({left}) INTO remaining;
                    RAISE EXCEPTION '{HISTORY_TABLE} still lets a role other than its owner write it (%), which this run cannot revoke: run migrations as the owner, and revoke that grant as the role that made it', coalesce(remaining, 'a table privilege')
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
            END
            $$"#
        ))
        .await?;
        Ok(())
    }

    /// One row of the history.
    pub(super) struct Row {
        pub name: String,
        pub checksum: Option<Checksum>,
        /// Its `up` started without a transaction and has not finished.
        pub applying: bool,
    }

    /// Every applied version (`applying` ones too), in order.
    pub(super) async fn recorded(db: &impl ConnectionTrait) -> Result<Vec<Row>, DbErr> {
        let checksum = if has_checksums(db).await? {
            r#""checksum""#
        } else {
            "NULL::text"
        };
        let applying = if has_column(db, APPLY_STARTED).await? {
            format!(r#""{APPLY_STARTED}" IS NOT NULL"#)
        } else {
            "false".to_owned()
        };
        db.query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                r#"SELECT "version", {checksum}, {applying} FROM "{HISTORY_TABLE}"
                   ORDER BY "version""#
            ),
        ))
        .await?
        .into_iter()
        .map(|row| {
            Ok(Row {
                name: row.try_get_by_index::<String>(0)?,
                checksum: row
                    .try_get_by_index::<Option<String>>(1)?
                    .map(Checksum::from_stored),
                applying: row.try_get_by_index::<bool>(2)?,
            })
        })
        .collect()
    }

    pub(super) async fn set_checksum(
        db: &impl ConnectionTrait,
        name: &str,
        checksum: &Checksum,
    ) -> Result<(), DbErr> {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(r#"UPDATE "{HISTORY_TABLE}" SET "checksum" = $2 WHERE "version" = $1"#),
            [name.into(), checksum.as_str().into()],
        ))
        .await?;
        Ok(())
    }

    /// Up: records `name` as applied with `checksum` (ending its `applying` mark, if it has
    /// one); down: deletes its row.
    pub(super) async fn record(
        db: &impl ConnectionTrait,
        name: &str,
        direction: Direction,
        checksum: Option<&Checksum>,
    ) -> Result<(), DbErr> {
        let statement = match direction {
            Direction::Up => Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    r#"INSERT INTO "{HISTORY_TABLE}" AS history
                           ("version", "applied_at", "checksum")
                       VALUES ($1, $2, $3)
                       ON CONFLICT ("version") DO UPDATE
                       SET "applied_at" = excluded."applied_at", "checksum" = excluded."checksum",
                           "{APPLY_STARTED}" = NULL
                       WHERE history."{APPLY_STARTED}" IS NOT NULL"#
                ),
                [
                    name.into(),
                    unix_seconds().into(),
                    checksum.map(|checksum| checksum.as_str().to_owned()).into(),
                ],
            ),
            Direction::Down => Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(r#"DELETE FROM "{HISTORY_TABLE}" WHERE "version" = $1"#),
                [name.into()],
            ),
        };
        let written = db.execute_raw(statement).await?;
        match direction {
            Direction::Up => only_row(written.rows_affected(), name),
            Direction::Down => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tries for the migration lock: soon at first, then every 0.5 s however long the wait, so
    /// that a run behind a long migration starts within 0.5 s of its end.
    #[test]
    fn the_lock_is_tried_again_at_least_every_half_second() {
        let pauses: Vec<u128> = std::iter::successors(Some(FIRST_LOCK_POLL_PAUSE), |pause| {
            Some(next_lock_poll_pause(*pause))
        })
        .take(9)
        .map(|pause| pause.as_millis())
        .collect();
        assert_eq!(pauses, [20, 40, 80, 160, 320, 500, 500, 500, 500]);
    }

    #[test]
    fn lock_timeouts_are_clamped_to_what_postgres_accepts() {
        let ms = |lock_timeout| {
            RunOptions {
                lock_timeout,
                force: false,
                ..RunOptions::default()
            }
            .lock_timeout_ms()
        };
        assert_eq!(ms(Duration::from_secs(5)), 5000);
        assert_eq!(ms(Duration::ZERO), 1);
        assert_eq!(ms(Duration::from_secs(u64::MAX)), MAX_LOCK_TIMEOUT_MS);
    }
}
