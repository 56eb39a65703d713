//! A migration's checksum: SHA-256 of its source file (`migration/src/<version>.rs`, embedded
//! with `include_str!`), with CRLF line ends read as LF so a Windows checkout has the same
//! checksum. Every other byte counts: editing SQL, code, formatting or a comment changes it.

use std::fmt;

use sha2::{Digest, Sha256};

/// The SHA-256 of a migration's source, shown (and stored) as 64 lower-case hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Checksum(String);

impl Checksum {
    pub fn of_source(source: &str) -> Self {
        let digest = Sha256::digest(source.replace("\r\n", "\n").as_bytes());
        Self(digest.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// A checksum as stored in the history table.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_the_sha256_of_the_source_with_lf_line_ends() {
        // sha256("abc"), FIPS 180-2's example.
        assert_eq!(
            Checksum::of_source("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Checksum::of_source("a\r\nb\r\n"),
            Checksum::of_source("a\nb\n")
        );
        // Formatting and comments count.
        assert_ne!(
            Checksum::of_source("a\nb\n"),
            Checksum::of_source("a\nb \n")
        );
        assert_ne!(Checksum::of_source("x"), Checksum::of_source("x // note"));
    }
}
