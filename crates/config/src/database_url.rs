use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use sea_orm::sqlx::postgres::PgConnectOptions;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// A `postgres://user:password@host:port,host:port/database?parameters` URL, read as libpq reads
/// one (a comma-separated list of hosts included, which the driver's parser cannot read). It
/// holds a password, so it is never printed: `Debug` shows nothing, errors never quote it.
///
/// This is the syntax only. What the parameters mean, and which are honoured or refused, is
/// [`crate::libpq`]'s; where the connection goes is [`crate::DatabaseTarget`]'s.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The URL as given, for handing it on (to a child process's environment, say).
    text: SecretString,
    /// `postgres` or `postgresql`.
    scheme: &'static str,
    /// The authority's hosts and ports, in order; empty when the URL names no host.
    hosts: Vec<UrlHost>,
    /// The authority as written (percent-encoded), for [`DatabaseUrl::with_database`].
    raw_authority: String,
    user: Option<String>,
    password: Option<SecretString>,
    /// The userinfo as written, for [`DatabaseUrl::with_database`].
    raw_userinfo: Option<SecretString>,
    database: Option<String>,
    /// The query's parameters, decoded, in order.
    parameters: Vec<(String, String)>,
    raw_query: Option<String>,
}

/// One host of the URL's authority and its port, if it gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlHost {
    /// A name, an IPv4 or IPv6 address (without brackets), or a unix-socket directory.
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("is empty")]
    Empty,
    #[error("must be a PostgreSQL URL starting with postgres:// or postgresql://")]
    NotPostgresUrl,
    #[error(
        "is not a valid URL ({0}; percent-encode special characters in the password, e.g. @ as \
         %40)"
    )]
    Malformed(String),
    #[error(
        "has a malformed host list: {0} (percent-encode special characters in the password, e.g. \
         / as %2F)"
    )]
    HostList(String),
}

/// The parts of a URL to build with [`DatabaseUrl::from_parts`]. Nothing here is encoded yet.
#[derive(Clone, Copy)]
pub struct UrlParts<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    /// Taken as it is (a password of any characters): percent-encoded by the builder.
    pub password: Option<&'a str>,
    pub database: &'a str,
    /// Query parameters, such as `("sslmode", "verify-full")`.
    pub parameters: &'a [(&'a str, &'a str)],
}

impl fmt::Debug for UrlParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UrlParts([redacted])")
    }
}

/// What a part of a URL must encode: everything but unreserved characters (RFC 3986).
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'!')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn encode(part: &str) -> String {
    utf8_percent_encode(part, COMPONENT).to_string()
}

/// `text` percent-decoded: UTF-8 without NUL (`%00`), which libpq refuses too. The driver would
/// write a NUL into the startup message as it is, where it ends the value and starts another
/// (`app%00statement_timeout%000` would set a server setting behind our checks).
fn decode(text: &str, part: &str) -> Result<String, DatabaseUrlError> {
    let decoded = percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| DatabaseUrlError::Malformed(format!("{part} is not UTF-8")))?;
    if decoded.contains('\0') {
        return Err(DatabaseUrlError::Malformed(format!(
            "{part} holds %00, which PostgreSQL takes in no name or value"
        )));
    }
    Ok(decoded.into_owned())
}

/// `1st`, `2nd`, ...: which entry of a list a problem is about (never its value).
pub(crate) fn ordinal(index: usize) -> String {
    let n = index + 1;
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A port as libpq takes it: a whole number from 1 to 65535.
pub(crate) fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|port| *port != 0)
}

