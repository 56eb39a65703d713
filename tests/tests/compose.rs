//! No Docker engine runs in CI, so the Docker files are checked here against `.env.example`, the
//! settings the service reads, and the README: credentials, names, ports, health checks, volumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker/docker-compose.yml")).unwrap()
}

/// `.env.example` as a map of the variables it sets, read as the binaries read a `.env`.
fn env_example() -> BTreeMap<String, String> {
    counseling_config::parse_env(&read(".env.example"))
        .unwrap()
        .into_iter()
        .collect()
}

/// Replaces `${NAME}` and `${NAME:?message}` with values from `.env.example`, as compose does.
fn interpolate(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let expression = &rest[start + 2..end];
        let name = expression.split([':', '-', '?']).next().unwrap();
        out.push_str(
            env.get(name)
                .unwrap_or_else(|| panic!("{name} is not in .env.example")),
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

struct Url {
    user: String,
    password: String,
    port: u16,
    database: String,
}

/// `url`'s parts, read by the binaries' own parser.
fn parse_url(url: &str) -> Url {
    use secrecy::ExposeSecret;
    let url = counseling_config::DatabaseUrl::parse(url).unwrap();
    Url {
        user: url.username().into(),
        password: url.password().unwrap().expose_secret().into(),
        port: url.port(),
        database: url.database().unwrap().into(),
    }
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn env_of(service: &Value, key: &str, env: &BTreeMap<String, String>) -> String {
    let raw = service["environment"][key]
        .as_str()
        .unwrap_or_else(|| panic!("environment {key} missing"));
    interpolate(raw, env)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The roles `docker/initdb/03-roles.sql` creates (`initdb_roles.rs` runs it for real).
const OWNER_ROLE: &str = "counseling_owner";
const SERVICE_ROLE: &str = "counseling";

#[test]
fn db_service_matches_database_url() {
    let (compose, env) = (compose(), env_example());
    let db = service(&compose, "db");
    assert_eq!(db["image"], "postgres:16");
    // DATABASE_URL (the host's view of compose's db) names the service's role.
    let url = parse_url(&env["DATABASE_URL"]);
    assert_eq!(url.user, SERVICE_ROLE);
    assert_eq!(env_of(db, "POSTGRES_SERVICE_PASSWORD", &env), url.password);
    assert_eq!(env_of(db, "POSTGRES_DB", &env), url.database);
    assert_eq!(url.database, "counseling_platform");
    // The image's superuser is neither of our roles.
    let superuser = env_of(db, "POSTGRES_USER", &env);
    assert!(![OWNER_ROLE, SERVICE_ROLE].contains(&superuser.as_str()));
    assert_eq!(
        strings(&db["ports"]),
        [format!("127.0.0.1:{}:5432", url.port)]
    );

    // The owner's URL, for the migration CLI, agrees too.
    let owner = parse_url(&env["DATABASE_OWNER_URL"]);
    assert_eq!(owner.user, OWNER_ROLE);
    assert_eq!(env_of(db, "POSTGRES_OWNER_PASSWORD", &env), owner.password);
    assert_eq!((owner.port, owner.database), (url.port, url.database));

    // Over TCP (the first start's temporary server has its socket only), and only once both
    // roles exist (a first start whose scripts failed restarts without them).
    let healthcheck = db["healthcheck"]["test"].to_string();
    for part in [
        "pg_isready -h 127.0.0.1",
        "psql -h 127.0.0.1",
        "'counseling', 'counseling_owner'",
        "= 2 ]",
    ] {
        assert!(healthcheck.contains(part), "{part}: {healthcheck}");
    }
    assert_eq!(db["healthcheck"]["start_period"], "60s");

    let volumes = strings(&db["volumes"]);
    assert!(
        volumes.contains(&"postgres-data:/var/lib/postgresql/data".to_owned()),
        "{volumes:?}"
    );
    assert!(
        compose["volumes"].get("postgres-data").is_some(),
        "named volume is declared"
    );
    let init_mount = volumes
        .iter()
        .find(|v| v.contains("/docker-entrypoint-initdb.d"))
        .expect("init scripts are mounted");
    let host_dir = init_mount.split(':').next().unwrap();
    let scripts: Vec<_> = std::fs::read_dir(root().join("docker").join(host_dir))
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "sql"))
        .collect();
    assert!(
        !scripts.is_empty(),
        "docker/initdb holds at least one .sql script"
    );
}

#[test]
fn db_loads_and_creates_pg_stat_statements() {
    let compose = compose();
    let db = service(&compose, "db");
    let command = strings(&db["command"]);
    assert!(
        command.contains(&"shared_preload_libraries=pg_stat_statements".to_owned()),
        "{command:?}"
    );
    let creates = std::fs::read_dir(root().join("docker/initdb"))
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .any(|script| script.contains("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"));
    assert!(creates, "an initdb script creates the extension");
    // The migrations work without it (managed databases may not offer it).
    let migrations = std::fs::read_dir(root().join("migration/src"))
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .collect::<String>();
    assert!(!migrations.contains("pg_stat_statements"));
}

#[test]
fn db_test_service_matches_database_url_test() {
    let (compose, env) = (compose(), env_example());
    let db_test = service(&compose, "db-test");
    assert_eq!(db_test["image"], "postgres:16");
    let url = parse_url(&env["DATABASE_URL_TEST"]);
    assert_eq!(url.port, 5433);
    assert_eq!(url.database, "counseling_test");
    assert_eq!(env_of(db_test, "POSTGRES_USER", &env), url.user);
    assert_eq!(env_of(db_test, "POSTGRES_PASSWORD", &env), url.password);
    assert_eq!(env_of(db_test, "POSTGRES_DB", &env), url.database);
    assert_eq!(strings(&db_test["ports"]), ["127.0.0.1:5433:5432"]);
    assert!(strings(&db_test["tmpfs"]).contains(&"/var/lib/postgresql/data".to_owned()));
    let healthcheck = db_test["healthcheck"]["test"].to_string();
    assert!(
        healthcheck.contains("pg_isready -h 127.0.0.1"),
        "{healthcheck}"
    );
    assert_eq!(db_test["healthcheck"]["start_period"], "60s");
}

#[test]
fn migrate_runs_after_db_is_healthy_and_app_after_migrate_succeeded() {
    let compose = compose();
    let migrate = service(&compose, "migrate");
    assert_eq!(migrate["depends_on"]["db"]["condition"], "service_healthy");
    assert_eq!(strings(&migrate["command"]), ["migration", "up"]);
    let app = service(&compose, "app");
    assert_eq!(
        app["depends_on"]["migrate"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(app["build"]["dockerfile"], "docker/Dockerfile");
    assert_eq!(app["environment"]["APP_HOST"], "0.0.0.0");
    // The image's HEALTHCHECK is the service's; an init passes SIGTERM on to the migration.
    assert_eq!(migrate["healthcheck"]["disable"], true);
    assert_eq!(migrate["init"], true);
    // Docker's 10 s would cut the drain short: the shutdown timeout, up to 8 s of closing.
    let drain: u64 = readme_configuration_table()["APP_SHUTDOWN_TIMEOUT_SECS"]
        .trim_matches('`')
        .parse()
        .unwrap();
    let grace: u64 = app["stop_grace_period"]
        .as_str()
        .and_then(|grace| grace.strip_suffix('s'))
        .and_then(|secs| secs.parse().ok())
        .expect("stop_grace_period in seconds");
    assert!(grace >= drain + 8, "{grace} s");
}

#[test]
fn migrations_run_as_the_owner_and_the_app_as_the_service_role() {
    let (compose, env) = (compose(), env_example());
    let database = &env["POSTGRES_DB"];
    let migrate = service(&compose, "migrate");
    assert_eq!(
        env_of(migrate, "DATABASE_OWNER_URL", &env),
        format!(
            "postgres://{OWNER_ROLE}:{}@db:5432/{database}",
            env["POSTGRES_OWNER_PASSWORD"]
        )
    );
    let app = service(&compose, "app");
    assert_eq!(
        env_of(app, "DATABASE_URL", &env),
        format!(
            "postgres://{SERVICE_ROLE}:{}@db:5432/{database}",
            env["POSTGRES_SERVICE_PASSWORD"]
        )
    );
    // Each container sees only its own role's password: migrate no DATABASE_URL, the app
    // neither the owner's nor the superuser's password.
    let raw = |service: &Value| serde_json::to_string(&service["environment"]).unwrap();
    assert!(migrate["environment"].get("DATABASE_URL").is_none());
    assert!(!raw(migrate).contains("POSTGRES_SERVICE_PASSWORD"));
    assert!(!raw(app).contains("POSTGRES_OWNER_PASSWORD"));
    assert!(!raw(app).contains("POSTGRES_PASSWORD"));

    // The role names are the ones the initdb script creates.
    let roles_sql = read("docker/initdb/03-roles.sql");
    for role in [OWNER_ROLE, SERVICE_ROLE] {
        assert!(
            roles_sql.contains(&format!("CREATE ROLE {role} LOGIN NOSUPERUSER")),
            "{role}"
        );
    }
}

#[test]
fn every_published_port_is_bound_to_loopback() {
    let compose = compose();
    let mut published = 0;
    for (name, service) in compose["services"].as_object().unwrap() {
        for port in strings(&service["ports"]) {
            assert!(port.starts_with("127.0.0.1:"), "{name} publishes {port}");
            published += 1;
        }
    }
    assert_eq!(published, 3, "db, db-test and app");
}

#[test]
fn no_variable_has_a_default() {
    // `${NAME:?message}` fails when NAME is unset or empty; `${NAME}` would pass an empty
    // password through and `${NAME:-x}` would make x a known default.
    let text = read("docker/docker-compose.yml");
    let expressions: Vec<&str> = text
        .split("${")
        .skip(1)
        .map(|rest| &rest[..rest.find('}').unwrap()])
        .collect();
    assert!(!expressions.is_empty());
    for expression in expressions {
        let (name, message) = expression
            .split_once(":?")
            .unwrap_or_else(|| panic!("${{{expression}}} must be required (:?)"));
        assert_eq!(message, format!("set {name} in .env"));
    }
}

/// compose's `${NAME:?}` cannot tell `.env.example`'s placeholders from passwords, and the
/// init scripts run only on a volume's first start: the preflight container refuses them before
/// any database starts, and every password any service uses passes through it.
#[test]
fn the_databases_wait_for_a_preflight_that_sees_every_password() {
    let compose = compose();
    for name in ["db", "db-test"] {
        assert_eq!(
            service(&compose, name)["depends_on"]["preflight"]["condition"],
            "service_completed_successfully",
            "{name} must wait for preflight"
        );
    }
    for (name, then) in [("migrate", "db"), ("app", "migrate")] {
        assert!(
            service(&compose, name)["depends_on"].get(then).is_some(),
            "{name} must start after {then}"
        );
    }
    let checked: Vec<String> = service(&compose, "preflight")["environment"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let passwords: Vec<String> = env_example()
        .into_keys()
        .filter(|name| name.ends_with("_PASSWORD"))
        .collect();
    assert!(!passwords.is_empty());
    for password in &passwords {
        assert!(
            checked.contains(password),
            "preflight does not check {password}"
        );
        assert!(
            read("docker/preflight.sh").contains(password.as_str()),
            "docker/preflight.sh does not check {password}"
        );
    }
}

/// The preflight script itself, as the container runs it: `.env.example`'s values are refused,
/// one line per variable; real passwords pass.
#[cfg(unix)]
#[test]
fn preflight_refuses_each_placeholder_by_name_and_passes_real_passwords() {
    let run = |values: &[(&str, &str)]| {
        let output = std::process::Command::new("sh")
            .arg(root().join("docker/preflight.sh"))
            .env_clear()
            .envs(values.iter().copied())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let example = env_example();
    let passwords: Vec<(&str, &str)> = example
        .iter()
        .filter(|(name, _)| name.ends_with("_PASSWORD"))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let (ok, stderr) = run(&passwords);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), passwords.len(), "{stderr}");
    for (name, value) in &passwords {
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(&format!("{name} is the example's placeholder"))),
            "{stderr}"
        );
        assert!(!stderr.contains(value), "{stderr}");
    }
    let real: Vec<(&str, &str)> = passwords
        .iter()
        .map(|(name, _)| (*name, "a7f3e9c1d5"))
        .collect();
    assert_eq!(run(&real), (true, String::new()));
    // Compose writes passwords into URLs unencoded.
    let mut encoded = real.clone();
    encoded[0].1 = "a7f3/e9c1?d5";
    let (ok, stderr) = run(&encoded);
    assert!(
        !ok && stderr.contains(&format!("{} holds a character", encoded[0].0)),
        "{stderr}"
    );
    assert!(!stderr.contains("a7f3/e9c1?d5"), "{stderr}");
    // The image's superuser may not take the name of a role the init scripts create.
    for taken in [SERVICE_ROLE, OWNER_ROLE] {
        let mut named = real.clone();
        named.push(("POSTGRES_USER", taken));
        let (ok, stderr) = run(&named);
        assert!(
            !ok && stderr.contains("POSTGRES_USER names a role"),
            "{stderr}"
        );
    }
    let mut named = real.clone();
    named.push(("POSTGRES_USER", "postgres"));
    assert_eq!(run(&named), (true, String::new()));
    let (ok, stderr) = run(&real[1..]);
    assert!(
        !ok && stderr.contains(&format!("{} is not set", real[0].0)),
        "{stderr}"
    );
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_liveness_healthcheck() {
    let dockerfile = read("docker/Dockerfile");
    assert!(
        dockerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count()
            >= 2
    );
    let user = dockerfile
        .lines()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "USER root");
    let healthcheck = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .expect("a HEALTHCHECK instruction");
    assert!(healthcheck.contains("/health/live"), "{healthcheck}");
    assert!(dockerfile.contains("--locked"));
}

/// The rows of the README's configuration table: variable -> default cell.
fn readme_configuration_table() -> BTreeMap<String, String> {
    let readme = read("README.md");
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap_or_default()
        .to_owned();
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), cells.get(2)?.to_string()))
        })
        .collect()
}

