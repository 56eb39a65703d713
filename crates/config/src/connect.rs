//! Opening a connection the way libpq does, on top of the driver's single-host connect: the hosts
//! of the list in order (or shuffled, `load_balance_hosts=random`), each within `connect_timeout`,
//! keeping the first whose session is what `target_session_attrs` asks for. The driver (sqlx) has
//! no host lists (its issue #179), so the service, the migration CLI and `just dev`'s probe all
//! connect through [`Connector`].

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, ConnectOptions, Connection};
use secrecy::{ExposeSecret, SecretString};

use crate::secret_file::reread_secret_file;
use crate::tls::TlsSettings;

/// One host to try: a name or address, or a unix-socket directory (starting with `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub(crate) fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where the password comes from.
#[derive(Clone)]
pub(crate) enum Password {
    None,
    Given(SecretString),
    /// Read again for every connection, so that a rotated secret is used without a restart.
    File {
        variable: &'static str,
        path: PathBuf,
    },
}

/// libpq's `load_balance_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadBalance {
    Disable,
    Random,
}

/// What every connection of one program gets besides the target's own settings.
#[derive(Debug, Clone)]
pub struct SessionDefaults {
    /// `application_name` unless the URL (or `PGAPPNAME`) gives one.
    pub application_name: String,
    /// Server settings (`-c name=value`), each with the variable that sets it: the URL's
    /// `options` may not set these too.
    pub settings: Vec<(String, String, &'static str)>,
    /// Log every statement (the driver's statement logging).
    pub log_statements: bool,
    /// Server settings the program sets again itself once connected (the migration runner, for
    /// each migration), each with what sets it: the URL's `options` may not set these either,
    /// since they would be overridden unseen.
    pub set_later: Vec<(&'static str, &'static str)>,
}

impl SessionDefaults {
    /// Only an application name.
    pub fn named(application_name: &str) -> Self {
        Self {
            application_name: application_name.to_owned(),
            settings: Vec::new(),
            log_statements: false,
            set_later: Vec::new(),
        }
    }
}

/// libpq's `target_session_attrs`: which server a connection may stay on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// Any server (libpq's default).
    Any,
    /// One whose sessions may write (`transaction_read_only` off).
    ReadWrite,
    /// One whose sessions are read-only.
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery (a hot standby).
    Standby,
    /// A standby if any answers, else any server.
    PreferStandby,
}

impl TargetSessionAttrs {
    pub const fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a session in `state` is what this asks for (`PreferStandby` takes a standby;
    /// [`Connector::connect`] falls back to any server itself).
    pub fn accepts(self, state: SessionState) -> bool {
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !state.read_only,
            TargetSessionAttrs::ReadOnly => state.read_only,
            TargetSessionAttrs::Primary => !state.in_recovery,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => state.in_recovery,
        }
    }

    /// Whether a service that writes may ask for this: not the kinds that want (or prefer) a
    /// session that cannot write.
    pub fn suits_writers(self) -> bool {
        matches!(
            self,
            TargetSessionAttrs::Any | TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary
        )
    }

    /// Whether only a server that takes writes will do.
    pub fn wants_writes(self) -> bool {
        matches!(
            self,
            TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary
        )
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            TargetSessionAttrs::Any,
            TargetSessionAttrs::ReadWrite,
            TargetSessionAttrs::ReadOnly,
            TargetSessionAttrs::Primary,
            TargetSessionAttrs::Standby,
            TargetSessionAttrs::PreferStandby,
        ]
        .into_iter()
        .find(|attrs| attrs.as_str() == text)
        .ok_or_else(|| {
            "must be one of any, read-write, read-only, primary, standby, prefer-standby".to_owned()
        })
    }
}

/// What a session reports about its server: one round trip ([`session_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// `pg_is_in_recovery()`: a standby (or a primary still finishing its promotion).
    pub in_recovery: bool,
    /// `transaction_read_only`: a standby, or a primary set read-only.
    pub read_only: bool,
}

