//! Where the database is and how to reach it, from every source an operator may use, checked
//! once for the service, the migration CLI and `just dev`'s probe alike:
//!
//! * the URL: `DATABASE_URL`, or the file `DATABASE_URL_FILE` names (read at start); for the
//!   migration CLI `DATABASE_OWNER_URL`/`DATABASE_OWNER_URL_FILE` first;
//! * the password: in the URL, or the file `DATABASE_PASSWORD_FILE` (`DATABASE_OWNER_PASSWORD_FILE`)
//!   names, read again at every new connection so a rotated secret needs no restart;
//! * the TLS overrides `DATABASE_SSL_MODE` and `DATABASE_SSL_ROOT_CERT`;
//! * libpq's parameters in the URL, and libpq's `PG*` variables where the URL is silent: each
//!   honoured with libpq's meaning or refused ([`crate::libpq`]).
//!
//! [`DatabaseTarget`] holds what was given; [`DatabaseTarget::resolve`] checks it all and gives
//! the [`Connector`] that opens connections. Every problem is reported at once, one line each,
//! named by the variable to change, never quoting a value.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::connect::{Connector, Endpoint, LoadBalance, Password, SessionDefaults};
use crate::database_url::{ordinal, parse_port};
use crate::libpq::{
    LibpqParameters, LibpqUserFiles, ParameterOrigin, ParameterProblem, libpq_user_files,
    unread_password_file,
};
use crate::secret_file::read_secret_file;
use crate::tls::{SslMode, SslRootCert, TlsInputs, TlsSource};
use crate::{DatabaseUrl, Origin, Problem, Problems, Sources, TargetSessionAttrs};

/// The example's placeholder passwords (`.env.example`) begin so. Known to anyone who reads the
/// repository, they are refused wherever a password is read.
pub const PLACEHOLDER_PASSWORD_PREFIX: &str = "change-me";

/// Whose connection this is: the variables differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `counseling-api`: `DATABASE_URL`, `DATABASE_URL_FILE`, `DATABASE_PASSWORD_FILE`.
    Service,
    /// The migration CLI: `DATABASE_OWNER_URL`, `DATABASE_OWNER_URL_FILE`,
    /// `DATABASE_OWNER_PASSWORD_FILE` when any is set, else the service's.
    Owner,
}

/// The variables of one role.
#[derive(Debug, Clone, Copy)]
struct RoleVariables {
    url: &'static str,
    url_file: &'static str,
    password_file: &'static str,
}

const SERVICE: RoleVariables = RoleVariables {
    url: "DATABASE_URL",
    url_file: "DATABASE_URL_FILE",
    password_file: "DATABASE_PASSWORD_FILE",
};

const OWNER: RoleVariables = RoleVariables {
    url: "DATABASE_OWNER_URL",
    url_file: "DATABASE_OWNER_URL_FILE",
    password_file: "DATABASE_OWNER_PASSWORD_FILE",
};

/// The variables this module reads, with what happens when each is unset: for the README's
/// table and `.env.example` (checked against them by tests).
pub const TARGET_VARIABLES: &[(&str, &str)] = &[
    (SERVICE.url, "required, unless DATABASE_URL_FILE is set"),
    (SERVICE.url_file, "unset"),
    (SERVICE.password_file, "unset"),
    (OWNER.url, "unset"),
    (OWNER.url_file, "unset"),
    (OWNER.password_file, "unset"),
    (crate::tls::MODE_OVERRIDE, "unset"),
    (crate::tls::ROOT_CERT_OVERRIDE, "unset"),
];

/// The test kit's server (a superuser's URL; `.env.example` lists it): no setting of any binary
/// of ours, but it shares the service's prefix and `.env`.
pub const TEST_SERVER_VARIABLE: &str = "DATABASE_URL_TEST";

/// Every `DATABASE_` name that is about where to connect, not a pool setting: the target's
/// variables and the test kit's server.
pub fn connection_variables() -> Vec<&'static str> {
    let targets = TARGET_VARIABLES.iter().map(|&(name, _)| name);
    targets.chain([TEST_SERVER_VARIABLE]).collect()
}

