//! The pool: configuration as asked, and behaviour when the database goes away and comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    connect, new_user, open_idle_connections, private_database, recorded_pool, scrape, settings_for,
};
use counseling_domain::{StoreError, Unavailability, UserRepository, Username};
use counseling_persistence::Database;
use counseling_persistence::{DatabaseSettings, PgUserRepository};
use counseling_testkit::fixtures::eventually;
use counseling_testkit::{PgCluster, TestDatabase};
use sea_orm::ConnectionTrait;
use sea_orm::sqlx::Connection;

/// Units of work that each hold a connection of the pool until released.
struct Holders {
    release: std::sync::Arc<tokio::sync::Notify>,
    units: Vec<tokio::task::JoinHandle<Result<(), StoreError>>>,
}

impl Holders {
    /// Lets the units finish, and checks that each committed.
    async fn release(self) {
        self.release.notify_waiters();
        for unit in self.units {
            unit.await.unwrap().unwrap();
        }
    }
}

/// Starts `count` units of work on `database` and returns once each holds its connection.
async fn hold_connections(database: &Database, count: usize) -> Holders {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(count);
    let units = (0..count)
        .map(|_| {
            let (database, release, held) = (database.clone(), release.clone(), held_tx.clone());
            tokio::spawn(async move {
                database
                    .transaction(|_unit| async move {
                        held.send(()).await.unwrap();
                        release.notified().await;
                        Ok::<_, StoreError>(())
                    })
                    .await
            })
        })
        .collect();
    for _ in 0..count {
        held_rx.recv().await.unwrap();
    }
    Holders { release, units }
}

/// Sessions of the pool named `application_name` on `test_db`, as the server counts them.
async fn server_sessions(test_db: &TestDatabase, application_name: &str) -> i64 {
    let admin = test_db.connect().await;
    admin
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
            [test_db.name().into(), application_name.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
}

#[tokio::test]
async fn the_pool_is_configured_as_the_settings_say() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings =
        DatabaseSettings::new(counseling_config::DatabaseUrl::parse(&test_db.url()).unwrap());
    settings.pool.min_connections = 2;
    settings.pool.max_connections = 3;
    settings.pool.acquire_timeout = Duration::from_millis(300);
    settings.pool.statement_timeout = Duration::from_millis(2500);
    settings.pool.lock_timeout = Duration::from_millis(700);
    settings.application_name = "pool-test".into();
    let database = connect(&settings);

    // The minimum: the server sees two sessions open without a single call.
    let two = async || server_sessions(&test_db, "pool-test").await == 2;
    eventually("the server seeing the minimum", Duration::from_secs(5), two)
        .await
        .unwrap();

    // The maximum: three units of work hold three sessions on the server, and a fourth caller
    // gets none: it gives up after the acquire timeout.
    let holders = hold_connections(&database, 3).await;
    assert_eq!(server_sessions(&test_db, "pool-test").await, 3);
    let users = PgUserRepository::new(database.clone());
    let started = Instant::now();
    let error = users
        .find_by_username(&Username::parse(r"\school\fourth").unwrap())
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(
        error,
        StoreError::Unavailable(Unavailability::PoolExhausted)
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "gave up after {waited:?}, not the acquire timeout"
    );
    assert_eq!(server_sessions(&test_db, "pool-test").await, 3);
    holders.release().await;

    for (setting, expected) in [
        ("statement_timeout", "2500ms"),
        ("lock_timeout", "700ms"),
        ("idle_in_transaction_session_timeout", "2500ms"),
        ("application_name", "pool-test"),
    ] {
        assert_eq!(
            database.server_setting(setting).await.unwrap(),
            expected,
            "{setting}"
        );
    }
    assert!(database.close(Duration::from_secs(5)).await);
    let none = async || server_sessions(&test_db, "pool-test").await == 0;
    eventually(
        "the server seeing the pool closed",
        Duration::from_secs(5),
        none,
    )
    .await
    .unwrap();
}