/// Asks `connection`'s server for its [`SessionState`], in one round trip.
pub async fn session_state(connection: &mut PgConnection) -> Result<SessionState, sqlx::Error> {
    let (in_recovery, read_only): (bool, String) = panic_as_protocol_error(
        sqlx::query_as(
            "SELECT pg_catalog.pg_is_in_recovery(), \
             pg_catalog.current_setting('transaction_read_only')",
        )
        .fetch_one(connection),
    )
    .await?;
    Ok(SessionState {
        in_recovery,
        read_only: read_only == "on",
    })
}

/// `driver_call`'s outcome, with a panic inside the driver turned into a protocol error.
///
/// sqlx 0.9 panics on some malformed server messages (a frame whose length field is under 4:
/// `stream.rs` slices past its end). Whoever can answer in the server's place (a man in the
/// middle below `verify-full`, a compromised server, a local user on a free port) could
/// otherwise kill the task running the call: the health check's rounds or the pool's keeper.
/// The connection involved is left in an unknown state, so callers treat the error as they
/// treat any protocol error: the connection is discarded.
pub async fn panic_as_protocol_error<T>(
    driver_call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    use futures_util::FutureExt;
    // Unwind safety: whatever the call borrowed (a connection) is discarded after a panic.
    match std::panic::AssertUnwindSafe(driver_call)
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(sqlx::Error::Protocol(
            "the server sent a malformed message".into(),
        )),
    }
}

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The last host's failure (or the refusal that ended the attempt, as in libpq).
    #[error(transparent)]
    Driver(sqlx::Error),
    /// The last host did not answer within `connect_timeout`.
    #[error("the server did not answer within connect_timeout")]
    TimedOut,
    /// The last host's name did not resolve to an address (a typo, or no DNS): not a server
    /// that went away.
    #[error("the host name did not resolve to an address")]
    HostNotResolved,
    /// Every host that answered had the wrong kind of session.
    #[error("no server of the list has a {0} session")]
    NoSuitableHost(TargetSessionAttrs),
    /// The password file could not be read for this connection.
    #[error("{0}")]
    PasswordFile(String),
    /// A TLS file (CA, client certificate or key) could not be read, or no longer meets the
    /// rule checked at start, for this connection. The message names the file, not its contents.
    #[error("{0}")]
    TlsFile(String),
}

impl ConnectError {
    /// What to tell a person: a server's refusal in PostgreSQL's own words, without the driver's
    /// "error returned from database" and its " at line N" (of the server's C source); any other
    /// error as it is.
    pub fn said(&self) -> String {
        match self {
            ConnectError::Driver(sqlx::Error::Database(answer)) => answer.message().to_owned(),
            other => other.to_string(),
        }
    }
}

/// A connection and the index of the host it reached.
#[derive(Debug)]
pub struct Connected {
    pub connection: PgConnection,
    pub endpoint: usize,
}

/// Opens connections to a checked [`crate::DatabaseTarget`]: see the module docs.
#[derive(Clone)]
pub struct Connector {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) user: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) password: Password,
    pub(crate) tls: TlsSettings,
    pub(crate) application_name: String,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) target_session_attrs: TargetSessionAttrs,
    pub(crate) load_balance: LoadBalance,
    pub(crate) log_statements: bool,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hosts and users are configuration, not diagnostics; the password never shows.
        f.debug_struct("Connector")
            .field("hosts", &self.endpoints.len())
            .field("target_session_attrs", &self.target_session_attrs)
            .field("tls", &self.tls.mode())
            .finish_non_exhaustive()
    }
}

/// How long closing a connection we do not keep may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

