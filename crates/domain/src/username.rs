use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::username_characters::{ForbiddenCharacter, forbidden_character};

/// The longest username, in characters (the `varchar(255)` column counts characters, not bytes).
pub const MAX_USERNAME_CHARS: usize = 255;

/// A Windows-domain style login name, `\domain\user`, in Unicode NFC with its case kept.
///
/// Equality (and `Hash`) is the exact spelling, in NFC: `\school\é` typed composed or decomposed
/// is one `Username`, but `\SCHOOL\Émile` and `\school\émile` are two values. Whether two
/// usernames are one *account* is the database's to say, by one rule (its `username_identity`
/// function: case, width and compatibility forms folded) that its unique index and every lookup
/// use; the repository asks it (`UserRepository::find_by_username` finds `\school\émile` when
/// looking for `\SCHOOL\ÉMILE`, and `create` reports such a twin as taken).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Username {
    text: String,
}

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
    #[error(
        "a username must not contain invisible characters such as zero-width spaces, \
         text-direction marks, fillers or variation selectors"
    )]
    InvisibleCharacter,
    #[error("a username must not contain private-use or unassigned characters")]
    UnassignedCharacter,
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
    /// U+FE68 or U+FF3C: compared ignoring width they are backslashes, and would move the split
    /// between domain and user ([`crate::BACKSLASH_LOOK_ALIKES`]).
    #[error(r"a username must not contain characters that stand for a backslash, such as ＼")]
    BackslashLookAlike,
    /// A character assigned after the database's Unicode version
    /// ([`crate::DATABASE_UNICODE_VERSION`]), which it could not compare.
    #[error("a username must not contain characters added to Unicode after version 14.0")]
    NewerThanDatabase,
    /// A character the database's normalization gets wrong
    /// ([`crate::UNCOMPARABLE_IN_DATABASE`]): it would take two names for one account.
    #[error(
        "a username must not contain characters the database cannot compare, such as the \
         archaic Hangul vowel U+11A7"
    )]
    UncomparableCharacter,
}

impl Username {
    /// Validates `candidate` against every username rule, returning the first one it breaks.
    ///
    /// The candidate is first put in Unicode NFC, so a name typed decomposed (`e` + U+0301) is the
    /// same name as one typed composed (`é`). The shape is the seed's `^\\[^\\]+\\[^\\]+$`; on top
    /// of it: at most [`MAX_USERNAME_CHARS`] characters, none of the Unicode categories Cc, Cf,
    /// Co, Cn, Zl or Zp (controls, invisible formatting, private-use and unassigned characters,
    /// line and paragraph separators), none of the characters that stand for a backslash
    /// (U+FE68, U+FF3C), none added to Unicode after the database's version
    /// ([`crate::DATABASE_UNICODE_VERSION`]), none the database normalizes wrongly
    /// ([`crate::UNCOMPARABLE_IN_DATABASE`]: U+11A7), and no whitespace at either end of the
    /// domain or the user part. The database checks every one of these rules itself too.
    pub fn parse(candidate: impl Into<String>) -> Result<Self, UsernameError> {
        let candidate = candidate.into();
        if candidate.is_empty() {
            return Err(UsernameError::Empty);
        }
        // ASCII is already NFC.
        let text: String = if candidate.is_ascii() {
            candidate
        } else {
            candidate.nfc().collect()
        };
        let length = text.chars().count();
        if length > MAX_USERNAME_CHARS {
            return Err(UsernameError::TooLong {
                max: MAX_USERNAME_CHARS,
                actual: length,
            });
        }
        if let Some(forbidden) = text.chars().find_map(forbidden_character) {
            return Err(match forbidden {
                ForbiddenCharacter::Control => UsernameError::ControlCharacter,
                ForbiddenCharacter::Invisible => UsernameError::InvisibleCharacter,
                ForbiddenCharacter::Unassigned => UsernameError::UnassignedCharacter,
                ForbiddenCharacter::BackslashLookAlike => UsernameError::BackslashLookAlike,
                ForbiddenCharacter::NewerThanDatabase => UsernameError::NewerThanDatabase,
                ForbiddenCharacter::UncomparableInDatabase => UsernameError::UncomparableCharacter,
            });
        }
        let Some(rest) = text.strip_prefix('\\') else {
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
        for (part, part_text) in [(UsernamePart::Domain, domain), (UsernamePart::User, user)] {
            if part_text.trim() != part_text {
                return Err(UsernameError::SurroundingWhitespace(part));
            }
        }
        Ok(Self { text })
    }

    /// The username as stored: as it was given, in NFC.
    pub fn as_str(&self) -> &str {
        &self.text
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
        self.text
            .get(1..)
            .and_then(|rest| rest.split_once('\\'))
            .unwrap_or(("", ""))
    }

    pub fn into_string(self) -> String {
        self.text
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
        &self.text
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Username").field(&self.text).finish()
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
            "\\s\\a\u{2028}b",
            "\\s\\a\u{2029}b",
        ] {
            assert_eq!(err(bad), UsernameError::ControlCharacter, "{bad:?}");
        }
    }

