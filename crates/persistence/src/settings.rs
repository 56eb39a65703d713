use std::time::Duration;

use counseling_config::{
    Connector, DatabaseTarget, DatabaseUrl, Problem, Problems, Role, SessionDefaults, Sources,
};
use serde::{Deserialize, Serialize};

/// The most connections a PostgreSQL server can take (`max_connections`' own bound, MAX_BACKENDS):
/// no pool needs more.
const POSTGRES_MAX_CONNECTIONS: u32 = 262_143;

/// How to reach PostgreSQL, and how to size and guard the pool.
///
/// `Debug` is safe to log: the target never shows its URL or password.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Where the database is and how to reach it: `DATABASE_URL` (or `DATABASE_URL_FILE`),
    /// `DATABASE_PASSWORD_FILE`, `DATABASE_SSL_MODE`, `DATABASE_SSL_ROOT_CERT` and libpq's
    /// parameters (see `counseling_config::DatabaseTarget`).
    pub target: DatabaseTarget,
    /// The pool and its sessions: the other `DATABASE_*` variables.
    pub pool: PoolSettings,
    /// Reported to PostgreSQL as `application_name` (visible in `pg_stat_activity`) unless the
    /// URL names one.
    pub application_name: String,
}

/// The pool and what every connection's session gets: the `DATABASE_*` variables besides the
/// target's. This struct is their one definition: names (`DATABASE_` + the serde name in upper
/// case), defaults, and checks ([`DatabaseSettings::problems`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
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
    /// A pooled connection idle at least this long gets a role check before use (the seed's
    /// `pool_pre_ping`, which also finds a node that can no longer write); see
    /// [`crate::Database`] for why not every connection.
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
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
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
        }
    }
}

/// The defaults, each written once; serde and [`PoolSettings::default`] both use them.
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
        counseling_config::SERVICE_LOCK_TIMEOUT
    }
    pub fn ping_if_idle_for() -> Duration {
        Duration::from_secs(1)
    }
    pub fn io_threads() -> usize {
        2
    }
}

/// The program name reported when nothing else is set.
const DEFAULT_APPLICATION_NAME: &str = "counseling-platform";

impl DatabaseSettings {
    /// The environment variables of these settings start with this.
    pub const PREFIX: &'static str = "DATABASE";
    /// PostgreSQL's timeouts are 32-bit signed milliseconds; larger values break every connect.
    pub const MAX_SERVER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
    pub const MAX_IO_THREADS: usize = 64;

    /// Exactly `url` (no password file, overrides or `PG*` variables) with the default pool.
    pub fn new(url: DatabaseUrl) -> Self {
        Self::new_with_target(DatabaseTarget::from_url(url))
    }

    fn new_with_target(target: DatabaseTarget) -> Self {
        Self {
            target,
            pool: PoolSettings::default(),
            application_name: DEFAULT_APPLICATION_NAME.to_owned(),
        }
    }

    /// The service's settings from `sources`: the target (`Role::Service`) and the pool. Every
    /// problem of both comes back together; the target's are checked in full by
    /// [`DatabaseSettings::problems`].
    pub fn from_sources(sources: &Sources) -> Result<Self, Problems> {
        let target = DatabaseTarget::from_sources(sources, Role::Service);
        // The target's variables and the test kit's server share the prefix and `.env`.
        let besides = counseling_config::connection_variables();
        let pool = sources.group_besides::<PoolSettings>(Self::PREFIX, &besides);
        match (target, pool) {
            (Ok(target), Ok(pool)) => Ok(Self {
                pool,
                ..Self::new_with_target(target)
            }),
            (Ok(target), Err(pool)) => {
                // The target is checked all the same, so every problem is said at once (all but
                // the host list's fit in the acquire timeout, which needs the pool).
                let probe = Self::new_with_target(target);
                let mut problems = probe.connector().err().unwrap_or_default();
                problems.extend(pool.0);
                Err(problems)
            }
            (Err(mut problems), pool) => {
                problems.extend(pool.err().unwrap_or_default().0);
                Err(problems)
            }
        }
    }

