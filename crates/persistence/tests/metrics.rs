//! What the pool and the repositories report: each test records into a Prometheus recorder of
//! its own (`metrics::with_local_recorder` around building the pool), and reads it back through
//! a real parser of the text format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    OTHER_HASH, new_user, recorded_pool, recorded_pool_on, scrape, settings_for, slow_commits,
    slow_inserts,
};
use counseling_domain::{
    CreateUserError, DeleteUserError, PasswordHash, StoreError, Unavailability, UpdateUserError,
    UserId, UserRepository, Username,
};
use counseling_persistence::{Database, PgUserRepository};
use counseling_testkit::fixtures::eventually;
use counseling_testkit::{MetricKind, TestDatabase};

const OPERATIONS: &str = "db_client_operations_total";
const OPERATION_DURATION: &str = "db_client_operation_duration_seconds";

fn unknown_id() -> UserId {
    UserId::from_uuid(uuid::Uuid::new_v4())
}

/// Asserts that the operations counted are `expected` (operation, outcome, count) and nothing
/// else; returns their total.
fn assert_counted_exactly(
    scraped: &counseling_testkit::Scrape,
    expected: &[(&str, &str, f64)],
) -> f64 {
    for (operation, outcome, count) in expected.iter().copied() {
        assert_eq!(
            scraped.value(
                OPERATIONS,
                &[("operation", operation), ("outcome", outcome)]
            ),
            count,
            "{operation} {outcome}"
        );
    }
    let total: f64 = expected.iter().map(|(_, _, count)| count).sum();
    assert_eq!(
        scraped.value(OPERATIONS, &[]),
        total,
        "nothing else counted"
    );
    total
}

#[tokio::test]
async fn every_operation_is_counted_once_by_its_outcome() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let (recorder, database) = recorded_pool(&settings_for(test_db.url()));
    let users = PgUserRepository::new(database.clone());

    let alice = users.create(new_user(r"\school\alice")).await.unwrap();
    assert_eq!(
        users.create(new_user(r"\SCHOOL\Alice")).await,
        Err(CreateUserError::UsernameTaken)
    );
    users.find_by_id(alice.id).await.unwrap().unwrap();
    // Nothing found is still a successful lookup.
    let nobody = Username::parse(r"\school\nobody").unwrap();
    assert!(users.find_by_username(&nobody).await.unwrap().is_none());
    assert_eq!(
        users.set_blocked(unknown_id(), true).await,
        Err(UpdateUserError::NotFound)
    );
    users
        .update_password_hash(alice.id, PasswordHash::parse(OTHER_HASH).unwrap())
        .await
        .unwrap();
    users.list(None, 10).await.unwrap();
    assert_eq!(
        users.delete(unknown_id()).await,
        Err(DeleteUserError::NotFound)
    );
    users.delete(alice.id).await.unwrap();
    database
        .transaction(|unit| async move {
            unit.users().create(new_user(r"\school\bob")).await?;
            Ok::<_, CreateUserError>(())
        })
        .await
        .unwrap();
    // A unit whose call failed is labelled by that failure.
    let taken = database
        .transaction(|unit| async move {
            unit.users().create(new_user(r"\school\BOB")).await?;
            Ok::<_, CreateUserError>(())
        })
        .await;
    assert_eq!(taken, Err(CreateUserError::UsernameTaken));

    let scraped = scrape(&recorder);
    assert_eq!(scraped.kind(OPERATIONS), Some(MetricKind::Counter));
    assert_eq!(
        scraped.kind(OPERATION_DURATION),
        Some(MetricKind::Histogram)
    );
    let expected = [
        ("create", "ok", 2.0),
        ("create", "conflict", 2.0),
        ("find_by_id", "ok", 1.0),
        ("find_by_username", "ok", 1.0),
        ("set_blocked", "not_found", 1.0),
        ("update_password_hash", "ok", 1.0),
        ("list", "ok", 1.0),
        ("delete", "not_found", 1.0),
        ("delete", "ok", 1.0),
        ("transaction", "ok", 1.0),
        ("transaction", "conflict", 1.0),
    ];
    let total = assert_counted_exactly(&scraped, &expected);
    assert_eq!(
        scraped.histogram_count(OPERATION_DURATION, &[("operation", "create")]),
        4.0
    );
    // Every repository call and unit waited for a connection once, none in vain.
    assert_eq!(
        scraped.histogram_count("db_client_connection_wait_time_seconds", &[]),
        total - 2.0
    );
    assert_eq!(
        scraped.value("db_client_connection_timeouts_total", &[]),
        0.0
    );
}

