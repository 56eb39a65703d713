//! The real `counseling-api` binary and TLS: bad TLS files stop it at start (exit 2, one line,
//! no URL); a certificate that does not verify is logged once, not once per probe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use counseling_e2e::{Api, TempDir, get_json, run_to_exit};
use counseling_testkit::PgCluster;
use counseling_testkit::fixtures::untrusted_ca_file;
use counseling_testkit::tls::ServerTls;
use secrecy::ExposeSecret;

#[test]
fn unreadable_or_malformed_tls_files_exit_2_naming_the_setting_never_the_url() {
    let dir = TempDir::new("tls-files");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    // Not group-writable whatever the umask (002 would be refused before the file is parsed);
    // readable by us alone, so that sslkey's own rule passes too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let garbage = garbage.to_str().unwrap();
    let url = |query: &str| format!("postgres://svc:pa55-word@db.example:5432/app?{query}");
    let cases = [
        (
            vec![(
                "DATABASE_URL",
                url("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
            )],
            vec!["sslrootcert"],
            "cannot read",
        ),
        (
            vec![(
                "DATABASE_URL",
                url(&format!("sslmode=verify-full&sslrootcert={garbage}")),
            )],
            vec!["sslrootcert"],
            "PEM",
        ),
        (
            vec![(
                "DATABASE_URL",
                url(&format!("sslcert={garbage}&sslkey={garbage}")),
            )],
            vec!["sslcert", "sslkey"],
            "PEM",
        ),
        (
            vec![
                ("DATABASE_URL", url("")),
                ("DATABASE_SSL_MODE", "verify-full".to_owned()),
                ("DATABASE_SSL_ROOT_CERT", "/nonexistent/ca.pem".to_owned()),
            ],
            vec!["DATABASE_SSL_ROOT_CERT cannot read /nonexistent/ca.pem"],
            "cannot read",
        ),
    ];
    // (variables, the settings named, one line each, and the reason every line gives)
    for (vars, settings, reason) in cases {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, output) = run_to_exit(&vars);
        assert_eq!(status.code(), Some(2), "{output}");
        let lines: Vec<&str> = output.trim().lines().collect();
        assert_eq!(lines.len(), settings.len(), "{output}");
        for (line, setting) in lines.iter().zip(settings) {
            assert!(line.contains(setting), "{output}");
            assert!(line.contains(reason), "{output}");
        }
        assert!(
            !output.contains("pa55-word") && !output.contains("db.example"),
            "{output}"
        );
    }
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_logged_once_per_change() {
    let cluster = PgCluster::start_tls(ServerTls::default()).await.unwrap();
    let db = cluster.migrated_database().await.unwrap();
    let dir = TempDir::new("tls-log");
    let ca_file = untrusted_ca_file(dir.path(), "ca.pem").unwrap();
    let url = db.url_with(&[
        ("sslmode", "verify-full"),
        ("sslrootcert", ca_file.to_str().unwrap()),
    ]);
    let mut api = Api::spawn(&[("DATABASE_URL", url.as_str())]);
    api.wait_listening();

    for _ in 0..4 {
        let (status, body) = get_json(&api.url("/health"), Duration::from_secs(5)).unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("tls handshake failed"))
        );
    }
    let output = api.output();
    let unhealthy: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("database unhealthy"))
        .collect();
    assert_eq!(unhealthy.len(), 1, "{output}");
    assert!(
        unhealthy[0].contains("server certificate not issued by a trusted CA"),
        "{output}"
    );
    // The service's own password, which its URL carries (the cluster's is never given to it).
    let service_url = counseling_config::DatabaseUrl::parse(&url).unwrap();
    let password = service_url.password().unwrap().expose_secret();
    assert!(!output.contains(password), "{output}");
}
