//! `migrate-check --bench`: the migration figures of BENCHMARKS.md, at a size (1,000,000 users)
//! where a lock shows.
//!
//! Two runs: the check itself (every migration up, down, up again, with its figures), and a
//! deploy: a scratch database at the previous release's schema (the released migrations,
//! [`crate::KNOWN_EXCEPTIONS`], applied, the users loaded) where the unreleased migrations are
//! applied by the runner while the previous release keeps serving. Its service is played by
//! three loads on the service's role: `/health`'s check (`Database::ping` of the persistence
//! crate), lookups by name and sign-ups, both with the previous release's repository statements
//! (its `username_key`, its Rust rule) and its `lock_timeout` of 5 s. For each load: how many
//! calls, how many failed, the median and the longest, before and during the migration.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use counseling_config::DatabaseUrl;
use counseling_persistence::{Database, DatabaseSettings};
use counseling_testkit::fixtures::median;
use migration::m20261130_000001_username_identity::identity_key;
use migration::sea_orm::sqlx::postgres::PgPoolOptions;
use migration::sea_orm::sqlx::{self, PgPool};
use migration::{MigrationFile, RunOptions, Runner};

use crate::report::{ms, one_line};
use crate::{CheckError, CheckOptions, Pass, Report, Scratch, db_error, lock, run_pass};

/// The lines of BENCHMARKS.md between which the migration figures live (`just bench` keeps
/// what is between them).
pub const BEGIN_MARKER: &str = "<!-- migrations:begin -->";
pub const END_MARKER: &str = "<!-- migrations:end -->";

/// How long the loads run before the migration starts, for their baseline.
const BASELINE: Duration = Duration::from_secs(5);

/// One call of a load.
#[derive(Debug, Clone, Copy)]
struct Call {
    at: Instant,
    took: Duration,
    ok: bool,
}

/// A load's calls within a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadFigures {
    pub calls: usize,
    pub failed: usize,
    pub median: Duration,
    pub longest: Duration,
}

impl LoadFigures {
    fn of(calls: &[Call], from: Instant, to: Instant) -> Self {
        let mut took: Vec<Duration> = calls
            .iter()
            .filter(|call| call.at >= from && call.at < to)
            .map(|call| call.took)
            .collect();
        took.sort();
        Self {
            calls: took.len(),
            failed: calls
                .iter()
                .filter(|call| call.at >= from && call.at < to && !call.ok)
                .count(),
            median: median(&took).unwrap_or_default(),
            longest: took.last().copied().unwrap_or_default(),
        }
    }

    fn cell(&self) -> String {
        format!(
            "{} calls, {} failed, median {:.2} ms, longest {:.1} ms",
            self.calls,
            self.failed,
            self.median.as_secs_f64() * 1000.0,
            self.longest.as_secs_f64() * 1000.0
        )
    }
}

/// Everything `--bench` measured.
#[derive(Debug, Clone)]
pub struct BenchFigures {
    pub check: Report,
    /// The unreleased migrations, applied while the loads ran.
    pub deployed: Vec<crate::MigrationFigures>,
    pub migrate_up: Duration,
    /// (health pings, lookups, writes) before and during `migrate-up`.
    pub before: [LoadFigures; 3],
    pub during: [LoadFigures; 3],
}

/// Runs both parts; see the module's documentation.
pub async fn bench(
    migrations: &dyn Fn() -> Vec<MigrationFile>,
    options: &CheckOptions,
) -> Result<BenchFigures, CheckError> {
    let check = crate::check(migrations, options).await?;

    let scratch = Scratch::start().await?;
    let owner = scratch.owner()?;
    let released = |file: &MigrationFile| options.known_exceptions.iter().any(|n| n == file.name());
    loop {
        scratch.load_users_if_empty(options.users).await?;
        let runner = Runner::new(migrations()).with_options(RunOptions {
            lock_timeout: options.lock_timeout,
            force: false,
            ..RunOptions::default()
        });
        let next_is_released = runner
            .status(&owner)
            .await
            .map_err(|source| CheckError::Migration {
                pass: Pass::Up,
                source,
            })?
            .iter()
            .zip(migrations())
            .find(|(state, _)| !state.is_done())
            .is_some_and(|(_, file)| released(&file));
        if !next_is_released {
            break;
        }
        runner
            .up(&owner, Some(1))
            .await
            .map_err(|source| CheckError::Migration {
                pass: Pass::Up,
                source,
            })?;
    }
    let _ = owner.close().await;

    let loads = Loads::start(&scratch.database().url(), options.users).await?;
    tokio::time::sleep(BASELINE).await;
    let started = Instant::now();
    let deployed = run_pass(&scratch, migrations, Pass::Up, options).await;
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = loads.stop().await;
    let deployed = deployed?;
    let window = |from, to| -> [LoadFigures; 3] {
        [
            LoadFigures::of(&calls[0], from, to),
            LoadFigures::of(&calls[1], from, to),
            LoadFigures::of(&calls[2], from, to),
        ]
    };
    Ok(BenchFigures {
        check,
        deployed,
        migrate_up: finished - started,
        before: window(started - BASELINE, started),
        during: window(started, finished),
    })
}

