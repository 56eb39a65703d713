//! Checksums: an applied migration whose file changed is `modified`, one the binary does not
//! have is `missing`; up and down refuse while either exists (exit 3 or 4, one message per
//! migration), `accept` settles one migration, and a database migrated before checksums adopts
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

mod common;

use std::sync::{Arc, Mutex};

use common::{SqlMigration, connect, connect_as_service, migration_binary, owner_orm, text};
use counseling_testkit::TestDatabase;
use migration::sea_orm::sqlx;
use migration::{
    Accepted, Checksum, DriftProblem, Event, MigrationFile, MigrationStatus, MigratorTrait,
    Observer, RunError, Runner,
};

fn table(name: &'static str, sql: &'static str) -> SqlMigration {
    SqlMigration::new(name, sql, "SELECT 1")
}

/// The fixtures' list; `edited` changes the first one's definition (its SQL, so its source).
fn fixtures(edited: bool) -> Vec<MigrationFile> {
    let first = if edited {
        table("m1_people", "CREATE TABLE people (id int, name text)")
    } else {
        table("m1_people", "CREATE TABLE people (id int)")
    };
    vec![
        first.file(),
        table("m2_places", "CREATE TABLE places (id int)").file(),
    ]
}

fn statuses(states: &[migration::MigrationState]) -> Vec<(String, MigrationStatus)> {
    states
        .iter()
        .map(|state| (state.name.clone(), state.status))
        .collect()
}

#[tokio::test]
async fn an_edited_migration_is_modified_and_up_and_down_refuse_until_it_is_accepted() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    Runner::new(fixtures(false)).up(&orm, None).await.unwrap();
    let applied = Checksum::of_source(fixtures(false)[0].source());
    let now = Checksum::of_source(fixtures(true)[0].source());

    let edited = Runner::new(fixtures(true));
    let states = edited.status(&orm).await.unwrap();
    assert_eq!(
        statuses(&states),
        [
            ("m1_people".to_owned(), MigrationStatus::Modified),
            ("m2_places".to_owned(), MigrationStatus::Applied),
        ]
    );
    assert_eq!(states[0].recorded.as_ref(), Some(&applied));
    assert_eq!(states[0].current.as_ref(), Some(&now));

    for refused in [
        edited.up(&orm, None).await.unwrap_err(),
        edited.down(&orm, 1).await.unwrap_err(),
    ] {
        let RunError::Drift(drift) = refused else {
            panic!("{refused}")
        };
        assert_eq!(drift.exit_code(), 3);
        assert_eq!(
            drift.problems,
            [DriftProblem::Modified {
                name: "m1_people".into(),
                file: "tests/m1_people.rs".into(),
                recorded: applied.clone(),
                current: now.clone(),
            }]
        );
        let message = drift.to_string();
        for part in [
            "m1_people was modified after it was applied",
            applied.as_str(),
            now.as_str(),
            "restore tests/m1_people.rs as it was when applied",
            "`just migrate-accept m1_people`",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }
    // Nothing ran: m2 is still applied.
    assert!(edited.status(&orm).await.unwrap()[1].is_applied());

    assert_eq!(
        edited.accept(&orm, "m1_people").await.unwrap(),
        Accepted::Recorded {
            previous: Some(applied),
            current: now.clone()
        }
    );
    assert_eq!(
        edited.accept(&orm, "m1_people").await.unwrap(),
        Accepted::Unchanged(now)
    );
    assert!(
        edited
            .status(&orm)
            .await
            .unwrap()
            .iter()
            .all(|state| state.status == MigrationStatus::Applied)
    );
    assert_eq!(edited.down(&orm, 1).await.unwrap(), ["m2_places"]);
}

