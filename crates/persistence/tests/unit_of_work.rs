//! Units of work: several repository calls in one transaction, committed or rolled back whole.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{new_user, repository, slow_commits, slow_inserts};
use counseling_domain::{
    CreateUserError, DeleteUserError, StoreError, UserId, UserRepository, Username,
};
use counseling_persistence::Database;
use counseling_testkit::fixtures::eventually;

const USED_AFTER_ITS_UNIT: &str =
    "a repository of a unit of work was used after the unit ended; the call ran nothing";

async fn find(users: &impl UserRepository, name: &str) -> bool {
    users
        .find_by_username(&Username::parse(name).unwrap())
        .await
        .unwrap()
        .is_some()
}

#[derive(Debug, PartialEq)]
enum SignUpError {
    Create(CreateUserError),
    ChangedMind,
}

impl From<CreateUserError> for SignUpError {
    fn from(error: CreateUserError) -> Self {
        SignUpError::Create(error)
    }
}

impl From<StoreError> for SignUpError {
    fn from(error: StoreError) -> Self {
        SignUpError::Create(error.into())
    }
}

#[tokio::test]
async fn a_committed_unit_persists_both_writes() {
    let (_db, database, users) = repository().await;
    let (alice, bob) = database
        .transaction(|unit| async move {
            let users = unit.users();
            let alice = users.create(new_user(r"\school\alice")).await?;
            // Reads inside the unit see its own writes.
            assert!(find(&users, r"\school\alice").await);
            let bob = users.create(new_user(r"\school\bob")).await?;
            Ok::<_, CreateUserError>((alice, bob))
        })
        .await
        .unwrap();
    assert_eq!(users.find_by_id(alice.id).await.unwrap(), Some(alice));
    assert_eq!(users.find_by_id(bob.id).await.unwrap(), Some(bob));
}

#[tokio::test]
async fn an_error_after_the_first_write_leaves_nothing() {
    let (_db, database, users) = repository().await;
    let outcome = database
        .transaction(|unit| async move {
            let users = unit.users();
            users.create(new_user(r"\school\carol")).await?;
            Err::<(), _>(SignUpError::ChangedMind)
        })
        .await;
    assert_eq!(outcome, Err(SignUpError::ChangedMind));
    assert!(!find(&users, r"\school\carol").await);

    // A failing second write (a duplicate inside the unit) rolls back the first one too.
    let outcome = database
        .transaction(|unit| async move {
            let users = unit.users();
            users.create(new_user(r"\school\dave")).await?;
            users.create(new_user(r"\SCHOOL\DAVE")).await?;
            Ok::<_, CreateUserError>(())
        })
        .await;
    assert_eq!(outcome, Err(CreateUserError::UsernameTaken));
    assert!(!find(&users, r"\school\dave").await);

    // A unit that swallows its failed call and returns `Ok` is not told it committed: PostgreSQL
    // answers its COMMIT with a ROLLBACK, so none of its writes is kept.
    let outcome = database
        .transaction(|unit| async move {
            let users = unit.users();
            users.create(new_user(r"\school\erin")).await?;
            let duplicate = users.create(new_user(r"\SCHOOL\ERIN")).await;
            assert_eq!(duplicate, Err(CreateUserError::UsernameTaken));
            Ok::<_, CreateUserError>(())
        })
        .await;
    assert!(
        matches!(&outcome, Err(CreateUserError::Store(StoreError::Unexpected(why))) if why.contains("failed and the unit went on")),
        "{outcome:?}"
    );
    assert!(!find(&users, r"\school\erin").await);

    // A call that finds no row aborts nothing on the server: a unit that handles it commits.
    let outcome = database
        .transaction(|unit| async move {
            let users = unit.users();
            let nobody = UserId::from_uuid(uuid::Uuid::nil());
            assert_eq!(users.delete(nobody).await, Err(DeleteUserError::NotFound));
            users.create(new_user(r"\school\frank")).await?;
            Ok::<_, CreateUserError>(())
        })
        .await;
    assert_eq!(outcome, Ok(()));
    assert!(find(&users, r"\school\frank").await);
    // The pool is healthy afterwards: the connection came back clean or was replaced.
    users.create(new_user(r"\school\dave")).await.unwrap();
}

