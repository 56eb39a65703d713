//! libpq 18's connection parameters (its documentation, section 32.1.2) and the environment
//! variables that stand in for them (section 32.15): each is honoured with libpq's meaning or
//! refused at start, one line naming it. Nothing a user writes is ignored.
//!
//! The driver (sqlx) would read a few of them and drop the rest with a warning printed before
//! logging starts, so the service started normally and did none of it: `channel_binding=require`,
//! `sslcrl=...` or a typo all passed. Here the list below decides; [`crate::DatabaseTarget`] reads
//! the honoured values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{DatabaseUrl, Sources};

/// What we do with a parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// Honoured with libpq's meaning (its value is checked where it is used).
    Honoured,
    /// Honoured for these values, which mean what the driver does anyway; any other value is
    /// refused, saying why.
    Only(&'static [&'static str], &'static str),
    /// Refused whatever its value, saying why.
    Refused(&'static str),
}

/// A libpq connection parameter, the environment variable libpq reads where a connection string
/// leaves it out, and our rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parameter {
    pub name: &'static str,
    pub environment: Option<&'static str>,
    pub rule: Rule,
}

const NO_GSSAPI: &str = "this build has no GSSAPI or Kerberos support";
const NO_KEEPALIVES: &str = "the driver does not set TCP keepalives";
const NO_CRL: &str = "the driver cannot check certificate revocation lists";
const NO_OAUTH: &str = "the driver does not do OAuth authentication";
const NO_SCRAM_KEYS: &str =
    "the driver signs in with the password itself: SCRAM keys cannot be given instead";
const PROTOCOL_3_0: &str = "the driver speaks version 3.0 of the protocol only";

const fn parameter(name: &'static str, environment: Option<&'static str>, rule: Rule) -> Parameter {
    Parameter {
        name,
        environment,
        rule,
    }
}

