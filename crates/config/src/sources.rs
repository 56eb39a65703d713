use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use config::{Config, ConfigError, Environment};
use serde::de::DeserializeOwned;

use crate::env_file::read_env_file_and_mode;
use crate::{Problem, Problems};

/// The variables a binary is configured by: the working directory's `.env`, overlaid by the
/// process environment (which wins, but for Kubernetes' service links: see
/// [`Sources::layered`]). Values are never printed: `Debug` lists names only.
#[derive(Clone, Default)]
pub struct Sources {
    variables: BTreeMap<String, String>,
    /// The names whose value comes from the process environment (libpq's `PG*` variables are
    /// read from there only, as libpq reads them).
    from_environment: BTreeSet<String>,
    /// `.env`'s mode when its group or others may read it.
    dot_env_readable: Option<u32>,
    /// The names in `.env` whose values are passwords (a password setting, or a URL with one),
    /// whether or not the environment overrides them.
    dot_env_secrets: Vec<String>,
}

/// Whether `value` (of `name`) is a password: a setting named for one, or a URL carrying one.
fn holds_a_password(name: &str, value: &str) -> bool {
    use secrecy::ExposeSecret;
    let named = name.ends_with("PASSWORD") && !value.trim().is_empty();
    named
        || crate::DatabaseUrl::parse(value).is_ok_and(|url| {
            url.password()
                .is_some_and(|password| !password.expose_secret().is_empty())
                || url
                    .parameters()
                    .any(|(name, value)| name == "password" && !value.is_empty())
        })
}

/// The names of our binaries' settings: their groups' prefixes, and `RUST_LOG`. (`.env` also
/// holds compose's `POSTGRES_*`, the test kit's server, and libpq's `PG*`, refused there.)
const SETTING_PREFIXES: &[&str] = &[
    "APP_",
    "DATABASE_",
    "HEALTH_",
    "LOG_",
    "METRICS_",
    "MIGRATION_",
    "RUST_LOG",
];

/// Whether `name` is one of our binaries' settings.
fn is_setting(name: &str) -> bool {
    name != crate::TEST_SERVER_VARIABLE
        && SETTING_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// The settings (and libpq's `PG*` variables) `environment` has empty while `file` gives them a
/// value.
fn hidden_by_empty(file: &[(String, String)], environment: &[(String, String)]) -> Problems {
    let libpq = |name: &str| crate::libpq::is_libpq_variable(name);
    let setting = |name: &String| is_setting(name) || libpq(name);
    let empty = |name: &String| {
        let exported = environment.iter().find(|(exported, _)| exported == name);
        exported.is_some_and(|(_, value)| value.trim().is_empty())
    };
    let hidden = file
        .iter()
        .filter(|(name, value)| setting(name) && !value.trim().is_empty() && empty(name))
        .map(|(name, _)| match libpq(name) {
            // .env's would be refused (libpq reads its variables from the environment only);
            // exported empty, it would be dropped unseen.
            true => Problem::new(
                name,
                "is exported empty, which hides its value in .env, where libpq's variables are \
                 not read: export the value, or put the parameter in the URL",
            ),
            false => Problem::new(
                name,
                "is exported empty, which hides its value in .env, and empty means unset: \
                 unset it to use .env's value, or give it one",
            ),
        });
    Problems(hidden.collect())
}

/// The variables whose name and value are UTF-8. One of our settings (or one of libpq's) whose
/// value is not is refused, naming it: left out, `.env`'s value or the default would apply in
/// its place unseen. Other variables that are not UTF-8 are none of ours.
fn unicode_only(
    environment: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> (Vec<(String, String)>, Problems) {
    let mut variables = Vec::new();
    let mut problems = Problems::default();
    for (name, value) in environment {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => variables.push((name, value)),
            Err(_) if is_setting(&name) || crate::libpq::is_libpq_variable(&name) => {
                problems.push(Problem::new(
                    name,
                    "is not valid UTF-8 (as exported); no setting can be read from it",
                ))
            }
            Err(_) => {}
        }
    }
    (variables, problems)
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.variables.keys()).finish()
    }
}

impl Sources {
    /// The current directory's `.env` (if any) and the process environment.
    pub fn load() -> Result<Self, Problems> {
        let dir = std::env::current_dir().map_err(|_| {
            let problem = Problem::new(".env", "could not be looked for: no working directory");
            Problems(vec![problem])
        })?;
        Self::load_from(&dir)
    }

    /// `dir/.env` (if any) and the process environment. A setting of ours exported empty over
    /// its value in `.env` is refused: empty means unset to every setting, so neither would
    /// apply (an unset `${VAR}` in a compose file or shell exports it so).
    pub fn load_from(dir: &Path) -> Result<Self, Problems> {
        Self::load_with(dir, std::env::vars_os())
    }

