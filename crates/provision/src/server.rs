//! A PostgreSQL server of ours, in a folder of ours:
//!
//! ```text
//! root/             ours: 0700, or 0710 for the server's group when it runs as another user
//!   data/           made empty by us, handed to the server's user; initdb fills it
//!   pg_hba.conf     ours, handed over: the server reads it (`hba_file`)
//!   server.log      ours: we open it, the server writes to what we hand it
//! ```
//!
//! It listens on 127.0.0.1 only, with no unix socket, and every login proves a password.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::files::{ServerUser, write_private};
use crate::process::{self, Signal};
use crate::{ProvisionError, Result};

/// How a login must come, besides proving a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaTransport {
    /// TCP, with TLS or without.
    Any,
    /// TLS only.
    Tls,
    /// TLS only, with a client certificate for the role (`clientcert=verify-full`).
    TlsWithClientCertificate,
}

/// `pg_hba.conf` of the servers we start ourselves (Patroni writes the HA stack's, from
/// `ha/patroni.yml`): a password (SCRAM) over TCP from this machine, nothing else; with
/// `replication`, the superuser's replication connections too (a standby's).
pub fn hba(transport: HbaTransport, replication: bool) -> String {
    let (kind, options) = match transport {
        HbaTransport::Any => ("host", ""),
        HbaTransport::Tls => ("hostssl", ""),
        HbaTransport::TlsWithClientCertificate => ("hostssl", " clientcert=verify-full"),
    };
    let mut rules = format!("{kind} all all 127.0.0.1/32 scram-sha-256{options}\n");
    if replication {
        rules.push_str(&format!(
            "{kind} replication postgres 127.0.0.1/32 scram-sha-256{options}\n"
        ));
    }
    rules
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How a started server relates to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Dies with this process, even when it is killed (test clusters).
    Tied,
    /// Outlives this process, in a process group of its own (the project-local cluster).
    Detached,
}

/// A server's folder, binaries, port and settings; see the module's layout.
#[derive(Debug)]
pub struct Server {
    pub bin_dir: PathBuf,
    pub root: PathBuf,
    pub port: u16,
    pub user: ServerUser,
    /// `name=value` settings after our own (later ones win).
    pub settings: Vec<String>,
    /// The postmaster, when this process started it.
    postmaster: Mutex<Option<Child>>,
}