/// Holds an exclusive lock on `users` from another session until dropped.
async fn lock_users_table(test_db: &TestDatabase) -> sea_orm::DatabaseTransaction {
    use sea_orm::TransactionTrait;
    let admin = test_db.connect().await;
    let transaction = admin.begin().await.unwrap();
    transaction
        .execute_unprepared("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    transaction
}

#[tokio::test]
async fn a_statement_blocked_past_lock_timeout_is_a_lock_timeout() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings = settings_for(test_db.url());
    settings.pool.lock_timeout = Duration::from_millis(200);
    let users = PgUserRepository::new(connect(&settings));
    let _lock = lock_users_table(&test_db).await;
    let name = Username::parse(r"\school\locked").unwrap();
    assert_eq!(
        users.find_by_username(&name).await,
        Err(StoreError::Unavailable(Unavailability::LockTimeout))
    );
}

#[tokio::test]
async fn the_statement_timeout_cuts_long_queries_and_maps_to_timeout() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings = settings_for(test_db.url());
    settings.pool.statement_timeout = Duration::from_millis(200);
    settings.pool.lock_timeout = Duration::from_secs(10);
    settings.pool.min_connections = 0;
    let database = connect(&settings);
    let users = PgUserRepository::new(database.clone());
    users.list(None, 1).await.unwrap();
    assert_eq!(database.status().open, 1);
    let _lock = lock_users_table(&test_db).await;
    let started = Instant::now();
    assert_eq!(
        users
            .find_by_username(&Username::parse(r"\s\u").unwrap())
            .await,
        Err(StoreError::Unavailable(Unavailability::Timeout))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The server cancelled the statement; the connection is fine and is kept.
    assert_eq!(database.status().open, 1, "the connection was closed");
}

#[tokio::test]
async fn the_pool_starts_without_a_database() {
    // Nothing listens on port 1: building the pool must still succeed.
    let settings = settings_for("postgres://user:pw@127.0.0.1:1/db".into());
    let database = connect(&settings);
    let started = Instant::now();
    let error = database.ping(Duration::from_millis(500)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error,
        StoreError::Unavailable(Unavailability::ConnectionRefused)
    );
}

#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn stop_and_restart_the_server_the_same_repository_recovers() {
    let (cluster, _test_db, mut settings) = private_database().await;
    settings.pool.acquire_timeout = Duration::from_secs(1);
    let database = connect(&settings);
    let users = PgUserRepository::new(database.clone());
    let alice = users.create(new_user(r"\school\alice")).await.unwrap();

    cluster.stop().await.unwrap();

    let started = Instant::now();
    let outcome = database.ping(Duration::from_secs(1)).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "ping took {:?}",
        started.elapsed()
    );
    common::assert_server_gone(&outcome);

    let started = Instant::now();
    let outcome = users.find_by_id(alice.id).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "lookup took {:?}",
        started.elapsed()
    );
    common::assert_server_gone(&outcome);
    let name = Username::parse(r"\school\alice").unwrap();
    common::assert_server_gone(&users.find_by_username(&name).await);

    cluster.restart().await.unwrap();

    // The same pool and repository, not rebuilt. A connection that died with the old server may
    // fail once; within a few seconds everything works again.
    eventually(
        "recovery after restart",
        Duration::from_secs(5),
        async || {
            database.ping(Duration::from_secs(1)).await.is_ok()
                && users.find_by_id(alice.id).await.is_ok()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        users.find_by_username(&name).await.unwrap().map(|u| u.id),
        Some(alice.id)
    );
    users.create(new_user(r"\school\bob")).await.unwrap();
}

#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn a_crashed_server_is_unavailable_and_recovers() {
    let cluster = PgCluster::start().await.unwrap();
    let test_db = cluster.migrated_database().await.unwrap();
    let database = connect(&settings_for(test_db.url()));
    database.ping(Duration::from_secs(1)).await.unwrap();
    cluster.crash().await.unwrap();
    common::assert_server_gone(&database.ping(Duration::from_secs(1)).await);
    cluster.restart().await.unwrap();
    recovers(&database, "after restart").await;
}

