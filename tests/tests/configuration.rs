//! The real `counseling-api` binary with a missing or invalid configuration: no database needed,
//! so these run on every platform.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use counseling_e2e::run_to_exit;

#[test]
fn missing_or_non_postgres_database_url_exits_2_with_one_clear_line() {
    let (status, output) = run_to_exit(&[]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert_eq!(
        output.trim(),
        "counseling-api: configuration error: DATABASE_URL is not set: set it (or \
         DATABASE_URL_FILE) in the environment or in .env (see .env.example)"
    );

    let (status, output) = run_to_exit(&[("DATABASE_URL", "mysql://root:my5ql-pw@localhost/app")]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert_eq!(output.trim().lines().count(), 1, "{output}");
    assert!(
        output.contains("DATABASE_URL must be a PostgreSQL URL"),
        "{output}"
    );
    assert!(!output.contains("my5ql-pw"), "{output}");
    assert!(!output.contains("panicked"), "{output}");

    let (status, output) = run_to_exit(&[
        ("DATABASE_URL", "postgres://u:p@127.0.0.1:1/db"),
        ("APP_PORT", "not-a-port"),
    ]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("APP_PORT must be"), "{output}");
}

/// Arguments are refused, never ignored: `--port 9000` would otherwise serve on another port
/// than meant, and one that is a URL is not repeated (it may hold a password). `--help` and
/// `--version` answer without reading any setting.
#[test]
fn arguments_are_refused_but_help_and_version_answer() {
    let run = |arguments: &[&str]| {
        let mut child = Command::new(counseling_e2e::api_binary())
            .args(arguments)
            .env_clear()
            // Valid, on a port nothing listens on: only the arguments can stop the start.
            .env("DATABASE_URL", "postgres://u:p@127.0.0.1:1/db")
            .env("APP_PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A binary that ignored them would serve until stopped.
        let exited = counseling_testkit::fixtures::wait_until(
            "counseling-api answers its arguments",
            std::time::Duration::from_secs(10),
            || child.try_wait().ok().flatten(),
        );
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        assert!(exited.is_ok(), "{arguments:?}: {}", said(&output.stdout));
        (
            output.status.code(),
            said(&output.stdout),
            said(&output.stderr),
        )
    };
    for refused in [
        &["--port", "9000"][..],
        &["postgres://app:s3cret-pw@db/app"],
        &["--help", "--version"],
    ] {
        let (code, _, stderr) = run(refused);
        assert_eq!(code, Some(2), "{refused:?}: {stderr}");
        assert!(stderr.contains("takes no arguments"), "{stderr}");
        assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    }
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("usage: counseling-api"), "{stdout}");
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("counseling-api "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

/// A configuration error said to a closed stderr (a pipe whose reader is gone) still exits 2,
/// not with a panic's 101: the exit code is the answer a supervisor reads.
#[test]
fn a_configuration_error_said_to_a_closed_stderr_still_exits_2() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let dir = counseling_e2e::TempDir::new("closed-stderr");
    let status = Command::new(counseling_e2e::api_binary())
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", "mysql://root:my5ql-pw@localhost/app")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

/// Every refusal of the operator's database settings: exit 2, one line naming the variable (or
/// the parameter inside it), never a value.
#[test]
fn database_settings_that_would_be_ignored_or_weaken_security_exit_2_one_line_each() {
    let dir = counseling_e2e::TempDir::new("refusals");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        path.to_str().unwrap().to_owned()
    };
    let url_file = file("url", "postgres://svc:pa55-word@127.0.0.1:1/app\n");
    let password_file = file("password", "pa55-word\n");
    let url = "postgres://svc:pa55-word@127.0.0.1:1/app";
    /// The variables, and the lines expected (each the start of one line).
    type Case<'a> = (Vec<(&'a str, String)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        // A variable next to its file twin.
        (
            vec![
                ("DATABASE_URL", url.into()),
                ("DATABASE_URL_FILE", url_file.clone()),
            ],
            &["DATABASE_URL_FILE is set (in the environment) next to DATABASE_URL"],
        ),
        // Two passwords.
        (
            vec![
                ("DATABASE_URL", url.into()),
                ("DATABASE_PASSWORD_FILE", password_file.clone()),
            ],
            &["DATABASE_PASSWORD_FILE is set, but DATABASE_URL carries a password too"],
        ),
        // Parameters the driver cannot honour, and a typo.
        (
            vec![(
                "DATABASE_URL",
                format!("{url}?require_auth=scram-sha-256&channel_binding=require&sslmde=require"),
            )],
            &[
                "DATABASE_URL has a bad parameter: sslmde: is not a libpq connection parameter",
                "DATABASE_URL has a bad parameter: require_auth: is not supported",
                "DATABASE_URL has a bad parameter: channel_binding: is not supported",
            ],
        ),
        // An override weaker than the URL.
        (
            vec![
                (
                    "DATABASE_URL",
                    format!("{url}?sslmode=verify-full&sslrootcert=system"),
                ),
                ("DATABASE_SSL_MODE", "prefer".into()),
            ],
            &["DATABASE_SSL_MODE is prefer, weaker than verify-full (sslmode in the database URL)"],
        ),
        // A malformed host list.
        (
            vec![(
                "DATABASE_URL",
                "postgres://svc:pa55-word@127.0.0.1:1,127.0.0.1:x/app".into(),
            )],
            &["DATABASE_URL has a malformed host list: the 2nd host has a port that is not"],
        ),
        // The example's placeholder.
        (
            vec![(
                "DATABASE_URL",
                "postgres://svc:change-me-service@127.0.0.1:1/app".into(),
            )],
            &["DATABASE_URL holds the example's placeholder password"],
        ),
        // Misspelt settings of the service's own groups (libpq's spelling of the TLS override,
        // units left off), which would leave the defaults in place. The names read elsewhere
        // (the owner's URL, the test kit's server) are no misspelling.
        (
            vec![
                ("DATABASE_URL", url.into()),
                ("DATABASE_SSLMODE", "verify-full".into()),
                ("DATABASE_STATEMENT_TIMEOUT", "5000".into()),
                ("HEALTH_TIMEOUT", "500".into()),
                ("METRICS_ENABLE", "false".into()),
                ("DATABASE_OWNER_URL", url.into()),
                ("DATABASE_URL_TEST", url.into()),
                // A prefix not in capitals (on Windows too): unread, the defaults would apply.
                ("app_port", "9000".into()),
                ("Health_Timeout_Ms", "500".into()),
            ],
            &[
                "DATABASE_SSLMODE is not a setting: did you mean DATABASE_SSL_MODE?",
                "DATABASE_STATEMENT_TIMEOUT is not a setting: did you mean DATABASE_STATEMENT_TIMEOUT_MS?",
                "HEALTH_TIMEOUT is not a setting: did you mean HEALTH_TIMEOUT_MS?",
                "METRICS_ENABLE is not a setting: did you mean METRICS_ENABLED?",
                "app_port is not read: a setting's name is in capitals (did you mean APP_PORT?)",
                "Health_Timeout_Ms is not read: a setting's name is in capitals (did you mean HEALTH_TIMEOUT_MS?)",
            ],
        ),
    ];
    for (vars, expected) in cases {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, output) = run_to_exit(&vars);
        assert_eq!(status.code(), Some(2), "{vars:?}: {output}");
        let lines: Vec<&str> = output.trim().lines().collect();
        assert_eq!(lines.len(), expected.len(), "{output}");
        for want in expected {
            assert!(
                lines.iter().any(|line| line
                    .starts_with(&format!("counseling-api: configuration error: {want}"))),
                "{want:?} missing from:\n{output}"
            );
        }
        assert!(!output.contains("pa55-word"), "{output}");
        assert!(!output.contains("panicked"), "{output}");
    }
}

