use std::time::Duration;

use counseling_config::tls::{self, SslMode, SslRootCert, TlsErrors};
use counseling_config::{DatabaseUrl, Problem, Problems};
use sea_orm::sqlx::ConnectOptions;
use sea_orm::sqlx::postgres::PgConnectOptions;
use serde::{Deserialize, Serialize};

/// The variable of [`DatabaseSettings::url`], named in its problems.
const URL_VARIABLE: &str = "DATABASE_URL";

/// How to reach PostgreSQL and how to size and guard the pool: the `DATABASE_*` variables.
///
/// This struct is the one definition of these settings: their names (`DATABASE_` + the serde
/// name in upper case), their defaults and their checks ([`DatabaseSettings::problems`]).
/// `Debug` is safe to log: the URL prints as a redaction.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: `postgres://user:password@host:port/database`. Required.
    #[serde(skip_serializing)]
    pub url: DatabaseUrl,
    /// Upper bound of open connections: the seed's pool_size 5 + max_overflow 10.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// Connections kept open when idle: the seed's pool_size.
    #[serde(default = "defaults::min_connections")]
    pub min_connections: u32,
    /// How long a caller waits for a connection before `Unavailable(Timeout)`/`PoolExhausted`.
    #[serde(
        rename = "acquire_timeout_ms",
        with = "counseling_config::millis",
        default = "defaults::acquire_timeout"
    )]
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    #[serde(
        rename = "idle_timeout_secs",
        with = "counseling_config::secs",
        default = "defaults::idle_timeout"
    )]
    pub idle_timeout: Duration,
    /// Connections are replaced after this long (balances load after failovers, frees memory).
    #[serde(
        rename = "max_lifetime_secs",
        with = "counseling_config::secs",
        default = "defaults::max_lifetime"
    )]
    pub max_lifetime: Duration,
    /// Server-side `statement_timeout`: no statement runs longer than this. It also bounds, plus
    /// [`crate::DEADLINE_MARGIN`], every repository call and every unit of work on the client
    /// side, and is the server's `idle_in_transaction_session_timeout`.
    #[serde(
        rename = "statement_timeout_ms",
        with = "counseling_config::millis",
        default = "defaults::statement_timeout"
    )]
    pub statement_timeout: Duration,
    /// Server-side `lock_timeout`: a statement waiting this long for a lock fails with
    /// `Unavailable(LockTimeout)` instead of queueing behind a long transaction or a migration.
    #[serde(
        rename = "lock_timeout_ms",
        with = "counseling_config::millis",
        default = "defaults::lock_timeout"
    )]
    pub lock_timeout: Duration,
    /// A pooled connection idle at least this long is pinged before use (the seed's
    /// `pool_pre_ping`); see [`crate::Database`] for why not every connection.
    #[serde(
        rename = "ping_if_idle_ms",
        with = "counseling_config::millis",
        default = "defaults::ping_if_idle_for"
    )]
    pub ping_if_idle_for: Duration,
    /// Log every SQL statement (the seed's `echo`), with placeholders, never bound values.
    #[serde(default)]
    pub echo: bool,
    /// Worker threads of the runtime that owns every connection (built by the binary).
    #[serde(default = "defaults::io_threads")]
    pub io_threads: usize,
    /// Overrides the URL's `sslmode`; unset keeps the URL's (libpq's default: `prefer`).
    #[serde(default, deserialize_with = "counseling_config::empty_is_none")]
    pub ssl_mode: Option<SslMode>,
    /// Overrides the URL's `sslrootcert` (a CA file, or `system`); unset keeps the URL's.
    #[serde(default, deserialize_with = "counseling_config::empty_is_none")]
    pub ssl_root_cert: Option<SslRootCert>,
    /// Reported to PostgreSQL as `application_name` (visible in `pg_stat_activity`).
    #[serde(skip, default = "defaults::application_name")]
    pub application_name: String,
}

/// The defaults, each written once; serde and [`DatabaseSettings::new`] both use them.
mod defaults {
    use std::time::Duration;

    pub fn max_connections() -> u32 {
        15
    }
    pub fn min_connections() -> u32 {
        5
    }
    pub fn acquire_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(600)
    }
    pub fn max_lifetime() -> Duration {
        Duration::from_secs(1800)
    }
    pub fn statement_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn lock_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn ping_if_idle_for() -> Duration {
        Duration::from_secs(1)
    }
    pub fn io_threads() -> usize {
        2
    }
    pub fn application_name() -> String {
        "counseling-platform".to_owned()
    }
}

impl DatabaseSettings {
    /// The environment variables of these settings start with this.
    pub const PREFIX: &'static str = "DATABASE";
    /// PostgreSQL's timeouts are 32-bit signed milliseconds; larger values break every connect.
    pub const MAX_SERVER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
    pub const MAX_IO_THREADS: usize = 64;

    /// The defaults for everything but the URL.
    pub fn new(url: DatabaseUrl) -> Self {
        Self {
            url,
            max_connections: defaults::max_connections(),
            min_connections: defaults::min_connections(),
            acquire_timeout: defaults::acquire_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_lifetime: defaults::max_lifetime(),
            statement_timeout: defaults::statement_timeout(),
            lock_timeout: defaults::lock_timeout(),
            ping_if_idle_for: defaults::ping_if_idle_for(),
            echo: false,
            io_threads: defaults::io_threads(),
            ssl_mode: None,
            ssl_root_cert: None,
            application_name: defaults::application_name(),
        }
    }

