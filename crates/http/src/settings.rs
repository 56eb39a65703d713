//! Configuration: defaults for non-secret values, then `.env` (loaded into the environment by
//! the binary; the environment wins), then environment variables, layered with the `config`
//! crate. Every value is checked here, once, with errors that name the variable and never repeat
//! its value (it may be a password).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use config::{Config, Environment};
use counseling_persistence::{DatabaseSettings, SettingsError as DatabaseSettingsError};
use secrecy::SecretString;

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub app: AppSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct AppSettings {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Budget of one health check, database round trip included.
    pub health_timeout: Duration,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Worker threads of the runtime that owns every database connection (see `main.rs`).
    pub database_io_threads: usize,
    pub metrics: MetricsSettings,
}

/// `GET /metrics` (Prometheus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Off: no `/metrics`, and nothing is recorded.
    pub enabled: bool,
    /// `None`: served on the main port. `Some(0)` picks a free port (tests).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `counseling_http=debug,sqlx=warn`.
    pub filter: String,
}

/// A variable that is missing or invalid. The message names it and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} {problem}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub problem: String,
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        problem: problem.into(),
    }
}

/// The defaults of every variable that has one (`DATABASE_URL` deliberately has none).
pub const DEFAULTS: &[(&str, &str)] = &[
    ("APP_HOST", "127.0.0.1"),
    ("APP_PORT", "8000"),
    ("APP_SHUTDOWN_TIMEOUT_SECS", "30"),
    ("HEALTH_TIMEOUT_MS", "1000"),
    ("LOG_FORMAT", "pretty"),
    ("RUST_LOG", "info"),
    ("DATABASE_MAX_CONNECTIONS", "15"),
    ("DATABASE_MIN_CONNECTIONS", "5"),
    ("DATABASE_ACQUIRE_TIMEOUT_MS", "5000"),
    ("DATABASE_IDLE_TIMEOUT_SECS", "600"),
    ("DATABASE_MAX_LIFETIME_SECS", "1800"),
    ("DATABASE_STATEMENT_TIMEOUT_MS", "30000"),
    ("DATABASE_LOCK_TIMEOUT_MS", "5000"),
    ("DATABASE_IO_THREADS", "2"),
    ("DATABASE_PING_IF_IDLE_MS", "1000"),
    ("DATABASE_ECHO", "false"),
    ("METRICS_ENABLED", "true"),
    // Empty: /metrics is served on APP_PORT.
    ("METRICS_PORT", ""),
];