/// Every connection parameter of libpq 18, in the order of its documentation.
pub(crate) const PARAMETERS: &[Parameter] = &[
    parameter("host", Some("PGHOST"), Rule::Honoured),
    parameter(
        "hostaddr",
        Some("PGHOSTADDR"),
        Rule::Refused(
            "the driver connects to, and checks the certificate of, one name per host: put the \
             address in host",
        ),
    ),
    parameter("port", Some("PGPORT"), Rule::Honoured),
    parameter("dbname", Some("PGDATABASE"), Rule::Honoured),
    parameter("user", Some("PGUSER"), Rule::Honoured),
    parameter("password", Some("PGPASSWORD"), Rule::Honoured),
    parameter(
        "passfile",
        Some("PGPASSFILE"),
        Rule::Refused(".pgpass files are not read: use DATABASE_PASSWORD_FILE"),
    ),
    parameter(
        "require_auth",
        Some("PGREQUIREAUTH"),
        Rule::Refused(
            "the driver answers whichever authentication method the server asks for and cannot \
             refuse one: use sslmode=verify-full, so that only the real server can ask",
        ),
    ),
    parameter(
        "channel_binding",
        Some("PGCHANNELBINDING"),
        Rule::Only(
            &["disable"],
            "the driver does not do SCRAM channel binding: only disable can be honoured",
        ),
    ),
    parameter("connect_timeout", Some("PGCONNECT_TIMEOUT"), Rule::Honoured),
    parameter(
        "client_encoding",
        Some("PGCLIENTENCODING"),
        Rule::Only(
            &["UTF8", "utf8", "UTF-8", "utf-8"],
            "the driver speaks UTF8 only",
        ),
    ),
    parameter("options", Some("PGOPTIONS"), Rule::Honoured),
    parameter("application_name", Some("PGAPPNAME"), Rule::Honoured),
    parameter("fallback_application_name", None, Rule::Honoured),
    parameter(
        "keepalives",
        None,
        Rule::Only(
            &["0"],
            "the driver does not set TCP keepalives: only 0 can be honoured",
        ),
    ),
    parameter("keepalives_idle", None, Rule::Refused(NO_KEEPALIVES)),
    parameter("keepalives_interval", None, Rule::Refused(NO_KEEPALIVES)),
    parameter("keepalives_count", None, Rule::Refused(NO_KEEPALIVES)),
    parameter(
        "tcp_user_timeout",
        None,
        Rule::Refused("the driver does not set TCP_USER_TIMEOUT"),
    ),
    parameter(
        "replication",
        None,
        Rule::Refused("replication connections are not what this service makes"),
    ),
    parameter(
        "gssencmode",
        Some("PGGSSENCMODE"),
        Rule::Only(
            &["disable", "prefer"],
            "this build has no GSSAPI support, so require cannot be met",
        ),
    ),
    parameter("sslmode", Some("PGSSLMODE"), Rule::Honoured),
    parameter(
        "requiressl",
        Some("PGREQUIRESSL"),
        Rule::Refused("deprecated in libpq: use sslmode=require"),
    ),
    parameter(
        "sslnegotiation",
        Some("PGSSLNEGOTIATION"),
        Rule::Only(
            &["postgres"],
            "the driver negotiates TLS the PostgreSQL way only (direct is not supported)",
        ),
    ),
    parameter(
        "sslcompression",
        Some("PGSSLCOMPRESSION"),
        Rule::Only(&["0"], "TLS compression is not supported"),
    ),
    parameter("sslcert", Some("PGSSLCERT"), Rule::Honoured),
    parameter("sslkey", Some("PGSSLKEY"), Rule::Honoured),
    parameter(
        "sslkeylogfile",
        None,
        Rule::Refused("the driver does not write TLS key logs"),
    ),
    parameter(
        "sslpassword",
        None,
        Rule::Refused(
            "encrypted client keys are not supported: give a key file without a passphrase, mode 0600",
        ),
    ),
    parameter(
        "sslcertmode",
        Some("PGSSLCERTMODE"),
        Rule::Only(
            &["allow", "disable"],
            "the driver cannot tell whether the server asked for a client certificate, so \
             require cannot be checked",
        ),
    ),
    parameter("sslrootcert", Some("PGSSLROOTCERT"), Rule::Honoured),
    parameter("sslcrl", Some("PGSSLCRL"), Rule::Refused(NO_CRL)),
    parameter("sslcrldir", Some("PGSSLCRLDIR"), Rule::Refused(NO_CRL)),
    parameter(
        "sslsni",
        Some("PGSSLSNI"),
        Rule::Only(&["1"], "the driver always sends SNI for host names"),
    ),
    parameter(
        "requirepeer",
        Some("PGREQUIREPEER"),
        Rule::Refused("the driver cannot check the peer of a unix socket"),
    ),
    parameter(
        "ssl_min_protocol_version",
        Some("PGSSLMINPROTOCOLVERSION"),
        Rule::Only(
            &["TLSv1", "TLSv1.1", "TLSv1.2"],
            "the driver negotiates TLS 1.2 or 1.3 and cannot be limited to 1.3",
        ),
    ),
    parameter(
        "ssl_max_protocol_version",
        Some("PGSSLMAXPROTOCOLVERSION"),
        Rule::Only(
            &["TLSv1.3"],
            "the driver may negotiate TLS 1.3 and cannot be limited to an older version",
        ),
    ),
    parameter(
        "min_protocol_version",
        Some("PGMINPROTOCOLVERSION"),
        Rule::Only(&["3.0"], PROTOCOL_3_0),
    ),
    // A maximum the driver stays under: libpq too settles on 3.0 with a server of 3.0 only.
    parameter(
        "max_protocol_version",
        Some("PGMAXPROTOCOLVERSION"),
        Rule::Only(&["3.0", "3.2", "latest"], PROTOCOL_3_0),
    ),
    parameter("krbsrvname", Some("PGKRBSRVNAME"), Rule::Refused(NO_GSSAPI)),
    parameter("gsslib", Some("PGGSSLIB"), Rule::Refused(NO_GSSAPI)),
    parameter(
        "gssdelegation",
        Some("PGGSSDELEGATION"),
        Rule::Only(&["0"], NO_GSSAPI),
    ),
    parameter("scram_client_key", None, Rule::Refused(NO_SCRAM_KEYS)),
    parameter("scram_server_key", None, Rule::Refused(NO_SCRAM_KEYS)),
    parameter(
        "service",
        Some("PGSERVICE"),
        Rule::Refused("connection service files are not read: put the parameters in the URL"),
    ),
    parameter(
        "target_session_attrs",
        Some("PGTARGETSESSIONATTRS"),
        Rule::Honoured,
    ),
    parameter(
        "load_balance_hosts",
        Some("PGLOADBALANCEHOSTS"),
        Rule::Honoured,
    ),
    parameter("oauth_issuer", None, Rule::Refused(NO_OAUTH)),
    parameter("oauth_client_id", None, Rule::Refused(NO_OAUTH)),
    parameter("oauth_client_secret", None, Rule::Refused(NO_OAUTH)),
    parameter("oauth_scope", None, Rule::Refused(NO_OAUTH)),
];

