//! The runner on fixture migrations: one transaction per migration (or none, when a migration
//! says so), each under the run's `lock_timeout`, on one session holding the migration lock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{SqlMigration, connect};
use counseling_testkit::TestDatabase;
use counseling_testkit::fixtures::eventually;
use migration::sea_orm::sqlx::{self, PgConnection};
use migration::{Event, Observer, RunOptions, Runner};

/// Records what the runner reports; at each `Starting`, which locks on `probe_table` the run's
/// backend still holds (seen from a connection of its own).
struct Recorder {
    events: Mutex<Vec<String>>,
    pids: Mutex<Vec<i32>>,
    probe: tokio::sync::Mutex<Option<PgConnection>>,
    probe_table: &'static str,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(Vec::new()),
            pids: Mutex::new(Vec::new()),
            probe: tokio::sync::Mutex::new(None),
            probe_table: "",
        })
    }

    async fn probing(db: &TestDatabase, table: &'static str) -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(Vec::new()),
            pids: Mutex::new(Vec::new()),
            probe: tokio::sync::Mutex::new(Some(connect(db).await)),
            probe_table: table,
        })
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

#[migration::sea_orm::prelude::async_trait::async_trait]
impl Observer for Recorder {
    async fn event(&self, event: &Event<'_>) {
        let line = match event {
            Event::Starting {
                name,
                direction,
                backend_pid,
            } => {
                self.pids.lock().unwrap().push(*backend_pid);
                let mut held = String::new();
                if let Some(probe) = self.probe.lock().await.as_mut() {
                    let modes: Vec<String> = sqlx::query_scalar(
                        "SELECT mode FROM pg_locks WHERE pid = $1 AND relation = to_regclass($2) \
                         ORDER BY mode",
                    )
                    .bind(backend_pid)
                    .bind(self.probe_table)
                    .fetch_all(probe)
                    .await
                    .unwrap();
                    held = format!(" holding {modes:?} on {}", self.probe_table);
                }
                format!("starting {name} {direction:?}{held}")
            }
            Event::Ran {
                name,
                lock_timeout_ms,
                ..
            } => format!("ran {name} under lock_timeout {lock_timeout_ms} ms"),
            Event::Done { name, .. } => format!("done {name}"),
            Event::Adopted { name, checksum } => format!("adopted {name} {checksum}"),
            Event::WaitingForLock { holder } => format!("waiting for the lock, held by {holder}"),
        };
        self.events.lock().unwrap().push(line);
    }
}

fn runner(migrations: Vec<SqlMigration>) -> Runner {
    Runner::new(migrations.into_iter().map(SqlMigration::file).collect())
}

async fn index_is_valid(conn: &mut PgConnection, index: &str) -> Option<bool> {
    sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)")
        .bind(index)
        .fetch_optional(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_migration_without_a_transaction_builds_an_index_concurrently() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let table = SqlMigration::new(
        "m1_table",
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)",
        "DROP TABLE t",
    );
    let concurrent = SqlMigration::new(
        "m2_index",
        "CREATE INDEX CONCURRENTLY t_x ON t (x)",
        "DROP INDEX CONCURRENTLY t_x",
    );

    // In a transaction, PostgreSQL refuses it.
    let error = runner(vec![table.clone(), concurrent.clone()])
        .up(&orm, None)
        .await
        .unwrap_err();
    assert_eq!(
        migration::sqlstate(&error.into()).as_deref(),
        Some("25001"),
        "active_sql_transaction"
    );

    let runner = runner(vec![table, concurrent.without_transaction()]);
    assert_eq!(runner.up(&orm, None).await.unwrap(), ["m2_index"]);
    let mut conn = connect(&db).await;
    assert_eq!(index_is_valid(&mut conn, "t_x").await, Some(true));
    let applied: Vec<bool> = runner
        .status(&orm)
        .await
        .unwrap()
        .iter()
        .map(|state| state.is_applied())
        .collect();
    assert_eq!(applied, [true, true]);

    assert_eq!(runner.down(&orm, 1).await.unwrap(), ["m2_index"]);
    assert_eq!(index_is_valid(&mut conn, "t_x").await, None);
}