impl Connector {
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// How long one host may take to answer (libpq's `connect_timeout`); `None` waits for ever.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// The database named, if any (else the server's default: the user's name).
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The role named (the URL's, else `PGUSER`), if any (else the driver's default).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The driver's options for one host; the password file, if any, is read now. They hold
    /// the password, and the driver's `Debug` prints it: never format them.
    pub fn options_for(&self, endpoint: &Endpoint) -> Result<PgConnectOptions, ConnectError> {
        let mut options = PgConnectOptions::new_without_pgpass().port(endpoint.port);
        options = if endpoint.is_socket() {
            options.socket(&endpoint.host)
        } else {
            options.host(&endpoint.host)
        };
        if let Some(user) = &self.user {
            options = options.username(user);
        }
        if let Some(database) = &self.database {
            options = options.database(database);
        }
        if let Some(password) = self.password()? {
            options = options.password(password.expose_secret());
        }
        options = self
            .tls
            .apply(options)
            .map_err(ConnectError::TlsFile)?
            .application_name(&self.application_name);
        if endpoint.is_socket() {
            // No TLS over a unix socket (PostgreSQL offers none there; a mode that requires it
            // is refused at start): the driver would ask for it under `prefer` all the same.
            options = options.ssl_mode(sea_orm::sqlx::postgres::PgSslMode::Disable);
        }
        if !self.settings.is_empty() {
            options = options.options(self.settings.iter().map(|(name, value)| (name, value)));
        }
        Ok(if self.log_statements {
            options
                .log_statements(log::LevelFilter::Info)
                .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1))
        } else {
            options.disable_statement_logging()
        })
    }

    /// The password for a new connection: the password file, if any, is read now.
    pub fn password(&self) -> Result<Option<SecretString>, ConnectError> {
        match &self.password {
            Password::None => Ok(None),
            Password::Given(password) => Ok(Some(password.clone())),
            Password::File { variable, path } => match reread_secret_file(path) {
                // Checked at each read, as at start: a rotation may write the example's.
                Ok(read) if crate::target::is_placeholder(&read.secret) => {
                    Err(ConnectError::PasswordFile(format!(
                        "{variable}: holds the example's placeholder password"
                    )))
                }
                Ok(read) => Ok(Some(read.secret)),
                Err(problem) => Err(ConnectError::PasswordFile(format!("{variable}: {problem}"))),
            },
        }
    }

    /// The hosts in the order to try them.
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.endpoints.len()).collect();
        if self.load_balance == LoadBalance::Random {
            // A Fisher-Yates shuffle keyed by the standard library's per-process random state:
            // spreading connections needs no cryptographic randomness.
            let random = RandomState::new();
            for index in (1..order.len()).rev() {
                let pick = random.hash_one(index) as usize % (index + 1);
                order.swap(index, pick);
            }
        }
        order
    }

    /// Opens a connection on the first host (in order) that answers with a session of the kind
    /// `target_session_attrs` asks for; see the module docs. As in libpq, a host that cannot be
    /// reached, does not answer within `connect_timeout`, cannot take connections now (57P03:
    /// starting up, shutting down) or gives a session of another kind passes the turn to the
    /// next; any other refusal from a host that answered (authentication, a database that is
    /// not there, too many connections, a certificate that does not verify) ends the attempt,
    /// rather than hide a broken or impersonated node behind the next one.
    pub async fn connect(&self) -> Result<Connected, ConnectError> {
        let passes: &[TargetSessionAttrs] = match self.target_session_attrs {
            TargetSessionAttrs::PreferStandby => {
                &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            }
            TargetSessionAttrs::Any => &[TargetSessionAttrs::Any],
            TargetSessionAttrs::ReadWrite => &[TargetSessionAttrs::ReadWrite],
            TargetSessionAttrs::ReadOnly => &[TargetSessionAttrs::ReadOnly],
            TargetSessionAttrs::Primary => &[TargetSessionAttrs::Primary],
            TargetSessionAttrs::Standby => &[TargetSessionAttrs::Standby],
        };
        let order = self.order();
        let mut last_error = None;
        let mut unsuitable = false;
        'passes: for wanted in passes {
            for &index in &order {
                let options = self.options_for(&self.endpoints[index])?;
                let attempt = attempt(&options, &self.endpoints[index], *wanted);
                let outcome = match self.connect_timeout {
                    Some(limit) => tokio::time::timeout(limit, attempt)
                        .await
                        .unwrap_or(Err(Attempt::TimedOut)),
                    None => attempt.await,
                };
                match outcome {
                    Ok(connection) => {
                        return Ok(Connected {
                            connection,
                            endpoint: index,
                        });
                    }
                    Err(Attempt::Unsuitable) => unsuitable = true,
                    Err(Attempt::TimedOut) => last_error = Some(ConnectError::TimedOut),
                    Err(Attempt::HostNotResolved) => {
                        last_error = Some(ConnectError::HostNotResolved);
                    }
                    Err(Attempt::Failed(error)) => last_error = Some(ConnectError::Driver(error)),
                    Err(Attempt::Refused(error)) => {
                        last_error = Some(ConnectError::Driver(error));
                        break 'passes;
                    }
                }
            }
        }
        match last_error {
            Some(error @ ConnectError::Driver(sqlx::Error::Database(_))) => Err(error),
            _ if unsuitable => Err(ConnectError::NoSuitableHost(self.target_session_attrs)),
            Some(error) => Err(error),
            None => Err(ConnectError::NoSuitableHost(self.target_session_attrs)),
        }
    }

    /// The driver's options for the host [`Connector::connect`] reaches now (its connection is
    /// closed again): for a client that must open its connections itself, such as the migration
    /// CLI's pool of one. As [`Connector::options_for`]'s, they are never to be formatted.
    pub async fn locate(&self) -> Result<PgConnectOptions, ConnectError> {
        let connected = self.connect().await?;
        let _ = tokio::time::timeout(CLOSE_LIMIT, connected.connection.close()).await;
        self.options_for(&self.endpoints[connected.endpoint])
    }
}