/// libpq's environment variables that are no connection parameter but set session defaults at
/// connect time, which the driver does not do.
const SESSION_DEFAULT_VARIABLES: &[(&str, &str)] = &[
    ("PGDATESTYLE", "datestyle"),
    ("PGTZ", "timezone"),
    ("PGGEQO", "geqo"),
];

/// libpq's default files of the user it runs as, which the service never reads: the password
/// file and the CA file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LibpqUserFiles {
    /// `~/.pgpass`; `%APPDATA%\postgresql\pgpass.conf` on Windows.
    pub(crate) password_file: PathBuf,
    /// `~/.postgresql/root.crt`; `%APPDATA%\postgresql\root.crt` on Windows.
    pub(crate) root_cert: PathBuf,
}

/// Where libpq's default files would be: under `$HOME` as given (`%APPDATA%` on Windows), as
/// libpq 15 and later take it. Where it is unset or empty, libpq asks the user database for this
/// user's home, and so does this (a service started without `HOME`, as systemd starts one
/// without `User=`, is checked as `psql` run by that user would read). On Windows it asks the
/// system for the AppData folder; this does not, and tells such a service nothing (a gap, not a
/// harm: the files are never read either way).
pub(crate) fn libpq_user_files(sources: &Sources) -> Option<LibpqUserFiles> {
    let variable = if cfg!(windows) { "APPDATA" } else { "HOME" };
    let given = sources
        .environment(variable)
        .filter(|base| !base.is_empty())
        .map(PathBuf::from);
    let base = given.or_else(home_of_this_user)?;
    let base = base.as_path();
    Some(if cfg!(windows) {
        let dir = base.join("postgresql");
        LibpqUserFiles {
            password_file: dir.join("pgpass.conf"),
            root_cert: dir.join("root.crt"),
        }
    } else {
        LibpqUserFiles {
            password_file: base.join(".pgpass"),
            root_cert: base.join(".postgresql").join("root.crt"),
        }
    })
}

/// This process's user's home folder, from the user database.
#[cfg(unix)]
fn home_of_this_user() -> Option<PathBuf> {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok()??;
    Some(user.dir).filter(|dir| !dir.as_os_str().is_empty())
}

/// Windows' AppData folder is not looked up without `%APPDATA%`.
#[cfg(not(unix))]
fn home_of_this_user() -> Option<PathBuf> {
    None
}

/// The warning for libpq's password file, when it is there: libpq reads it where no password is
/// given, the service never does, so a connection that works from `psql` and fails
/// authentication here explains itself (never its contents). `password_file` is the variable to
/// use instead.
pub(crate) fn unread_password_file(files: &LibpqUserFiles, password_file: &str) -> Option<String> {
    let path = &files.password_file;
    path.is_file().then(|| {
        format!(
            "{} is not read, and no password is given: libpq would look for one there; set \
             {password_file} (or PGPASSWORD)",
            path.display()
        )
    })
}

/// Whether `name` is one of libpq's environment variables (a parameter's, or a session
/// default's).
pub(crate) fn is_libpq_variable(name: &str) -> bool {
    PARAMETERS
        .iter()
        .any(|parameter| parameter.environment == Some(name))
        || SESSION_DEFAULT_VARIABLES
            .iter()
            .any(|(variable, _)| *variable == name)
}