/// Variables that configure other programs than counseling-api (tests, migrations, compose).
const NOT_THE_SERVICE: &[&str] = &[
    "DATABASE_URL_TEST",
    "DATABASE_OWNER_URL",
    "DATABASE_OWNER_URL_FILE",
    "DATABASE_OWNER_PASSWORD_FILE",
    "MIGRATION_LOCK_TIMEOUT_MS",
];

#[test]
fn every_setting_is_documented_in_env_example_and_readme() {
    use counseling_http::settings::Documented;

    let env = env_example();
    let example = read(".env.example");
    let table = readme_configuration_table();
    let documented = counseling_http::Settings::documented_variables();
    for (variable, default) in &documented {
        let (in_env, in_table) = (env.get(variable), table.get(variable));
        assert!(
            in_table.is_some(),
            "{variable} missing from the README's table"
        );
        match default {
            // The documented defaults are the real ones.
            Documented::Default(default) => {
                assert_eq!(in_env, Some(default), "{variable} in .env.example");
                assert_eq!(
                    in_table,
                    Some(&format!("`{default}`")),
                    "{variable} in the README"
                );
            }
            Documented::Required => {
                assert!(in_env.is_some(), "{variable} missing from .env.example");
                assert!(
                    in_table.is_some_and(|text| text.starts_with("none (required")),
                    "{variable} in the README: {in_table:?}"
                );
            }
            // Shown, commented out, in .env.example: setting it changes something.
            Documented::Unset => {
                assert!(
                    example.contains(&format!("\n# {variable}=")) && in_env.is_none(),
                    "{variable} must be a commented line in .env.example"
                );
                assert_eq!(
                    in_table.map(String::as_str),
                    Some("unset"),
                    "{variable} in the README"
                );
            }
        }
    }
    // The migration CLI's one setting of its own, documented with its real default; below the
    // service's, whose statements queued behind a migration's lock request would fail first.
    let service_lock_timeout = counseling_persistence::PoolSettings::default().lock_timeout;
    assert!(migration::DEFAULT_LOCK_TIMEOUT < service_lock_timeout);
    let lock_timeout_ms = migration::DEFAULT_LOCK_TIMEOUT.as_millis().to_string();
    assert_eq!(env.get("MIGRATION_LOCK_TIMEOUT_MS"), Some(&lock_timeout_ms));
    assert_eq!(
        table.get("MIGRATION_LOCK_TIMEOUT_MS"),
        Some(&format!("`{lock_timeout_ms}`"))
    );
    // Nothing documented that the service does not read.
    for variable in table.keys() {
        assert!(
            NOT_THE_SERVICE.contains(&variable.as_str())
                || documented.iter().any(|(name, _)| name == variable),
            "the README documents {variable}, which counseling-api does not read"
        );
    }
}