    /// Every rule these settings break, one problem per variable, named as in the environment.
    pub fn problems(&self) -> Problems {
        let mut problems = Problems::default();
        let mut check = |ok: bool, variable: &str, problem: &str| {
            if !ok {
                problems.push(Problem::new(format!("DATABASE_{variable}"), problem));
            }
        };
        check(
            self.max_connections >= 1,
            "MAX_CONNECTIONS",
            "must be at least 1",
        );
        check(
            self.min_connections <= self.max_connections,
            "MIN_CONNECTIONS",
            "must not exceed DATABASE_MAX_CONNECTIONS",
        );
        check(
            !self.acquire_timeout.is_zero(),
            "ACQUIRE_TIMEOUT_MS",
            "must be at least 1",
        );
        for (variable, value) in [
            ("STATEMENT_TIMEOUT_MS", self.statement_timeout),
            ("LOCK_TIMEOUT_MS", self.lock_timeout),
        ] {
            check(
                !value.is_zero() && value <= Self::MAX_SERVER_TIMEOUT,
                variable,
                "must be from 1 to 2147483647 (PostgreSQL's limit)",
            );
        }
        check(
            (1..=Self::MAX_IO_THREADS).contains(&self.io_threads),
            "IO_THREADS",
            "must be from 1 to 64",
        );
        if let Err(error) = self.tls() {
            problems.extend(error.to_problems(URL_VARIABLE).0);
        }
        problems
    }

    /// The TLS settings of the URL and the overrides, with libpq's rules; every file they name is
    /// read and checked.
    fn tls(&self) -> Result<tls::ResolvedTls, TlsErrors> {
        tls::resolve(&self.url, self.ssl_mode, self.ssl_root_cert.as_ref())
    }

    /// The driver's connect options: the URL's, the TLS settings, and the session settings every
    /// connection gets.
    pub fn connect_options(&self) -> Result<PgConnectOptions, Problems> {
        let tls = self
            .tls()
            .map_err(|errors| errors.to_problems(URL_VARIABLE))?;
        let statement_timeout_ms = self.statement_timeout.as_millis().to_string();
        let lock_timeout_ms = self.lock_timeout.as_millis().to_string();
        let options = tls
            .apply(self.url.connect_options())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use counseling_config::Sources;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<DatabaseSettings, Problems> {
        let mut all = vec![("DATABASE_URL", "postgres://u:hunter2@db.internal/app")];
        all.extend_from_slice(vars);
        Sources::from_vars(all).group(DatabaseSettings::PREFIX)
    }

    #[test]
    fn defaults_are_the_seeds_pool_and_the_same_from_serde_and_new() {
        let loaded = load(&[]).unwrap();
        assert_eq!(loaded.max_connections, 15);
        assert_eq!(loaded.min_connections, 5);
        assert!(!loaded.echo);
        let built = DatabaseSettings::new(loaded.url.clone());
        assert_eq!(format!("{loaded:?}"), format!("{built:?}"));
    }

    #[test]
    fn debug_redacts_the_url() {
        let shown = format!("{:?}", load(&[]).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("db.internal"), "{shown}");
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let mut settings = load(&[]).unwrap();
        settings.max_connections = 0;
        settings.min_connections = 1;
        settings.statement_timeout = Duration::from_millis(2_147_483_648);
        settings.io_threads = 0;
        let names: Vec<_> = settings
            .problems()
            .0
            .into_iter()
            .map(|problem| problem.variable)
            .collect();
        assert_eq!(
            names,
            [
                "DATABASE_MAX_CONNECTIONS",
                "DATABASE_MIN_CONNECTIONS",
                "DATABASE_STATEMENT_TIMEOUT_MS",
                "DATABASE_IO_THREADS"
            ]
        );
    }

    /// The migration CLI reads the TLS overrides through `TlsOverrides`: the same variables,
    /// parsed the same way.
    #[test]
    fn tls_overrides_are_the_same_variables_as_the_migration_clis() {
        let vars = [
            ("DATABASE_SSL_MODE", "verify-full"),
            ("DATABASE_SSL_ROOT_CERT", "/etc/ca.pem"),
        ];
        let service = load(&vars).unwrap();
        let migration = Sources::from_vars(vars)
            .group::<tls::TlsOverrides>(DatabaseSettings::PREFIX)
            .unwrap();
        assert_eq!(migration.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(
            (service.ssl_mode, service.ssl_root_cert),
            (migration.ssl_mode, migration.ssl_root_cert)
        );
    }

    #[test]
    fn malformed_variables_are_named_without_their_values() {
        let problems = load(&[
            ("DATABASE_URL", "mysql://u:hunter2@h/db"),
            ("DATABASE_MAX_CONNECTIONS", "many"),
        ])
        .unwrap_err();
        assert_eq!(problems.0.len(), 2, "{problems}");
        assert!(!problems.to_string().contains("hunter2"), "{problems}");
    }
}