/// The driver's own spellings of some parameters: not libpq's, so refused with the right name.
const DRIVER_ALIASES: &[(&str, &str)] = &[
    ("ssl-mode", "sslmode"),
    ("ssl-root-cert", "sslrootcert"),
    ("ssl-ca", "sslrootcert"),
    ("ssl-cert", "sslcert"),
    ("ssl-key", "sslkey"),
];

/// Where a parameter's value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterOrigin {
    /// In the database URL (`?name=value`, or its host list, user, password or path).
    Url,
    /// In libpq's environment variable of that name (the URL leaves the parameter out).
    Environment(&'static str),
}

/// Something wrong with one parameter: named by where it was found, never by its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParameterProblem {
    pub origin: ParameterOrigin,
    pub name: String,
    pub problem: String,
}

impl ParameterProblem {
    pub(crate) fn new(
        origin: ParameterOrigin,
        name: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            origin,
            name: name.into(),
            problem: problem.into(),
        }
    }

    /// The problem as one line for the user: for a URL parameter, about `url_variable`.
    pub(crate) fn to_problem(&self, url_variable: &str) -> crate::Problem {
        match self.origin {
            ParameterOrigin::Url => crate::Problem::new(
                url_variable,
                format!("has a bad parameter: {}: {}", self.name, self.problem),
            ),
            ParameterOrigin::Environment(variable) => {
                crate::Problem::new(variable, self.problem.clone())
            }
        }
    }
}

/// The parameters in effect: each one's value and where it came from, the URL winning over the
/// environment as in libpq. Only honoured parameters are kept; every other one is a problem.
#[derive(Default, Clone)]
pub(crate) struct LibpqParameters {
    values: BTreeMap<&'static str, (String, ParameterOrigin)>,
}

// Hand-written: the values include `password` (the URL's parameter, or PGPASSWORD).
impl std::fmt::Debug for LibpqParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.values.iter().map(|(name, (value, origin))| {
            let value = if *name == "password" {
                "[redacted]"
            } else {
                value.as_str()
            };
            (name, (value, origin))
        });
        f.debug_map().entries(shown).finish()
    }
}