/// A unit of work that holds a connection until the sender it returns is dropped; returns once
/// it holds it.
async fn hold_a_connection(
    database: &Database,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), StoreError>>,
) {
    let (held, release) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let database = database.clone();
        async move {
            database
                .transaction(|_unit| async move {
                    let _ = release.await;
                    Ok::<_, StoreError>(())
                })
                .await
        }
    });
    let in_use = async || database.status().in_use() >= 1;
    eventually("a connection in use", Duration::from_secs(5), in_use)
        .await
        .unwrap();
    (held, holder)
}

#[tokio::test]
async fn an_exhausted_pool_counts_acquire_timeouts() {
    let test_db = TestDatabase::migrated().await.unwrap();
    let mut settings = settings_for(test_db.url());
    settings.pool.max_connections = 1;
    settings.pool.acquire_timeout = Duration::from_millis(300);
    let (recorder, database) = recorded_pool(&settings);
    let users = PgUserRepository::new(database.clone());

    // A unit of work holds the only connection.
    let (held, holder) = hold_a_connection(&database).await;
    for _ in 0..2 {
        assert_eq!(
            users.find_by_id(unknown_id()).await,
            Err(StoreError::Unavailable(Unavailability::PoolExhausted))
        );
    }
    drop(held);
    holder.await.unwrap().unwrap();

    let scraped = scrape(&recorder);
    assert_eq!(
        scraped.kind("db_client_connection_timeouts_total"),
        Some(MetricKind::Counter)
    );
    assert_eq!(
        scraped.value("db_client_connection_timeouts_total", &[]),
        2.0
    );
    assert_eq!(
        scraped.value(
            OPERATIONS,
            &[("operation", "find_by_id"), ("outcome", "unavailable")]
        ),
        2.0
    );
    assert_eq!(
        scraped.value(
            OPERATIONS,
            &[("operation", "transaction"), ("outcome", "ok")]
        ),
        1.0
    );
}

/// The count of `operation` calls that ended as `outcome`.
fn counted(
    recorder: &metrics_exporter_prometheus::PrometheusRecorder,
    operation: &str,
    outcome: &str,
) -> f64 {
    scrape(recorder).value(
        OPERATIONS,
        &[("operation", operation), ("outcome", outcome)],
    )
}

/// How long a caller here waits before it stops waiting (drops the call's future): after a
/// warm-up (a connection open in the pool), time enough for what should be sent by then.
const GIVE_UP_AFTER: Duration = Duration::from_secs(1);

