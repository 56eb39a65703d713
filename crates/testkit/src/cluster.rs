//! The test kit's private cluster: a [`Server`] of `counseling-provision` in a fresh folder (on
//! `/dev/shm` where it exists), tied to the test process, with the roles of production.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use counseling_config::DatabaseUrl;
use counseling_provision::binaries::server_binaries;
use counseling_provision::files::{ServerUser, private_temp_folder};
use counseling_provision::password::generate_password;
use counseling_provision::process::{
    Signal, process_is_alive, process_space_tag, signal, signal_with_children,
};
use counseling_provision::roles::{admin_session, ensure_login_role, execute};
use counseling_provision::server::{
    HbaTransport, Lifetime, Server, free_port, hba, postmaster_pid, scratch_parent,
};
use counseling_provision::wait::eventually;
use counseling_provision::{ProvisionError, SUPERUSER, block_on, url::local_url};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};
use sea_orm::sqlx::{Connection, PgConnection};
use secrecy::{ExposeSecret, SecretString};

use crate::Result;
use crate::tls::{ClientTlsFiles, ServerTls};

/// The role that owns the application's databases and runs migrations, on our clusters.
pub const OWNER_ROLE: &str = "testkit_owner";
/// The service's role on our clusters: it may read and write rows of the application's tables,
/// nothing else (no DDL, no superuser, no `CREATE` on the schema).
pub const SERVICE_ROLE: &str = "testkit_service";

const FOLDER_PREFIX: &str = "counseling-testkit-";
/// Test settings (fast, not durable), before [`ClusterOptions::server_settings`].
const TEST_SETTINGS: [&str; 6] = [
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
    "shared_buffers=64MB",
    "log_min_messages=warning",
];

/// What kind of cluster [`PgCluster::start_with`] starts; the default is [`PgCluster::start`]'s.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serve TLS (`ssl=on`) with certificates made for this cluster.
    pub tls: Option<ServerTls>,
    /// Server settings (`name`, `value`) that override the kit's defaults, for example a larger
    /// `shared_buffers` for `just bench`.
    pub server_settings: Vec<(String, String)>,
}

/// A private PostgreSQL cluster on 127.0.0.1 and a free port, run as the `postgres` user when
/// the tests run as root. Dropping the last clone stops the server and deletes its folder. Tests
/// that break the database (`stop`, `crash`, `freeze`) use one of their own, never the shared
/// one. Unix only: elsewhere starting one fails with [`crate::TestkitError::PrivateClusterUnsupported`].
#[derive(Debug, Clone)]
pub struct PgCluster {
    inner: Arc<ClusterInner>,
}

/// `Debug` shows the server (folder, port), never a password.
#[derive(Debug)]
struct ClusterInner {
    server: Server,
    /// The passwords of the superuser, the owner role and the service's role, in that order.
    passwords: [SecretString; 3],
    tls: Option<ClientTlsFiles>,
}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        let _ = self.server.stop(Signal::Quit);
        let _ = std::fs::remove_dir_all(&self.server.root);
    }
}

/// Who logs in: the superuser, the owner role or the service's role.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Superuser = 0,
    Owner = 1,
    Service = 2,
}

impl PgCluster {
    /// Initialises and starts a new cluster. Takes about a second (`initdb`).
    pub async fn start() -> Result<Self> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// A cluster of the given kind (for example with TLS).
    pub async fn start_with(options: ClusterOptions) -> Result<Self> {
        blocking(move || Self::start_blocking_with(options)).await
    }

    /// A cluster that serves TLS as `tls` says, with the kit's other defaults.
    pub async fn start_tls(tls: ServerTls) -> Result<Self> {
        let options = ClusterOptions {
            tls: Some(tls),
            ..ClusterOptions::default()
        };
        Self::start_with(options).await
    }

