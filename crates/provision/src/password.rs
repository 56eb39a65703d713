//! The one password generator of our tools.

use secrecy::SecretString;

use crate::{ProvisionError, Result};

/// 32 bytes from the operating system's cryptographic source, as 64 hex digits: safe in a URL,
/// a SQL literal, YAML and a `.env` line without any escaping. `Debug` redacts it.
pub fn generate_password() -> Result<SecretString> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| {
        ProvisionError::Failed("the operating system's random source is unavailable".into())
    })?;
    Ok(bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>()
        .into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use secrecy::ExposeSecret;

    #[test]
    fn passwords_are_long_hex_differ_and_hide_in_debug() {
        let (a, b) = (
            super::generate_password().unwrap(),
            super::generate_password().unwrap(),
        );
        assert_eq!(a.expose_secret().len(), 64);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!format!("{a:?}").contains(a.expose_secret()));
    }
}
