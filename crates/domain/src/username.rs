use std::fmt;

/// The longest username, in characters (the `varchar(255)` column counts characters, not bytes).
pub const MAX_USERNAME_CHARS: usize = 255;

/// A Windows-domain style login name, `\domain\user`, as the person typed it (case preserved).
///
/// Two usernames that differ only in case are the same account, but that equality is decided by
/// the database (`lower(username)`, backed by a unique index), never here: Rust's
/// `to_lowercase` and PostgreSQL's `lower()` disagree on some non-ASCII input, and two answers to
/// "is this the same user?" would let one student pose as another. So `Username` deliberately does
/// not implement a case-insensitive `PartialEq` or `Hash`; its `PartialEq` is exact.
#[derive(Clone, PartialEq, Eq)]
pub struct Username(String);

/// Which half of `\domain\user` a rule refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernamePart {
    Domain,
    User,
}

impl fmt::Display for UsernamePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsernamePart::Domain => "domain",
            UsernamePart::User => "user name",
        })
    }
}

/// The rule a candidate username broke. Messages are written to be shown to the person who typed
/// it, and never repeat the input (it may be a password typed into the wrong field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("a username is required")]
    Empty,
    #[error("a username must be at most {max} characters long (this one has {actual})")]
    TooLong { max: usize, actual: usize },
    #[error("a username must not contain control characters such as tabs or line breaks")]
    ControlCharacter,
    #[error(r"a username must start with a backslash, as in \school\alice")]
    MissingLeadingBackslash,
    #[error(r"a username must name a domain and a user, as in \school\alice")]
    MissingDomain,
    #[error(r"the {0} in a username must not be empty, as in \school\alice")]
    EmptyPart(UsernamePart),
    #[error(r"a username has exactly two backslashes, as in \school\alice")]
    TooManyBackslashes,
    #[error("the {0} in a username must not start or end with a space")]
    SurroundingWhitespace(UsernamePart),
}

impl Username {
    /// Validates `candidate` against every username rule, returning the first one it breaks.
    ///
    /// The shape is the seed's `^\\[^\\]+\\[^\\]+$`; on top of it: at most
    /// [`MAX_USERNAME_CHARS`] characters, no control characters (PostgreSQL cannot even store
    /// NUL), and no whitespace at either end of the domain or the user part.
    pub fn parse(candidate: impl Into<String>) -> Result<Self, UsernameError> {
        let candidate = candidate.into();
        if candidate.is_empty() {
            return Err(UsernameError::Empty);
        }
        let length = candidate.chars().count();
        if length > MAX_USERNAME_CHARS {
            return Err(UsernameError::TooLong {
                max: MAX_USERNAME_CHARS,
                actual: length,
            });
        }
        if candidate.chars().any(char::is_control) {
            return Err(UsernameError::ControlCharacter);
        }
        let Some(rest) = candidate.strip_prefix('\\') else {
            return Err(UsernameError::MissingLeadingBackslash);
        };
        let Some((domain, user)) = rest.split_once('\\') else {
            return Err(UsernameError::MissingDomain);
        };
        if domain.is_empty() {
            return Err(UsernameError::EmptyPart(UsernamePart::Domain));
        }
        if user.is_empty() {
            return Err(UsernameError::EmptyPart(UsernamePart::User));
        }
        if user.contains('\\') {
            return Err(UsernameError::TooManyBackslashes);
        }
        for (part, text) in [(UsernamePart::Domain, domain), (UsernamePart::User, user)] {
            if text.trim() != text {
                return Err(UsernameError::SurroundingWhitespace(part));
            }
        }
        Ok(Self(candidate))
    }

    /// The username exactly as it was given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part, between the first and second backslash.
    pub fn domain(&self) -> &str {
        self.parts().0
    }

    /// The user part, after the second backslash.
    pub fn user(&self) -> &str {
        self.parts().1
    }

