//! The character rules for usernames. Account identity (when two usernames are one account) is
//! not decided here but by the database, with one SQL function (`username_identity`, in
//! migration `m20261203_000001_username_identity_in_database`) that its unique index, its checks
//! and every lookup use, so that no writer needs a copy of the rule.

use icu_properties::CodePointSetData;
use icu_properties::props::DefaultIgnorableCodePoint;
use unicode_general_category::{GeneralCategory, get_general_category};

/// The Unicode version of the general-category data behind the character rules. Changing it (by
/// upgrading `unicode-general-category`) can change which names are accepted.
pub const USERNAME_UNICODE_VERSION: (u64, u64, u64) = unicode_general_category::UNICODE_VERSION;

/// The characters other than `\` whose compatibility form (NFKC) is, or contains, a backslash:
/// U+FE68 SMALL REVERSE SOLIDUS and U+FF3C FULLWIDTH REVERSE SOLIDUS. The database compares
/// names by their NFKC form, where these would move the split between domain and user, so they
/// are refused (a test scans every code point for others).
pub const BACKSLASH_LOOK_ALIKES: [char; 2] = ['\u{fe68}', '\u{ff3c}'];

/// U+2800, a symbol (So) drawn as nothing: `\s\alice` followed by it looks like `\s\alice`.
const BRAILLE_PATTERN_BLANK: char = '\u{2800}';

/// Why a character may not appear in a username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForbiddenCharacter {
    /// Cc, Zl, Zp: tabs, line breaks and other controls.
    Control,
    /// Cf (zero-width characters, soft hyphen, byte-order mark, bidirectional controls) and the
    /// other default-ignorable code points (U+3164 HANGUL FILLER, U+034F COMBINING GRAPHEME
    /// JOINER, variation selectors), and U+2800 BRAILLE PATTERN BLANK: rendered as nothing, so
    /// `\s\alice` followed by one looks exactly like `\s\alice`.
    Invisible,
    /// Co, Cn (and Cs, which a Rust string cannot hold): no agreed meaning or appearance.
    Unassigned,
    /// Stands for a backslash once width is folded ([`BACKSLASH_LOOK_ALIKES`]).
    BackslashLookAlike,
}

pub(crate) fn forbidden_character(character: char) -> Option<ForbiddenCharacter> {
    if BACKSLASH_LOOK_ALIKES.contains(&character) {
        return Some(ForbiddenCharacter::BackslashLookAlike);
    }
    if CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(character)
        || character == BRAILLE_PATTERN_BLANK
    {
        return Some(ForbiddenCharacter::Invisible);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization;

    #[test]
    fn the_look_alikes_are_every_character_whose_compatibility_form_holds_a_backslash() {
        let folding: Vec<char> = ('\0'..=char::MAX)
            .filter(|&c| c != '\\' && c.to_string().nfkc().any(|d| d == '\\'))
            .collect();
        assert_eq!(folding, BACKSLASH_LOOK_ALIKES);
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
            '\u{ad}',
            '\u{200b}',
            '\u{200d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{feff}',
            '\u{3164}',
            '\u{115f}',
            '\u{34f}',
            '\u{fe0f}',
            '\u{180b}',
            '\u{ffa0}',
            '\u{e0100}',
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
        for look_alike in ['\u{fe68}', '\u{ff3c}'] {
            assert_eq!(
                forbidden_character(look_alike),
                Some(ForbiddenCharacter::BackslashLookAlike)
            );
        }
        for fine in [
            'a', 'É', 'ß', 'ı', '中', '😀', ' ', '\u{a0}', 'ａ', '\u{301}', '\\',
        ] {
            assert_eq!(forbidden_character(fine), None, "{fine:?}");
        }
    }
}