#[tokio::test]
async fn an_applied_migration_unknown_to_the_binary_is_missing_and_refused() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    Runner::new(fixtures(false)).up(&orm, None).await.unwrap();
    let recorded = Checksum::of_source(fixtures(false)[1].source());

    let older = Runner::new(vec![fixtures(false).remove(0)]);
    assert_eq!(
        statuses(&older.status(&orm).await.unwrap()),
        [
            ("m1_people".to_owned(), MigrationStatus::Applied),
            ("m2_places".to_owned(), MigrationStatus::Missing),
        ]
    );
    let RunError::Drift(drift) = older.up(&orm, None).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(drift.exit_code(), 4);
    let message = drift.to_string();
    assert!(
        message.contains("m2_places is applied in the database"),
        "{message}"
    );
    assert!(message.contains(recorded.as_str()), "{message}");
    assert!(message.contains("`just migrate-accept m2_places`"));

    // Modified and missing at once: both named, exit 3.
    let both = Runner::new(vec![fixtures(true).remove(0)]);
    let RunError::Drift(drift) = both.down(&orm, 1).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(drift.problems.len(), 2);
    assert_eq!(drift.exit_code(), 3);

    assert_eq!(
        older.accept(&orm, "m2_places").await.unwrap(),
        Accepted::Forgotten {
            recorded: Some(recorded)
        }
    );
    assert_eq!(older.up(&orm, None).await.unwrap(), Vec::<String>::new());
    assert!(matches!(
        older.accept(&orm, "m9_nothing").await.unwrap_err(),
        RunError::UnknownVersion(_)
    ));
}

#[derive(Default)]
struct Adoptions(Mutex<Vec<String>>);

#[migration::sea_orm::prelude::async_trait::async_trait]
impl Observer for Adoptions {
    async fn event(&self, event: &Event<'_>) {
        if let Event::Adopted { name, checksum } = event {
            self.0.lock().unwrap().push(format!("{name} {checksum}"));
        }
    }
}

/// The fixtures' list, edited, with the first one mended from `checksums`.
fn mended_fixtures(checksums: Vec<String>) -> Vec<MigrationFile> {
    let checksums: Vec<&'static str> = checksums
        .into_iter()
        .map(|checksum| &*Box::leak(checksum.into_boxed_str()))
        .collect();
    let mut files = fixtures(true);
    let first = files
        .remove(0)
        .mended_from(Box::leak(checksums.into_boxed_slice()));
    files.insert(0, first);
    files
}

/// A database that applied a migration before its file was mended runs with the mended file,
/// and keeps the checksum it recorded (the release before's binary, which knows only that one,
/// still runs there); any other edit is drift as before.
#[tokio::test]
async fn a_migration_applied_before_its_file_was_mended_is_applied_any_other_edit_refused() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = db.connect().await;
    let before = Runner::new(fixtures(false));
    before.up(&orm, None).await.unwrap();
    let applied = Checksum::of_source(fixtures(false)[0].source());

    // Mended from another checksum than the one recorded: an edit like any other.
    let other = mended_fixtures(vec!["0".repeat(64)]);
    let refused = Runner::new(other).up(&orm, None).await.unwrap_err();
    assert!(matches!(&refused, RunError::Drift(_)), "{refused}");

    let adoptions = Arc::new(Adoptions::default());
    let mended =
        Runner::new(mended_fixtures(vec![applied.to_string()])).with_observer(adoptions.clone());
    let states = mended.status(&orm).await.unwrap();
    assert_eq!(states[0].status, MigrationStatus::Applied);
    assert_eq!(states[0].recorded.as_ref(), Some(&applied));
    assert!(mended.up(&orm, None).await.unwrap().is_empty());
    assert_eq!(
        mended.accept(&orm, "m1_people").await.unwrap(),
        Accepted::Unchanged(applied.clone())
    );
    assert!(adoptions.0.lock().unwrap().is_empty());
    // The release before still runs: its checksum is the one recorded.
    let states = before.status(&orm).await.unwrap();
    assert_eq!(states[0].status, MigrationStatus::Applied);
    assert!(before.up(&orm, None).await.unwrap().is_empty());
    assert_eq!(
        mended.down(&orm, 2).await.unwrap(),
        ["m2_places", "m1_people"]
    );
}