#[test]
fn the_dockerfile_copies_every_workspace_member_for_its_dependency_layer() {
    let manifest: toml_like::Members = toml_like::members(&read("Cargo.toml"));
    let dockerfile = read("docker/Dockerfile");
    for member in manifest {
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "docker/Dockerfile does not copy {member}/Cargo.toml: its build would fail"
        );
        // Placeholder sources are for the members whose sources come later (the patched
        // driver's are copied whole, above them).
        let placeholders = dockerfile
            .split_once("RUN for crate in ")
            .and_then(|(_, rest)| rest.split_once("; do"))
            .map(|(list, _)| list.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(
            placeholders.contains(&member.as_str())
                || dockerfile.contains(&format!("COPY {member}/src {member}/src")),
            "{member} has no placeholder source in docker/Dockerfile"
        );
    }
}

/// The Dockerfile's dependency stage, replayed in a scratch folder: its `COPY` lines, then its
/// placeholder sources (the `RUN` before its build). Cargo must read the result as a workspace: a
/// target a manifest names whose file the stage does not write (the persistence crate's
/// `[[bench]]`) stops the image's whole build, and CI runs no Docker.
#[cfg(unix)]
#[test]
fn the_dockerfiles_dependency_stage_is_a_workspace_cargo_reads() {
    let dockerfile = read("docker/Dockerfile");
    let stage = dockerfile.split("\nCOPY . .").next().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for line in stage.lines() {
        let Some(arguments) = line.strip_prefix("COPY ") else {
            continue;
        };
        let arguments: Vec<&str> = arguments.split_whitespace().collect();
        let (into, sources) = arguments.split_last().unwrap();
        for source in sources {
            copy_as_docker_does(&root().join(source), &scratch.path().join(into));
        }
    }
    let run = stage.split("\nRUN ").nth(1).unwrap();
    let placeholders = run.split("&& cargo build").next().unwrap();
    let written = std::process::Command::new("sh")
        .args(["-c", placeholders])
        .current_dir(scratch.path())
        .status()
        .unwrap();
    assert!(written.success(), "{placeholders}");
    // `cargo fetch` resolves every target of every member, as the build does (`cargo metadata`
    // does not look for their files); offline, for this machine's platform, whose packages
    // `cargo test --workspace` fetched already; locked, as the image builds.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let read = std::process::Command::new(&cargo)
        .args([
            "fetch",
            "--offline",
            "--locked",
            "--target",
            &host_triple(&cargo),
        ])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&read.stderr);
    assert!(
        read.status.success() || stderr.contains("--offline"),
        "docker/Dockerfile's dependency stage is no workspace: {stderr}"
    );
    assert!(
        read.status.success(),
        "some of the workspace's packages are not downloaded yet (run `cargo fetch` or the \
         whole `cargo test --workspace` first): {stderr}"
    );
}