/// The connection as configured, before its checks: see the module docs.
#[derive(Clone)]
pub struct DatabaseTarget {
    url: DatabaseUrl,
    /// The variable that gave the URL, named in its problems.
    url_variable: &'static str,
    /// The password file and its variable.
    password_file: Option<(&'static str, PathBuf)>,
    mode_override: Option<SslMode>,
    root_cert_override: Option<SslRootCert>,
    /// Where libpq's `PG*` variables are read (those alone: the target lives as long as the
    /// service); `None`: nowhere (URLs built by our own tools).
    environment: Option<Sources>,
    /// Said once at start (loose secret-file modes), never a value.
    warnings: Vec<String>,
    /// libpq's default files, where it would look for them (never read; see `resolve`).
    libpq_files: Option<LibpqUserFiles>,
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseTarget")
            .field("url_variable", &self.url_variable)
            .finish_non_exhaustive()
    }
}

/// The password libpq takes, in its order: the URL's `password` parameter, even empty (an
/// explicit empty password, after which no PGPASSWORD is read); else the URL's own (an empty one
/// after `user:` is none); else `PGPASSWORD`.
fn password_in_effect(
    in_query: Option<&str>,
    in_url: Option<&SecretString>,
    in_environment: Option<&str>,
) -> Option<SecretString> {
    match (in_query, in_url, in_environment) {
        (Some(password), ..) => Some(SecretString::from(password.to_owned())),
        (None, Some(password), _) => Some(password.clone()),
        (None, None, password) => password.map(|password| SecretString::from(password.to_owned())),
    }
}

impl DatabaseTarget {
    /// Exactly `url`: no password file, no overrides, no `PG*` variables (tests and tools that
    /// build their own URLs).
    pub fn from_url(url: DatabaseUrl) -> Self {
        Self {
            url,
            url_variable: SERVICE.url,
            password_file: None,
            mode_override: None,
            root_cert_override: None,
            environment: None,
            warnings: Vec::new(),
            libpq_files: None,
        }
    }

    /// `self` with the TLS overrides set (as `DATABASE_SSL_MODE`/`DATABASE_SSL_ROOT_CERT`).
    pub fn with_tls_overrides(
        mut self,
        mode: Option<SslMode>,
        root_cert: Option<SslRootCert>,
    ) -> Self {
        self.mode_override = mode;
        self.root_cert_override = root_cert;
        self
    }

