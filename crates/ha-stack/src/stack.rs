use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, AssertSqlSafe, Connection};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::rest::{self, Member};
use crate::secrets::{Password, generate_password, write_private};
use crate::{HaError, Ports, Result};

/// Patroni-managed PostgreSQL nodes.
pub const NODES: usize = 2;
/// The service's role: reads and writes rows of the application's tables, nothing else.
pub const APP_ROLE: &str = "counseling";
/// The migrations' role: owns the application database and its schema, is not a superuser.
pub const OWNER_ROLE: &str = "counseling_owner";
pub const APP_DATABASE: &str = "counseling_platform";

const PATRONI_CONFIG: &str = include_str!("../../../ha/patroni.yml");
const HAPROXY_CONFIG: &str = include_str!("../../../ha/haproxy.cfg");
const SUPERUSER: &str = "postgres";
/// The password files under `secrets/`, one per role the stack needs.
const ROLES: [&str; 5] = ["superuser", "replication", "rewind", "owner", "app"];
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The stack's directory is created inside this one, under a random name.
    pub parent_dir: PathBuf,
    pub ports: Ports,
    /// PostgreSQL's server binaries (`PG_BIN_DIR`, else PostgreSQL 15's, as Patroni on Debian 12).
    pub pg_bin_dir: PathBuf,
    /// Where the servers' logs are copied if the stack fails to come up (its directory, which
    /// holds the passwords, is deleted).
    pub logs_on_failure: Option<PathBuf>,
}

impl StackOptions {
    pub fn new(ports: Ports) -> Self {
        let parent_dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let pg_bin_dir = std::env::var_os("PG_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        Self {
            parent_dir,
            ports,
            pg_bin_dir,
            logs_on_failure: None,
        }
    }
}

/// What another process needs to find, inspect and stop a running stack (no passwords: those
/// stay in the stack's 0600 files).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedStack {
    pub dir: PathBuf,
    pub ports: Ports,
    pub pg_bin_dir: PathBuf,
    pub etcd: u32,
    pub haproxy: u32,
    pub patroni: [Option<u32>; NODES],
}

/// A running stack. Dropping it does not stop it: call [`HaStack::stop`].
#[derive(Debug)]
pub struct HaStack {
    saved: SavedStack,
    /// Who runs the servers: the `postgres` user when we are root (initdb refuses root).
    runner: Option<(Uid, Gid)>,
    /// Children started by this process, by name, kept so that they can be reaped and so that
    /// a server that exits while we wait for it is noticed at once.
    children: HashMap<u32, (String, Child)>,
}

impl HaStack {
    /// Creates the directory, passwords and configuration, starts etcd, both Patroni nodes and
    /// HAProxy, and waits until a primary with a synchronous standby serves through HAProxy and
    /// the application role and database exist. About 15 s.
    pub fn start(options: &StackOptions) -> Result<Self> {
        for program in ["etcd", "patroni", "patronictl", "haproxy"] {
            if !on_path(program) {
                return Err(HaError::Missing(program.into()));
            }
        }
        if !options.pg_bin_dir.join("postgres").is_file() {
            return Err(HaError::Missing(format!(
                "PostgreSQL in {}",
                options.pg_bin_dir.display()
            )));
        }
        let runner = runner()?;
        // Created exclusively under a random name, mode 0700, refusing to reuse anything.
        let dir = tempfile::Builder::new()
            .prefix("counseling-ha-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&options.parent_dir)
            .map_err(HaError::io("creating the stack directory"))?
            .keep();
        let mut stack = HaStack {
            saved: SavedStack {
                dir,
                ports: options.ports,
                pg_bin_dir: options.pg_bin_dir.clone(),
                etcd: 0,
                haproxy: 0,
                patroni: [None; NODES],
            },
            runner,
            children: HashMap::new(),
        };
        match stack.bring_up() {
            Ok(()) => Ok(stack),
            Err(error) => {
                if let Some(into) = &options.logs_on_failure {
                    stack.copy_logs(into);
                }
                let _ = stack.stop();
                Err(error)
            }
        }
    }

    fn bring_up(&mut self) -> Result<()> {
        let dir = self.saved.dir.clone();
        self.give_to_runner(&dir)?;
        let secrets = dir.join("secrets");
        fs::create_dir(&secrets).map_err(HaError::io("creating the secrets directory"))?;
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700))
            .map_err(HaError::io("restricting the secrets directory"))?;
        for role in ROLES {
            let password = generate_password()?;
            write_private(
                &secrets.join(format!("{role}.password")),
                password.expose_secret(),
            )?;
        }
        for (name, contents) in [
            ("patroni.yml", PATRONI_CONFIG),
            ("haproxy.cfg", HAPROXY_CONFIG),
        ] {
            let path = dir.join(name);
            write_private(&path, contents)?;
            self.give_to_runner(&path)?;
        }
        let names = (0..NODES).map(Self::node_name);
        for name in std::iter::once("etcd".to_owned()).chain(names) {
            let path = dir.join(&name);
            fs::create_dir(&path).map_err(HaError::io(format!("creating {name}")))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(HaError::io(format!("restricting {name}")))?;
            self.give_to_runner(&path)?;
        }

