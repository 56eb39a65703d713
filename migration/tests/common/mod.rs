//! Helpers shared by the migration crate's tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test helpers: failures abort

use std::process::{Command, Output};

use counseling_testkit::TestDatabase;
use migration::m20261130_000001_username_identity::identity_key;
use migration::sea_orm::DatabaseConnection;
use migration::sea_orm::sqlx::{self, Connection, PgConnection, Row};
use migration::{MigrationStatus, Runner};

pub use counseling_testkit::fixtures::BCRYPT_HASH as HASH;

/// A connection as the test server's administrator (a superuser on the kit's clusters).
pub async fn connect(db: &TestDatabase) -> PgConnection {
    PgConnection::connect_with(&db.options()).await.unwrap()
}

/// A connection as the service's role, which may only read and write rows: how another client
/// of the table writes.
pub async fn connect_as_service(db: &TestDatabase) -> PgConnection {
    PgConnection::connect(&db.url()).await.unwrap()
}

/// A SeaORM connection as the owner role, which migrations run as in production.
pub fn owner_orm(db: &TestDatabase) -> DatabaseConnection {
    let pool = migration::sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy(&db.owner_url())
        .unwrap();
    migration::sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
}

/// The position of migration `name` in the real list.
pub fn position(name: &str) -> usize {
    migration::migrations()
        .iter()
        .position(|file| file.name() == name)
        .unwrap_or_else(|| panic!("no migration {name}"))
}

/// A fresh database with the real migrations before `name` applied by the owner role, as in
/// production; the owner's SeaORM connection, and an administrator's connection.
pub async fn database_before(name: &str) -> (TestDatabase, DatabaseConnection, PgConnection) {
    let db = TestDatabase::empty().await.unwrap();
    let orm = owner_orm(&db);
    up_before(&orm, name).await;
    let conn = connect(&db).await;
    (db, orm, conn)
}

/// Applies the real migrations before `name` (those pending of them); returns how many.
pub async fn up_before(orm: &DatabaseConnection, name: &str) -> usize {
    up_through(orm, position(name)).await
}

/// Applies the real migrations up to and including `name`; returns how many.
pub async fn up_to(orm: &DatabaseConnection, name: &str) -> usize {
    up_through(orm, position(name) + 1).await
}

/// Applies those of the first `count` real migrations that are pending; returns how many.
async fn up_through(orm: &DatabaseConnection, count: usize) -> usize {
    let runner = Runner::new(migration::migrations());
    let states = runner.status(orm).await.unwrap();
    let applied = states.iter().take(count).filter(|s| s.is_done()).count();
    runner.up(orm, Some(count - applied)).await.unwrap().len()
}

/// Runs the pending migrations, which must fail; checks that neither the schema nor the rows of
/// `rows_sql` changed, and returns the error's text.
pub async fn up_fails_changing_nothing(
    orm: &DatabaseConnection,
    conn: &mut PgConnection,
    rows_sql: &str,
) -> String {
    let (schema, data) = (schema_snapshot(conn).await, rows(conn, rows_sql).await);
    let error = migration::apply_pending(orm).await.unwrap_err().to_string();
    assert_eq!(schema_snapshot(conn).await, schema, "schema untouched");
    assert_eq!(rows(conn, rows_sql).await, data, "rows untouched");
    error
}

/// The names of the real migrations from `name` on, newest first (what rolling back to before
/// `name` rolls back).
pub fn newest_first_from(name: &str) -> Vec<String> {
    migration::migrations()
        .iter()
        .skip(position(name))
        .rev()
        .map(|file| file.name().to_owned())
        .collect()
}

/// Every row of `sql`, each cell as optional text.
pub async fn rows(conn: &mut PgConnection, sql: &str) -> Vec<Vec<Option<String>>> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(conn)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}

pub fn strings(rows: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|row| row.iter().map(|cell| cell.map(str::to_owned)).collect())
        .collect()
}

/// SQLSTATE of a failed statement, or the error text when it has none.
pub fn sqlstate(error: sqlx::Error) -> String {
    error
        .as_database_error()
        .and_then(|e| e.code().map(|code| code.into_owned()))
        .unwrap_or_else(|| error.to_string())
}

/// The SQLSTATE and the constraint of a statement the database refused.
pub fn refusal(error: &sqlx::Error) -> (String, String) {
    let error = error.as_database_error().unwrap();
    let code = error.code().unwrap().into_owned();
    (code, error.constraint().unwrap().to_owned())
}

/// The [`refusal`] of a plain `INSERT` of `username`, which must fail.
pub async fn insert_refusal(conn: &mut PgConnection, username: &str) -> (String, String) {
    let error = sqlx::query("INSERT INTO users (username, password_hash) VALUES ($1, $2)")
        .bind(username)
        .bind(HASH)
        .execute(conn)
        .await
        .unwrap_err();
    refusal(&error)
}

/// Inserts a user as any client may: a plain `INSERT` of the story's two columns.
pub async fn insert(conn: &mut PgConnection, username: &str, hash: &str) -> Result<(), String> {
    sqlx::query("INSERT INTO users (username, password_hash) VALUES ($1, $2)")
        .bind(username)
        .bind(hash)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(sqlstate)
}