    /// The connection `role` is configured for in `sources`. Files named are read now (the
    /// password file again at every connection).
    pub fn from_sources(sources: &Sources, role: Role) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let variables = match role {
            Role::Owner
                if [OWNER.url, OWNER.url_file, OWNER.password_file]
                    .iter()
                    .any(|name| is_set(sources, name)) =>
            {
                if !is_set(sources, OWNER.url) && !is_set(sources, OWNER.url_file) {
                    problems.push(Problem::new(
                        OWNER.password_file,
                        format!("is set without {} or {}", OWNER.url, OWNER.url_file),
                    ));
                    return Err(problems);
                }
                // The owner's URL from .env beside the service's exported: whoever exported it
                // meant that database, and the run would migrate .env's.
                let exported = |name: &&str| {
                    is_set(sources, name) && sources.origin(name) == Some(Origin::Environment)
                };
                let owner_exported = [OWNER.url, OWNER.url_file].iter().any(exported);
                let service_exported = [SERVICE.url, SERVICE.url_file].into_iter().find(exported);
                if let (false, Some(service)) = (owner_exported, service_exported) {
                    let owner = [OWNER.url, OWNER.url_file]
                        .into_iter()
                        .find(|name| is_set(sources, name))
                        .unwrap_or(OWNER.url);
                    problems.push(Problem::new(
                        owner,
                        format!(
                            "comes from .env while {service} is exported: the migrations would \
                             run on .env's database, not the exported one; export {owner} too, \
                             or unset {service}"
                        ),
                    ));
                    return Err(problems);
                }
                OWNER
            }
            _ => SERVICE,
        };
        let mut warnings = Vec::new();
        let url = read_url(sources, variables, &mut problems, &mut warnings);
        if let Some((mode, names)) = sources.dot_env_exposed() {
            // As a secret file's would: the passwords are as open as the file.
            warnings.push(format!(
                ".env may be read by group or others (mode {mode:04o}) and holds passwords ({}); \
                 chmod 600 .env keeps them to this user",
                names.join(", ")
            ));
        }
        let password_file = value(sources, variables.password_file).map(PathBuf::from);
        if let (Some(path), Some((url, url_variable))) = (&password_file, &url) {
            // An empty password is no clash with the file (libpq would read its password file
            // then).
            let url_password = url.password().is_some()
                || url
                    .parameters()
                    .any(|(name, value)| name == "password" && !value.is_empty());
            if url_password {
                problems.push(Problem::new(
                    variables.password_file,
                    format!("is set, but {url_variable} carries a password too: keep one of them"),
                ));
            }
            // libpq would take PGPASSWORD over a password file; ours would silently win.
            if sources
                .environment("PGPASSWORD")
                .is_some_and(|password| !password.is_empty())
            {
                problems.push(Problem::new(
                    variables.password_file,
                    "is set, but so is PGPASSWORD: unset one of them",
                ));
            }
            match read_secret_file(path) {
                Ok(read) => {
                    warnings.extend(
                        read.warning
                            .map(|w| format!("{}: {w}", variables.password_file)),
                    );
                    if is_placeholder(&read.secret) {
                        problems.push(placeholder(variables.password_file));
                    }
                }
                Err(problem) => problems.push(Problem::new(variables.password_file, problem)),
            }
        }
        if let Some((url, url_variable)) = &url {
            let in_url = url.password().into_iter().cloned().chain(
                url.parameters()
                    .filter(|(name, _)| *name == "password")
                    .map(|(_, value)| SecretString::from(value.to_owned())),
            );
            let in_url: Vec<SecretString> = in_url.collect();
            if in_url.iter().any(is_placeholder) {
                problems.push(placeholder(url_variable));
            }
            // PGPASSWORD is used where the URL gives none (with a password file, it is refused
            // above).
            if in_url.is_empty()
                && let Some(password) = sources.environment("PGPASSWORD")
                && is_placeholder(&SecretString::from(password.to_owned()))
            {
                problems.push(placeholder("PGPASSWORD"));
            }
        }
        let mode_override =
            parse_override::<SslMode>(sources, crate::tls::MODE_OVERRIDE, &mut problems);
        let root_cert_override =
            parse_override::<SslRootCert>(sources, crate::tls::ROOT_CERT_OVERRIDE, &mut problems);
        let libpq_files = libpq_user_files(sources);
        if let Some((url, _)) = &url {
            // libpq reads its password file when the password in effect is none or empty; ours,
            // the password file, comes first.
            let in_query = (url.parameters())
                .find(|(name, _)| *name == "password")
                .map(|(_, password)| password);
            let in_effect =
                password_in_effect(in_query, url.password(), sources.environment("PGPASSWORD"));
            let password_given = password_file.is_some()
                || in_effect.is_some_and(|password| !password.expose_secret().is_empty());
            if !password_given && let Some(files) = &libpq_files {
                warnings.extend(unread_password_file(files, variables.password_file));
            }
        }
        if let Some((url, url_variable)) = &url {
            let environment = sources.libpq_variables();
            let (parameters, _) = LibpqParameters::read(url, Some(&environment));
            let endpoints = endpoints(url, &parameters, &mut Vec::new());
            warnings.extend(shared_socket_folders(&endpoints).map(|(folder, mode)| {
                format!(
                    "{url_variable}: the socket folder {folder} may be written by other users \
                     (mode {mode:04o}): any of them could listen there before the server and \
                     take the connection, its password included; use a folder only the server's \
                     user (and group) may write, as Debian's /run/postgresql, or TCP with \
                     sslmode=verify-full"
                )
            }));
        }
        match url {
            Some((url, url_variable)) if problems.is_empty() => Ok(Self {
                url,
                url_variable,
                password_file: password_file.map(|path| (variables.password_file, path)),
                mode_override,
                root_cert_override,
                environment: Some(sources.libpq_variables()),
                warnings,
                libpq_files,
            }),
            _ => Err(problems),
        }
    }

    /// The URL as given (for tools that hand it on).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The variable the URL came from (`DATABASE_URL`, `DATABASE_URL_FILE`, ...).
    pub fn url_variable(&self) -> &'static str {
        self.url_variable
    }

    /// Things to say once at start (a secret file readable by others): never a value.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Checks everything and gives the connector: hosts, credentials, TLS (every file read),
    /// libpq's parameters, and `session`'s settings (which the URL's `options` may not set too).
    pub fn resolve(&self, session: &SessionDefaults) -> Result<Connector, Problems> {
        let (parameters, found) = LibpqParameters::read(&self.url, self.environment.as_ref());
        let mut problems: Vec<ParameterProblem> = found;
        let mut extra = Problems::default();

        let endpoints = endpoints(&self.url, &parameters, &mut problems);
        // As in libpq: the URL's query, then the URL's own part, then the environment.
        let in_url_first = |name: &str, own: Option<&str>| {
            parameters
                .get(name)
                .filter(|(_, origin)| *origin == ParameterOrigin::Url)
                .map(|(value, _)| value.to_owned())
                .or_else(|| own.map(str::to_owned))
                .or_else(|| parameters.get(name).map(|(value, _)| value.to_owned()))
        };
        let user = in_url_first(
            "user",
            Some(self.url.username()).filter(|user| !user.is_empty()),
        );
        // libpq takes an empty user for unset; the driver would log in as "".
        if let Some(("", origin)) = parameters.get("user")
            && origin == ParameterOrigin::Url
        {
            problems.push(ParameterProblem::new(
                origin,
                "user",
                "is empty: the driver would log in as \"\"; name the user, or leave user= out",
            ));
        }
        // A libpq variable as the process environment has it (the driver reads some by itself).
        let exported = |name: &str| self.environment.as_ref()?.environment(name);
        if user.is_none() && exported("PGUSER") == Some("") {
            // libpq takes it for unset (the operating system's user); the driver reads it by
            // itself and would log in as "", which every server refuses.
            extra.push(Problem::new(
                "PGUSER",
                "is set but empty, and the URL names no user: the driver would log in as \"\"; \
                 unset PGUSER, or name the user in the URL",
            ));
        }
        let database = in_url_first("dbname", self.url.database());
        let (in_query, in_environment) = match parameters.get("password") {
            Some((password, ParameterOrigin::Url)) => (Some(password), None),
            Some((password, _)) => (None, Some(password)),
            None => (None, None),
        };
        let password = match &self.password_file {
            Some((variable, path)) => Password::File {
                variable,
                path: path.clone(),
            },
            None => password_in_effect(in_query, self.url.password(), in_environment)
                .map_or(Password::None, Password::Given),
        };
        let connect_timeout = parameters
            .get("connect_timeout")
            .and_then(|(text, origin)| {
                match text.trim().parse::<i64>() {
                    // libpq: zero or negative waits forever; the least wait is 2 s.
                    Ok(seconds) if seconds <= 0 => None,
                    Ok(seconds) => Some(Duration::from_secs(seconds.max(2).unsigned_abs())),
                    Err(_) => {
                        problems.push(ParameterProblem::new(
                            origin,
                            "connect_timeout",
                            "must be a whole number of seconds",
                        ));
                        None
                    }
                }
            });
        // As libpq: an application_name given, even empty (which sends none), wins over the
        // fallback.
        let application_name = parameters
            .get("application_name")
            .or_else(|| parameters.get("fallback_application_name"))
            .map_or_else(
                || session.application_name.clone(),
                |(name, _)| name.to_owned(),
            );
        let mut settings = Vec::new();
        if let Some((options, origin)) = parameters.get("options") {
            match parse_options(options) {
                Ok(parsed) => {
                    for (name, value) in parsed {
                        let ours = session
                            .settings
                            .iter()
                            .find(|(setting, ..)| *setting == name);
                        let by_driver = driver_sets(&name);
                        let later = session
                            .set_later
                            .iter()
                            .find(|(setting, _)| *setting == name)
                            .map(|(_, by)| by);
                        match (ours, later, by_driver) {
                            (Some((_, _, variable)), ..) => problems.push(ParameterProblem::new(
                                origin,
                                "options",
                                format!("sets {name}, which {variable} sets: set it there"),
                            )),
                            (None, Some(by), _) => problems.push(ParameterProblem::new(
                                origin,
                                "options",
                                format!("sets {name}, which {by}: it would be ignored"),
                            )),
                            (None, None, Some(fixed)) => problems.push(ParameterProblem::new(
                                origin,
                                "options",
                                format!(
                                    "sets {name}, which the driver sets for every session \
                                     ({fixed}) after options: it would be ignored"
                                ),
                            )),
                            (None, None, None) => settings.push((name, value)),
                        }
                    }
                }
                Err(problem) => problems.push(ParameterProblem::new(origin, "options", problem)),
            }
        }
        settings.extend(
            session
                .settings
                .iter()
                .map(|(name, value, _)| (name.clone(), value.clone())),
        );
        // An unreadable value is said once, as such: not again as `any` with several hosts.
        let mut attrs_unreadable = false;
        let target_session_attrs = match parameters.get("target_session_attrs") {
            None => TargetSessionAttrs::Any,
            Some((text, origin)) => text.parse().unwrap_or_else(|problem: String| {
                problems.push(ParameterProblem::new(
                    origin,
                    "target_session_attrs",
                    problem,
                ));
                attrs_unreadable = true;
                TargetSessionAttrs::Any
            }),
        };
        // Every binary that reads its settings (the service, the migration CLI, `just dev`'s
        // probe of the service's URL) writes, and the service's readiness means writable.
        if let Some((_, origin)) = parameters.get("target_session_attrs")
            && self.environment.is_some()
            && !target_session_attrs.suits_writers()
        {
            problems.push(ParameterProblem::new(
                origin,
                "target_session_attrs",
                format!(
                    "is {target_session_attrs}, which asks for sessions that cannot write, but \
                     the service and the migrations write: use read-write (with one host, \
                     any or primary also do)"
                ),
            ));
        }
        // With a single host there is nowhere else to go. With several, any (libpq's default)
        // or primary would keep the first node that answers although it cannot write (a standby,
        // or a primary fenced with default_transaction_read_only): our readiness, which means
        // writable, would refuse it at every connect, and a failover would never be followed.
        if self.environment.is_some()
            && !attrs_unreadable
            && endpoints.len() > 1
            && target_session_attrs.suits_writers()
            && target_session_attrs != TargetSessionAttrs::ReadWrite
        {
            // Named where the setting is, else where the host list is (the URL, or PGHOST).
            let given = parameters.get("target_session_attrs");
            let origin = given
                .or_else(|| parameters.get("host"))
                .map_or(ParameterOrigin::Url, |(_, origin)| origin);
            let (default, kept) = match (given, target_session_attrs) {
                (None, _) => (
                    " (libpq's default)",
                    "a standby, or a primary made read-only",
                ),
                (Some(_), TargetSessionAttrs::Primary) => (
                    "",
                    "a primary made read-only with default_transaction_read_only",
                ),
                (Some(_), _) => ("", "a standby, or a primary made read-only"),
            };
            problems.push(ParameterProblem::new(
                origin,
                "target_session_attrs",
                format!(
                    "is {target_session_attrs}{default} with {} hosts: the first node that \
                     answers would be kept even when it cannot write ({kept}), and a failover \
                     never followed; the service and the migrations write: give \
                     target_session_attrs=read-write (in the URL, or PGTARGETSESSIONATTRS)",
                    endpoints.len()
                ),
            ));
        }
        let load_balance = match parameters.get("load_balance_hosts") {
            None | Some(("disable", _)) => LoadBalance::Disable,
            Some(("random", _)) => LoadBalance::Random,
            Some((_, origin)) => {
                problems.push(ParameterProblem::new(
                    origin,
                    "load_balance_hosts",
                    "must be disable or random",
                ));
                LoadBalance::Disable
            }
        };

        let tls_source = |name: &'static str| {
            parameters.get(name).map(|(value, origin)| {
                (
                    value,
                    match origin {
                        ParameterOrigin::Url => TlsSource::Url(name),
                        ParameterOrigin::Environment(variable) => TlsSource::Environment(variable),
                    },
                )
            })
        };
        let client_files = ["PGSSLCERT", "PGSSLKEY"];
        let exported_client_files: Vec<&'static str> = client_files
            .into_iter()
            .filter(|name| exported(name).is_some())
            .collect();
        let empty_client_files: Vec<&'static str> = client_files
            .into_iter()
            .filter(|name| exported(name) == Some(""))
            .collect();
        let tls = crate::tls::resolve(&TlsInputs {
            mode: tls_source("sslmode"),
            root_cert: tls_source("sslrootcert"),
            cert: tls_source("sslcert"),
            key: tls_source("sslkey"),
            no_client_cert: parameters
                .get("sslcertmode")
                .is_some_and(|(mode, _)| mode == "disable"),
            exported_client_files: &exported_client_files,
            empty_client_files: &empty_client_files,
            // Over sockets alone there is no TLS, so no client certificate to get wrong.
            tls_possible: !endpoints.iter().all(Endpoint::is_socket),
            mode_override: self.mode_override,
            root_cert_override: self.root_cert_override.as_ref(),
            default_root_cert: (self.libpq_files.as_ref())
                .map(|files| files.root_cert.as_path())
                // libpq's stat(): anything there counts (a folder makes its connects fail).
                .filter(|path| path.exists()),
        });
        let tls = match tls {
            Ok(tls) => {
                // PostgreSQL speaks no TLS over a unix socket: a mode that requires it cannot be
                // met there, and going on without it would send the password to whoever made
                // the socket file.
                let socket = endpoints.iter().position(Endpoint::is_socket);
                if let Some(index) = socket.filter(|_| tls.mode() >= SslMode::Require) {
                    extra.push(Problem::new(
                        self.url_variable,
                        format!(
                            "names a unix socket (its {} host), where PostgreSQL has no TLS, \
                             while sslmode is {} (from the URL, PGSSLMODE or \
                             DATABASE_SSL_MODE): reach the server over TCP for TLS, or set \
                             sslmode=disable for a socket",
                            ordinal(index),
                            tls.mode()
                        ),
                    ));
                }
                Some(tls)
            }
            Err(found) => {
                extra.extend(
                    found
                        .iter()
                        .map(|problem| problem.to_problem(self.url_variable)),
                );
                None
            }
        };

        let mut all = Problems(
            problems
                .iter()
                .map(|problem| problem.to_problem(self.url_variable))
                .collect(),
        );
        all.extend(extra.0);
        match tls {
            Some(tls) if all.is_empty() => Ok(Connector {
                endpoints,
                user,
                database,
                password,
                tls,
                application_name,
                connect_timeout,
                settings,
                target_session_attrs,
                load_balance,
                log_statements: session.log_statements,
            }),
            _ => Err(all),
        }
    }
}