/// A call cut off half-way (its future dropped by a timeout) whose unit goes on and returns
/// `Ok` is not committed: the cut-off INSERT would run first and be kept, a write the unit took
/// for failed.
#[tokio::test]
async fn a_unit_that_goes_on_after_a_cut_off_call_commits_nothing() {
    use sea_orm::sqlx::{self, Connection, PgConnection};
    let (db, database, users) = repository().await;
    // Another session holds a lock every INSERT waits for, so the create cannot end at once.
    let mut holder = PgConnection::connect_with(&db.options()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE users IN SHARE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let outcome = database
        .transaction(|unit| async move {
            let users = unit.users();
            let cut_off = tokio::time::timeout(
                Duration::from_millis(200),
                users.create(new_user(r"\school\grace")),
            )
            .await;
            assert!(cut_off.is_err(), "the create was not cut off: {cut_off:?}");
            // The INSERT goes on as soon as the lock is free; the next call's statement waits
            // for it, unseen.
            sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
            users.create(new_user(r"\school\heidi")).await?;
            Ok::<_, CreateUserError>(())
        })
        .await;
    assert!(
        matches!(&outcome, Err(CreateUserError::Store(StoreError::Unexpected(why))) if why.contains("cut off")),
        "{outcome:?}"
    );
    assert!(!find(&users, r"\school\grace").await);
    assert!(!find(&users, r"\school\heidi").await);
    // The pool is healthy afterwards: the connection was replaced.
    users.create(new_user(r"\school\grace")).await.unwrap();
}

/// The README's recipe for a Linux server: with `client_connection_check_interval` in the URL's
/// `options`, a caller that stops waiting (a client gone) closes its connection and the server
/// ends the statement within a second, so an INSERT left waiting on a lock is not stored unseen
/// once the lock is free (`lock_timeout` would end it later, 5 s by default: the lock may be
/// freed before).
#[tokio::test]
async fn an_insert_whose_caller_stopped_waiting_is_not_stored_later() {
    use sea_orm::sqlx::{self, Connection, PgConnection};
    let db = counseling_testkit::TestDatabase::migrated().await.unwrap();
    let url = db.url_with(&[("options", "-c client_connection_check_interval=1s")]);
    // A server on Windows (DATABASE_URL_TEST) refuses the setting: the recipe is not for it.
    if let Err(error) = PgConnection::connect(&url).await {
        assert!(
            error
                .to_string()
                .contains("client_connection_check_interval"),
            "{error}"
        );
        eprintln!("skipped: this server refuses client_connection_check_interval");
        return;
    }
    // Longer than this test waits: only the check can end the INSERT in time.
    let mut settings = common::settings_for(url);
    settings.pool.lock_timeout = Duration::from_secs(60);
    // One connection, whose INSERT is prepared by a first create: the one cut off below is then
    // running (waiting for the lock), not being parsed, and would insert once the lock is free.
    settings.pool.max_connections = 1;
    settings.pool.min_connections = 0;
    let users = counseling_persistence::PgUserRepository::new(common::connect(&settings));
    users.create(new_user(r"\school\judy")).await.unwrap();
    let mut holder = PgConnection::connect_with(&db.options()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE users IN SHARE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut observer = PgConnection::connect_with(&db.options()).await.unwrap();
    let mut lock_waits_are = async |expected: i64| {
        let sql = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let waits: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut observer)
            .await
            .unwrap();
        waits == expected
    };
    let creating = tokio::spawn({
        let users = users.clone();
        async move { users.create(new_user(r"\school\ivan")).await }
    });
    let waiting = async || lock_waits_are(1).await;
    eventually("the INSERT waits", Duration::from_secs(10), waiting)
        .await
        .unwrap();
    creating.abort();
    // Without the check the server would wait on for the lock, and insert once it is free.
    let ended = async || lock_waits_are(0).await;
    eventually("the server ends the INSERT", Duration::from_secs(5), ended)
        .await
        .unwrap();
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert!(!find(&users, r"\school\ivan").await);
}

#[tokio::test]
async fn a_panic_inside_the_unit_rolls_it_back_and_reaches_the_caller() {
    let (_db, database, users) = repository().await;
    let in_task = database.clone();
    let outcome = tokio::spawn(async move {
        in_task
            .transaction(|unit| async move {
                unit.users().create(new_user(r"\school\erin")).await?;
                panic!("a bug in the unit of work");
                #[allow(unreachable_code)]
                Ok::<(), CreateUserError>(())
            })
            .await
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    assert!(!find(&users, r"\school\erin").await);
}

/// Open connections of this test's database, as the server sees them.
async fn server_sessions(db: &counseling_testkit::TestDatabase) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let admin = db.connect().await;
    let row = admin
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                db.name()
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

#[tokio::test]
async fn a_dropped_unit_leaves_nothing_and_frees_its_connection() {
    let (db, database, users) = repository().await;
    let (written_tx, written_rx) = tokio::sync::oneshot::channel();
    let unit = database.transaction(|unit| async move {
        unit.users().create(new_user(r"\school\frank")).await?;
        written_tx.send(()).unwrap();
        // The client goes away while the unit still runs.
        std::future::pending::<()>().await;
        Ok::<_, CreateUserError>(())
    });
    tokio::select! {
        _ = unit => unreachable!("the unit never finishes"),
        _ = written_rx => {}
    }
    // The future is dropped here: its connection is closed, so the server rolls back.
    let closed = async || database.status().open == 0;
    eventually("the connection closing", Duration::from_secs(5), closed)
        .await
        .unwrap();
    let ended = async || server_sessions(&db).await == 0;
    eventually(
        "the server ending the session",
        Duration::from_secs(5),
        ended,
    )
    .await
    .unwrap();
    assert!(!find(&users, r"\school\frank").await);
    users.create(new_user(r"\school\frank")).await.unwrap();
}

#[tokio::test]
async fn concurrent_units_creating_one_name_give_one_success_and_one_username_taken() {
    let (_db, database, _users) = repository().await;
    for round in 0..5 {
        let create = |database: Database, name: String| async move {
            database
                .transaction(|unit| async move {
                    let users = unit.users();
                    let user = users.create(new_user(&name)).await?;
                    // Hold the transaction open a moment so that the two really overlap.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, CreateUserError>(user)
                })
                .await
        };
        let lower = format!(r"\school\twin{round}");
        let upper = lower.to_uppercase();
        let (a, b) = tokio::join!(
            create(database.clone(), lower),
            create(database.clone(), upper)
        );
        let outcomes = [a, b];
        let successes = outcomes.iter().filter(|o| o.is_ok()).count();
        let taken = outcomes
            .iter()
            .filter(|o| **o == Err(CreateUserError::UsernameTaken))
            .count();
        assert_eq!((successes, taken), (1, 1), "round {round}: {outcomes:?}");
    }
}

/// The backend serving the one connection of a pool named `application_name` on `db`, as the
/// server sees it (waits until exactly one such session is left).
async fn the_only_backend(db: &counseling_testkit::TestDatabase, application_name: &str) -> i32 {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let admin = db.connect().await;
    let backends = async || {
        admin
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                [db.name().into(), application_name.into()],
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get_by_index::<i32>(0).unwrap())
            .collect::<Vec<_>>()
    };
    let one = async || backends().await.len() == 1;
    eventually("one session of the pool", Duration::from_secs(5), one)
        .await
        .unwrap();
    backends().await[0]
}

#[tokio::test]
async fn a_rolled_back_connection_goes_back_to_the_pool_clean_and_is_reused() {
    use sea_orm::ConnectionTrait;
    let db = counseling_testkit::TestDatabase::migrated().await.unwrap();
    // Every insert into users also changes its session: a setting for the session (plain SET)
    // and one for the transaction (SET LOCAL), and a temporary table. A clean rollback undoes
    // all three on the connection, which then serves the next call.
    let admin = db.connect().await;
    admin
        .execute_unprepared(
            "CREATE FUNCTION dirty_the_session() RETURNS trigger LANGUAGE plpgsql \
             SECURITY DEFINER SET search_path = pg_catalog AS $$ BEGIN \
               PERFORM set_config('work_mem', '7777kB', false); \
               PERFORM set_config('lock_timeout', '7777ms', true); \
               CREATE TEMPORARY TABLE left_behind (id int); \
               RETURN NEW; END $$; \
             CREATE TRIGGER dirty_the_session AFTER INSERT ON users \
               FOR EACH ROW EXECUTE FUNCTION dirty_the_session()",
        )
        .await
        .unwrap();
    let mut settings = common::settings_for(db.url());
    settings.pool.max_connections = 1;
    settings.application_name = "clean-rollback-test".into();
    let database = common::connect(&settings);
    let users = counseling_persistence::PgUserRepository::new(database.clone());
    let work_mem = database.server_setting("work_mem").await.unwrap();
    let lock_timeout = database.server_setting("lock_timeout").await.unwrap();
    let backend = the_only_backend(&db, "clean-rollback-test").await;

    let outcome = database
        .transaction(|unit| async move {
            unit.users().create(new_user(r"\school\grace")).await?;
            Err::<(), _>(SignUpError::ChangedMind)
        })
        .await;
    assert_eq!(outcome, Err(SignUpError::ChangedMind));

    // The same connection, not a new one: the rollback ran on it and it was handed back.
    assert!(!find(&users, r"\school\grace").await);
    assert_eq!(database.server_setting("work_mem").await.unwrap(), work_mem);
    assert_eq!(
        database.server_setting("lock_timeout").await.unwrap(),
        lock_timeout
    );
    assert_eq!(
        the_only_backend(&db, "clean-rollback-test").await,
        backend,
        "the rolled-back connection was not reused"
    );
    let temporary_tables = admin
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) FROM pg_class WHERE relname = 'left_behind'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(temporary_tables, 0);
    // And it still works as the only connection: the trigger's effects only come with a write.
    users.create(new_user(r"\school\grace")).await.unwrap();
}

/// Two units that take the same two rows in opposite order: PostgreSQL breaks the deadlock by
/// failing one of them, which comes back as a retryable conflict with nothing of it written,
/// while the other commits both its writes.
#[tokio::test]
async fn a_deadlock_fails_one_unit_as_a_retryable_conflict_and_the_other_commits() {
    use counseling_domain::{Conflict, PasswordHash, UpdateUserError};
    let (_db, database, users) = repository().await;
    let first = users.create(new_user(r"\school\first")).await.unwrap().id;
    let second = users.create(new_user(r"\school\second")).await.unwrap().id;
    let both_hold_one = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    // One unit blocks both users, first then second; the other gives both a new password
    // hash, second then first.
    let unit = |blocks: bool| {
        let both_hold_one = both_hold_one.clone();
        let order = if blocks {
            [first, second]
        } else {
            [second, first]
        };
        database.transaction(move |unit| async move {
            let users = unit.users();
            for (step, id) in order.into_iter().enumerate() {
                if step == 1 {
                    both_hold_one.wait().await;
                }
                if blocks {
                    users.set_blocked(id, true).await?;
                } else {
                    let hash = PasswordHash::parse(common::OTHER_HASH).unwrap();
                    users.update_password_hash(id, hash).await?;
                }
            }
            Ok::<_, UpdateUserError>(())
        })
    };
    let (blocking, rehashing) = tokio::join!(unit(true), unit(false));
    let deadlock = UpdateUserError::Store(StoreError::Conflict(Conflict::Deadlock));
    let blocking_won = blocking.is_ok();
    match (&blocking, &rehashing) {
        (Ok(()), Err(lost)) | (Err(lost), Ok(())) if *lost == deadlock => {}
        outcomes => panic!("one unit must commit, the other fail on the deadlock: {outcomes:?}"),
    }
    assert!(matches!(&deadlock, UpdateUserError::Store(store) if store.is_retryable()));
    // Both rows carry the winner's writes, and neither the loser's.
    for id in [first, second] {
        let user = users.find_by_id(id).await.unwrap().unwrap();
        let rehashed = user.password_hash == PasswordHash::parse(common::OTHER_HASH).unwrap();
        assert_eq!((user.is_blocked, rehashed), (blocking_won, !blocking_won));
    }
}

/// A repository kept past its unit runs nothing (it would write outside the transaction, with
/// no deadline), and the unit's connection went back to the pool when the unit ended.
#[tokio::test]
async fn a_repository_kept_past_its_unit_runs_nothing_and_holds_no_connection() {
    let db = counseling_testkit::TestDatabase::migrated().await.unwrap();
    let mut settings = common::settings_for(db.url());
    // One connection: the unit's, if it were still held, would leave none for the call below.
    settings.pool.max_connections = 1;
    settings.pool.acquire_timeout = Duration::from_secs(2);
    let database = common::connect(&settings);
    let users = counseling_persistence::PgUserRepository::new(database.clone());
    let kept = database
        .transaction(|unit| async move {
            let users = unit.users();
            users.create(new_user(r"\school\hana")).await?;
            Ok::<_, CreateUserError>(users)
        })
        .await
        .unwrap();
    assert!(find(&users, r"\school\hana").await);
    let late = kept.create(new_user(r"\school\late")).await;
    assert_eq!(
        late,
        Err(CreateUserError::Store(StoreError::Unexpected(
            USED_AFTER_ITS_UNIT.into()
        )))
    );
    assert!(!find(&users, r"\school\late").await);
    assert_eq!(database.status().open, 1, "{:?}", database.status());
}

/// A call a unit left behind (a task it spawned) that asks for the unit's connection while its
/// COMMIT runs is refused: it would run after the COMMIT, outside the transaction, with no
/// deadline, and its row would be stored although the unit never wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_left_behind_during_the_commit_is_refused_not_run_after_it() {
    let (db, database, users) = repository().await;
    slow_commits(&db.connect().await, "0.5").await;
    let left_behind = database
        .transaction(|unit| async move {
            let users = unit.users();
            users.create(new_user(r"\school\ines")).await?;
            let late = users.clone();
            // Returning now sends the COMMIT; this call comes 0.2 s into it.
            Ok::<_, CreateUserError>(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                late.create(new_user(r"\school\jo")).await
            }))
        })
        .await
        .unwrap();
    assert_eq!(
        left_behind.await.unwrap(),
        Err(CreateUserError::Store(StoreError::Unexpected(
            USED_AFTER_ITS_UNIT.into()
        )))
    );
    assert!(find(&users, r"\school\ines").await);
    assert!(!find(&users, r"\school\jo").await);
    // The unit's connection is back in the pool, not held by the repository kept in the task.
    let all_idle = async || {
        let status = database.status();
        status.idle == status.open
    };
    eventually("every connection idle", Duration::from_secs(2), all_idle)
        .await
        .unwrap();
}