enum Attempt {
    /// The next host may be tried.
    Failed(sqlx::Error),
    /// The host answered and refused: no other host is tried (see [`is_refusal`]).
    Refused(sqlx::Error),
    TimedOut,
    HostNotResolved,
    Unsuitable,
}

/// Connects to one host and checks its session when `wanted` is not `Any`.
async fn attempt(
    options: &PgConnectOptions,
    endpoint: &Endpoint,
    wanted: TargetSessionAttrs,
) -> Result<PgConnection, Attempt> {
    let mut connection = match panic_as_protocol_error(options.connect()).await {
        Ok(connection) => connection,
        Err(error) if !endpoint.is_socket() && is_unclassified_io(&error) => {
            // The standard library reports a failed name lookup with an error kind that stable
            // Rust cannot match, so the name is looked up again to tell a typo from a lost
            // connection: only on this failure path, never for a connection that opens.
            let lookup = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await;
            return Err(match lookup {
                Err(_) => Attempt::HostNotResolved,
                Ok(_) => Attempt::Failed(error),
            });
        }
        Err(error) if is_refusal(&error) => return Err(Attempt::Refused(error)),
        Err(error) => return Err(Attempt::Failed(error)),
    };
    if wanted == TargetSessionAttrs::Any {
        return Ok(connection);
    }
    match session_state(&mut connection).await {
        Ok(state) if wanted.accepts(state) => Ok(connection),
        Ok(_) => {
            let _ = tokio::time::timeout(CLOSE_LIMIT, connection.close()).await;
            Err(Attempt::Unsuitable)
        }
        Err(error) => Err(Attempt::Failed(error)),
    }
}

/// An I/O error of no kind the standard library names and without an OS error code, which is
/// what a failed name lookup gives (a socket's errors carry their errno).
fn is_unclassified_io(error: &sqlx::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        sqlx::Error::Io(io) => {
            io.raw_os_error().is_none()
                && !matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::TimedOut
                        | ErrorKind::BrokenPipe
                        | ErrorKind::UnexpectedEof
                        | ErrorKind::InvalidData
                )
        }
        _ => false,
    }
}

/// Whether a failed connect is one libpq tries no further host after: an error the server sent
/// while the session started, but for 57P03 (cannot connect now: starting up, shutting down, or
/// a standby without hot_standby); and a failed TLS handshake, certificate checks included
/// (libpq's "hard failure"). A host that cannot be reached or breaks off is not: the next one
/// is tried.
fn is_refusal(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error.code().is_none_or(|code| code != "57P03"),
        sqlx::Error::Tls(_) => true,
        // The driver reports a failed handshake (an unknown issuer, a certificate for another
        // name) as an I/O error carrying rustls' error.
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    }
}