fn is_set(sources: &Sources, name: &str) -> bool {
    value(sources, name).is_some()
}

/// A variable's value; empty is unset.
fn value<'a>(sources: &'a Sources, name: &str) -> Option<&'a str> {
    sources
        .get(name)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

pub(crate) fn is_placeholder(password: &SecretString) -> bool {
    password
        .expose_secret()
        .starts_with(PLACEHOLDER_PASSWORD_PREFIX)
}

fn placeholder(variable: &str) -> Problem {
    Problem::new(
        variable,
        format!(
            "holds the example's placeholder password ({PLACEHOLDER_PASSWORD_PREFIX}...), known \
             to anyone who reads the repository: set a real one (`just env-file` writes a .env \
             with fresh passwords)"
        ),
    )
}

/// The URL from `variables.url` or the file `variables.url_file` names, with the variable it
/// came from; problems (both set, neither set, unreadable, malformed) go to `problems`.
fn read_url(
    sources: &Sources,
    variables: RoleVariables,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<(DatabaseUrl, &'static str)> {
    match (
        value(sources, variables.url),
        value(sources, variables.url_file),
    ) {
        (Some(_), Some(_)) => {
            let origin = |name| {
                sources
                    .origin(name)
                    .map(|o| o.to_string())
                    .unwrap_or_default()
            };
            problems.push(Problem::new(
                variables.url_file,
                format!(
                    "is set (in {}) next to {} (in {}): set only one of them",
                    origin(variables.url_file),
                    variables.url,
                    origin(variables.url)
                ),
            ));
            None
        }
        (Some(text), None) => match DatabaseUrl::parse(text) {
            Ok(url) => Some((url, variables.url)),
            Err(error) => {
                problems.push(Problem::new(variables.url, error.to_string()));
                None
            }
        },
        (None, Some(path)) => match read_secret_file(std::path::Path::new(path)) {
            Ok(read) => {
                warnings.extend(read.warning.map(|w| format!("{}: {w}", variables.url_file)));
                match DatabaseUrl::parse(read.secret.expose_secret()) {
                    Ok(url) => Some((url, variables.url_file)),
                    Err(error) => {
                        problems.push(Problem::new(
                            variables.url_file,
                            format!("names a file whose URL {error}"),
                        ));
                        None
                    }
                }
            }
            Err(problem) => {
                problems.push(Problem::new(variables.url_file, problem));
                None
            }
        },
        (None, None) => {
            problems.push(Problem::new(
                variables.url,
                format!(
                    "is not set: set it (or {}) in the environment or in .env (see .env.example)",
                    variables.url_file
                ),
            ));
            None
        }
    }
}

fn parse_override<T: std::str::FromStr>(
    sources: &Sources,
    name: &'static str,
    problems: &mut Problems,
) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    let text = value(sources, name)?;
    match text.parse::<T>() {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            problems.push(Problem::new(name, error.to_string()));
            None
        }
    }
}