    /// Like [`PgCluster::start_with`], for code that is not async.
    pub fn start_blocking_with(options: ClusterOptions) -> Result<Self> {
        if !cfg!(unix) {
            return Err(ProvisionError::PrivateClusterUnsupported);
        }
        for (name, _) in &options.server_settings {
            check_overridable(name)?;
        }
        sweep_dead_clusters(&scratch_parent());
        let mut server = new_server(server_binaries()?)?;
        server.settings.extend(TEST_SETTINGS.map(str::to_owned));
        let passwords = [
            generate_password()?,
            generate_password()?,
            generate_password()?,
        ];
        let mut inner = ClusterInner {
            server,
            passwords,
            tls: None,
        };
        // From here on, dropping `inner` stops the server and deletes the folder.
        let hba = match &options.tls {
            Some(tls) => {
                let (client, settings) = tls.set_up(&inner.server)?;
                inner.server.settings.extend(settings);
                inner.tls = Some(client);
                hba(tls.transport(), false)
            }
            None => hba(HbaTransport::Any, false),
        };
        let extra = options
            .server_settings
            .iter()
            .map(|(name, value)| format!("{name}={value}"));
        inner.server.settings.extend(extra);
        inner.server.init(&inner.passwords[0], &hba, true)?;
        inner.server.start(Lifetime::Tied)?;
        // The roles of production: an owner that runs migrations, and the service's role that
        // may only read and write rows (see `TestDatabase`).
        let (admin, passwords) = (inner.admin_options(), inner.passwords.clone());
        block_on(async move {
            let mut session = admin_session(&admin).await?;
            ensure_login_role(&mut session, OWNER_ROLE, &passwords[1]).await?;
            ensure_login_role(&mut session, SERVICE_ROLE, &passwords[2]).await
        })?;
        Ok(PgCluster {
            inner: Arc::new(inner),
        })
    }

    /// A hot standby of this cluster (plaintext clusters only): `pg_basebackup -R` into a folder
    /// of its own, streaming from this one, started on a port of its own. It has this cluster's
    /// roles, passwords and databases (those that exist now); its sessions are read-only until
    /// [`PgCluster::promote`].
    pub async fn start_standby(&self) -> Result<PgCluster> {
        if self.inner.tls.is_some() {
            return Err(ProvisionError::Failed(
                "a standby of a TLS cluster is not supported".into(),
            ));
        }
        // The primary lets the superuser stream from this machine.
        self.inner.server.write_hba(&hba(HbaTransport::Any, true))?;
        let mut session = admin_session(&self.admin_options()).await?;
        execute(&mut session, "SELECT pg_reload_conf()").await?;
        let _ = session.close().await;
        let primary = self.clone();
        blocking(move || {
            let server = &primary.inner.server;
            let mut standby = new_server(server.bin_dir.clone())?;
            standby.settings = server.settings.clone();
            let inner = ClusterInner {
                server: standby,
                passwords: primary.inner.passwords.clone(),
                tls: None,
            };
            // From here on, dropping `inner` stops the standby and deletes its folder. The
            // reload above reaches the postmaster a moment later: retried until it has.
            let password = &inner.passwords[Role::Superuser as usize];
            let mut last_failure = None;
            let backed_up = counseling_provision::wait::wait_until(
                "a base backup of the primary",
                std::time::Duration::from_secs(30),
                || {
                    let _ = std::fs::remove_dir_all(inner.server.data());
                    let outcome = inner.server.base_backup(server.port, password);
                    let done = outcome.is_ok();
                    last_failure = outcome.err();
                    done
                },
            );
            if let (Err(timeout), failure) = (backed_up, last_failure) {
                return Err(failure.unwrap_or(timeout));
            }
            inner.server.write_hba(&hba(HbaTransport::Any, false))?;
            inner.server.start(Lifetime::Tied)?;
            Ok(PgCluster {
                inner: Arc::new(inner),
            })
        })
        .await
    }

    /// Promotes this standby (`pg_promote()`) and waits until its sessions may write.
    pub async fn promote(&self) -> Result<()> {
        let mut session = admin_session(&self.admin_options()).await?;
        execute(&mut session, "SELECT pg_promote(true, 30)").await?;
        let _ = session.close().await;
        Ok(())
    }

