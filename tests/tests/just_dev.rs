//! What a new user types first, `just dev`, in this checkout: a running, migrated service that
//! reports healthy and serves a scrape Prometheus' own checker accepts, twice in a row. The second
//! run reuses the `.env`, database and cluster of the first, with passwords of every reserved URL
//! character from the environment (which wins over `.env`): `local-postgres` gives the roles those
//! passwords, the migrations and the service decode them alike.
//!
//! Ignored by default: it uses this checkout, ports 8000 and 5432 (another when 5432 is taken)
//! and minutes of building; CI runs it (`cargo test --workspace --test just_dev --
//! --ignored`). Unix only, like `just dev`'s project-local PostgreSQL.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use counseling_config::{DatabaseUrl, UrlParts};
use counseling_e2e::{TempDir, get_text, workspace_binary};
use counseling_provision::password::generate_password;
use counseling_provision::server::{free_port, port_in_use};
use counseling_testkit::fixtures::wait_until;
use secrecy::ExposeSecret;

const HEALTH: &str = "http://127.0.0.1:8000/health";

#[test]
#[ignore = "runs `just dev` in this checkout on ports 8000 and 5432; CI runs it"]
fn just_dev_reaches_a_healthy_service_twice_in_a_row() {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let created_env = !checkout.join(".env").exists();
    let _stopped = StopsLocalPostgres(checkout.clone());
    assert!(local_postgres(&checkout, "env-file").success());
    let env = counseling_config::read_env_file(&checkout).unwrap();
    let configured = |name: &str| {
        let text = env.iter().find(|(variable, _)| variable == name).unwrap();
        DatabaseUrl::parse(&text.1).unwrap()
    };
    let (service, owner) = (configured("DATABASE_URL"), configured("DATABASE_OWNER_URL"));
    // Port 5432 as in .env.example, unless something else holds it.
    let port = if port_in_use(service.port()) {
        free_port().unwrap()
    } else {
        service.port()
    };
    let logs = TempDir::new("just-dev");
    for attempt in 1..=2 {
        let mut overrides = Vec::new();
        if attempt == 2 || port != service.port() {
            for (variable, url) in [("DATABASE_URL", &service), ("DATABASE_OWNER_URL", &owner)] {
                overrides.push((variable, reserved_characters(url, port)));
            }
        }
        let log = logs.path().join(format!("just-dev-{attempt}.log"));
        let mut dev = Command::new("just");
        let mut dev = without_cargo_test_variables(&mut dev)
            .arg("dev")
            .current_dir(&checkout)
            .envs(overrides)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            // Its own group, so that stopping it reaches cargo and the service too.
            .process_group(0)
            .spawn()
            .unwrap();
        let output = || {
            let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
            format!("{}{}", read(&log), read(&log.with_extension("err")))
        };
        let healthy = wait_until("a healthy /health", Duration::from_secs(600), || {
            let exited = dev.try_wait().ok().flatten();
            assert!(
                exited.is_none(),
                "just dev (run {attempt}) exited: {}",
                output()
            );
            get_text(HEALTH, Duration::from_secs(3)).is_ok_and(|(status, ..)| status == 200)
        });
        healthy.unwrap_or_else(|error| panic!("run {attempt}: {error}: {}", output()));
        promtool_accepts_the_scrape();

        let group = nix::unistd::Pid::from_raw(-(dev.id() as i32));
        nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM).unwrap();
        let _ = dev.wait();
        // The service drains after just exits: wait until it has let go of port 8000.
        wait_until("port 8000 free", Duration::from_secs(30), || {
            !port_in_use(8000)
        })
        .unwrap();
    }
    if created_env {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(checkout.join(".env")).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(checkout.join(".env")).unwrap();
        let placeholder = text
            .lines()
            .find(|l| !l.starts_with('#') && l.contains("change-me"));
        assert!(placeholder.is_none(), ".env kept a placeholder password");
        std::fs::remove_file(checkout.join(".env")).unwrap();
    }
}

/// `url` on `port` with a fresh password of every reserved URL character, percent-encoded.
fn reserved_characters(url: &DatabaseUrl, port: u16) -> String {
    let password = format!("@:/?#% {}", generate_password().unwrap().expose_secret());
    let parts = UrlParts {
        host: url.host(),
        port,
        user: url.username(),
        password: Some(&password),
        database: url.database().unwrap(),
        parameters: &[],
    };
    DatabaseUrl::from_parts(parts)
        .unwrap()
        .expose_secret()
        .to_owned()
}

fn promtool_accepts_the_scrape() {
    let (status, _, scrape) =
        get_text("http://127.0.0.1:8000/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.status.success(),
        "promtool check metrics: {findings}"
    );
}

/// `command` without the package variables cargo gives this test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, `CARGO_BIN_EXE_*`), which a developer's shell does not have: ring's build
/// script tracks them, so the cargo inside would rebuild ring and all above it, and the next
/// cargo outside again. What a user sets (`CARGO_HOME`, `CARGO_TARGET_DIR`...) stays.
fn without_cargo_test_variables(command: &mut Command) -> &mut Command {
    const SET_BY_CARGO: [&str; 3] = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"];
    for (name, _) in std::env::vars_os() {
        if SET_BY_CARGO
            .iter()
            .any(|prefix| name.to_string_lossy().starts_with(prefix))
        {
            command.env_remove(&name);
        }
    }
    command
}

fn local_postgres(checkout: &Path, command: &str) -> std::process::ExitStatus {
    Command::new(workspace_binary("local-postgres"))
        .arg(command)
        .current_dir(checkout)
        .status()
        .unwrap()
}

/// Stops the project-local PostgreSQL when the test ends, passed or not.
struct StopsLocalPostgres(PathBuf);

impl Drop for StopsLocalPostgres {
    fn drop(&mut self) {
        let _ = local_postgres(&self.0, "stop");
    }
}