/// The socket folders among `endpoints` that other users may write (as /tmp, where a server
/// built from source puts its socket): whoever binds the socket file first gets the connection.
/// libpq's guard, `requirepeer`, is not offered (the driver opens the socket itself).
#[cfg(unix)]
fn shared_socket_folders(endpoints: &[Endpoint]) -> impl Iterator<Item = (&str, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut folders: Vec<&str> = (endpoints.iter())
        .filter(|endpoint| endpoint.is_socket())
        .map(|endpoint| endpoint.host.as_str())
        .collect();
    folders.sort_unstable();
    folders.dedup();
    folders.into_iter().filter_map(|folder| {
        let mode = std::fs::metadata(folder).ok()?.permissions().mode() & 0o7777;
        (mode & 0o002 != 0).then_some((folder, mode))
    })
}

/// Windows' socket folders have ACLs, not mode bits, and they are not read.
#[cfg(not(unix))]
fn shared_socket_folders(_endpoints: &[Endpoint]) -> impl Iterator<Item = (&str, u32)> {
    std::iter::empty()
}

/// The hosts to try, in order, as libpq builds them: the `host` parameter, else the URL's host
/// list, else `PGHOST`. Ports as libpq pairs them: the `port` parameter (one for all, or one per
/// host), else the URL's authority, else `PGPORT`, else 5432. libpq keeps the authority's ports
/// as the port value whenever it names a port or more than one host (`h1,h2` is the list `,`):
/// then `PGPORT` applies to none of them, an empty entry is 5432, and they pair with the `host`
/// parameter's hosts if it replaces the authority's (`h1:5433/db?host=h2` is `h2:5433`).
fn endpoints(
    url: &DatabaseUrl,
    parameters: &LibpqParameters,
    problems: &mut Vec<ParameterProblem>,
) -> Vec<Endpoint> {
    let host_parameter = parameters
        .get("host")
        .filter(|(_, origin)| *origin == ParameterOrigin::Url || url.hosts().is_empty());
    let hosts: Vec<String> = if let Some((list, origin)) = host_parameter {
        let hosts: Vec<String> = list.split(',').map(|host| host.trim().to_owned()).collect();
        if let Some(index) = hosts.iter().position(String::is_empty) {
            problems.push(ParameterProblem::new(
                origin,
                "host",
                format!(
                    "has a malformed host list: the {} host is empty",
                    ordinal(index)
                ),
            ));
            return Vec::new();
        }
        hosts
    } else if !url.hosts().is_empty() {
        url.hosts().iter().map(|host| host.host.clone()).collect()
    } else {
        problems.push(ParameterProblem::new(
            ParameterOrigin::Url,
            "host",
            "is not given: name the server in the URL (libpq would look for a local socket)",
        ));
        return Vec::new();
    };
    let authority = url.hosts();
    let authority_ports = (authority.len() > 1 || authority.iter().any(|host| host.port.is_some()))
        .then(|| authority.iter().map(|host| host.port).collect::<Vec<_>>());
    let port_parameter = parameters
        .get("port")
        .filter(|(_, origin)| *origin == ParameterOrigin::Url || authority_ports.is_none());
    let (ports, origin) = match (port_parameter, authority_ports) {
        (Some((list, origin)), _) => {
            let mut parsed = Vec::new();
            for (index, port) in list.split(',').map(str::trim).enumerate() {
                match (port.is_empty(), parse_port(port)) {
                    (true, _) => parsed.push(None),
                    (false, Some(port)) => parsed.push(Some(port)),
                    (false, None) => {
                        problems.push(ParameterProblem::new(
                            origin,
                            "port",
                            format!(
                                "the {} port is not a number from 1 to 65535",
                                ordinal(index)
                            ),
                        ));
                        return Vec::new();
                    }
                }
            }
            (parsed, Some(origin))
        }
        (None, Some(ports)) => (ports, None),
        (None, None) => (vec![None], None),
    };
    let ports = match ports.len() {
        1 => vec![ports[0]; hosts.len()],
        n if n == hosts.len() => ports,
        n => {
            let count = hosts.len();
            problems.push(match origin {
                Some(origin) => ParameterProblem::new(
                    origin,
                    "port",
                    format!("lists {n} ports for {count} hosts: give one port, or one per host"),
                ),
                // libpq keeps the replaced hosts' ports, one per host.
                None => ParameterProblem::new(
                    ParameterOrigin::Url,
                    "host",
                    format!(
                        "lists {count} hosts, but the URL's host part gives {n} ports (one per \
                         host there): give the ports in a port parameter"
                    ),
                ),
            });
            return Vec::new();
        }
    };
    hosts
        .into_iter()
        .zip(ports)
        .map(|(host, port)| Endpoint {
            host,
            port: port.unwrap_or(5432),
        })
        .collect()
}