    /// [`Sources::load_from`] with `environment` for the process environment.
    pub(crate) fn load_with(
        dir: &Path,
        environment: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Self, Problems> {
        let (file, dot_env_readable) = read_env_file_and_mode(dir)
            .map_err(|error| Problems(vec![Problem::new(".env", error.to_string())]))?;
        let (environment, mut problems) = unicode_only(environment);
        problems.extend(hidden_by_empty(&file, &environment).0);
        let dot_env_secrets = (file.iter())
            .filter(|(name, value)| holds_a_password(name, value))
            .map(|(name, _)| name.clone())
            .collect();
        let sources = Self {
            dot_env_readable,
            dot_env_secrets,
            ..Self::layered(file, environment)
        };
        problems.into_result(sources)
    }

    /// `.env`'s mode and the names of the passwords it holds, when its group or other users
    /// may read it and it holds any.
    pub(crate) fn dot_env_exposed(&self) -> Option<(u32, &[String])> {
        let mode = self.dot_env_readable?;
        (!self.dot_env_secrets.is_empty()).then_some((mode, self.dot_env_secrets.as_slice()))
    }

    /// `file` (a `.env`) overlaid by `environment`, which wins; but for a Kubernetes service
    /// link (`METRICS_PORT=tcp://…`, for a Service named `metrics`), which is no setting of ours
    /// and must not hide the file's setting of that name.
    pub fn layered(
        file: impl IntoIterator<Item = (String, String)>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut variables: BTreeMap<String, String> = file.into_iter().collect();
        let mut from_environment = BTreeSet::new();
        for (name, value) in environment {
            if variables.contains_key(&name) && is_kubernetes_service_link(&name, &value) {
                continue;
            }
            from_environment.insert(name.clone());
            variables.insert(name, value);
        }
        Self {
            variables,
            from_environment,
            ..Self::default()
        }
    }

    /// Exactly the given variables, as if from the process environment (tests).
    pub fn from_vars<'a>(variables: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::layered(
            [],
            variables
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned())),
        )
    }

    /// The variable's value, from the environment or else `.env`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    /// The variable's value if it comes from the process environment, not from `.env`: libpq's
    /// `PG*` variables are read so, as libpq reads them.
    pub fn environment(&self, name: &str) -> Option<&str> {
        self.from_environment
            .contains(name)
            .then(|| self.get(name))
            .flatten()
    }

    /// libpq's variables (`PG*`) alone, with their origins: what a [`crate::DatabaseTarget`]
    /// keeps for as long as it lives, and nothing else (`.env` holds other roles' passwords).
    pub fn libpq_variables(&self) -> Self {
        let libpq = |name: &String| name.starts_with("PG");
        Self {
            variables: (self.variables.iter())
                .filter(|(name, _)| libpq(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            from_environment: self
                .from_environment
                .iter()
                .filter(|n| libpq(n))
                .cloned()
                .collect(),
            ..Self::default()
        }
    }

    /// Where the variable's value comes from, if it is set.
    pub fn origin(&self, name: &str) -> Option<Origin> {
        self.variables.contains_key(name).then(|| {
            if self.from_environment.contains(name) {
                Origin::Environment
            } else {
                Origin::DotEnv
            }
        })
    }

    /// Deserialises the variables named `PREFIX_*` into `T` (`DATABASE_MAX_CONNECTIONS` is the
    /// field `max_connections` of the `DATABASE` group); missing fields take `T`'s serde
    /// defaults. Reports every invalid variable of the group, not just the first. With
    /// `#[serde(deny_unknown_fields)]` on `T`, a name of the group that is no field of it (a
    /// misspelling: `DATABASE_SSLMODE`, `HEALTH_TIMEOUT`) is reported too, never ignored.
    pub fn group<T: DeserializeOwned>(&self, prefix: &str) -> Result<T, Problems> {
        self.group_besides(prefix, &[])
    }

    /// [`Sources::group`], leaving out `besides`: names with the prefix that are read elsewhere
    /// (`DATABASE_URL` is no field of the pool's settings). They are offered as suggestions for
    /// a misspelt name.
    pub fn group_besides<T: DeserializeOwned>(
        &self,
        prefix: &str,
        besides: &[&str],
    ) -> Result<T, Problems> {
        let start = format!("{prefix}_");
        // Empty (or blank) means unset, as for every setting: the field takes its default.
        let mut group: HashMap<String, String> = self
            .variables
            .iter()
            .filter(|(name, _)| name.starts_with(&start) && !besides.contains(&name.as_str()))
            .filter(|(name, value)| !is_kubernetes_service_link(name, value))
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let in_other_case: Vec<Problem> = self
            .prefix_in_other_case(&start)
            .map(|name| not_in_capitals(name, &name.to_ascii_uppercase()))
            .collect();
        let mut problems = same_but_for_case(&group);
        if !problems.is_empty() {
            problems.extend(in_other_case);
            return Err(problems);
        }
        problems.extend(in_other_case);
        // A name read elsewhere, spelt in another case (`DATABASE_Ssl_Mode`): that reader reads
        // capitals only, so it would be ignored there, and it is no field here either.
        let elsewhere: Vec<String> = besides.iter().map(|&name| name.to_owned()).collect();
        let misspelt: Vec<String> = group
            .keys()
            .filter(|name| besides.iter().any(|known| known.eq_ignore_ascii_case(name)))
            .cloned()
            .collect();
        for name in misspelt {
            group.remove(&name);
            problems.push(not_a_setting(&name, &elsewhere));
        }
        // serde stops at the first bad field: drop it and try again to find the others.
        loop {
            match deserialize::<T>(prefix, &group) {
                Ok(value) => {
                    problems.extend(numbers_given_as_words::<T>(prefix, &group));
                    return problems.into_result(value);
                }
                Err(error) => {
                    let (key, problem) = describe(prefix, &error, besides);
                    // A required variable dropped for being invalid is now "missing": said already.
                    if problems
                        .0
                        .iter()
                        .any(|seen| seen.variable == problem.variable)
                    {
                        return Err(problems);
                    }
                    problems.push(problem);
                    // The error names the key upper-cased; the variable may be spelt otherwise.
                    let named = key.and_then(|key| {
                        group
                            .keys()
                            .find(|name| name.eq_ignore_ascii_case(&key))
                            .cloned()
                    });
                    match named.and_then(|name| group.remove(&name)) {
                        Some(_) => continue,
                        None => return Err(problems),
                    }
                }
            }
        }
    }
}

impl Sources {
    /// The names with `prefix` that are none of `known` but look like one of them (the same
    /// letters but for `_`, or but for a suffix: `DATABASE_SSLMODE`, `MIGRATION_LOCK_TIMEOUT`).
    /// For a binary that reads a few names of a group another binary's settings share: it cannot
    /// tell those settings from misspellings, but it refuses a misspelling of its own names.
    pub fn misspellings(&self, prefix: &str, known: &[&str]) -> Problems {
        self.not_known(prefix, known, false)
    }

    /// Every name with `prefix` that is none of `known` (with the one it most likely meant):
    /// for a group that one binary reads alone (`MIGRATION_`).
    pub fn unknown(&self, prefix: &str, known: &[&str]) -> Problems {
        self.not_known(prefix, known, true)
    }

    fn not_known(&self, prefix: &str, known: &[&str], every: bool) -> Problems {
        let known: Vec<String> = known.iter().map(|&name| name.to_owned()).collect();
        let start = format!("{prefix}_");
        let unknown = self.variables.iter().filter(|(name, value)| {
            name.starts_with(&start)
                && !known.contains(name)
                && !is_kubernetes_service_link(name, value)
        });
        let problems = unknown
            .filter(|(name, _)| every || meant(name, &known).is_some())
            .map(|(name, _)| not_a_setting(name, &known));
        let mut problems = Problems(problems.collect());
        for name in self.prefix_in_other_case(&start) {
            match meant(name, &known) {
                Some(meant) => problems.push(not_in_capitals(name, meant)),
                None if every => problems.push(not_in_capitals(name, &name.to_ascii_uppercase())),
                None => {}
            }
        }
        problems
    }

    /// The names that begin with `start` (`APP_`) in another letter case (`app_port`,
    /// `Database_Url`). A prefix is read in capitals only, on Windows too, so no reader of ours
    /// would see them: each is refused where its group is read, rather than ignored.
    fn prefix_in_other_case<'a>(&'a self, start: &'a str) -> impl Iterator<Item = &'a String> {
        self.variables.keys().filter(move |name| {
            !name.starts_with(start)
                && (name.get(..start.len())).is_some_and(|head| head.eq_ignore_ascii_case(start))
        })
    }
}

/// `name`'s prefix is not in capitals, so nothing reads it: what to tell the user.
fn not_in_capitals(name: &str, meant: &str) -> Problem {
    Problem::new(
        name,
        format!("is not read: a setting's name is in capitals (did you mean {meant}?)"),
    )
}

/// `name` is no setting: what to tell the user, with the one of `known` it most likely meant.
fn not_a_setting(name: &str, known: &[String]) -> Problem {
    let problem = match meant(name, known) {
        Some(meant) => format!("is not a setting: did you mean {meant}? (see .env.example)"),
        None => "is not a setting (see .env.example for every variable)".to_owned(),
    };
    Problem::new(name, problem)
}

/// Where a variable's value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Environment,
    DotEnv,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Environment => "the environment",
            Origin::DotEnv => ".env",
        })
    }
}

