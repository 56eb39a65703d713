//! Configuration of `counseling-api`, read once at start-up from the working directory's `.env`
//! and the environment (which wins), through `counseling-config`.
//!
//! Each group of variables is a typed struct owned by the crate it configures (`APP_*`,
//! `HEALTH_*`, `LOG_*` and `METRICS_*` here, `DATABASE_*` in persistence); its serde attributes
//! are the one definition of names and defaults, and [`Settings::documented_variables`] lists
//! them, against which a test checks `.env.example` and the README's table. Every problem is reported at once, one line each,
//! never quoting a value.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use counseling_config::{Problem, Problems, Sources, TARGET_VARIABLES};
use counseling_persistence::{DatabaseSettings, PoolSettings};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub app: AppSettings,
    pub health: HealthSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
}

/// `METRICS_*`: `GET /metrics` (Prometheus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Off: no `/metrics`, and nothing is recorded.
    pub enabled: bool,
    /// Unset: served on the main port. `Some(0)` picks a free port (tests).
    #[serde(deserialize_with = "counseling_config::empty_is_none")]
    pub port: Option<u16>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            port: None,
        }
    }
}

/// `APP_*`: where and how the HTTP server listens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSettings {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    #[serde(rename = "shutdown_timeout_secs", with = "counseling_config::secs")]
    pub shutdown_timeout: Duration,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8000,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// `HEALTH_*`: the database check behind `/health`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Budget of one health check, database round trip included.
    #[serde(rename = "timeout_ms", with = "counseling_config::millis")]
    pub timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(1000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?
            .to_ascii_lowercase()
            .as_str()
        {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(serde::de::Error::custom("must be pretty or json")),
        }
    }
}

/// `LOG_*`, and `RUST_LOG` (the name every Rust developer knows) for the filter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `counseling_http=debug,sqlx=warn`.
    #[serde(skip)]
    pub filter: String,
}

impl LogSettings {
    pub const FILTER_VARIABLE: &'static str = "RUST_LOG";
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

/// A directive of `filter` that is a bare word but no level (`warning`, `infoo`), where no
/// directive sets the level for everything else: then that word is read as a target, and every
/// other target, ours included, logs nothing. (`info,sqlx` is a target beside a level: fine.)
fn target_without_level(filter: &str) -> Option<&str> {
    let directives: Vec<&str> = filter.split(',').map(str::trim).collect();
    let bare = |directive: &&str| !directive.is_empty() && !directive.contains(['=', '[']);
    let level = |directive: &&str| directive.parse::<LevelFilter>().is_ok();
    let sets_a_default = directives
        .iter()
        .any(|directive| bare(directive) && level(directive));
    (!sets_a_default)
        .then(|| (directives.into_iter()).find(|directive| bare(directive) && !level(directive)))
        .flatten()
}

impl Settings {
    /// The working directory's `.env` and the environment.
    pub fn load() -> Result<Self, Problems> {
        let sources = Sources::load()?;
        Self::from_sources(&sources)
    }

    /// Exactly the given variables (tests).
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, Problems> {
        Self::from_sources(&Sources::from_vars(vars))
    }