/// The previous release's service, played on the service's role.
struct Loads {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>,
    database: Database,
}

/// The previous release's repository statements (`crates/persistence` before
/// m20261203_000001): lookups and inserts by `username_key`, its Rust rule.
const PREVIOUS_LOOKUP: &str = r#"SELECT "users"."id", "users"."username", "users"."password_hash", "users"."is_blocked", "users"."created_at", "users"."updated_at", "users"."username_key" FROM "users" WHERE "users"."username_key" = $1 LIMIT $2"#;
const PREVIOUS_INSERT: &str = r#"INSERT INTO "users" ("username", "password_hash", "username_key") VALUES ($1, $2, $3) RETURNING "id", "username", "password_hash", "is_blocked", "created_at", "updated_at", "username_key""#;

impl Loads {
    async fn start(service_url: &str, users: u64) -> Result<Self, CheckError> {
        let url = DatabaseUrl::parse(service_url)
            .map_err(|error| CheckError::Watcher(format!("the service's URL: {error}")))?;
        let mut settings = DatabaseSettings::new(url);
        settings.pool.min_connections = 0;
        settings.pool.max_connections = 2;
        let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current())
            .map_err(|problems| CheckError::Watcher(problems.to_string()))?;
        // The service's own bounds (DATABASE_LOCK_TIMEOUT_MS, DATABASE_STATEMENT_TIMEOUT_MS).
        let pool: PgPool = PgPoolOptions::new()
            .max_connections(6)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET lock_timeout = '5s'; SET statement_timeout = '30s'")
                        .execute(connection)
                        .await
                        .map(|_| ())
                })
            })
            .connect(service_url)
            .await
            .map_err(db_error("connecting as the service"))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        let every = |period_ms: u64, work: Box<dyn Fn(u64) -> CallFuture + Send + Sync>| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut calls = Vec::new();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = Instant::now();
                    let ok = work(n).await;
                    calls.push(Call {
                        at,
                        took: at.elapsed(),
                        ok,
                    });
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(period_ms)).await;
                }
                calls
            })
        };
        // /health's check: a round trip within its budget (HEALTH_TIMEOUT_MS).
        let health = database.clone();
        tasks.push(every(
            10,
            Box::new(move |_| {
                let health = health.clone();
                Box::pin(async move { health.ping(Duration::from_secs(1)).await.is_ok() })
            }),
        ));
        // Sign-in's lookups, four clients.
        let lookups: Arc<Mutex<fastrand::Rng>> = Arc::new(Mutex::new(fastrand::Rng::with_seed(7)));
        for _ in 0..4 {
            let (pool, rng) = (pool.clone(), Arc::clone(&lookups));
            tasks.push(every(
                5,
                Box::new(move |_| {
                    let i = lock(&rng).u64(1..=users.max(1));
                    let key = identity_key(&format!(r"\DOM{}\User{i}", i % 100));
                    let pool = pool.clone();
                    Box::pin(async move {
                        sqlx::query(PREVIOUS_LOOKUP)
                            .bind(key)
                            .bind(1_i64)
                            .fetch_optional(&pool)
                            .await
                            .is_ok_and(|row| row.is_some())
                    })
                }),
            ));
        }
        // Sign-ups.
        let writes = pool.clone();
        tasks.push(every(
            10,
            Box::new(move |n| {
                let name = format!(r"\bench\Writer{n}");
                let key = identity_key(&name);
                let pool = writes.clone();
                Box::pin(async move {
                    sqlx::query(PREVIOUS_INSERT)
                        .bind(name)
                        .bind(counseling_testkit::fixtures::BCRYPT_HASH)
                        .bind(key)
                        .fetch_one(&pool)
                        .await
                        .is_ok()
                })
            }),
        ));
        Ok(Self {
            stop,
            tasks,
            database,
        })
    }

    /// Stops the loads; their calls as (health pings, lookups, writes).
    async fn stop(self) -> [Vec<Call>; 3] {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.push(task.await.unwrap_or_default());
        }
        self.database.close(Duration::from_secs(5)).await;
        let writes = all.pop().unwrap_or_default();
        let health = if all.is_empty() {
            Vec::new()
        } else {
            all.remove(0)
        };
        let lookups: Vec<Call> = all.into_iter().flatten().collect();
        [health, lookups, writes]
    }
}

type CallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