#[tokio::test]
async fn each_migration_commits_by_itself_and_a_failure_keeps_those_before_it() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let runner = runner(vec![
        SqlMigration::new("m1_a", "CREATE TABLE a (x int)", "DROP TABLE a"),
        SqlMigration::new(
            "m2_broken",
            "CREATE TABLE b (x int); SELECT 1 / 0",
            "DROP TABLE b",
        )
        .in_separate_calls(),
    ]);
    let error = runner.up(&orm, None).await.unwrap_err();
    assert_eq!(migration::sqlstate(&error.into()).as_deref(), Some("22012"));
    let applied: Vec<(String, bool)> = runner
        .status(&orm)
        .await
        .unwrap()
        .into_iter()
        .map(|state| (state.name.clone(), state.is_applied()))
        .collect();
    assert_eq!(
        applied,
        [("m1_a".to_owned(), true), ("m2_broken".to_owned(), false)]
    );
    let mut conn = connect(&db).await;
    let tables: Vec<Option<String>> =
        sqlx::query_scalar("SELECT to_regclass(name)::text FROM unnest(ARRAY['a', 'b']) AS name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, [Some("a".to_owned()), None], "b rolled back whole");
}

#[tokio::test]
async fn a_migrations_locks_end_when_it_does() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut conn = connect(&db).await;
    sqlx::query("CREATE TABLE a (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let recorder = Recorder::probing(&db, "a").await;
    runner(vec![
        // ACCESS EXCLUSIVE on a, until its transaction ends.
        SqlMigration::new(
            "m1_alter",
            "ALTER TABLE a ADD COLUMN y int",
            "ALTER TABLE a DROP COLUMN y",
        ),
        SqlMigration::new("m2_other", "CREATE TABLE b (x int)", "DROP TABLE b"),
    ])
    .with_observer(recorder.clone())
    .up(&orm, None)
    .await
    .unwrap();
    let starts: Vec<String> = recorder
        .events()
        .into_iter()
        .filter(|line| line.starts_with("starting"))
        .collect();
    assert_eq!(
        starts,
        [
            "starting m1_alter Up holding [] on a",
            "starting m2_other Up holding [] on a",
        ]
    );
}

#[tokio::test]
async fn every_migration_runs_under_the_runs_lock_timeout_with_or_without_a_transaction() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let recorder = Recorder::new();
    let options = RunOptions {
        lock_timeout: Duration::from_millis(1234),
        force: false,
        ..RunOptions::default()
    };
    runner(vec![
        SqlMigration::new("m1_create", "CREATE TABLE a (x int)", "DROP TABLE a"),
        SqlMigration::new(
            "m2_index",
            "CREATE INDEX CONCURRENTLY a_x ON a (x)",
            "DROP INDEX CONCURRENTLY a_x",
        )
        .without_transaction(),
        SqlMigration::new("m3_other", "CREATE TABLE b (x int)", "DROP TABLE b"),
    ])
    .with_options(options)
    .with_observer(recorder.clone())
    .up(&orm, None)
    .await
    .unwrap();
    assert_eq!(
        recorder.events(),
        [
            "starting m1_create Up",
            "ran m1_create under lock_timeout 1234 ms",
            "done m1_create",
            "starting m2_index Up",
            "ran m2_index under lock_timeout 1234 ms",
            "done m2_index",
            "starting m3_other Up",
            "ran m3_other under lock_timeout 1234 ms",
            "done m3_other",
        ]
    );
}

