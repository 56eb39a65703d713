//! `docker/initdb/*.sql` run for real, as the postgres image runs them (psql, in name order, as
//! the superuser, passwords in the environment), on a cluster of the test kit: the owner then
//! applies the migrations, and the service's role can read and write rows of `users` but cannot
//! change the schema. No Docker engine is needed.
#![cfg(unix)] // the test kit's private cluster is unix-only
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use counseling_provision::url::local_url;
use counseling_testkit::fixtures::BCRYPT_HASH as HASH;
use counseling_testkit::fixtures::powers_beyond_login;
use counseling_testkit::{ClusterOptions, PgCluster, PgConnectOptions, TestDatabase};
use migration::MigratorTrait;
use migration::m20261130_000001_username_identity::identity_key;
use migration::sea_orm::SqlxPostgresConnector;
use migration::sea_orm::sqlx::postgres::PgPoolOptions;
use migration::sea_orm::sqlx::{self, AssertSqlSafe, Connection, PgConnection};

const OWNER: &str = "counseling_owner";
const SERVICE: &str = "counseling";

fn initdb_scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/initdb");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    // The image runs them in sorted name order.
    scripts.sort();
    scripts
}

/// The script that makes the application's roles.
fn roles_script() -> PathBuf {
    initdb_scripts()
        .into_iter()
        .find(|path| path.ends_with("03-roles.sql"))
        .unwrap()
}

/// `psql -f script` as the image's entrypoint runs it: as the superuser, on `database`, stopping
/// at the first error. Connection details and passwords travel in the environment only.
fn psql(cluster: &PgCluster, database: &str, script: &Path, passwords: &[(&str, &str)]) -> Output {
    Command::new(cluster.bin_dir().join("psql"))
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "--no-psqlrc",
            "--no-password",
            "-f",
        ])
        .arg(script)
        .env_clear()
        .envs(cluster.libpq_environment(database))
        .envs(passwords.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn role_options(
    cluster: &PgCluster,
    db: &TestDatabase,
    role: &str,
    password: &str,
) -> PgConnectOptions {
    cluster
        .admin_options()
        .username(role)
        .password(password)
        .database(db.name())
}

async fn sqlstate_of(conn: &mut PgConnection, sql: &str) -> Option<String> {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .err()
        .map(|error| {
            error
                .as_database_error()
                .and_then(|error| error.code().map(|code| code.into_owned()))
                .unwrap_or_else(|| error.to_string())
        })
}

const OWNER_PASSWORD: &str = "0wner1nitdbTest";
const SERVICE_PASSWORD: &str = "serv1ce1nitdbTest";

/// A new database on `cluster` initialised by every script, as the image does.
async fn initialised_database(cluster: &PgCluster) -> TestDatabase {
    let db = cluster.empty_database().await.unwrap();
    let passwords = [
        ("POSTGRES_OWNER_PASSWORD", OWNER_PASSWORD),
        ("POSTGRES_SERVICE_PASSWORD", SERVICE_PASSWORD),
    ];
    for script in initdb_scripts() {
        let output = psql(cluster, db.name(), &script, &passwords);
        assert!(
            output.status.success(),
            "{}: {}",
            script.display(),
            text(&output.stderr)
        );
    }
    db
}

/// The owner applies the migrations, as compose's migrate service does.
async fn migrate_as_owner(cluster: &PgCluster, db: &TestDatabase) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(role_options(cluster, db, OWNER, OWNER_PASSWORD));
    let orm = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
    assert_eq!(
        migration::apply_pending(&orm).await.unwrap(),
        migration::Migrator::migrations().len()
    );
    orm.close().await.unwrap();
}

#[tokio::test]
async fn the_service_role_reads_and_writes_rows_but_cannot_change_the_schema() {
    let cluster = PgCluster::start().await.unwrap();
    let db = initialised_database(&cluster).await;

    // Neither role is privileged beyond its database.
    let mut admin = PgConnection::connect_with(&cluster.admin_options())
        .await
        .unwrap();
    // The same powers as provision's ensure_login_role gives: login, nothing else.
    for role in [SERVICE, OWNER] {
        let powers = powers_beyond_login(&mut admin, role).await.unwrap();
        assert_eq!(powers, Vec::<&str>::new(), "{role}");
    }

    migrate_as_owner(&cluster, &db).await;

    let mut service =
        PgConnection::connect_with(&role_options(&cluster, &db, SERVICE, SERVICE_PASSWORD))
            .await
            .unwrap();
    // Rows: all four operations on the table the owner created after the roles were made.
    let id: String = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, username_key) VALUES ($1, $2, $3) \
         RETURNING id::text",
    )
    .bind(r"\school\alice")
    .bind(HASH)
    .bind(identity_key(r"\school\alice"))
    .fetch_one(&mut service)
    .await
    .unwrap();
    let blocked: bool = sqlx::query_scalar(
        "UPDATE users SET is_blocked = true WHERE id = $1::uuid RETURNING is_blocked",
    )
    .bind(&id)
    .fetch_one(&mut service)
    .await
    .unwrap();
    assert!(blocked);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut service)
        .await
        .unwrap();
    assert_eq!(count, 1);
    sqlx::query("DELETE FROM users")
        .execute(&mut service)
        .await
        .unwrap();

    // The schema: every change refused with insufficient_privilege (42501).
    for ddl in [
        "CREATE TABLE intruder (id int)",
        "DROP TABLE users",
        "ALTER TABLE users ADD COLUMN intruder int",
        "TRUNCATE users",
        "CREATE INDEX intruder ON users (is_blocked)",
        "CREATE SCHEMA intruder",
        "CREATE TEMPORARY TABLE intruder (id int)",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        assert_eq!(
            sqlstate_of(&mut service, ddl).await.as_deref(),
            Some("42501"),
            "{ddl}"
        );
    }
}

