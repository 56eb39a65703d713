use std::path::Path;

use crate::trusted_file;

/// Why a `.env` file could not be used. Never carries a value from the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    #[error("line {line} is malformed (expected NAME=value; quote values with spaces)")]
    Malformed { line: usize },
    #[error("could not be read: {0}")]
    Unreadable(String),
    #[error("is not used: {0}")]
    Untrusted(String),
    /// Tools differ on which would win: compose and a shell take the last, dotenv loaders
    /// the first.
    #[error("sets {0} more than once: keep one")]
    Repeated(String),
}

/// A `.env`'s variables, in file order.
type Variables = Vec<(String, String)>;

/// The most a `.env` may hold: settings, not data.
const MAX_ENV_FILE_BYTES: u64 = 1024 * 1024;

/// The variables of `dir/.env`, in file order; none when there is no such file. Only that
/// folder is looked at, never its parents: a `.env` is per checkout, and a parent folder's may
/// belong to another project. A `.env` chooses where a binary connects and which secret files it
/// sends, so one that belongs to another user (other than root) or that group or others may write is
/// refused: run in a shared folder such as /tmp, a binary must not take a stranger's settings.
pub fn read_env_file(dir: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    read_env_file_and_mode(dir).map(|(variables, _)| variables)
}

/// [`read_env_file`], and the file's mode when its group or others may read it (so the
/// passwords it holds get a warning, as a secret file's would).
pub(crate) fn read_env_file_and_mode(dir: &Path) -> Result<(Variables, Option<u32>), EnvFileError> {
    let path = dir.join(".env");
    let unreadable = |error: std::io::Error| EnvFileError::Unreadable(error.kind().to_string());
    let file = match trusted_file::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), None));
        }
        Err(error) => return Err(unreadable(error)),
    };
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(EnvFileError::Untrusted("it is not a regular file".into()));
    }
    if let Some(owner) = trusted_file::foreign_owner(&metadata) {
        return Err(EnvFileError::Untrusted(format!(
            "it belongs to another user (uid {owner}); it must be yours or root's"
        )));
    }
    // Group write counts too, as for a secret file: whoever may write a `.env` names the
    // secret files to send and where to send them.
    if trusted_file::writable_by_group_or_others(&metadata) {
        return Err(EnvFileError::Untrusted(
            "it may be written by its group or other users: chmod go-w .env".into(),
        ));
    }
    if let Some(problem) = trusted_file::path_problem(&path, &metadata) {
        return Err(EnvFileError::Untrusted(problem));
    }
    let Some(bytes) = trusted_file::read_at_most(file, MAX_ENV_FILE_BYTES).map_err(unreadable)?
    else {
        return Err(EnvFileError::Untrusted("it is larger than 1 MiB".into()));
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| EnvFileError::Unreadable("it is not UTF-8 text".into()))?;
    Ok((
        parse_env(&text)?,
        trusted_file::readable_by_group_or_others(&metadata),
    ))
}

/// The variables of a `.env`'s text, in order (`read_env_file` without the file's checks; also
/// for reading `.env.example`).
pub fn parse_env(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut variables = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((name, _)) if seen.contains(&name) => return Err(EnvFileError::Repeated(name)),
            Ok((name, value)) => {
                seen.insert(name.clone());
                variables.push((name, value));
            }
            Err(dotenvy::Error::LineParse(bad, _)) => {
                return Err(EnvFileError::Malformed {
                    line: line_number_of(text, &bad),
                });
            }
            Err(error) => return Err(EnvFileError::Unreadable(error.to_string())),
        }
    }
    Ok(variables)
}