#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn ping_returns_within_its_timeout_while_the_server_is_frozen() {
    let cluster = PgCluster::start().await.unwrap();
    let test_db = cluster.migrated_database().await.unwrap();
    let database = connect(&settings_for(test_db.url()));
    database.ping(Duration::from_secs(1)).await.unwrap();

    cluster.freeze().unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let error = database.ping(Duration::from_millis(700)).await.unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1000), "ping took {took:?}");
        assert_eq!(error, StoreError::Unavailable(Unavailability::Timeout));
    }
    cluster.thaw().unwrap();

    recovers(&database, "after thaw").await;
}

/// Stopped (SIGSTOP) server processes, continued when dropped, even if the test fails.
struct StoppedBackends(Vec<i32>);

impl StoppedBackends {
    fn stop(pids: Vec<i32>) -> Self {
        let stopped = Self(pids);
        stopped.signal("-STOP");
        stopped
    }

    /// The postmaster alone: new connections are accepted (by the kernel) but never answered,
    /// while the sessions already open go on serving.
    fn postmaster_of(cluster: &PgCluster) -> Self {
        let pid = cluster.postmaster_pid().unwrap();
        Self::stop(vec![i32::try_from(pid).unwrap()])
    }

    fn signal(&self, signal: &str) {
        let pids = self.0.iter().map(i32::to_string);
        let status = std::process::Command::new("kill")
            .arg(signal)
            .args(pids)
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for StoppedBackends {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

/// The pids of `test_db`'s sessions other than the query's own, in `state` if given.
async fn backends(test_db: &TestDatabase, state: Option<&str>) -> Vec<i32> {
    let admin = test_db.connect().await;
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() \
             AND ($2::text IS NULL OR state = $2)",
            [test_db.name().into(), state.map(str::to_owned).into()],
        ))
        .await
        .unwrap();
    let pids = rows.iter().map(|row| row.try_get_by_index::<i32>(0));
    pids.collect::<Result<_, _>>().unwrap()
}

/// Idle connections that stopped answering while the server itself is fine (their processes
/// hung, or a NAT dropped them while idle: nothing tells the client) are found by the bounded
/// check before use and replaced, and those idle beside them without a check each: each check
/// of the database answers within its 1 s instead of waiting on them until its deadline. A
/// connection in use meanwhile is no suspect: it is used again once given back.
#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn idle_connections_that_stopped_answering_are_replaced_in_time() {
    // A cluster of its own: its server processes are stopped.
    let (_cluster, test_db, mut settings) = private_database().await;
    settings.pool.ping_if_idle_for = Duration::from_millis(100);
    let database = connect(&settings);
    open_idle_connections(&database, 4).await;
    let in_use = hold_connections(&database, 1).await;
    let [held] = backends(&test_db, Some("idle in transaction")).await[..] else {
        panic!("one connection is held");
    };
    let idle: Vec<i32> = backends(&test_db, None).await;
    let idle: Vec<i32> = idle.into_iter().filter(|&pid| pid != held).collect();
    assert_eq!(idle.len(), 3, "the pool's idle connections");
    let stopped = StoppedBackends::stop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..2 {
        database.ping(Duration::from_secs(1)).await.unwrap();
    }
    in_use.release().await;
    // Given back last, it is drawn first, checked (it was out for long) and kept.
    let again = hold_connections(&database, 1).await;
    let reused = backends(&test_db, Some("idle in transaction")).await;
    assert_eq!(reused, [held], "the connection in use was discarded");
    again.release().await;
    drop(stopped);
}

#[tokio::test]
async fn an_exhausted_pool_is_reported_as_such_within_the_timeout() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings = settings_for(test_db.url());
    settings.pool.max_connections = 2;
    settings.pool.acquire_timeout = Duration::from_millis(300);
    let database = connect(&settings);
    // Two units of work hold both connections until released.
    let holders = hold_connections(&database, 2).await;
    let started = Instant::now();
    let error = database.ping(Duration::from_millis(500)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(800));
    assert_eq!(
        error,
        StoreError::Unavailable(Unavailability::PoolExhausted)
    );
    // A repository call says the same once its acquire timeout has passed.
    let users = PgUserRepository::new(database.clone());
    assert_eq!(
        users.list(None, 1).await,
        Err(StoreError::Unavailable(Unavailability::PoolExhausted))
    );
    holders.release().await;
}