        self.start_etcd()?;
        for index in 0..NODES {
            self.start_node(index)?;
        }
        self.wait_for("a leader with a synchronous standby", Self::is_healthy)?;
        self.start_haproxy()?;
        self.create_application_database()
    }

    /// Waits until `done`, failing early if a server we started has exited (its log says why).
    fn wait_for(&mut self, what: &str, done: impl Fn(&Self) -> bool) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !done(self) {
            let mut exited = None;
            for (name, child) in self.children.values_mut() {
                if !matches!(child.try_wait(), Ok(None)) {
                    exited = Some(name.clone());
                }
            }
            if let Some(name) = exited {
                return Err(HaError::Exited(name));
            }
            if Instant::now() >= deadline {
                return Err(HaError::Timeout {
                    what: what.to_owned(),
                    seconds: READY_TIMEOUT.as_secs(),
                    detail: format!("; members: {:?}", self.members()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Finds a stack started by another process.
    pub fn attach(saved: SavedStack) -> Result<Self> {
        Ok(Self {
            saved,
            runner: runner()?,
            children: HashMap::new(),
        })
    }

    /// What [`HaStack::attach`] needs.
    pub fn saved(&self) -> &SavedStack {
        &self.saved
    }

    pub fn ports(&self) -> Ports {
        self.saved.ports
    }

    pub fn dir(&self) -> &Path {
        &self.saved.dir
    }

    pub fn node_name(index: usize) -> String {
        format!("node{}", index + 1)
    }

    pub fn node_index(name: &str) -> Option<usize> {
        (0..NODES).find(|&index| Self::node_name(index) == name)
    }

    fn node_dir(&self, index: usize) -> PathBuf {
        self.saved.dir.join(Self::node_name(index))
    }

    pub fn patroni_log(&self, index: usize) -> PathBuf {
        self.node_dir(index).join("patroni.log")
    }

    /// Copies the servers' logs (no secrets) into `into`, for a look after the stack is gone.
    pub fn copy_logs(&self, into: &Path) {
        let _ = fs::create_dir_all(into);
        let dir = &self.saved.dir;
        let mut logs = vec![dir.join("haproxy.log"), dir.join("etcd/etcd.log")];
        logs.extend((0..NODES).map(|index| self.patroni_log(index)));
        for log in logs {
            if let Ok(relative) = log.strip_prefix(dir) {
                let name = relative.to_string_lossy().replace('/', "-");
                let _ = fs::copy(&log, into.join(name));
            }
        }
    }

    /// A password of the stack (`superuser`, `replication`, `rewind`, `owner` or `app`), from its
    /// file.
    pub fn password(&self, role: &str) -> Result<Password> {
        let path = self
            .saved
            .dir
            .join("secrets")
            .join(format!("{role}.password"));
        fs::read_to_string(&path)
            .map(SecretString::from)
            .map_err(HaError::io(format!("reading the {role} password")))
    }

    /// `postgres://counseling:...@127.0.0.1:<HAProxy primary port>/counseling_platform`: what
    /// the service uses (rows only). It holds the password: never print or log it.
    pub fn app_url(&self) -> Result<SecretString> {
        self.app_url_on(self.saved.ports.primary())
    }

    /// The owner's URL through HAProxy's primary port: what the migrations use. It holds the
    /// password: never print or log it.
    pub fn owner_url(&self) -> Result<SecretString> {
        let password = self.password("owner")?;
        Ok(SecretString::from(format!(
            "postgres://{OWNER_ROLE}:{}@127.0.0.1:{}/{APP_DATABASE}",
            password.expose_secret(),
            self.saved.ports.primary(),
        )))
    }

    /// The application role's URL on another port (HAProxy's replica port, a node's own).
    pub fn app_url_on(&self, port: u16) -> Result<SecretString> {
        let password = self.password("app")?;
        Ok(SecretString::from(format!(
            "postgres://{APP_ROLE}:{}@127.0.0.1:{port}/{APP_DATABASE}",
            password.expose_secret(),
        )))
    }

    /// Superuser connection options for `port` (a node's, or HAProxy's) and `database`.
    pub fn superuser_options(&self, port: u16, database: &str) -> Result<PgConnectOptions> {
        Ok(PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(port)
            .username(SUPERUSER)
            .password(self.password("superuser")?.expose_secret())
            .database(database))
    }

    /// `program` with nothing of our environment but PATH: the servers get exactly the
    /// variables set on the command.
    fn command(program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C.UTF-8");
        command
    }

    fn spawn(&mut self, name: &str, command: &mut Command, log: &Path) -> Result<u32> {
        // Appended to: a restarted node's log keeps what happened before (a test reads it).
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(HaError::io(format!("creating {name}'s log")))?;
        let errors = output
            .try_clone()
            .map_err(HaError::io(format!("creating {name}'s log")))?;
        command
            .current_dir(&self.saved.dir)
            .stdin(Stdio::null())
            // Files, not pipes: nobody would drain a pipe once `ha-stack up` has exited.
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(errors))
            // Its own process group: a Ctrl-C in the terminal that ran `just ha-up` does not
            // reach the servers; `just ha-down` stops them.
            .process_group(0);
        if let Some((uid, gid)) = self.runner {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        let child = command
            .spawn()
            .map_err(HaError::io(format!("starting {name}")))?;
        let pid = child.id();
        self.children.insert(pid, (name.to_owned(), child));
        Ok(pid)
    }

    fn start_etcd(&mut self) -> Result<()> {
        let ports = self.saved.ports;
        let client = format!("http://127.0.0.1:{}", ports.etcd_client());
        let peer = format!("http://127.0.0.1:{}", ports.etcd_peer());
        let dir = self.saved.dir.clone();
        // Not secret: addresses and a directory. etcd reads ETCD_* variables like its flags.
        let mut command = Self::command("etcd");
        command.envs([
            ("ETCD_NAME", "etcd1".to_owned()),
            ("ETCD_DATA_DIR", dir.join("etcd/data").display().to_string()),
            ("ETCD_LISTEN_CLIENT_URLS", client.clone()),
            ("ETCD_ADVERTISE_CLIENT_URLS", client),
            ("ETCD_LISTEN_PEER_URLS", peer.clone()),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer.clone()),
            ("ETCD_INITIAL_CLUSTER", format!("etcd1={peer}")),
            ("ETCD_INITIAL_CLUSTER_STATE", "new".to_owned()),
            ("ETCD_INITIAL_CLUSTER_TOKEN", "counseling-ha".to_owned()),
        ]);
        self.saved.etcd = self.spawn("etcd", &mut command, &dir.join("etcd/etcd.log"))?;
        self.wait_for("etcd answers", |_| {
            rest::get(ports.etcd_client(), "/health")
                .is_some_and(|(status, body)| status == 200 && body.contains("true"))
        })
    }

    /// Starts node `index`'s Patroni (again, after [`HaStack::kill_node`]: it rejoins as a
    /// replica, rewinding its data with pg_rewind if it diverged).
    pub fn start_node(&mut self, index: usize) -> Result<()> {
        let ports = self.saved.ports;
        let node_dir = self.node_dir(index);
        let rest = format!("127.0.0.1:{}", ports.rest(index));
        let postgres = format!("127.0.0.1:{}", ports.postgres(index));
        let mut command = Self::command("patroni");
        command.arg(self.saved.dir.join("patroni.yml"));
        command.envs([
            ("HOME", node_dir.display().to_string()),
            ("PATRONI_NAME", Self::node_name(index)),
            ("PATRONI_RESTAPI_LISTEN", rest.clone()),
            ("PATRONI_RESTAPI_CONNECT_ADDRESS", rest),
            ("PATRONI_POSTGRESQL_LISTEN", postgres.clone()),
            ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", postgres),
            (
                "PATRONI_POSTGRESQL_DATA_DIR",
                node_dir.join("data").display().to_string(),
            ),
            (
                "PATRONI_POSTGRESQL_PGPASS",
                node_dir.join("pgpass").display().to_string(),
            ),
            (
                "PATRONI_POSTGRESQL_BIN_DIR",
                self.saved.pg_bin_dir.display().to_string(),
            ),
            (
                "PATRONI_ETCD3_HOSTS",
                format!("127.0.0.1:{}", ports.etcd_client()),
            ),
        ]);
        // The environment of a process is readable only by its user and root, unlike its
        // command line.
        for (role, variable) in [
            ("superuser", "PATRONI_SUPERUSER_PASSWORD"),
            ("replication", "PATRONI_REPLICATION_PASSWORD"),
            ("rewind", "PATRONI_REWIND_PASSWORD"),
        ] {
            command.env(variable, self.password(role)?.expose_secret());
        }
        let log = node_dir.join("patroni.log");
        let pid = self.spawn(&Self::node_name(index), &mut command, &log)?;
        self.saved.patroni[index] = Some(pid);
        Ok(())
    }

    fn start_haproxy(&mut self) -> Result<()> {
        let ports = self.saved.ports;
        let mut command = Self::command("haproxy");
        // -db: stay in the foreground, so that the pid we hold is HAProxy's.
        command
            .arg("-db")
            .arg("-f")
            .arg(self.saved.dir.join("haproxy.cfg"));
        command.envs(
            [
                ("HA_PRIMARY_PORT", ports.primary()),
                ("HA_REPLICA_PORT", ports.replica()),
                ("HA_STATS_PORT", ports.haproxy_stats()),
                ("HA_NODE1_PG_PORT", ports.postgres(0)),
                ("HA_NODE1_REST_PORT", ports.rest(0)),
                ("HA_NODE2_PG_PORT", ports.postgres(1)),
                ("HA_NODE2_REST_PORT", ports.rest(1)),
            ]
            .map(|(name, port)| (name, port.to_string())),
        );
        let log = self.saved.dir.join("haproxy.log");
        self.saved.haproxy = self.spawn("haproxy", &mut command, &log)?;
        self.wait_for("HAProxy leads to the primary only", |stack| {
            stack
                .leader()
                .is_some_and(|leader| stack.haproxy_primary_targets() == [leader])
        })
    }

    /// The nodes HAProxy's primary port leads to now (its servers in state UP).
    pub fn haproxy_primary_targets(&self) -> Vec<usize> {
        haproxy_up_servers(self.saved.ports.haproxy_stats(), "primary")
    }

    /// Creates the application's two roles and its database through HAProxy, as the superuser.
    fn create_application_database(&self) -> Result<()> {
        let options = self.superuser_options(self.saved.ports.primary(), "postgres")?;
        let in_database = self.superuser_options(self.saved.ports.primary(), APP_DATABASE)?;
        let owner_password = self.password("owner")?;
        let password = self.password("app")?;
        let runtime = runtime()?;
        runtime.block_on(async {
            let database = |what: &str| {
                let what = what.to_owned();
                move |source| HaError::Database { what, source }
            };
            let mut connection = PgConnection::connect_with(&options)
                .await
                .map_err(database("connecting through HAProxy"))?;
            // A failing statement is logged with its text; this one carries a password.
            sqlx::query("SET log_min_error_statement = panic")
                .execute(&mut connection)
                .await
                .map_err(database("configuring the session"))?;
            // The passwords are 64 hex digits (see generate_password): nothing to escape.
            for (role, password) in [(OWNER_ROLE, &owner_password), (APP_ROLE, &password)] {
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE ROLE {role} LOGIN PASSWORD '{}'",
                    password.expose_secret()
                )))
                .execute(&mut connection)
                .await
                .map_err(database("creating the application's roles"))?;
            }
            sqlx::query(AssertSqlSafe(format!(
                "CREATE DATABASE {APP_DATABASE} OWNER {OWNER_ROLE}"
            )))
            .execute(&mut connection)
            .await
            .map_err(database("creating the application database"))?;
            sqlx::query(AssertSqlSafe(format!(
                "ALTER DATABASE {APP_DATABASE} SET timezone TO 'UTC'"
            )))
            .execute(&mut connection)
            .await
            .map_err(database("setting the database's time zone"))?;
            let _ = connection.close().await;
            let mut connection = PgConnection::connect_with(&in_database)
                .await
                .map_err(database("connecting to the application database"))?;
            for statement in migration::roles::grant_statements(APP_DATABASE, OWNER_ROLE, APP_ROLE)
            {
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut connection)
                    .await
                    .map_err(database("granting the service's role its rows"))?;
            }
            let _ = connection.close().await;
            Ok(())
        })
    }

    /// The members as the first Patroni REST API that answers sees them.
    pub fn members(&self) -> Option<Vec<Member>> {
        (0..NODES).find_map(|index| rest::cluster_members(self.saved.ports.rest(index)))
    }

    /// The index of the running leader, if there is one.
    pub fn leader(&self) -> Option<usize> {
        self.members()?
            .iter()
            .find(|member| member.is_running_leader())
            .and_then(|member| Self::node_index(&member.name))
    }

    /// Whether the cluster is whole: a running leader, and the other node its synchronous
    /// standby, confirmed by that node's own REST API (`GET /sync` answers 200).
    pub fn is_healthy(&self) -> bool {
        let Some(members) = self.members() else {
            return false;
        };
        let leaders = members.iter().filter(|m| m.is_running_leader()).count();
        let standby = members.iter().find(|m| m.is_sync_standby());
        leaders == 1
            && members.len() == NODES
            && standby
                .and_then(|member| Self::node_index(&member.name))
                .and_then(|index| rest::get(self.saved.ports.rest(index), "/sync"))
                .is_some_and(|(status, _)| status == 200)
    }

    pub fn wait_until_healthy(&self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        wait_until("a leader with a synchronous standby", limit, || {
            self.is_healthy()
        })
        .map_err(|error| match error {
            HaError::Timeout { what, seconds, .. } => HaError::Timeout {
                what,
                seconds,
                detail: format!("; members: {:?}", self.members()),
            },
            other => other,
        })?;
        Ok(started.elapsed())
    }

    /// A planned switchover with `patronictl switchover --force` from the leader to the other
    /// node.
    pub fn switchover(&self) -> Result<()> {
        let leader = self
            .leader()
            .ok_or_else(|| HaError::Invalid("no leader to switch over from".into()))?;
        let candidate = (leader + 1) % NODES;
        let status = Command::new("patronictl")
            .arg("-c")
            .arg(self.saved.dir.join("patroni.yml"))
            .args(["switchover", "--force"])
            .args(["--leader", &Self::node_name(leader)])
            .args(["--candidate", &Self::node_name(candidate)])
            .env(
                "PATRONI_ETCD3_HOSTS",
                format!("127.0.0.1:{}", self.saved.ports.etcd_client()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(HaError::io("running patronictl"))?;
        if status.success() {
            Ok(())
        } else {
            Err(HaError::Command("patronictl switchover".into()))
        }
    }

    /// The postmaster of node `index`, from its `postmaster.pid`, if that process lives.
    pub fn postmaster_pid(&self, index: usize) -> Option<u32> {
        let text = fs::read_to_string(self.node_dir(index).join("data/postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse::<u32>().ok()?;
        self.is_running(pid).then_some(pid)
    }

    /// An unplanned failure: SIGKILL to node `index`'s Patroni, then to its PostgreSQL.
    pub fn kill_node(&mut self, index: usize) -> Result<()> {
        let postmaster = self.postmaster_pid(index);
        if let Some(pid) = self.saved.patroni[index].take() {
            self.signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(5));
        }
        if let Some(pid) = postmaster {
            self.signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(5));
        }
        Ok(())
    }

    /// Whether `pid` is a live process of this stack: every one runs in the stack's directory
    /// (the servers we start) or below it (PostgreSQL, in its data directory). So a stale pid,
    /// reused by another program after a reboot, is never signalled.
    fn is_running(&self, pid: u32) -> bool {
        is_alive(pid)
            && fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&self.saved.dir))
    }

    /// Sends `signal` and waits up to `limit` for the process to go; true if it went.
    fn signal_and_wait(&mut self, pid: u32, signal: Signal, limit: Duration) -> bool {
        if !self.children.contains_key(&pid) && !self.is_running(pid) {
            return true;
        }
        let _ = kill(Pid::from_raw(pid as i32), signal);
        let deadline = Instant::now() + limit;
        loop {
            if let Some((_, child)) = self.children.get_mut(&pid) {
                if !matches!(child.try_wait(), Ok(None)) {
                    self.children.remove(&pid);
                    return true;
                }
            } else if !self.is_running(pid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops HAProxy, both nodes (Patroni stops its PostgreSQL) and etcd, then deletes the
    /// directory. Whatever does not stop when asked is killed.
    pub fn stop(&mut self) -> Result<()> {
        let haproxy = std::mem::take(&mut self.saved.haproxy);
        if haproxy != 0 && !self.signal_and_wait(haproxy, Signal::SIGTERM, STOP_TIMEOUT) {
            self.signal_and_wait(haproxy, Signal::SIGKILL, STOP_TIMEOUT);
        }
        // Both nodes at once: a leader waiting for its synchronous standby must not outlive it.
        let patronis: Vec<u32> = self
            .saved
            .patroni
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for &pid in &patronis {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        for pid in patronis {
            if !self.signal_and_wait(pid, Signal::SIGTERM, STOP_TIMEOUT) {
                self.signal_and_wait(pid, Signal::SIGKILL, STOP_TIMEOUT);
            }
        }
        // A PostgreSQL whose Patroni was killed is still running: stop it (fast, then crash).
        for index in 0..NODES {
            if let Some(pid) = self.postmaster_pid(index)
                && !self.signal_and_wait(pid, Signal::SIGINT, STOP_TIMEOUT)
            {
                self.signal_and_wait(pid, Signal::SIGQUIT, STOP_TIMEOUT);
            }
        }
        let etcd = std::mem::take(&mut self.saved.etcd);
        if etcd != 0 && !self.signal_and_wait(etcd, Signal::SIGTERM, STOP_TIMEOUT) {
            self.signal_and_wait(etcd, Signal::SIGKILL, STOP_TIMEOUT);
        }
        let dir = self.saved.dir.clone();
        // Only ever a directory we created (the state file could have been edited).
        let ours = dir
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("counseling-ha-"));
        if ours {
            match fs::remove_dir_all(&dir) {
                // Gone already: /dev/shm does not survive a reboot.
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(HaError::io("removing the stack directory")(error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every process of the stack that is still alive, with its name.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes = vec![
            ("etcd".to_owned(), self.saved.etcd),
            ("haproxy".to_owned(), self.saved.haproxy),
        ];
        for index in 0..NODES {
            if let Some(pid) = self.saved.patroni[index] {
                processes.push((format!("patroni {}", Self::node_name(index)), pid));
            }
            if let Some(pid) = self.postmaster_pid(index) {
                processes.push((format!("postgres {}", Self::node_name(index)), pid));
            }
        }
        processes.retain(|&(_, pid)| pid != 0 && self.is_running(pid));
        processes
    }

    fn give_to_runner(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.runner {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(
                HaError::io(format!("handing {} to the postgres user", path.display())),
            )?;
        }
        Ok(())
    }
}

/// `Some(postgres)` when running as root: PostgreSQL refuses to run as root.
fn runner() -> Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name(SUPERUSER).ok().flatten().ok_or_else(|| {
        HaError::Invalid(
            "running as root, but there is no `postgres` user to run the servers as".into(),
        )
    })?;
    Ok(Some((user.uid, user.gid)))
}

fn is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    // A zombie has exited; only its parent's wait is missing.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_none_or(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The servers of HAProxy proxy `proxy` that are UP, from the CSV statistics; empty until every
/// server has been checked at least once (before that, HAProxy assumes all of them up).
fn haproxy_up_servers(stats_port: u16, proxy: &str) -> Vec<usize> {
    let Some((200, csv)) = rest::get(stats_port, "/stats;csv") else {
        return Vec::new();
    };
    // Columns: pxname, svname, ..., status (18th), ..., check_status (37th).
    let servers: Vec<(Option<usize>, &str, &str)> = csv
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.len() > 36 && fields[0] == proxy && fields[1].starts_with("node"))
                .then(|| (HaStack::node_index(fields[1]), fields[17], fields[36]))
        })
        .collect();
    let checked = |check: &str| !check.is_empty() && !check.starts_with("INI");
    if servers.len() != NODES || !servers.iter().all(|&(_, _, check)| checked(check)) {
        return Vec::new();
    }
    servers
        .into_iter()
        .filter(|&(_, status, _)| status == "UP")
        .filter_map(|(index, _, _)| index)
        .collect()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HaError::io("starting a runtime"))
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return Err(HaError::Timeout {
                what: what.to_owned(),
                seconds: limit.as_secs(),
                detail: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
