use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use counseling_config::DatabaseUrl;
use counseling_persistence::DatabaseSettings;
use counseling_provision::process::{process_is_alive, process_space_tag};
use counseling_provision::roles::{execute, literal};
use migration::roles::quoted;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sea_orm::sqlx::{Connection, PgConnection};
use sea_orm::{DatabaseConnection, SqlxPostgresConnector};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::cluster::{OWNER_ROLE, PgCluster, Role, SERVICE_ROLE, exposed, libpq_variables};
use crate::{Result, TestkitError};

/// Where test databases are created: a server given by `DATABASE_URL_TEST`, or a cluster.
/// `Debug` is safe: `DatabaseUrl` redacts itself, the cluster hides its passwords.
#[derive(Debug, Clone)]
enum Server {
    /// `DATABASE_URL_TEST`: its role does everything (we cannot assume it may create roles).
    External(Box<DatabaseUrl>),
    Cluster(PgCluster),
}

impl Server {
    fn admin_options(&self) -> PgConnectOptions {
        match self {
            Server::External(url) => url.connect_options(),
            Server::Cluster(cluster) => cluster.admin_options(),
        }
    }

    /// Who runs migrations on `database`: the owner role on our clusters.
    fn owner_options(&self, database: &str) -> PgConnectOptions {
        match self {
            Server::External(url) => url.connect_options().database(database),
            Server::Cluster(cluster) => cluster.owner_options(database),
        }
    }

    async fn admin(&self) -> Result<PgConnection> {
        PgConnection::connect_with(&self.admin_options())
            .await
            .map_err(TestkitError::db("connecting to the test server"))
    }
}

/// The server shared by the tests of this process, and its migrated template database.
#[derive(Debug)]
struct Shared {
    server: Server,
    template: String,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

async fn shared() -> Result<&'static Shared> {
    SHARED
        .get_or_try_init(|| async {
            let server = match std::env::var(counseling_config::TEST_SERVER_VARIABLE) {
                Ok(url) if !url.trim().is_empty() => {
                    let url = DatabaseUrl::parse(&url).map_err(|_| {
                        TestkitError::Failed(
                            "DATABASE_URL_TEST is not a valid postgres:// URL".into(),
                        )
                    })?;
                    let server = Server::External(Box::new(url));
                    sweep_dead_databases(&server).await?;
                    server
                }
                _ => Server::Cluster(PgCluster::start().await?),
            };
            let template = format!("tmpl_{}", process_part());
            create_database(&server, &template, CreateFrom::Default).await?;
            migrate(&server, &template).await?;
            Ok(Shared { server, template })
        })
        .await
}

/// A cluster's own databases (here, so that the cluster knows nothing of test databases: the
/// modules depend one way, database -> cluster -> tls).
impl PgCluster {
    /// A new migrated database on this cluster, dropped with the handle.
    pub async fn migrated_database(&self) -> Result<TestDatabase> {
        TestDatabase::on_cluster(self, true).await
    }

    /// A new empty database on this cluster, dropped with the handle.
    pub async fn empty_database(&self) -> Result<TestDatabase> {
        TestDatabase::on_cluster(self, false).await
    }
}

/// The locale a test database is created with, from `template0`, so tests can show that
/// behaviour does not change with the server's `LC_CTYPE` or collation provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocale {
    /// A libc locale for `LC_COLLATE` and `LC_CTYPE`, such as `C` or `C.UTF-8`.
    Libc(String),
    /// An ICU locale, such as `tr-TR`, as the database's default collation provider
    /// (PostgreSQL 15 or newer built with ICU, as Debian's packages are).
    Icu(String),
}

impl DatabaseLocale {
    /// Locales under which `lower()` gives three different answers, all available on a fresh
    /// Debian machine without generating any: `C` folds only ASCII, `C.UTF-8` folds by code point,
    /// and ICU `tr-TR` lowers `I` to dotless `ı`.
    pub fn samples() -> Vec<DatabaseLocale> {
        vec![
            DatabaseLocale::Libc("C".into()),
            DatabaseLocale::Libc("C.UTF-8".into()),
            DatabaseLocale::Icu("tr-TR".into()),
        ]
    }