impl Settings {
    /// Reads the process environment (call `dotenvy::dotenv()` first to include `.env`).
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_layers(None)
    }

    /// Reads the given variables instead of the process environment (tests).
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, SettingsError> {
        let map = vars
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect::<HashMap<_, _>>();
        Self::from_layers(Some(map))
    }

    fn from_layers(source: Option<HashMap<String, String>>) -> Result<Self, SettingsError> {
        let mut builder = Config::builder();
        for (key, value) in DEFAULTS {
            builder = builder
                .set_default(key.to_ascii_lowercase(), *value)
                .map_err(|_| invalid("configuration", "defaults could not be set"))?;
        }
        let config = builder
            .add_source(Environment::default().source(source))
            .build()
            .map_err(|_| invalid("configuration", "could not be read from the environment"))?;
        let vars = Vars(config);

        let url = vars.required("DATABASE_URL")?;
        let mut database = DatabaseSettings::new(SecretString::from(url));
        // The persistence crate checks the URL (scheme, then the driver's parser); its errors
        // never quote the URL.
        database.connect_options().map_err(|error| match error {
            DatabaseSettingsError::NotPostgresUrl => invalid(
                "DATABASE_URL",
                "must be a PostgreSQL URL starting with postgres:// or postgresql://",
            ),
            other => invalid("DATABASE_URL", format!("is invalid: {other}")),
        })?;
        database.max_connections = vars.number("DATABASE_MAX_CONNECTIONS", 1, 10_000)?;
        database.min_connections = vars.number("DATABASE_MIN_CONNECTIONS", 0, 10_000)?;
        if database.min_connections > database.max_connections {
            return Err(invalid(
                "DATABASE_MIN_CONNECTIONS",
                "must not exceed DATABASE_MAX_CONNECTIONS",
            ));
        }
        database.acquire_timeout = vars.millis("DATABASE_ACQUIRE_TIMEOUT_MS")?;
        database.idle_timeout = Some(vars.secs("DATABASE_IDLE_TIMEOUT_SECS")?);
        database.max_lifetime = Some(vars.secs("DATABASE_MAX_LIFETIME_SECS")?);
        database.statement_timeout = vars.server_millis("DATABASE_STATEMENT_TIMEOUT_MS")?;
        database.lock_timeout = vars.server_millis("DATABASE_LOCK_TIMEOUT_MS")?;
        database.ping_if_idle_for =
            Duration::from_millis(vars.number("DATABASE_PING_IF_IDLE_MS", 0, u64::MAX)?);
        database.echo = vars.boolean("DATABASE_ECHO")?;
        database.application_name = "counseling-api".to_owned();

        let host = vars.required("APP_HOST")?;
        let app = AppSettings {
            host: host.parse().map_err(|_| {
                invalid(
                    "APP_HOST",
                    "must be an IP address such as 127.0.0.1 or 0.0.0.0",
                )
            })?,
            port: vars.number("APP_PORT", 0, u16::MAX)?,
            health_timeout: vars.millis("HEALTH_TIMEOUT_MS")?,
            shutdown_timeout: vars.secs("APP_SHUTDOWN_TIMEOUT_SECS")?,
            database_io_threads: vars.number("DATABASE_IO_THREADS", 1, 64)?,
            metrics: MetricsSettings {
                enabled: vars.boolean("METRICS_ENABLED")?,
                port: vars.optional_number("METRICS_PORT", 0, u16::MAX)?,
            },
        };

        let format = match vars.required("LOG_FORMAT")?.to_ascii_lowercase().as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            _ => return Err(invalid("LOG_FORMAT", "must be pretty or json")),
        };
        let filter = vars.required("RUST_LOG")?;
        Ok(Settings {
            app,
            database,
            log: LogSettings { format, filter },
        })
    }
}

/// Typed access to the layered variables, with errors that name the variable.
struct Vars(Config);

impl Vars {
    fn required(&self, name: &'static str) -> Result<String, SettingsError> {
        match self.0.get_string(&name.to_ascii_lowercase()) {
            Ok(value) if !value.trim().is_empty() => Ok(value),
            Ok(_) => Err(invalid(name, "is empty")),
            Err(_) if name == "DATABASE_URL" => Err(invalid(
                name,
                "is not set: set it in the environment or in .env (see .env.example)",
            )),
            Err(_) => Err(invalid(name, "is not set")),
        }
    }