    /// Reads and checks every group; all problems of all groups come back together.
    pub fn from_sources(sources: &Sources) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let app = keep(sources.group::<AppSettings>("APP"), &mut problems);
        let health = keep(sources.group::<HealthSettings>("HEALTH"), &mut problems);
        let log = keep(sources.group::<LogSettings>("LOG"), &mut problems);
        let metrics = keep(sources.group::<MetricsSettings>("METRICS"), &mut problems);
        let database = keep(DatabaseSettings::from_sources(sources), &mut problems);
        if let Some(database) = &database {
            problems.extend(database.problems().0);
        }
        if let Some(health) = &health
            && health.timeout.is_zero()
        {
            problems.push(Problem::new("HEALTH_TIMEOUT_MS", "must be at least 1"));
        }
        if let (Some(app), Some(metrics)) = (&app, &metrics)
            && metrics.enabled
            && app.port != 0
            && metrics.port == Some(app.port)
        {
            // Both listen on APP_HOST: the second bind would fail at start, as a runtime error.
            problems.push(Problem::new(
                "METRICS_PORT",
                "is APP_PORT's port: leave it unset to serve /metrics on the main port, or \
                 choose another",
            ));
        }
        if let Some(metrics) = &metrics
            && !metrics.enabled
            && metrics.port.is_some()
        {
            // No setting is ignored: a port nothing would listen on is a leftover or a mistake.
            problems.push(Problem::new(
                "METRICS_PORT",
                "is set while METRICS_ENABLED is false, so nothing would listen there: unset it, \
                 or enable the metrics",
            ));
        }
        // Empty is unset, as for every setting (tracing's empty filter has no directive and
        // would log nothing at all, errors included).
        let filter = sources
            .get(LogSettings::FILTER_VARIABLE)
            .filter(|filter| !filter.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| LogSettings::default().filter);
        if EnvFilter::try_new(&filter).is_err() {
            problems.push(Problem::new(
                LogSettings::FILTER_VARIABLE,
                "is not a valid filter (examples: info, debug, counseling_http=debug,info)",
            ));
        } else if let Some(word) = target_without_level(&filter) {
            // tracing reads a bare word that is no level as a target: `warning` would log that
            // target alone, so nothing of ours, not even an error.
            problems.push(Problem::new(
                LogSettings::FILTER_VARIABLE,
                format!(
                    "names {word:?} without a level, which is read as a target: a level is \
                     trace, debug, info, warn, error or off; for a target, give its level \
                     ({word}=debug)"
                ),
            ));
        }
        match (app, health, log, database, metrics) {
            (Some(app), Some(health), Some(mut log), Some(mut database), Some(metrics)) => {
                log.filter = filter;
                database.application_name = "counseling-api".to_owned();
                problems.into_result(Settings {
                    app,
                    health,
                    database,
                    log,
                    metrics,
                })
            }
            _ => Err(problems),
        }
    }

    /// Every variable of the service with its default, derived from the structs above: what
    /// `.env.example` and the README's table must list.
    pub fn documented_variables() -> Vec<(String, Documented)> {
        // The target's variables (the URL, files, TLS overrides): the service's own, not the
        // migration CLI's owner variables.
        let mut variables: Vec<(String, Documented)> = TARGET_VARIABLES
            .iter()
            .filter(|(name, _)| !name.starts_with("DATABASE_OWNER_"))
            .map(|(name, when_unset)| {
                let documented = if when_unset.starts_with("required") {
                    Documented::Required
                } else {
                    Documented::Unset
                };
                ((*name).to_owned(), documented)
            })
            .collect();
        for (prefix, defaults) in [
            ("APP", serde_json::to_value(AppSettings::default())),
            ("HEALTH", serde_json::to_value(HealthSettings::default())),
            ("LOG", serde_json::to_value(LogSettings::default())),
            ("METRICS", serde_json::to_value(MetricsSettings::default())),
            (
                DatabaseSettings::PREFIX,
                serde_json::to_value(PoolSettings::default()),
            ),
        ] {
            if let Ok(serde_json::Value::Object(fields)) = defaults {
                for (field, value) in fields {
                    let default = match value {
                        serde_json::Value::Null => Documented::Unset,
                        serde_json::Value::String(text) => Documented::Default(text),
                        other => Documented::Default(other.to_string()),
                    };
                    variables.push((format!("{prefix}_{}", field.to_ascii_uppercase()), default));
                }
            }
        }
        variables.push((
            LogSettings::FILTER_VARIABLE.to_owned(),
            Documented::Default(LogSettings::default().filter),
        ));
        variables
    }
}

/// What a variable does when it is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Documented {
    /// The service does not start without it.
    Required,
    /// Nothing happens: the feature is off or another setting applies.
    Unset,
    /// This value applies.
    Default(String),
}

