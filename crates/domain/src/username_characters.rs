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

/// The Unicode version of the database's own character tables: PostgreSQL 15 normalizes
/// (`IS NFC NORMALIZED`, `normalize`, and so `username_identity`) with Unicode 14.0's. A character
/// assigned after it is one those tables do not know: PostgreSQL 15 leaves it as it is where
/// newer tables compose or fold it, so the outlined `𜳖` (Unicode 16, NFKC `A`) would make
/// `\s\𜳖LICE` another account than `\s\alice`, and two spellings the domain composes into one
/// name could both be stored.
pub const DATABASE_UNICODE_VERSION: (u64, u64, u64) = (14, 0, 0);

/// The code points assigned after [`DATABASE_UNICODE_VERSION`], up to
/// [`USERNAME_UNICODE_VERSION`] (15.0, 15.1 and 16.0: 10,301 code points), as inclusive ranges:
/// refused until a migration teaches the database's rules a newer version. Written from Python
/// 3.11's `unicodedata` (Unicode 14.0: category `Cn`) and `unicode-general-category` (assigned);
/// a test holds it to the latter.
pub const NEWER_THAN_DATABASE: [(u32, u32); 75] = [
    (0x0897, 0x0897),
    (0x0CF3, 0x0CF3),
    (0x0ECE, 0x0ECE),
    (0x1B4E, 0x1B4F),
    (0x1B7F, 0x1B7F),
    (0x1C89, 0x1C8A),
    (0x2427, 0x2429),
    (0x2FFC, 0x2FFF),
    (0x31E4, 0x31E5),
    (0x31EF, 0x31EF),
    (0xA7CB, 0xA7CD),
    (0xA7DA, 0xA7DC),
    (0x105C0, 0x105F3),
    (0x10D40, 0x10D65),
    (0x10D69, 0x10D85),
    (0x10D8E, 0x10D8F),
    (0x10EC2, 0x10EC4),
    (0x10EFC, 0x10EFF),
    (0x1123F, 0x11241),
    (0x11380, 0x11389),
    (0x1138B, 0x1138B),
    (0x1138E, 0x1138E),
    (0x11390, 0x113B5),
    (0x113B7, 0x113C0),
    (0x113C2, 0x113C2),
    (0x113C5, 0x113C5),
    (0x113C7, 0x113CA),
    (0x113CC, 0x113D5),
    (0x113D7, 0x113D8),
    (0x113E1, 0x113E2),
    (0x116D0, 0x116E3),
    (0x11B00, 0x11B09),
    (0x11BC0, 0x11BE1),
    (0x11BF0, 0x11BF9),
    (0x11F00, 0x11F10),
    (0x11F12, 0x11F3A),
    (0x11F3E, 0x11F5A),
    (0x1342F, 0x1342F),
    (0x13439, 0x13455),
    (0x13460, 0x143FA),
    (0x16100, 0x16139),
    (0x16D40, 0x16D79),
    (0x18CFF, 0x18CFF),
    (0x1B132, 0x1B132),
    (0x1B155, 0x1B155),
    (0x1CC00, 0x1CCF9),
    (0x1CD00, 0x1CEB3),
    (0x1D2C0, 0x1D2D3),
    (0x1DF25, 0x1DF2A),
    (0x1E030, 0x1E06D),
    (0x1E08F, 0x1E08F),
    (0x1E4D0, 0x1E4F9),
    (0x1E5D0, 0x1E5FA),
    (0x1E5FF, 0x1E5FF),
    (0x1F6DC, 0x1F6DC),
    (0x1F774, 0x1F776),
    (0x1F77B, 0x1F77F),
    (0x1F7D9, 0x1F7D9),
    (0x1F8B2, 0x1F8BB),
    (0x1F8C0, 0x1F8C1),
    (0x1FA75, 0x1FA77),
    (0x1FA87, 0x1FA89),
    (0x1FA8F, 0x1FA8F),
    (0x1FAAD, 0x1FAAF),
    (0x1FABB, 0x1FABF),
    (0x1FAC6, 0x1FAC6),
    (0x1FACE, 0x1FACF),
    (0x1FADA, 0x1FADC),
    (0x1FADF, 0x1FADF),
    (0x1FAE8, 0x1FAE9),
    (0x1FAF7, 0x1FAF8),
    (0x1FBCB, 0x1FBEF),
    (0x2B739, 0x2B739),
    (0x2EBF0, 0x2EE5D),
    (0x31350, 0x323AF),
];