/// Inserts a user as the release before `m20261203_000001_username_identity_in_database` did:
/// with `username_key` computed by its Rust rule (the frozen copy in
/// `m20261130_000001_username_identity`). Returns its id.
pub async fn insert_previous_release(
    conn: &mut PgConnection,
    username: &str,
    hash: &str,
) -> Result<String, String> {
    sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, username_key) VALUES ($1, $2, $3) \
         RETURNING id::text",
    )
    .bind(username)
    .bind(hash)
    .bind(identity_key(username))
    .fetch_one(conn)
    .await
    .map_err(sqlstate)
}

/// A plain `INSERT` of the story's two columns, as any client writes; returns the new row's id.
pub async fn insert_returning_id(
    conn: &mut PgConnection,
    username: &str,
    hash: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id::text",
    )
    .bind(username)
    .bind(hash)
    .fetch_one(conn)
    .await
}

/// Inserts a user as the schema before the identity migration allows: no key column yet.
/// Returns its id.
pub async fn insert_before_identity(conn: &mut PgConnection, username: &str) -> String {
    insert_returning_id(conn, username, HASH).await.unwrap()
}

/// Users named `breaking` (and one named `fine`), stored before migration `name`, stop it: it
/// changes nothing, and its error names each breaking row's id (never the fine one's) and asks
/// for them to be renamed.
pub async fn existing_usernames_stop_up_naming_them(name: &str, fine: &str, breaking: &[&str]) {
    let (_db, orm, mut conn) = database_before(name).await;
    let fine = insert_returning_id(&mut conn, fine, HASH).await.unwrap();
    let mut ids = Vec::new();
    for username in breaking {
        ids.push(
            insert_returning_id(&mut conn, username, HASH)
                .await
                .unwrap(),
        );
    }
    let all_rows = "SELECT id::text, username::text FROM users ORDER BY id";
    let error = up_fails_changing_nothing(&orm, &mut conn, all_rows).await;
    for id in &ids {
        assert!(error.contains(id.as_str()), "{id}: {error}");
    }
    assert!(!error.contains(&fine), "{error}");
    assert!(error.contains("rename them"), "{error}");
    assert!(error.contains("nothing was changed"), "{error}");
}

/// With migration `name` applied, `write` (a row that breaks its check, as the service's role
/// writes it) is refused naming `constraint`; once `name` alone is rolled back, the same write is
/// stored.
pub async fn down_drops_the_check(
    name: &str,
    constraint: &str,
    write: impl AsyncFn(&mut PgConnection) -> Result<String, sqlx::Error>,
) {
    let (db, orm, _) = database_before(name).await;
    up_to(&orm, name).await;
    let mut service = connect_as_service(&db).await;
    let refused = write(&mut service).await.unwrap_err();
    assert_eq!(refusal(&refused).1, constraint);
    assert_eq!(migration::roll_back(&orm, 1).await.unwrap(), [name]);
    write(&mut service).await.unwrap();
}

/// The users schema as the catalog shows it: columns (with collation and comment), constraints
/// (with their validity), indexes (with theirs), triggers and the functions of the schema. Two equal snapshots are the same schema.
pub async fn schema_snapshot(conn: &mut PgConnection) -> Vec<Vec<Option<String>>> {
    const CATALOG: [&str; 5] = [
        "SELECT 'column', column_name::text, data_type::text, character_maximum_length::text, \
                is_nullable::text, column_default::text, collation_name::text, \
                col_description('users'::regclass, ordinal_position::int) \
         FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
        "SELECT 'constraint', conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = 'users'::regclass ORDER BY conname",
        "SELECT 'index', indexname::text, indexdef, indisvalid::text FROM pg_indexes \
         JOIN pg_index ON indexrelid = to_regclass(indexname) \
         WHERE tablename = 'users' ORDER BY indexname",
        "SELECT 'function', proname::text, pg_get_functiondef(oid) FROM pg_proc \
         WHERE pronamespace = 'public'::regnamespace ORDER BY proname",
        "SELECT 'trigger', tgname::text, pg_get_triggerdef(oid), tgenabled::text FROM pg_trigger \
         WHERE tgrelid = 'users'::regclass AND NOT tgisinternal ORDER BY tgname",
    ];
    let mut snapshot = Vec::new();
    for query in CATALOG {
        snapshot.extend(rows(conn, query).await);
    }
    snapshot
}

/// Runs the `migration` binary in an empty directory (so no developer `.env` is picked up), with
/// only `variables` of the settings it reads.
pub fn migration_binary(args: &[&str], variables: &[(&str, &str)]) -> Output {
    let (mut command, _dir) = migration_command(args, variables);
    command.output().unwrap()
}

