use std::fmt;
use std::str::FromStr;

use sea_orm::sqlx::postgres::PgConnectOptions;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// A checked `postgres://user:password@host:port/database?options` URL. It holds a password, so
/// it is never printed: `Debug` shows only the non-secret parts, and errors never quote it.
///
/// The driver's own parser reads it (so percent-encoding, `sslmode` and the other query options
/// mean exactly what they mean to the connections), after a check of the scheme.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The URL as given, for handing it on (to a child process's environment, say).
    text: SecretString,
    options: PgConnectOptions,
    password: Option<SecretString>,
    /// The query's parameters (`sslmode=...`), decoded, in order.
    parameters: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("is empty")]
    Empty,
    #[error("must be a PostgreSQL URL starting with postgres:// or postgresql://")]
    NotPostgresUrl,
    #[error(
        "is not a valid URL (check its format; percent-encode special characters in the \
         password, e.g. @ as %40)"
    )]
    Malformed,
    #[error("has an unknown sslmode (use disable, prefer, require, verify-ca or verify-full)")]
    UnknownSslMode,
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

impl DatabaseUrl {
    /// Builds a URL from its parts, percent-encoding each, so that no password, user or database
    /// name can break out of its place. The one way code of ours builds a database URL.
    pub fn from_parts(parts: UrlParts<'_>) -> Result<Self, DatabaseUrlError> {
        let mut url =
            url::Url::parse("postgres://placeholder/").map_err(|_| DatabaseUrlError::Malformed)?;
        url.set_host(Some(parts.host))
            .map_err(|_| DatabaseUrlError::Malformed)?;
        url.set_port(Some(parts.port))
            .map_err(|_| DatabaseUrlError::Malformed)?;
        // `url` percent-encodes what the userinfo may not hold (`@`, `:`, `/`, ...) itself.
        url.set_username(parts.user)
            .map_err(|_| DatabaseUrlError::Malformed)?;
        url.set_password(parts.password)
            .map_err(|_| DatabaseUrlError::Malformed)?;
        url.path_segments_mut()
            .map_err(|_| DatabaseUrlError::Malformed)?
            .clear()
            .push(parts.database);
        if !parts.parameters.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(parts.parameters.iter().copied());
        }
        Self::parse(url.as_str())
    }

    pub fn parse(text: &str) -> Result<Self, DatabaseUrlError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DatabaseUrlError::Empty);
        }
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(DatabaseUrlError::NotPostgresUrl);
        }
        // Errors of both parsers may quote the URL, so only their absence is kept.
        let url = url::Url::parse(text).map_err(|_| DatabaseUrlError::Malformed)?;
        let options = PgConnectOptions::from_str(text).map_err(|_| {
            let known = [
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ];
            let unknown_mode = url.query_pairs().any(|(name, value)| {
                matches!(name.as_ref(), "sslmode" | "ssl-mode") && !known.contains(&value.as_ref())
            });
            if unknown_mode {
                DatabaseUrlError::UnknownSslMode
            } else {
                DatabaseUrlError::Malformed
            }
        })?;
        let password = match url.password() {
            Some(encoded) => Some(SecretString::from(
                percent_encoding::percent_decode_str(encoded)
                    .decode_utf8()
                    .map_err(|_| DatabaseUrlError::Malformed)?
                    .into_owned(),
            )),
            None => None,
        };
        let parameters = url
            .query_pairs()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        Ok(Self {
            text: SecretString::from(text.to_owned()),
            options,
            password,
            parameters,
        })
    }

    /// The whole URL, password included: only for passing it on where a URL is expected (an
    /// environment variable of a child process, a test's settings), never for printing.
    pub fn expose_secret(&self) -> &str {
        self.text.expose_secret()
    }

    /// The same server, credentials and parameters, naming another database.
    pub fn with_database(&self, database: &str) -> Result<Self, DatabaseUrlError> {
        let mut url =
            url::Url::parse(self.text.expose_secret()).map_err(|_| DatabaseUrlError::Malformed)?;
        url.set_path(&format!("/{database}"));
        Self::parse(url.as_str())
    }

    /// The query's parameters (`sslmode`, `sslrootcert`, ...), decoded, in order; for settings
    /// the driver reads but does not expose.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parameters
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The driver's connect options (they hold the password: never log them).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    pub fn host(&self) -> &str {
        self.options.get_host()
    }

    pub fn port(&self) -> u16 {
        self.options.get_port()
    }

    pub fn username(&self) -> &str {
        self.options.get_username()
    }

    pub fn database(&self) -> Option<&str> {
        self.options.get_database()
    }

    /// The password, percent-decoded as the driver decodes it.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }
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

    #[test]
    fn rejects_without_quoting_the_value() {
        for (text, expected) in [
            ("", DatabaseUrlError::Empty),
            ("mysql://u:hunter2@h/db", DatabaseUrlError::NotPostgresUrl),
            ("hunter2", DatabaseUrlError::NotPostgresUrl),
            (
                "postgres://u:hunter2@h:port/db",
                DatabaseUrlError::Malformed,
            ),
        ] {
            let error = DatabaseUrl::parse(text).err().unwrap();
            assert_eq!(error, expected, "{text}");
            assert!(!error.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn another_database_keeps_everything_else() {
        let url = DatabaseUrl::parse("postgres://u:p%40ss@h:5433/old?sslmode=disable").unwrap();
        let other = url.with_database("test_1_2").unwrap();
        assert_eq!(
            other.expose_secret(),
            "postgres://u:p%40ss@h:5433/test_1_2?sslmode=disable"
        );
        assert_eq!(other.password().unwrap().expose_secret(), "p@ss");
    }

    #[test]
    fn built_from_parts_every_character_stays_in_its_place() {
        let password = "p@ss:w/ord?#% x&y=z";
        let url = DatabaseUrl::from_parts(UrlParts {
            host: "127.0.0.1",
            port: 5433,
            user: "own:er@x",
            password: Some(password),
            database: "app/db?x",
            parameters: &[("sslmode", "disable"), ("application_name", "a&b")],
        })
        .unwrap();
        assert_eq!(url.password().unwrap().expose_secret(), password);
        assert_eq!(url.username(), "own:er@x");
        assert_eq!(url.database(), Some("app/db?x"));
        assert_eq!((url.host(), url.port()), ("127.0.0.1", 5433));
        assert_eq!(
            url.parameters().collect::<Vec<_>>(),
            [("sslmode", "disable"), ("application_name", "a&b")]
        );
        let without = DatabaseUrl::from_parts(UrlParts {
            password: None,
            parameters: &[],
            ..UrlParts {
                host: "db.internal",
                port: 5432,
                user: "u",
                password: None,
                database: "d",
                parameters: &[],
            }
        })
        .unwrap();
        assert!(without.password().is_none());
        assert_eq!(without.expose_secret(), "postgres://u@db.internal:5432/d");
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
