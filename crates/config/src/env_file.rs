use std::path::Path;

/// Why a `.env` file could not be used. Never carries a value from the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    #[error("line {line} is malformed (expected NAME=value; quote values with spaces)")]
    Malformed { line: usize },
    #[error("could not be read: {0}")]
    Unreadable(String),
}

/// The variables of `dir/.env`, in file order; none when there is no such file. Only that
/// folder is looked at, never its parents: a `.env` is per checkout, and a parent folder's may
/// belong to another project.
pub fn read_env_file(dir: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let path = dir.join(".env");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(EnvFileError::Unreadable(error.kind().to_string())),
    };
    let mut variables = Vec::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok(variable) => variables.push(variable),
            Err(dotenvy::Error::LineParse(bad, _)) => {
                return Err(EnvFileError::Malformed {
                    line: line_number_of(&text, &bad),
                });
            }
            Err(error) => return Err(EnvFileError::Unreadable(error.to_string())),
        }
    }
    Ok(variables)
}

/// The 1-based number of the line where the parser's failing text starts (the parser reports
/// the text, not its position); 0 if it cannot be found.
fn line_number_of(text: &str, bad: &str) -> usize {
    let first = bad.lines().next().unwrap_or_default().trim();
    text.lines()
        .position(|line| line.trim() == first)
        .map_or(0, |index| index + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn folder_with(env: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "counseling-config-test-{}-{}",
            std::process::id(),
            env.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), env).unwrap();
        dir
    }

    #[test]
    fn a_malformed_line_is_reported_by_number_without_its_value() {
        let dir = folder_with("# comment\nA=1\n\nB='unclosed hunter2\nC=3\n");
        let error = read_env_file(&dir).unwrap_err();
        assert_eq!(error, EnvFileError::Malformed { line: 4 });
        assert!(!error.to_string().contains("hunter2"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn values_are_read_in_order_and_a_missing_file_is_no_error() {
        let dir = folder_with("A=1\nexport B=\"two words\"\n");
        assert_eq!(
            read_env_file(&dir).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        std::fs::remove_file(dir.join(".env")).unwrap();
        assert_eq!(read_env_file(&dir).unwrap(), vec![]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
