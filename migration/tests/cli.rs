//! The `migration` binary as deploy jobs and `just` run it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should abort the test

mod common;

use std::process::Output;

use common::{migration_binary, text};
use counseling_testkit::fixtures::untrusted_ca_file;
use counseling_testkit::tls::ServerTls;
use counseling_testkit::{PgCluster, TestDatabase};
use migration::sea_orm::sqlx::{self, Connection, PgConnection};

fn migration(args: &[&str], database_url: Option<&str>) -> Output {
    let variables: Vec<(&str, &str)> = database_url
        .map(|url| ("DATABASE_URL", url))
        .into_iter()
        .collect();
    migration_binary(args, &variables)
}

#[tokio::test]
async fn four_concurrent_up_runs_on_an_empty_database_all_succeed() {
    let db = TestDatabase::empty().await.unwrap();
    let url = db.owner_url();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || migration(&["up"], Some(&url)))
        })
        .collect();
    let outputs: Vec<Output> = runs.into_iter().map(|run| run.join().unwrap()).collect();
    for output in &outputs {
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    }
    let all = migration::migrations().len();
    let applied_once: usize = outputs
        .iter()
        .filter(|output| text(&output.stdout).contains(&format!("applied {all} migration")))
        .count();
    assert_eq!(applied_once, 1, "exactly one run applies the migrations");
    for output in &outputs {
        let stdout = text(&output.stdout);
        assert!(
            stdout.contains(&format!("applied {all} migration"))
                || stdout.trim() == "applied 0 migration(s); the schema is up to date",
            "{stdout}"
        );
    }

    let mut conn = PgConnection::connect_with(&db.options()).await.unwrap();
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM seaql_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(recorded, all as i64);
}