    fn number<T>(&self, name: &'static str, min: T, max: T) -> Result<T, SettingsError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let value = self.required(name)?;
        match value.trim().parse::<T>() {
            Ok(number) if number >= min && number <= max => Ok(number),
            _ => Err(invalid(
                name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    /// A number, or `None` when the variable is empty.
    fn optional_number<T>(
        &self,
        name: &'static str,
        min: T,
        max: T,
    ) -> Result<Option<T>, SettingsError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        match self.0.get_string(&name.to_ascii_lowercase()) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            _ => self.number(name, min, max).map(Some),
        }
    }

    fn millis(&self, name: &'static str) -> Result<Duration, SettingsError> {
        Ok(Duration::from_millis(self.number(name, 1, u64::MAX)?))
    }

    /// Milliseconds that PostgreSQL itself accepts (a 32-bit signed setting).
    fn server_millis(&self, name: &'static str) -> Result<Duration, SettingsError> {
        let max = DatabaseSettings::MAX_SERVER_TIMEOUT.as_millis() as u64;
        Ok(Duration::from_millis(self.number(name, 1, max)?))
    }

    fn secs(&self, name: &'static str) -> Result<Duration, SettingsError> {
        Ok(Duration::from_secs(self.number(name, 0, u64::MAX)?))
    }

    fn boolean(&self, name: &'static str) -> Result<bool, SettingsError> {
        match self.required(name)?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(invalid(name, "must be true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://counseling:s3cret@localhost:5432/counseling_platform";

    fn load(extra: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut vars = vec![("DATABASE_URL", URL)];
        vars.extend_from_slice(extra);
        Settings::from_vars(vars)
    }

    #[test]
    fn defaults_apply_when_only_the_url_is_given() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.app.host.to_string(), "127.0.0.1");
        assert_eq!(settings.app.port, 8000);
        assert_eq!(settings.app.health_timeout, Duration::from_millis(1000));
        assert_eq!(settings.log.format, LogFormat::Pretty);
        assert_eq!(settings.log.filter, "info");
        assert_eq!(settings.database.max_connections, 15);
        assert_eq!(settings.database.min_connections, 5);
        assert_eq!(settings.database.acquire_timeout, Duration::from_secs(5));
        assert!(!settings.database.echo);
        assert_eq!(settings.database.lock_timeout, Duration::from_secs(5));
        assert_eq!(settings.app.database_io_threads, 2);
        assert_eq!(
            settings.app.metrics,
            MetricsSettings {
                enabled: true,
                port: None
            }
        );
    }

    #[test]
    fn metrics_can_be_switched_off_or_moved_to_a_port_of_their_own() {
        let settings = load(&[("METRICS_ENABLED", "false"), ("METRICS_PORT", "9100")]).unwrap();
        assert_eq!(
            settings.app.metrics,
            MetricsSettings {
                enabled: false,
                port: Some(9100)
            }
        );
        let error = load(&[("METRICS_PORT", "nine")]).unwrap_err();
        assert_eq!(error.variable, "METRICS_PORT");
    }

    #[test]
    fn environment_values_override_defaults() {
        let settings = load(&[
            ("APP_HOST", "0.0.0.0"),
            ("APP_PORT", "9001"),
            ("HEALTH_TIMEOUT_MS", "250"),
            ("LOG_FORMAT", "JSON"),
            ("RUST_LOG", "debug"),
            ("DATABASE_MAX_CONNECTIONS", "20"),
            ("DATABASE_MIN_CONNECTIONS", "2"),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "1500"),
            ("DATABASE_ECHO", "true"),
        ])
        .unwrap();
        assert_eq!(settings.app.host.to_string(), "0.0.0.0");
        assert_eq!(settings.app.port, 9001);
        assert_eq!(settings.app.health_timeout, Duration::from_millis(250));
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.database.max_connections, 20);
        assert_eq!(settings.database.min_connections, 2);
        assert_eq!(
            settings.database.acquire_timeout,
            Duration::from_millis(1500)
        );
        assert!(settings.database.echo);
    }

    #[test]
    fn a_missing_url_names_the_variable() {
        let error = Settings::from_vars([]).unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
        assert!(error.to_string().starts_with("DATABASE_URL is not set"));
    }

    #[test]
    fn invalid_values_name_the_variable_and_never_echo_the_url() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("DATABASE_URL", "mysql://u:s3cret@h/db")], "DATABASE_URL"),
            (
                &[("DATABASE_URL", "postgres://u:s3cret@h:port/db")],
                "DATABASE_URL",
            ),
            (&[("DATABASE_URL", "")], "DATABASE_URL"),
            (&[("APP_PORT", "80000")], "APP_PORT"),
            (&[("APP_PORT", "eighty")], "APP_PORT"),
            (&[("APP_HOST", "not an ip")], "APP_HOST"),
            (&[("HEALTH_TIMEOUT_MS", "0")], "HEALTH_TIMEOUT_MS"),
            (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (&[("DATABASE_ECHO", "maybe")], "DATABASE_ECHO"),
            (
                &[("DATABASE_STATEMENT_TIMEOUT_MS", "2147483648")],
                "DATABASE_STATEMENT_TIMEOUT_MS",
            ),
            (
                &[("DATABASE_LOCK_TIMEOUT_MS", "0")],
                "DATABASE_LOCK_TIMEOUT_MS",
            ),
            (&[("DATABASE_IO_THREADS", "0")], "DATABASE_IO_THREADS"),
            (
                &[("DATABASE_MAX_CONNECTIONS", "0")],
                "DATABASE_MAX_CONNECTIONS",
            ),
            (
                &[("DATABASE_MIN_CONNECTIONS", "16")],
                "DATABASE_MIN_CONNECTIONS",
            ),
        ];
        for (vars, variable) in cases {
            let error = load(vars).unwrap_err();
            assert_eq!(error.variable, *variable, "{vars:?}");
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn debug_output_redacts_the_url() {
        let shown = format!("{:?}", load(&[]).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