/// A second run waits for the first's session lock, then finds nothing to do; the lock goes
/// with the first run's connection.
#[tokio::test]
async fn a_second_run_waits_for_the_first_and_finds_nothing_pending() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    // The first migration sleeps, so the second run surely starts while the first holds the lock.
    let migrations = || {
        vec![
            SqlMigration::new(
                "m1_slow",
                "SELECT pg_sleep(0.5); CREATE TABLE a (x int)",
                "DROP TABLE a",
            ),
            SqlMigration::new(
                "m2_index",
                "CREATE INDEX CONCURRENTLY a_x ON a (x)",
                "DROP INDEX CONCURRENTLY a_x",
            )
            .without_transaction(),
        ]
    };
    let first = {
        let orm = orm.clone();
        tokio::spawn(async move { runner(migrations()).up(&orm, None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = runner(migrations()).up(&orm, None).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first, ["m1_slow", "m2_index"]);
    assert!(second.is_empty(), "{second:?}");

    // The server ends a closed connection's backend, and with it the lock, a moment later.
    let mut conn = connect(&db).await;
    eventually(
        "the lock is released with the run's connection",
        Duration::from_secs(5),
        async || {
            let sql = ADVISORY_LOCKS_HERE;
            let held: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
            held == 0
        },
    )
    .await
    .unwrap();
}

/// The advisory locks held in this test's database: other tests, which run at the same time in
/// databases of their own, take the same lock key there.
const ADVISORY_LOCKS_HERE: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// Applies one migration on `orm`; the backend the run used for it, as the observer saw it.
async fn backends_of_a_run(orm: &migration::sea_orm::DatabaseConnection) -> Vec<i32> {
    let recorder = Recorder::new();
    runner(vec![SqlMigration::new(
        "m1_a",
        "CREATE TABLE a (x int)",
        "DROP TABLE a",
    )])
    .with_observer(recorder.clone())
    .up(orm, None)
    .await
    .unwrap();
    recorder.pids.lock().unwrap().clone()
}

/// Given a pool of one connection (the CLI's, whose connections it checks itself), the run
/// uses that connection, and releases the lock on it at the end.
#[tokio::test]
async fn a_pool_of_one_connection_is_the_run_s_session() {
    let db = TestDatabase::empty().await.unwrap();
    // As the CLI makes it: nothing replaces the connection by itself.
    let any = counseling_config::TargetSessionAttrs::Any;
    let (orm, _) = migration::one_session_pool(db.options(), any);
    let pool = orm.get_postgres_connection_pool().clone();
    let callers: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let pids = backends_of_a_run(&orm).await;
    assert_eq!(pids, [callers]);
    let held: i64 = sqlx::query_scalar(ADVISORY_LOCKS_HERE)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(held, 0);
}

/// Stalls (as a stopped or paused client would) once a migration's code has run, with its
/// transaction and its locks still open.
struct Stalls(Duration);

#[migration::sea_orm::prelude::async_trait::async_trait]
impl Observer for Stalls {
    async fn event(&self, event: &Event<'_>) {
        if let Event::Ran { .. } = event {
            tokio::time::sleep(self.0).await;
        }
    }
}

/// A run whose client stalls in the middle of a migration (stopped, paused, cut off by the
/// network) does not keep its locks on a live table until the server's TCP keepalive gives up:
/// the server ends the transaction once it has been idle for the run's idle limit (a minute by
/// default; 1 s here), and rolls the migration back.
#[tokio::test]
async fn a_run_that_stalls_mid_migration_releases_its_locks_after_its_idle_limit() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut service = connect(&db).await;
    sqlx::raw_sql("CREATE TABLE live (x int)")
        .execute(&mut service)
        .await
        .unwrap();
    let idle_limit = Duration::from_secs(1);
    let options = RunOptions {
        idle_in_transaction_timeout: idle_limit,
        ..RunOptions::default()
    };
    let run = runner(vec![SqlMigration::new(
        "m1_alter",
        "ALTER TABLE live ADD COLUMN y int",
        "ALTER TABLE live DROP COLUMN y",
    )])
    .with_options(options)
    .with_observer(Arc::new(Stalls(Duration::from_secs(4))));
    let service_reads = async {
        // 1.5 s past the idle limit, a read of the table waits 0.2 s at most.
        tokio::time::sleep(idle_limit + Duration::from_millis(1500)).await;
        sqlx::raw_sql("SET lock_timeout = '200ms'; SELECT count(*) FROM live")
            .execute(&mut service)
            .await
            .map(drop)
    };
    let (ran, read) = tokio::join!(run.up(&orm, None), service_reads);
    read.unwrap();
    assert!(ran.is_err(), "{ran:?}");
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'live'::regclass AND attnum > 0",
    )
    .fetch_all(&mut service)
    .await
    .unwrap();
    assert_eq!(columns, ["x"]);
}

/// A plain pool of one connection (sqlx's defaults) tests its connection before use and
/// replaces it after a failed test or at its lifetime, by itself: the run's advisory lock and
/// settings would go with it, unseen. So the run takes a session of its own, not that pool's.
#[tokio::test]
async fn a_plain_pool_of_one_is_not_taken_for_the_runs_own_session() {
    use migration::sea_orm::{ConnectionTrait, SqlxPostgresConnector, Statement};
    let db = TestDatabase::empty().await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options())
        .await
        .unwrap();
    let orm = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
    let runs = backends_of_a_run(&orm).await;
    let row = orm
        .query_one_raw(Statement::from_string(
            orm.get_database_backend(),
            "SELECT pg_backend_pid()",
        ))
        .await
        .unwrap()
        .unwrap();
    let pools_own: i32 = row.try_get_by_index(0).unwrap();
    assert_eq!(runs.len(), 1);
    assert_ne!(runs[0], pools_own);
}

