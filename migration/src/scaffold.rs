//! `just migrate-new NAME`: writes `src/m<YYYYMMDD>_<NNNNNN>_<name>.rs` from a template and
//! registers it in `src/lib.rs` (its `mod` line and its place at the end of `migrations()`).
//!
//! Names follow the first migration, `m20251220_000001_create_users`: the UTC date of creation
//! and a six-digit sequence number within that date, so names sort in the order they were made.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a migration could not be scaffolded. Messages name the file or rule concerned.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "a migration name is lower-case snake_case starting with a letter, such as add_sessions"
    )]
    InvalidName,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} does not have the expected shape (a `mod m...;` line and one \
         `migration_file!(m...),` line per migration): register the migration by hand"
    )]
    UnexpectedLib(PathBuf),
}

/// A calendar date (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Today in UTC.
    pub fn today() -> Self {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Self::from_days_since_epoch((seconds / 86_400) as i64)
    }

    /// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date `days` after 1970-01-01.
    pub fn from_days_since_epoch(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        } as u32;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Self { year, month, day }
    }

    fn compact(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// A failed file operation on `path`, as the error that names it.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError {
    let path = path.to_owned();
    move |source| ScaffoldError::Io { path, source }
}

/// Creates the migration file for `name` in `source_dir` (the migration crate's `src`) and
/// registers it in `source_dir/lib.rs`. Returns the new file's path.
pub fn new_migration(source_dir: &Path, name: &str, date: Date) -> Result<PathBuf, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(ScaffoldError::InvalidName);
    }
    let existing: Vec<String> = std::fs::read_dir(source_dir)
        .map_err(io(source_dir))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let module = module_name(&existing, &date, name);

    let lib_path = source_dir.join("lib.rs");
    let lib = std::fs::read_to_string(&lib_path).map_err(io(&lib_path))?;
    let registered =
        register(&lib, &module).ok_or_else(|| ScaffoldError::UnexpectedLib(lib_path.clone()))?;

    let file_path = source_dir.join(format!("{module}.rs"));
    // create_new: never overwrite a migration that exists.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file_path)
        .map_err(io(&file_path))?;
    let written = std::io::Write::write_all(&mut file, template(&module).as_bytes())
        .map_err(io(&file_path))
        .and_then(|()| replace(&lib_path, &registered));
    if let Err(error) = written {
        // All or nothing: a file lib.rs does not register is compiled by nobody, and would still
        // take the day's next number.
        let _ = std::fs::remove_file(&file_path);
        return Err(error);
    }
    Ok(file_path)
}

/// The file [`replace`] writes `path`'s new content to, beside it: named for this process, so
/// that two runs at once do not write the same one.
pub fn replacement_of(path: &Path) -> PathBuf {
    let mut beside = path.as_os_str().to_owned();
    beside.push(format!(".new.{}", std::process::id()));
    PathBuf::from(beside)
}

/// Replaces `path`'s content with `text` at once (written beside it with `path`'s permissions,
/// flushed, then renamed over it): a failed write leaves `path` as it was, never cut short. The
/// file beside it is created new: one already there (a symlink planted to have the write land
/// elsewhere, say) is an error, never written through.
fn replace(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    let beside = replacement_of(path);
    let permissions = std::fs::metadata(path).map_err(io(path))?.permissions();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&beside)
        .map_err(io(&beside))?;
    let written = std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.set_permissions(permissions))
        .and_then(|()| file.sync_all())
        .map_err(io(&beside))
        .and_then(|()| std::fs::rename(&beside, path).map_err(io(path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&beside);
    }
    written
}

