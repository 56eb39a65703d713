use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::ConnectOptions;
use sea_orm::sqlx::postgres::PgConnectOptions;
use secrecy::{ExposeSecret, SecretString};

use crate::tls::{self, SslMode, SslRootCert, TlsSetting};

/// How to reach PostgreSQL and how to size and guard the pool.
///
/// `Debug` is safe to log: the URL is a [`SecretString`] and prints as a redaction.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: SecretString,
    /// Upper bound of open connections: the seed's pool_size 5 + max_overflow 10.
    pub max_connections: u32,
    /// Connections kept open when idle: the seed's pool_size.
    pub min_connections: u32,
    /// How long a caller waits for a connection before `Unavailable(Timeout)`/`PoolExhausted`.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this long (balances load after failovers, frees memory).
    pub max_lifetime: Option<Duration>,
    /// Server-side `statement_timeout`: no statement runs longer than this. It also bounds, plus
    /// [`crate::DEADLINE_MARGIN`], every repository call and every unit of work on the client
    /// side, and is the server's `idle_in_transaction_session_timeout`.
    pub statement_timeout: Duration,
    /// Server-side `lock_timeout`: a statement waiting this long for a lock fails with
    /// `Unavailable(LockTimeout)` instead of queueing behind a long transaction or a migration.
    pub lock_timeout: Duration,
    /// A pooled connection idle at least this long is pinged before use (the seed's
    /// `pool_pre_ping`); see [`crate::Database`] for why not every connection.
    pub ping_if_idle_for: Duration,
    /// Log every SQL statement (the seed's `echo`). Off unless asked for.
    pub echo: bool,
    /// Reported to PostgreSQL as `application_name` (visible in `pg_stat_activity`).
    pub application_name: String,
    /// Overrides the URL's `sslmode`; `None` keeps the URL's (libpq's default: `prefer`).
    pub ssl_mode: Option<SslMode>,
    /// Overrides the URL's `sslrootcert`; `None` keeps the URL's.
    pub ssl_root_cert: Option<SslRootCert>,
}

impl DatabaseSettings {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 15;
    pub const DEFAULT_MIN_CONNECTIONS: u32 = 5;
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(1800);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    /// PostgreSQL's timeouts are 32-bit signed milliseconds; larger values break every connect.
    pub const MAX_SERVER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
    pub const DEFAULT_PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

    /// The defaults for everything but the URL.
    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            min_connections: Self::DEFAULT_MIN_CONNECTIONS,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            max_lifetime: Some(Self::DEFAULT_MAX_LIFETIME),
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
            ping_if_idle_for: Self::DEFAULT_PING_IF_IDLE_FOR,
            echo: false,
            application_name: "counseling-platform".to_owned(),
            ssl_mode: None,
            ssl_root_cert: None,
        }
    }

    /// Checks the settings and builds the driver's connect options from them.
    ///
    /// Errors describe what is wrong without repeating the URL (it holds the password).
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        let url = self.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(SettingsError::NotPostgresUrl);
        }
        let tls = tls::resolve(url, self.ssl_mode, self.ssl_root_cert.as_ref())?;
        // The driver's parse error may quote the URL, so only its absence is kept.
        let options = PgConnectOptions::from_str(url).map_err(|_| SettingsError::MalformedUrl)?;
        let options = tls.apply(options);
        if self.max_connections == 0 {
            return Err(SettingsError::Invalid("max_connections must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(SettingsError::Invalid(
                "min_connections must not exceed max_connections",
            ));
        }
        if self.acquire_timeout.is_zero() {
            return Err(SettingsError::Invalid("acquire_timeout must be positive"));
        }
        for (name, value) in [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
        ] {
            if value.is_zero() || value > Self::MAX_SERVER_TIMEOUT {
                return Err(SettingsError::Invalid(if name == "lock_timeout" {
                    "lock_timeout must be between 1 ms and 2147483647 ms"
                } else {
                    "statement_timeout must be between 1 ms and 2147483647 ms"
                }));
            }
        }
        let statement_timeout_ms = self.statement_timeout.as_millis().to_string();
        let lock_timeout_ms = self.lock_timeout.as_millis().to_string();
        let options = options
            .application_name(&self.application_name)
            // Sent in the startup packet: no extra round trip per connection. A session left
            // idle inside a transaction (a stalled unit of work) is ended by the server too.
            .options([
                ("statement_timeout", statement_timeout_ms.as_str()),
                ("lock_timeout", lock_timeout_ms.as_str()),
                (
                    "idle_in_transaction_session_timeout",
                    statement_timeout_ms.as_str(),
                ),
            ]);
        Ok(if self.echo {
            options
                .log_statements(log::LevelFilter::Info)
                .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1))
        } else {
            options.disable_statement_logging()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("the database URL must start with postgres:// or postgresql://")]
    NotPostgresUrl,
    #[error("the database URL is malformed (percent-encode special characters in the password)")]
    MalformedUrl,
    #[error("invalid pool setting: {0}")]
    Invalid(&'static str),
    /// A TLS setting is invalid, or a file it names cannot be read or parsed.
    #[error("{setting}: {problem}")]
    Tls {
        setting: TlsSetting,
        problem: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> DatabaseSettings {
        DatabaseSettings::new(SecretString::from(url.to_owned()))
    }

    #[test]
    fn defaults_are_the_seeds_pool() {
        let s = settings("postgres://u:p@h/db");
        assert_eq!(s.max_connections, 15);
        assert_eq!(s.min_connections, 5);
        assert!(!s.echo);
    }

    #[test]
    fn debug_redacts_the_url() {
        let shown = format!("{:?}", settings("postgres://user:hunter2@db.internal/app"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("db.internal"), "{shown}");
    }

    #[test]
    fn rejects_other_schemes_and_garbage_without_echoing_them() {
        for (url, expected) in [
            ("mysql://u:hunter2@h/db", SettingsError::NotPostgresUrl),
            ("hunter2", SettingsError::NotPostgresUrl),
            (
                "postgres://u:hunter2@h:notaport/db",
                SettingsError::MalformedUrl,
            ),
        ] {
            let error = settings(url).connect_options().unwrap_err();
            assert_eq!(error, expected, "{url}");
            assert!(!error.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn rejects_inconsistent_pool_sizes() {
        let mut s = settings("postgres://u:p@h/db");
        s.min_connections = 20;
        assert!(matches!(
            s.connect_options(),
            Err(SettingsError::Invalid(_))
        ));
        s.min_connections = 0;
        s.max_connections = 0;
        assert!(matches!(
            s.connect_options(),
            Err(SettingsError::Invalid(_))
        ));
    }
}