#[tokio::test]
async fn the_roles_script_refuses_to_run_without_passwords() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.empty_database().await.unwrap();
    let roles = roles_script();
    for (missing, given) in [
        ("POSTGRES_OWNER_PASSWORD", "POSTGRES_SERVICE_PASSWORD"),
        ("POSTGRES_SERVICE_PASSWORD", "POSTGRES_OWNER_PASSWORD"),
    ] {
        let output = psql(&cluster, db.name(), &roles, &[(given, "x1"), (missing, "")]);
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!("{missing} is not set")),
            "{stderr}"
        );
    }
    // Neither: the first check stops the script.
    let output = psql(&cluster, db.name(), &roles, &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("POSTGRES_OWNER_PASSWORD is not set"),
        "{stderr}"
    );
}

/// A roles script that fails part-way leaves nothing behind (the image's next start skips the
/// scripts, so half the roles and grants would stay for good), and the failed statement, which
/// carries a password, is not written to the server's log.
#[tokio::test]
async fn a_roles_script_that_fails_changes_nothing_and_logs_no_password() {
    let cluster = PgCluster::start().await.unwrap();
    let db = cluster.empty_database().await.unwrap();
    let roles = roles_script();
    // The service's role exists already: its CREATE ROLE, the second, fails.
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(db.name()))
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE ROLE {SERVICE}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let passwords = [
        ("POSTGRES_OWNER_PASSWORD", OWNER_PASSWORD),
        ("POSTGRES_SERVICE_PASSWORD", SERVICE_PASSWORD),
    ];
    let output = psql(&cluster, db.name(), &roles, &passwords);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("already exists"),
        "{}",
        text(&output.stderr)
    );
    let owner_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(OWNER)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(!owner_exists, "the owner's role outlived the failed script");
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert!(log.contains("already exists"), "{log}");
    for password in [OWNER_PASSWORD, SERVICE_PASSWORD] {
        assert!(!log.contains(password), "{log}");
    }
}

/// Statements the service's role ran, as `pg_stat_statements` shows them to that role, with
/// their number of calls.
async fn own_statements(service: &mut PgConnection) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT query, calls FROM pg_stat_statements WHERE userid = current_user::regrole",
    )
    .fetch_all(service)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_repositorys_statements_show_up_in_pg_stat_statements() {
    use counseling_domain::{UserRepository, Username};
    use counseling_persistence::{Database, PgUserRepository};

    // The server as compose starts it: the library preloaded, top-level statements tracked.
    let cluster = PgCluster::start_with(ClusterOptions {
        server_settings: vec![
            (
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            ),
            ("pg_stat_statements.track".into(), "top".into()),
        ],
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let db = initialised_database(&cluster).await;
    migrate_as_owner(&cluster, &db).await;

    // The repository, connected as the script's service role.
    let password = secrecy::SecretString::from(SERVICE_PASSWORD);
    let url = local_url(cluster.port(), SERVICE, Some(&password), db.name(), &[]).unwrap();
    let settings = counseling_testkit::fixtures::pool_settings(url.expose_secret())
        .expect("the service's pool settings");
    let database = Database::connect_lazy(&settings, tokio::runtime::Handle::current()).unwrap();
    let users = PgUserRepository::new(database.clone());
    let name = Username::parse(r"\school\statistics").unwrap();
    for _ in 0..3 {
        assert_eq!(users.find_by_username(&name).await.unwrap(), None);
    }
    assert!(database.close(std::time::Duration::from_secs(5)).await);

    // Read back through the same role: its own statements, text included.
    let mut service =
        PgConnection::connect_with(&role_options(&cluster, &db, SERVICE, SERVICE_PASSWORD))
            .await
            .unwrap();
    let statements = own_statements(&mut service).await;
    let lookup = PgUserRepository::find_by_username_sql();
    let calls = statements
        .iter()
        .find(|(query, _)| query.trim() == lookup.trim())
        .map(|(_, calls)| *calls);
    assert_eq!(calls, Some(3), "{lookup}\nnot among {statements:#?}");
}