impl LibpqParameters {
    /// Reads `url`'s query and, for what it leaves out, libpq's variables from the process
    /// environment of `sources` (`None`: none, as for URLs built by our own tools).
    pub(crate) fn read(
        url: &DatabaseUrl,
        sources: Option<&Sources>,
    ) -> (Self, Vec<ParameterProblem>) {
        let mut found = Self::default();
        let mut problems = Vec::new();
        let mut after_password = false;
        for (name, value) in url.parameters() {
            let Some(parameter) = PARAMETERS.iter().find(|parameter| parameter.name == name) else {
                if after_password {
                    // Possibly the rest of a password with a bare `&` (or several) in it: never
                    // quoted.
                    problems.push(ParameterProblem::new(
                        ParameterOrigin::Url,
                        "password",
                        "is followed by a parameter that libpq does not know (not shown: it may \
                         be part of the password); write an & in a password as %26",
                    ));
                    continue;
                }
                let hint = DRIVER_ALIASES
                    .iter()
                    .find(|(alias, _)| *alias == name)
                    .map(|(_, libpq)| format!(" (libpq's name is {libpq})"))
                    .unwrap_or_default();
                problems.push(ParameterProblem::new(
                    ParameterOrigin::Url,
                    name,
                    format!("is not a libpq connection parameter{hint}"),
                ));
                continue;
            };
            after_password |= parameter.name == "password";
            // The last one wins, as in libpq.
            found
                .values
                .insert(parameter.name, (value.to_owned(), ParameterOrigin::Url));
        }
        if let Some(sources) = sources {
            // libpq reads its variables from the process environment; a `.env` is ours. One
            // there would be ignored, so it is refused instead.
            let variables = PARAMETERS
                .iter()
                .filter_map(|parameter| parameter.environment)
                .chain(
                    SESSION_DEFAULT_VARIABLES
                        .iter()
                        .map(|(variable, _)| *variable),
                );
            for variable in variables {
                if sources.origin(variable) == Some(crate::Origin::DotEnv) {
                    problems.push(ParameterProblem::new(
                        ParameterOrigin::Environment(variable),
                        variable,
                        "is set in .env, where libpq's variables are not read: export it, or \
                         put the parameter in the URL",
                    ));
                }
            }
            // The driver itself sends PGOPTIONS, besides the URL's options; libpq ignores it when
            // the URL has options. Both at once cannot mean what libpq means.
            if found.values.contains_key("options")
                && sources
                    .environment("PGOPTIONS")
                    .is_some_and(|v| !v.is_empty())
            {
                problems.push(ParameterProblem::new(
                    ParameterOrigin::Environment("PGOPTIONS"),
                    "PGOPTIONS",
                    "is set next to the URL's options: libpq would ignore it, the driver would \
                     send both; unset it, or move its settings into the URL",
                ));
            }
            for parameter in PARAMETERS {
                let Some(variable) = parameter.environment else {
                    continue;
                };
                if found.values.contains_key(parameter.name) {
                    continue;
                }
                // Empty is unset, as libpq's callers usually mean it.
                if let Some(value) = sources.environment(variable).filter(|v| !v.is_empty()) {
                    found.values.insert(
                        parameter.name,
                        (value.to_owned(), ParameterOrigin::Environment(variable)),
                    );
                }
            }
            for (variable, setting) in SESSION_DEFAULT_VARIABLES {
                if sources.environment(variable).is_some_and(|v| !v.is_empty()) {
                    let instead = match crate::target::driver_sets(setting) {
                        Some(fixed) => format!("the driver fixes {fixed} for every session"),
                        None => format!("use options=-c {setting}=... in the URL instead"),
                    };
                    problems.push(ParameterProblem::new(
                        ParameterOrigin::Environment(variable),
                        *variable,
                        format!(
                            "is not honoured: libpq sends it as a session default, the driver \
                             does not; {instead}"
                        ),
                    ));
                }
            }
        }
        found.values.retain(|name, (value, origin)| {
            let Some(parameter) = PARAMETERS.iter().find(|parameter| parameter.name == *name)
            else {
                return false;
            };
            match parameter.rule {
                Rule::Honoured => true,
                Rule::Only(values, _) if values.contains(&value.as_str()) => true,
                Rule::Only(_, why) | Rule::Refused(why) => {
                    problems.push(ParameterProblem::new(
                        *origin,
                        *name,
                        format!("is not supported: {why}"),
                    ));
                    false
                }
            }
        });
        (found, problems)
    }