/// A call the unit left behind that fails on the server while the unit's COMMIT waits for the
/// connection aborts the transaction: the unit is told so, never `Ok` over a silent ROLLBACK.
#[tokio::test]
async fn a_call_left_behind_that_fails_before_the_commit_makes_the_unit_fail() {
    let (db, database, users) = repository().await;
    users.create(new_user(r"\school\taken")).await.unwrap();
    slow_inserts(&db, &[(r"\school\slow", "0.3")]).await;
    let outcome = database
        .transaction(|unit| async move {
            let users = unit.users();
            let late = users.clone();
            // Asks for the connection 0.05 s into the slow insert below: queued behind it, and
            // ahead of the COMMIT.
            let duplicate = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                late.create(new_user(r"\school\TAKEN")).await
            });
            users.create(new_user(r"\school\slow")).await?;
            Ok::<_, CreateUserError>(duplicate)
        })
        .await;
    let outcome = match outcome {
        Ok(duplicate) => Ok(duplicate.await.unwrap()),
        Err(error) => Err(error),
    };
    let Err(CreateUserError::Store(StoreError::Unexpected(why))) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(why.contains("nothing was written"), "{why}");
    assert!(!find(&users, r"\school\slow").await);
}

/// A unit that sat idle past the server's idle_in_transaction_session_timeout (its statement
/// timeout) was rolled back by the server, which says so (25P03): its COMMIT is not in doubt.
#[tokio::test]
async fn a_unit_the_server_ended_while_idle_is_not_in_doubt() {
    let db = counseling_testkit::TestDatabase::migrated().await.unwrap();
    let mut settings = common::settings_for(db.url());
    // Deadline 1.5 s; the server ends the session 1 s after the write; COMMIT at 1.2 s.
    settings.pool.statement_timeout = Duration::from_secs(1);
    let database = common::connect(&settings);
    let users = counseling_persistence::PgUserRepository::new(database.clone());
    let outcome = database
        .transaction(|unit| async move {
            unit.users().create(new_user(r"\school\kim")).await?;
            tokio::time::sleep(Duration::from_millis(1200)).await;
            Ok::<_, CreateUserError>(())
        })
        .await;
    assert_eq!(
        outcome,
        Err(CreateUserError::Store(StoreError::Unavailable(
            counseling_domain::Unavailability::ConnectionLost
        )))
    );
    // The session the server ended (a FATAL error) was closed, not given back to the pool.
    assert_eq!(database.status().open, 0, "{:?}", database.status());
    assert!(!find(&users, r"\school\kim").await);
}