    /// Connection options for the superuser on the `postgres` database (over TLS, with the
    /// client certificate if the cluster asks for one).
    pub fn admin_options(&self) -> PgConnectOptions {
        self.inner.admin_options()
    }

    /// Connection options for the owner role on `database`.
    pub fn owner_options(&self, database: &str) -> PgConnectOptions {
        let (user, password) = self.inner.login(Role::Owner);
        let options = self.admin_options().database(database);
        options.username(user).password(password.expose_secret())
    }

    /// libpq's variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`) for the
    /// superuser on `database`: for `psql`, `pgbench` and scripts, passed in an environment,
    /// never on a command line.
    pub fn libpq_environment(&self, database: &str) -> Vec<(&'static str, String)> {
        let password = Some(self.password());
        libpq_variables("127.0.0.1", self.port(), SUPERUSER, password, database)
    }

    /// The files a client needs for this cluster's TLS: the CA (`sslrootcert`) and, if the
    /// cluster asks for one, a client certificate and key for the superuser. `None` without TLS.
    pub fn tls_files(&self) -> Option<&ClientTlsFiles> {
        self.inner.tls.as_ref()
    }

    /// A `postgres://` URL for `database` as the superuser (it contains the password).
    pub fn superuser_url(&self, database: &str) -> String {
        exposed(self.url_as(Role::Superuser, database))
    }

    /// A URL for `database` as the service's role, which may only read and write rows. On a
    /// cluster that asks for client certificates (issued to the superuser only) it is the
    /// superuser's: those tests are about TLS, not privileges.
    pub fn service_url(&self, database: &str) -> String {
        exposed(self.url_as(Role::Service, database))
    }

    /// A URL for `database` as `role` (the owner role owns the schema and runs migrations).
    pub(crate) fn url_as(&self, role: Role, database: &str) -> Result<DatabaseUrl> {
        let (user, password) = self.inner.login(role);
        local_url(self.port(), user, Some(password), database, &[])
    }

    pub fn port(&self) -> u16 {
        self.inner.server.port
    }

    /// The folder of the PostgreSQL binaries this cluster runs (`pgbench`, `psql` are there too).
    pub fn bin_dir(&self) -> &Path {
        &self.inner.server.bin_dir
    }