fn deserialize<T: DeserializeOwned>(
    prefix: &str,
    group: &HashMap<String, String>,
) -> Result<T, ConfigError> {
    Config::builder()
        .add_source(
            Environment::with_prefix(prefix)
                .prefix_separator("_")
                .source(Some(group.clone())),
        )
        .build()?
        .try_deserialize()
}

/// Names of `group` that differ only in letter case: config reads names in any case, and which
/// one wins would depend on the order a hash map gives them.
fn same_but_for_case(group: &HashMap<String, String>) -> Problems {
    let mut names: Vec<&String> = group.keys().collect();
    names.sort();
    let problems = names.iter().filter_map(|name| {
        let others: Vec<&str> = names
            .iter()
            .filter(|other| *other != name && other.eq_ignore_ascii_case(name))
            .map(|other| other.as_str())
            .collect();
        (!others.is_empty()).then(|| {
            Problem::new(
                (*name).clone(),
                format!(
                    "is set also as {} (the same name but for letter case): keep one",
                    others.join(" and ")
                ),
            )
        })
    });
    Problems(problems.collect())
}

/// config reads the words true/on/yes and false/off/no as 1 and 0 wherever a number is wanted:
/// `DATABASE_PING_IF_IDLE_MS=off` would check every connection, `APP_PORT=off` listen on a
/// random port. A switch (`METRICS_ENABLED`) keeps them. Which setting is a number is told by
/// deserialising `group` (valid as it is) again with that value alone made no word.
fn numbers_given_as_words<T: DeserializeOwned>(
    prefix: &str,
    group: &HashMap<String, String>,
) -> Vec<Problem> {
    const WORDS: [&str; 6] = ["true", "on", "yes", "false", "off", "no"];
    // Rust's parser takes `+8000` for 8000: numbers are digits, as documented.
    let signed = |value: &str| value.trim().starts_with('+');
    let words = group
        .iter()
        .filter(|(_, value)| WORDS.contains(&value.to_lowercase().as_str()) || signed(value));
    words
        .filter(|(name, _)| {
            let mut probe = group.clone();
            probe.insert((*name).clone(), "not a word".to_owned());
            let error = match deserialize::<T>(prefix, &probe) {
                Err(ConfigError::At { error, .. }) => *error,
                Err(error) => error,
                Ok(_) => return false,
            };
            matches!(error, ConfigError::Type { expected, .. } if expected.contains("integer"))
        })
        .map(|(name, value)| match signed(value) {
            true => Problem::new(name.clone(), "must be digits only, without a sign"),
            false => Problem::new(name.clone(), "must be a number, not a word"),
        })
        .collect()
}