impl Server {
    pub fn new(bin_dir: PathBuf, root: PathBuf, port: u16, user: ServerUser) -> Self {
        let settings = Vec::new();
        Self {
            bin_dir,
            root,
            port,
            user,
            settings,
            postmaster: Mutex::new(None),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Whether `initdb` has run here.
    pub fn initialised(&self) -> bool {
        self.data().join("PG_VERSION").is_file()
    }

    /// Runs `initdb` (superuser `postgres` with `password`, UTF-8, `C.UTF-8`, SCRAM) and writes
    /// `hba` as the server's `pg_hba.conf`. The password reaches initdb through a 0600 file,
    /// deleted at once, never a command line (every local user can read those).
    pub fn init(&self, password: &SecretString, hba: &str, no_sync: bool) -> Result<()> {
        crate::files::private_folder(&self.data())?;
        self.user.give(&self.data())?;
        self.user.may_enter(&self.root)?;
        self.write_hba(hba)?;
        let pwfile = self.root.join("initdb-password");
        write_private(&pwfile, password.expose_secret())?;
        self.user.give(&pwfile)?;
        let output = self
            .user
            .command(self.bin_dir.join("initdb"))
            .arg("--pgdata")
            .arg(self.data())
            .args([
                "--username",
                crate::SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            .arg("--auth=scram-sha-256")
            .args(no_sync.then_some("--no-sync"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_file(&pwfile);
        succeeded("initdb", output)
    }

    /// Fills this server's data folder with a base backup of the server on 127.0.0.1:`primary`
    /// (`pg_basebackup -R`: a standby that streams from it), as the superuser with `password`,
    /// which reaches `pg_basebackup` through its environment, never a command line. The primary
    /// must accept the superuser's replication connections from 127.0.0.1.
    pub fn base_backup(&self, primary: u16, password: &SecretString) -> Result<()> {
        crate::files::private_folder(&self.data())?;
        self.user.give(&self.data())?;
        self.user.may_enter(&self.root)?;
        let output = self
            .user
            .command(self.bin_dir.join("pg_basebackup"))
            .env_clear()
            .env("PGPASSWORD", password.expose_secret())
            .args(["--host", "127.0.0.1", "--port", &primary.to_string()])
            .args(["--username", crate::SUPERUSER, "--pgdata"])
            .arg(self.data())
            .args(["--write-recovery-conf", "--wal-method=stream"])
            .args(["--checkpoint=fast", "--no-sync"])
            .stdin(Stdio::null())
            .output();
        succeeded("pg_basebackup", output)
    }

    /// (Re)writes `pg_hba.conf` in our folder and hands it to the server's user.
    pub fn write_hba(&self, hba: &str) -> Result<()> {
        let path = self.root.join("pg_hba.conf");
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(ProvisionError::io("replacing pg_hba.conf")(error));
            }
            _ => {}
        }
        write_private(&path, hba)?;
        self.user.give(&path)
    }

    /// Starts the postmaster and waits until it accepts connections.
    pub fn start(&self, lifetime: Lifetime) -> Result<()> {
        let postgres = self.bin_dir.join("postgres");
        let mut command = match lifetime {
            Lifetime::Tied => process::tied_command(&self.user, &postgres),
            Lifetime::Detached => self.user.command(&postgres),
        };
        let hba = format!("hba_file={}", self.root.join("pg_hba.conf").display());
        let ours = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            hba.as_str(),
        ];
        command
            .arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string());
        for setting in ours
            .iter()
            .copied()
            .chain(self.settings.iter().map(String::as_str))
        {
            command.args(["-c", setting]);
        }
        let tied = lifetime == Lifetime::Tied;
        *self.postmaster() = Some(process::spawn_logged(command, &self.log_path(), tied)?);
        self.wait_until_ready(lifetime)
    }

    /// Ready: `postmaster.pid` says so and the port accepts connections. Fails at once, with
    /// the log's end, if the postmaster exits; on timeout, a test's server is stopped.
    fn wait_until_ready(&self, lifetime: Lifetime) -> Result<()> {
        let pid_file = self.data().join("postmaster.pid");
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut exited = None;
        let ready = crate::wait::wait_until("postgres is ready", READY_TIMEOUT, || {
            if let Some(child) = self.postmaster().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            text.lines()
                .nth(7)
                .is_some_and(|status| status.trim() == "ready")
                && std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
                    .is_ok()
        });
        let failure = match (ready, exited, lifetime) {
            (Ok(()), None, _) => return Ok(()),
            (_, Some(status), _) => format!("postgres exited during start-up ({status})"),
            (Err(error), None, Lifetime::Tied) => error.to_string(),
            (Err(error), None, Lifetime::Detached) => {
                format!("{error}; it is still starting (see its log): try again later")
            }
        };
        // A test's server is not left starting behind a failure; the project-local one is (a
        // long crash recovery, stopped, would start over at the next try).
        if exited.is_none() && lifetime == Lifetime::Tied {
            let _ = self.stop(Signal::Quit);
        }
        *self.postmaster() = None;
        Err(ProvisionError::Failed(format!(
            "{failure}; its log:\n{}",
            self.log_tail()
        )))
    }

    /// The last 20 lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The running postmaster's pid: ours, or the one `postmaster.pid` names if that process
    /// lives and works in this data folder.
    pub fn pid(&self) -> Option<u32> {
        match self.postmaster().as_ref() {
            Some(child) => Some(child.id()),
            None => postmaster_pid(&self.data()),
        }
    }

    /// The port the running postmaster listens on, as its `postmaster.pid` says (line 4).
    pub fn running_port(&self) -> Option<u16> {
        self.pid()?;
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().nth(3)?.trim().parse().ok()
    }

    /// Stops the server: `Interrupt` is a fast shutdown (sessions ended, new ones refused),
    /// `Quit` an immediate one, like a crash (recovery at the next start). Waits until it has
    /// gone (a frozen server is thawed first: it could not act on the signal), at most
    /// `STOP_TIMEOUT`: then it says the server did not stop.
    pub fn stop(&self, how: Signal) -> Result<()> {
        let child = self.postmaster().take();
        let Some(pid) = child.as_ref().map(Child::id).or_else(|| self.pid()) else {
            return Ok(());
        };
        let _ = process::signal_with_children(pid, Signal::Continue);
        let _ = process::signal(pid, how);
        // Bounded: a fast shutdown waits for its WAL senders, which a frozen standby holds up
        // to `wal_sender_timeout`.
        let gone = match child {
            Some(mut child) => {
                let exited = crate::wait::wait_until("", STOP_TIMEOUT, || {
                    !matches!(child.try_wait(), Ok(None))
                })
                .is_ok();
                if !exited {
                    // Kept, so that a later stop (or the drop) finds it again.
                    *self.postmaster() = Some(child);
                }
                exited
            }
            None => crate::wait::wait_until("", STOP_TIMEOUT, || self.pid().is_none()).is_ok(),
        };
        match gone {
            true => Ok(()),
            false => Err(ProvisionError::Failed(format!(
                "postgres {pid} did not stop"
            ))),
        }
    }

    /// Freezes (`Stop`) or thaws (`Continue`) the postmaster and every backend: connections
    /// stay open but nothing answers, like a hung host.
    pub fn freeze(&self, how: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| ProvisionError::Failed("the server is not running".into()))?;
        process::signal_with_children(pid, how)
    }

    fn postmaster(&self) -> MutexGuard<'_, Option<Child>> {
        // A poisoned lock only means another thread panicked holding it; the Child is accurate.
        self.postmaster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The postmaster that `data/postmaster.pid` names, if that process lives and works in `data`
/// (whoever started it: us, another process of ours, Patroni).
pub fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid = text.lines().next()?.trim().parse().ok()?;
    process::is_process_in(pid, data).then_some(pid)
}

/// Where [`free_port`] looks: below Linux's ephemeral range (32768-60999), whose free ports any
/// outgoing connection may take as its source port between our check and the server's bind
/// (after `initdb`, and again at every restart); below the HA stack's too (15400 by default, its
/// tests 20000-31999).
const FREE_PORTS: std::ops::Range<u16> = 10_000..15_400;

/// A TCP port on 127.0.0.1 that was free a moment ago, picked at random in [`FREE_PORTS`], and
/// never one this process picked before: two servers starting at once in one test process (each
/// binds only after `initdb`) never get the same port.
pub fn free_port() -> Result<u16> {
    static PICKED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let span = FREE_PORTS.end - FREE_PORTS.start;
    for _attempt in 0..200 {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).map_err(|_| {
            ProvisionError::Failed("the operating system's random source is unavailable".into())
        })?;
        let port = FREE_PORTS.start + u16::from_le_bytes(bytes) % span;
        // A panic elsewhere while holding it leaves a whole set.
        let mut picked = PICKED.lock().unwrap_or_else(PoisonError::into_inner);
        if !picked.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            picked.insert(port);
            return Ok(port);
        }
    }
    Err(ProvisionError::Failed(format!(
        "no free port on 127.0.0.1 from {} to {}",
        FREE_PORTS.start,
        FREE_PORTS.end - 1
    )))
}

