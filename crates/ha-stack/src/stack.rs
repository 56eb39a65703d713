//! The stack's folder and processes. Binaries, the servers' user, files, passwords, roles and
//! URLs come from `counseling-provision`, as for every PostgreSQL of ours; Patroni runs `initdb`.
//!
//! ```text
//! dir/                        ours (0710 for the servers' group when they run as another user)
//!   secrets/, logs/           ours, 0700: one 0600 file per password; every server's output
//!                             (the database roles', etcd's root and `patroni` users', and the
//!                             Patroni REST API's credentials)
//!   patroni.yml, haproxy.cfg  ours, handed to the servers' user, which only reads them
//!   etcd/, node1/, node2/     made empty by us, handed to the servers' user, which writes there
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use counseling_config::DatabaseUrl;
use counseling_provision::files::{ServerUser, private_folder, private_temp_folder, write_private};
use counseling_provision::password::generate_password;
use counseling_provision::process::{self, Signal, spawn_logged};
use counseling_provision::roles::{Application, provision_application};
use counseling_provision::server::{loopback_listeners, postmaster_pid, scratch_parent};
use counseling_provision::{SUPERUSER, block_on, url::local_url, wait::wait_until};
use sea_orm::sqlx::postgres::PgConnectOptions;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::rest::{self, Member};
use crate::{HaError, NODES, Ports, Result};

/// The service's role: reads and writes rows of the application's tables, nothing else.
pub const APP_ROLE: &str = "counseling";
/// The migrations' role: owns the application database and its schema, is not a superuser.
pub const OWNER_ROLE: &str = "counseling_owner";
pub const APP_DATABASE: &str = "counseling_platform";

const PATRONI_CONFIG: &str = include_str!("../../../ha/patroni.yml");
const HAPROXY_CONFIG: &str = include_str!("../../../ha/haproxy.cfg");
/// The password files under `secrets/`, one per role the stack needs: the database's roles,
/// etcd's users and the Patroni REST API's user.
const ROLES: [&str; 8] = [
    "superuser",
    "replication",
    "rewind",
    "owner",
    "app",
    "etcd-root",
    "etcd-patroni",
    "rest-api",
];
/// Patroni's keys in etcd, and the user (and role of the same name) that may read and write
/// them, and nothing else. etcd's `root` user only sets this up.
pub const ETCD_NAMESPACE: &str = "/counseling-ha/";
pub const ETCD_USER: &str = "patroni";
/// The user every call that changes state on a Patroni REST API must name (basic
/// authentication); reads (`GET /cluster`, HAProxy's checks) need none.
pub const REST_API_USER: &str = "ha-admin";
/// etcd's client socket while its users are set up, in `etcd/` (etcd wants `host:port`, and
/// takes the host as a path relative to its working folder).
const ETCD_SETUP_SOCKET: &str = "setup.sock:0";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `etcdctl` reaches etcd: the socket it is set up on, or its client port.
#[derive(Debug, Clone, Copy)]
enum EtcdEndpoint {
    Setup,
    Client,
}

/// Where and how to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The stack's folder is created inside this one, under a random name.
    pub parent_dir: PathBuf,
    pub ports: Ports,
    /// PostgreSQL's server binaries, found as everywhere else.
    pub pg_bin_dir: PathBuf,
    /// Where the servers' logs are copied if the stack fails to come up (its folder, which
    /// holds the passwords, is deleted).
    pub logs_on_failure: Option<PathBuf>,
}

impl StackOptions {
    pub fn new(ports: Ports) -> Result<Self> {
        let pg_bin_dir = counseling_provision::binaries::server_binaries()?;
        let parent_dir = scratch_parent();
        Ok(Self {
            parent_dir,
            ports,
            pg_bin_dir,
            logs_on_failure: None,
        })
    }
}

/// What another process needs to find, inspect and stop a running stack (no passwords: those
/// stay in the stack's 0600 files). Pids are 0 (`None`) for what does not run.
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
    user: ServerUser,
    /// Children started by this process, by pid: reaped when they stop, and a server that exits
    /// while we wait for it is noticed at once.
    children: HashMap<u32, (String, Child)>,
}