/// `m<date>_<next sequence number of that date>_<name>`.
fn module_name(existing_files: &[String], date: &Date, name: &str) -> String {
    let prefix = format!("m{}_", date.compact());
    let last = existing_files
        .iter()
        .filter_map(|file| file.strip_prefix(&prefix))
        .filter_map(|rest| rest.get(..6)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    format!("{prefix}{:06}_{name}", last + 1)
}

/// `lib` with `module` declared after the last migration module and appended to `migrations()`;
/// `None` when either anchor is missing.
fn register(lib: &str, module: &str) -> Option<String> {
    let lines: Vec<&str> = lib.lines().collect();
    let is_migration_mod = |line: &&str| {
        let line = line.trim_start_matches("pub ");
        line.starts_with("mod m") && line.ends_with(';')
    };
    let mod_line = lines.iter().rposition(is_migration_mod)?;
    let entry_line = lines.iter().rposition(|line| {
        let line = line.trim();
        line.starts_with("migration_file!(m") && line.ends_with("),")
    })?;
    let indent: String = lines[entry_line]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect();
    let mut out = Vec::with_capacity(lines.len() + 2);
    for (index, line) in lines.iter().enumerate() {
        out.push((*line).to_owned());
        if index == mod_line {
            out.push(format!("mod {module};"));
        }
        if index == entry_line {
            out.push(format!("{indent}migration_file!({module}),"));
        }
    }
    let mut text = out.join("\n");
    if lib.ends_with('\n') {
        text.push('\n');
    }
    Some(text)
}

fn template(module: &str) -> String {
    format!(
        r####"//! What this migration changes, and why.

use sea_orm_migration::prelude::*;

#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {{
    fn name(&self) -> &str {{
        "{module}"
    }}
}}

const UP: &str = r#"
-- The change, in SQL.
"#;

/// Restores the schema exactly as it was before `UP`.
const DOWN: &str = r#"
-- The undo, in SQL.
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {{
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {{
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }}

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {{
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }}
}}
"####
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days_since_the_epoch() {
        let date = |year, month, day| Date { year, month, day };
        assert_eq!(Date::from_days_since_epoch(0), date(1970, 1, 1));
        assert_eq!(Date::from_days_since_epoch(20_442), date(2025, 12, 20));
        assert_eq!(Date::from_days_since_epoch(20_787), date(2026, 11, 30));
        assert_eq!(Date::from_days_since_epoch(11_016), date(2000, 2, 29));
        assert_eq!(Date::from_days_since_epoch(-1), date(1969, 12, 31));
    }

    #[test]
    fn module_names_take_the_next_number_of_the_day() {
        let date = Date {
            year: 2026,
            month: 11,
            day: 30,
        };
        let files = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            module_name(
                &files(&["lib.rs", "m20251220_000001_create_users.rs"]),
                &date,
                "x"
            ),
            "m20261130_000001_x"
        );
        assert_eq!(
            module_name(
                &files(&[
                    "m20261130_000001_username_identity.rs",
                    "m20261130_000002_y.rs"
                ]),
                &date,
                "add_sessions"
            ),
            "m20261130_000003_add_sessions"
        );
    }

    #[test]
    fn registering_adds_the_mod_line_and_the_last_entry() {
        let lib = "mod m1_a;\npub mod m2_b;\n\nfn migrations() {\n    vec![\n        \
                   migration_file!(m1_a),\n        migration_file!(m2_b),\n    ]\n}\n";
        assert_eq!(
            register(lib, "m3_c").unwrap(),
            "mod m1_a;\npub mod m2_b;\nmod m3_c;\n\nfn migrations() {\n    vec![\n        \
             migration_file!(m1_a),\n        migration_file!(m2_b),\n        \
             migration_file!(m3_c),\n    ]\n}\n"
        );
        assert_eq!(register("fn nothing() {}\n", "m3_c"), None);
    }

    #[test]
    fn names_must_be_snake_case() {
        let dir = std::env::temp_dir();
        let date = Date::today();
        for bad in ["", "Add", "add-sessions", "1st", "a b", "../x"] {
            assert!(
                matches!(
                    new_migration(&dir, bad, date),
                    Err(ScaffoldError::InvalidName)
                ),
                "{bad:?}"
            );
        }
    }
}