/// The group's value, or `None` with its problems added to `problems`.
fn keep<T>(group: Result<T, Problems>, problems: &mut Problems) -> Option<T> {
    group.map_err(|found| problems.extend(found.0)).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const URL: &str = "postgres://counseling:s3cret@localhost:5432/counseling_platform";

    fn load(extra: &[(&str, &str)]) -> Result<Settings, Problems> {
        let mut vars = vec![("DATABASE_URL", URL)];
        vars.extend_from_slice(extra);
        Settings::from_vars(vars)
    }

    #[test]
    fn rust_log_empty_is_unset_not_silence() {
        for empty in ["", "  "] {
            let settings = load(&[("RUST_LOG", empty)]).unwrap();
            assert_eq!(settings.log.filter, "info");
        }
    }

    #[test]
    fn defaults_apply_when_only_the_url_is_given() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.app.host.to_string(), "127.0.0.1");
        assert_eq!(settings.app.port, 8000);
        assert_eq!(settings.health.timeout, Duration::from_millis(1000));
        assert_eq!(settings.log.format, LogFormat::Pretty);
        assert_eq!(settings.log.filter, "info");
        assert_eq!(settings.database.pool.max_connections, 15);
        assert_eq!(settings.database.pool.min_connections, 5);
        assert_eq!(
            settings.database.pool.acquire_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(settings.database.pool.lock_timeout, Duration::from_secs(5));
        assert_eq!(settings.database.pool.io_threads, 2);
        assert!(!settings.database.pool.echo);
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
        assert_eq!(settings.health.timeout, Duration::from_millis(250));
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.log.filter, "debug");
        assert_eq!(settings.database.pool.max_connections, 20);
        assert_eq!(settings.database.pool.min_connections, 2);
        assert_eq!(
            settings.database.pool.acquire_timeout,
            Duration::from_millis(1500)
        );
        assert!(settings.database.pool.echo);
    }

    #[test]
    fn a_missing_url_names_the_variable() {
        let problems = Settings::from_vars([]).unwrap_err();
        assert_eq!(problems.0[0].variable, "DATABASE_URL");
        assert!(problems.to_string().starts_with("DATABASE_URL is not set"));
    }

    #[test]
    fn every_invalid_value_is_reported_at_once_and_never_echoed() {
        let problems = load(&[
            ("DATABASE_URL", "mysql://u:s3cret@h/db"),
            ("APP_PORT", "80000"),
            ("APP_HOST", "not an ip"),
            ("HEALTH_TIMEOUT_MS", "0"),
            ("LOG_FORMAT", "xml"),
            ("DATABASE_ECHO", "maybe"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "s3cret"),
            ("DATABASE_PING_IF_IDLE_MS", "off"),
            ("RUST_LOG", "=s3cret=["),
        ])
        .unwrap_err();
        let text = problems.to_string();
        for variable in [
            "DATABASE_URL",
            "APP_PORT",
            "APP_HOST",
            "HEALTH_TIMEOUT_MS",
            "LOG_FORMAT",
            "DATABASE_ECHO",
            "DATABASE_STATEMENT_TIMEOUT_MS",
            "DATABASE_PING_IF_IDLE_MS",
            "RUST_LOG",
        ] {
            assert!(
                problems.0.iter().any(|p| p.variable == variable),
                "{variable} missing from:\n{text}"
            );
        }
        assert_eq!(text.lines().count(), problems.0.len(), "one line each");
        assert!(!text.contains("s3cret"), "{text}");
    }

    /// A misspelt level would be a target: nothing of ours logged, errors included. Levels in
    /// any case, targets with a level, and a bare target beside a level pass.
    #[test]
    fn a_bare_word_that_is_no_level_is_refused() {
        for filter in [
            "warning",
            "infoo",
            "none",
            "counseling_http=debug,warning",
            "sqlx",
        ] {
            let problems = load(&[("RUST_LOG", filter)]).unwrap_err();
            let said = problems.to_string();
            assert_eq!(problems.0.len(), 1, "{said}");
            assert!(said.starts_with("RUST_LOG names \""), "{said}");
            assert!(said.contains("without a level"), "{said}");
        }
        for filter in [
            "WARN",
            "off",
            "info,sqlx=warn",
            "counseling_http=debug",
            "[span]=info",
            "info,counseling_http::routes",
            "sqlx,warn",
        ] {
            let settings = load(&[("RUST_LOG", filter)]).expect(filter);
            assert_eq!(settings.log.filter, filter);
        }
    }

    #[test]
    fn bounds_are_checked_after_types() {
        let problems = load(&[
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "2147483648"),
            ("DATABASE_IO_THREADS", "0"),
        ])
        .unwrap_err();
        let variables: Vec<_> = problems.0.iter().map(|p| p.variable.as_str()).collect();
        // MIN_CONNECTIONS's default 5 exceeds a maximum of 0.
        assert_eq!(
            variables,
            [
                "DATABASE_MAX_CONNECTIONS",
                "DATABASE_MIN_CONNECTIONS",
                "DATABASE_STATEMENT_TIMEOUT_MS",
                "DATABASE_IO_THREADS"
            ],
            "{problems}"
        );
    }

    #[test]
    fn the_documented_table_has_every_variable_once() {
        let variables = Settings::documented_variables();
        let names: Vec<_> = variables.iter().map(|(name, _)| name.as_str()).collect();
        for name in [
            "DATABASE_URL",
            "APP_PORT",
            "HEALTH_TIMEOUT_MS",
            "LOG_FORMAT",
            "RUST_LOG",
            "DATABASE_MAX_CONNECTIONS",
            "DATABASE_ACQUIRE_TIMEOUT_MS",
            "DATABASE_IO_THREADS",
        ] {
            assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name}");
        }
        assert!(!names.contains(&"DATABASE_APPLICATION_NAME"));
    }

    #[test]
    fn tls_variables_and_libpq_parameters_name_themselves_in_errors() {
        let url = format!("{URL}?sslmode=disable");
        let settings = Settings::from_vars([
            ("DATABASE_URL", url.as_str()),
            ("DATABASE_SSL_MODE", "require"),
        ])
        .unwrap();
        assert_eq!(
            settings.database.connector().unwrap().tls().mode(),
            counseling_persistence::SslMode::Require
        );
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("DATABASE_SSL_MODE", "allow")], "DATABASE_SSL_MODE"),
            (&[("DATABASE_SSL_MODE", "verify-full")], "DATABASE_SSL_MODE"),
            // Under verify-full: the file itself is the problem (under prefer it would be refused
            // for checking nothing).
            (
                &[
                    ("DATABASE_SSL_MODE", "verify-full"),
                    ("DATABASE_SSL_ROOT_CERT", "/nonexistent/ca.crt"),
                ],
                "DATABASE_SSL_ROOT_CERT",
            ),
            (
                &[
                    ("DATABASE_SSL_MODE", "require"),
                    ("DATABASE_SSL_ROOT_CERT", "system"),
                ],
                "DATABASE_SSL_ROOT_CERT",
            ),
            (
                &[(
                    "DATABASE_URL",
                    "postgres://u:s3cret@h/db?sslmode=verify-ca&sslrootcert=/nonexistent",
                )],
                "DATABASE_URL",
            ),
            (
                &[(
                    "DATABASE_URL",
                    "postgres://u:s3cret@h/db?channel_binding=require",
                )],
                "DATABASE_URL",
            ),
            (
                &[
                    (
                        "DATABASE_URL",
                        "postgres://u:s3cret@h/db?sslmode=verify-full&sslrootcert=system",
                    ),
                    ("DATABASE_SSL_MODE", "require"),
                ],
                "DATABASE_SSL_MODE",
            ),
        ];
        for (vars, variable) in cases {
            let problems = load(vars).unwrap_err();
            assert_eq!(problems.0.len(), 1, "{vars:?}: {problems}");
            assert_eq!(problems.0[0].variable, *variable, "{vars:?}: {problems}");
            assert!(!problems.to_string().contains("s3cret"), "{problems}");
        }
    }

    #[test]
    fn metrics_can_be_switched_off_or_moved_to_a_port_of_their_own() {
        assert_eq!(load(&[]).unwrap().metrics, MetricsSettings::default());
        let settings = load(&[("METRICS_ENABLED", "false")]).unwrap();
        assert_eq!(
            settings.metrics,
            MetricsSettings {
                enabled: false,
                port: None
            }
        );
        let settings = load(&[("METRICS_PORT", "9100")]).unwrap();
        assert_eq!(settings.metrics.port, Some(9100));
        // A port for metrics that are off would be ignored: refused instead.
        let problems = load(&[("METRICS_ENABLED", "false"), ("METRICS_PORT", "9100")]).unwrap_err();
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert_eq!(problems.0[0].variable, "METRICS_PORT");
        assert!(
            problems.to_string().contains("METRICS_ENABLED is false"),
            "{problems}"
        );
        assert_eq!(load(&[("METRICS_PORT", "")]).unwrap().metrics.port, None);
        let problems = load(&[("METRICS_PORT", "nine")]).unwrap_err();
        assert_eq!(problems.0[0].variable, "METRICS_PORT");
        // The main port again: a configuration error (exit 2), not a failed bind (exit 1).
        let problems = load(&[("APP_PORT", "8100"), ("METRICS_PORT", "8100")]).unwrap_err();
        assert_eq!(problems.0[0].variable, "METRICS_PORT");
        assert!(load(&[("APP_PORT", "0"), ("METRICS_PORT", "0")]).is_ok());
    }

    #[test]
    fn debug_output_redacts_the_url() {
        let shown = format!("{:?}", load(&[]).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