/// Opens a connection and leaves it idle in the pool (a health check: counted apart), so that
/// what is timed next does not include a connect.
async fn warm_up(database: &Database) {
    database.ping(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_call_whose_caller_stops_waiting_is_unknown_only_if_its_write_may_be_stored() {
    let test_db = TestDatabase::migrated().await.unwrap();
    slow_inserts(&test_db, &[(r"\school\slow", "5")]).await;
    let mut settings = settings_for(test_db.url());
    settings.pool.max_connections = 1;
    settings.pool.acquire_timeout = Duration::from_secs(10);
    let (recorder, database) = recorded_pool(&settings);
    let users = PgUserRepository::new(database.clone());
    warm_up(&database).await;

    // A write on its way to the server when its caller gave up: it may be stored.
    let sent = tokio::time::timeout(GIVE_UP_AFTER, users.create(new_user(r"\school\slow")));
    assert!(sent.await.is_err(), "the slow insert answered");
    assert_eq!(counted(&recorder, "create", "unknown"), 1.0);

    // A write and a read still waiting for the only connection (a unit of work holds it) when
    // their callers gave up: nothing was sent.
    let (held, holder) = hold_a_connection(&database).await;
    let waiting = tokio::time::timeout(GIVE_UP_AFTER, users.create(new_user(r"\school\bob")));
    assert!(waiting.await.is_err(), "the write got a connection");
    let waiting = tokio::time::timeout(GIVE_UP_AFTER, users.find_by_id(unknown_id()));
    assert!(waiting.await.is_err(), "the read got a connection");
    drop(held);
    holder.await.unwrap().unwrap();

    let scraped = scrape(&recorder);
    let expected = [
        ("create", "unknown", 1.0),
        ("create", "abandoned", 1.0),
        ("find_by_id", "abandoned", 1.0),
        ("transaction", "ok", 1.0),
    ];
    assert_counted_exactly(&scraped, &expected);
    assert_eq!(
        scraped.histogram_count(OPERATION_DURATION, &[("operation", "create")]),
        2.0
    );
}

#[tokio::test]
async fn a_unit_whose_caller_stops_waiting_is_unknown_only_once_its_commit_is_sent() {
    let (test_db, _, users) = common::repository().await;
    slow_inserts(&test_db, &[(r"\school\slow", "5")]).await;
    slow_commits(&test_db.connect().await, "3").await;
    let (recorder, database) = recorded_pool(&settings_for(test_db.url()));
    warm_up(&database).await;

    // Before its COMMIT: the server rolls it back.
    let before_commit = database.transaction(|unit| async move {
        unit.users().create(new_user(r"\school\alice")).await?;
        std::future::pending::<()>().await;
        Ok::<_, CreateUserError>(())
    });
    assert!(
        tokio::time::timeout(GIVE_UP_AFTER, before_commit)
            .await
            .is_err()
    );
    assert_eq!(counted(&recorder, "transaction", "abandoned"), 1.0);
    assert_eq!(counted(&recorder, "create", "ok"), 1.0);

    // A call of the unit's whose caller gave up: the unit is never committed with it.
    let cut_off = database.transaction(|unit| async move {
        let users = unit.users();
        let slow = users.create(new_user(r"\school\slow"));
        let _ = tokio::time::timeout(GIVE_UP_AFTER, slow).await;
        Ok::<_, CreateUserError>(())
    });
    assert!(
        cut_off.await.is_err(),
        "a unit went on after a cut-off call"
    );
    assert_eq!(counted(&recorder, "create", "abandoned"), 1.0);
    assert_eq!(counted(&recorder, "create", "unknown"), 0.0);

    // Its COMMIT sent after a write: it may be stored, and is.
    warm_up(&database).await;
    let committing = database.transaction(|unit| async move {
        unit.users().create(new_user(r"\school\bob")).await?;
        Ok::<_, CreateUserError>(())
    });
    assert!(
        tokio::time::timeout(GIVE_UP_AFTER, committing)
            .await
            .is_err()
    );
    assert_eq!(counted(&recorder, "transaction", "unknown"), 1.0);

    let bob = Username::parse(r"\school\bob").unwrap();
    let stored = async || users.find_by_username(&bob).await.unwrap().is_some();
    eventually("bob committed", Duration::from_secs(10), stored)
        .await
        .unwrap();
    let alice = Username::parse(r"\school\alice").unwrap();
    assert!(users.find_by_username(&alice).await.unwrap().is_none());
    let slow = Username::parse(r"\school\slow").unwrap();
    assert!(users.find_by_username(&slow).await.unwrap().is_none());
    let scraped = scrape(&recorder);
    assert_eq!(
        scraped.value(OPERATIONS, &[("operation", "transaction")]),
        3.0,
        "each unit counted once"
    );
}

/// As the service runs it: the pool's I/O on a runtime of its own, where a call whose caller
/// gives up is a task aborted there, and recorded when that runtime drops it.
#[tokio::test]
async fn calls_cut_off_on_the_pools_own_runtime_are_counted_there() {
    let test_db = TestDatabase::migrated().await.unwrap();
    slow_inserts(&test_db, &[(r"\school\slow", "5")]).await;
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (recorder, database) = recorded_pool_on(&settings_for(test_db.url()), io.handle().clone());
    let users = PgUserRepository::new(database.clone());
    warm_up(&database).await;

    let sent = tokio::time::timeout(GIVE_UP_AFTER, users.create(new_user(r"\school\slow")));
    assert!(sent.await.is_err(), "the slow insert answered");
    let unit = database.transaction(|_unit| async move {
        std::future::pending::<()>().await;
        Ok::<_, StoreError>(())
    });
    assert!(tokio::time::timeout(GIVE_UP_AFTER, unit).await.is_err());
    let both = async || {
        counted(&recorder, "create", "unknown") == 1.0
            && counted(&recorder, "transaction", "abandoned") == 1.0
    };
    eventually("both counted", Duration::from_secs(5), both)
        .await
        .unwrap();
    assert_counted_exactly(
        &scrape(&recorder),
        &[
            ("create", "unknown", 1.0),
            ("transaction", "abandoned", 1.0),
        ],
    );
    drop((users, database));
    io.shutdown_background();
}