/// The variable an error is about (as named in the environment) and what to tell the user;
/// never the value, which config's own messages may quote. `besides`: the prefix's names read
/// elsewhere, which a misspelt name may have meant.
fn describe(prefix: &str, error: &ConfigError, besides: &[&str]) -> (Option<String>, Problem) {
    let variable = |key: &str| format!("{prefix}_{}", key.to_ascii_uppercase());
    if let ConfigError::Message(message) = error
        && let Some((key, fields)) = unknown_field(message)
    {
        let name = variable(key);
        let known = fields.iter().map(|field| variable(field));
        let known: Vec<String> = known
            .chain(besides.iter().map(|&name| name.to_owned()))
            .collect();
        return (Some(name.clone()), not_a_setting(&name, &known));
    }
    match error {
        ConfigError::At {
            error,
            key: Some(key),
            ..
        } => {
            let name = variable(key);
            let problem = match error.as_ref() {
                ConfigError::Message(message) => sanitized(message),
                ConfigError::Type { expected, .. } => format!("must be {expected}"),
                _ => "is invalid".to_owned(),
            };
            (Some(name.clone()), Problem::new(name, problem))
        }
        ConfigError::Type {
            key: Some(key),
            expected,
            ..
        } => {
            let name = variable(key);
            (
                Some(name.clone()),
                Problem::new(name, format!("must be {expected}")),
            )
        }
        ConfigError::NotFound(key) => (
            None,
            Problem::new(
                variable(key),
                "is not set: set it in the environment or in .env (see .env.example)",
            ),
        ),
        ConfigError::Message(message) => match missing_field(message) {
            Some(key) => (
                None,
                Problem::new(
                    variable(key),
                    "is not set: set it in the environment or in .env (see .env.example)",
                ),
            ),
            None => (None, Problem::new(format!("{prefix}_*"), "are invalid")),
        },
        _ => (None, Problem::new(format!("{prefix}_*"), "are invalid")),
    }
}

/// Our own deserialisers' messages say what is expected; serde's and config's generic ones repeat
/// the value, quoted (`invalid type: string "..."`) or not (config's `enum Format does not have
/// variant constructor ...`), so those are replaced.
fn sanitized(message: &str) -> String {
    if message.contains(['"', '`', '\'']) || message.contains("variant constructor") {
        "is invalid (check its format)".to_owned()
    } else {
        message.to_owned()
    }
}

/// serde's "unknown field `name`, expected one of `a`, `b`" (or "..., there are no fields"):
/// the name and the fields.
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let fields = rest.split('`').skip(1).step_by(2).collect();
    Some((key, fields))
}

/// The known name `name` is most likely a misspelling of: the same letters but for underscores
/// (`DATABASE_SSLMODE`), or the same but for a suffix (`HEALTH_TIMEOUT` for `HEALTH_TIMEOUT_MS`).
fn meant<'k>(name: &str, known: &'k [String]) -> Option<&'k str> {
    // In any case: a reader of exact names would ignore `DATABASE_Ssl_Mode`.
    let letters = |name: &str| name.replace('_', "").to_ascii_uppercase();
    let name = letters(name);
    let same = known.iter().find(|candidate| letters(candidate) == name);
    let alike = || {
        // The longest of those that one begins the other: the most of the name matched.
        let alike = known.iter().filter(|candidate| {
            let candidate = letters(candidate);
            candidate.starts_with(&name) || name.starts_with(&candidate)
        });
        alike.max_by_key(|candidate| candidate.len())
    };
    same.or_else(alike).map(String::as_str)
}