#[tokio::test]
async fn a_database_migrated_before_checksums_adopts_them_on_its_next_run() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = owner_orm(&db);
    // sea-orm-migration's own runner, as the previous releases applied them: no checksums.
    migration::Migrator::up(&orm, None).await.unwrap();
    let mut conn = connect(&db).await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'seaql_migrations' ORDER BY ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(columns, ["version", "applied_at"]);
    // Status reads such a table as it is, and changes nothing.
    let before = Runner::new(migration::migrations())
        .status(&orm)
        .await
        .unwrap();
    assert!(
        before
            .iter()
            .all(|state| state.status == MigrationStatus::Applied && state.recorded.is_none())
    );

    let adoptions = Arc::new(Adoptions::default());
    let runner = Runner::new(migration::migrations()).with_observer(adoptions.clone());
    assert!(runner.up(&orm, None).await.unwrap().is_empty());
    let expected: Vec<String> = migration::migrations()
        .iter()
        .map(|file| format!("{} {}", file.name(), file.checksum()))
        .collect();
    assert_eq!(*adoptions.0.lock().unwrap(), expected, "one line each");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT version, checksum FROM seaql_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let files: Vec<(String, String)> = migration::migrations()
        .iter()
        .map(|file| (file.name().to_owned(), file.checksum().to_string()))
        .collect();
    assert_eq!(stored, files);
    // Adopted once: the next run has nothing to adopt.
    runner.up(&orm, None).await.unwrap();
    assert_eq!(adoptions.0.lock().unwrap().len(), expected.len());
    // The marks a run without a transaction writes were added too: a rollback of the newest
    // migration (which runs without one) works on such a history.
    let marks: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'seaql_migrations' AND column_name LIKE '%started_at' \
         ORDER BY column_name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(marks, ["apply_started_at", "rollback_started_at"]);
    let newest = migration::migrations().last().unwrap().name().to_owned();
    assert_eq!(runner.down(&orm, 1).await.unwrap(), [newest]);
}

/// A database migrated by sea-orm-migration's own runner (no checksums), then `sql` run on it;
/// its owner's connection, and a runner of the real migrations whose adoptions are recorded.
async fn migrated_before_checksums_and(
    sql: &'static str,
) -> (
    TestDatabase,
    migration::sea_orm::DatabaseConnection,
    Arc<Adoptions>,
    Runner,
) {
    let db = TestDatabase::empty().await.unwrap();
    let orm = owner_orm(&db);
    migration::Migrator::up(&orm, None).await.unwrap();
    sqlx::query(sql)
        .execute(&mut connect(&db).await)
        .await
        .unwrap();
    let adoptions = Arc::new(Adoptions::default());
    let runner = Runner::new(migration::migrations()).with_observer(adoptions.clone());
    (db, orm, adoptions, runner)
}

/// `accept` on a database migrated before checksums adds the column and adopts the others'
/// checksums together: the next run does not take them for another tool's.
#[tokio::test]
async fn accept_on_a_database_migrated_before_checksums_adopts_the_others_too() {
    let (_db, orm, adoptions, runner) = migrated_before_checksums_and(
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m9_elsewhere', 0)",
    )
    .await;
    let accepted = runner.accept(&orm, "m9_elsewhere").await.unwrap();
    assert!(
        matches!(accepted, Accepted::Forgotten { .. }),
        "{accepted:?}"
    );
    assert_eq!(
        adoptions.0.lock().unwrap().len(),
        migration::migrations().len()
    );
    assert!(runner.up(&orm, None).await.unwrap().is_empty());
}

/// The runner before checksums were marked added the column outside any transaction, so a run
/// it refused (or that was cut off) left the column with no checksum at all: such rows are
/// adopted, not taken for another tool's.
#[tokio::test]
async fn a_checksum_column_left_empty_by_an_earlier_runner_is_adopted() {
    let (_db, orm, adoptions, runner) =
        migrated_before_checksums_and("ALTER TABLE seaql_migrations ADD COLUMN checksum text")
            .await;
    assert!(runner.up(&orm, None).await.unwrap().is_empty());
    assert_eq!(
        adoptions.0.lock().unwrap().len(),
        migration::migrations().len()
    );
}