    /// The postmaster's process id, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.inner.server.pid()
    }

    /// The superuser's password, for tests that check it never leaks.
    pub fn password(&self) -> &str {
        self.inner.passwords[Role::Superuser as usize].expose_secret()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.inner.server.log_path()
    }

    /// Fast shutdown (SIGINT): live sessions are terminated, new ones refused. Waits for exit (30 s at most).
    pub async fn stop(&self) -> Result<()> {
        let cluster = self.clone();
        blocking(move || cluster.inner.server.stop(Signal::Interrupt)).await
    }

    /// Immediate shutdown (SIGQUIT), like a crash: the next start runs crash recovery.
    pub async fn crash(&self) -> Result<()> {
        let cluster = self.clone();
        blocking(move || cluster.inner.server.stop(Signal::Quit)).await
    }

    /// Starts the server again on the same port (after a stop or crash, or while it runs);
    /// returns once it accepts connections.
    pub async fn restart(&self) -> Result<()> {
        let cluster = self.clone();
        blocking(move || {
            cluster.inner.server.stop(Signal::Interrupt)?;
            cluster.inner.server.start(Lifetime::Tied)
        })
        .await
    }

    /// Freezes every server process (SIGSTOP): connections stay open but nothing answers, like a
    /// hung host. Undo with [`PgCluster::thaw`].
    pub fn freeze(&self) -> Result<()> {
        self.inner.server.freeze(Signal::Stop)
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.inner.server.freeze(Signal::Continue)
    }

    /// Makes every new transaction read-only (`ALTER SYSTEM SET default_transaction_read_only`
    /// and a reload), as on a primary an operator fenced; `false` makes it writable again. The
    /// reload reaches existing sessions a moment later; new ones at once.
    pub async fn set_read_only(&self, read_only: bool) -> Result<()> {
        let statement = match read_only {
            true => "ALTER SYSTEM SET default_transaction_read_only = on",
            false => "ALTER SYSTEM RESET default_transaction_read_only",
        };
        let mut session = admin_session(&self.admin_options()).await?;
        execute(&mut session, statement).await?;
        execute(&mut session, "SELECT pg_reload_conf()").await?;
        let _ = session.close().await;
        // The postmaster takes the reload asynchronously: wait until a new session sees it (then
        // every later session does). Live sessions take it when they next wait for a command.
        let expected = if read_only { "on" } else { "off" };
        eventually(
            "the server's reload of default_transaction_read_only",
            std::time::Duration::from_secs(10),
            async || {
                let Ok(mut session) = PgConnection::connect_with(&self.admin_options()).await
                else {
                    return false;
                };
                let value: Option<String> =
                    sea_orm::sqlx::query_scalar("SHOW default_transaction_read_only")
                        .fetch_one(&mut session)
                        .await
                        .ok();
                let _ = session.close().await;
                value.as_deref() == Some(expected)
            },
        )
        .await?;
        Ok(())
    }

    /// Gives `role` the password `password` (as a quoted literal, never pasted): for example
    /// the same password on two clusters, as on two nodes of one.
    pub async fn set_password(&self, role: &str, password: &str) -> Result<()> {
        let mut session = admin_session(&self.admin_options()).await?;
        let password = SecretString::from(password.to_owned());
        counseling_provision::roles::set_password(&mut session, role, &password).await?;
        let _ = session.close().await;
        Ok(())
    }
}

impl ClusterInner {
    fn admin_options(&self) -> PgConnectOptions {
        let options = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.server.port);
        let options = options
            .username(SUPERUSER)
            .password(self.passwords[0].expose_secret());
        let options = options.database("postgres");
        match &self.tls {
            None => options,
            Some(ClientTlsFiles {
                client: Some((cert, key)),
                ..
            }) => options
                .ssl_mode(PgSslMode::Require)
                .ssl_client_cert(cert)
                .ssl_client_key(key),
            Some(_) => options.ssl_mode(PgSslMode::Require),
        }
    }

    /// Who logs in as `role`, and with which password. Client certificates are issued to the
    /// superuser only, so on a cluster that asks for them everyone is the superuser.
    fn login(&self, role: Role) -> (&'static str, &SecretString) {
        let client_certificates = self.tls.as_ref().is_some_and(|tls| tls.client.is_some());
        match role {
            _ if client_certificates => (SUPERUSER, &self.passwords[0]),
            Role::Superuser => (SUPERUSER, &self.passwords[0]),
            Role::Owner => (OWNER_ROLE, &self.passwords[1]),
            Role::Service => (SERVICE_ROLE, &self.passwords[2]),
        }
    }
}

/// What makes a kit cluster private (loopback only, no socket, its own TLS files and pg_hba)
/// cannot be changed through [`ClusterOptions::server_settings`].
const FIXED_SETTINGS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "hba_file",
    "ident_file",
    "config_file",
    "data_directory",
    "password_encryption",
];

fn check_overridable(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(ProvisionError::Failed(format!(
            "{name:?} is not a server setting's name"
        )));
    }
    let lower = name.to_ascii_lowercase();
    if FIXED_SETTINGS.contains(&lower.as_str()) || lower.starts_with("ssl") {
        return Err(ProvisionError::Failed(format!(
            "{name} is part of what keeps the test kit's cluster private; it cannot be set"
        )));
    }
    Ok(())
}