/// [`migration_binary`]'s command, not yet run, and the folder it runs in (removed when dropped).
pub fn migration_command(
    args: &[&str],
    variables: &[(&str, &str)],
) -> (Command, tempfile::TempDir) {
    // A folder of its own: a shared one (/tmp) could hold a `.env` someone else put there.
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_migration"));
    command.args(args).current_dir(dir.path());
    for name in [
        "DATABASE_URL",
        "DATABASE_OWNER_URL",
        "DATABASE_URL_FILE",
        "DATABASE_PASSWORD_FILE",
        "DATABASE_OWNER_URL_FILE",
        "DATABASE_OWNER_PASSWORD_FILE",
        "MIGRATION_LOCK_TIMEOUT_MS",
        "DATABASE_SSL_MODE",
        "DATABASE_SSL_ROOT_CERT",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "DATABASE_LOCK_TIMEOUT_MS",
    ] {
        command.env_remove(name);
    }
    // A home of its own: libpq's files in the developer's (`~/.pgpass`, `~/.postgresql`) would
    // change what the run says or refuses.
    command.env("HOME", dir.path());
    command.envs(variables.iter().copied());
    (command, dir)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A migration for runner tests: SQL up and down, with or without a transaction.
#[derive(Debug, Clone)]
pub struct SqlMigration {
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    pub transaction: bool,
    /// Each `;`-separated statement in a call of its own: PostgreSQL runs one call of several
    /// statements as a transaction of its own, which would hide whether the runner opened one.
    pub separate_calls: bool,
}

use migration::sea_orm::ConnectionTrait as _;

impl sea_orm_migration::MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for SqlMigration {
    async fn up(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), migration::DbErr> {
        self.run(manager, self.up).await
    }

    async fn down(
        &self,
        manager: &sea_orm_migration::SchemaManager,
    ) -> Result<(), migration::DbErr> {
        self.run(manager, self.down).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(self.transaction)
    }
}

impl SqlMigration {
    /// In a transaction of its own (the default).
    pub fn new(name: &'static str, up: &'static str, down: &'static str) -> Self {
        Self {
            name,
            up,
            down,
            transaction: true,
            separate_calls: false,
        }
    }

    /// See [`SqlMigration::separate_calls`].
    pub fn in_separate_calls(self) -> Self {
        Self {
            separate_calls: true,
            ..self
        }
    }

    async fn run(
        &self,
        manager: &sea_orm_migration::SchemaManager<'_>,
        sql: &str,
    ) -> Result<(), migration::DbErr> {
        let connection = manager.get_connection();
        if !self.separate_calls {
            connection.execute_unprepared(sql).await?;
            return Ok(());
        }
        for statement in sql.split(';').filter(|part| !part.trim().is_empty()) {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    pub fn without_transaction(self) -> Self {
        Self {
            transaction: false,
            ..self
        }
    }

    /// As a list entry, its "source" being its SQL.
    pub fn file(self) -> migration::MigrationFile {
        let source = format!("{}\n{}\n{}", self.name, self.up, self.down);
        let file = format!("tests/{}.rs", self.name);
        migration::MigrationFile::new(Box::new(self), file, source)
    }
}

/// A session of its own holding the migration lock ([`migration::MIGRATION_LOCK_KEY`]) until it
/// is dropped: every run waits for it meanwhile.
pub async fn holding_the_migration_lock(db: &TestDatabase) -> PgConnection {
    let mut holder = connect(db).await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(migration::MIGRATION_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// Waits (at most 20 s) until some session waits for a lock on `users`: a migration queued
/// behind a transaction the test holds open.
pub async fn until_someone_waits_for_users(conn: &mut PgConnection) {
    let waiting = async || {
        let sql = "SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'users'::regclass \
                   AND NOT granted)";
        sqlx::query_scalar::<_, bool>(sql)
            .fetch_one(&mut *conn)
            .await
            .unwrap()
    };
    let limit = std::time::Duration::from_secs(20);
    counseling_testkit::fixtures::eventually("someone waits for users", limit, waiting)
        .await
        .unwrap();
}

/// Up from before `name`, while another session has written a row that breaks `name`'s check
/// (`write` returns its id) and commits it once the migration, having found no such row, waits to
/// add its check: the validation fails, so the migration drops its check again, names the row
/// and stays applying (`up` runs it again from the start), the schema as it was.
pub async fn a_late_row_makes_up_drop_its_check(
    name: &str,
    write: impl AsyncFnOnce(&mut PgConnection) -> String,
) {
    let (db, orm, mut conn) = database_before(name).await;
    let schema = schema_snapshot(&mut conn).await;
    let mut writer_conn = connect(&db).await;
    let mut writer = writer_conn.begin().await.unwrap();
    let late = write(&mut writer).await;
    let up = {
        let orm = orm.clone();
        tokio::spawn(async move { migration::apply_pending(&orm).await })
    };
    // The scan saw nothing; the ALTER waits for the writer's lock.
    until_someone_waits_for_users(&mut connect(&db).await).await;
    writer.commit().await.unwrap();
    let error = up.await.unwrap().unwrap_err().to_string();
    assert!(error.contains(&late), "{error}");
    assert!(error.contains("it dropped its check again"), "{error}");
    assert_eq!(schema_snapshot(&mut conn).await, schema);
    let status = migration::status(&orm).await.unwrap();
    assert!(
        status
            .iter()
            .any(|state| state.name == name && state.status == MigrationStatus::Applying)
    );
}