/// An earlier runner that kept checksums, before the column was marked, recorded one in every
/// row it wrote: a row without one beside those was written by another tool, and is refused, not
/// adopted.
#[tokio::test]
async fn a_row_without_a_checksum_beside_rows_with_one_is_another_tools() {
    let (db, orm, adoptions, runner) =
        migrated_before_checksums_and("ALTER TABLE seaql_migrations ADD COLUMN checksum text")
            .await;
    let first = &migration::migrations()[0];
    sqlx::query("UPDATE seaql_migrations SET checksum = $1 WHERE version = $2")
        .bind(first.checksum().to_string())
        .bind(first.name())
        .execute(&mut connect(&db).await)
        .await
        .unwrap();
    let Err(RunError::Drift(drift)) = runner.up(&orm, None).await else {
        panic!("up adopted checksums nothing vouches for");
    };
    assert_eq!(drift.exit_code(), 3);
    let unrecorded = drift
        .problems
        .iter()
        .filter(|problem| matches!(problem, DriftProblem::Unrecorded { .. }));
    assert_eq!(
        unrecorded.count(),
        migration::migrations().len() - 1,
        "{drift}"
    );
    assert!(adoptions.0.lock().unwrap().is_empty());
}

/// A database with the first fixture applied; its owner's connection, the fixtures' runner, a
/// connection as the service's role and that role's name.
async fn one_fixture_applied_and_service() -> (
    TestDatabase,
    migration::sea_orm::DatabaseConnection,
    Runner,
    sqlx::PgConnection,
    String,
) {
    let db = TestDatabase::empty().await.unwrap();
    let orm = owner_orm(&db);
    let runner = Runner::new(fixtures(false));
    runner.up(&orm, Some(1)).await.unwrap();
    let mut service = connect_as_service(&db).await;
    let service_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut service)
        .await
        .unwrap();
    (db, orm, runner, service, service_role)
}

/// A column grant another role made under a grant option of the table's survives the owner's
/// REVOKE ... CASCADE (PostgreSQL keeps it): the run stops, naming the grant and who made it.
#[tokio::test]
async fn a_write_grant_the_owner_cannot_revoke_stops_the_run_naming_it() {
    let (db, orm, runner, mut service, service_role) = one_fixture_applied_and_service().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT INSERT ON seaql_migrations TO \"{service_role}\" WITH GRANT OPTION"
    )))
    .execute(&mut connect(&db).await)
    .await
    .unwrap();
    sqlx::query("GRANT INSERT (version) ON seaql_migrations TO PUBLIC")
        .execute(&mut service)
        .await
        .unwrap();
    let error = runner.up(&orm, None).await.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "(INSERT on column version to PUBLIC, granted by {service_role})"
        )),
        "{error}"
    );
}

/// Once checksums are kept, a migration applied without one (by sea-orm-cli with the exported
/// `Migrator`, or by hand) is not adopted unseen: nothing says which file it ran. Up refuses,
/// naming it, until a person accepts it.
#[tokio::test]
async fn a_migration_applied_without_a_checksum_by_another_tool_is_refused_until_accepted() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = owner_orm(&db);
    let runner = Runner::new(fixtures(false));
    runner.up(&orm, Some(1)).await.unwrap();
    // Another tool applies the second one, from an edited file, and records no checksum.
    let mut conn = connect(&db).await;
    for sql in [
        "CREATE TABLE places (id int, name text)",
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m2_places', 0)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    let states = runner.status(&orm).await.unwrap();
    assert_eq!(
        statuses(&states)[1],
        ("m2_places".to_owned(), MigrationStatus::Unrecorded)
    );
    let Err(RunError::Drift(drift)) = runner.up(&orm, None).await else {
        panic!("up adopted a checksum nothing vouches for");
    };
    assert_eq!(drift.exit_code(), 3);
    assert!(
        matches!(&drift.problems[..], [DriftProblem::Unrecorded { name, .. }] if name == "m2_places"),
        "{drift}"
    );
    assert!(
        drift.to_string().contains("just migrate-accept m2_places"),
        "{drift}"
    );
    let accepted = runner.accept(&orm, "m2_places").await.unwrap();
    // Its row had no checksum: now it has the file's.
    assert!(
        matches!(accepted, Accepted::Recorded { previous: None, .. }),
        "{accepted:?}"
    );
    assert!(runner.up(&orm, None).await.unwrap().is_empty());
}