/// A migration run in a transaction that ends it itself (a COMMIT in its SQL) would go on
/// outside any transaction, and be recorded as if applied whole: the run fails instead, naming
/// what happened, and the migration stays pending.
#[tokio::test]
async fn a_migration_that_ends_the_runners_transaction_itself_is_not_recorded() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let run = runner(vec![SqlMigration::new(
        "m1_commits",
        "CREATE TABLE a (x int); COMMIT; CREATE TABLE b (y int)",
        "DROP TABLE b; DROP TABLE a",
    )]);
    let error = run.up(&orm, None).await.unwrap_err().to_string();
    assert!(
        error.contains("ended the transaction the runner opened"),
        "{error}"
    );
    let states = run.status(&orm).await.unwrap();
    assert!(!states[0].is_applied(), "{states:?}");
}

/// A run that waits for the migration lock says who holds it, once, after
/// `LOCK_WAIT_NOTICE`; any session can take the key (advisory locks need no privilege), and a
/// silent wait looked like a hang.
#[tokio::test]
async fn a_run_waiting_for_the_lock_says_who_holds_it() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut holder = common::holding_the_migration_lock(&db).await;
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let recorder = Recorder::new();
    let run = tokio::spawn({
        let runner = runner(vec![SqlMigration::new(
            "m1_people",
            "CREATE TABLE people (id int)",
            "DROP TABLE people",
        )])
        .with_observer(recorder.clone());
        async move { runner.up(&orm, None).await }
    });
    let started = std::time::Instant::now();
    let said = async || {
        let events = recorder.events();
        events
            .iter()
            .find(|event| event.starts_with("waiting for the lock"))
            .cloned()
    };
    let line = eventually("the notice", Duration::from_secs(10), said)
        .await
        .unwrap();
    assert!(
        line.contains(&format!("backend {holder_pid} (role ")),
        "{line}"
    );
    assert!(
        started.elapsed() >= migration::LOCK_WAIT_NOTICE,
        "said after {:?}",
        started.elapsed()
    );
    // Held on through several more tries (every 0.5 s): still said once.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(run.await.unwrap().unwrap(), ["m1_people"]);
    let notices = recorder.events();
    let waits = notices.iter().filter(|event| event.starts_with("waiting"));
    assert_eq!(waits.count(), 1, "{notices:?}");
}

/// A run whose session lost the migration lock (here a migration lets go of every advisory lock)
/// stops before the next migration: another run may have taken the lock and be running it.
#[tokio::test]
async fn a_run_that_lost_the_lock_stops_before_the_next_migration() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let runner = runner(vec![
        SqlMigration::new("m1_lets_go", "SELECT pg_advisory_unlock_all()", "SELECT 1")
            .without_transaction(),
        SqlMigration::new("m2_next", "CREATE TABLE next (x int)", "DROP TABLE next"),
    ]);
    let error = runner.up(&orm, None).await.unwrap_err();
    assert!(matches!(error, migration::RunError::LockLost), "{error}");
    let mut conn = connect(&db).await;
    assert_eq!(tables(&mut conn, &["next"]).await, [false]);
    assert_eq!(
        statuses(&runner, &orm).await,
        ["applied m1_lets_go", "pending m2_next"]
    );
}

/// A rollback without a transaction that stops part-way leaves the migration marked: `status`
/// says `rolling-back`, and `up` refuses rather than take the half-undone migration for whole
/// (before, it said "up to date"). `down` again finishes the rollback; `accept` clears the mark
/// instead, for someone who checked the schema.
#[tokio::test]
async fn a_rollback_stopped_part_way_is_finished_before_up_runs() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    // Its down commits a first step, then stops while `stop_here` exists.
    let parts = SqlMigration::new(
        "m1_parts",
        "CREATE TABLE IF NOT EXISTS p1 (x int); CREATE TABLE IF NOT EXISTS p2 (x int)",
        "DROP TABLE IF EXISTS p2; COMMIT; \
         DO $$ BEGIN IF to_regclass('stop_here') IS NOT NULL THEN \
             RAISE EXCEPTION 'stopped part-way'; END IF; END $$; \
         DROP TABLE IF EXISTS p1",
    )
    .without_transaction();
    let runner = runner(vec![parts]);
    assert_eq!(runner.up(&orm, None).await.unwrap(), ["m1_parts"]);
    let mut conn = connect(&db).await;
    let tables = async |conn: &mut PgConnection| -> Vec<Option<String>> {
        sqlx::query_scalar("SELECT to_regclass(name)::text FROM unnest(ARRAY['p1', 'p2']) AS name")
            .fetch_all(conn)
            .await
            .unwrap()
    };
    let statuses = async || -> Vec<String> {
        runner
            .status(&orm)
            .await
            .unwrap()
            .iter()
            .map(|state| state.status.to_string())
            .collect()
    };
    let stop_here = async |conn: &mut PgConnection, sql: &str| {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(conn)
            .await
            .unwrap();
    };

    for finish in ["accept", "down"] {
        stop_here(&mut conn, "CREATE TABLE stop_here ()").await;
        let error = runner.down(&orm, 1).await.unwrap_err();
        assert!(error.to_string().contains("stopped part-way"), "{error}");
        assert_eq!(tables(&mut conn).await, [Some("p1".to_owned()), None]);
        assert_eq!(statuses().await, ["rolling-back"]);
        let refused = runner.up(&orm, None).await.unwrap_err();
        assert!(
            matches!(&refused, migration::RunError::RollbackUnfinished(name) if name == "m1_parts"),
            "{refused}"
        );
        assert_eq!(tables(&mut conn).await, [Some("p1".to_owned()), None]);
        stop_here(&mut conn, "DROP TABLE stop_here").await;
        if finish == "accept" {
            // Someone checked (here: put p2 back): the mark goes, up finds nothing to do.
            stop_here(&mut conn, "CREATE TABLE p2 (x int)").await;
            let accepted = runner.accept(&orm, "m1_parts").await.unwrap();
            assert!(
                matches!(accepted, migration::Accepted::RollbackCleared(_)),
                "{accepted:?}"
            );
            assert_eq!(statuses().await, ["applied"]);
            assert!(runner.up(&orm, None).await.unwrap().is_empty());
        } else {
            assert_eq!(runner.down(&orm, 1).await.unwrap(), ["m1_parts"]);
            assert_eq!(tables(&mut conn).await, [None, None]);
            assert_eq!(statuses().await, ["pending"]);
            assert_eq!(runner.up(&orm, None).await.unwrap(), ["m1_parts"]);
            assert_eq!(statuses().await, ["applied"]);
        }
    }
}