/// A server of the kit's, not yet initialised, in a fresh folder and on a free port. The pid in
/// the folder's name, with where it means something, lets a later run sweep the leftovers of a
/// killed one.
fn new_server(bin_dir: PathBuf) -> Result<Server> {
    let prefix = format!(
        "{FOLDER_PREFIX}{}-{}-",
        process_space_tag(),
        std::process::id()
    );
    let root = private_temp_folder(&scratch_parent(), &prefix)?;
    let user = ServerUser::of_this_process()?;
    Ok(Server::new(bin_dir, root, free_port()?, user))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ProvisionError::Failed(format!("cluster operation panicked: {error}")))?
}

/// Deletes the folders of clusters whose test process is gone (killed runs), in this process
/// space only: a container sharing `/dev/shm` sees other pids. A postmaster that outlived its
/// test process (no parent-death signal there) is stopped first.
fn sweep_dead_clusters(parent: &Path) {
    let tag = process_space_tag();
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if left_by_a_dead_process(name, &tag, process_is_alive) {
            // Only where the pid is checked against the data folder (Linux's /proc): elsewhere a
            // stale `postmaster.pid` may name another program by now.
            if cfg!(target_os = "linux")
                && let Some(pid) = postmaster_pid(&entry.path().join("data"))
            {
                // Thawed first: a frozen one could not act on the signal.
                let _ = signal_with_children(pid, Signal::Continue);
                let _ = signal(pid, Signal::Quit);
            }
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the cluster folder `name` is of a process in the space tagged `tag` that is gone.
fn left_by_a_dead_process(name: &str, tag: &str, is_alive: impl Fn(u32) -> bool) -> bool {
    let mut parts = name
        .strip_prefix(FOLDER_PREFIX)
        .unwrap_or_default()
        .split('-');
    let (Some(space), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    space == tag && pid.parse().is_ok_and(|pid| !is_alive(pid))
}

/// The URL's text; empty if it could not be built (a test then fails on it, naming nothing
/// secret).
pub(crate) fn exposed(url: Result<DatabaseUrl>) -> String {
    url.map(|url| url.expose_secret().to_owned())
        .unwrap_or_default()
}

/// libpq's variables for a login: [`PgCluster::libpq_environment`].
pub(crate) fn libpq_variables(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Vec<(&'static str, String)> {
    let mut variables = vec![
        ("PGHOST", host.to_owned()),
        ("PGPORT", port.to_string()),
        ("PGUSER", user.to_owned()),
        ("PGDATABASE", database.to_owned()),
    ];
    variables.extend(password.map(|password| ("PGPASSWORD", password.to_owned())));
    variables
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a dead process's folder of this process space is swept: another container sharing
    /// `/dev/shm` sees pids of its own, and its live clusters' pids look dead from here.
    #[test]
    fn a_cluster_folder_is_swept_only_when_its_process_here_is_gone() {
        let tag = process_space_tag();
        let ours = format!("{FOLDER_PREFIX}{tag}-4242-Ab12cd");
        assert!(left_by_a_dead_process(&ours, &tag, |_| false));
        assert!(!left_by_a_dead_process(&ours, &tag, |_| true));
        let elsewhere = format!("{FOLDER_PREFIX}0badf00d-4242-Ab12cd");
        assert_ne!(tag, "0badf00d");
        assert!(!left_by_a_dead_process(&elsewhere, &tag, |_| false));
        for other in ["counseling-testkit-4242-Ab12cd", "something-else", ""] {
            assert!(!left_by_a_dead_process(other, &tag, |_| false), "{other}");
        }
    }

    #[test]
    fn settings_that_keep_the_cluster_private_cannot_be_overridden() {
        for allowed in ["shared_buffers", "fsync", "pg_stat_statements.track"] {
            assert!(check_overridable(allowed).is_ok(), "{allowed}");
        }
        for refused in [
            "listen_addresses",
            "LISTEN_ADDRESSES",
            "unix_socket_directories",
            "hba_file",
            "ssl",
            "ssl_ca_file",
            "port",
            "",
            "work_mem=1; x",
        ] {
            assert!(check_overridable(refused).is_err(), "{refused}");
        }
    }
}