/// The platform cargo builds for by default (`host:` of `cargo -vV`).
#[cfg(unix)]
fn host_triple(cargo: &str) -> String {
    let output = std::process::Command::new(cargo)
        .arg("-vV")
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let host = text.lines().find_map(|line| line.strip_prefix("host: "));
    host.unwrap().to_owned()
}

/// `COPY source into`: a folder's contents into `into`, a file into `into` if it ends in `/`.
#[cfg(unix)]
fn copy_as_docker_does(source: &Path, into: &Path) {
    if source.is_dir() {
        std::fs::create_dir_all(into).unwrap();
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            copy_as_docker_does(&entry.path(), &into.join(entry.file_name()));
        }
        return;
    }
    let target = match into.to_str().is_some_and(|text| text.ends_with('/')) {
        true => into.join(source.file_name().unwrap()),
        false => into.to_path_buf(),
    };
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(source, &target).unwrap();
}

/// The `members` list of the workspace manifest (a flat array of strings).
mod toml_like {
    pub type Members = Vec<String>;

    pub fn members(manifest: &str) -> Members {
        let list = manifest
            .split("members = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or_default();
        list.split(',')
            .map(|item| item.trim().trim_matches('"').to_owned())
            .filter(|item| !item.is_empty())
            .collect()
    }
}