impl BenchFigures {
    /// The block of BENCHMARKS.md, markers included.
    pub fn render(&self, command: &str) -> String {
        let mut out = format!(
            "{BEGIN_MARKER}\n## Migrations at {} users\n\n",
            group(self.check.users)
        );
        out.push_str(&format!(
            "Written by `{command}` on {}, on the test kit's private PostgreSQL (tmpfs, the kit's \
             test durability settings), 2 shared cores. Locks sampled every {} from a second \
             connection (`pg_locks` joined with `pg_stat_activity`): the lock was held at least \
             that long, and less than two sampling intervals longer. \"Blocking\" is a \
             mode that conflicts with ROW EXCLUSIVE or ACCESS SHARE (SHARE, SHARE ROW EXCLUSIVE, \
             EXCLUSIVE, ACCESS EXCLUSIVE) on a table that existed before the migration.\n\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
            ms(self.check.sample_every)
        ));
        out.push_str("### Each migration (`migrate-check` passes)\n\n");
        out.push_str(
            "| migration | pass | duration | longest blocking lock |\n|---|---|---|---|\n",
        );
        for figures in &self.check.migrations {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                figures.name,
                figures.pass,
                ms(figures.duration),
                lock_cell(figures, self.check.sample_every)
            ));
        }
        out.push_str(&format!(
            "\n### Deploying the unreleased migrations while the previous release serves\n\n\
             A database at the previous release's schema with {} users; `migrate-up` (the \
             runner, `lock_timeout` {} ms) applies the migrations below while the previous \
             release's service is played by: `/health`'s check (`Database::ping`, every 10 ms), \
             lookups by name with its statement (by `username_key`, 4 clients, every 5 ms each) \
             and sign-ups with its INSERT (1 client, every 10 ms), all with its `lock_timeout` \
             of 5 s.\n\n",
            group(self.check.users),
            self.check.lock_timeout_ms
        ));
        out.push_str("| migration | duration | longest blocking lock |\n|---|---|---|\n");
        for figures in &self.deployed {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                figures.name,
                ms(figures.duration),
                lock_cell(figures, self.check.sample_every)
            ));
        }
        out.push_str(&format!(
            "\n| load | {} s before `migrate-up` | during `migrate-up` ({:.1} s) |\n|---|---|---|\n",
            BASELINE.as_secs(),
            self.migrate_up.as_secs_f64()
        ));
        for (index, name) in ["`/health` check", "lookups by name", "sign-ups (writes)"]
            .iter()
            .enumerate()
        {
            out.push_str(&format!(
                "| {name} | {} | {} |\n",
                self.before[index].cell(),
                self.during[index].cell()
            ));
        }
        out.push('\n');
        out.push_str(END_MARKER);
        out.push('\n');
        out
    }
}

fn lock_cell(figures: &crate::MigrationFigures, every: Duration) -> String {
    figures.longest_lock.as_ref().map_or_else(
        || "none".to_owned(),
        |lock| {
            format!(
                "{} on `{}`, {} (`{}`)",
                lock.mode,
                lock.table,
                crate::report::held(lock, every),
                one_line(&lock.statement, 50).replace('|', "\\|")
            )
        },
    )
}

/// 1000000 as "1,000,000".
fn group(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Puts `block` (markers included) into the file at `path` in place of what is between the
/// markers, or at its end when it has none.
pub fn write_benchmarks_block(path: &Path, block: &str) -> std::io::Result<()> {
    // Only a missing file is an empty one: another failure (a file not UTF-8, unreadable)
    // must not turn into a file holding the block alone.
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let updated = match (text.find(BEGIN_MARKER), text.find(END_MARKER)) {
        (Some(begin), Some(end)) if begin < end => {
            let after = &text[end + END_MARKER.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            format!("{}{block}{after}", &text[..begin])
        }
        _ if text.is_empty() => block.to_owned(),
        _ => format!("{}\n\n{block}", text.trim_end()),
    };
    std::fs::write(path, updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_replaces_what_is_between_the_markers_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("BENCHMARKS.md");
        std::fs::write(
            &path,
            format!("# B\n\nbefore\n{BEGIN_MARKER}\nold\n{END_MARKER}\nafter\n"),
        )
        .unwrap_or_default();
        let block = format!("{BEGIN_MARKER}\nnew\n{END_MARKER}\n");
        write_benchmarks_block(&path, &block).unwrap_or_default();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            format!("# B\n\nbefore\n{BEGIN_MARKER}\nnew\n{END_MARKER}\nafter\n")
        );
        std::fs::write(&path, "# B\n").unwrap_or_default();
        write_benchmarks_block(&path, &block).unwrap_or_default();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            format!("# B\n\n{block}")
        );
        assert_eq!(group(1_000_000), "1,000,000");
        assert_eq!(group(100), "100");
        // A file that cannot be read as text is an error, and is left as it was.
        std::fs::write(&path, b"# B\n\xff\n").unwrap_or_default();
        assert!(write_benchmarks_block(&path, &block).is_err());
        assert_eq!(std::fs::read(&path).unwrap_or_default(), b"# B\n\xff\n");
        // A missing one is written with the block alone.
        let fresh = dir.path().join("NEW.md");
        assert!(write_benchmarks_block(&fresh, &block).is_ok());
        assert_eq!(std::fs::read_to_string(&fresh).unwrap_or_default(), block);
    }
}