impl HaStack {
    /// Creates the folder, passwords and configuration, starts etcd, both Patroni nodes and
    /// HAProxy, and waits until a primary with a synchronous standby serves through HAProxy and
    /// the application's roles and database exist. About 15 s.
    pub fn start(options: &StackOptions) -> Result<Self> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        for program in ["etcd", "etcdctl", "patroni", "patronictl", "haproxy"] {
            if !std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
                let install =
                    "apt-get install patroni etcd-server etcd-client python3-etcd haproxy";
                return Err(HaError::Failed(format!(
                    "{program} is not installed ({install})"
                )));
            }
        }
        let dir = private_temp_folder(&options.parent_dir, "counseling-ha-")?;
        let pg_bin_dir = options.pg_bin_dir.clone();
        let patroni = [None; NODES];
        let saved = SavedStack {
            dir,
            ports: options.ports,
            pg_bin_dir,
            etcd: 0,
            haproxy: 0,
            patroni,
        };
        let mut stack = Self::attach(saved)?;
        stack.bring_up().inspect_err(|_| {
            if let Some(into) = &options.logs_on_failure {
                stack.copy_logs(into);
            }
            let _ = stack.stop();
        })?;
        Ok(stack)
    }

    fn bring_up(&mut self) -> Result<()> {
        let dir = self.saved.dir.clone();
        self.user.may_enter(&dir)?;
        private_folder(&dir.join("logs"))?;
        private_folder(&dir.join("secrets"))?;
        for role in ROLES {
            let file = dir.join("secrets").join(format!("{role}.password"));
            write_private(&file, generate_password()?.expose_secret())?;
        }
        for (name, contents) in [
            ("patroni.yml", PATRONI_CONFIG),
            ("haproxy.cfg", HAPROXY_CONFIG),
        ] {
            write_private(&dir.join(name), contents)?;
            self.user.give(&dir.join(name))?;
        }
        for name in std::iter::once("etcd".to_owned()).chain((0..NODES).map(Self::node_name)) {
            private_folder(&dir.join(&name))?;
            self.user.give(&dir.join(&name))?;
        }
        self.start_etcd()?;
        for index in 0..NODES {
            self.start_node(index)?;
        }
        self.wait_until_healthy(READY_TIMEOUT)?;
        self.start_haproxy()?;
        self.create_application_database()
    }

    /// Waits until `done`, failing early if a server we started has exited (its log says why),
    /// and saying on timeout what the cluster looked like.
    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let waited = wait_until(what, limit, || {
            let exited = self.children.values_mut().find_map(|(name, child)| {
                (!matches!(child.try_wait(), Ok(None))).then(|| name.clone())
            });
            match exited {
                Some(name) => Some(Err(HaError::Failed(format!("{name} exited (see its log)")))),
                None => done(self).then_some(Ok(())),
            }
        });
        match waited {
            Err(HaError::Timeout { what, seconds }) => {
                let what = format!("{what} (members: {:?})", self.members());
                Err(HaError::Timeout { what, seconds })
            }
            other => other?,
        }
    }

    /// Finds a stack started by another process.
    pub fn attach(saved: SavedStack) -> Result<Self> {
        let user = ServerUser::of_this_process()?;
        Ok(Self {
            saved,
            user,
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

    fn log(&self, name: &str) -> PathBuf {
        self.saved.dir.join("logs").join(format!("{name}.log"))
    }

    pub fn patroni_log(&self, index: usize) -> PathBuf {
        self.log(&Self::node_name(index))
    }

    /// Copies the servers' logs (no secrets) into `into`, for a look after the stack is gone.
    /// Best effort, and as every write of ours: a log of an earlier run there is replaced, but
    /// a symlink planted in its place is removed, never followed, and a folder that belongs to
    /// another user is not written at all (`write_private`).
    pub fn copy_logs(&self, into: &Path) {
        let _ = std::fs::create_dir_all(into);
        for log in std::fs::read_dir(self.saved.dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read(log.path()) else {
                continue;
            };
            let (copy, text) = (into.join(log.file_name()), String::from_utf8_lossy(&text));
            if let Err(HaError::Io { source, .. }) = write_private(&copy, &text)
                && source.kind() == std::io::ErrorKind::AlreadyExists
            {
                // In a folder of ours or root's (write_private checked): remove what is there,
                // the link itself if it is one, and write anew.
                let _ = std::fs::remove_file(&copy);
                let _ = write_private(&copy, &text);
            }
        }
    }

    /// A password of the stack: one of [`ROLES`], from its 0600 file in `secrets/`.
    pub fn password(&self, role: &str) -> Result<SecretString> {
        let path = self
            .saved
            .dir
            .join("secrets")
            .join(format!("{role}.password"));
        let read = std::fs::read_to_string(&path).map(SecretString::from);
        read.map_err(HaError::io(format!("reading the {role} password")))
    }

    /// The service's URL (rows only) through HAProxy's primary port. It holds the password:
    /// never print or log it.
    pub fn app_url(&self) -> Result<DatabaseUrl> {
        self.app_url_on(self.saved.ports.primary())
    }

    /// The service's URL on another port (HAProxy's replica port, a node's own).
    pub fn app_url_on(&self, port: u16) -> Result<DatabaseUrl> {
        self.url(port, APP_ROLE, "app", APP_DATABASE)
    }

    /// The service's URL naming both nodes directly, as a libpq host list with
    /// `target_session_attrs=read-write` (the route without HAProxy): a connection tries the
    /// nodes in order, each within `connect_timeout`, and keeps the one that takes writes. It
    /// holds the password.
    pub fn app_url_direct(&self) -> Result<DatabaseUrl> {
        self.direct_url(APP_ROLE, "app")
    }

    /// The owner's URL naming both nodes directly, as [`HaStack::app_url_direct`].
    pub fn owner_url_direct(&self) -> Result<DatabaseUrl> {
        self.direct_url(OWNER_ROLE, "owner")
    }

    fn direct_url(&self, user: &str, secret: &str) -> Result<DatabaseUrl> {
        let ports = self.saved.ports;
        let password = self.password(secret)?;
        // A node that does not answer is given up in time to try the other (the service refuses
        // a host list without this).
        let parameters = [
            ("target_session_attrs", "read-write"),
            ("connect_timeout", "2"),
        ];
        let url = local_url(
            ports.postgres(0),
            user,
            Some(&password),
            APP_DATABASE,
            &parameters,
        )?;
        let hosts: Vec<(&str, u16)> = (0..NODES)
            .map(|index| ("127.0.0.1", ports.postgres(index)))
            .collect();
        url.with_hosts(&hosts)
            .map_err(|error| HaError::Failed(format!("the nodes' host list {error}")))
    }

    /// The owner's URL through HAProxy's primary port: what the migrations use.
    pub fn owner_url(&self) -> Result<DatabaseUrl> {
        self.url(
            self.saved.ports.primary(),
            OWNER_ROLE,
            "owner",
            APP_DATABASE,
        )
    }

    /// Superuser connection options for `port` (a node's, or HAProxy's) and `database`.
    pub fn superuser_options(&self, port: u16, database: &str) -> Result<PgConnectOptions> {
        Ok(self
            .url(port, SUPERUSER, "superuser", database)?
            .connect_options())
    }

    fn url(&self, port: u16, user: &str, secret: &str, database: &str) -> Result<DatabaseUrl> {
        local_url(port, user, Some(&self.password(secret)?), database, &[])
    }

    /// `program` as the servers' user, in the stack's folder (etcd in its own), with nothing of
    /// our environment but PATH and `variables`; its output goes to `logs/<name>.log`, appended
    /// to (a restarted node's log keeps what happened before: a test reads it).
    fn spawn(
        &mut self,
        name: &str,
        program: &str,
        args: &[&Path],
        variables: &[(&str, String)],
    ) -> Result<u32> {
        let mut command = self.user.command(program);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dir = match name {
            "etcd" => self.saved.dir.join("etcd"),
            _ => self.saved.dir.clone(),
        };
        command
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", path);
        command
            .env("LC_ALL", "C.UTF-8")
            .envs(variables.iter().map(|(name, value)| (name, value)));
        let child = spawn_logged(command, &self.log(name), false)?;
        let pid = child.id();
        self.children.insert(pid, (name.to_owned(), child));
        Ok(pid)
    }

    /// Starts etcd with its users and authentication set up before any other user of this
    /// machine can reach it: first serving clients on a unix socket in its own folder (which
    /// only root and the servers' user may enter), where they are set up; then, restarted, on
    /// its TCP port, where every client must name a user.
    fn start_etcd(&mut self) -> Result<()> {
        self.saved.etcd = self.spawn_etcd(&format!("unix://{ETCD_SETUP_SOCKET}"))?;
        self.wait_for("etcd answers on its own socket", READY_TIMEOUT, |stack| {
            let health = stack.etcdctl_at(EtcdEndpoint::Setup, &["endpoint", "health"], None, None);
            health.is_ok_and(|output| output.status.success())
        })?;
        self.enable_etcd_authentication()?;
        let setup = std::mem::take(&mut self.saved.etcd);
        self.stop_process(setup, Signal::Terminate, Some(Signal::Kill));
        let port = self.saved.ports.etcd_client();
        self.saved.etcd = self.spawn_etcd(&format!("http://127.0.0.1:{port}"))?;
        self.wait_for("etcd answers on its port", READY_TIMEOUT, |stack| {
            let health = rest::get(port, "/health");
            let healthy =
                health.is_some_and(|reply| reply.status == 200 && reply.body.contains("true"));
            // And the port is etcd's, not another program's that took it while etcd was set up
            // (Patroni would hand that one its password): its listener belongs to the servers'
            // user, as etcd does (no other user can listen on a port that user holds). Only
            // Linux says; elsewhere, trusted.
            let servers = stack.user.uid();
            let etcds = loopback_listeners(port).is_none_or(|owners| {
                !owners.is_empty() && owners.iter().all(|&owner| owner == servers)
            });
            healthy && etcds
        })
    }

    /// etcd serving clients at `client` (a URL). Its peers' API (raft, which takes no user) is a
    /// unix socket in its folder: a single member has no peer to reach it over the network.
    fn spawn_etcd(&mut self, client: &str) -> Result<u32> {
        let peer = "unix://peer.sock:0".to_owned();
        let data = self.saved.dir.join("etcd/data").display().to_string();
        // Not secret: addresses and a folder. etcd reads ETCD_* variables like its flags.
        let variables = [
            ("ETCD_NAME", "etcd1".to_owned()),
            ("ETCD_DATA_DIR", data),
            ("ETCD_LISTEN_CLIENT_URLS", client.to_owned()),
            ("ETCD_ADVERTISE_CLIENT_URLS", client.to_owned()),
            ("ETCD_LISTEN_PEER_URLS", peer.clone()),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer.clone()),
            ("ETCD_INITIAL_CLUSTER", format!("etcd1={peer}")),
            ("ETCD_INITIAL_CLUSTER_STATE", "new".to_owned()),
            ("ETCD_INITIAL_CLUSTER_TOKEN", "counseling-ha".to_owned()),
        ];
        self.spawn("etcd", "etcd", &[], &variables)
    }

    /// Locks etcd before any Patroni talks to it: a `root` user, a [`ETCD_USER`] whose role may
    /// read and write [`ETCD_NAMESPACE`] only, then v3 authentication, after which no client
    /// without a user may read or write. Passwords reach `etcdctl` on its standard input.
    fn enable_etcd_authentication(&self) -> Result<()> {
        let (root, patroni) = (self.password("etcd-root")?, self.password("etcd-patroni")?);
        let steps = [
            ("user add root --interactive=false".to_owned(), Some(&root)),
            (
                format!("user add {ETCD_USER} --interactive=false"),
                Some(&patroni),
            ),
            (format!("role add {ETCD_USER}"), None),
            (
                format!(
                    "role grant-permission {ETCD_USER} --prefix=true readwrite {ETCD_NAMESPACE}"
                ),
                None,
            ),
            (format!("user grant-role {ETCD_USER} {ETCD_USER}"), None),
            ("auth enable".to_owned(), None),
        ];
        // No argument holds a space: each step is split on spaces.
        for (step, input) in steps {
            let args: Vec<&str> = step.split(' ').collect();
            let output = self.etcdctl_at(EtcdEndpoint::Setup, &args, None, input)?;
            if !output.status.success() {
                let error = String::from_utf8_lossy(&output.stderr);
                let error = error.trim();
                return Err(HaError::Failed(format!("etcdctl {step} failed: {error}")));
            }
        }
        Ok(())
    }

    /// `etcdctl args` against the stack's etcd as `user` (name, password), or as no one, with
    /// `input` on its standard input. Nothing of our environment reaches it but PATH (no
    /// ETCDCTL_* of the caller's), and the password goes in its environment, never on its
    /// command line.
    pub fn etcdctl(
        &self,
        args: &[&str],
        user: Option<(&str, &SecretString)>,
        input: Option<&SecretString>,
    ) -> Result<std::process::Output> {
        self.etcdctl_at(EtcdEndpoint::Client, args, user, input)
    }

    fn etcdctl_at(
        &self,
        endpoint: EtcdEndpoint,
        args: &[&str],
        user: Option<(&str, &SecretString)>,
        input: Option<&SecretString>,
    ) -> Result<std::process::Output> {
        let mut command = Command::new("etcdctl");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let endpoint = match endpoint {
            // A unix socket's address is a path relative to the working folder.
            EtcdEndpoint::Setup => {
                command.current_dir(self.saved.dir.join("etcd"));
                format!("unix://{ETCD_SETUP_SOCKET}")
            }
            EtcdEndpoint::Client => format!("http://127.0.0.1:{}", self.saved.ports.etcd_client()),
        };
        command
            .env_clear()
            .env("PATH", path)
            .env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", endpoint)
            .env("ETCDCTL_DIAL_TIMEOUT", "3s")
            .env("ETCDCTL_COMMAND_TIMEOUT", "5s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((name, password)) = user {
            command
                .env("ETCDCTL_USER", name)
                .env("ETCDCTL_PASSWORD", password.expose_secret());
        }
        let mut child = command
            .spawn()
            .map_err(HaError::io("running etcdctl (apt-get install etcd-client)"))?;
        // Written, then closed (dropped): etcdctl reads the password up to the line's end.
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            use std::io::Write;
            writeln!(stdin, "{}", input.expose_secret())
                .map_err(HaError::io("writing to etcdctl"))?;
        }
        child
            .wait_with_output()
            .map_err(HaError::io("running etcdctl"))
    }

    /// The REST API's credentials: every call that changes state must carry them.
    pub fn rest_api_credentials(&self) -> Result<(&'static str, SecretString)> {
        Ok((REST_API_USER, self.password("rest-api")?))
    }

    /// What Patroni and `patronictl` need to find etcd and the cluster, and to authenticate to
    /// etcd and to the REST API (Patroni reads `PATRONI_*` like its configuration file; the
    /// environment of a process is readable only by its user and root, unlike its command line).
    fn patroni_environment(&self) -> Result<Vec<(&'static str, String)>> {
        let etcd = format!("127.0.0.1:{}", self.saved.ports.etcd_client());
        let (rest_user, rest_password) = self.rest_api_credentials()?;
        Ok(vec![
            ("PATRONI_NAMESPACE", ETCD_NAMESPACE.to_owned()),
            ("PATRONI_ETCD3_HOSTS", etcd),
            ("PATRONI_ETCD3_USERNAME", ETCD_USER.to_owned()),
            (
                "PATRONI_ETCD3_PASSWORD",
                self.password("etcd-patroni")?.expose_secret().to_owned(),
            ),
            ("PATRONI_RESTAPI_USERNAME", rest_user.to_owned()),
            (
                "PATRONI_RESTAPI_PASSWORD",
                rest_password.expose_secret().to_owned(),
            ),
        ])
    }

    /// Starts node `index`'s Patroni (again, after [`HaStack::kill_node`]: it rejoins as a
    /// replica, rewinding its data with pg_rewind if it diverged).
    pub fn start_node(&mut self, index: usize) -> Result<()> {
        let (ports, name) = (self.saved.ports, Self::node_name(index));
        let node = |file: &str| self.saved.dir.join(&name).join(file).display().to_string();
        let (rest, postgres) = (ports.rest(index), ports.postgres(index));
        let mut variables = vec![
            ("HOME", node("")),
            ("PATRONI_NAME", name.clone()),
            ("PATRONI_RESTAPI_LISTEN", format!("127.0.0.1:{rest}")),
            (
                "PATRONI_RESTAPI_CONNECT_ADDRESS",
                format!("127.0.0.1:{rest}"),
            ),
            ("PATRONI_POSTGRESQL_LISTEN", format!("127.0.0.1:{postgres}")),
            (
                "PATRONI_POSTGRESQL_CONNECT_ADDRESS",
                format!("127.0.0.1:{postgres}"),
            ),
            ("PATRONI_POSTGRESQL_DATA_DIR", node("data")),
            ("PATRONI_POSTGRESQL_PGPASS", node("pgpass")),
            (
                "PATRONI_POSTGRESQL_BIN_DIR",
                self.saved.pg_bin_dir.display().to_string(),
            ),
            ("PATRONI_SUPERUSER_USERNAME", SUPERUSER.to_owned()),
        ];
        variables.extend(self.patroni_environment()?);
        // In the environment, not on the command line (see patroni_environment).
        for (role, variable) in [
            ("superuser", "PATRONI_SUPERUSER_PASSWORD"),
            ("replication", "PATRONI_REPLICATION_PASSWORD"),
            ("rewind", "PATRONI_REWIND_PASSWORD"),
        ] {
            variables.push((variable, self.password(role)?.expose_secret().to_owned()));
        }
        let config = self.saved.dir.join("patroni.yml");
        self.saved.patroni[index] = Some(self.spawn(&name, "patroni", &[&config], &variables)?);
        Ok(())
    }

    fn start_haproxy(&mut self) -> Result<()> {
        let ports = self.saved.ports;
        let variables = [
            ("HA_PRIMARY_PORT", ports.primary()),
            ("HA_REPLICA_PORT", ports.replica()),
            ("HA_STATS_PORT", ports.haproxy_stats()),
            ("HA_NODE1_PG_PORT", ports.postgres(0)),
            ("HA_NODE1_REST_PORT", ports.rest(0)),
            ("HA_NODE2_PG_PORT", ports.postgres(1)),
            ("HA_NODE2_REST_PORT", ports.rest(1)),
        ];
        let variables = variables.map(|(name, port)| (name, port.to_string()));
        // -db: stay in the foreground, so that the pid we hold is HAProxy's.
        let args = [
            Path::new("-db"),
            Path::new("-f"),
            &self.saved.dir.join("haproxy.cfg"),
        ];
        self.saved.haproxy = self.spawn("haproxy", "haproxy", &args, &variables)?;
        self.wait_for(
            "HAProxy leads to the primary only",
            READY_TIMEOUT,
            |stack| {
                let leader = stack.leader();
                leader.is_some_and(|leader| stack.haproxy_primary_targets() == [leader])
            },
        )
    }

    /// The nodes HAProxy's primary port leads to now (its servers in state UP, from the CSV
    /// statistics); empty until every server has been checked at least once (before that,
    /// HAProxy assumes all of them up).
    pub fn haproxy_primary_targets(&self) -> Vec<usize> {
        let stats = rest::get(self.saved.ports.haproxy_stats(), "/stats;csv");
        let Some(reply) = stats.filter(|reply| reply.status == 200) else {
            return Vec::new();
        };
        // Columns: pxname, svname, ..., status (18th), ..., check_status (37th).
        let rows = reply
            .body
            .lines()
            .map(|line| line.split(',').collect::<Vec<&str>>());
        let servers: Vec<Vec<&str>> = rows
            .filter(|fields| {
                fields.len() > 36 && fields[0] == "primary" && fields[1].starts_with("node")
            })
            .collect();
        let checked = |fields: &Vec<&str>| !fields[36].is_empty() && !fields[36].starts_with("INI");
        if servers.len() != NODES || !servers.iter().all(checked) {
            return Vec::new();
        }
        let up = servers.iter().filter(|fields| fields[17] == "UP");
        up.filter_map(|fields| Self::node_index(fields[1]))
            .collect()
    }

    /// The application's two roles and its database, made through HAProxy as the superuser.
    fn create_application_database(&self) -> Result<()> {
        let admin = self.superuser_options(self.saved.ports.primary(), "postgres")?;
        let (owner, app) = (self.password("owner")?, self.password("app")?);
        block_on(async move {
            let (owner, service) = ((OWNER_ROLE, &owner), (APP_ROLE, &app));
            let application = Application {
                database: APP_DATABASE,
                owner,
                service,
                extensions: &[],
            };
            provision_application(&admin, &application).await
        })
    }

    /// The members as the first Patroni REST API that answers sees them.
    pub fn members(&self) -> Option<Vec<Member>> {
        (0..NODES).find_map(|index| rest::cluster_members(self.saved.ports.rest(index)))
    }

    /// The index of the running leader, if there is one.
    pub fn leader(&self) -> Option<usize> {
        let members = self.members()?;
        let leader = members.iter().find(|member| member.is_running_leader())?;
        Self::node_index(&leader.name)
    }

    /// Whether the cluster is whole: a running leader, and the other node its synchronous
    /// standby, confirmed by that node's own REST API (`GET /sync` answers 200).
    pub fn is_healthy(&self) -> bool {
        let Some(members) = self.members() else {
            return false;
        };
        let leaders = members.iter().filter(|m| m.is_running_leader()).count();
        let standby = members.iter().find(|m| m.is_sync_standby());
        let standby = standby.and_then(|member| Self::node_index(&member.name));
        let sync = |index| rest::get(self.saved.ports.rest(index), "/sync");
        leaders == 1
            && members.len() == NODES
            && standby
                .and_then(sync)
                .is_some_and(|reply| reply.status == 200)
    }

    /// Waits at most `limit` for a leader with a synchronous standby; returns how long it took.
    pub fn wait_until_healthy(&mut self, limit: Duration) -> Result<Duration> {
        let started = std::time::Instant::now();
        self.wait_for(
            "a leader with a synchronous standby",
            limit,
            Self::is_healthy,
        )?;
        Ok(started.elapsed())
    }

    /// A planned switchover with `patronictl switchover --force` from the leader to the other
    /// node.
    pub fn switchover(&self) -> Result<()> {
        let leader = self
            .leader()
            .ok_or_else(|| HaError::Failed("no leader to switch over".into()))?;
        let (from, to) = (
            Self::node_name(leader),
            Self::node_name((leader + 1) % NODES),
        );
        // patronictl authenticates to the REST API with restapi.authentication, which Patroni
        // 3.0 takes for its `ctl` credentials too.
        let output = Command::new("patronictl")
            .arg("-c")
            .arg(self.saved.dir.join("patroni.yml"))
            .args([
                "switchover",
                "--force",
                "--leader",
                &from,
                "--candidate",
                &to,
            ])
            .envs(self.patroni_environment()?)
            .stdin(Stdio::null())
            .output()
            .map_err(HaError::io("running patronictl"))?;
        // patronictl exits 0 when the REST API refuses (it prints the status), and falls back
        // to writing etcd when the API does not answer: only the leader's own word counts.
        let said = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && said.contains("Successfully switched over") {
            return Ok(());
        }
        let why = said
            .lines()
            .find(|line| line.contains("ailed") || line.contains("falling back"));
        let why = why.unwrap_or_default().trim();
        Err(HaError::Failed(format!(
            "patronictl switchover failed: {why}"
        )))
    }

    /// The postmaster of node `index`, if it runs.
    pub fn postmaster_pid(&self, index: usize) -> Option<u32> {
        postmaster_pid(&self.saved.dir.join(Self::node_name(index)).join("data"))
    }

    /// An unplanned failure: SIGKILL to node `index`'s Patroni, then to its PostgreSQL.
    pub fn kill_node(&mut self, index: usize) -> Result<()> {
        let postmaster = self.postmaster_pid(index);
        for pid in [self.saved.patroni[index].take(), postmaster]
            .into_iter()
            .flatten()
        {
            self.stop_process(pid, Signal::Kill, None);
        }
        Ok(())
    }

    /// Sends `gently` to `pid` if it is a live process of this stack, waits for it to go, and
    /// sends `forcibly` if it does not within the stop timeout. Every process of the stack works
    /// in its folder or below (PostgreSQL in its data folder): a stale pid, reused by another
    /// program after a reboot, is never signalled.
    fn stop_process(&mut self, pid: u32, gently: Signal, forcibly: Option<Signal>) {
        for signal in std::iter::once(gently).chain(forcibly) {
            if !self.is_live_and_ours(pid) || process::signal_and_wait(pid, signal, STOP_TIMEOUT) {
                if let Some((_, mut child)) = self.children.remove(&pid) {
                    let _ = child.wait();
                }
                return;
            }
        }
    }

    /// Whether `pid` is a process of this stack that has not exited. A child of ours that
    /// exited and was reaped (`wait_for` reaps) left its pid free for any other program: it is
    /// forgotten here, never signalled. Any other pid (from the state file) must work in the
    /// stack's folder.
    fn is_live_and_ours(&mut self, pid: u32) -> bool {
        match self.children.get_mut(&pid) {
            Some((_, child)) => {
                let running = matches!(child.try_wait(), Ok(None));
                if !running {
                    self.children.remove(&pid);
                }
                running
            }
            None => process::is_process_in(pid, &self.saved.dir),
        }
    }

    /// Stops HAProxy, both nodes (Patroni stops its PostgreSQL) and etcd, then deletes the
    /// folder. Whatever does not stop when asked is killed.
    pub fn stop(&mut self) -> Result<()> {
        let haproxy = std::mem::take(&mut self.saved.haproxy);
        self.stop_process(haproxy, Signal::Terminate, Some(Signal::Kill));
        // Both nodes at once: a leader waiting for its synchronous standby must not outlive it.
        let patronis: Vec<u32> = self
            .saved
            .patroni
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for &pid in &patronis {
            // As in `stop_process`: a pid from an old state file may be anyone's now.
            if self.is_live_and_ours(pid) {
                let _ = process::signal(pid, Signal::Terminate);
            }
        }
        for pid in patronis {
            self.stop_process(pid, Signal::Terminate, Some(Signal::Kill));
        }
        // A PostgreSQL whose Patroni was killed is still running: stop it (fast, then crash).
        let postmasters: Vec<u32> = (0..NODES).filter_map(|i| self.postmaster_pid(i)).collect();
        for pid in postmasters {
            self.stop_process(pid, Signal::Interrupt, Some(Signal::Quit));
        }
        let etcd = std::mem::take(&mut self.saved.etcd);
        self.stop_process(etcd, Signal::Terminate, Some(Signal::Kill));
        // Only ever a folder we created (the state file could have been edited); gone already
        // is fine: /dev/shm does not survive a reboot.
        let name = self
            .saved
            .dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        if !name.is_some_and(|name| name.starts_with("counseling-ha-")) {
            return Ok(());
        }
        match std::fs::remove_dir_all(&self.saved.dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(HaError::io("removing the stack folder")(error))
            }
            _ => Ok(()),
        }
    }

    /// Every process of the stack that is still alive, with its name.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes = vec![
            ("etcd".into(), self.saved.etcd),
            ("haproxy".into(), self.saved.haproxy),
        ];
        for index in 0..NODES {
            let name = Self::node_name(index);
            let patroni = self.saved.patroni[index].map(|pid| (format!("patroni {name}"), pid));
            let postgres = self
                .postmaster_pid(index)
                .map(|pid| (format!("postgres {name}"), pid));
            processes.extend(patroni.into_iter().chain(postgres));
        }
        processes.retain(|&(_, pid)| pid != 0 && process::is_process_in(pid, &self.saved.dir));
        processes
    }
}
