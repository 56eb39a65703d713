//! The migration's copy of the username rules agrees with the domain's (the migration may not
//! depend on our crates, so the rule exists twice; this test is what keeps it one rule).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should abort the test

use counseling_domain::{MAX_USERNAME_KEY_BYTES, Username, UsernameError};
use migration::m20261130_000001_username_identity::{MAX_KEY_BYTES, identity_key, is_forbidden};
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

#[test]
fn the_key_length_limit_is_the_same() {
    assert_eq!(MAX_KEY_BYTES, MAX_USERNAME_KEY_BYTES);
}

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

/// Text of many scripts, decomposed and compatibility forms, case pairs and special foldings.
fn username_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 ._-]{1,6}",
        3 => "[éÉèßẞİıIiΣσςΐǅǄǆﬁﬀＡａＺｚ０ｑ㍱ℌΩΩÅÅµμ]{1,4}",
        2 => "[\u{300}-\u{36f}\u{1100}-\u{11ff}\u{ac00}-\u{ac20}]{1,3}",
        2 => "[ЖжЁёΑ-Ρα-ω中文かカｶ😀]{1,3}",
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 1..6).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_migration_computes_the_domains_key(user in username_text(), decompose in any::<bool>()) {
        let candidate = format!(r"\school\{}", user.trim());
        let candidate = if decompose { candidate.nfd().collect() } else { candidate };
        if let Ok(username) = Username::parse(candidate) {
            // The migration keys stored names, which are the domain's NFC form.
            prop_assert_eq!(identity_key(username.as_str()), username.identity_key());
        }
    }
}