/// `database` answers pings again within 5 s.
async fn recovers(database: &Database, when: &str) {
    let what = format!("recovery {when}");
    eventually(&what, Duration::from_secs(5), async || {
        database.ping(Duration::from_secs(1)).await.is_ok()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_pool_opens_its_minimum_and_closes_idle_connections_above_it() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings = settings_for(test_db.url());
    settings.pool.min_connections = 2;
    settings.pool.max_connections = 5;
    settings.pool.idle_timeout = Duration::from_secs(1);
    let database = connect(&settings);
    // Lazy, yet the minimum opens in the background without any call.
    let two_open = async || database.status().open == 2;
    eventually("the minimum of 2 open", Duration::from_secs(5), two_open)
        .await
        .unwrap();

    // A burst opens all five ...
    open_idle_connections(&database, 5).await;
    assert_eq!(database.status().open, 5, "{:?}", database.status());
    // ... and once they have sat idle past the idle timeout, the pool is back to its minimum.
    let two_open = async || database.status().open == 2;
    eventually("back to the minimum", Duration::from_secs(5), two_open)
        .await
        .unwrap();
    assert!(database.close(Duration::from_secs(5)).await);
    assert_eq!(database.status().open, 0);
}

#[tokio::test]
async fn connections_are_replaced_after_their_maximum_lifetime() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings = settings_for(test_db.url());
    settings.pool.max_connections = 1;
    settings.pool.max_lifetime = Duration::from_secs(1);
    settings.application_name = "lifetime-test".into();
    let database = connect(&settings);
    let admin = test_db.connect().await;
    let backend = || async {
        admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'lifetime-test' \
                 ORDER BY backend_start DESC LIMIT 1",
            ))
            .await
            .unwrap()
            .map(|row| row.try_get_by_index::<i32>(0).unwrap())
    };
    database.ping(Duration::from_secs(1)).await.unwrap();
    let first = backend().await.expect("the pool's connection");
    database.ping(Duration::from_secs(1)).await.unwrap();
    assert_eq!(backend().await, Some(first), "reused within its lifetime");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    database.ping(Duration::from_secs(1)).await.unwrap();
    let second = backend().await.expect("the pool's connection");
    assert_ne!(
        first, second,
        "a connection past its lifetime was used again"
    );
}

#[tokio::test]
async fn debug_of_the_database_and_its_settings_hides_the_password() {
    // Never connected (the pool is lazy): nothing listens on port 1.
    let settings = settings_for("postgres://someone:s3cret-Pw0rd@127.0.0.1:1/db".into());
    let database = connect(&settings);
    let repository = PgUserRepository::new(database.clone());
    for shown in [
        format!("{database:?}"),
        format!("{settings:?}"),
        format!("{repository:?}"),
        format!("{database:#?}"),
    ] {
        assert!(!shown.contains("s3cret-Pw0rd"), "{shown}");
    }
}