/// A COMMIT the server cancels (`pg_cancel_backend`, here while a deferred trigger runs) was
/// answered: the unit is rolled back for certain, a timeout, not an unconfirmed write.
#[tokio::test]
async fn a_commit_the_server_cancelled_is_a_timeout_not_in_doubt() {
    use sea_orm::ConnectionTrait;
    let db = counseling_testkit::TestDatabase::migrated().await.unwrap();
    let admin = db.connect().await;
    slow_commits(&admin, "1").await;
    let (_db, database, users) = common::repository_on(db);
    let unit = database.transaction(|unit| async move {
        unit.users().create(new_user(r"\school\mia")).await?;
        Ok::<_, CreateUserError>(())
    });
    let cancel = async {
        let cancelled = async || {
            let statement = sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query = 'COMMIT' AND state = 'active'",
            );
            let row = admin.query_one_raw(statement).await.unwrap();
            row.is_some()
        };
        eventually("a COMMIT to cancel", Duration::from_secs(5), cancelled)
            .await
            .unwrap();
    };
    let (outcome, ()) = tokio::join!(unit, cancel);
    assert_eq!(
        outcome,
        Err(CreateUserError::Store(StoreError::Unavailable(
            counseling_domain::Unavailability::Timeout
        )))
    );
    // The server ended the transaction block and the session is fine: the connection is kept.
    assert_eq!(database.status().open, 1, "{:?}", database.status());
    assert!(!find(&users, r"\school\mia").await);
}