    /// The value in effect of an honoured parameter, and where it came from.
    pub(crate) fn get(&self, name: &str) -> Option<(&str, ParameterOrigin)> {
        self.values
            .get(name)
            .map(|(value, origin)| (value.as_str(), *origin))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Without `HOME` (unset or empty), libpq asks the user database for the home folder: so do
    /// we, or `psql`'s files would go unseen under a service started without it.
    #[cfg(unix)]
    #[test]
    fn without_home_the_user_databases_home_is_used() {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap();
        let home = user.unwrap().dir;
        for sources in [Sources::from_vars([]), Sources::from_vars([("HOME", "")])] {
            let files = libpq_user_files(&sources).unwrap();
            assert_eq!(files.password_file, home.join(".pgpass"));
            assert_eq!(files.root_cert, home.join(".postgresql").join("root.crt"));
        }
        let given = libpq_user_files(&Sources::from_vars([("HOME", "/elsewhere")])).unwrap();
        assert_eq!(
            given.password_file,
            std::path::Path::new("/elsewhere/.pgpass")
        );
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let (found, _) = read(
            "postgres://u@h/db?password=hunter2&sslmode=require",
            &[("PGAPPNAME", "tool")],
        );
        let shown = format!("{found:?}");
        assert!(
            shown.contains("require") && shown.contains("[redacted]"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        let (found, _) = read("postgres://u@h/db", &[("PGPASSWORD", "hunter2")]);
        assert!(!format!("{found:?}").contains("hunter2"));
    }

    fn read(url: &str, environment: &[(&str, &str)]) -> (LibpqParameters, Vec<ParameterProblem>) {
        let url = DatabaseUrl::parse(url).unwrap();
        let sources = Sources::from_vars(environment.iter().copied());
        LibpqParameters::read(&url, Some(&sources))
    }

    fn names(problems: &[ParameterProblem]) -> Vec<&str> {
        problems
            .iter()
            .map(|problem| problem.name.as_str())
            .collect()
    }

    /// libpq 18's documentation lists these, in this order (section 32.1.2); each is here.
    #[test]
    fn every_libpq_18_parameter_has_a_rule() {
        let documented = "host hostaddr port dbname user password passfile require_auth \
            channel_binding connect_timeout client_encoding options application_name \
            fallback_application_name keepalives keepalives_idle keepalives_interval \
            keepalives_count tcp_user_timeout replication gssencmode sslmode requiressl \
            sslnegotiation sslcompression sslcert sslkey sslkeylogfile sslpassword sslcertmode \
            sslrootcert sslcrl sslcrldir sslsni requirepeer ssl_min_protocol_version \
            ssl_max_protocol_version min_protocol_version max_protocol_version krbsrvname \
            gsslib gssdelegation scram_client_key scram_server_key service \
            target_session_attrs load_balance_hosts oauth_issuer oauth_client_id \
            oauth_client_secret oauth_scope";
        let ours: Vec<&str> = PARAMETERS.iter().map(|parameter| parameter.name).collect();
        assert_eq!(ours, documented.split_whitespace().collect::<Vec<_>>());
    }

    /// As libpq reads a URL: `ssl=true` is `sslmode=require`; another value of `ssl` is unknown.
    #[test]
    fn ssl_true_is_sslmode_require() {
        let (found, problems) = read("postgres://u@h/db?ssl=true", &[]);
        assert!(problems.is_empty());
        assert_eq!(
            found.get("sslmode"),
            Some(("require", ParameterOrigin::Url))
        );
        let (_, problems) = read("postgres://u@h/db?ssl=1", &[]);
        assert_eq!(names(&problems), ["ssl"]);
        // Tools that connect with the URL's own options read it so too.
        let url = DatabaseUrl::parse("postgres://u@h/db?ssl=true").unwrap();
        let mode = url.connect_options().get_ssl_mode();
        assert!(matches!(mode, sea_orm::sqlx::postgres::PgSslMode::Require));
    }

    /// A bare `&` in a password parameter makes the rest of it look like a parameter's name:
    /// that name is never quoted.
    #[test]
    fn an_unknown_parameter_after_the_password_is_not_quoted() {
        let (_, problems) = read("postgres://u@h/db?password=Xy7&Qz9secret=Lm2", &[]);
        assert_eq!(names(&problems), ["password"]);
        let line = problems[0].to_problem("DATABASE_URL").to_string();
        assert!(!line.contains("Qz9secret"), "{line}");
        assert!(line.contains("%26"), "{line}");
        // Two bare `&`: no later name is quoted either.
        let (_, problems) = read(
            "postgres://u@h/db?password=Xy&a=1&Qz9=x&sslmode=require",
            &[],
        );
        assert_eq!(names(&problems), ["password", "password"]);
        // Before the password, an unknown name is quoted as ever.
        let (_, problems) = read("postgres://u@h/db?applicaton_name=x&password=Xy", &[]);
        assert_eq!(names(&problems), ["applicaton_name"]);
    }

    #[test]
    fn unknown_and_refused_parameters_are_each_a_problem() {
        let (found, problems) = read(
            "postgres://u:hunter2@h/db?sslmode=require&channel_binding=require&sslcrl=/x.crl\
             &applicaton_name=typo&ssl-mode=require&require_auth=scram-sha-256&keepalives=0",
            &[],
        );
        assert_eq!(
            names(&problems),
            [
                "applicaton_name",
                "ssl-mode",
                "channel_binding",
                "require_auth",
                "sslcrl"
            ]
        );
        assert!(problems[1].problem.contains("libpq's name is sslmode"));
        let line = problems[0].to_problem("DATABASE_URL").to_string();
        assert_eq!(
            line,
            "DATABASE_URL has a bad parameter: applicaton_name: is not a libpq connection parameter"
        );
        for problem in &problems {
            assert!(!problem.problem.contains("hunter2"));
        }
        assert_eq!(
            found.get("sslmode"),
            Some(("require", ParameterOrigin::Url))
        );
        assert_eq!(found.get("keepalives"), Some(("0", ParameterOrigin::Url)));
        assert_eq!(found.get("channel_binding"), None);
    }

    /// libpq 18's: `PGMINPROTOCOLVERSION=3.2` would have a server that speaks only 3.0 refused
    /// (it was ignored); OAuth in the URL is refused for what it is, not as unknown.
    #[test]
    fn libpq_18_parameters_are_honoured_or_refused() {
        let (_, problems) = read(
            "postgres://u@h/db?oauth_issuer=https://issuer.example&max_protocol_version=3.0",
            &[("PGMINPROTOCOLVERSION", "3.2")],
        );
        assert_eq!(names(&problems), ["min_protocol_version", "oauth_issuer"]);
        let minimum = &problems[0];
        let from = ParameterOrigin::Environment("PGMINPROTOCOLVERSION");
        assert!(
            minimum.origin == from && minimum.problem.contains("3.0"),
            "{minimum:?}"
        );
        assert!(problems[1].problem.contains("OAuth"), "{:?}", problems[1]);
        // A maximum the driver stays under is met; a version libpq 18 does not know is not.
        let (_, problems) = read("postgres://u@h/db", &[("PGMAXPROTOCOLVERSION", "latest")]);
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = read("postgres://u@h/db", &[("PGMAXPROTOCOLVERSION", "3.9")]);
        assert_eq!(names(&problems), ["max_protocol_version"]);
    }

    #[test]
    fn the_url_wins_over_the_environment_and_refused_variables_name_themselves() {
        let (found, problems) = read(
            "postgres://u@h/db?target_session_attrs=any",
            &[
                ("PGTARGETSESSIONATTRS", "read-write"),
                ("PGCONNECT_TIMEOUT", "3"),
                ("PGSERVICE", "prod"),
                ("PGTZ", "UTC"),
                ("PGSSLMODE", ""),
            ],
        );
        assert_eq!(
            found.get("target_session_attrs"),
            Some(("any", ParameterOrigin::Url))
        );
        assert_eq!(
            found.get("connect_timeout"),
            Some(("3", ParameterOrigin::Environment("PGCONNECT_TIMEOUT")))
        );
        assert_eq!(found.get("sslmode"), None, "empty is unset");
        let lines: Vec<String> = problems
            .iter()
            .map(|problem| problem.to_problem("DATABASE_URL").variable)
            .collect();
        assert_eq!(lines, ["PGTZ", "PGSERVICE"]);
        // The driver fixes the time zone itself: no advice to set it in options.
        let advice = &problems[0].to_problem("DATABASE_URL").problem;
        assert!(advice.contains("the driver fixes TimeZone=UTC"), "{advice}");
    }

    #[test]
    fn libpq_variables_in_dot_env_are_refused_not_ignored() {
        let url = DatabaseUrl::parse("postgres://u@h/db?options=-c%20geqo%3Doff").unwrap();
        let sources = Sources::layered(
            [("PGSSLMODE".to_owned(), "verify-full".to_owned())],
            [("PGOPTIONS".to_owned(), "-c work_mem=1MB".to_owned())],
        );
        let (found, problems) = LibpqParameters::read(&url, Some(&sources));
        let variables: Vec<String> = problems
            .iter()
            .map(|problem| problem.to_problem("DATABASE_URL").variable)
            .collect();
        assert_eq!(variables, ["PGSSLMODE", "PGOPTIONS"]);
        assert!(problems[0].problem.contains("is set in .env"));
        assert_eq!(found.get("sslmode"), None);
    }
}