/// `(name, status)` of every migration `runner` knows or the database records.
async fn statuses(runner: &Runner, orm: &migration::sea_orm::DatabaseConnection) -> Vec<String> {
    runner
        .status(orm)
        .await
        .unwrap()
        .iter()
        .map(|state| format!("{} {}", state.status, state.name))
        .collect()
}

/// Which of `names` exist as tables.
async fn tables(conn: &mut PgConnection, names: &[&str]) -> Vec<bool> {
    sqlx::query_scalar("SELECT to_regclass(name) IS NOT NULL FROM unnest($1::text[]) AS name")
        .bind(names)
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Migrations around one without a transaction whose `up` commits a first step (`p1`), then
/// stops while table `stop_here` exists, before its second (`p2`).
fn around_an_up_that_stops_part_way(stop_check: bool) -> Runner {
    let up = if stop_check {
        "CREATE TABLE IF NOT EXISTS p1 (x int); COMMIT; \
         DO $$ BEGIN IF to_regclass('stop_here') IS NOT NULL THEN \
             RAISE EXCEPTION 'stopped part-way'; END IF; END $$; \
         CREATE TABLE IF NOT EXISTS p2 (x int)"
    } else {
        // The file mended after a failed run.
        "CREATE TABLE IF NOT EXISTS p1 (x int); CREATE TABLE IF NOT EXISTS p2 (x int)"
    };
    runner(vec![
        SqlMigration::new(
            "m1_before",
            "CREATE TABLE before (x int)",
            "DROP TABLE before",
        ),
        SqlMigration::new(
            "m2_parts",
            up,
            "DROP TABLE IF EXISTS p2; DROP TABLE IF EXISTS p1",
        )
        .without_transaction(),
        SqlMigration::new("m3_after", "CREATE TABLE after (x int)", "DROP TABLE after"),
    ])
}

/// An `up` without a transaction that stops part-way leaves the migration `applying`, not
/// `pending` (before, `status` said pending, and `down` rolled back the migration before it,
/// leaving the half-applied one in force): `down` rolls it back first, and `up` runs it again.
#[tokio::test]
async fn an_up_stopped_part_way_is_applying_and_down_rolls_it_back_first() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut conn = connect(&db).await;
    let runner = around_an_up_that_stops_part_way(true);
    let all = ["before", "p1", "p2", "after"];
    sqlx::query("CREATE TABLE stop_here ()")
        .execute(&mut conn)
        .await
        .unwrap();

    let error = runner.up(&orm, None).await.unwrap_err();
    assert!(error.to_string().contains("stopped part-way"), "{error}");
    assert_eq!(tables(&mut conn, &all).await, [true, true, false, false]);
    assert_eq!(
        statuses(&runner, &orm).await,
        ["applied m1_before", "applying m2_parts", "pending m3_after"]
    );
    // No checksum meanwhile: a binary from before the mark refuses it as applied by another
    // tool, rather than take it for whole.
    let checksum: Option<String> =
        sqlx::query_scalar("SELECT checksum FROM seaql_migrations WHERE version = 'm2_parts'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(checksum, None);

    assert_eq!(runner.down(&orm, 1).await.unwrap(), ["m2_parts"]);
    assert_eq!(tables(&mut conn, &all).await, [true, false, false, false]);
    assert_eq!(
        statuses(&runner, &orm).await,
        ["applied m1_before", "pending m2_parts", "pending m3_after"]
    );

    // Stopped again, then run again once nothing stops it: it carries on, and so does the run.
    runner.up(&orm, None).await.unwrap_err();
    sqlx::query("DROP TABLE stop_here")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        runner.up(&orm, None).await.unwrap(),
        ["m2_parts", "m3_after"]
    );
    assert_eq!(tables(&mut conn, &all).await, [true, true, true, true]);
    assert_eq!(
        statuses(&runner, &orm).await,
        ["applied m1_before", "applied m2_parts", "applied m3_after"]
    );
}