impl DatabaseUrl {
    /// Builds a URL from its parts, percent-encoding each, so that no password, user or database
    /// name can break out of its place. The one way code of ours builds a database URL.
    pub fn from_parts(parts: UrlParts<'_>) -> Result<Self, DatabaseUrlError> {
        let host = if parts.host.contains(':') {
            format!("[{}]", parts.host)
        } else {
            encode(parts.host)
        };
        let mut text = format!("postgres://{}", encode(parts.user));
        if let Some(password) = parts.password {
            text.push(':');
            text.push_str(&encode(password));
        }
        text.push_str(&format!(
            "@{host}:{}/{}",
            parts.port,
            encode(parts.database)
        ));
        for (index, (name, value)) in parts.parameters.iter().enumerate() {
            text.push(if index == 0 { '?' } else { '&' });
            text.push_str(&format!("{}={}", encode(name), encode(value)));
        }
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, DatabaseUrlError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DatabaseUrlError::Empty);
        }
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("postgres://") {
            ("postgres", rest)
        } else if let Some(rest) = text.strip_prefix("postgresql://") {
            ("postgresql", rest)
        } else {
            return Err(DatabaseUrlError::NotPostgresUrl);
        };
        if rest.contains('#') {
            return Err(DatabaseUrlError::Malformed("it has a # fragment".into()));
        }
        // libpq ends the userinfo at the first @ before any /, so a ? before that @ is part of
        // the password there, and the start of our query here: what follows it would then be
        // named in errors as parameters. Refused, as every reading two parsers disagree on is.
        // (A path that starts before the ? ends the authority first: its @ are the query's.)
        if let (Some(query), Some(at)) = (rest.find('?'), rest.find('@'))
            && query < at
            && rest.find('/').is_none_or(|slash| query < slash)
        {
            return Err(DatabaseUrlError::Malformed(
                "a ? comes before the @ that ends the user name and password: percent-encode a ? \
                 in them as %3F"
                    .into(),
            ));
        }
        let (before_query, raw_query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query.to_owned())),
            None => (rest, None),
        };
        let (authority_with_userinfo, path) = match before_query.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (before_query, ""),
        };
        // The first @ ends the userinfo, as in libpq. A second one would be read as part of a
        // host name there, and as part of the password by a parser that takes the last: which
        // server gets the password must not depend on that, so it is refused.
        let (raw_userinfo, raw_authority) = match authority_with_userinfo.split_once('@') {
            Some((userinfo, authority)) => (Some(userinfo), authority),
            None => (None, authority_with_userinfo),
        };
        if raw_authority.contains('@') {
            return Err(DatabaseUrlError::Malformed(
                "it has more than one @ before its path: percent-encode an @ in the user name or \
                 password as %40"
                    .into(),
            ));
        }
        let (user, password) = match raw_userinfo {
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let user = decode(user, "the user name")?;
                let password = password
                    .map(|password| decode(password, "the password"))
                    .transpose()?;
                // An empty password is none, as in libpq (`postgres://app:@db/x`, as an unset
                // `${PW}` in a template leaves it).
                (
                    (!user.is_empty()).then_some(user),
                    password
                        .filter(|password| !password.is_empty())
                        .map(SecretString::from),
                )
            }
            None => (None, None),
        };
        let hosts = parse_hosts(raw_authority)?;
        let database = decode(path, "the database name")?;
        let parameters = match &raw_query {
            Some(query) => parse_query(query)?,
            None => Vec::new(),
        };
        Ok(Self {
            text: SecretString::from(text.to_owned()),
            scheme,
            hosts,
            raw_authority: raw_authority.to_owned(),
            user,
            password,
            raw_userinfo: raw_userinfo.map(|userinfo| SecretString::from(userinfo.to_owned())),
            database: (!database.is_empty()).then_some(database),
            parameters,
            raw_query,
        })
    }

    /// The whole URL, password included: only for passing it on where a URL is expected (an
    /// environment variable of a child process, a test's settings), never for printing.
    pub fn expose_secret(&self) -> &str {
        self.text.expose_secret()
    }

    /// The same servers, credentials and parameters, naming another database.
    pub fn with_database(&self, database: &str) -> Result<Self, DatabaseUrlError> {
        let mut text = format!("{}://", self.scheme);
        if let Some(userinfo) = &self.raw_userinfo {
            text.push_str(userinfo.expose_secret());
            text.push('@');
        }
        text.push_str(&self.raw_authority);
        text.push('/');
        text.push_str(&encode(database));
        // A `dbname` of the query would win over the path.
        text.push_str(&self.query_without(&["dbname"]));
        Self::parse(&text)
    }

    /// The query as given, less the parameters `names` (`?…`, or nothing if none is left):
    /// for a URL that replaces what they would otherwise override.
    fn query_without(&self, names: &[&str]) -> String {
        let Some(query) = &self.raw_query else {
            return String::new();
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
                let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                !names.contains(&name.as_ref())
            })
            .collect();
        if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        }
    }

    /// The same URL naming `hosts` (name or address, port) in its authority, in this order: a
    /// libpq host list, for several nodes of one cluster.
    pub fn with_hosts(&self, hosts: &[(&str, u16)]) -> Result<Self, DatabaseUrlError> {
        let authority: Vec<String> = hosts
            .iter()
            .map(|(host, port)| {
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{}:{port}", encode(host))
                }
            })
            .collect();
        let mut text = format!("{}://", self.scheme);
        if let Some(userinfo) = &self.raw_userinfo {
            text.push_str(userinfo.expose_secret());
            text.push('@');
        }
        text.push_str(&authority.join(","));
        text.push('/');
        text.push_str(&encode(self.database.as_deref().unwrap_or_default()));
        // Hosts or ports of the query would win over the authority.
        text.push_str(&self.query_without(&["host", "hostaddr", "port"]));
        Self::parse(&text)
    }

    /// The authority's hosts, in order (a `host` parameter or `PGHOST` may stand in for them:
    /// see [`crate::DatabaseTarget`]).
    pub fn hosts(&self) -> &[UrlHost] {
        &self.hosts
    }

    /// The query's parameters (`sslmode`, `target_session_attrs`, ...), decoded, in order.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parameters
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The driver's connect options for the first host, as the driver itself reads this URL:
    /// for tools and tests that connect to a server of their own. The service and the migration
    /// CLI connect through [`crate::DatabaseTarget`], which honours or refuses every parameter.
    /// The options hold the password, and the driver's `Debug` prints it: never format them.
    pub fn connect_options(&self) -> PgConnectOptions {
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(self.host())
            .port(self.port());
        if let Some(user) = &self.user {
            options = options.username(user);
        }
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        if let Some(database) = &self.database {
            options = options.database(database);
        }
        for (name, value) in &self.parameters {
            options = match name.as_str() {
                "sslmode" => match sea_orm::sqlx::postgres::PgSslMode::from_str(value) {
                    Ok(mode) => options.ssl_mode(mode),
                    Err(_) => options,
                },
                "sslrootcert" => options.ssl_root_cert(value),
                "sslcert" => options.ssl_client_cert(value),
                "sslkey" => options.ssl_client_key(value),
                "application_name" => options.application_name(value),
                _ => options,
            };
        }
        options
    }

    /// The first host, or `localhost` when the URL names none.
    pub fn host(&self) -> &str {
        self.hosts
            .first()
            .map_or("localhost", |host| host.host.as_str())
    }

    /// The first host's port, or 5432.
    pub fn port(&self) -> u16 {
        self.hosts
            .first()
            .and_then(|host| host.port)
            .unwrap_or(5432)
    }

    /// The user name, or empty when the URL gives none.
    pub fn username(&self) -> &str {
        self.user.as_deref().unwrap_or_default()
    }

    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The password, percent-decoded.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }
}