/// The history emptied by `down` still keeps checksums: a row another tool writes into it
/// without one is not taken for a database migrated before checksums.
#[tokio::test]
async fn a_migration_recorded_without_a_checksum_into_an_emptied_history_is_refused() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = owner_orm(&db);
    let runner = Runner::new(fixtures(false));
    runner.up(&orm, None).await.unwrap();
    runner.down(&orm, 2).await.unwrap();
    let mut conn = connect(&db).await;
    sqlx::query("INSERT INTO seaql_migrations (version, applied_at) VALUES ('m1_people', 0)")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        statuses(&runner.status(&orm).await.unwrap())[0],
        ("m1_people".to_owned(), MigrationStatus::Unrecorded)
    );
    let Err(RunError::Drift(drift)) = runner.up(&orm, None).await else {
        panic!("up adopted a checksum nothing vouches for");
    };
    assert!(
        matches!(&drift.problems[..], [DriftProblem::Unrecorded { name, .. }] if name == "m1_people"),
        "{drift}"
    );
}

/// A pending migration listed before an applied one (a branch merged late) is not run out of
/// order; `down` still rolls back the newest applied one.
#[tokio::test]
async fn up_refuses_a_pending_migration_listed_before_an_applied_one() {
    let db = TestDatabase::empty().await.unwrap();
    let orm = owner_orm(&db);
    let reversible = |name, table: &str| {
        SqlMigration::new(
            name,
            format!("CREATE TABLE {table} (id int)").leak(),
            format!("DROP TABLE {table}").leak(),
        )
        .file()
    };
    let released = || {
        vec![
            reversible("m1_people", "people"),
            reversible("m2_places", "places"),
        ]
    };
    Runner::new(released()).up(&orm, None).await.unwrap();
    let mut merged = released();
    merged.insert(1, reversible("m1a_rooms", "rooms"));
    let runner = Runner::new(merged);
    let Err(RunError::Drift(drift)) = runner.up(&orm, None).await else {
        panic!("up ran a migration out of order");
    };
    assert_eq!(drift.exit_code(), 3);
    assert!(
        matches!(
            &drift.problems[..],
            [DriftProblem::OutOfOrder { name, applied_after, .. }]
                if name == "m1a_rooms" && applied_after == "m2_places"
        ),
        "{drift}"
    );
    let mut conn = connect(&db).await;
    let rooms: Option<String> = sqlx::query_scalar("SELECT to_regclass('rooms')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rooms, None, "nothing ran");
    assert_eq!(runner.down(&orm, 1).await.unwrap(), ["m2_places"]);
    assert_eq!(
        runner.up(&orm, None).await.unwrap(),
        ["m1a_rooms", "m2_places"]
    );
}

/// The service's role may read the history (`migration status` with its URL), not write it.
async fn history_refused_to(service: &mut sqlx::PgConnection) {
    for sql in [
        "INSERT INTO seaql_migrations (version, applied_at, checksum) VALUES ('m2_places', 0, '')",
        "UPDATE seaql_migrations SET checksum = NULL",
        "DELETE FROM seaql_migrations",
        "TRUNCATE seaql_migrations",
    ] {
        let error = sqlx::query(sql).execute(&mut *service).await.unwrap_err();
        assert_eq!(common::sqlstate(error), "42501", "{sql}");
    }
    sqlx::query("SELECT * FROM seaql_migrations")
        .execute(&mut *service)
        .await
        .unwrap();
}

/// Only the owner writes the history, also in a database whose table got the schema's default
/// grants before this rule: the service's role cannot write it after a run.
#[tokio::test]
async fn the_service_role_cannot_write_the_migration_history() {
    let (db, orm, runner, mut service, service_role) = one_fixture_applied_and_service().await;
    history_refused_to(&mut service).await;
    // As granted before the rule existed, to everyone, on columns, and passed on by a grantee:
    // the next run takes it all back.
    let mut admin = connect(&db).await;
    let columns = "INSERT (version, applied_at, checksum)";
    for grant in [
        "GRANT ALL ON seaql_migrations TO PUBLIC".to_owned(),
        format!("GRANT {columns} ON seaql_migrations TO \"{service_role}\" WITH GRANT OPTION"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(grant))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT {columns} ON seaql_migrations TO PUBLIC"
    )))
    .execute(&mut service)
    .await
    .unwrap();
    runner.up(&orm, None).await.unwrap();
    history_refused_to(&mut service).await;
}

