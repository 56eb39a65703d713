use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The bcrypt work factor used by [`PasswordHash::hash`]: the seed asks for 12 or more.
pub const BCRYPT_COST: u32 = 12;

/// The lowest cost accepted, for new and stored hashes alike: the seed's 12.
pub const MIN_BCRYPT_COST: u32 = 12;

/// The highest cost accepted, for new and stored hashes alike. Each step doubles the work: 12
/// takes about 0.2 s of one core here, so 15 takes about 1.6 s and bcrypt's own maximum of 31
/// about 5 days. A stored hash of cost 31 would turn every sign-in against it into a denial of service,
/// so anything above 15 is refused; 15 leaves room to raise the default three times as hardware
/// gets faster. The database's `ck_users_password_hash_format` enforces the same range.
pub const MAX_BCRYPT_COST: u32 = 15;

/// bcrypt uses at most 72 bytes of a password; longer ones are refused rather than silently
/// truncated (two passwords sharing those 72 bytes would otherwise both match). Exactly 72 is
/// allowed: every byte counts.
pub const MAX_PASSWORD_BYTES: usize = 72;
const BCRYPT_HASH_LEN: usize = 60;
const BCRYPT_SALT_AND_DIGEST_LEN: usize = 53;
/// bcrypt's base-64 alphabet, in value order.
const BCRYPT_ALPHABET: &[u8; 64] =
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A bcrypt hash of a password (`$2a$`, `$2b$` or `$2y$`, cost 12 to 15, 60 characters).
///
/// It can only be made by hashing a password or by parsing something that already is such a hash,
/// so a plaintext password can never be stored by mistake. `Debug` and `Display` print a
/// redaction and there is no `Serialize`: a hash is offline-crackable and never belongs in a log
/// or a response.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordHashError {
    #[error("not a bcrypt hash ($2a$, $2b$ or $2y$ followed by a cost, 60 characters in all)")]
    NotBcrypt,
    #[error(
        "not a hash bcrypt writes: the last character of its salt or digest sets bits bcrypt \
         leaves zero, so no password matches it"
    )]
    NotCanonical,
    #[error("the bcrypt cost {actual} is below the minimum of {minimum}")]
    CostTooLow { actual: u32, minimum: u32 },
    #[error("the bcrypt cost {actual} is above the maximum of {maximum}")]
    CostTooHigh { actual: u32, maximum: u32 },
    #[error("a password must be at most {max} bytes long (bcrypt ignores the rest)")]
    PasswordTooLong { max: usize },
    #[error("a password must not be empty")]
    EmptyPassword,
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// `Ok` when `cost` is within [`MIN_BCRYPT_COST`]..=[`MAX_BCRYPT_COST`].
fn check_cost(cost: u32) -> Result<(), PasswordHashError> {
    if cost < MIN_BCRYPT_COST {
        return Err(PasswordHashError::CostTooLow {
            actual: cost,
            minimum: MIN_BCRYPT_COST,
        });
    }
    if cost > MAX_BCRYPT_COST {
        return Err(PasswordHashError::CostTooHigh {
            actual: cost,
            maximum: MAX_BCRYPT_COST,
        });
    }
    Ok(())
}

/// Whether bcrypt can hash `password` whole: 1 to [`MAX_PASSWORD_BYTES`] bytes.
fn check_password(password: &[u8]) -> Result<(), PasswordHashError> {
    if password.is_empty() {
        return Err(PasswordHashError::EmptyPassword);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordHashError::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        });
    }
    Ok(())
}

impl PasswordHash {
    /// Hashes `password` with bcrypt at [`BCRYPT_COST`].
    ///
    /// This takes a few hundred milliseconds of CPU on purpose; call it from a blocking context
    /// (`tokio::task::spawn_blocking`), never directly on an async executor thread.
    pub fn hash(password: &SecretString) -> Result<Self, PasswordHashError> {
        Self::hash_with_cost(password, BCRYPT_COST)
    }