/// `h1:5432,[::1]:5433,h3`: libpq's host list of a URL's authority. Empty means no host.
fn parse_hosts(authority: &str) -> Result<Vec<UrlHost>, DatabaseUrlError> {
    if authority.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = authority.split(',').collect();
    let mut hosts = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let malformed = |problem: &str| {
            DatabaseUrlError::HostList(format!("the {} host {problem}", ordinal(index)))
        };
        let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or_else(|| malformed("has an unclosed [ of an IPv6 address"))?;
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(malformed("is not an IPv6 address inside [ ]"));
            }
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| malformed("has text after its IPv6 address"))?,
                ),
            };
            (address.to_owned(), port)
        } else {
            let (host, port) = match entry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (*entry, None),
            };
            (decode(host, "a host name")?, port)
        };
        if host.is_empty() {
            return Err(malformed("is empty"));
        }
        let port = match port {
            // As libpq: `h:` (an empty port) is no port, so PGPORT or 5432 applies.
            None | Some("") => None,
            Some(text) => Some(
                parse_port(text).ok_or_else(|| malformed("has a port that is not 1 to 65535"))?,
            ),
        };
        hosts.push(UrlHost { host, port });
    }
    Ok(hosts)
}

/// `name=value&...`, percent-decoded as libpq decodes it (a `+` stays a `+`), and with libpq's
/// JDBC compatibility: `ssl=true` is `sslmode=require`.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, DatabaseUrlError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or(DatabaseUrlError::Malformed("a parameter has no =".into()))?;
            let (name, value) = (
                decode(name, "a parameter name")?,
                decode(value, "a parameter value")?,
            );
            Ok(match (name.as_str(), value.as_str()) {
                ("ssl", "true") => ("sslmode".to_owned(), "require".to_owned()),
                _ => (name, value),
            })
        })
        .collect()
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host and database stay out too: a URL's parts are configuration, not diagnostics.
        f.write_str("DatabaseUrl([redacted])")
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DatabaseUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The parts hold the password in clear: their `Debug` must not show it.
    #[test]
    fn debug_of_url_parts_hides_the_password() {
        let parts = UrlParts {
            host: "db.internal",
            port: 5432,
            user: "app",
            password: Some("s3cret-pw"),
            database: "app",
            parameters: &[("password", "s3cret-q")],
        };
        let shown = format!("{parts:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn reads_every_part_and_decodes_the_password() {
        let url = DatabaseUrl::parse(
            "postgres://app:p%40ss%3Aw%2Ford%3F%23%25%20x@db.internal:6543/counseling?sslmode=disable",
        )
        .unwrap();
        assert_eq!(url.host(), "db.internal");
        assert_eq!(url.port(), 6543);
        assert_eq!(url.username(), "app");
        assert_eq!(url.database(), Some("counseling"));
        assert_eq!(url.password().unwrap().expose_secret(), "p@ss:w/ord?#% x");
        assert_eq!(
            url.parameters().collect::<Vec<_>>(),
            [("sslmode", "disable")]
        );
    }

    /// libpq ends the userinfo at the first @ and would take `a@b` for a host; a parser that
    /// took the last would send the password `p@a` to `b`. Neither: refused, echoing nothing.
    #[test]
    fn a_second_unencoded_at_sign_is_refused() {
        let error = DatabaseUrl::parse("postgres://u:p@a@b/db").unwrap_err();
        let said = error.to_string();
        assert!(said.contains("%40"), "{said}");
        assert!(!said.contains("p@a"), "{said}");
    }

    #[test]
    fn reads_libpqs_host_lists() {
        let url = DatabaseUrl::parse(
            "postgresql://u:p@h1:5432,[::1]:5433,h3/db?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            url.hosts(),
            [
                UrlHost {
                    host: "h1".into(),
                    port: Some(5432)
                },
                UrlHost {
                    host: "::1".into(),
                    port: Some(5433)
                },
                UrlHost {
                    host: "h3".into(),
                    port: None
                },
            ]
        );
        assert_eq!(url.database(), Some("db"));
        assert!(
            DatabaseUrl::parse("postgres:///db?host=h1,h2")
                .unwrap()
                .hosts()
                .is_empty()
        );
    }

    /// libpq reads an empty port (`h:`, `[::1]:`) as none given, in a list too.
    #[test]
    fn an_empty_port_is_none() {
        let url = DatabaseUrl::parse("postgres://u@db:/app").unwrap();
        assert_eq!(url.hosts()[0].port, None);
        assert_eq!(url.port(), 5432);
        let url = DatabaseUrl::parse("postgres://u@h1:,[::1]:,h3:5433/app").unwrap();
        let ports: Vec<Option<u16>> = url.hosts().iter().map(|host| host.port).collect();
        assert_eq!(ports, [None, None, Some(5433)]);
    }

    #[test]
    fn malformed_host_lists_say_which_entry_without_quoting_it() {
        for (text, expected) in [
            ("postgres://u:hunter2@h1,,h3/db", "the 2nd host is empty"),
            (
                "postgres://u:hunter2@h1:5432,h2:port/db",
                "the 2nd host has a port that is not 1 to 65535",
            ),
            (
                "postgres://u:hunter2@[::1/db",
                "the 1st host has an unclosed [",
            ),
            (
                "postgres://u:hunter2@h:0/db",
                "the 1st host has a port that is not 1 to 65535",
            ),
        ] {
            let error = DatabaseUrl::parse(text).err().unwrap();
            assert!(matches!(error, DatabaseUrlError::HostList(_)), "{text}");
            let shown = error.to_string();
            assert!(shown.contains(expected), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("port/"),
                "{shown}"
            );
        }
    }

    #[test]
    fn rejects_without_quoting_the_value() {
        for (text, expected) in [
            ("", DatabaseUrlError::Empty),
            ("mysql://u:hunter2@h/db", DatabaseUrlError::NotPostgresUrl),
            ("hunter2", DatabaseUrlError::NotPostgresUrl),
        ] {
            let error = DatabaseUrl::parse(text).err().unwrap();
            assert_eq!(error, expected, "{text}");
            assert!(!error.to_string().contains("hunter2"));
        }
        for text in [
            "postgres://u:hunter2@h/db?sslmode",
            "postgres://u:hunter2@h/db#x",
            "postgres://u:hunter2%FF@h/db",
            // libpq reads a ? before the userinfo's @ as part of the password: never taken as
            // the start of a query, whose names errors would quote.
            "postgres://u:?hunter2=x@h/db",
            "postgres://u:8080?hunter2=x@h/db",
            "postgres://u:?hunter2=x@h",
            "postgres://u:?hunter2=x/y@h/db",
        ] {
            let error = DatabaseUrl::parse(text).err().unwrap();
            assert!(matches!(error, DatabaseUrlError::Malformed(_)), "{text}");
            assert!(!error.to_string().contains("hunter2"));
        }
    }

    /// After the path has begun, an @ is the query's, as libpq reads it.
    #[test]
    fn an_at_sign_in_the_query_after_the_path_is_a_value() {
        let url = DatabaseUrl::parse("postgres://u:p@h/db?application_name=a@b").unwrap();
        assert_eq!(
            url.parameters().collect::<Vec<_>>(),
            [("application_name", "a@b")]
        );
    }

    /// A NUL would end a value of the startup message and start another one behind our checks.
    #[test]
    fn a_nul_anywhere_is_refused_naming_the_part() {
        for (text, part) in [
            ("postgres://u%00x:hunter2@h/db", "the user name"),
            ("postgres://u:hunter2%00@h/db", "the password"),
            ("postgres://u:hunter2@h%00/db", "a host name"),
            (
                "postgres://u:hunter2@h/app%00statement_timeout%000",
                "the database name",
            ),
            (
                "postgres://u:hunter2@h/db?application_name=a%00b",
                "a parameter value",
            ),
            ("postgres://u:hunter2@h/db?a%00b=c", "a parameter name"),
        ] {
            let shown = DatabaseUrl::parse(text).err().unwrap().to_string();
            assert!(
                shown.contains(&format!("{part} holds %00")),
                "{text}: {shown}"
            );
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn another_database_keeps_everything_else() {
        let url = DatabaseUrl::parse("postgres://u:p%40ss@h:5433,h2/old?sslmode=disable").unwrap();
        let other = url.with_database("test_1_2").unwrap();
        assert_eq!(
            other.expose_secret(),
            "postgres://u:p%40ss@h:5433,h2/test_1_2?sslmode=disable"
        );
        assert_eq!(other.password().unwrap().expose_secret(), "p@ss");
        // A dbname of the query would override the new path: it goes.
        let url = DatabaseUrl::parse("postgres://u@h/old?dbname=app&sslmode=require").unwrap();
        assert_eq!(
            url.with_database("new").unwrap().expose_secret(),
            "postgres://u@h/new?sslmode=require"
        );
        let url = DatabaseUrl::parse("postgres://u@h/old?db%6Eame=app").unwrap();
        assert_eq!(
            url.with_database("new").unwrap().expose_secret(),
            "postgres://u@h/new"
        );
    }

    #[test]
    fn another_host_list_drops_the_querys_hosts_and_ports() {
        let url = DatabaseUrl::parse("postgres://u@h/db?host=x&port=1&hostaddr=10.0.0.1&a=b")
            .unwrap()
            .with_hosts(&[("127.0.0.1", 15410)])
            .unwrap();
        assert_eq!(url.expose_secret(), "postgres://u@127.0.0.1:15410/db?a=b");
    }

    #[test]
    fn another_host_list_keeps_everything_else() {
        let url =
            DatabaseUrl::parse("postgres://u:p%40ss@h:5433/db?target_session_attrs=read-write")
                .unwrap()
                .with_hosts(&[("127.0.0.1", 15410), ("::1", 15420)])
                .unwrap();
        assert_eq!(
            url.expose_secret(),
            "postgres://u:p%40ss@127.0.0.1:15410,[::1]:15420/db?target_session_attrs=read-write"
        );
        assert_eq!(url.hosts().len(), 2);
        assert_eq!(url.password().unwrap().expose_secret(), "p@ss");
    }

    #[test]
    fn built_from_parts_every_character_stays_in_its_place() {
        let password = "p@ss:w/ord?#% x&y=z+[]";
        let url = DatabaseUrl::from_parts(UrlParts {
            host: "127.0.0.1",
            port: 5433,
            user: "own:er@x",
            password: Some(password),
            database: "app/db?x",
            parameters: &[("sslmode", "disable"), ("application_name", "a&b=c+d")],
        })
        .unwrap();
        assert_eq!(url.password().unwrap().expose_secret(), password);
        assert_eq!(url.username(), "own:er@x");
        assert_eq!(url.database(), Some("app/db?x"));
        assert_eq!((url.host(), url.port()), ("127.0.0.1", 5433));
        assert_eq!(
            url.parameters().collect::<Vec<_>>(),
            [("sslmode", "disable"), ("application_name", "a&b=c+d")]
        );
        // The driver reads the same parts.
        let options = url.connect_options();
        assert_eq!(options.get_username(), "own:er@x");
        assert_eq!(options.get_database(), Some("app/db?x"));
        let without = DatabaseUrl::from_parts(UrlParts {
            host: "::1",
            port: 5432,
            user: "u",
            password: None,
            database: "d",
            parameters: &[],
        })
        .unwrap();
        assert!(without.password().is_none());
        assert_eq!(without.expose_secret(), "postgres://u@[::1]:5432/d");
        assert_eq!(without.host(), "::1");
    }

    #[test]
    fn debug_shows_nothing_of_the_url() {
        let url = DatabaseUrl::parse("postgres://u:hunter2@db.internal/app").unwrap();
        let shown = format!("{url:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("db.internal"),
            "{shown}"
        );
    }
}
