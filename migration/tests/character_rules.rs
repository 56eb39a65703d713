//! The character rules of `m20261130_000001_username_identity`,
//! `m20261205_000001_username_default_ignorables`, `m20261205_000005_username_unicode_14` and
//! `m20261206_000001_username_hangul_o_yae` (checks generated from the migrations' frozen
//! copies of them; migrations may not depend on our crates) are the domain's.
//! (Its copy of the identity rule is no longer the domain's: identity is the database's own since
//! `m20261203_000001_username_identity_in_database`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

use counseling_domain::{Username, UsernameError};
use migration::m20261130_000001_username_identity::is_forbidden;
use migration::m20261205_000001_username_default_ignorables::is_invisible;
use migration::m20261205_000005_username_unicode_14::is_newer_than_unicode_14;
use migration::m20261206_000001_username_hangul_o_yae::UNCOMPARABLE;

#[test]
fn the_forbidden_characters_are_the_same_for_every_code_point() {
    for character in ('\u{1}'..=char::MAX).filter(|&c| c != '\\') {
        let domain_forbids = matches!(
            Username::parse(format!(r"\d\a{character}b")),
            Err(UsernameError::ControlCharacter
                | UsernameError::InvisibleCharacter
                | UsernameError::UnassignedCharacter
                | UsernameError::NewerThanDatabase
                | UsernameError::UncomparableCharacter)
        );
        // Also the check of m20261205_000001: its frozen list of default-ignorable code points
        // is the domain's Unicode data (a new Unicode version that adds some fails here: they
        // need a migration of their own).
        assert_eq!(
            domain_forbids,
            is_forbidden(character)
                || is_invisible(character)
                || is_newer_than_unicode_14(character)
                || UNCOMPARABLE.contains(&character),
            "U+{:04X}",
            u32::from(character)
        );
    }
}