/// The variables Kubernetes puts in every container for each Service of its namespace (unless
/// the pod says `enableServiceLinks: false`): `APP_REDIS_SERVICE_HOST`, `DATABASE_PORT=tcp://…`
/// and the like, for Services named `app-redis` or `database`. They are no setting of ours.
fn is_kubernetes_service_link(name: &str, value: &str) -> bool {
    let words: Vec<&str> = name.split('_').collect();
    // `<NAME>_PORT=tcp://…`: only there does Kubernetes put an address (a setting given one by
    // mistake, `APP_HOST=tcp://…`, is still read, and refused).
    let address = words.last() == Some(&"PORT")
        && ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| value.starts_with(scheme));
    let service = words.ends_with(&["SERVICE", "HOST"])
        || words.windows(2).any(|pair| pair == ["SERVICE", "PORT"]);
    // `<NAME>_PORT_<number>_<TCP|UDP|SCTP>_<PROTO|PORT|ADDR>`.
    let port = words.windows(3).any(|triple| {
        triple[0] == "PORT"
            && !triple[1].is_empty()
            && triple[1].bytes().all(|byte| byte.is_ascii_digit())
            && ["TCP", "UDP", "SCTP"].contains(&triple[2])
    });
    address || service || port
}

/// serde's "missing field `name`".
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Example {
        required: String,
        #[serde(default = "five")]
        count: u32,
        #[serde(default, with = "crate::millis", rename = "wait_ms")]
        wait: Duration,
        #[serde(default)]
        enabled: bool,
    }

    fn five() -> u32 {
        5
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Format {
        Json,
        Text,
    }

    #[derive(Debug, Deserialize)]
    struct WithFormat {
        #[allow(dead_code)] // only its refusal is looked at
        format: Format,
        #[allow(dead_code)]
        #[serde(default)]
        initial: Option<char>,
    }

    /// serde's own messages quote the value (`unknown variant `...``): a secret pasted into the
    /// wrong setting must not be repeated in the refusal, which is logged.
    #[test]
    fn a_refusal_in_serdes_words_does_not_repeat_the_value() {
        // config's words for a variant, then serde's for a character (`string "..."`).
        for (name, vars) in [
            (
                "FMT_FORMAT",
                [("FMT_FORMAT", "hunter2"), ("FMT_INITIAL", "h")],
            ),
            (
                "FMT_INITIAL",
                [("FMT_FORMAT", "json"), ("FMT_INITIAL", "hunter2")],
            ),
        ] {
            let sources = Sources::from_vars(vars);
            let problems = sources.group::<WithFormat>("FMT").unwrap_err().to_string();
            assert!(problems.contains(name), "{problems}");
            assert!(
                problems.contains("is invalid (check its format)"),
                "{problems}"
            );
            assert!(!problems.contains("hunter2"), "{problems}");
        }
        // Read as they are, the others pass.
        for format in ["json", "text"] {
            let sources = Sources::from_vars([("FMT_FORMAT", format)]);
            assert!(sources.group::<WithFormat>("FMT").is_ok(), "{format}");
        }
    }

    /// Empty means unset to every setting (an unset `${VAR}` in a compose file exports it
    /// empty): the default applies, rather than "must be an integer".
    #[test]
    fn an_empty_or_blank_value_takes_the_default() {
        let sources = Sources::from_vars([
            ("EX_REQUIRED", "x"),
            ("EX_COUNT", ""),
            ("EX_WAIT_MS", "  "),
            ("EX_ENABLED", ""),
        ]);
        let example = sources.group::<Example>("EX").unwrap();
        assert_eq!((example.count, example.wait), (5, Duration::ZERO));
        assert!(!example.enabled);
    }

    /// config reads names in any case: two spellings of one name are refused, not settled by
    /// a hash map's order.
    #[test]
    fn names_that_differ_only_in_case_are_refused() {
        let sources =
            Sources::from_vars([("EX_REQUIRED", "x"), ("EX_COUNT", "15"), ("EX_Count", "50")]);
        let problems = sources.group::<Example>("EX").unwrap_err();
        let said = problems.to_string();
        assert!(said.contains("EX_COUNT is set also as EX_Count"), "{said}");
        assert!(said.contains("EX_Count is set also as EX_COUNT"), "{said}");
    }

    /// A prefix is read in capitals only (on Windows too): `ex_count` is no `EX_COUNT`. It is
    /// refused where the group is read, with the name meant, rather than left unread while the
    /// default applies. Names that only begin alike are someone else's.
    #[test]
    fn a_prefix_in_another_case_is_refused_not_ignored() {
        let sources = Sources::from_vars([
            ("EX_REQUIRED", "x"),
            ("ex_count", "7"),
            ("Ex_Wait_Ms", "5"),
            ("exchange", "1"),
            ("EXAMPLE", "1"),
        ]);
        let said = sources.group::<Example>("EX").unwrap_err().to_string();
        assert!(
            said.contains(
                "ex_count is not read: a setting's name is in capitals (did you mean EX_COUNT?)"
            ),
            "{said}"
        );
        assert!(said.contains("Ex_Wait_Ms is not read"), "{said}");
        assert_eq!(said.lines().count(), 2, "{said}");
        // Said beside the group's other problems, not instead of them.
        let sources = Sources::from_vars([("ex_count", "7")]);
        let said = sources.group::<Example>("EX").unwrap_err().to_string();
        assert!(said.contains("ex_count is not read"), "{said}");
        assert!(said.contains("EX_REQUIRED"), "{said}");
    }

    /// A reader of a few names of a shared group refuses another case of one of its own names
    /// (or a lookalike); a reader of a whole group, every name of it in another case.
    #[test]
    fn known_names_in_another_case_are_refused_by_their_reader() {
        let sources = Sources::from_vars([
            ("database_url", "postgres://h/db"),
            ("Database_Max_Connections", "5"),
            ("migration_anything", "1"),
        ]);
        let known = ["DATABASE_URL"];
        let said = sources.misspellings("DATABASE", &known).to_string();
        assert_eq!(
            said,
            "database_url is not read: a setting's name is in capitals (did you mean DATABASE_URL?)"
        );
        let said = sources
            .unknown("MIGRATION", &["MIGRATION_LOCK_TIMEOUT_MS"])
            .to_string();
        assert!(said.starts_with("migration_anything is not read"), "{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(!said.contains("postgres://"), "{said}");
    }

    /// A setting exported as bytes that are not UTF-8 is named, not dropped for `.env`'s value.
    #[cfg(unix)]
    #[test]
    fn a_setting_that_is_not_utf8_is_refused_and_other_variables_are_left_alone() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let latin1 = || OsString::from_vec(b"postgres://app:p\xe9@db/x".to_vec());
        let (kept, problems) = unicode_only(
            [
                (OsString::from("DATABASE_URL"), latin1()),
                (OsString::from("PGPASSWORD"), latin1()),
                (OsString::from("SOMEONE_ELSES"), latin1()),
                // PG, but no variable of libpq's (linuxserver images' group id).
                (OsString::from("PGID"), latin1()),
                (OsString::from("APP_PORT"), OsString::from("8080")),
            ]
            .into_iter(),
        );
        assert_eq!(kept, [("APP_PORT".to_owned(), "8080".to_owned())]);
        let said = problems.to_string();
        assert!(said.contains("DATABASE_URL is not valid UTF-8"), "{said}");
        assert!(said.contains("PGPASSWORD is not valid UTF-8"), "{said}");
        assert!(
            !said.contains("SOMEONE_ELSES") && !said.contains("PGID") && !said.contains("app:p"),
            "{said}"
        );
    }

    #[test]
    fn defaults_fill_in_and_values_are_typed() {
        let sources = Sources::from_vars([
            ("EX_REQUIRED", "x"),
            ("EX_WAIT_MS", "250"),
            ("EX_ENABLED", "true"),
        ]);
        assert_eq!(
            sources.group::<Example>("EX").unwrap(),
            Example {
                required: "x".into(),
                count: 5,
                wait: Duration::from_millis(250),
                enabled: true
            }
        );
    }

    #[test]
    fn every_bad_variable_is_reported_without_its_value() {
        let sources = Sources::from_vars([
            ("EX_REQUIRED", "x"),
            ("EX_COUNT", "hunter2"),
            ("EX_WAIT_MS", "-1"),
            ("EX_ENABLED", "maybe"),
        ]);
        let problems = sources.group::<Example>("EX").unwrap_err();
        let names: Vec<_> = problems.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(names.len(), 3, "{problems}");
        for name in ["EX_COUNT", "EX_WAIT_MS", "EX_ENABLED"] {
            assert!(names.contains(&name), "{name} in {problems}");
        }
        assert!(!problems.to_string().contains("hunter2"), "{problems}");
    }

    #[test]
    fn words_are_no_numbers_but_switches_keep_them() {
        for word in ["off", "No", "true", "yes"] {
            let sources = Sources::from_vars([
                ("EX_REQUIRED", "on"),
                ("EX_COUNT", word),
                ("EX_WAIT_MS", "off"),
                ("EX_ENABLED", "on"),
            ]);
            let problems = sources.group::<Example>("EX").unwrap_err();
            let mut names: Vec<_> = problems.0.iter().map(|p| p.variable.as_str()).collect();
            names.sort_unstable();
            assert_eq!(names, ["EX_COUNT", "EX_WAIT_MS"], "{problems}");
            assert!(
                problems.to_string().contains("must be a number"),
                "{problems}"
            );
        }
        // A sign is no digit; a text setting may start with one.
        let sources = Sources::from_vars([("EX_REQUIRED", "+x"), ("EX_COUNT", "+5")]);
        let problems = sources.group::<Example>("EX").unwrap_err();
        let said: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(said, ["EX_COUNT must be digits only, without a sign"]);
        let sources = Sources::from_vars([("EX_REQUIRED", "yes"), ("EX_ENABLED", "off")]);
        let example = sources.group::<Example>("EX").unwrap();
        assert_eq!((example.required.as_str(), example.enabled), ("yes", false));
    }

    #[test]
    fn generic_parse_errors_never_quote_the_value() {
        #[derive(Debug, Deserialize)]
        struct Port {
            #[allow(dead_code)]
            #[serde(default, deserialize_with = "crate::empty_is_none")]
            port: Option<u16>,
        }
        let sources = Sources::from_vars([("P_PORT", "hunter2")]);
        let problems = sources.group::<Port>("P").unwrap_err();
        assert_eq!(problems.0[0].variable, "P_PORT");
        assert!(!problems.to_string().contains("hunter2"), "{problems}");
        let ok = Sources::from_vars([("P_PORT", "8080")])
            .group::<Port>("P")
            .unwrap();
        assert_eq!(ok.port, Some(8080));
        // Digits only, as every number of ours.
        let signed = Sources::from_vars([("P_PORT", "+8080")]).group::<Port>("P");
        let problems = signed.unwrap_err().to_string();
        assert!(problems.contains("without a sign"), "{problems}");
    }

    #[test]
    fn a_variable_exported_empty_over_a_value_in_dotenv_is_refused() {
        let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            let owned = pairs.iter().map(|&(n, v)| (n.to_owned(), v.to_owned()));
            owned.collect()
        };
        let file = pairs(&[
            ("DATABASE_SSL_MODE", "verify-full"),
            ("METRICS_PORT", "9100"),
            ("APP_PORT", ""),
            // No setting of a binary of ours.
            ("POSTGRES_DB", "app"),
            ("DATABASE_URL_TEST", "postgres://t@h/db"),
            ("PGSSLMODE", "verify-full"),
            // Not libpq's (the test kit's, pgAdmin's).
            ("PG_BIN_DIR", "/usr/lib/postgresql/15/bin"),
            ("PGADMIN_DEFAULT_EMAIL", "a@b.c"),
        ]);
        let environment = pairs(&[
            ("PGSSLMODE", ""),
            ("PG_BIN_DIR", ""),
            ("PGADMIN_DEFAULT_EMAIL", ""),
            ("DATABASE_SSL_MODE", ""),
            ("METRICS_PORT", "9200"),
            ("APP_PORT", ""),
            ("UNRELATED", ""),
            ("POSTGRES_DB", ""),
            ("DATABASE_URL_TEST", ""),
        ]);
        let hidden = hidden_by_empty(&file, &environment);
        let names: Vec<&str> = hidden.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(names, ["DATABASE_SSL_MODE", "PGSSLMODE"]);
        assert!(!hidden.to_string().contains("verify-full"), "{hidden}");
    }

    #[test]
    fn the_environment_wins_and_each_value_knows_where_it_came_from() {
        let sources = Sources::layered(
            [("A".into(), "file".into()), ("B".into(), "file".into())],
            [("A".into(), "env".into())],
        );
        assert_eq!(sources.get("A"), Some("env"));
        assert_eq!(sources.get("B"), Some("file"));
        assert_eq!(sources.environment("A"), Some("env"));
        assert_eq!(sources.environment("B"), None);
        assert_eq!(sources.origin("B"), Some(Origin::DotEnv));
        assert_eq!(sources.origin("C"), None);
    }

    #[test]
    fn a_name_of_the_group_that_is_no_setting_is_refused_with_what_it_may_mean() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Strict {
            #[allow(dead_code)]
            #[serde(default, with = "crate::millis", rename = "timeout_ms")]
            timeout: Duration,
        }
        let sources = Sources::from_vars([
            ("EX_TIMEOUT", "500"),
            ("EX_SSLMODE", "verify-full"),
            ("EX_HOST", "secret-host"),
            ("EX_URL", "read elsewhere"),
            ("EX_TIMEOUT_MS", "oops"),
            ("EX_Ssl_Mode", "verify-full"),
        ]);
        let problems = sources
            .group_besides::<Strict>("EX", &["EX_URL", "EX_SSL_MODE"])
            .unwrap_err();
        let said = problems.to_string();
        let mut named: Vec<_> = problems.0.iter().map(|p| p.variable.as_str()).collect();
        named.sort_unstable();
        assert_eq!(
            named,
            [
                "EX_HOST",
                "EX_SSLMODE",
                "EX_Ssl_Mode",
                "EX_TIMEOUT",
                "EX_TIMEOUT_MS"
            ],
            "{said}"
        );
        assert!(
            said.contains("EX_Ssl_Mode is not a setting: did you mean EX_SSL_MODE?"),
            "{said}"
        );
        assert!(
            said.contains("EX_TIMEOUT is not a setting: did you mean EX_TIMEOUT_MS?"),
            "{said}"
        );
        assert!(
            said.contains("EX_SSLMODE is not a setting: did you mean EX_SSL_MODE?"),
            "{said}"
        );
        assert!(
            said.contains("EX_HOST is not a setting (see .env.example"),
            "{said}"
        );
        assert!(
            !said.contains("secret-host") && !said.contains("verify-full"),
            "{said}"
        );
        let fine = Sources::from_vars([("EX_TIMEOUT_MS", "5"), ("EX_URL", "x")]);
        assert!(fine.group_besides::<Strict>("EX", &["EX_URL"]).is_ok());
    }

    #[test]
    fn a_reader_of_some_names_of_a_group_refuses_only_their_misspellings() {
        let sources = Sources::from_vars([
            ("EX_URL", "x"),
            ("EX_SSLMODE", "verify-full"),
            ("EX_SSL", "1"),
            ("EX_MAX_CONNECTIONS", "5"),
            ("EX_URL_TEST", "x"),
            ("EX_REDIS_SERVICE_HOST", "10.0.0.1"),
            ("OTHER_SSLMODE", "x"),
            ("EX_Url_Test", "x"),
        ]);
        let problems = sources.misspellings("EX", &["EX_URL", "EX_SSL_MODE", "EX_URL_TEST"]);
        let said: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "EX_SSL is not a setting: did you mean EX_SSL_MODE? (see .env.example)",
                "EX_SSLMODE is not a setting: did you mean EX_SSL_MODE? (see .env.example)",
                "EX_Url_Test is not a setting: did you mean EX_URL_TEST? (see .env.example)",
            ]
        );
        let owned = sources.unknown("EX", &["EX_URL", "EX_SSL_MODE", "EX_URL_TEST"]);
        let named: Vec<&str> = owned.0.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            named,
            ["EX_MAX_CONNECTIONS", "EX_SSL", "EX_SSLMODE", "EX_Url_Test"]
        );
    }

    /// A group that refuses names that are no field of it.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Counted {
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn the_likeliest_setting_is_suggested_and_any_spelling_is_reported() {
        let known = ["EX_URL".to_owned(), "EX_URL_FILE".to_owned()];
        assert_eq!(meant("EX_URLFILE", &known), Some("EX_URL_FILE"));
        assert_eq!(meant("EX_URL_FILES", &known), Some("EX_URL_FILE"));
        assert_eq!(meant("EX_HOST", &known), None);

        // Mixed-case names are reported, and so is every other problem, whatever the order.
        let sources =
            Sources::from_vars([("EX_Cuont", "1"), ("EX_Tyop", "2"), ("EX_COUNT", "many")]);
        let problems = sources.group::<Counted>("EX").unwrap_err();
        assert_eq!(problems.0.len(), 3, "{problems}");
    }

    /// Kubernetes names them after Services (`app-redis`, `database`), not after our settings:
    /// a deployment next to such a Service must still start.
    #[test]
    fn kubernetes_service_links_are_no_settings_of_ours() {
        let links = [
            ("EX_REDIS_SERVICE_HOST", "10.0.0.11"),
            ("EX_REDIS_SERVICE_PORT", "6379"),
            ("EX_REDIS_SERVICE_PORT_CLIENT", "6379"),
            ("EX_REDIS_PORT", "tcp://10.0.0.11:6379"),
            ("EX_REDIS_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
            ("EX_REDIS_PORT_6379_TCP_PROTO", "tcp"),
            ("EX_REDIS_PORT_6379_TCP_PORT", "6379"),
            ("EX_REDIS_PORT_6379_TCP_ADDR", "10.0.0.11"),
            ("EX_COUNT", "3"),
        ];
        let read = Sources::from_vars(links).group::<Counted>("EX").unwrap();
        assert_eq!(read.count, 3);
        // A name of that shape is still refused when it is no link: a port given as a number.
        let sources = Sources::from_vars([("EX_REDIS_PORT", "6379")]);
        assert!(sources.group::<Counted>("EX").is_err());
        // And an address is only a link's value under a `_PORT` name.
        let sources = Sources::from_vars([("EX_COUNT", "tcp://10.0.0.11:3")]);
        assert!(sources.group::<Counted>("EX").is_err());
    }

    /// A Service named `metrics` puts `METRICS_PORT=tcp://…` in the environment: `.env`'s
    /// `METRICS_PORT` still applies (it was dropped, and the default port served `/metrics`).
    #[test]
    fn a_service_link_does_not_hide_the_setting_of_that_name_in_dot_env() {
        #[derive(Debug, Deserialize)]
        struct Ported {
            port: Option<u16>,
        }
        let file = [("EX_PORT".to_owned(), "18621".to_owned())];
        let link = [("EX_PORT".to_owned(), "tcp://10.0.0.7:9100".to_owned())];
        let sources = Sources::layered(file.clone(), link);
        assert_eq!(sources.group::<Ported>("EX").unwrap().port, Some(18621));
        assert_eq!(sources.environment("EX_PORT"), None);
        // A setting exported over it still wins.
        let exported = [("EX_PORT".to_owned(), "18622".to_owned())];
        let sources = Sources::layered(file, exported);
        assert_eq!(sources.group::<Ported>("EX").unwrap().port, Some(18622));
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let problems = Sources::default().group::<Example>("EX").unwrap_err();
        assert_eq!(problems.0[0].variable, "EX_REQUIRED");
        assert!(problems.0[0].problem.starts_with("is not set"));
    }
}