    /// Hashes with an explicit cost, which must be within [`MIN_BCRYPT_COST`]..=[`MAX_BCRYPT_COST`].
    pub fn hash_with_cost(password: &SecretString, cost: u32) -> Result<Self, PasswordHashError> {
        check_cost(cost)?;
        let bytes = password.expose_secret().as_bytes();
        check_password(bytes)?;
        // Not `non_truncating_hash`: it counts bcrypt's NUL terminator and so refuses exactly 72
        // bytes, although all 72 are used. `check_password` has refused anything longer, so
        // nothing of the password is cut here.
        let hash = bcrypt::hash(bytes, cost)
            .map_err(|error| PasswordHashError::Hashing(error.to_string()))?;
        Self::parse(hash)
    }

    /// Accepts an existing bcrypt hash, for example one read back from the database.
    pub fn parse(candidate: impl Into<String>) -> Result<Self, PasswordHashError> {
        let candidate = candidate.into();
        let cost = bcrypt_cost(&candidate).ok_or(PasswordHashError::NotBcrypt)?;
        check_cost(cost)?;
        if !is_canonical(&candidate) {
            return Err(PasswordHashError::NotCanonical);
        }
        Ok(Self(candidate))
    }

    /// Checks `candidate` against this hash in constant time. A password bcrypt cannot have
    /// hashed whole (empty or over 72 bytes) never matches.
    ///
    /// Like [`PasswordHash::hash`], this is deliberately slow: run it off the async executor.
    pub fn verify(&self, candidate: &SecretString) -> bool {
        let bytes = candidate.expose_secret().as_bytes();
        // As in `hash_with_cost`: the length is checked here, so bcrypt's own 72-byte cut-off
        // never drops a byte (its non-truncating verify would refuse exactly 72).
        check_password(bytes).is_ok() && bcrypt::verify(bytes, &self.0).unwrap_or(false)
    }

    /// The bcrypt cost this hash was made with.
    pub fn cost(&self) -> u32 {
        // `parse` has checked the format, so the cost digits are present.
        bcrypt_cost(&self.0).unwrap_or(0)
    }