    fn parts(&self) -> (&str, &str) {
        // `parse` guarantees the form `\domain\user`, so both splits succeed; the fallback keeps
        // this total without a panic path.
        self.0
            .get(1..)
            .and_then(|rest| rest.split_once('\\'))
            .unwrap_or(("", ""))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Username {
    type Error = UsernameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<&str> for Username {
    type Error = UsernameError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Username").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(candidate: &str) -> UsernameError {
        Username::parse(candidate).expect_err("should be rejected")
    }

    #[test]
    fn accepts_the_canonical_form_and_keeps_case() {
        let name = Username::parse(r"\SCHOOL\Alice").unwrap();
        assert_eq!(name.as_str(), r"\SCHOOL\Alice");
        assert_eq!(name.domain(), "SCHOOL");
        assert_eq!(name.user(), "Alice");
    }

    #[test]
    fn accepts_inner_spaces_dots_and_non_ascii() {
        for ok in [
            r"\my school\anne marie",
            r"\school.example\a.b",
            r"\école\Zoë",
            r"\d\u",
        ] {
            assert!(Username::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(err(""), UsernameError::Empty);
    }

    #[test]
    fn length_boundary_is_255_characters_not_bytes() {
        let exactly = format!(r"\d\{}", "a".repeat(MAX_USERNAME_CHARS - 3));
        assert_eq!(exactly.chars().count(), 255);
        assert!(Username::parse(exactly).is_ok());

        let one_more = format!(r"\d\{}", "a".repeat(MAX_USERNAME_CHARS - 2));
        assert_eq!(
            err(&one_more),
            UsernameError::TooLong {
                max: 255,
                actual: 256
            }
        );

        // 255 two-byte characters are 510 bytes but still 255 characters.
        let wide = format!(r"\d\{}", "é".repeat(MAX_USERNAME_CHARS - 3));
        assert!(Username::parse(wide).is_ok());
    }

    #[test]
    fn rejects_control_characters_anywhere() {
        for bad in [
            "\\school\\al\0ice",
            "\\school\\al\tice",
            "\\school\\alice\n",
            "\\sch\u{7f}ool\\a",
            "\\s\\a\u{85}",
        ] {
            assert_eq!(err(bad), UsernameError::ControlCharacter, "{bad:?}");
        }
    }

    #[test]
    fn rejects_missing_leading_backslash() {
        assert_eq!(err(r"school\alice"), UsernameError::MissingLeadingBackslash);
        assert_eq!(err("alice"), UsernameError::MissingLeadingBackslash);
        assert_eq!(
            err(r" \school\alice"),
            UsernameError::MissingLeadingBackslash
        );
    }

    #[test]
    fn rejects_missing_domain() {
        assert_eq!(err(r"\alice"), UsernameError::MissingDomain);
        assert_eq!(err(r"\"), UsernameError::MissingDomain);
    }

    #[test]
    fn rejects_empty_parts() {
        assert_eq!(
            err(r"\\alice"),
            UsernameError::EmptyPart(UsernamePart::Domain)
        );
        assert_eq!(
            err(r"\school\"),
            UsernameError::EmptyPart(UsernamePart::User)
        );
        assert_eq!(err(r"\\"), UsernameError::EmptyPart(UsernamePart::Domain));
    }

    #[test]
    fn rejects_a_third_backslash() {
        assert_eq!(err(r"\school\alice\x"), UsernameError::TooManyBackslashes);
        assert_eq!(err(r"\school\\alice"), UsernameError::TooManyBackslashes);
        assert_eq!(err(r"\school\alice\"), UsernameError::TooManyBackslashes);
    }

    #[test]
    fn rejects_surrounding_whitespace_in_either_part() {
        use UsernamePart::*;
        assert_eq!(
            err(r"\school\alice "),
            UsernameError::SurroundingWhitespace(User)
        );
        assert_eq!(
            err(r"\school\ alice"),
            UsernameError::SurroundingWhitespace(User)
        );
        assert_eq!(
            err(r"\school \alice"),
            UsernameError::SurroundingWhitespace(Domain)
        );
        assert_eq!(
            err(r"\ school\alice"),
            UsernameError::SurroundingWhitespace(Domain)
        );
        // A no-break space is whitespace too.
        assert_eq!(
            err("\\school\\alice\u{a0}"),
            UsernameError::SurroundingWhitespace(User)
        );
    }

    #[test]
    fn messages_do_not_echo_the_input() {
        let secret = "hunter2-password";
        let message = err(secret).to_string();
        assert!(!message.contains(secret));
    }

    #[test]
    fn equality_is_exact_not_case_insensitive() {
        // Case-insensitive identity belongs to the database; the domain must not claim it.
        assert_ne!(
            Username::parse(r"\s\A").unwrap(),
            Username::parse(r"\s\a").unwrap()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parse_never_panics(candidate in any::<String>()) {
            let _ = Username::parse(candidate);
        }

        #[test]
        fn parse_never_panics_on_username_like_input(candidate in r"[\\a-zA-Z \t\u{0}é]{0,12}") {
            let _ = Username::parse(candidate);
        }

        #[test]
        fn accepted_names_round_trip_exactly(
            domain in r"[^\\\p{Cc}\s][^\\\p{Cc}]{0,40}",
            user in r"[^\\\p{Cc}\s][^\\\p{Cc}]{0,40}",
        ) {
            let domain = domain.trim_end();
            let user = user.trim_end();
            let candidate = format!(r"\{domain}\{user}");
            prop_assume!(candidate.chars().count() <= MAX_USERNAME_CHARS);
            let parsed = Username::parse(candidate.clone()).unwrap();
            prop_assert_eq!(parsed.as_str(), candidate.as_str());
            prop_assert_eq!(parsed.domain(), domain);
            prop_assert_eq!(parsed.user(), user);
        }

        #[test]
        fn whatever_is_accepted_matches_the_seed_regex(candidate in any::<String>()) {
            if let Ok(parsed) = Username::parse(candidate.clone()) {
                prop_assert_eq!(parsed.as_str(), candidate.as_str());
                prop_assert!(candidate.starts_with('\\'));
                prop_assert_eq!(candidate.matches('\\').count(), 2);
                prop_assert!(!candidate.starts_with(r"\\") && !candidate.ends_with('\\'));
            }
        }
    }
}
