//! The character rules for usernames and the rule that decides when two usernames are one account.
//!
//! Both are computed here, in Rust, from Unicode data pinned by `Cargo.lock`, never by the
//! database: PostgreSQL's `lower()` follows the server's `LC_CTYPE` (under `C` it folds only ASCII,
//! under a Turkish locale `I` becomes `ı`) and its tables can change with a glibc or ICU upgrade.
//! The migration `m20261130_000001_username_identity` carries a copy of this rule (it may not
//! depend on our crates) for its backfill; a test in the migration crate shows the two agree.

use caseless::Caseless;
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

/// The Unicode version of the case-folding and general-category data behind the username rules.
/// Changing it (by upgrading `caseless` or `unicode-general-category`) can change which names are
/// accepted or are one account, so it needs a migration that re-checks and re-keys stored rows.
pub const USERNAME_UNICODE_VERSION: (u64, u64, u64) = caseless::UNICODE_VERSION;

/// The longest identity key, in bytes. Compatibility decomposition can turn one character into
/// many (U+FDFA becomes 18 letters), and a unique B-tree entry must stay under PostgreSQL's
/// 2704-byte limit without relying on compression. Ordinary 255-character names stay far below.
pub const MAX_USERNAME_KEY_BYTES: usize = 2048;

/// Why a character may not appear in a username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForbiddenCharacter {
    /// Cc, Zl, Zp: tabs, line breaks and other controls.
    Control,
    /// Cf: zero-width characters, soft hyphen, byte-order mark, bidirectional controls.
    Invisible,
    /// Co, Cn (and Cs, which a Rust string cannot hold): no agreed meaning or appearance.
    Unassigned,
}

pub(crate) fn forbidden_character(character: char) -> Option<ForbiddenCharacter> {
    match get_general_category(character) {
        GeneralCategory::Control
        | GeneralCategory::LineSeparator
        | GeneralCategory::ParagraphSeparator => Some(ForbiddenCharacter::Control),
        GeneralCategory::Format => Some(ForbiddenCharacter::Invisible),
        GeneralCategory::PrivateUse | GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
            Some(ForbiddenCharacter::Unassigned)
        }
        _ => None,
    }
}

/// The identity key: Unicode's compatibility caseless match (D146,
/// `NFKD(casefold(NFKD(casefold(NFD(x)))))`, with the default, not the Turkic, case folding),
/// recomposed to NFC so it is compact. Two usernames are one account exactly when their keys are
/// equal: case is ignored (`ÉMILE` = `émile`, `STRASSE` = `straße`, `I` = `i` while `İ` and `ı` stay
/// distinct from `i`) and compatibility look-alikes are folded (fullwidth `ａｌｉｃｅ` = `alice`).
pub(crate) fn identity_key(username: &str) -> String {
    // ASCII is its own NFC, NFD and NFKD, and default case folding maps only A-Z within it: the
    // rule below gives the lower-case name (a test checks every ASCII character against it).
    if username.is_ascii() {
        return username.to_ascii_lowercase();
    }
    identity_key_by_the_rule(username)
}

/// [`identity_key`] without the ASCII shortcut: the documented rule itself.
fn identity_key_by_the_rule(username: &str) -> String {
    username
        .chars()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkd()
        .nfc()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_folding_and_normalization_data_are_the_same_unicode_version() {
        assert_eq!(
            caseless::UNICODE_VERSION,
            unicode_general_category::UNICODE_VERSION
        );
    }

    #[test]
    fn the_ascii_shortcut_gives_what_the_rule_gives() {
        let every_ascii: String = (0u8..=127).map(char::from).collect();
        assert_eq!(
            identity_key(&every_ascii),
            identity_key_by_the_rule(&every_ascii)
        );
        for name in [r"\School\ALICE", r"\dom42\User4242", "\\x\\Y Z_-.@"] {
            assert_eq!(identity_key(name), identity_key_by_the_rule(name), "{name}");
        }
    }

    #[test]
    fn keys_fold_case_fully_and_without_locale() {
        assert_eq!(identity_key("ÉMILE"), identity_key("émile"));
        assert_eq!(identity_key("E\u{301}MILE"), identity_key("émile"));
        assert_eq!(identity_key("STRASSE"), identity_key("straße"));
        assert_eq!(identity_key("STRAẞE"), identity_key("strasse"));
        assert_eq!(identity_key("ΣΊΣΥΦΟΣ"), identity_key("σίσυφος"));
        // Default (not Turkic) folding: I is i; dotted İ and dotless ı are letters of their own.
        assert_eq!(identity_key("KIZ"), "kiz");
        assert_eq!(identity_key("kız"), "kız");
        assert_eq!(identity_key("KİZ"), "ki\u{307}z");
    }

    #[test]
    fn keys_fold_compatibility_look_alikes() {
        assert_eq!(identity_key("ａｌｉｃｅ"), "alice");
        assert_eq!(identity_key("ＡＬＩＣＥ"), "alice");
        assert_eq!(identity_key("ﬁnn"), "finn");
        assert_eq!(identity_key("anne\u{3000}marie"), "anne marie");
    }

    #[test]
    fn categories_are_classified() {
        for control in ['\t', '\u{85}', '\u{2028}', '\u{2029}'] {
            assert_eq!(
                forbidden_character(control),
                Some(ForbiddenCharacter::Control)
            );
        }
        for invisible in [
            '\u{ad}', '\u{200b}', '\u{200d}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{feff}',
        ] {
            assert_eq!(
                forbidden_character(invisible),
                Some(ForbiddenCharacter::Invisible),
                "{invisible:?}"
            );
        }
        for unassigned in ['\u{e000}', '\u{10fffd}', '\u{378}', '\u{ffff}'] {
            assert_eq!(
                forbidden_character(unassigned),
                Some(ForbiddenCharacter::Unassigned),
                "{unassigned:?}"
            );
        }
        for fine in [
            'a', 'É', 'ß', 'ı', '中', '😀', ' ', '\u{a0}', 'ａ', '\u{301}',
        ] {
            assert_eq!(forbidden_character(fine), None, "{fine:?}");
        }
    }
}