    /// The `CREATE DATABASE` options that select this locale.
    fn create_options(&self) -> String {
        match self {
            DatabaseLocale::Libc(locale) => {
                format!("LOCALE_PROVIDER libc LOCALE {}", literal(locale))
            }
            DatabaseLocale::Icu(locale) => {
                format!("LOCALE_PROVIDER icu ICU_LOCALE {}", literal(locale))
            }
        }
    }
}

impl std::fmt::Display for DatabaseLocale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseLocale::Libc(locale) => write!(f, "libc {locale}"),
            DatabaseLocale::Icu(locale) => write!(f, "ICU {locale}"),
        }
    }
}

/// What `CREATE DATABASE` starts from.
#[derive(Debug, Clone, Copy)]
enum CreateFrom<'a> {
    /// The server's default template and locale.
    Default,
    /// A clone of the migrated template.
    Template(&'a str),
    /// `template0` with a chosen locale (a locale differing from the template's needs template0).
    Locale(&'a DatabaseLocale),
}

/// A database that belongs to one test. It is dropped (`DROP DATABASE ... WITH (FORCE)`) when
/// this handle is, so tests can run in parallel and leave nothing behind.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    server: Server,
}

impl TestDatabase {
    /// A fresh database with every migration applied, on the shared server.
    pub async fn migrated() -> Result<Self> {
        let shared = shared().await?;
        Self::create(&shared.server, CreateFrom::Template(&shared.template)).await
    }

    /// A fresh database without any schema, on the shared server.
    pub async fn empty() -> Result<Self> {
        let shared = shared().await?;
        Self::create(&shared.server, CreateFrom::Default).await
    }

    /// A fresh database created with `locale`, with every migration applied, on the shared
    /// server. Slower than [`migrated`](Self::migrated): it is migrated, not cloned.
    pub async fn migrated_with_locale(locale: &DatabaseLocale) -> Result<Self> {
        let shared = shared().await?;
        let database = Self::create(&shared.server, CreateFrom::Locale(locale)).await?;
        migrate(&shared.server, &database.name).await?;
        Ok(database)
    }

    pub(crate) async fn on_cluster(cluster: &PgCluster, migrated: bool) -> Result<Self> {
        let server = Server::Cluster(cluster.clone());
        let database = Self::create(&server, CreateFrom::Default).await?;
        if migrated {
            migrate(&server, &database.name).await?;
        }
        Ok(database)
    }

