//! Migrations that cannot hurt: a down refuses to drop a table holding rows unless forced, and a
//! migration that cannot get a table's lock gives up after `MIGRATION_LOCK_TIMEOUT_MS`, changing
//! nothing, instead of stalling every query queued behind it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use std::time::{Duration, Instant};

use common::{HASH, connect, insert, migration_binary, schema_snapshot, text};
use counseling_testkit::TestDatabase;
use counseling_testkit::fixtures::eventually;
use migration::sea_orm::sqlx::{self, Connection, PgConnection};

async fn users(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// `migration status` as (applied, pending) counts.
fn status(url: &str) -> (usize, usize) {
    let output = migration_binary(&["status"], &[("DATABASE_URL", url)]);
    let stdout = text(&output.stdout);
    (
        stdout.lines().filter(|l| l.starts_with("applied")).count(),
        stdout.lines().filter(|l| l.starts_with("pending")).count(),
    )
}

#[tokio::test]
async fn down_refuses_to_drop_users_holding_rows_unless_forced() {
    let db = TestDatabase::migrated().await.unwrap();
    let url = db.owner_url();
    let mut conn = connect(&db).await;
    for i in 0..12 {
        insert(&mut conn, &format!(r"\school\user{i}"), HASH)
            .await
            .unwrap();
    }
    let all = migration::migrations().len();

    // Every down before the first migration's drops no table and needs no --force; then the
    // first one refuses. Each down is its own transaction: those before the refusal stay done.
    let refused = migration_binary(&["down", &all.to_string()], &[("DATABASE_URL", &url)]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "refusing to drop users: 12 rows would be deleted; run `migration down --force`"
        ),
        "{stderr}"
    );
    // PostgreSQL's words only: not sqlx's " at line N" (of PostgreSQL's C source) after them.
    let failed = stderr
        .lines()
        .find(|line| line.contains("refusing to drop"));
    assert!(failed.unwrap().ends_with("to delete them"), "{stderr}");
    // The same `down N` again would count from the newest migration still applied.
    assert!(
        stderr.contains("see `migration status`, then roll back only what is left"),
        "{stderr}"
    );
    assert_eq!(
        text(&refused.stdout).lines().count(),
        all - 1,
        "{}",
        text(&refused.stdout)
    );
    assert_eq!(status(&url), (1, all - 1));
    assert_eq!(users(&mut conn).await, 12);

    let forced = migration_binary(&["down", "--force"], &[("DATABASE_URL", &url)]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(
        text(&forced.stdout).trim(),
        "rolled back m20251220_000001_create_users"
    );
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('users')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(table, None);
}

#[tokio::test]
async fn an_empty_users_table_is_dropped_without_force() {
    let db = TestDatabase::migrated().await.unwrap();
    let all = migration::migrations().len();
    let output = migration_binary(
        &["down", &all.to_string()],
        &[("DATABASE_URL", &db.owner_url())],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(status(&db.owner_url()), (0, all));
}

/// A session holding ROW EXCLUSIVE on `users` in an open transaction, until [`release`] (or
/// until it is dropped).
async fn lock_users(db: &TestDatabase) -> PgConnection {
    holding(db, "LOCK TABLE users IN ROW EXCLUSIVE MODE").await
}

/// A session that ran `lock` in an open transaction, until [`release`] (or until it is dropped).
async fn holding(db: &TestDatabase, lock: &'static str) -> PgConnection {
    let mut holder = connect(db).await;
    for statement in ["BEGIN", lock] {
        sqlx::query(statement).execute(&mut holder).await.unwrap();
    }
    holder
}

/// Ends the holder's transaction, and its locks with it.
async fn release(holder: &mut PgConnection) {
    sqlx::query("ROLLBACK").execute(holder).await.unwrap();
}

/// Runs `migration <args>` with a 300 ms lock timeout while another session holds a lock on
/// `users`; it must fail within about that long, say why (`outcome`: what became of the
/// migration that waited), and leave the schema as it was.
async fn fails_cleanly_while_users_is_locked(db: &TestDatabase, args: &[&str], outcome: &str) {
    let url = db.owner_url();
    let mut conn = connect(db).await;
    let before = (schema_snapshot(&mut conn).await, status(&url));

    // ROW EXCLUSIVE (what any INSERT or UPDATE takes) conflicts with the ACCESS EXCLUSIVE an
    // ALTER or DROP TRIGGER needs and the SHARE ROW EXCLUSIVE of CREATE TRIGGER.
    let mut holder = lock_users(db).await;

    let started = Instant::now();
    let output = migration_binary(
        args,
        &[("DATABASE_URL", &url), ("MIGRATION_LOCK_TIMEOUT_MS", "300")],
    );
    let elapsed = started.elapsed();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a table stayed locked")
            && stderr.contains("for more than 300 ms")
            && stderr.contains("MIGRATION_LOCK_TIMEOUT_MS")
            && stderr.contains(outcome),
        "{stderr}"
    );
    // Without a transaction, the wait may have been a concurrent index build's.
    assert_eq!(
        stderr.contains("a transaction older than a concurrent index build"),
        outcome.contains("part-way"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // What to run next: `down N` again would roll back more than was asked.
    let again = match args[0] {
        "down" => "see `migration status`, then roll back only what is left",
        _ => "run the same command again",
    };
    assert!(stderr.contains(again), "{stderr}");
    release(&mut holder).await;

    // A migration without a transaction that stopped is marked as such (here it had changed
    // nothing yet): `status` shows a rollback as rolling back, no longer applied, until `down`
    // finishes it; an up as applying, no longer pending, until `up` runs it again or `down`
    // rolls it back.
    let part_way = outcome.contains("part-way");
    let rolling_back = args == ["down"] && part_way;
    let applying = args == ["up"] && part_way;
    assert_eq!(
        stderr.contains(" as applying (started, not finished"),
        applying,
        "{stderr}"
    );
    let (applied, pending) = before.1;
    let expected = (
        before.0,
        (
            applied - usize::from(rolling_back),
            pending - usize::from(applying),
        ),
    );
    assert_eq!(
        (schema_snapshot(&mut conn).await, status(&url)),
        expected,
        "nothing half-applied"
    );
    assert_eq!(
        listed(&url, "rolling-back").len(),
        usize::from(rolling_back)
    );
    assert_eq!(listed(&url, "applying").len(), usize::from(applying));
}

/// The migrations `migration status` shows as `status`.
fn listed(url: &str, status: &str) -> Vec<String> {
    let output = migration_binary(&["status"], &[("DATABASE_URL", url)]);
    text(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix(status)?.strip_prefix(' '))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn up_and_down_give_up_on_a_locked_table_after_the_lock_timeout() {
    let db = TestDatabase::migrated().await.unwrap();
    let url = db.owner_url();
    let down = || {
        let output = migration_binary(&["down"], &[("DATABASE_URL", &url)]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    };
    // The newest migration checks its rows outside a transaction (NOT VALID, then VALIDATE), so
    // what waited may have stopped part-way: said so, though here it changed nothing yet.
    let part_way = "runs without a transaction and may have stopped part-way";
    assert_eq!(
        migration::migrations().last().unwrap().name(),
        "m20261206_000001_username_hangul_o_yae"
    );
    fails_cleanly_while_users_is_locked(&db, &["down"], part_way).await;

    // The trigger before those (the ones after it run without a transaction) runs in one, both ways.
    let trigger = "m20261205_000002_users_id_and_created_at_fixed";
    let in_transaction = "the migration waiting for it changed nothing";
    let after_trigger = common::newest_first_from(trigger).len() - 1;
    for _ in 0..after_trigger {
        down();
    }
    fails_cleanly_while_users_is_locked(&db, &["down"], in_transaction).await;
    down();
    let all = migration::migrations().len();
    let pending = after_trigger + 1;
    assert_eq!(status(&url), (all - pending, pending));
    fails_cleanly_while_users_is_locked(&db, &["up"], in_transaction).await;

    common::up_to(&common::owner_orm(&db), trigger).await;
    assert_eq!(status(&url), (all - after_trigger, after_trigger));
    fails_cleanly_while_users_is_locked(&db, &["up"], part_way).await;
    // What stopped going up is the one to roll back (before, `down` took the one before it).
    let stopped = listed(&url, "applying");
    down();
    assert_eq!(listed(&url, "pending").first(), stopped.first());
    assert_eq!(status(&url), (all - after_trigger, after_trigger));
}

/// Backends of this database waiting for a lock.
/// Ends the sessions of this database that wait for a lock, as an administrator or a failover
/// would.
async fn end_lock_waiters(conn: &mut PgConnection) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .execute(conn)
    .await
    .unwrap();
}

async fn lock_waiters(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// `migration <args>` started (its output captured) with a 60 s lock timeout, longer than any
/// test takes to act on it, with the folder it runs in.
fn spawn_migration(db: &TestDatabase, args: &[&str]) -> (std::process::Child, tempfile::TempDir) {
    let url = db.owner_url();
    let variables = [
        ("DATABASE_URL", url.as_str()),
        ("MIGRATION_LOCK_TIMEOUT_MS", "60000"),
    ];
    let (mut command, dir) = common::migration_command(args, &variables);
    let run = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (run, dir)
}

/// [`spawn_migration`], started while a table it needs is locked ([`lock_users`], [`holding`])
/// and returned once it waits for that lock.
async fn run_waiting_for_a_lock(
    db: &TestDatabase,
    args: &[&str],
    watcher: &mut PgConnection,
) -> (std::process::Child, tempfile::TempDir) {
    let (run, dir) = spawn_migration(db, args);
    let waiting = async || lock_waiters(watcher).await == 1;
    eventually(
        "the run waits for the lock",
        Duration::from_secs(30),
        waiting,
    )
    .await
    .unwrap();
    (run, dir)
}

/// A run killed while it waits for a table's lock leaves no request queued on the server, which
/// would hold every query on the table up behind it until `lock_timeout`: the server sees its
/// client gone (`client_connection_check_interval`) and cancels the wait.
#[tokio::test]
async fn a_killed_run_stops_waiting_for_its_lock_on_the_server() {
    let db = TestDatabase::migrated().await.unwrap();
    let url = db.owner_url();
    let down = migration_binary(&["down"], &[("DATABASE_URL", &url)]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    let mut holder = lock_users(&db).await;
    let mut watcher = connect(&db).await;
    let (mut run, _dir) = run_waiting_for_a_lock(&db, &["up"], &mut watcher).await;
    run.kill().unwrap();
    run.wait().unwrap();
    let gone = async || lock_waiters(&mut watcher).await == 0;
    eventually("the server cancels the wait", Duration::from_secs(5), gone)
        .await
        .unwrap();
    release(&mut holder).await;
    // It runs without a transaction: killed, it reads as applying, never as pending, and runs
    // again from the start.
    let newest = migration::migrations().last().unwrap().name().to_owned();
    assert_eq!(listed(&url, "applying"), [newest.as_str()]);
    let up = migration_binary(&["up"], &[("DATABASE_URL", &url)]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(listed(&url, "applied").last(), Some(&newest));
    assert_eq!(status(&url), (migration::migrations().len(), 0));
}

/// A `down` whose session is lost mid-run (here its backend is terminated while it waits for
/// a lock) says to look at `status` before going on: `down N` again would count from the newest
/// migration still applied, and could roll back one nobody asked for. `down --to VERSION` ends
/// at VERSION however often it runs: that one says to run it again.
#[tokio::test]
async fn a_down_that_lost_its_session_says_whether_to_run_it_again() {
    let kept = migration::migrations()[0].name().to_owned();
    for args in [&["down"][..], &["down", "--to", &kept]] {
        let db = TestDatabase::migrated().await.unwrap();
        let mut holder = lock_users(&db).await;
        let mut watcher = connect(&db).await;
        let (run, _dir) = run_waiting_for_a_lock(&db, args, &mut watcher).await;
        end_lock_waiters(&mut watcher).await;
        let output = run.wait_with_output().unwrap();
        release(&mut holder).await;

        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("session was lost mid-run"), "{stderr}");
        let look_first = "see `migration status`, then roll back only what is left";
        let again = "run the same command again";
        let to = args.len() > 1;
        assert_eq!(stderr.contains(look_first), !to, "{args:?}: {stderr}");
        assert_eq!(stderr.contains(again), to, "{args:?}: {stderr}");
    }
}

/// An `accept` whose session is lost says to look at `status` before accepting again: a second
/// accept may do another thing than the first (take as finished a migration the first left
/// applying). Here its backend is ended while it waits for a lock on the history.
#[tokio::test]
async fn an_accept_that_lost_its_session_says_to_look_before_accepting_again() {
    let db = TestDatabase::migrated().await.unwrap();
    let mut holder = holding(&db, "LOCK TABLE seaql_migrations IN ACCESS EXCLUSIVE MODE").await;
    let version = migration::migrations()[0].name().to_owned();
    let mut watcher = connect(&db).await;
    let (run, _dir) = run_waiting_for_a_lock(&db, &["accept", &version], &mut watcher).await;
    end_lock_waiters(&mut watcher).await;
    let output = run.wait_with_output().unwrap();
    release(&mut holder).await;

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("session was lost mid-run"), "{stderr}");
    assert!(
        stderr.contains("see `migration status` first, and accept again only"),
        "{stderr}"
    );
    assert!(!stderr.contains("run the same command again"), "{stderr}");
}

/// A run whose session the server ends while it waits for the migration lock (it polls for it)
/// says its session was lost, though its pool may not have counted the broken connection out
/// yet: before, it said only what the server said.
#[tokio::test]
async fn a_run_ended_while_it_waits_for_the_migration_lock_says_its_session_was_lost() {
    let db = TestDatabase::migrated().await.unwrap();
    let _holder = common::holding_the_migration_lock(&db).await;
    let (run, _dir) = spawn_migration(&db, &["up"]);
    let mut watcher = connect(&db).await;
    let polling = async || {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND query LIKE '%pg_try_advisory_lock%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        count == 1
    };
    eventually("up polls for the lock", Duration::from_secs(30), polling)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE '%pg_try_advisory_lock%' \
         AND pid <> pg_backend_pid()",
    )
    .execute(&mut watcher)
    .await
    .unwrap();
    let output = run.wait_with_output().unwrap();

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("session was lost mid-run"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
}

#[test]
fn a_bad_lock_timeout_exits_2_naming_the_variable() {
    for bad in ["0", "-1", "soon", "2147483648"] {
        let output = migration_binary(
            &["status"],
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/db"),
                ("MIGRATION_LOCK_TIMEOUT_MS", bad),
            ],
        );
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("MIGRATION_LOCK_TIMEOUT_MS must be a whole number"),
            "{stderr}"
        );
    }
}

/// A row inserted by a transaction still open when `down` starts, committed while `down` waits
/// for the table: `down` must count it and refuse, never drop it with the table. (Without the
/// guard's lock it counted 0 rows, then its DROP waited for the insert and dropped the row.)
#[tokio::test]
async fn a_row_committed_while_down_waits_is_counted_never_dropped() {
    let db = TestDatabase::migrated().await.unwrap();
    let orm = db.connect().await;
    let newest_first = common::newest_first_from("m20251220_000001_create_users");
    let all_but_first = (newest_first.len() - 1) as u32;
    migration::roll_back(&orm, all_but_first).await.unwrap();

    let mut writer_conn = connect(&db).await;
    let mut writer = writer_conn.begin().await.unwrap();
    sqlx::query("INSERT INTO users (username, password_hash) VALUES ($1, $2)")
        .bind(r"\school\late")
        .bind(HASH)
        .execute(&mut *writer)
        .await
        .unwrap();

    let down = {
        let orm = orm.clone();
        tokio::spawn(async move {
            let options = migration::RunOptions {
                lock_timeout: Duration::from_secs(30),
                force: false,
                ..migration::RunOptions::default()
            };
            migration::roll_back_with(&orm, 1, options).await
        })
    };
    // Until the down waits for the writer's lock on users.
    let mut watcher = connect(&db).await;
    common::until_someone_waits_for_users(&mut watcher).await;
    writer.commit().await.unwrap();

    let error = down.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("refusing to drop users: 1 row would be deleted;"),
        "{error}"
    );
    assert_eq!(users(&mut watcher).await, 1, "the row is still there");
}