/// The "done when", through the binary: the checksum recorded for an applied migration
/// no longer matches its file (as after an edit), then `accept`.
#[tokio::test]
async fn the_binary_says_modified_and_missing_exits_3_or_4_and_accept_clears_it() {
    let db = TestDatabase::empty().await.unwrap();
    let url = db.owner_url();
    let run = |args: &[&str]| migration_binary(args, &[("DATABASE_URL", url.as_str())]);
    assert!(run(&["up"]).status.success());
    let mut conn = connect(&db).await;
    let edited = "m20261130_000002_bcrypt_cost_bounds";
    let file = format!("migration/src/{edited}.rs");
    let current = migration::migrations()
        .iter()
        .find(|migration| migration.name() == edited)
        .unwrap()
        .checksum();
    let other = "0".repeat(64);
    sqlx::query("UPDATE seaql_migrations SET checksum = $1 WHERE version = $2")
        .bind(&other)
        .bind(edited)
        .execute(&mut conn)
        .await
        .unwrap();

    let status = run(&["status"]);
    assert!(status.status.success());
    assert!(
        text(&status.stdout).contains(&format!("modified {edited}\n")),
        "{}",
        text(&status.stdout)
    );
    for command in [&["up"][..], &["down"][..]] {
        let refused = run(command);
        let stderr = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(3), "{stderr}");
        let messages: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains(" was modified after it was applied"))
            .collect();
        assert_eq!(messages.len(), 1, "{stderr}");
        for part in [
            edited,
            file.as_str(),
            other.as_str(),
            current.as_str(),
            "restore",
            &format!("`just migrate-accept {edited}`"),
        ] {
            assert!(messages[0].contains(part), "{part}: {stderr}");
        }
        assert!(text(&refused.stdout).is_empty(), "nothing ran");
    }

    // And one the binary does not know: both named, still 3; then 4 once the edit is accepted.
    let future = "m20991231_000001_from_another_branch";
    sqlx::query("INSERT INTO seaql_migrations (version, applied_at, checksum) VALUES ($1, 0, $2)")
        .bind(future)
        .bind(&other)
        .execute(&mut conn)
        .await
        .unwrap();
    let status = text(&run(&["status"]).stdout);
    assert!(
        status.ends_with(&format!("missing  {future}\n")),
        "{status}"
    );
    let both = run(&["up"]);
    assert_eq!(both.status.code(), Some(3));
    assert_eq!(
        text(&both.stderr)
            .lines()
            .filter(|line| line.contains(edited) || line.contains(future))
            .count(),
        2,
        "{}",
        text(&both.stderr)
    );

    let accepted = run(&["accept", edited]);
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
    assert!(text(&accepted.stdout).contains(current.as_str()));
    let missing = run(&["up"]);
    assert_eq!(missing.status.code(), Some(4), "{}", text(&missing.stderr));
    assert!(run(&["accept", future]).status.success());

    let up = run(&["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(
        text(&up.stdout).trim(),
        "applied 0 migration(s); the schema is up to date"
    );
    assert!(
        text(&run(&["status"]).stdout)
            .lines()
            .all(|line| line.starts_with("applied  ")),
    );
    // Nothing to accept: an unknown version, a pending one; usage errors.
    assert_eq!(run(&["accept", future]).status.code(), Some(2));
    assert!(run(&["down"]).status.success());
    let pending = run(&["accept", migration::migrations().last().unwrap().name()]);
    assert_eq!(pending.status.code(), Some(2), "{}", text(&pending.stderr));
}