/// The server settings the driver sends in every startup message, each as a parameter of its
/// own, which the server applies after `options`: so a value in `options` never takes effect.
/// `application_name` has a parameter of ours; the others cannot be changed at connect time.
const DRIVER_SETTINGS: &[(&str, &str)] = &[
    ("datestyle", "DateStyle=ISO, MDY"),
    ("timezone", "TimeZone=UTC"),
    ("client_encoding", "client_encoding=UTF8"),
    ("extra_float_digits", "extra_float_digits=2"),
    ("application_name", "from the application_name parameter"),
];

/// What the driver sets `name` to at connect time, if it does (names are case-insensitive).
pub(crate) fn driver_sets(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    DRIVER_SETTINGS
        .iter()
        .find(|(setting, _)| *setting == name)
        .map(|&(_, fixed)| fixed)
}

/// libpq's `options`: server settings as `-c name=value` (or `-cname=value`, `--name=value`),
/// separated by spaces; a backslash keeps the next character (a space in a value). Other server
/// switches are refused: the driver passes only settings on.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut escaped = false;
    for character in options.chars() {
        match (escaped, character) {
            (true, c) => {
                word.push(c);
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (false, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words
                .next()
                .ok_or_else(|| "ends with -c and no setting".to_owned())?
        } else if let Some(setting) = word.strip_prefix("-c") {
            setting.to_owned()
        } else if let Some(setting) = word.strip_prefix("--") {
            setting.to_owned()
        } else {
            return Err(
                "may only hold server settings as -c name=value: other server switches are not \
                 passed on"
                    .to_owned(),
            );
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| "has a -c setting without =".to_owned())?;
        if name.is_empty() {
            return Err("has a -c setting without a name".to_owned());
        }
        // The driver escapes only spaces and backslashes when it sends the settings on; the
        // server splits on tabs and line breaks too, so an escaped one would start a switch of
        // its own there.
        if setting.chars().any(char::is_control) {
            return Err("has a control character (a tab, a line break) in a -c setting".to_owned());
        }
        // As the server reads them: dashes in the name (never the value) are underscores.
        let name = name.replace('-', "_").to_ascii_lowercase();
        settings.push((name, value.to_owned()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests;
