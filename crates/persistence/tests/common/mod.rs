#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use counseling_domain::{NewUser, PasswordHash, StoreError, Unavailability, Username};
use counseling_persistence::{Database, DatabaseSettings, PgUserRepository};
use counseling_testkit::{PgCluster, Scrape, TestDatabase};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

#[allow(unused_imports)] // each test uses its own subset
pub use counseling_testkit::fixtures::{BCRYPT_HASH as HASH, OTHER_BCRYPT_HASH as OTHER_HASH};

/// The test kit's small pool on `url` (many tests run at once against one server).
pub fn settings_for(url: String) -> DatabaseSettings {
    counseling_testkit::fixtures::pool_settings(&url).unwrap()
}

/// A migrated database on a cluster of the test's own (whose server processes the test may stop
/// or freeze), and the test kit's pool settings for it.
pub async fn private_database() -> (PgCluster, TestDatabase, DatabaseSettings) {
    let cluster = PgCluster::start().await.unwrap();
    let test_db = cluster.migrated_database().await.unwrap();
    let settings = settings_for(test_db.url());
    (cluster, test_db, settings)
}

/// A pool that records its metrics into a recorder of its own, to be scraped with [`scrape`].
pub fn recorded_pool(settings: &DatabaseSettings) -> (PrometheusRecorder, Database) {
    recorded_pool_on(settings, tokio::runtime::Handle::current())
}

/// [`recorded_pool`] whose I/O runs on `io`.
pub fn recorded_pool_on(
    settings: &DatabaseSettings,
    io: tokio::runtime::Handle,
) -> (PrometheusRecorder, Database) {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.01, 0.1, 1.0])
        .unwrap()
        .build_recorder();
    let database =
        metrics::with_local_recorder(&recorder, || Database::connect_lazy(settings, io).unwrap());
    (recorder, database)
}

pub fn scrape(recorder: &PrometheusRecorder) -> Scrape {
    Scrape::parse(&recorder.handle().render()).unwrap()
}

/// A pool whose I/O runs on the test's own runtime.
pub fn connect(settings: &DatabaseSettings) -> Database {
    Database::connect_lazy(settings, tokio::runtime::Handle::current()).unwrap()
}

pub async fn repository() -> (TestDatabase, Database, PgUserRepository) {
    repository_on(TestDatabase::migrated().await.unwrap())
}

/// A repository on a database the test created itself (for example with a chosen locale).
pub fn repository_on(test_db: TestDatabase) -> (TestDatabase, Database, PgUserRepository) {
    let database = connect(&settings_for(test_db.url()));
    let repository = PgUserRepository::new(database.clone());
    (test_db, database, repository)
}

/// Opens `count` connections at once (units of work that each wait until all hold one), then
/// hands them all back to the pool, and returns once they are idle there.
pub async fn open_idle_connections(database: &Database, count: usize) {
    let all_held = std::sync::Arc::new(tokio::sync::Barrier::new(count));
    let units: Vec<_> = (0..count)
        .map(|_| {
            let (database, all_held) = (database.clone(), all_held.clone());
            tokio::spawn(async move {
                database
                    .transaction(|_unit| async move {
                        all_held.wait().await;
                        Ok::<_, StoreError>(())
                    })
                    .await
            })
        })
        .collect();
    for unit in units {
        unit.await.unwrap().unwrap();
    }
    // A unit's connection goes back to the pool a moment after the unit returns.
    counseling_testkit::fixtures::eventually(
        "the connections idle in the pool",
        std::time::Duration::from_secs(2),
        async || usize::try_from(database.status().idle).is_ok_and(|idle| idle >= count),
    )
    .await
    .unwrap();
}

pub fn new_user(username: &str) -> NewUser {
    NewUser {
        username: Username::parse(username).unwrap(),
        password_hash: PasswordHash::parse(HASH).unwrap(),
    }
}

/// Everything a tracing subscriber writes, kept for a test to read (global subscribers only:
/// see `tracing.rs`).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far, removed from the buffer.
    pub fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// What a call to a stopped or crashed server gets: its pooled session died with the server, or
/// a new one was refused; never a timeout or an unexpected error.
#[track_caller]
pub fn assert_server_gone<T: std::fmt::Debug>(outcome: &Result<T, StoreError>) {
    assert!(
        matches!(
            outcome,
            Err(StoreError::Unavailable(
                Unavailability::ConnectionLost | Unavailability::ConnectionRefused
            ))
        ),
        "{outcome:?}"
    );
}

/// Makes every COMMIT after an insert into users take `seconds`: a deferred trigger sleeps at
/// commit time (where the server's statement_timeout no longer runs).
pub async fn slow_commits(admin: &sea_orm::DatabaseConnection, seconds: &str) {
    use sea_orm::ConnectionTrait;
    admin
        .execute_unprepared(&format!(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON users \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
        ))
        .await
        .unwrap();
}

/// Makes inserting each of `names` into users take its number of seconds (a BEFORE INSERT
/// trigger sleeps): a statement that is still running, or can be cut off half-way, on cue.
pub async fn slow_inserts(db: &counseling_testkit::TestDatabase, names: &[(&str, &str)]) {
    use sea_orm::ConnectionTrait;
    let cases: String = names
        .iter()
        .map(|(name, seconds)| format!("WHEN '{name}' THEN {seconds} "))
        .collect();
    db.connect()
        .await
        .execute_unprepared(&format!(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(CASE NEW.username {cases} ELSE 0 END); RETURN NEW; END $$; \
             CREATE TRIGGER slow_insert BEFORE INSERT ON users \
             FOR EACH ROW EXECUTE FUNCTION slow_insert()"
        ))
        .await
        .unwrap();
}
