use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::binaries::binaries_from_environment;
use super::{process_is_alive, spawner};
use crate::platform::{ClusterOptions, OWNER_ROLE, SERVICE_ROLE, random_password};
use crate::tls::{CertificateAuthority, ClientTlsFiles, ServerTls, write_private};
use crate::{Result, TestkitError};

const DIR_PREFIX: &str = "counseling-testkit-";
const SUPERUSER: &str = "postgres";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A private PostgreSQL cluster on 127.0.0.1 and a free port, in a directory of its own (on
/// `/dev/shm` where it exists), run as the `postgres` user when the tests run as root.
///
/// Dropping it stops the server and deletes its directory. Tests that break the database
/// (`stop`, `crash`, `freeze`) use one of their own, never the shared one.
#[derive(Debug, Clone)]
pub struct PgCluster {
    inner: Arc<ClusterInner>,
}

struct ClusterInner {
    bin_dir: PathBuf,
    root: PathBuf,
    port: u16,
    password: String,
    /// Passwords of the application's two roles ([`OWNER_ROLE`], [`SERVICE_ROLE`]).
    owner_password: String,
    service_password: String,
    owner: Option<(Uid, Gid)>,
    tls: Option<ClusterTls>,
    /// `-c name=value` flags from [`ClusterOptions::server_settings`], after the kit's own.
    extra_flags: Vec<String>,
    postmaster: Mutex<Option<Child>>,
}

impl std::fmt::Debug for ClusterInner {
    // Hand-written: the derived one would print the superuser's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterInner")
            .field("root", &self.root)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The server's TLS settings (`-c` flags) and what clients need to connect.
#[derive(Debug)]
struct ClusterTls {
    server_flags: Vec<String>,
    client: ClientTlsFiles,
}

impl PgCluster {
    /// Initialises and starts a new cluster. Takes about a second (`initdb`).
    pub async fn start() -> Result<Self> {
        blocking(Self::start_blocking).await
    }

    /// Like [`PgCluster::start`], for code that is not async.
    pub fn start_blocking() -> Result<Self> {
        Self::init_and_start(ClusterOptions::default())
    }

    /// A cluster of the given kind (for example with TLS).
    pub async fn start_with(options: ClusterOptions) -> Result<Self> {
        blocking(move || Self::init_and_start(options)).await
    }

    /// Like [`PgCluster::start_with`], for code that is not async.
    pub fn start_blocking_with(options: ClusterOptions) -> Result<Self> {
        Self::init_and_start(options)
    }

    fn init_and_start(options: ClusterOptions) -> Result<Self> {
        for (name, _) in &options.server_settings {
            check_overridable(name)?;
        }
        let bin_dir = binaries_from_environment()?;
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        sweep_dead_clusters(&base);
        // A fresh directory under a random name, created exclusively with mode 0700 (tempfile
        // refuses to reuse anything that exists, symlinks included). The pid in the name lets a
        // later run sweep the leftovers of a killed one.
        let root = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(TestkitError::io("creating the cluster directory"))?
            .keep();
        create_private_dir(&root.join("data"))?;

        // initdb and postgres refuse to run as root: hand the directory to the postgres user.
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            for path in [root.clone(), root.join("data")] {
                std::os::unix::fs::chown(&path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(
                    TestkitError::io("handing the cluster directory to postgres"),
                )?;
            }
        }

        let password = random_password();
        // The password reaches initdb through a file only its owner can read, never a command
        // line (visible to every local user in /proc).
        let pwfile = root.join("pwfile");
        write_private(&pwfile, &password)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pwfile, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(TestkitError::io("handing the password file to postgres"))?;
        }

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(root.join("data"))
            .args([
                "--username",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            // No trust anywhere: every connection proves the password (SCRAM).
            .args(["--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null());
        as_owner(&mut initdb, owner);
        let output = initdb
            .output()
            .map_err(TestkitError::io("running initdb"))?;
        let _ = fs::remove_file(&pwfile);
        if !output.status.success() {
            return Err(TestkitError::Server(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }

        let tls = match &options.tls {
            Some(tls) => Some(set_up_tls(&root, owner, tls)?),
            None => {
                // Only what the kit uses: passwords over TCP on loopback. (initdb's file also
                // allows local sockets, ::1 and replication.)
                fs::write(
                    root.join("data").join("pg_hba.conf"),
                    "host all all 127.0.0.1/32 scram-sha-256\n",
                )
                .map_err(TestkitError::io("writing pg_hba.conf"))?;
                None
            }
        };
        let port = free_port()?;
        let cluster = PgCluster {
            inner: Arc::new(ClusterInner {
                bin_dir,
                root,
                port,
                password,
                owner_password: random_password(),
                service_password: random_password(),
                owner,
                tls,
                extra_flags: options
                    .server_settings
                    .iter()
                    .flat_map(|(name, value)| ["-c".to_owned(), format!("{name}={value}")])
                    .collect(),
                postmaster: Mutex::new(None),
            }),
        };
        cluster.start_server()?;
        cluster.create_roles()?;
        Ok(cluster)
    }

    /// The roles of production: an owner that runs migrations, and the service's role that may
    /// only read and write rows (see `TestDatabase`). Passwords go in the statement, over the
    /// connection, never on a command line.
    fn create_roles(&self) -> Result<()> {
        let statements = [
            format!(
                "CREATE ROLE {OWNER_ROLE} LOGIN PASSWORD '{}'",
                self.inner.owner_password
            ),
            format!(
                "CREATE ROLE {SERVICE_ROLE} LOGIN PASSWORD '{}'",
                self.inner.service_password
            ),
        ];
        let options = self.admin_options();
        // A thread of its own: the caller may be inside a runtime, where blocking on another is
        // not allowed.
        let creating = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(TestkitError::io("starting a runtime for role creation"))?;
            runtime.block_on(async move {
                use sea_orm::sqlx::{AssertSqlSafe, Connection, PgConnection};
                let mut admin = PgConnection::connect_with(&options)
                    .await
                    .map_err(TestkitError::db("connecting to create roles"))?;
                for statement in &statements {
                    // The passwords are hex digits from `random_password`: nothing to escape.
                    sea_orm::sqlx::query(AssertSqlSafe(statement.as_str()))
                        .execute(&mut admin)
                        .await
                        .map_err(TestkitError::db("creating the application's roles"))?;
                }
                let _ = admin.close().await;
                Ok(())
            })
        });
        creating
            .join()
            .unwrap_or_else(|_| Err(TestkitError::Server("creating roles panicked".into())))
    }

    /// Connection options for the superuser on the `postgres` database (over TLS, with the
    /// client certificate if the cluster asks for one).
    pub fn admin_options(&self) -> PgConnectOptions {
        let options = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.inner.port)
            .username(SUPERUSER)
            .password(&self.inner.password)
            .database("postgres");
        match &self.inner.tls {
            None => options,
            Some(tls) => {
                let options = options.ssl_mode(PgSslMode::Require);
                match &tls.client.client {
                    Some((cert, key)) => options.ssl_client_cert(cert).ssl_client_key(key),
                    None => options,
                }
            }
        }
    }

    /// The files a client needs for this cluster's TLS: the CA (`sslrootcert`) and, if the
    /// cluster asks for one, a client certificate and key for the superuser. `None` without TLS.
    pub fn tls_files(&self) -> Option<&ClientTlsFiles> {
        self.inner.tls.as_ref().map(|tls| &tls.client)
    }

    /// A `postgres://` URL for `database` as the superuser (it contains the password).
    pub fn superuser_url(&self, database: &str) -> String {
        self.url_as(SUPERUSER, &self.inner.password, database)
    }

    /// A URL for `database` as the role that owns the schema and runs migrations (the
    /// superuser's on a cluster that asks for client certificates, see [`Self::service_url`]).
    pub fn owner_url(&self, database: &str) -> String {
        if self.requires_client_certificates() {
            return self.superuser_url(database);
        }
        self.url_as(OWNER_ROLE, &self.inner.owner_password, database)
    }

    /// Client certificates are issued to the superuser only.
    fn requires_client_certificates(&self) -> bool {
        self.inner
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client.client.is_some())
    }

    /// A URL for `database` as the service's role, which may only read and write rows. On a
    /// cluster that asks for client certificates (issued to the superuser only) it is the
    /// superuser's: those tests are about TLS, not privileges.
    pub fn service_url(&self, database: &str) -> String {
        if self.requires_client_certificates() {
            return self.superuser_url(database);
        }
        self.url_as(SERVICE_ROLE, &self.inner.service_password, database)
    }

    /// Connection options for the owner role on `database` (see [`Self::owner_url`]).
    pub fn owner_options(&self, database: &str) -> PgConnectOptions {
        let options = self.admin_options().database(database);
        if self.requires_client_certificates() {
            return options;
        }
        options
            .username(OWNER_ROLE)
            .password(&self.inner.owner_password)
    }

    fn url_as(&self, role: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{role}:{password}@127.0.0.1:{}/{database}",
            self.inner.port
        )
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The folder of the PostgreSQL binaries this cluster runs (`pgbench`, `psql` are there too).
    pub fn bin_dir(&self) -> &Path {
        &self.inner.bin_dir
    }

    /// The postmaster's process id, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.postmaster().as_ref().map(Child::id)
    }

    /// The superuser's password, for tests that check it never leaks.
    pub fn password(&self) -> &str {
        &self.inner.password
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.inner.root.join("server.log")
    }

    /// Fast shutdown (SIGINT): live sessions are terminated, new ones refused. Waits for exit.
    pub async fn stop(&self) -> Result<()> {
        let cluster = self.clone();
        blocking(move || cluster.signal_and_wait(Signal::SIGINT)).await
    }

    /// Immediate shutdown (SIGQUIT), like a crash: the next start runs crash recovery.
    pub async fn crash(&self) -> Result<()> {
        let cluster = self.clone();
        blocking(move || cluster.signal_and_wait(Signal::SIGQUIT)).await
    }

    /// Starts the server again on the same port (after a stop or crash, or while it runs);
    /// returns once it accepts connections.
    pub async fn restart(&self) -> Result<()> {
        let cluster = self.clone();
        blocking(move || {
            cluster.signal_and_wait(Signal::SIGINT)?;
            cluster.start_server()
        })
        .await
    }

    /// Freezes every server process (SIGSTOP): connections stay open but nothing answers, like a
    /// hung host. Undo with [`PgCluster::thaw`].
    pub fn freeze(&self) -> Result<()> {
        let postmaster = self.running_postmaster()?;
        signal(postmaster, Signal::SIGSTOP)?;
        for child in children_of(postmaster) {
            let _ = signal(child, Signal::SIGSTOP);
        }
        Ok(())
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        let postmaster = self.running_postmaster()?;
        for child in children_of(postmaster) {
            let _ = signal(child, Signal::SIGCONT);
        }
        signal(postmaster, Signal::SIGCONT)
    }

    fn postmaster(&self) -> MutexGuard<'_, Option<Child>> {
        // A poisoned lock only means another test thread panicked while holding it; the Child
        // inside is still accurate.
        self.inner
            .postmaster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn running_postmaster(&self) -> Result<Pid> {
        self.postmaster()
            .as_ref()
            .map(|child| Pid::from_raw(child.id() as i32))
            .ok_or_else(|| TestkitError::Server("the server is not running".into()))
    }

    fn start_server(&self) -> Result<()> {
        let inner = &self.inner;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(TestkitError::io("opening the server log"))?;
        let log_err = log
            .try_clone()
            .map_err(TestkitError::io("opening the server log"))?;
        let postgres = inner.bin_dir.join("postgres");
        // setpriv makes the postmaster get SIGINT (fast shutdown) when the spawning thread, and
        // so the test process, dies. Without setpriv the server still stops with the cluster
        // handle, just not after a SIGKILL of the test process.
        let mut command = if Path::new("/usr/bin/setpriv").exists() {
            let mut command = Command::new("/usr/bin/setpriv");
            command.args(["--pdeathsig", "INT", "--"]).arg(postgres);
            command
        } else {
            Command::new(postgres)
        };
        command
            .arg("-D")
            .arg(inner.root.join("data"))
            .arg("-p")
            .arg(inner.port.to_string())
            // TCP on loopback only; no unix socket for another local user to find.
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
            .args(["-c", "log_min_messages=warning"])
            .args(inner.tls.iter().flat_map(|tls| tls.server_flags.iter()))
            .args(&inner.extra_flags)
            .stdin(Stdio::null())
            // Output goes to a file: a pipe nobody reads would fill up and block the server.
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        as_owner(&mut command, inner.owner);
        let child = spawner::spawn(command).map_err(TestkitError::io("starting postgres"))?;
        *self.postmaster() = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pid_file = self.inner.root.join("data").join("postmaster.pid");
        loop {
            if let Some(child) = self.postmaster().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(TestkitError::Server(format!(
                    "postgres exited during start-up ({status}); its log:\n{}",
                    self.log_tail()
                )));
            }
            let ready = fs::read_to_string(&pid_file)
                .map(|text| {
                    text.lines()
                        .nth(7)
                        .is_some_and(|status| status.trim() == "ready")
                })
                .unwrap_or(false);
            if ready && self.accepts_connections() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::Server(format!(
                    "postgres was not ready within {READY_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn accepts_connections(&self) -> bool {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.inner.port));
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn signal_and_wait(&self, signal_to_send: Signal) -> Result<()> {
        let Some(mut child) = self.postmaster().take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        // A frozen server cannot act on a shutdown signal until it runs again.
        thaw_all(pid);
        let _ = kill(pid, signal_to_send);
        child
            .wait()
            .map_err(TestkitError::io("waiting for postgres to stop"))?;
        Ok(())
    }
}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        if let Some(mut child) = self.postmaster.get_mut().ok().and_then(Option::take) {
            let pid = Pid::from_raw(child.id() as i32);
            // Thaw everything first: a stopped process cannot act on SIGQUIT.
            thaw_all(pid);
            let _ = kill(pid, Signal::SIGQUIT);
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Makes a CA and the server's certificate (and a client certificate when asked), hands the
/// server's files to the server's user, and writes `pg_hba.conf` for the access asked for.
fn set_up_tls(root: &Path, owner: Option<(Uid, Gid)>, options: &ServerTls) -> Result<ClusterTls> {
    let ca = CertificateAuthority::new("counseling-testkit CA")?;
    let server = if options.expired {
        ca.issue_expired_server(&options.server_names)?
    } else {
        ca.issue_server(&options.server_names)?
    };
    let server_dir = root.join("tls-server");
    let client_dir = root.join("tls-client");
    for dir in [&server_dir, &client_dir] {
        fs::create_dir_all(dir).map_err(TestkitError::io("creating a TLS directory"))?;
    }
    let server_cert = server_dir.join("server.crt");
    let server_key = server_dir.join("server.key");
    let server_ca = server_dir.join("ca.crt");
    fs::write(&server_cert, &server.certificate_pem)
        .map_err(TestkitError::io("writing the server certificate"))?;
    // PostgreSQL refuses a key that others can read, or that another user owns.
    write_private(&server_key, &server.key_pem)?;
    fs::write(&server_ca, ca.certificate_pem())
        .map_err(TestkitError::io("writing the CA certificate"))?;
    if let Some((uid, gid)) = owner {
        for path in [&server_dir, &server_cert, &server_key, &server_ca] {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(TestkitError::io("handing the TLS files to postgres"))?;
        }
    }

    let root_cert = client_dir.join("root.crt");
    fs::write(&root_cert, ca.certificate_pem())
        .map_err(TestkitError::io("writing the client's CA file"))?;
    let client = if options.client_certificates {
        let issued = ca.issue_client(SUPERUSER)?;
        let cert = client_dir.join("client.crt");
        let key = client_dir.join("client.key");
        fs::write(&cert, &issued.certificate_pem)
            .map_err(TestkitError::io("writing the client certificate"))?;
        write_private(&key, &issued.key_pem)?;
        Some((cert, key))
    } else {
        None
    };

    let host_kind = if options.tls_only || options.client_certificates {
        "hostssl"
    } else {
        "host"
    };
    let client_cert = if options.client_certificates {
        " clientcert=verify-full"
    } else {
        ""
    };
    // Rewriting the file initdb made keeps its owner (the server's user).
    fs::write(
        root.join("data").join("pg_hba.conf"),
        format!("{host_kind} all all 127.0.0.1/32 scram-sha-256{client_cert}\n"),
    )
    .map_err(TestkitError::io("writing pg_hba.conf"))?;

    let mut server_flags = vec!["ssl=on".to_owned()];
    server_flags.push(format!("ssl_cert_file={}", server_cert.display()));
    server_flags.push(format!("ssl_key_file={}", server_key.display()));
    if options.client_certificates {
        server_flags.push(format!("ssl_ca_file={}", server_ca.display()));
    }
    Ok(ClusterTls {
        server_flags: server_flags
            .into_iter()
            .flat_map(|flag| ["-c".to_owned(), flag])
            .collect(),
        client: ClientTlsFiles { root_cert, client },
    })
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
    let well_formed = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !well_formed {
        return Err(TestkitError::Server(format!(
            "{name:?} is not a server setting's name"
        )));
    }
    let lower = name.to_ascii_lowercase();
    if FIXED_SETTINGS.contains(&lower.as_str()) || lower.starts_with("ssl") {
        return Err(TestkitError::Server(format!(
            "{name} is part of what keeps the test kit's cluster private; it cannot be set"
        )));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| TestkitError::Server(format!("cluster operation panicked: {error}")))?
}

/// The user the server runs as when we are root (initdb and postgres refuse root): `postgres`.
pub(super) fn server_user() -> Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name(SUPERUSER).ok().flatten().ok_or_else(|| {
        TestkitError::Server(
            "running as root, but there is no `postgres` user to run the server as \
             (install the postgresql package, or run as a normal user)"
                .into(),
        )
    })?;
    Ok(Some((user.uid, user.gid)))
}

pub(super) fn as_owner(command: &mut Command, owner: Option<(Uid, Gid)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid.as_raw()).gid(gid.as_raw());
        // The postgres user cannot enter root's working directory.
        command.current_dir("/");
    }
}

fn thaw_all(postmaster: Pid) {
    for process in children_of(postmaster) {
        let _ = kill(process, Signal::SIGCONT);
    }
    let _ = kill(postmaster, Signal::SIGCONT);
}

fn signal(pid: Pid, signal_to_send: Signal) -> Result<()> {
    kill(pid, signal_to_send).map_err(|errno| {
        TestkitError::Server(format!("sending {signal_to_send} to {pid}: {errno}"))
    })
}

/// Processes whose parent is `parent` (the postmaster's backends and helpers), read from /proc.
fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The fields after the parenthesised command name: state, ppid, ...
                    let after_name = &stat[stat.rfind(')')? + 1..];
                    after_name.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(TestkitError::io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(TestkitError::io("finding a free port"))?
        .port();
    Ok(port)
}

/// A new directory only its owner may enter; an existing one (or a symlink) is an error.
fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(TestkitError::io(format!("creating {}", path.display())))
}

/// Deletes the directories of clusters whose test process is gone (killed runs).
fn sweep_dead_clusters(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_is_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