/// The 1-based number of the line where the parser's failing text starts (the parser reports
/// the text, not its position: the whole line, or only the value when the value is what fails);
/// 0 if it cannot be found.
fn line_number_of(text: &str, bad: &str) -> usize {
    let first = bad.lines().next().unwrap_or_default().trim();
    let value_is_first = |line: &str| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        line.split_once('=')
            .is_some_and(|(_, value)| value.trim() == first)
    };
    text.lines()
        .position(|line| line.trim() == first)
        .or_else(|| text.lines().position(value_is_first))
        .map_or(0, |index| index + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn folder_with(env: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, env).unwrap();
        // Not group-writable whatever the umask (002 would be refused).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        dir
    }

    /// A `.env` over 1 MiB is refused, not cut short (its last value would be read half); one of
    /// 1 MiB exactly is read whole.
    #[test]
    fn a_dot_env_over_1_mib_is_refused_and_one_of_1_mib_is_read() {
        let line = |bytes: u64| {
            let filler = usize::try_from(bytes).unwrap() - "A=\n".len();
            format!("A={}\n", "x".repeat(filler))
        };
        let dir = folder_with(&line(MAX_ENV_FILE_BYTES));
        let variables = read_env_file(dir.path()).unwrap();
        assert_eq!(variables[0].1.len() as u64, MAX_ENV_FILE_BYTES - 3);
        let dir = folder_with(&line(MAX_ENV_FILE_BYTES + 1));
        let error = read_env_file(dir.path()).unwrap_err().to_string();
        assert!(error.contains("larger than 1 MiB"), "{error}");
    }

    /// A `.env` saved in another encoding (a Latin-1 `ä` in a password) is refused as such, its
    /// bytes not shown.
    #[test]
    fn a_dot_env_that_is_not_utf8_is_refused_without_its_bytes() {
        let dir = folder_with("A=1\n");
        std::fs::write(dir.path().join(".env"), b"A=1\nB=hunter\xe42\n").unwrap();
        let error = read_env_file(dir.path()).unwrap_err();
        assert_eq!(
            error,
            EnvFileError::Unreadable("it is not UTF-8 text".into())
        );
    }

    /// What `.env.example` warns of: a bare `$NAME` is substituted (unset: nothing), so a
    /// password holding `$` must be percent-encoded (`%24`, which the URL decodes).
    #[test]
    fn a_bare_dollar_substitutes_and_a_percent_encoded_one_stays() {
        let dir = folder_with("A=x\nB=pa$A\nC=pa$Aw0rd\nD=pa%24w0rd\n");
        let read = read_env_file(dir.path()).unwrap();
        // `$A` is A's value; `$Aw0rd` is the unset variable `Aw0rd`: nothing.
        assert_eq!(read[1], ("B".to_owned(), "pax".to_owned()));
        assert_eq!(read[2], ("C".to_owned(), "pa".to_owned()));
        assert_eq!(read[3], ("D".to_owned(), "pa%24w0rd".to_owned()));
    }

    #[test]
    fn a_malformed_line_is_reported_by_number_without_its_value() {
        let dir = folder_with("# comment\nA=1\n\nB='unclosed hunter2\nC=3\n");
        let error = read_env_file(dir.path()).unwrap_err();
        assert_eq!(error, EnvFileError::Malformed { line: 4 });
        assert!(!error.to_string().contains("hunter2"));
        // A value that fails by itself (an unquoted space): the parser gives only the value.
        for (text, line) in [
            ("A=1\nAPP_NAME=two hunter2\n", 2),
            (
                "A=1\n\nexport DATABASE_URL=postgres://u:pass hunter2@db/x\n",
                3,
            ),
        ] {
            let error = read_env_file(folder_with(text).path()).unwrap_err();
            assert_eq!(error, EnvFileError::Malformed { line }, "{text}");
            assert!(!error.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn values_are_read_in_order_and_a_missing_file_is_no_error() {
        let dir = folder_with("A=1\nexport B=\"two words\"\n");
        assert_eq!(
            read_env_file(dir.path()).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        std::fs::remove_file(dir.path().join(".env")).unwrap();
        assert_eq!(read_env_file(dir.path()).unwrap(), vec![]);
    }

    /// A name set twice is refused, not settled by one tool's rule (the value is not said).
    #[test]
    fn a_name_set_twice_is_refused() {
        let dir = folder_with("A=1\nHEALTH_TIMEOUT_MS=1111\nexport HEALTH_TIMEOUT_MS=hunter2\n");
        let error = read_env_file(dir.path()).unwrap_err();
        assert_eq!(error, EnvFileError::Repeated("HEALTH_TIMEOUT_MS".into()));
        assert_eq!(
            error.to_string(),
            "sets HEALTH_TIMEOUT_MS more than once: keep one"
        );
        // Names that differ only in case are two names here (a group refuses them then).
        let dir = folder_with("A=1\na=2\n");
        assert_eq!(read_env_file(dir.path()).unwrap().len(), 2);
    }

    /// A `.env` someone else could have put there (in /tmp, say) is not taken: one others may
    /// write, one of another user, and a FIFO (which must not hang the binary).
    #[cfg(unix)]
    #[test]
    fn a_dot_env_others_control_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = folder_with("DATABASE_OWNER_PASSWORD_FILE=/root/.ssh/id_ed25519\n");
        let path = dir.path().join(".env");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
        let error = read_env_file(dir.path()).unwrap_err().to_string();
        assert_eq!(
            error,
            "is not used: it may be written by its group or other users: chmod go-w .env"
        );
        // Group write too (a checkout made under umask 002): the group is not this user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let error = read_env_file(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("written by its group or other users"),
            "{error}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_env_file(dir.path()).unwrap().len(), 1);

        if nix::unistd::geteuid().is_root() {
            // A folder of another user's on the way: said as a sentence.
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::copy(&path, theirs.join(".env")).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            let error = read_env_file(&theirs).unwrap_err().to_string();
            let folder = theirs.display();
            assert_eq!(
                error,
                format!("is not used: the folder {folder} belongs to another user (uid 65534)")
            );
            let nobody = nix::unistd::Uid::from_raw(65534);
            std::os::unix::fs::chown(&path, Some(nobody.as_raw()), None).unwrap();
            let error = read_env_file(dir.path()).unwrap_err().to_string();
            assert!(
                error.contains("belongs to another user (uid 65534)"),
                "{error}"
            );
        }

        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let error = read_env_file(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }
}
