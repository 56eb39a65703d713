//! Where the PostgreSQL server binaries are.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{ProvisionError, Result};

/// The oldest major version our tools run: `CREATE DATABASE ... STRATEGY FILE_COPY` and ICU
/// locales there need 15.
pub const OLDEST_MAJOR: u32 = 15;

/// The binaries of this machine: `PG_BIN_DIR`, else the newest supported major under
/// `/usr/lib/postgresql`, else `PATH`.
pub fn server_binaries() -> Result<PathBuf> {
    locate_binaries(
        std::env::var_os("PG_BIN_DIR").map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
        std::env::var_os("PATH"),
    )
}

/// Finds the folder holding `initdb` and `postgres`: `pg_bin_dir` if given (an error if it has
/// none, never a fallback), else the newest major of at least [`OLDEST_MAJOR`] under `lib_root`
/// (`<major>/bin`), else `PATH`.
pub fn locate_binaries(
    pg_bin_dir: Option<PathBuf>,
    lib_root: &Path,
    path_var: Option<OsString>,
) -> Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = pg_bin_dir {
        return match has_server(&dir) {
            true => Ok(dir),
            false => Err(ProvisionError::NoBinaries {
                searched: format!("PG_BIN_DIR={} has no initdb and postgres", dir.display()),
            }),
        };
    }
    let newest = std::fs::read_dir(lib_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(major, bin)| *major >= OLDEST_MAJOR && has_server(bin))
        .max();
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    // Debian links initdb into PATH but not postgres: follow the link to the real folder.
    let on_path = path_var
        .iter()
        .flat_map(std::env::split_paths)
        .find_map(|dir| {
            let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
            real.parent()
                .filter(|bin| has_server(bin))
                .map(Path::to_path_buf)
        });
    on_path.ok_or_else(|| ProvisionError::NoBinaries {
        searched: format!(
            "looked in PG_BIN_DIR, {}/<{OLDEST_MAJOR} or newer>/bin and PATH",
            lib_root.display()
        ),
    })
}
