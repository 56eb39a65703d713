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
