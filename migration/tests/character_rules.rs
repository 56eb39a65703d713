//! The character rules of `m20261130_000001_username_identity` (a check generated from the
//! migration's frozen copy of them; migrations may not depend on our crates) are the domain's.
//! (Its copy of the identity rule is no longer the domain's: identity is the database's own since
//! `m20261203_000001_username_identity_in_database`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

use counseling_domain::{Username, UsernameError};
use migration::m20261130_000001_username_identity::is_forbidden;

#[test]
fn the_forbidden_characters_are_the_same_for_every_code_point() {
    for character in ('\u{1}'..=char::MAX).filter(|&c| c != '\\') {
        let domain_forbids = matches!(
            Username::parse(format!(r"\d\a{character}b")),
            Err(UsernameError::ControlCharacter
                | UsernameError::InvisibleCharacter
                | UsernameError::UnassignedCharacter)
        );
        assert_eq!(
            domain_forbids,
            is_forbidden(character),
            "U+{:04X}",
            u32::from(character)
        );
    }
}
