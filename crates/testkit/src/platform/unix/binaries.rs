use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{Result, TestkitError};

/// Finds the directory holding `initdb` and `postgres`: `pg_bin_dir` (from `PG_BIN_DIR`) if
/// given, else the highest version under `lib_root` (`/usr/lib/postgresql/*/bin`), else `PATH`.
pub fn locate_binaries(
    pg_bin_dir: Option<PathBuf>,
    lib_root: &Path,
    path_var: Option<OsString>,
) -> Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = pg_bin_dir {
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(TestkitError::NoBinaries {
                searched: format!("PG_BIN_DIR={} has no initdb and postgres", dir.display()),
            })
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(lib_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(&path_var) {
            // Debian links initdb into PATH but not postgres: follow the link to the real bin dir.
            let initdb = dir.join("initdb");
            if let Ok(real) = std::fs::canonicalize(&initdb)
                && let Some(bin) = real.parent()
                && has_server(bin)
            {
                return Ok(bin.to_path_buf());
            }
        }
    }
    Err(TestkitError::NoBinaries {
        searched: format!(
            "looked in PG_BIN_DIR, {}/*/bin and PATH",
            lib_root.display()
        ),
    })
}

/// The binaries of this machine, per the environment.
pub(crate) fn binaries_from_environment() -> Result<PathBuf> {
    locate_binaries(
        std::env::var_os("PG_BIN_DIR").map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
        std::env::var_os("PATH"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_binaries_anywhere_names_both_remedies() {
        let empty = std::env::temp_dir().join(format!("testkit-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let error =
            locate_binaries(None, &empty, Some(empty.clone().into_os_string())).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL_TEST"), "{message}");
        assert!(message.contains("PG_BIN_DIR"), "{message}");
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn a_wrong_pg_bin_dir_is_an_error_not_a_fallback() {
        let error = locate_binaries(
            Some(PathBuf::from("/nonexistent/bin")),
            Path::new("/usr/lib/postgresql"),
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/bin"));
    }

    #[test]
    fn picks_the_highest_installed_version() {
        let root = std::env::temp_dir().join(format!("testkit-versions-{}", std::process::id()));
        for version in ["9", "15", "16"] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            if version != "16" {
                std::fs::write(bin.join("initdb"), "").unwrap();
                std::fs::write(bin.join("postgres"), "").unwrap();
            }
        }
        // 16 lacks the server binaries (client-only install), so 15 wins over 9.
        assert_eq!(
            locate_binaries(None, &root, None).unwrap(),
            root.join("15").join("bin")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