    #[test]
    fn rejects_invisible_formatting_characters() {
        for invisible in [
            "\u{200b}",
            "\u{200c}",
            "\u{200d}",
            "\u{202e}",
            "\u{2066}",
            "\u{2069}",
            "\u{feff}",
            "\u{ad}",
            "\u{2060}",
            "\u{e0041}",
            // Default-ignorable, though not Cf: look-alikes of \school\alice.
            "\u{3164}",
            "\u{34f}",
            "\u{fe0f}",
            "\u{180b}",
            // A symbol drawn as nothing.
            "\u{2800}",
        ] {
            let bad = format!("\\school\\ali{invisible}ce");
            assert_eq!(err(&bad), UsernameError::InvisibleCharacter, "{bad:?}");
        }
    }

    #[test]
    fn rejects_private_use_and_unassigned_characters() {
        for odd in ["\u{e000}", "\u{f8ff}", "\u{10fffd}", "\u{378}", "\u{ffff}"] {
            let bad = format!("\\school\\ali{odd}ce");
            assert_eq!(err(&bad), UsernameError::UnassignedCharacter, "{bad:?}");
        }
    }

    #[test]
    fn decomposed_input_is_stored_composed_and_is_the_same_name() {
        let decomposed = Username::parse("\\e\u{301}cole\\Zoe\u{308}").unwrap();
        assert_eq!(decomposed.as_str(), r"\école\Zoë");
        assert_eq!(decomposed, Username::parse(r"\école\Zoë").unwrap());
        // Length counts the stored, composed characters.
        let long = format!(r"\d\{}", "e\u{301}".repeat(MAX_USERNAME_CHARS - 3));
        assert_eq!(Username::parse(long).unwrap().as_str().chars().count(), 255);
    }

    #[test]
    fn the_archaic_hangul_vowel_the_database_drops_is_rejected() {
        // After a syllable, composed or spelled with compatibility letters, and on its own.
        for bad in [
            "\\s\\\u{ac00}\u{11a7}",
            "\\s\\\u{3131}\u{314f}\u{11a7}",
            "\\s\\\u{11a7}",
        ] {
            assert_eq!(err(bad), UsernameError::UncomparableCharacter, "{bad:?}");
        }
        assert!(Username::parse("\\s\\\u{ac00}\u{11a8}").is_ok());
    }

    #[test]
    fn fullwidth_letters_are_kept_as_typed() {
        // East Asian input methods type fullwidth letters: accepted, and not rewritten beyond
        // NFC. (The database folds them when it compares accounts.)
        let fullwidth = Username::parse(r"\ｓｃｈｏｏｌ\ＡＬＩＣＥ").unwrap();
        assert_eq!(fullwidth.as_str(), r"\ｓｃｈｏｏｌ\ＡＬＩＣＥ");
    }