/// libpq refuses a client key that group or others can read; so do we.
#[cfg(unix)]
#[test]
fn a_client_key_others_can_read_exits_2_naming_the_file() {
    use counseling_testkit::tls::CertificateAuthority;
    use std::os::unix::fs::PermissionsExt;
    let dir = counseling_e2e::TempDir::new("client-key");
    let ca = CertificateAuthority::new("test").unwrap();
    let issued = ca.issue_client("svc").unwrap();
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&cert, &issued.certificate_pem).unwrap();
    // Not group-writable whatever the umask: only the key's mode is under test.
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!(
        "postgres://svc:pa55-word@127.0.0.1:1/app?sslcert={}&sslkey={}",
        cert.display(),
        key.display()
    );
    let (status, output) = run_to_exit(&[("DATABASE_URL", url.as_str())]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert_eq!(output.trim().lines().count(), 1, "{output}");
    assert!(
        output.contains("sslkey") && output.contains(&key.display().to_string()),
        "{output}"
    );
    assert!(output.contains("mode 0644"), "{output}");
    // At 0600 it is accepted (the service then starts and waits for its database).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut api = counseling_e2e::Api::spawn(&[("DATABASE_URL", url.as_str())]);
    api.wait_listening();
}

/// A secret file others may read (Kubernetes' default 0644) is accepted, and said once at start;
/// never its content.
#[cfg(unix)]
#[test]
fn a_password_file_others_may_read_is_accepted_and_said_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = counseling_e2e::TempDir::new("loose-secret");
    let password = dir.path().join("password");
    std::fs::write(&password, "pa55-word\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut api = counseling_e2e::Api::spawn(&[
        ("DATABASE_URL", "postgres://svc@127.0.0.1:1/app"),
        ("DATABASE_PASSWORD_FILE", password.to_str().unwrap()),
    ]);
    api.wait_listening();
    let output = api.output();
    let said: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("may be read by group or others"))
        .collect();
    assert_eq!(said.len(), 1, "{output}");
    assert!(
        said[0].contains("DATABASE_PASSWORD_FILE") && said[0].contains("0644"),
        "{output}"
    );
    assert!(!output.contains("pa55-word"), "{output}");
}

/// A port another program holds is a failure at run time (exit 1) that names the address, with
/// no panic and no database needed.
#[test]
fn a_port_already_taken_exits_1_naming_the_address() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let (status, output) = run_to_exit(&[
        ("DATABASE_URL", "postgres://u:p@127.0.0.1:1/db"),
        ("APP_PORT", &port),
    ]);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!("could not listen on 127.0.0.1:{port}")),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
}