#[tokio::test]
async fn up_status_down_through_the_binary() {
    let db = TestDatabase::empty().await.unwrap();
    let url = db.owner_url();

    let names: Vec<String> = migration::migrations()
        .iter()
        .map(|file| file.name().to_owned())
        .collect();
    let listed = |mark: &str| -> String {
        names
            .iter()
            .map(|name| format!("{mark}  {name}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let status = migration(&["status"], Some(&url));
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert_eq!(text(&status.stdout).trim(), listed("pending"));

    let up = migration(&["up"], Some(&url));
    assert!(up.status.success(), "{}", text(&up.stderr));
    let mut expected: Vec<String> = names.iter().map(|name| format!("applied {name}")).collect();
    expected.push(format!(
        "applied {} migration(s); the schema is up to date",
        names.len()
    ));
    assert_eq!(text(&up.stdout).trim(), expected.join("\n"));
    let status = migration(&["status"], Some(&url));
    assert_eq!(text(&status.stdout).trim(), listed("applied"));

    // `down` rolls back only the most recent migration.
    let down = migration(&["down"], Some(&url));
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(
        text(&down.stdout).trim(),
        format!("rolled back {}", names[names.len() - 1])
    );
    // `down --to VERSION` rolls back every one after VERSION, and again finds nothing to do.
    let second = &names[1];
    let down = migration(&["down", "--force", "--to", second], Some(&url));
    assert!(down.status.success(), "{}", text(&down.stderr));
    let expected: Vec<String> = names[2..names.len() - 1]
        .iter()
        .rev()
        .map(|name| format!("rolled back {name}"))
        .collect();
    assert_eq!(text(&down.stdout).trim(), expected.join("\n"));
    let again = migration(&["down", "--to", second, "--force"], Some(&url));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout).trim(),
        format!("nothing to roll back: no migration after {second} is applied")
    );
    let status = migration(&["status"], Some(&url));
    let applied: Vec<&str> = text(&status.stdout)
        .lines()
        .filter(|line| line.starts_with("applied"))
        .map(|line| line.split_whitespace().last().unwrap())
        .map(|name| names.iter().find(|known| *known == name).unwrap().as_str())
        .collect();
    assert_eq!(applied, [names[0].as_str(), second.as_str()]);
    let down = migration(&["down", "2"], Some(&url));
    let expected: Vec<String> = names[..2]
        .iter()
        .rev()
        .map(|name| format!("rolled back {name}"))
        .collect();
    assert_eq!(text(&down.stdout).trim(), expected.join("\n"));
    let mut conn = PgConnection::connect_with(&db.options()).await.unwrap();
    let users: Option<String> = sqlx::query_scalar("SELECT to_regclass('users')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(users, None);
}

/// What `just migrate-up` runs, against a server that accepts TLS only, with the URL's libpq
/// parameters: verified with the right CA, refused with another.
#[tokio::test]
async fn up_over_verify_full_tls() {
    let tls_only = ServerTls {
        tls_only: true,
        ..ServerTls::default()
    };
    let cluster = PgCluster::start_tls(tls_only).await.unwrap();
    let db = cluster.empty_database().await.unwrap();
    let files = cluster.tls_files().unwrap();
    let root = files.root_cert.clone();
    let up = migration(
        &["up"],
        Some(&db.owner_url_with(&files.parameters("verify-full"))),
    );
    assert!(up.status.success(), "{}", text(&up.stderr));
    // TLS only: the same login without TLS is refused (pg_hba's `hostssl`).
    let plain = migration(
        &["status"],
        Some(&db.owner_url_with(&[("sslmode", "disable")])),
    );
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("pg_hba.conf"),
        "{}",
        text(&plain.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let other = untrusted_ca_file(dir.path(), "other.pem").unwrap();
    let other_ca = [
        ("sslmode", "verify-full"),
        ("sslrootcert", other.to_str().unwrap()),
    ];
    let wrong = db.owner_url_with(&other_ca);
    let status = migration(&["status"], Some(&wrong));
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stderr));
    assert!(
        text(&status.stderr).contains("UnknownIssuer"),
        "{}",
        text(&status.stderr)
    );
    assert!(!text(&status.stderr).contains(cluster.password()));

    // The service's overrides apply here too: a URL without TLS parameters (plain `prefer`
    // would pass on this server) is verified against DATABASE_SSL_ROOT_CERT.
    let owner_url = db.owner_url();
    let overridden = |ca: &std::path::Path| {
        let ca = ca.to_str().unwrap();
        migration_binary(
            &["status"],
            &[
                ("DATABASE_URL", owner_url.as_str()),
                ("DATABASE_SSL_MODE", "verify-full"),
                ("DATABASE_SSL_ROOT_CERT", ca),
            ],
        )
    };
    let refused = overridden(&other);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("UnknownIssuer"),
        "{}",
        text(&refused.stderr)
    );
    let verified = overridden(&root);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    // So do libpq's environment variables, where the URL is silent.
    let from_libpq_environment = |ca: &std::path::Path| {
        migration_binary(
            &["status"],
            &[
                ("DATABASE_URL", owner_url.as_str()),
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", ca.to_str().unwrap()),
            ],
        )
    };
    let refused = from_libpq_environment(&other);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("UnknownIssuer"),
        "{}",
        text(&refused.stderr)
    );
    let verified = from_libpq_environment(&root);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    // `system` is the public roots (the driver alone would look for a file named "system"),
    // which do not include this server's private CA.
    let system = migration(
        &["status"],
        Some(&db.owner_url_with(&[("sslrootcert", "system")])),
    );
    let stderr = text(&system.stderr);
    assert_eq!(system.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}