/// A connection given back after `close` began (a unit of work that outlived the shutdown's
/// drain, or one the keeper held while filling to the minimum) says goodbye with PostgreSQL's
/// Terminate, and `close` waits for it: the server logs no lost client.
#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn a_connection_given_back_after_close_began_says_goodbye() {
    let cluster = PgCluster::start().await.unwrap();
    let test_db = cluster.migrated_database().await.unwrap();
    let mut admin = sea_orm::sqlx::PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    // A client that closes its socket without Terminate is logged at DEBUG1 as
    // "unexpected EOF on client connection" (this cluster is the test's own).
    let statement = format!(
        "ALTER ROLE {} IN DATABASE {} SET log_min_messages = debug1",
        counseling_testkit::SERVICE_ROLE,
        test_db.name()
    );
    sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(statement))
        .execute(&mut admin)
        .await
        .unwrap();
    let database = connect(&test_db.pool_settings().unwrap());
    let holders = hold_connections(&database, 2).await;
    let closing = tokio::spawn({
        let database = database.clone();
        async move { database.close(Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !closing.is_finished(),
        "close waits for the connections in use"
    );
    holders.release().await;
    assert!(closing.await.unwrap(), "closed within the limit");
    // The control: a session of the same role and database dropped without Terminate is
    // logged. Once its line is there (the server logs in order, and the pool's sessions ended
    // first), it must be the only one: the pool's connections said goodbye.
    let dropped = sea_orm::sqlx::PgConnection::connect(&test_db.url())
        .await
        .unwrap();
    drop(dropped);
    let eofs = || {
        std::fs::read_to_string(cluster.log_path())
            .unwrap()
            .matches("unexpected EOF on client connection")
            .count()
    };
    eventually(
        "the dropped session logged",
        Duration::from_secs(5),
        async || eofs() > 0,
    )
    .await
    .unwrap();
    // A moment for a line of the pool's that the server wrote late.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert_eq!(
        eofs(),
        1,
        "a connection of the pool's was dropped instead of closed:\n{log}"
    );
}

/// The keeper refills the minimum without taking the idle connections from callers, even while
/// new connections cannot be had (here a postmaster that accepts but never answers, as under an
/// authentication backend that hangs): the connections that work keep serving.
#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn the_keepers_refill_never_holds_idle_connections_while_it_connects() {
    let (cluster, _test_db, mut settings) = private_database().await;
    settings.pool.min_connections = 2;
    settings.pool.max_connections = 5;
    settings.pool.acquire_timeout = Duration::from_secs(2);
    let database = connect(&settings);
    eventually("the minimum open", Duration::from_secs(5), async || {
        database.status().open == 2
    })
    .await
    .unwrap();
    let _frozen = StoppedBackends::postmaster_of(&cluster);
    // One connection is lost (its unit of work panicked): below the minimum, one idle left.
    let in_task = database.clone();
    let panicked = tokio::spawn(async move {
        in_task
            .transaction(|_unit| async move {
                panic!("a bug in the unit of work");
                #[allow(unreachable_code)]
                Ok::<(), StoreError>(())
            })
            .await
    });
    assert!(panicked.await.unwrap_err().is_panic());
    eventually("one connection left", Duration::from_secs(2), async || {
        database.status().open == 1
    })
    .await
    .unwrap();
    // Longer than a keeper tick plus a whole refill attempt (the acquire timeout).
    let users = PgUserRepository::new(database.clone());
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        users.list(None, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A health check cut off by its deadline while its connection's server hangs closes that
/// connection as timed out (`reason="timeout"`), not as broken.
#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn a_check_cut_off_by_its_deadline_discards_its_connection_as_timed_out() {
    let (_cluster, test_db, mut settings) = private_database().await;
    settings.pool.min_connections = 0;
    settings.pool.max_connections = 1;
    // No check before use: the checkout hands the connection out, and the state query hangs.
    settings.pool.ping_if_idle_for = Duration::from_secs(600);
    let (recorder, database) = recorded_pool(&settings);
    database.ping(Duration::from_secs(1)).await.unwrap();
    let stopped = StoppedBackends::stop(backends(&test_db, None).await);
    let error = database.ping(Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(error, StoreError::Unavailable(Unavailability::Timeout));
    drop(stopped);
    let scraped = scrape(&recorder);
    let discarded = |reason| {
        scraped.value(
            "db_client_connections_discarded_total",
            &[("reason", reason)],
        )
    };
    assert_eq!((discarded("timeout"), discarded("broken")), (1.0, 0.0));
}

/// Closing the pool waits for the keeper's spares, but not for its connect to a server that
/// does not answer (here a postmaster that accepts but never answers).
#[cfg_attr(windows, ignore = "needs a private cluster (unix only)")]
#[tokio::test]
async fn closing_does_not_wait_out_the_keepers_connect() {
    let cluster = PgCluster::start().await.unwrap();
    let test_db = cluster.migrated_database().await.unwrap();
    let _frozen = StoppedBackends::postmaster_of(&cluster);
    let mut settings = settings_for(test_db.url());
    settings.pool.min_connections = 1;
    settings.pool.acquire_timeout = Duration::from_secs(10);
    let database = connect(&settings);
    // The keeper's first round starts at once; its connect hangs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        database.close(Duration::from_secs(5)).await,
        "closed in time"
    );
}
