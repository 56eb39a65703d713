//! `just dev`'s `.env`: `.env.example` with fresh secrets, so no two checkouts share a password
//! and none is known from the repository.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Result, TestkitError};

/// Writes `target` from `example` unless `target` exists (then returns `false`): every distinct
/// value of a `*_PASSWORD` variable is a placeholder, replaced everywhere in the file (URLs
/// included) by one new random password, so the URLs and compose's variables still agree. The
/// file is created exclusively, readable by its owner only.
pub fn write_env_file(example: &Path, target: &Path) -> Result<bool> {
    if target.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(example)
        .map_err(TestkitError::io(format!("reading {}", example.display())))?;
    let placeholders: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, value)| name.trim().ends_with("_PASSWORD") && !value.trim().is_empty())
        .map(|(_, value)| (value.trim().to_owned(), crate::platform::random_password()))
        .collect();
    // Longest first, so that a placeholder inside another is not replaced half-way.
    let mut by_length: Vec<_> = placeholders.iter().collect();
    by_length.sort_by_key(|(placeholder, _)| std::cmp::Reverse(placeholder.len()));
    let fresh = by_length
        .into_iter()
        .fold(text, |text, (placeholder, password)| {
            text.replace(placeholder.as_str(), password)
        });
    crate::tls::write_private(target, &fresh)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_placeholder_gets_one_fresh_password_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let (example, target) = (dir.path().join(".env.example"), dir.path().join(".env"));
        std::fs::write(
            &example,
            "DATABASE_URL=postgres://app:change-me-service@localhost/db\n\
             DATABASE_OWNER_URL=postgres://own:change-me-owner@localhost/db\n\
             POSTGRES_SERVICE_PASSWORD=change-me-service\n\
             POSTGRES_OWNER_PASSWORD=change-me-owner\n",
        )
        .unwrap();
        assert!(write_env_file(&example, &target).unwrap());
        let written = std::fs::read_to_string(&target).unwrap();
        assert!(!written.contains("change-me"), "{written}");
        let value = |name: &str| {
            written
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        let service = value("POSTGRES_SERVICE_PASSWORD");
        assert_eq!(service.len(), 64);
        assert!(value("DATABASE_URL").contains(&format!(":{service}@")));
        assert_ne!(service, value("POSTGRES_OWNER_PASSWORD"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // An existing .env is never overwritten.
        assert!(!write_env_file(&example, &target).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), written);
    }
}