/// Every migration of this binary with the checksums databases recorded when it was applied
/// (two for one mended: its file's now, and the one it was mended from). Editing one in place
/// would stop every `up` and `down` wherever it was applied (drift, exit 3), so CI says so first:
/// a change is a new migration, or, for a change to what only a failing run does, a mend
/// ([`MigrationFile::mended_from`] lists the checksums before it). A new migration joins the
/// list as it is written (the failure prints its line).
const RECORDED: &[(&str, &str)] = &[
    (
        "m20251220_000001_create_users",
        "38acb7bbf176860be38198ec9760cbc3dc0046b98835b9e75f123d537ad7025c",
    ),
    (
        "m20261130_000001_username_identity",
        "d337d37d699114b80951cffdc70b9430e179660dbc46c4e9974e8fad4c3e52d1",
    ),
    (
        "m20261130_000002_bcrypt_cost_bounds",
        "5610a59e4bfd07b682602f2b945082833142116adb4dddef6c3b1e9f19bdf748",
    ),
    (
        "m20261203_000001_username_identity_in_database",
        "42fb80737fc0af534c12e7985ca50735b7efe17ba21fda678b60634b19192e10",
    ),
    (
        "m20261203_000001_username_identity_in_database",
        "279bb532087010b8f85099088d68a192fc81b07d466aa9872faf48899f8e9910",
    ),
    (
        "m20261203_000001_username_identity_in_database",
        "372fc1c5ec93bae1c28bdab1822079ffbc0ee2cfa5ec751bdfc18dee45d6f62b",
    ),
    (
        "m20261203_000001_username_identity_in_database",
        "c315b6c50513ca3b81b51d1e6118fdcbe6c297b4c188fe2e95a22f44c6bea71e",
    ),
    (
        "m20261203_000001_username_identity_in_database",
        "96db3a812f65bf4628bf1dc0f0429ffeefc910ef53479f9cc60d5e6b15fc53df",
    ),
    (
        "m20261203_000001_username_identity_in_database",
        "ae7cb2950e201f6620f87e2aa6910108a2893a705e24c4b75a97bf6bf220fb45",
    ),
    (
        "m20261203_000001_username_identity_in_database",
        "6f1c4e340c1be31515963b5e5d0a1a6bc359e37d83beaf576cd9bc04e0dff8cd",
    ),
    (
        "m20261205_000001_username_default_ignorables",
        "6ceb25ae6da25e1256dd980759c10f3665bc68e57d092c248525236e628527e5",
    ),
    (
        "m20261205_000002_users_id_and_created_at_fixed",
        "80594b6338f6085daa87f539aa1ddacee7ee316baca0e210954c3624eb3f6ac7",
    ),
    (
        "m20261205_000003_password_hash_canonical",
        "65a601fe45558a83a75bc626ff725a65fe9efd590970fb7e37cbb7b2ef5eb8bf",
    ),
    (
        "m20261205_000004_users_timestamps_in_range",
        "2ab5f6b89f6794f91df6a1db87c1f14a6243ba928f95d42b709865b11e25ae6b",
    ),
    (
        "m20261205_000005_username_unicode_14",
        "33b3a6cbd37168b0281930443365b0c2411a1cceb2bdfc626c58436a6fed1b67",
    ),
    (
        "m20261206_000001_username_hangul_o_yae",
        "58d4c06748a3a43a7ec5e96375172b68a025b423e4e40d58277b9f5282188c24",
    ),
];

#[test]
fn no_migration_is_edited_after_it_was_written_down() {
    let files = migration::migrations();
    for (name, _) in RECORDED {
        assert!(
            files.iter().any(|file| file.name() == *name),
            "{name} was removed or renamed; databases that applied it would refuse every run \
             (missing): restore it"
        );
    }
    for file in files {
        let checksum = file.checksum();
        let line = format!("(\"{}\", \"{checksum}\")", file.name());
        let recorded: Vec<&str> = RECORDED
            .iter()
            .filter(|(name, _)| *name == file.name())
            .map(|(_, recorded)| *recorded)
            .collect();
        assert!(
            !recorded.is_empty(),
            "{} is new: add {line} to RECORDED",
            file.name()
        );
        assert!(
            recorded.contains(&checksum.as_str()),
            "{} was edited after it was recorded; databases that applied it would refuse every \
             run: restore the file and write a new migration",
            file.name()
        );
        // Each checksum it had stays listed: a database may hold any of them.
        for mended in file.mended() {
            assert!(
                recorded.contains(mended),
                "{} was mended from {mended}, which RECORDED no longer lists",
                file.name()
            );
        }
        for earlier in recorded
            .iter()
            .filter(|&&earlier| earlier != checksum.as_str())
        {
            assert!(
                file.mended().contains(earlier),
                "{} was recorded as {earlier}, which its file does not list as mended from: \
                 databases that applied it would refuse every run",
                file.name()
            );
        }
    }
}