    /// Every rule these settings break, one problem per variable, named as in the environment:
    /// the pool's bounds, and everything about the target (files, TLS, libpq's parameters).
    pub fn problems(&self) -> Problems {
        let mut problems = Problems::default();
        let pool = &self.pool;
        let mut check = |ok: bool, variable: &str, problem: &str| {
            if !ok {
                problems.push(Problem::new(format!("DATABASE_{variable}"), problem));
            }
        };
        check(
            pool.max_connections >= 1,
            "MAX_CONNECTIONS",
            "must be at least 1",
        );
        // The pool reserves room for its maximum up front: 2^32 - 1 would abort on allocation.
        check(
            pool.max_connections <= POSTGRES_MAX_CONNECTIONS,
            "MAX_CONNECTIONS",
            "must be at most 262143 (PostgreSQL's own limit on connections)",
        );
        check(
            pool.min_connections <= pool.max_connections,
            "MIN_CONNECTIONS",
            "must not exceed DATABASE_MAX_CONNECTIONS",
        );
        // 0 is no "never" here (as in some pools): it would replace a connection at every
        // checkout, or close every one above the minimum each second.
        for (variable, value) in [
            ("ACQUIRE_TIMEOUT_MS", pool.acquire_timeout),
            ("IDLE_TIMEOUT_SECS", pool.idle_timeout),
            ("MAX_LIFETIME_SECS", pool.max_lifetime),
        ] {
            check(!value.is_zero(), variable, "must be at least 1");
        }
        for (variable, value) in [
            ("STATEMENT_TIMEOUT_MS", pool.statement_timeout),
            ("LOCK_TIMEOUT_MS", pool.lock_timeout),
        ] {
            check(
                !value.is_zero() && value <= Self::MAX_SERVER_TIMEOUT,
                variable,
                "must be from 1 to 2147483647 (PostgreSQL's limit)",
            );
        }
        check(
            (1..=Self::MAX_IO_THREADS).contains(&pool.io_threads),
            "IO_THREADS",
            "must be from 1 to 64",
        );
        match self.connector() {
            Ok(connector) => problems.extend(self.host_list_problem(&connector)),
            Err(found) => problems.extend(found.0),
        }
        problems
    }

    /// A connection is opened within the caller's acquire timeout, trying the hosts in turn; a
    /// host that does not answer at all (a dead machine, a dropped route, a hung postmaster)
    /// holds the attempt for `connect_timeout`. Unless every host's `connect_timeout` fits in
    /// the acquire timeout, the last is never given its chance, and a host list does not survive
    /// the loss of its first host.
    fn host_list_problem(&self, connector: &Connector) -> Option<Problem> {
        let hosts = connector.endpoints().len();
        let every = u32::try_from(hosts).ok()?;
        if every < 2 {
            return None;
        }
        let acquire = self.pool.acquire_timeout;
        let problem = match connector.connect_timeout() {
            None => format!(
                "names {hosts} hosts but no connect_timeout: a host that does not answer would \
                 hold every connect past DATABASE_ACQUIRE_TIMEOUT_MS ({} ms), and the next \
                 host would never be tried; add connect_timeout=2 (libpq's, seconds per host)",
                acquire.as_millis()
            ),
            Some(limit) if limit.saturating_mul(every) > acquire => format!(
                "names {hosts} hosts with connect_timeout={}: their {hosts} attempts do not fit \
                 in DATABASE_ACQUIRE_TIMEOUT_MS ({} ms), so the last host would not get its \
                 chance; lower connect_timeout (at least 2) or raise the acquire timeout",
                limit.as_secs(),
                acquire.as_millis()
            ),
            Some(_) => return None,
        };
        Some(Problem::new(self.target.url_variable(), problem))
    }

    /// What every connection's session gets: the application name and the server-side
    /// timeouts, sent in the startup packet (no extra round trip per connection). A session left
    /// idle inside a transaction (a stalled unit of work) is ended by the server too.
    pub fn session_defaults(&self) -> SessionDefaults {
        let statement_timeout_ms = self.pool.statement_timeout.as_millis().to_string();
        SessionDefaults {
            application_name: self.application_name.clone(),
            settings: vec![
                (
                    "statement_timeout".to_owned(),
                    statement_timeout_ms.clone(),
                    "DATABASE_STATEMENT_TIMEOUT_MS",
                ),
                (
                    "lock_timeout".to_owned(),
                    self.pool.lock_timeout.as_millis().to_string(),
                    counseling_config::SERVICE_LOCK_TIMEOUT_VARIABLE,
                ),
                (
                    "idle_in_transaction_session_timeout".to_owned(),
                    statement_timeout_ms,
                    "DATABASE_STATEMENT_TIMEOUT_MS",
                ),
            ],
            log_statements: self.pool.echo,
            set_later: Vec::new(),
        }
    }

    /// The connector for these settings: every check of the target done, every file read.
    pub fn connector(&self) -> Result<Connector, Problems> {
        self.target.resolve(&self.session_defaults())
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
        DatabaseSettings::from_sources(&Sources::from_vars(all))
    }

    #[test]
    fn defaults_are_the_seeds_pool_and_the_same_from_serde_and_default() {
        let loaded = load(&[]).unwrap();
        assert_eq!(loaded.pool.max_connections, 15);
        assert_eq!(loaded.pool.min_connections, 5);
        assert!(!loaded.pool.echo);
        assert_eq!(
            format!("{:?}", loaded.pool),
            format!("{:?}", PoolSettings::default())
        );
    }

