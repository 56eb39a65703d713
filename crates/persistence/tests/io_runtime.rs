//! The service's path: repository calls made on one runtime (actix's, in the service) run on the
//! I/O runtime that owns the pool, and come back. Most tests here call from the I/O runtime
//! itself, where calls run directly; these keep the hop honest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{new_user, settings_for, slow_commits, slow_inserts};
use counseling_domain::{CreateUserError, StoreError, Unavailability, UserRepository, Username};
use counseling_persistence::{Database, PgUserRepository};
use counseling_testkit::TestDatabase;
use counseling_testkit::fixtures::eventually;

/// The pool's I/O runtime (one thread, `test-io`), and a runtime of the caller's, as in the
/// service.
fn io_and_caller_runtimes() -> (tokio::runtime::Runtime, tokio::runtime::Runtime) {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("test-io")
        .enable_all()
        .build()
        .unwrap();
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (io, caller)
}

#[test]
fn calls_from_another_runtime_run_on_the_io_runtime_and_keep_their_guarantees() {
    let (io, caller) = io_and_caller_runtimes();
    caller.block_on(async {
        let test_db = TestDatabase::migrated().await.unwrap();
        let mut settings = settings_for(test_db.url());
        settings.pool.max_connections = 1;
        let database = Database::connect_lazy(&settings, io.handle().clone()).unwrap();
        let users = PgUserRepository::new(database.clone());

        // A call works, and its statements ran on the I/O runtime's thread.
        let alice = users.create(new_user(r"\school\alice")).await.unwrap();
        assert!(users.find_by_id(alice.id).await.unwrap().is_some());
        let thread = database
            .transaction(|_unit| async {
                Ok::<_, StoreError>(std::thread::current().name().map(str::to_owned))
            })
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("test-io"));

        // A unit of work whose caller goes away after its first write is aborted on the I/O
        // runtime: nothing is written, and its connection is closed, not reused.
        let (written_tx, written_rx) = tokio::sync::oneshot::channel();
        let unit = database.transaction(|unit| async move {
            unit.users().create(new_user(r"\school\bob")).await?;
            let _ = written_tx.send(());
            std::future::pending::<()>().await;
            Ok::<_, CreateUserError>(())
        });
        tokio::select! {
            _ = unit => panic!("the unit of work cannot finish"),
            _ = written_rx => {}
        }
        eventually(
            "the pool closes the connection",
            Duration::from_secs(5),
            async || database.status().open == 0,
        )
        .await
        .unwrap();
        let bob = Username::parse(r"\school\bob").unwrap();
        assert_eq!(users.find_by_username(&bob).await.unwrap(), None);

        // A panic in a unit of work reaches its caller.
        let panicking = tokio::spawn({
            let database = database.clone();
            async move {
                database
                    .transaction(|_unit| async {
                        if std::hint::black_box(true) {
                            panic!("a bug in the unit of work");
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await
            }
        });
        assert!(panicking.await.unwrap_err().is_panic());
        // And the pool still serves.
        assert!(users.find_by_id(alice.id).await.unwrap().is_some());
    });
    io.shutdown_timeout(Duration::from_secs(5));
}

/// The error `call` ends with, waited for at most 10 s: a call the shutdown failed to end would
/// otherwise hang the test.
async fn ended<T: std::fmt::Debug>(
    call: tokio::task::JoinHandle<Result<T, CreateUserError>>,
) -> CreateUserError {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the shutdown ends the call")
        .unwrap()
        .unwrap_err()
}

/// A call cut off by the I/O runtime's shutdown, while its caller (on another runtime) waits,
/// is told what the metric counts: a write that may be stored (an insert running, a unit of work
/// whose COMMIT was sent) `OutcomeUnknown`, so the caller reads it back before writing again; a
/// unit that wrote but never sent its COMMIT `Unavailable(ConnectionLost)`: the server rolls it
/// back.
#[test]
fn calls_cut_off_by_the_io_runtimes_shutdown_say_whether_a_write_may_be_stored() {
    let (io, caller) = io_and_caller_runtimes();
    let (test_db, sent, committing, uncommitted) = caller.block_on(async {
        let test_db = TestDatabase::migrated().await.unwrap();
        // Far longer than the test: the shutdown cuts them off (and the database's drop ends
        // what the server still runs).
        slow_inserts(&test_db, &[(r"\school\slow", "60")]).await;
        slow_commits(&test_db.connect().await, "60").await;
        let settings = settings_for(test_db.url());
        let database = Database::connect_lazy(&settings, io.handle().clone()).unwrap();
        let users = PgUserRepository::new(database.clone());

        let sent = tokio::spawn(async move { users.create(new_user(r"\school\slow")).await });
        let committing = tokio::spawn({
            let database = database.clone();
            async move {
                let unit = |unit: counseling_persistence::UnitOfWork| async move {
                    unit.users().create(new_user(r"\school\unit")).await?;
                    Ok::<_, CreateUserError>(())
                };
                database.transaction(unit).await
            }
        });
        let (wrote, written) = tokio::sync::oneshot::channel();
        let uncommitted = tokio::spawn(async move {
            let unit = |unit: counseling_persistence::UnitOfWork| async move {
                unit.users().create(new_user(r"\school\open")).await?;
                let _ = wrote.send(());
                std::future::pending::<()>().await;
                Ok::<_, CreateUserError>(())
            };
            database.transaction(unit).await
        });
        written.await.unwrap();
        // Both others on the server: the insert's trigger and the COMMIT's each sleep.
        let watcher = test_db.connect().await;
        let sleeping = async || {
            use sea_orm::ConnectionTrait as _;
            let row = watcher
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event = 'PgSleep'",
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap() == 2
        };
        eventually("both writes sent", Duration::from_secs(10), sleeping)
            .await
            .unwrap();
        (test_db, sent, committing, uncommitted)
    });
    io.shutdown_background();
    caller.block_on(async {
        assert_eq!(
            ended(sent).await,
            CreateUserError::Store(StoreError::OutcomeUnknown)
        );
        assert_eq!(
            ended(committing).await,
            CreateUserError::Store(StoreError::OutcomeUnknown)
        );
        assert_eq!(
            ended(uncommitted).await,
            CreateUserError::Store(StoreError::Unavailable(Unavailability::ConnectionLost))
        );
        drop(test_db);
    });
}