    /// The hash itself, for the persistence adapter to store. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Returns the cost of a well-formed `$2[aby]$NN$<53 chars of ./A-Za-z0-9>` hash, or `None`.
fn bcrypt_cost(candidate: &str) -> Option<u32> {
    let bytes = candidate.as_bytes();
    if bytes.len() != BCRYPT_HASH_LEN {
        return None;
    }
    let (prefix, rest) = bytes.split_at(4);
    if !matches!(prefix, b"$2a$" | b"$2b$" | b"$2y$") {
        return None;
    }
    let (cost_digits, rest) = rest.split_at(2);
    if !cost_digits.iter().all(u8::is_ascii_digit) || rest.first() != Some(&b'$') {
        return None;
    }
    let salt_and_digest = &rest[1..];
    let alphabet_ok = salt_and_digest
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/');
    if salt_and_digest.len() != BCRYPT_SALT_AND_DIGEST_LEN || !alphabet_ok {
        return None;
    }
    let cost = u32::from(cost_digits[0] - b'0') * 10 + u32::from(cost_digits[1] - b'0');
    // bcrypt defines costs 4 to 31 only.
    (4..=31).contains(&cost).then_some(cost)
}

/// Whether the unused low bits of a well-formed hash are zero, as every bcrypt writes them: 22
/// characters carry the salt's 128 bits (4 left over) and 31 the digest's 184 (2 left over). A
/// hash with any of them set matches no password: the `bcrypt` crate refuses to decode it, and
/// an implementation that ignores them re-encodes the salt it read without them and so never
/// writes the same string. The database's `ck_users_password_hash_unused_bits_zero` holds the same rule.
fn is_canonical(hash: &str) -> bool {
    let value = |position: usize| {
        let character = hash.as_bytes().get(position);
        character.and_then(|c| BCRYPT_ALPHABET.iter().position(|a| a == c))
    };
    // `$2b$12$` is 7 characters: the salt ends at position 28, the digest at 59.
    value(28).is_some_and(|salt| salt & 0b1111 == 0)
        && value(59).is_some_and(|digest| digest & 0b11 == 0)
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([REDACTED])")
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    /// One real cost-12 hash shared by the tests: each hash costs ~0.2 s of CPU.
    static HASHED: LazyLock<PasswordHash> =
        LazyLock::new(|| PasswordHash::hash(&secret("correct horse battery staple")).unwrap());

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    /// A real cost-12 hash (of "fixture password").
    const VALID: &str = "$2b$12$c5G8mzpnmaf2UPnIusjhHuPqJp12Sa.rNY.T9.H7r1WW91mZgm6Sq";

    #[test]
    fn hash_produces_a_cost_12_bcrypt_hash_that_verifies() {
        let hash = &*HASHED;
        assert_eq!(hash.expose().len(), 60);
        assert!(hash.expose().starts_with("$2b$12$"));
        assert_eq!(hash.cost(), 12);
        assert!(hash.verify(&secret("correct horse battery staple")));
        assert!(!hash.verify(&secret("correct horse battery stapler")));
        assert!(!hash.verify(&secret("")));
    }

    #[test]
    fn the_fixture_is_a_real_hash_of_its_password() {
        let fixture = PasswordHash::parse(VALID).unwrap();
        assert!(fixture.verify(&secret("fixture password")));
        assert!(!fixture.verify(&secret("fixture passwore")));
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_salt() {
        let again = PasswordHash::hash(&secret("correct horse battery staple")).unwrap();
        assert_ne!(&again, &*HASHED);
        assert!(again.verify(&secret("correct horse battery staple")));
    }

    #[test]
    fn hashing_refuses_what_bcrypt_would_truncate_or_cannot_hash() {
        let long = secret(&"a".repeat(73));
        assert_eq!(
            PasswordHash::hash(&long),
            Err(PasswordHashError::PasswordTooLong { max: 72 })
        );
        assert_eq!(
            PasswordHash::hash(&secret("")),
            Err(PasswordHashError::EmptyPassword)
        );
        assert_eq!(
            PasswordHash::hash_with_cost(&secret("pw"), 11),
            Err(PasswordHashError::CostTooLow {
                actual: 11,
                minimum: 12
            })
        );
    }

    #[test]
    fn the_length_rule_is_exact_at_71_72_and_73_bytes() {
        for length in [71, 72] {
            let password = "p".repeat(length - 1) + "1";
            let hash = PasswordHash::hash(&secret(&password)).unwrap();
            assert!(hash.verify(&secret(&password)), "{length} bytes");
            // The last byte counts: change it and the password no longer matches.
            let other = "p".repeat(length - 1) + "2";
            assert!(!hash.verify(&secret(&other)), "{length} bytes");
        }
        // 72 bytes of 3-byte characters: the limit is in bytes, not characters.
        let euros = "€".repeat(24);
        assert!(PasswordHash::hash(&secret(&euros)).is_ok());
        for too_long in ["p".repeat(73), "€".repeat(25)] {
            let refused = PasswordHash::hash(&secret(&too_long));
            assert_eq!(
                refused,
                Err(PasswordHashError::PasswordTooLong { max: 72 }),
                "{} bytes",
                too_long.len()
            );
            assert_eq!(
                refused.unwrap_err().to_string(),
                "a password must be at most 72 bytes long (bcrypt ignores the rest)"
            );
        }
    }

    #[test]
    fn a_73_byte_password_never_matches_the_hash_of_its_first_72() {
        let first_72 = "q".repeat(72);
        let hash = PasswordHash::hash(&secret(&first_72)).unwrap();
        assert!(hash.verify(&secret(&first_72)));
        assert!(!hash.verify(&secret(&format!("{first_72}x"))));
    }

    #[test]
    fn hashing_refuses_costs_outside_12_to_15() {
        assert_eq!(
            PasswordHash::hash_with_cost(&secret("pw"), 16),
            Err(PasswordHashError::CostTooHigh {
                actual: 16,
                maximum: 15
            })
        );
        assert_eq!(
            PasswordHash::hash_with_cost(&secret("pw"), 31),
            Err(PasswordHashError::CostTooHigh {
                actual: 31,
                maximum: 15
            })
        );
    }

    #[test]
    fn parse_accepts_each_bcrypt_variant_at_costs_12_to_15() {
        for prefix in ["$2a$12$", "$2b$12$", "$2y$12$", "$2b$13$", "$2b$15$"] {
            let candidate = format!("{prefix}{}", &VALID[7..]);
            assert!(
                PasswordHash::parse(candidate.clone()).is_ok(),
                "{candidate}"
            );
        }
    }

    #[test]
    fn parse_rejects_plaintext_and_malformed_hashes() {
        let cases = [
            "hunter2".to_owned(),
            String::new(),
            format!("$2x$12${}", &VALID[7..]), // unsupported variant
            format!("$1$12${}", &VALID[6..]),  // not bcrypt
            format!("$2b$1a${}", &VALID[7..]), // non-digit cost
            format!("$2b$12#{}", &VALID[7..]), // missing separator
            format!("{VALID}x"),               // 61 characters
            VALID[..59].to_owned(),            // 59 characters
            format!("$2b$12${}!", &VALID[7..59]), // character outside the alphabet
            format!("$2b$32${}", &VALID[7..]), // cost bcrypt does not define
        ];
        for candidate in cases {
            assert_eq!(
                PasswordHash::parse(candidate.clone()),
                Err(PasswordHashError::NotBcrypt),
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn parse_rejects_costs_above_15() {
        for cost in 16..=31 {
            assert_eq!(
                PasswordHash::parse(format!("$2b${cost}${}", &VALID[7..])),
                Err(PasswordHashError::CostTooHigh {
                    actual: cost,
                    maximum: 15
                })
            );
        }
    }

    /// `VALID` with its character at `position` replaced by `character`.
    fn with_character(position: usize, character: u8) -> String {
        let mut bytes = VALID.as_bytes().to_vec();
        bytes[position] = character;
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn parse_accepts_exactly_the_last_characters_bcrypt_writes() {
        // The salt's last character carries 2 bits, the digest's 4; the rest are zero.
        let mut salt_ends = Vec::new();
        let mut digest_ends = Vec::new();
        for &character in BCRYPT_ALPHABET {
            let salt = PasswordHash::parse(with_character(28, character));
            let digest = PasswordHash::parse(with_character(59, character));
            for (parsed, ends) in [(salt, &mut salt_ends), (digest, &mut digest_ends)] {
                match parsed {
                    Ok(_) => ends.push(character),
                    Err(error) => assert_eq!(error, PasswordHashError::NotCanonical),
                }
            }
        }
        assert_eq!(String::from_utf8(salt_ends).unwrap(), ".Oeu");
        assert_eq!(String::from_utf8(digest_ends).unwrap(), ".CGKOSWaeimquy26");
        assert_eq!(
            PasswordHashError::NotCanonical.to_string(),
            "not a hash bcrypt writes: the last character of its salt or digest sets bits bcrypt \
             leaves zero, so no password matches it"
        );
    }

    #[test]
    fn every_hash_bcrypt_writes_passes_the_rule_and_one_it_does_not_matches_nothing() {
        for round in 0..64 {
            let password = format!("password {round}");
            // Cost 4, bcrypt's least, keeps this quick; the rule does not depend on the cost.
            let hash = bcrypt::hash(&password, 4).unwrap();
            assert!(is_canonical(&hash), "{hash}");
            assert!(bcrypt::verify(&password, &hash).unwrap());
            // The same salt and digest as a lenient decoder reads them, one unused bit set.
            for position in [28, 59] {
                let mut bytes = hash.clone().into_bytes();
                let value = BCRYPT_ALPHABET.iter().position(|&c| c == bytes[position]);
                bytes[position] = BCRYPT_ALPHABET[value.unwrap() + 1];
                let altered = String::from_utf8(bytes).unwrap();
                assert!(!is_canonical(&altered), "{altered}");
                assert!(!bcrypt::verify(&password, &altered).unwrap_or(false));
            }
        }
    }

    #[test]
    fn parse_rejects_costs_below_12() {
        let weak = format!("$2b$11${}", &VALID[7..]);
        assert_eq!(
            PasswordHash::parse(weak),
            Err(PasswordHashError::CostTooLow {
                actual: 11,
                minimum: 12
            })
        );
        let weakest = format!("$2b$04${}", &VALID[7..]);
        assert!(PasswordHash::parse(weakest).is_err());
    }

    #[test]
    fn debug_and_display_never_show_the_hash() {
        let hash = PasswordHash::parse(VALID).unwrap();
        for shown in [
            format!("{hash:?}"),
            format!("{hash}"),
            format!("{:?}", Some(&hash)),
        ] {
            assert!(!shown.contains("$2b$"), "{shown}");
            assert!(!shown.contains(&VALID[7..29]), "{shown}");
            assert!(shown.contains("REDACTED"));
        }
    }
}