    #[test]
    fn a_pool_setting_that_does_not_parse_hides_no_problem_of_the_target() {
        let url = "postgres://u:hunter2@db.internal/app?sslmode=verify-full\
                   &sslrootcert=/nonexistent.pem";
        let vars = [("DATABASE_URL", url), ("DATABASE_MAX_CONNECTIONS", "ten")];
        let problems = DatabaseSettings::from_sources(&Sources::from_vars(vars)).unwrap_err();
        let variables: Vec<&str> = problems.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            variables,
            ["DATABASE_URL", "DATABASE_MAX_CONNECTIONS"],
            "{problems}"
        );
        assert!(
            problems.to_string().contains("/nonexistent.pem"),
            "{problems}"
        );
        assert!(!problems.to_string().contains("hunter2"), "{problems}");
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
        settings.pool.max_connections = 0;
        settings.pool.min_connections = 1;
        settings.pool.statement_timeout = Duration::from_millis(2_147_483_648);
        settings.pool.io_threads = 0;
        settings.pool.idle_timeout = Duration::ZERO;
        settings.pool.max_lifetime = Duration::ZERO;
        settings.pool.acquire_timeout = Duration::ZERO;
        // 0 is PostgreSQL's "wait for ever".
        settings.pool.lock_timeout = Duration::ZERO;
        let mut huge = load(&[]).unwrap();
        huge.pool.max_connections = u32::MAX;
        let problems = huge.problems().to_string();
        assert!(
            problems.starts_with("DATABASE_MAX_CONNECTIONS must be at most 262143"),
            "{problems}"
        );
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
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                "DATABASE_IDLE_TIMEOUT_SECS",
                "DATABASE_MAX_LIFETIME_SECS",
                "DATABASE_STATEMENT_TIMEOUT_MS",
                "DATABASE_LOCK_TIMEOUT_MS",
                "DATABASE_IO_THREADS"
            ]
        );
        let mut too_long = load(&[]).unwrap();
        too_long.pool.lock_timeout = Duration::from_millis(2_147_483_648);
        let problems = too_long.problems().to_string();
        assert!(
            problems.starts_with("DATABASE_LOCK_TIMEOUT_MS must be from 1 to 2147483647"),
            "{problems}"
        );
    }

    /// Every limit is a value the operator may give: a fixed-size pool (minimum = maximum), and
    /// each bound exactly.
    #[test]
    fn every_limit_itself_is_accepted() {
        let mut fixed = load(&[
            ("DATABASE_MIN_CONNECTIONS", "5"),
            ("DATABASE_MAX_CONNECTIONS", "5"),
        ])
        .unwrap();
        assert_eq!(fixed.problems().to_string(), "");
        fixed.pool.max_connections = POSTGRES_MAX_CONNECTIONS;
        fixed.pool.min_connections = 1;
        fixed.pool.statement_timeout = DatabaseSettings::MAX_SERVER_TIMEOUT;
        fixed.pool.lock_timeout = DatabaseSettings::MAX_SERVER_TIMEOUT;
        fixed.pool.io_threads = DatabaseSettings::MAX_IO_THREADS;
        assert_eq!(fixed.problems().to_string(), "");
        let smallest = Duration::from_millis(1);
        fixed.pool.acquire_timeout = smallest;
        fixed.pool.statement_timeout = smallest;
        fixed.pool.lock_timeout = smallest;
        fixed.pool.io_threads = 1;
        fixed.pool.max_connections = 1;
        fixed.pool.min_connections = 0;
        assert_eq!(fixed.problems().to_string(), "");
    }

    /// A host list must give up on a silent host in time to try the next within the acquire
    /// timeout (5 s by default).
    #[test]
    fn a_host_list_needs_a_connect_timeout_that_leaves_time_for_its_last_host() {
        // Several hosts also need read-write (counseling-config's rule), given in every case.
        let url = |hosts: &str, query: &str| {
            let separator = if query.is_empty() { '?' } else { '&' };
            format!("postgres://u:p@{hosts}/app{query}{separator}target_session_attrs=read-write")
        };
        for (hosts, query, refused) in [
            ("db1,db2", "", Some("no connect_timeout")),
            ("db1,db2", "?connect_timeout=3", Some("do not fit")),
            (
                "db1,db2,db3",
                "?connect_timeout=2",
                Some("their 3 attempts"),
            ),
            ("db1,db2", "?connect_timeout=2", None),
            ("db1,db2", "?connect_timeout=-1", Some("no connect_timeout")),
            ("db1", "", None),
        ] {
            let settings = load(&[("DATABASE_URL", &url(hosts, query))]).unwrap();
            let problems = settings.problems();
            match refused {
                Some(said) => {
                    assert_eq!(problems.0.len(), 1, "{hosts}{query}: {problems}");
                    assert_eq!(problems.0[0].variable, "DATABASE_URL");
                    assert!(problems.to_string().contains(said), "{problems}");
                }
                None => assert!(problems.0.is_empty(), "{hosts}{query}: {problems}"),
            }
        }
        let longer = load(&[
            ("DATABASE_URL", &url("db1,db2,db3", "?connect_timeout=2")),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "6000"),
        ]);
        assert!(longer.unwrap().problems().0.is_empty());
    }

    /// The URL's `options` may not set what our variables set: the variable would silently win.
    #[test]
    fn the_urls_options_may_not_set_our_session_settings() {
        let settings = load(&[(
            "DATABASE_URL",
            "postgres://u:p@h/app?options=-c%20lock_timeout%3D0",
        )])
        .unwrap();
        let problems = settings.problems();
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert!(
            problems
                .to_string()
                .contains("which DATABASE_LOCK_TIMEOUT_MS sets"),
            "{problems}"
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