/// An `applying` migration is not drift when its file was mended after the failed run: the run
/// that finishes it records the mended file's checksum. `accept` takes it as finished instead,
/// for someone who checked the schema.
#[tokio::test]
async fn an_applying_migration_is_finished_by_its_mended_file_or_accepted() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut conn = connect(&db).await;
    let failing = around_an_up_that_stops_part_way(true);
    let mended = around_an_up_that_stops_part_way(false);
    let checksum_of = |runner: &Runner| runner.migrations()[1].checksum();
    assert_ne!(checksum_of(&failing), checksum_of(&mended));
    sqlx::query("CREATE TABLE stop_here ()")
        .execute(&mut conn)
        .await
        .unwrap();

    for finish in ["mended", "accept"] {
        failing.up(&orm, None).await.unwrap_err();
        assert_eq!(
            statuses(&mended, &orm).await,
            ["applied m1_before", "applying m2_parts", "pending m3_after"]
        );
        if finish == "mended" {
            assert_eq!(mended.up(&orm, Some(1)).await.unwrap(), ["m2_parts"]);
        } else {
            sqlx::query("CREATE TABLE p2 (x int)")
                .execute(&mut conn)
                .await
                .unwrap();
            let accepted = mended.accept(&orm, "m2_parts").await.unwrap();
            assert_eq!(
                accepted,
                migration::Accepted::Finished(checksum_of(&mended))
            );
        }
        let states = mended.status(&orm).await.unwrap();
        assert_eq!(states[1].status, migration::MigrationStatus::Applied);
        assert_eq!(states[1].recorded, Some(checksum_of(&mended)));
        assert_eq!(mended.up(&orm, None).await.unwrap(), ["m3_after"]);
        assert_eq!(
            mended.down(&orm, 2).await.unwrap(),
            ["m3_after", "m2_parts"]
        );
    }
}

/// A rollback of an `applying` migration that stops before changing anything (its down
/// refuses) leaves both marks: `accept` then clears only the rollback's, so the migration is
/// `applying` again (never taken as finished at once, which would have `up` skip its missing
/// part); a second `accept`, for someone who finished that part, takes it as finished.
#[tokio::test]
async fn accepting_a_stopped_rollback_of_an_applying_migration_leaves_it_applying() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut conn = connect(&db).await;
    let runner = runner(vec![
        SqlMigration::new(
            "m1_parts",
            "CREATE TABLE IF NOT EXISTS p1 (x int); COMMIT; \
             DO $$ BEGIN IF to_regclass('stop_here') IS NOT NULL THEN \
                 RAISE EXCEPTION 'stopped part-way'; END IF; END $$; \
             CREATE TABLE IF NOT EXISTS p2 (x int)",
            "DO $$ BEGIN IF to_regclass('stop_here') IS NOT NULL THEN \
                 RAISE EXCEPTION 'refused'; END IF; END $$; \
             DROP TABLE IF EXISTS p2; DROP TABLE IF EXISTS p1",
        )
        .without_transaction(),
    ]);
    sqlx::query("CREATE TABLE stop_here ()")
        .execute(&mut conn)
        .await
        .unwrap();
    runner.up(&orm, None).await.unwrap_err();
    runner.down(&orm, 1).await.unwrap_err();
    assert_eq!(statuses(&runner, &orm).await, ["rolling-back m1_parts"]);

    let accepted = runner.accept(&orm, "m1_parts").await.unwrap();
    assert_eq!(accepted, migration::Accepted::RollbackClearedStillApplying);
    assert_eq!(statuses(&runner, &orm).await, ["applying m1_parts"]);
    // Someone finished its part by hand: a second accept takes it as finished.
    sqlx::query("CREATE TABLE p2 (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let accepted = runner.accept(&orm, "m1_parts").await.unwrap();
    assert_eq!(
        accepted,
        migration::Accepted::Finished(runner.migrations()[0].checksum())
    );
    assert_eq!(statuses(&runner, &orm).await, ["applied m1_parts"]);
    assert!(runner.up(&orm, None).await.unwrap().is_empty());
}