/// The characters PostgreSQL's own normalization gets wrong (PostgreSQL 15 at least), which its
/// identity rule would compare wrongly: U+11A7 HANGUL JUNGSEONG O-YAE, an archaic vowel, which
/// `normalize` drops after a syllable of consonant and vowel (`\s\가` + U+11A7 is `\s\가`)
/// because it takes it for the "no final consonant" of the Hangul composition (UAX #15 starts
/// the finals after it), so the unique index would make the two names one account, where
/// Unicode's rule and the domain's keep them apart. Refused wherever it appears: the same
/// happens after a syllable that NFKC composes from compatibility letters (`ㄱㅏ`), so no
/// narrower rule is safe.
pub const UNCOMPARABLE_IN_DATABASE: [char; 1] = ['\u{11a7}'];

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
    /// Assigned after the database's Unicode version ([`NEWER_THAN_DATABASE`]).
    NewerThanDatabase,
    /// Normalized wrongly by the database ([`UNCOMPARABLE_IN_DATABASE`]).
    UncomparableInDatabase,
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
        _ if is_newer_than_database(character) => Some(ForbiddenCharacter::NewerThanDatabase),
        _ if UNCOMPARABLE_IN_DATABASE.contains(&character) => {
            Some(ForbiddenCharacter::UncomparableInDatabase)
        }
        _ => None,
    }
}

/// Whether `character` was assigned after [`DATABASE_UNICODE_VERSION`] ([`NEWER_THAN_DATABASE`]).
pub fn is_newer_than_database(character: char) -> bool {
    let code = u32::from(character);
    // The first range that does not end before `code` (the ranges are sorted).
    let index = NEWER_THAN_DATABASE.partition_point(|&(_, last)| last < code);
    NEWER_THAN_DATABASE
        .get(index)
        .is_some_and(|&(first, _)| first <= code)
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

    /// Whatever a name holds, its compatibility form holds U+11A7 only where the name does: no
    /// other character brings it into the database's identity rule.
    #[test]
    fn only_the_uncomparable_characters_themselves_hold_them_once_folded() {
        let bringing: Vec<char> = ('\0'..=char::MAX)
            .filter(|c| {
                c.to_string()
                    .nfkc()
                    .any(|d| UNCOMPARABLE_IN_DATABASE.contains(&d))
            })
            .collect();
        assert_eq!(bringing, UNCOMPARABLE_IN_DATABASE);
        assert_eq!(
            forbidden_character('\u{11a7}'),
            Some(ForbiddenCharacter::UncomparableInDatabase)
        );
        // Its neighbours, the first final consonant and the last vowel, are letters like any.
        for letter in ['\u{11a8}', '\u{11a6}', '\u{1175}', '가', '각'] {
            assert_eq!(forbidden_character(letter), None, "{letter:?}");
        }
    }

    #[test]
    fn the_newer_characters_are_sorted_assigned_ranges() {
        let mut previous = None;
        for &(first, last) in &NEWER_THAN_DATABASE {
            assert!(first <= last && previous.is_none_or(|end| end + 1 < first));
            previous = Some(last);
            for code in first..=last {
                let character = char::from_u32(code).unwrap_or_default();
                let category = get_general_category(character);
                assert_ne!(category, GeneralCategory::Unassigned, "U+{code:04X}");
            }
        }
        let count: u32 = NEWER_THAN_DATABASE.iter().map(|(f, l)| l - f + 1).sum();
        assert_eq!(count, 10_301);
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
        // Unicode 15.0 (Kawi), 15.1 (a CJK ideograph of Extension I), 16.0 (the outlined A,
        // Garay), at the ends of their ranges.
        for newer in [
            '\u{11f00}',
            '\u{2ebf0}',
            '\u{2ee5d}',
            '\u{1ccd6}',
            '\u{10d50}',
        ] {
            assert_eq!(
                forbidden_character(newer),
                Some(ForbiddenCharacter::NewerThanDatabase),
                "{newer:?}"
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