/// A role that could write the history, and wrote a row that makes the run refuse (a migration
/// this binary does not have, to be skipped once a release brings it), loses that right all
/// the same: the revoke is committed before the history is read, not rolled back with the
/// refusal.
#[tokio::test]
async fn a_refused_run_still_revokes_the_history_writes_it_found() {
    let (db, orm, runner, mut service, service_role) = one_fixture_applied_and_service().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT INSERT ON seaql_migrations TO \"{service_role}\""
    )))
    .execute(&mut connect(&db).await)
    .await
    .unwrap();
    sqlx::query("INSERT INTO seaql_migrations (version, applied_at) VALUES ('m9_future', 0)")
        .execute(&mut service)
        .await
        .unwrap();
    let Err(RunError::Drift(drift)) = runner.up(&orm, None).await else {
        panic!("up ran past a row it does not know");
    };
    assert!(
        matches!(&drift.problems[..], [DriftProblem::Missing { name, .. }] if name == "m9_future"),
        "{drift}"
    );
    let may_insert: bool =
        sqlx::query_scalar("SELECT has_table_privilege('seaql_migrations', 'INSERT')")
            .fetch_one(&mut service)
            .await
            .unwrap();
    assert!(!may_insert, "the refusal rolled the revoke back");
}

/// Migrations run at READ COMMITTED whatever the database's default: a guard that counts rows
/// after waiting for its lock (before a DROP) must see the rows committed meanwhile.
#[tokio::test]
async fn migrations_run_read_committed_whatever_the_databases_default() {
    let db = TestDatabase::empty().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'serializable'",
        db.name()
    )))
    .execute(&mut connect(&db).await)
    .await
    .unwrap();
    let orm = owner_orm(&db);
    let mut without_transaction = SqlMigration::new(
        "m2_session",
        "CREATE TABLE in_session AS SELECT current_setting('transaction_isolation') AS level",
        "SELECT 1",
    );
    without_transaction.transaction = false;
    let runner = Runner::new(vec![
        table(
            "m1_transaction",
            "CREATE TABLE in_transaction AS SELECT current_setting('transaction_isolation') AS level",
        )
        .file(),
        without_transaction.file(),
    ]);
    runner.up(&orm, None).await.unwrap();
    let mut conn = connect(&db).await;
    for table in ["in_transaction", "in_session"] {
        let found: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT level FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(found, "read committed", "{table}");
    }
}

/// What migrations generate from crates' Unicode data rather than write out: the character
/// class of `ck_users_username_characters`, and the previous release's key that `down` writes
/// back. A checksum covers only a migration's file, so a dependency bump (`cargo update`) would
/// change what a fresh database gets, or what a down writes, unseen: frozen here as the
/// migrations' checksums are (a change is a new migration, with the old output copied).
#[test]
fn what_migrations_generate_from_unicode_data_is_frozen() {
    use migration::m20261130_000001_username_identity::{
        forbidden_characters_bracket, identity_key,
    };
    let bracket = Checksum::of_source(&forbidden_characters_bracket()).to_string();
    // Every scalar value, in runs of 256 behind a domain part, through the previous rule.
    let scalars: Vec<char> = (0..=0x10ffff_u32).filter_map(char::from_u32).collect();
    let keys: String = scalars
        .chunks(256)
        .map(|run| identity_key(&format!("\\d\\{}", run.iter().collect::<String>())))
        .collect::<Vec<_>>()
        .join("\n");
    let keys = Checksum::of_source(&keys).to_string();
    assert_eq!(
        (bracket.as_str(), keys.as_str()),
        (
            "160ee82d1f51cb10024ef7b499b3568b4155c2edd4f0a6b9ec88ce19d506a1f2",
            "6805c1a06ef2f7f31b9b136b9aab5864eb7834c1bdf34b528e34c65cd46b1d7b"
        ),
        "the Unicode data behind a migration changed (a dependency bump?): pin the crate back, \
         or write a new migration that freezes the old output"
    );
}