/// Two migrations of one name: the second is refused, with or without a transaction, and
/// leaves nothing behind (the history's primary key refused it before the `applying` mark's
/// upserts; without a transaction, only after it had run).
#[tokio::test]
async fn a_second_migration_of_the_same_name_is_refused() {
    for transaction in [true, false] {
        let db = TestDatabase::empty().await.unwrap();
        let orm = db.connect().await;
        let twin = |table: &'static str| {
            let migration = SqlMigration::new("m1_twin", table, "SELECT 1");
            if transaction {
                migration
            } else {
                migration.without_transaction()
            }
        };
        let error = runner(vec![
            twin("CREATE TABLE first (x int)"),
            twin("CREATE TABLE second (x int)"),
        ])
        .up(&orm, None)
        .await
        .unwrap_err();
        assert!(
            error.to_string().contains("recorded as applied already"),
            "{transaction}: {error}"
        );
        let mut conn = connect(&db).await;
        // Its work is rolled back with its record in a transaction; without one, its mark is
        // refused before it runs.
        let second = tables(&mut conn, &["second"]).await;
        assert_eq!(second, [false], "{transaction}");
    }
}

/// `down_to` ends at the same place however often it runs: after a rollback that failed
/// part-way through the list, running it again rolls back what is left and keeps `version`
/// (where `down 2` again would have rolled back one more than asked).
#[tokio::test]
async fn down_to_a_version_stops_there_however_often_it_runs() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let mut conn = connect(&db).await;
    let runner = runner(vec![
        SqlMigration::new("m1_kept", "CREATE TABLE kept (x int)", "DROP TABLE kept"),
        SqlMigration::new(
            "m2_refuses",
            "CREATE TABLE refuses (x int)",
            "DO $$ BEGIN IF to_regclass('stop_here') IS NOT NULL THEN \
                 RAISE EXCEPTION 'refused'; END IF; END $$; DROP TABLE refuses",
        ),
        SqlMigration::new("m3_last", "CREATE TABLE last (x int)", "DROP TABLE last"),
        SqlMigration::new(
            "m4_pending",
            "CREATE TABLE pending (x int)",
            "DROP TABLE pending",
        ),
    ]);
    let unknown = runner.down_to(&orm, "m9_nowhere").await.unwrap_err();
    assert!(
        matches!(&unknown, migration::RunError::NotInThisBinary(name) if name == "m9_nowhere"),
        "{unknown}"
    );
    assert_eq!(runner.up(&orm, Some(3)).await.unwrap().len(), 3);
    sqlx::query("CREATE TABLE stop_here ()")
        .execute(&mut conn)
        .await
        .unwrap();

    let error = runner.down_to(&orm, "m1_kept").await.unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
    sqlx::query("DROP TABLE stop_here")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        runner.down_to(&orm, "m1_kept").await.unwrap(),
        ["m2_refuses"]
    );
    assert!(runner.down_to(&orm, "m1_kept").await.unwrap().is_empty());
    assert_eq!(
        statuses(&runner, &orm).await,
        [
            "applied m1_kept",
            "pending m2_refuses",
            "pending m3_last",
            "pending m4_pending"
        ]
    );
    assert_eq!(
        tables(&mut conn, &["kept", "refuses", "last"]).await,
        [true, false, false]
    );
}

