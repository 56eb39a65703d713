//! The real `counseling-api` binary with a missing or invalid configuration: no database needed,
//! so these run on every platform.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