/// A CA file that cannot be read is a configuration error before any connection: exit 2, one
/// line naming the setting, never the URL.
#[test]
fn an_unreadable_ca_file_exits_2_naming_the_setting() {
    let url = "postgres://user:s3cret-pw@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let output = migration(&["up"], Some(url));
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(
        stderr.contains("DATABASE_URL has a bad TLS parameter: sslrootcert"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");

    let output = migration_binary(
        &["up"],
        &[
            ("DATABASE_URL", "postgres://user:s3cret-pw@127.0.0.1:1/db"),
            ("DATABASE_SSL_MODE", "verify-full"),
            ("DATABASE_SSL_ROOT_CERT", "/nonexistent/ca.pem"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("DATABASE_SSL_ROOT_CERT cannot read /nonexistent/ca.pem"),
        "{stderr}"
    );

    // Every problem, one line each.
    let output = migration(
        &["up"],
        Some(
            "postgres://user:s3cret-pw@127.0.0.1:1/db?sslcert=/nonexistent/c.crt&sslkey=/nonexistent/c.key",
        ),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("migration: DATABASE_URL has a bad TLS parameter: sslcert"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("migration: DATABASE_URL has a bad TLS parameter: sslkey"),
        "{stderr}"
    );
}

#[test]
fn missing_database_url_exits_2_naming_the_variable() {
    let output = migration(&["up"], None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("DATABASE_URL is not set"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn malformed_database_url_exits_2_without_echoing_the_password() {
    for url in [
        "mysql://user:s3cret-pw@localhost/db",
        "postgres://user:s3cret-pw@local host:99999/db",
        "not a url s3cret-pw",
    ] {
        let output = migration(&["up"], Some(url));
        assert_eq!(output.status.code(), Some(2), "{url}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
        assert!(!stderr.contains("s3cret-pw"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn unreachable_database_exits_1_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let output = migration(&["up"], Some("postgres://user:s3cret-pw@127.0.0.1:1/db"));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("migration: failed"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

/// A misspelt setting of the CLI's is refused before anything connects; the service's pool
/// settings, which share the prefix and the `.env`, are left to the service.
#[test]
fn a_misspelt_setting_exits_2_and_the_services_own_pass() {
    // Port 1 on loopback: nothing listens there, so getting past the settings is exit 1.
    let url = ("DATABASE_URL", "postgres://user:s3cret-pw@127.0.0.1:1/db");
    let misspelt = [
        // And a problem only resolving the target finds: said with the others.
        (
            "DATABASE_URL",
            "postgres://user:s3cret-pw@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent.pem",
        ),
        ("DATABASE_SSLMODE", "verify-full"),
        // Read in capitals only: ignored, TLS would have stayed at the URL's mode.
        ("DATABASE_Ssl_Mode", "verify-full"),
        ("MIGRATION_LOCK_TIMEOUT", "100"),
        // Bad, and said with the others rather than alone.
        ("MIGRATION_LOCK_TIMEOUT_MS", "soon"),
        // Groups only the CLI reads: any unknown name.
        ("DATABASE_OWNER_SSL_MODE", "verify-full"),
        ("MIGRATION_LOCK_TIMEOUT_SECS", "60"),
        // A misspelling outside those groups: the run would have used DATABASE_URL's role.
        (
            "DATABASE_OWNERURL",
            "postgres://owner:s3cret-pw@127.0.0.1:1/db",
        ),
        // A prefix not in capitals: unread, the run would have used DATABASE_URL's role too.
        (
            "database_owner_url",
            "postgres://owner:s3cret-pw@127.0.0.1:1/db",
        ),
        ("Migration_Lock_Timeout_Ms", "100"),
    ];
    let output = migration_binary(&["status"], &misspelt);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    for said in [
        "DATABASE_SSLMODE is not a setting: did you mean DATABASE_SSL_MODE?",
        "DATABASE_Ssl_Mode is not a setting: did you mean DATABASE_SSL_MODE?",
        "MIGRATION_LOCK_TIMEOUT is not a setting: did you mean MIGRATION_LOCK_TIMEOUT_MS?",
        "MIGRATION_LOCK_TIMEOUT_MS must be a whole number of milliseconds",
        "DATABASE_OWNER_SSL_MODE is not a setting",
        "MIGRATION_LOCK_TIMEOUT_SECS is not a setting",
        "DATABASE_OWNERURL is not a setting: did you mean DATABASE_OWNER_URL?",
        "database_owner_url is not read: a setting's name is in capitals (did you mean \
         DATABASE_OWNER_URL?)",
        "Migration_Lock_Timeout_Ms is not read: a setting's name is in capitals (did you mean \
         MIGRATION_LOCK_TIMEOUT_MS?)",
        "DATABASE_URL has a bad TLS parameter: sslrootcert (in the database URL): cannot read \
         /nonexistent.pem",
    ] {
        assert!(stderr.contains(said), "{stderr}");
    }
    // Said once, though two readers cover that name (the shared group's and the owner's).
    assert_eq!(stderr.matches("database_owner_url").count(), 1, "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    let services = [
        url,
        ("DATABASE_MAX_CONNECTIONS", "5"),
        ("DATABASE_ECHO", "true"),
    ];
    let output = migration_binary(&["status"], &services);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
}

/// A lock timeout not below the service's (as the same settings give it) is warned of: the
/// service's statements queued behind the migration's lock request would fail first.
#[test]
fn a_lock_timeout_not_below_the_services_is_warned_of() {
    let url = ("DATABASE_URL", "postgres://user:s3cret-pw@127.0.0.1:1/db");
    let warned = |ours: &str, service: &str| {
        let mut variables = vec![url, ("DATABASE_LOCK_TIMEOUT_MS", service)];
        if !ours.is_empty() {
            variables.push(("MIGRATION_LOCK_TIMEOUT_MS", ours));
        }
        let output = migration_binary(&["status"], &variables);
        let stderr = text(&output.stderr);
        // Past the settings: nothing listens on port 1.
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        stderr
            .lines()
            .filter(|line| line.starts_with("migration: warning: MIGRATION_LOCK_TIMEOUT_MS"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        warned("5000", "5000"),
        [
            "migration: warning: MIGRATION_LOCK_TIMEOUT_MS (5000 ms) is not below \
          DATABASE_LOCK_TIMEOUT_MS (5000 ms): the service's statements that queue behind a \
          migration's lock request would fail before the migration gives up; keep it well \
          below (the default is 2000 ms)"
        ]
    );
    assert_eq!(
        warned("", "1500").len(),
        1,
        "the default, above the service's"
    );
    assert!(warned("4999", "5000").is_empty());
    assert!(warned("", "5000").is_empty());
    // Unset: the service's default (5000 ms).
    assert_eq!(warned("5000", "").len(), 1);
    assert!(warned("4999", "").is_empty());
}

/// Numbers are digits, as for every setting: a sign is refused, not read past.
#[test]
fn a_signed_lock_timeout_exits_2() {
    let variables = [
        ("DATABASE_URL", "postgres://user:s3cret-pw@127.0.0.1:1/db"),
        ("MIGRATION_LOCK_TIMEOUT_MS", "+5000"),
    ];
    let output = migration_binary(&["status"], &variables);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("MIGRATION_LOCK_TIMEOUT_MS must be a whole number"),
        "{stderr}"
    );
}

/// `lock_timeout` is the run's own (`MIGRATION_LOCK_TIMEOUT_MS`, set again by every migration):
/// one the URL's `options` or `PGOPTIONS` give would be overridden unseen, so it is refused.
#[test]
fn a_lock_timeout_in_the_urls_options_or_pgoptions_exits_2() {
    let url = "postgres://user:s3cret-pw@127.0.0.1:1/db";
    let in_url = format!("{url}?options=-c%20lock_timeout%3D60000");
    for variables in [
        vec![("DATABASE_URL", in_url.as_str())],
        vec![
            ("DATABASE_URL", url),
            ("PGOPTIONS", "-c lock_timeout=60000"),
        ],
    ] {
        let output = migration_binary(&["status"], &variables);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("sets lock_timeout, which MIGRATION_LOCK_TIMEOUT_MS sets"),
            "{stderr}"
        );
        assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    }
}

/// The other settings the runner sets for every migration would be overridden unseen too: one
/// the URL's `options` or `PGOPTIONS` give is refused, naming it and never the password.
#[test]
fn a_setting_the_runner_sets_in_the_urls_options_or_pgoptions_exits_2() {
    let url = "postgres://user:s3cret-pw@127.0.0.1:1/db";
    for name in migration::RUN_SETTINGS {
        let in_url = format!("{url}?options=-c%20{name}%3D1");
        let in_pgoptions = format!("-c {name}=1");
        for variables in [
            vec![("DATABASE_URL", in_url.as_str())],
            vec![("DATABASE_URL", url), ("PGOPTIONS", in_pgoptions.as_str())],
        ] {
            let output = migration_binary(&["status"], &variables);
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "sets {name}, which the runner sets for every migration: it would be ignored"
                )),
                "{stderr}"
            );
            assert!(!stderr.contains("s3cret-pw"), "{stderr}");
        }
    }
    // The README's advice for the service's URL, which the migrations share without
    // DATABASE_OWNER_URL: the run keeps it (tests/runner.rs), so it is no reason to refuse.
    let output = migration_binary(
        &["status"],
        &[
            ("DATABASE_URL", url),
            ("PGOPTIONS", "-c client_connection_check_interval=1s"),
        ],
    );
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("client_connection_check_interval"),
        "{stderr}"
    );
}

/// A setting exported empty (an unset `${VAR}` in a shell or compose file) over its value in
/// `.env` is refused before anything connects: empty means unset, so neither would apply, and
/// TLS would fall from `.env`'s verify-full to prefer.
#[test]
fn a_setting_exported_empty_over_its_value_in_dotenv_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = dir.path().join(".env");
    std::fs::write(
        &dotenv,
        "DATABASE_URL=postgres://user:s3cret-pw@127.0.0.1:1/db\nDATABASE_SSL_MODE=verify-full\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&dotenv, private).unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_migration"))
        .arg("status")
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("DATABASE_SSL_MODE", "")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DATABASE_SSL_MODE is exported empty, which hides its value in .env"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(
        migration(&["sideways"], Some("postgres://x@127.0.0.1/db"))
            .status
            .code(),
        Some(2)
    );
    for steps in ["0", "+1", "-1", "1.0", " 1"] {
        assert_eq!(
            migration(&["down", steps], Some("postgres://x@127.0.0.1/db"))
                .status
                .code(),
            Some(2),
            "down {steps:?}"
        );
    }
    // Each refused for its own reason, before any connection (nothing listens at that URL, which
    // would exit 1).
    let known = migration::migrations()[0].name().to_owned();
    let v = known.as_str();
    let once = "one of them, once";
    let needs = "--to needs a VERSION";
    let unknown = "is not a migration of this binary";
    for (args, why) in [
        (&["down", "--to"][..], needs),
        (&["down", "--to", "--force"], needs),
        (&["down", "--to", "--force", v], needs),
        (&["down", "--to", "-m1"], needs),
        (&["down", "2", "--to", v], once),
        (&["down", "--to", v, "3"], once),
        (&["down", "--to", v, "--to", v], once),
        (&["down", "--force", "--force"], once),
        (&["down", "--to=m1"], once),
        (&["down", "--to", ""], unknown),
        (&["down", "--to", "m1_nowhere"], unknown),
    ] {
        let output = migration(args, Some("postgres://x@127.0.0.1:1/db"));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

/// A run behind another session's migration lock says, on its own, which session holds it (it
/// would look hung), then goes on once the lock is released.
#[tokio::test]
async fn a_run_behind_a_held_migration_lock_says_who_holds_it() {
    let db = TestDatabase::empty().await.unwrap();
    let mut holder = common::holding_the_migration_lock(&db).await;
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let url = db.owner_url();
    let (mut command, _dir) = common::migration_command(&["up"], &[("DATABASE_URL", &url)]);
    let mut run = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its lines as they come: the lock is released once the notice is out, however slowly the
    // run got to it.
    let (lines, said) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(run.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let notice = loop {
        let left = limit.saturating_duration_since(std::time::Instant::now());
        match said.recv_timeout(left) {
            Ok(line) if line.contains("waiting for the migration lock") => break line,
            Ok(_) => {}
            Err(error) => panic!("no notice within 30 s: {error}"),
        }
    };
    let expected = format!("which backend {holder_pid} (role ");
    assert!(notice.contains(&expected), "{notice}");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let rest: Vec<String> = said.iter().collect();
    assert!(run.wait().unwrap().success(), "{rest:?}");
}

/// The help states the lock timeout's default the run really uses.
#[test]
fn the_help_states_the_lock_timeouts_real_default() {
    let output = migration(&["--help"], None);
    assert_eq!(output.status.code(), Some(0));
    let default_ms = migration::DEFAULT_LOCK_TIMEOUT.as_millis();
    let said = format!("MIGRATION_LOCK_TIMEOUT_MS (default {default_ms})");
    assert!(
        text(&output.stdout).contains(&said),
        "{}",
        text(&output.stdout)
    );
}

/// A VERSION `down --to` does not know is bad usage (exit 2), and nothing is rolled back.
#[tokio::test]
async fn down_to_an_unknown_version_exits_2() {
    let db = TestDatabase::migrated().await.unwrap();
    let output = migration(&["down", "--to", "m1_nowhere"], Some(&db.owner_url()));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("m1_nowhere is not a migration of this binary"),
        "{stderr}"
    );
    let status = migration(&["status"], Some(&db.owner_url()));
    assert!(
        text(&status.stdout)
            .lines()
            .all(|line| line.starts_with("applied")),
        "{}",
        text(&status.stdout)
    );
}

/// An argument that is not UTF-8 is bad usage (exit 2), not a panic (101).
#[cfg(unix)]
#[test]
fn an_argument_that_is_not_utf8_exits_2() {
    use std::os::unix::ffi::OsStrExt;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_migration"))
        .arg(std::ffi::OsStr::from_bytes(b"\xff"))
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/db")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("argument 1 is not valid UTF-8"), "{stderr}");
}

/// A closed standard output (`migration up | head -1`) is no failure of the run: it goes on,
/// and exits with its own code (not a panic's 101, half-way).
#[tokio::test]
async fn a_closed_standard_output_does_not_stop_the_run() {
    use std::process::{Command, Stdio};
    let db = TestDatabase::empty().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_migration"))
        .arg("up")
        .current_dir(dir.path())
        .env_clear()
        .env("HOME", dir.path())
        .env("DATABASE_URL", db.owner_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the first line: the run has not even connected yet.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let status = migration(&["status"], Some(&db.owner_url()));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let lines = text(&status.stdout);
    assert!(
        lines.lines().count() >= 2 && lines.lines().all(|line| line.starts_with("applied ")),
        "{lines}"
    );
}

/// Run with the service's role, which may not change the schema, `up`, `down` and `accept`
/// refuse before anything with what to use instead, not the server's bare "must be owner";
/// `status`, which only reads, answers. Without the right to use the history's schema, `status`
/// says so rather than list every migration as pending.
#[tokio::test]
async fn a_role_that_cannot_use_the_history_is_told_which_role_runs_migrations() {
    let db = TestDatabase::migrated().await.unwrap();
    let service_url = db.url();
    let version = migration::m20261205_000001_username_default_ignorables::NAME;
    for args in [&["up"][..], &["down"], &["accept", version]] {
        let output = migration(args, Some(&service_url));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("does not own the migration history")
                && stderr.contains("migrations run as the role that owns the schema")
                && stderr.contains("DATABASE_OWNER_URL"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("must be owner"), "{stderr}");
    }
    let status = migration(&["status"], Some(&service_url));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert!(!text(&status.stdout).contains("pending"));

    let role = counseling_config::DatabaseUrl::parse(&service_url)
        .unwrap()
        .username()
        .to_owned();
    let mut admin = PgConnection::connect_with(&db.options()).await.unwrap();
    // The role's name is the test kit's own, quoted.
    let revoke = format!(r#"REVOKE USAGE ON SCHEMA public FROM "{role}""#);
    sqlx::query(sqlx::AssertSqlSafe(revoke))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    let status = migration(&["status"], Some(&service_url));
    let stderr = text(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "a migration history (public.seaql_migrations) is there, in a schema role {role} may \
             not use"
        )),
        "{stderr}"
    );
    assert!(!text(&status.stdout).contains("pending"));

    // A refused login: PostgreSQL's words alone, never the password.
    let (user, host) = service_url.split_once('@').unwrap();
    let (user, _password) = user.rsplit_once(':').unwrap();
    let wrong = format!("{user}:not-the-password@{host}");
    let output = migration(&["status"], Some(&wrong));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("migration: failed: could not connect: password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(" at line ") && !stderr.contains("returned from database"));
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // A database without a history, where the role may create nothing: said as such, not as
    // "no schema has been selected to create in".
    let empty = TestDatabase::empty().await.unwrap();
    let output = migration(&["up"], Some(&empty.url()));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("may create the migration history in no schema of its search path"),
        "{stderr}"
    );
    // Another application's history, in a schema off the search path that the owner may not
    // use, is none of its business.
    let mut admin = PgConnection::connect_with(&empty.options()).await.unwrap();
    for statement in [
        "CREATE SCHEMA other_app",
        "CREATE TABLE other_app.seaql_migrations (version varchar PRIMARY KEY)",
    ] {
        sqlx::query(statement).execute(&mut admin).await.unwrap();
    }
    let _ = admin.close().await;
    let output = migration(&["up"], Some(&empty.owner_url()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}