/// A `statement_timeout` the database sets for every session (a limit meant for the service)
/// does not cut a migration short, with or without a transaction.
#[tokio::test]
async fn a_databases_statement_timeout_does_not_cut_a_migration_short() {
    let db = TestDatabase::empty().await.unwrap();
    let mut conn = connect(&db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET statement_timeout = '100ms'",
        db.name()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let orm = db.connect().await;
    let slow = SqlMigration::new("m1_slow", "SELECT pg_sleep(0.3)", "SELECT pg_sleep(0.3)");
    let slow_alone = SqlMigration::new("m2_slow_alone", "SELECT pg_sleep(0.3)", "SELECT 1")
        .without_transaction();
    let runner = runner(vec![slow, slow_alone]);
    assert_eq!(
        runner.up(&orm, None).await.unwrap(),
        ["m1_slow", "m2_slow_alone"]
    );
    assert_eq!(runner.down(&orm, 2).await.unwrap().len(), 2);
}

/// What the runner sets for every migration is what `RUN_SETTINGS` lists (the CLI refuses those
/// in the URL's options), with `lock_timeout` and `client_connection_check_interval`: each one
/// the session's startup options set is overridden inside every migration, with or without a
/// transaction, and nothing else is set (pg_settings' session values); but a
/// `client_connection_check_interval` the startup options set is kept, where the run's own 1 s
/// would otherwise apply.
#[tokio::test]
async fn the_runner_sets_what_run_settings_lists_and_keeps_the_urls_check_interval() {
    // Every setting the run may set, read inside the migration (custom ones, such as the force
    // setting, are hidden from pg_settings but not from current_setting), and every setting
    // with a session value but the transaction's own.
    let watched: Vec<&str> = migration::RUN_SETTINGS
        .iter()
        .copied()
        .chain(["lock_timeout", "client_connection_check_interval"])
        .collect();
    let record = |table: &str| -> &'static str {
        let names = watched
            .iter()
            .map(|name| format!("'{name}'"))
            .collect::<Vec<_>>();
        Box::leak(
            format!(
                "CREATE TABLE {table}_values AS SELECT name, current_setting(name, true) AS value \
                 FROM unnest(ARRAY[{}]) AS name; \
                 CREATE TABLE {table}_session AS SELECT name::text FROM pg_settings \
                 WHERE source = 'session' AND name NOT IN \
                 ('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')",
                names.join(", ")
            )
            .into_boxed_str(),
        )
    };
    let migrations = || {
        vec![
            SqlMigration::new("m1_in_transaction", record("in_transaction"), "SELECT 1"),
            SqlMigration::new("m2_alone", record("alone"), "SELECT 1").without_transaction(),
        ]
    };
    for with_options in [false, true] {
        let db = TestDatabase::empty().await.unwrap();
        let mut conn = connect(&db).await;
        let known: Vec<String> = sqlx::query_scalar("SELECT name::text FROM pg_settings")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let can_check = sqlx::query("SET client_connection_check_interval = 1000")
            .execute(&mut conn)
            .await
            .is_ok();
        // Values none of the run's settings takes, written as current_setting shows them; the
        // first of RUN_SETTINGS is the force setting, a custom one.
        let mut markers = vec![
            (migration::RUN_SETTINGS[0], "marker"),
            ("statement_timeout", "4242ms"),
            ("idle_in_transaction_session_timeout", "4243ms"),
            ("default_transaction_isolation", "serializable"),
            ("lock_timeout", "4244ms"),
        ];
        if known.iter().any(|name| name == "transaction_timeout") {
            markers.push(("transaction_timeout", "4245ms"));
        }
        // Every listed setting this server has gets one.
        for name in migration::RUN_SETTINGS {
            assert!(
                markers.iter().any(|(marked, _)| *marked == name)
                    || !known.iter().any(|known| known == name)
                        && name != migration::RUN_SETTINGS[0],
                "{name} has no marker"
            );
        }
        let mut options = db.options();
        if with_options {
            let mut startup = markers.clone();
            startup.extend(can_check.then_some(("client_connection_check_interval", "5s")));
            options = options.options(startup);
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let orm = migration::sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
        runner(migrations()).up(&orm, None).await.unwrap();

        // The runner keeps the startup options' interval; else sets its own where it can.
        let runner_sets_interval = can_check && !with_options;
        let mut expected: Vec<String> = watched
            .iter()
            .map(|name| name.to_string())
            .filter(|name| known.contains(name))
            .filter(|name| name != "client_connection_check_interval" || runner_sets_interval)
            .collect();
        expected.sort();
        for table in ["in_transaction", "alone"] {
            let context = format!("{table}, startup options: {with_options}");
            let mut session: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM {table}_session"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            session.sort();
            assert_eq!(session, expected, "{context}");
            let values: Vec<(String, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(
                format!("SELECT name, value FROM {table}_values"),
            ))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let value = |name: &str| {
                values
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, value)| value.clone())
            };
            for &(name, marker) in &markers {
                let seen = value(name);
                assert!(seen.is_some(), "{context}: {name} unset");
                assert_ne!(seen.as_deref(), Some(marker), "{context}: {name} kept");
            }
            let interval = value("client_connection_check_interval");
            if can_check {
                let wanted = if with_options { "5s" } else { "1s" };
                assert_eq!(interval.as_deref(), Some(wanted), "{context}");
            }
        }
    }
}