    async fn create(server: &Server, from: CreateFrom<'_>) -> Result<Self> {
        let number = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{number}", process_part());
        create_database(server, &name, from).await?;
        Ok(Self {
            name,
            server: server.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection options for this database (they hold the password: do not print them).
    pub fn options(&self) -> PgConnectOptions {
        self.server.admin_options().database(&self.name)
    }

    /// A `postgres://` URL for this database as the service's role, which may only read and
    /// write rows (on our clusters; on `DATABASE_URL_TEST`, its role): for code under test.
    pub fn url(&self) -> String {
        self.url_with(&[])
    }

    /// [`Self::url`] with query `parameters` (`sslmode`, `sslrootcert`, ...), built from parts.
    pub fn url_with(&self, parameters: &[(&str, &str)]) -> String {
        exposed(self.database_url(false, parameters))
    }

    /// A URL for this database as the role that owns the schema: for running migrations.
    pub fn owner_url(&self) -> String {
        self.owner_url_with(&[])
    }

    /// [`Self::owner_url`] with query `parameters`.
    pub fn owner_url_with(&self, parameters: &[(&str, &str)]) -> String {
        exposed(self.database_url(true, parameters))
    }

    /// libpq's variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`) for this
    /// database as the service's role (see [`Self::url`]): for `psql` and `pgbench` run as the
    /// service runs, passed in an environment, never on a command line.
    pub fn libpq_environment(&self) -> Result<Vec<(&'static str, String)>> {
        let url = self.database_url(false, &[])?;
        let password = url.password().map(ExposeSecret::expose_secret);
        Ok(libpq_variables(
            url.host(),
            url.port(),
            url.username(),
            password,
            &self.name,
        ))
    }

    /// The settings of a small pool on this database as the service's role (see
    /// [`crate::fixtures::pool_settings`]).
    pub fn pool_settings(&self) -> Result<DatabaseSettings> {
        self.database_url(false, &[])
            .map(crate::fixtures::small_pool)
    }

    fn database_url(&self, owner: bool, parameters: &[(&str, &str)]) -> Result<DatabaseUrl> {
        let role = if owner { Role::Owner } else { Role::Service };
        let base = match &self.server {
            Server::Cluster(cluster) => cluster.url_as(role, &self.name)?,
            Server::External(url) => DatabaseUrl::parse(url.expose_secret()).map_err(|error| {
                TestkitError::Failed(format!("the test database's URL {error}"))
            })?,
        };
        counseling_provision::url::with_database(&base, &self.name, parameters)
    }

    /// A small SeaORM connection pool on this database.
    pub async fn connect(&self) -> DatabaseConnection {
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(self.options());
        SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: a runtime of its own.
        // Failure only leaves a database for the next sweep.
        let (server, name) = (self.server.clone(), std::mem::take(&mut self.name));
        let _ = counseling_provision::block_on(async move {
            let dropping = drop_database(&server, &name);
            let _ = tokio::time::timeout(Duration::from_secs(10), dropping).await;
            Ok(())
        });
    }
}

async fn create_database(server: &Server, name: &str, from: CreateFrom<'_>) -> Result<()> {
    let mut admin = server.admin().await?;
    // On our clusters the owner role owns every database, as in production.
    let owner = match server {
        Server::Cluster(_) => format!(" OWNER {OWNER_ROLE}"),
        Server::External(_) => String::new(),
    };
    let quoted_name = quoted(name);
    let sql = match from {
        CreateFrom::Template(template) => format!(
            "CREATE DATABASE {quoted_name} TEMPLATE {} STRATEGY FILE_COPY{owner}",
            quoted(template)
        ),
        CreateFrom::Default => format!("CREATE DATABASE {quoted_name}{owner}"),
        CreateFrom::Locale(locale) => format!(
            "CREATE DATABASE {quoted_name} TEMPLATE template0 ENCODING 'UTF8' {}{owner}",
            locale.create_options()
        ),
    };
    // Cloning fails while anyone is connected to the template, which includes a concurrent
    // clone for an instant: retry briefly. Names are generated by this kit, never input.
    let template_busy = |error: &TestkitError| match error {
        TestkitError::Database { source, .. } => {
            source.as_database_error().and_then(|e| e.code()).as_deref() == Some("55006")
        }
        _ => false,
    };
    let mut attempt = 0;
    while let Err(error) = execute(&mut admin, &sql).await {
        attempt += 1;
        if attempt > 50 || !template_busy(&error) {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A clone inherits its template's schema and default privileges, but not who may connect
    // to it; a new database gets everything: whatever the owner creates in it can be read and
    // written, row by row, by the service's role, and by nobody else.
    let Server::Cluster(cluster) = server else {
        let _ = admin.close().await;
        return Ok(());
    };
    let (mut session, statements) = match from {
        CreateFrom::Template(_) => (
            admin,
            migration::roles::database_statements(name, OWNER_ROLE, SERVICE_ROLE),
        ),
        _ => {
            let _ = admin.close().await;
            let owner = PgConnection::connect_with(&cluster.owner_options(name)).await;
            let owner = owner.map_err(TestkitError::db("connecting as the owner"))?;
            (
                owner,
                migration::roles::grant_statements(name, OWNER_ROLE, SERVICE_ROLE),
            )
        }
    };
    for statement in &statements {
        execute(&mut session, statement).await?;
    }
    let _ = session.close().await;
    Ok(())
}

async fn drop_database(server: &Server, name: &str) -> Result<()> {
    let mut admin = server.admin().await?;
    execute(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quoted(name)),
    )
    .await?;
    let _ = admin.close().await;
    Ok(())
}

async fn migrate(server: &Server, database: &str) -> Result<()> {
    counseling_provision::roles::apply_migrations(server.owner_options(database)).await
}

/// Drops `test_*`/`tmpl_*` databases on an external server that a process of this machine
/// created and that process is gone. Another machine's databases are never touched: a process
/// id means something only on the machine that issued it.
async fn sweep_dead_databases(server: &Server) -> Result<()> {
    let mut admin = server.admin().await?;
    let names: Vec<String> = sea_orm::sqlx::query_scalar(
        r"SELECT datname FROM pg_database WHERE datname ~ '^(test|tmpl)_'",
    )
    .fetch_all(&mut admin)
    .await
    .map_err(TestkitError::db("listing old test databases"))?;
    let _ = admin.close().await;
    let tag = process_space_tag();
    for name in names {
        if left_behind(&name, &tag, process_is_alive) {
            let _ = drop_database(server, &name).await;
        }
    }
    Ok(())
}

/// Whether `name` (`test_<host>_<pid>_<nonce>_<n>` or `tmpl_<host>_<pid>_<nonce>`) was made on
/// the machine tagged `tag` by a process that is gone.
fn left_behind(name: &str, tag: &str, is_alive: impl Fn(u32) -> bool) -> bool {
    let mut parts = name.split('_');
    let (Some("test" | "tmpl"), Some(host), Some(pid)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    host == tag && pid.parse().is_ok_and(|pid| !is_alive(pid))
}

/// This process's part of its database names: `<host>_<pid>_<nonce>`. The nonce tells it from
/// an earlier process with the same pid, whose leftovers the sweep skips while that pid is alive
/// again (pids repeat, in a fresh container above all).
fn process_part() -> &'static str {
    static PART: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PART.get_or_init(|| {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let nonce = started.map_or(0, |elapsed| elapsed.as_nanos() % 1_000_000_000);
        format!("{}_{}_{nonce}", process_space_tag(), std::process::id())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_of_an_external_server_hides_the_password() {
        let url = DatabaseUrl::parse("postgres://u:s3cret-pw@db.example:5433/x").unwrap();
        let database = TestDatabase {
            name: "test_0_1_2".into(),
            server: Server::External(Box::new(url)),
        };
        let shown = format!("{database:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        // Dropping would try to reach the server: forget the handle instead.
        std::mem::forget(database);
    }

    #[test]
    fn only_this_machines_databases_of_gone_processes_are_swept() {
        let alive = |pid: u32| pid == 7;
        assert!(left_behind(
            "test_0badcafe_8_123456789_1",
            "0badcafe",
            alive
        ));
        assert!(left_behind("tmpl_0badcafe_8_123456789", "0badcafe", alive));
        // Its process still runs.
        assert!(!left_behind("test_0badcafe_7_1", "0badcafe", alive));
        // Another machine's: its process ids say nothing here.
        assert!(!left_behind("test_12345678_8_1", "0badcafe", alive));
        // Not ours at all.
        assert!(!left_behind("test_results", "0badcafe", alive));
        assert!(!left_behind("production", "0badcafe", alive));
    }

    /// A killed run left databases named for its pid, and ours is that pid now: the sweep
    /// spares them (the pid is alive), and our names must not meet them.
    #[tokio::test]
    async fn an_earlier_process_with_our_pid_leaves_no_obstacle() {
        let cluster = PgCluster::start().await.unwrap();
        let server = Server::Cluster(cluster.clone());
        let next = NEXT_DATABASE.load(Ordering::Relaxed);
        let earlier = format!("{}_{}", process_space_tag(), std::process::id());
        for number in next..next + 20 {
            for name in [
                format!("test_{earlier}_{number}"),
                format!("test_{earlier}_0_{number}"),
            ] {
                create_database(&server, &name, CreateFrom::Default)
                    .await
                    .unwrap();
            }
        }
        cluster.empty_database().await.unwrap();
        // Ours carry a nonce after the pid, and the sweep still reads the pid.
        let ours = format!("test_{}_1", process_part());
        let parts: Vec<&str> = ours.split('_').collect();
        assert_eq!(parts.len(), 5, "{ours}");
        assert!(parts[3].parse::<u64>().is_ok(), "{ours}");
        assert!(
            left_behind(&ours, &process_space_tag(), |_| false),
            "{ours}"
        );
        assert!(
            !left_behind(&ours, &process_space_tag(), |_| true),
            "{ours}"
        );
    }

    #[test]
    fn the_host_tag_is_stable_and_fits_a_database_name() {
        let tag = process_space_tag();
        assert_eq!(tag, process_space_tag());
        assert_eq!(tag.len(), 8);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