/// Whether program `what` ran and exited 0; if not, an error saying why (its standard error).
fn succeeded(what: &str, output: std::io::Result<std::process::Output>) -> Result<()> {
    let output = output.map_err(ProvisionError::io(format!("running {what}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(ProvisionError::Failed(format!("{what} failed: {stderr}")))
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn port_in_use(port: u16) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

/// A listening TCP socket, as Linux's `/proc/net/tcp` or `tcp6` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: std::net::IpAddr,
    pub port: u16,
    /// Its owner, as this process's user namespace sees it.
    pub uid: u32,
    /// The socket's inode, as `/proc/<pid>/fd` names it (`socket:[inode]`).
    pub inode: u64,
}

impl Listener {
    /// Whether a connection to this machine's loopback address can reach it (it listens on
    /// loopback, or on every address).
    pub fn reachable_from_loopback(&self) -> bool {
        use std::net::IpAddr;
        let v4 = |v4: std::net::Ipv4Addr| v4.is_loopback() || v4.is_unspecified();
        match self.address {
            IpAddr::V4(address) => v4(address),
            IpAddr::V6(address) => {
                address.is_loopback()
                    || address.is_unspecified()
                    || address.to_ipv4_mapped().is_some_and(v4)
            }
        }
    }
}

/// The listening TCP sockets of this machine's network namespace (IPv4 and IPv6), as
/// `/proc/net/tcp` and `tcp6` list them; `None` where the system does not say (not Linux, or an
/// IPv4 table it cannot read).
pub fn tcp_listeners() -> Option<Vec<Listener>> {
    #[cfg(target_os = "linux")]
    {
        use procfs::net::{TcpState, tcp, tcp6};
        // No tcp6 table (no IPv6 in this kernel), or one that cannot be read: the IPv4
        // listeners still say what they say.
        let v6 = tcp6().unwrap_or_default();
        let entries = tcp().ok()?.into_iter().chain(v6);
        let listening = entries.filter(|entry| entry.state == TcpState::Listen);
        Some(
            listening
                .map(|entry| Listener {
                    address: entry.local_address.ip(),
                    port: entry.local_address.port(),
                    uid: entry.uid,
                    inode: entry.inode,
                })
                .collect(),
        )
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The owners (uids) of what listens on `port` where a connection to this machine's loopback
/// address can reach it; `None` where the system does not say (see [`tcp_listeners`]).
pub fn loopback_listeners(port: u16) -> Option<Vec<u32>> {
    let listeners = tcp_listeners()?.into_iter();
    let here =
        listeners.filter(|listener| listener.port == port && listener.reachable_from_loopback());
    Some(here.map(|listener| listener.uid).collect())
}

/// Whether this process sees every user's own uid: outside a user namespace (inside one, the
/// kernel shows every user the namespace does not map as the same overflow uid).
pub fn sees_every_user() -> bool {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

/// The data folder's parent of the test clusters and HA stacks: `/dev/shm` (tmpfs: faster,
/// steadier) where it exists, else the temporary folder.
pub fn scratch_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never in the ephemeral range, where any connection's source port may take it, and never
    /// twice in one process.
    #[test]
    fn free_ports_come_from_below_the_ephemeral_range_once_each() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        for port in &ports {
            assert!(FREE_PORTS.contains(port) && *port < 32_768, "{port}");
        }
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    #[test]
    fn loopback_reaches_loopback_and_every_address_only() {
        let reachable = |address: &str| {
            let listener = Listener {
                address: address.parse().unwrap(),
                port: 5432,
                uid: 0,
                inode: 0,
            };
            listener.reachable_from_loopback()
        };
        for address in ["127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"] {
            assert!(reachable(address), "{address}");
        }
        for address in ["192.168.1.1", "fe80::5254:ff:fe34:12", "::ffff:192.168.1.1"] {
            assert!(!reachable(address), "{address}");
        }
    }

    /// The tables are read as the kernel writes them (each word in the machine's order): a
    /// socket of ours, on IPv4 and on IPv6 loopback, is listed with its address, port and owner.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_listening_socket_of_ours_is_listed() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let listeners = tcp_listeners().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        for socket in std::iter::once(&v4).chain(v6.as_ref()) {
            let bound = socket.local_addr().unwrap();
            assert!(
                listeners
                    .iter()
                    .any(|listener| listener.address == bound.ip()
                        && listener.port == bound.port()
                        && listener.uid == uid),
                "{bound} not in {listeners:?}"
            );
        }
        // A connection is no listener.
        let connection = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let local = connection.local_addr().unwrap();
        assert!(
            !tcp_listeners()
                .unwrap()
                .iter()
                .any(|l| l.port == local.port())
        );
    }
}