/// A call the unit left behind that is cut off half-way (its caller's own timeout) after the
/// unit returned, while the COMMIT waits for the connection: the COMMIT would first finish it,
/// unseen, and keep it. The unit fails as cut off, and nothing is written.
#[tokio::test]
async fn a_call_left_behind_cut_off_before_the_commit_is_not_committed() {
    let (db, database, users) = repository().await;
    slow_inserts(&db, &[(r"\school\slow", "0.3"), (r"\school\late", "0.5")]).await;
    let outcome = database
        .transaction(|unit| async move {
            let users = unit.users();
            let late = users.clone();
            // Queued for the connection behind the slow insert, and ahead of the COMMIT; its
            // INSERT runs 0.3 s into the unit and is cut off 0.15 s later.
            let cut_off = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let call = late.create(new_user(r"\school\late"));
                tokio::time::timeout(Duration::from_millis(400), call).await
            });
            users.create(new_user(r"\school\slow")).await?;
            Ok::<_, CreateUserError>(cut_off)
        })
        .await;
    let outcome = match outcome {
        Ok(cut_off) => Ok(cut_off.await.unwrap()),
        Err(error) => Err(error),
    };
    assert!(
        matches!(&outcome, Err(CreateUserError::Store(StoreError::Unexpected(why))) if why.contains("cut off")),
        "{outcome:?}"
    );
    assert!(!find(&users, r"\school\late").await);
    assert!(!find(&users, r"\school\slow").await);
}

/// A call the unit left behind that is still running when the unit returns runs before the
/// COMMIT, which waits for it: nothing was cut off, and both writes are kept.
#[tokio::test]
async fn a_call_left_behind_still_running_at_the_commit_is_committed_with_the_unit() {
    let (db, database, users) = repository().await;
    slow_inserts(&db, &[(r"\school\slow", "0.3")]).await;
    let running = database
        .transaction(|unit| async move {
            let users = unit.users();
            users.create(new_user(r"\school\first")).await?;
            let late = users.clone();
            let running = tokio::spawn(async move { late.create(new_user(r"\school\slow")).await });
            // Its INSERT has started, and runs 0.3 s: the COMMIT waits for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, CreateUserError>(running)
        })
        .await
        .unwrap();
    assert!(running.await.unwrap().is_ok());
    assert!(find(&users, r"\school\first").await);
    assert!(find(&users, r"\school\slow").await);
}