    #[test]
    fn characters_that_stand_for_a_backslash_are_rejected() {
        for bad in [r"\a\b＼c", r"\a\b﹨c", r"\a＼b\c", r"\＼\c"] {
            assert_eq!(err(bad), UsernameError::BackslashLookAlike, "{bad}");
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
    fn equality_is_the_exact_spelling_in_nfc() {
        let same = |a: &str, b: &str| Username::parse(a).unwrap() == Username::parse(b).unwrap();
        assert!(same(r"\s\émile", "\\s\\e\u{301}mile"));
        assert!(!same(r"\s\A", r"\s\a"));
        assert!(!same(r"\s\ÉMILE", r"\s\émile"));
        assert!(!same(r"\s\ａ", r"\s\a"));
        // Hash agrees with Eq.
        let set: std::collections::HashSet<Username> =
            [r"\s\émile", "\\s\\e\u{301}mile", r"\s\Émile"]
                .into_iter()
                .map(|name| Username::parse(name).unwrap())
                .collect();
        assert_eq!(set.len(), 2);
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
        fn accepted_names_round_trip_in_nfc(
            domain in r"[^\\\p{C}\p{Zl}\p{Zp}\s][^\\\p{C}\p{Zl}\p{Zp}]{0,40}",
            user in r"[^\\\p{C}\p{Zl}\p{Zp}\s][^\\\p{C}\p{Zl}\p{Zp}]{0,40}",
        ) {
            // The generator's Unicode tables differ from ours (Cn; characters newer than the
            // database's Unicode): leave out what ours forbid, then trim what that uncovered.
            let allowed = |text: String| -> String {
                let kept: String = text.chars().filter(|&c| forbidden_character(c).is_none()).collect();
                kept.nfc().collect::<String>().trim().to_owned()
            };
            let (domain, user) = (allowed(domain), allowed(user));
            prop_assume!(!domain.is_empty() && !user.is_empty());
            let candidate = format!(r"\{domain}\{user}");
            prop_assume!(candidate.chars().count() <= MAX_USERNAME_CHARS);
            prop_assume!(!candidate.chars().any(|c| forbidden_character(c).is_some()));
            // NFC of two halves can differ from NFC of the whole only at a backslash, which
            // never combines, so the parts survive.
            let parsed = Username::parse(candidate.clone()).unwrap();
            prop_assert_eq!(parsed.as_str(), candidate.as_str());
            prop_assert_eq!(parsed.domain(), domain.as_str());
            prop_assert_eq!(parsed.user(), user.as_str());
            // Any spelling that normalizes to it is the same name.
            let decomposed: String = candidate.nfd().collect();
            let reparsed = Username::parse(decomposed).unwrap();
            prop_assert_eq!(reparsed.as_str(), candidate.as_str());
        }
    }

    /// Any string is too seldom a name to test this with (two backslashes in the right places):
    /// strings near the shape are, often enough that the test counts its accepted cases.
    #[test]
    fn whatever_is_accepted_matches_the_seed_regex_in_nfc() {
        use proptest::test_runner::{Config, TestRunner};
        let near_the_shape =
            r"\\?\\?[a-zA-Z\u{301}\u{200b} \PC]{0,8}\\?\\?[a-zA-Z\u{301} \PC]{0,8}\\?";
        let accepted = std::cell::Cell::new(0_u32);
        TestRunner::new(Config::with_cases(2000))
            .run(&near_the_shape, |candidate| {
                if let Ok(parsed) = Username::parse(candidate.clone()) {
                    accepted.set(accepted.get() + 1);
                    let composed: String = candidate.nfc().collect();
                    prop_assert_eq!(parsed.as_str(), composed.as_str());
                    prop_assert!(composed.starts_with('\\'));
                    prop_assert_eq!(composed.matches('\\').count(), 2);
                    prop_assert!(!composed.starts_with(r"\\") && !composed.ends_with('\\'));
                }
                Ok(())
            })
            .unwrap();
        assert!(accepted.get() >= 100, "only {} accepted", accepted.get());
    }
}
