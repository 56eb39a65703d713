//! Where configuration comes from, written once for every binary of the workspace.
//!
//! * [`Sources`]: the variables a binary sees, layered: the working directory's `.env` (never a
//!   parent folder's), then the process environment, which wins (but for the variables Kubernetes
//!   injects for its Services, which never hide `.env`'s). Each crate deserialises its own
//!   typed settings from a group of variables with [`Sources::group`] (serde, through the
//!   `config` crate); defaults live on those structs, once.
//! * [`DatabaseUrl`]: the one parser of `DATABASE_URL`-like values (libpq's host lists included),
//!   and [`DatabaseUrl::from_parts`], the one way our code builds one.
//! * [`DatabaseTarget`]: where the database is and how to reach it, from the URL (or a file), a
//!   password file, the TLS overrides and libpq's `PG*` variables, every libpq parameter honoured
//!   ([`libpq`]) or refused; [`Connector`] opens connections to it, trying each host of a list
//!   as libpq does. The service, the migration CLI and `just dev`'s probe connect through it.
//! * [`tls`]: libpq's TLS settings with libpq's meanings, checked at start.
//! * [`Problem`]/[`Problems`]: what is wrong, one line per variable, never quoting a value.

mod connect;
mod database_url;
mod env_file;
pub mod libpq;
mod secret_file;
mod sources;
mod target;
pub mod tls;
mod trusted_file;

pub use connect::{
    ConnectError, Connected, Connector, Endpoint, SessionDefaults, SessionState,
    TargetSessionAttrs, panic_as_protocol_error, session_state,
};
pub use database_url::{DatabaseUrl, DatabaseUrlError, UrlHost, UrlParts};
pub use env_file::{EnvFileError, parse_env, read_env_file};
pub use secret_file::{SecretRead, read_secret_file};
pub use sources::{Origin, Sources};
pub use target::{
    DatabaseTarget, PLACEHOLDER_PASSWORD_PREFIX, Role, TARGET_VARIABLES, TEST_SERVER_VARIABLE,
    connection_variables,
};

use std::fmt;

/// The service's `lock_timeout` unless `DATABASE_LOCK_TIMEOUT_MS` says otherwise. Here, at the
/// ground, because the migration CLI (which sees the service's settings, not its crates) keeps
/// its own below it: the service's statements that queue behind a migration's lock request
/// must not fail before the migration gives up.
pub const SERVICE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The variable that sets [`SERVICE_LOCK_TIMEOUT`] otherwise.
pub const SERVICE_LOCK_TIMEOUT_VARIABLE: &str = "DATABASE_LOCK_TIMEOUT_MS";

/// `println!` for binaries: std's panics when standard output is closed (`migration up | head
/// -1`), which would end a run half-way, or turn a configuration error's exit 2 into a panic's
/// 101. What a binary says is a courtesy: a closed stream is ignored, and its exit code stands.
/// Imported as `println` (`use counseling_config::say as println;`).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// [`say!`] for standard error (imported as `eprintln`).
#[macro_export]
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The command line's arguments after the program's name. One that is not UTF-8 is refused,
/// naming its place, where `std::env::args` would panic: no command or value of ours needs one.
pub fn arguments() -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .enumerate()
        .map(|(index, argument)| {
            argument
                .into_string()
                .map_err(|_| format!("argument {} is not valid UTF-8", index + 1))
        })
        .collect()
}

/// One variable that is missing or invalid. The text names it and says what is expected, and
/// never repeats its value (it may be a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} {problem}")]
pub struct Problem {
    pub variable: String,
    pub problem: String,
}

impl Problem {
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// Every problem found in one pass, so that a user fixes them all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was found wrong.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl Extend<Problem> for Problems {
    fn extend<I: IntoIterator<Item = Problem>>(&mut self, problems: I) {
        self.0.extend(problems);
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// For unsigned numbers without a default: unset or empty means `None`, anything else must be
/// digits and is parsed. A sign is refused, as for every number of ours (Rust's parser takes
/// `+9100` for 9100).
pub fn empty_is_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    use serde::Deserialize;
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    if !text.trim().bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(serde::de::Error::custom(
            "must be digits only, without a sign",
        ));
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|error: T::Err| serde::de::Error::custom(error))
}

/// Durations given as whole milliseconds (variables ending in `_MS`).
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Durations given as whole seconds (variables ending in `_SECS`).
pub mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }
}
