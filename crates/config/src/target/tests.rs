#![allow(clippy::unwrap_used)]
use std::path::Path;

use secrecy::ExposeSecret;

use super::*;
use crate::Endpoint;

fn session() -> SessionDefaults {
    SessionDefaults {
        application_name: "test-app".into(),
        settings: vec![(
            "statement_timeout".into(),
            "1000".into(),
            "DATABASE_STATEMENT_TIMEOUT_MS",
        )],
        log_statements: false,
        set_later: Vec::new(),
    }
}

/// Exactly `vars`; with a home that holds none of libpq's files unless they name one (without
/// HOME, the user's real home would be looked at, as libpq does).
fn sources(vars: &[(&str, &str)]) -> Sources {
    let home = [
        ("HOME", "/nonexistent/home"),
        ("APPDATA", "C:\\nonexistent"),
    ];
    let named = |(name, _): &(&str, &str)| vars.iter().any(|(given, _)| given == name);
    let homes = home.into_iter().filter(|home| !named(home));
    Sources::from_vars(homes.chain(vars.iter().copied()))
}

fn connector(vars: &[(&str, &str)]) -> Result<Connector, Problems> {
    DatabaseTarget::from_sources(&sources(vars), Role::Service)?.resolve(&session())
}

fn variables(problems: &Problems) -> Vec<&str> {
    problems
        .0
        .iter()
        .map(|problem| problem.variable.as_str())
        .collect()
}

fn private_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.to_str().unwrap().to_owned()
}

fn endpoint(host: &str, port: u16) -> Endpoint {
    Endpoint {
        host: host.into(),
        port,
    }
}

/// PostgreSQL has no TLS over a unix socket: the driver must not ask for it there (the server
/// says no, and `prefer` would still be fine), and a mode that requires it is refused at start
/// rather than met in plaintext, which would send the password to whoever made the socket file.
#[test]
fn a_unix_socket_is_used_without_tls_and_a_mode_requiring_it_is_refused() {
    use sea_orm::sqlx::postgres::PgSslMode;
    let ssl_mode = |url: &str| {
        let connector = connector(&[("DATABASE_URL", url)]).unwrap();
        let options = connector.options_for(&connector.endpoints()[0]).unwrap();
        options.get_ssl_mode()
    };
    let socket = "postgres://svc@%2Frun%2Fpostgresql/app";
    assert!(matches!(ssl_mode(socket), PgSslMode::Disable));
    let tcp = "postgres://svc@db.internal/app?sslmode=require";
    assert!(matches!(ssl_mode(tcp), PgSslMode::Require));
    for (url, environment) in [
        (
            "postgres://svc@%2Frun%2Fpostgresql/app?sslmode=require",
            None,
        ),
        (
            "postgres://svc@db.internal,%2Ftmp/app?target_session_attrs=read-write",
            Some(("PGSSLMODE", "require")),
        ),
    ] {
        let mut vars = vec![("DATABASE_URL", url)];
        vars.extend(environment);
        let problems = connector(&vars).unwrap_err();
        assert_eq!(variables(&problems), ["DATABASE_URL"], "{problems}");
        assert!(
            problems.to_string().contains("names a unix socket"),
            "{problems}"
        );
    }
}

/// Exported empty, PGSSLCERT is read by the driver as a file named "": refused where TLS can
/// happen and no certificate of the URL's replaces it.
#[test]
fn an_empty_exported_client_file_is_refused_where_it_would_be_used() {
    let empty = ("PGSSLCERT", "");
    let problems = connector(&[("DATABASE_URL", "postgres://svc@db.internal/app"), empty]);
    assert_eq!(variables(&problems.unwrap_err()), ["PGSSLCERT"]);
    for url in [
        "postgres://svc@db.internal/app?sslmode=disable",
        "postgres://svc@%2Frun%2Fpostgresql/app",
    ] {
        assert!(connector(&[("DATABASE_URL", url), empty]).is_ok(), "{url}");
    }
}

/// Exported empty, PGUSER is read by the driver as the user "": refused unless the URL names one.
#[test]
fn an_empty_exported_pguser_is_refused_unless_the_url_names_the_user() {
    let empty = ("PGUSER", "");
    let problems = connector(&[("DATABASE_URL", "postgres://db.internal/app"), empty]);
    assert_eq!(variables(&problems.unwrap_err()), ["PGUSER"]);
    for url in [
        "postgres://svc@db.internal/app",
        "postgres://db.internal/app?user=svc",
    ] {
        let connector = connector(&[("DATABASE_URL", url), empty]).unwrap();
        assert_eq!(connector.user.as_deref(), Some("svc"), "{url}");
    }
}

/// `user=` empty in the URL is refused as an empty PGUSER is: the driver would log in as "".
#[test]
fn an_empty_user_in_the_url_is_refused() {
    let problems = connector(&[("DATABASE_URL", "postgres://db.internal/app?user=")]);
    let problems = problems.unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_URL"]);
    assert!(
        problems.to_string().contains("user: is empty"),
        "{problems}"
    );
}

/// Under sslcertmode=disable an exported PGSSLCERT is refused where the driver would send it, and
/// only there: with TLS off or over sockets alone no handshake happens, as in libpq.
#[test]
fn an_exported_client_file_under_sslcertmode_disable_is_refused_only_where_it_would_be_sent() {
    let exported = ("PGSSLCERT", "/etc/counseling/client.crt");
    let url = "postgres://svc@db.internal/app?sslcertmode=disable";
    let problems = connector(&[("DATABASE_URL", url), exported]).unwrap_err();
    assert_eq!(variables(&problems), ["PGSSLCERT"], "{problems}");
    for url in [
        "postgres://svc@db.internal/app?sslcertmode=disable&sslmode=disable",
        "postgres://svc@%2Frun%2Fpostgresql/app?sslcertmode=disable",
    ] {
        let accepted = connector(&[("DATABASE_URL", url), exported]);
        assert!(accepted.is_ok(), "{url}: {:?}", accepted.err());
    }
}

#[test]
fn a_url_and_a_password_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = private_file(dir.path(), "url", "postgres://svc@db.internal:6432/app\n");
    let password_file = private_file(dir.path(), "password", "fr3sh-secret\n");
    let connector = connector(&[
        ("DATABASE_URL_FILE", &url_file),
        ("DATABASE_PASSWORD_FILE", &password_file),
    ])
    .unwrap();
    assert_eq!(connector.endpoints(), [endpoint("db.internal", 6432)]);
    // The password file is read for each connection's options.
    let options = connector.options_for(&connector.endpoints()[0]).unwrap();
    assert_eq!(options.get_username(), "svc");
    let password = || connector.password().unwrap().unwrap();
    assert_eq!(password().expose_secret(), "fr3sh-secret");
    std::fs::write(&password_file, "rotated\n").unwrap();
    assert_eq!(password().expose_secret(), "rotated");
    std::fs::remove_file(&password_file).unwrap();
    let error = connector
        .options_for(&connector.endpoints()[0])
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("DATABASE_PASSWORD_FILE: cannot read"),
        "{error}"
    );
}

#[test]
fn a_variable_next_to_its_file_twin_or_two_passwords_are_refused_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = private_file(dir.path(), "url", "postgres://svc@h/app");
    let password_file = private_file(dir.path(), "password", "s3cret");
    // The twin from .env counts as much as from the environment.
    let sources = Sources::layered(
        [(
            "DATABASE_URL".to_owned(),
            "postgres://svc:hunter2@h/app".to_owned(),
        )],
        [
            ("DATABASE_URL_FILE".to_owned(), url_file.clone()),
            (
                "DATABASE_OWNER_URL".to_owned(),
                "postgres://own:hunter2@h/app".to_owned(),
            ),
            (
                "DATABASE_OWNER_PASSWORD_FILE".to_owned(),
                password_file.clone(),
            ),
        ],
    );
    let problems = DatabaseTarget::from_sources(&sources, Role::Service).unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_URL_FILE"]);
    let line = problems.to_string();
    assert!(
        line.contains("(in the environment) next to DATABASE_URL (in .env)"),
        "{line}"
    );
    let problems = DatabaseTarget::from_sources(&sources, Role::Owner).unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_OWNER_PASSWORD_FILE"]);
    assert!(problems.to_string().contains("carries a password too"));
    assert!(!problems.to_string().contains("hunter2"));
}

/// libpq takes PGPASSWORD over a password file, ours would take the file: both set is refused.
/// An empty password in the URL is none, as in libpq: no clash with the file.
#[test]
fn a_password_file_next_to_pgpassword_is_refused_and_an_empty_url_password_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = private_file(dir.path(), "password", "s3cret");
    let problems = DatabaseTarget::from_sources(
        &sources(&[
            ("DATABASE_URL", "postgres://svc@h/app"),
            ("DATABASE_PASSWORD_FILE", &password_file),
            ("PGPASSWORD", "other"),
        ]),
        Role::Service,
    )
    .unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_PASSWORD_FILE"]);
    assert!(
        problems.to_string().contains("so is PGPASSWORD"),
        "{problems}"
    );
    assert!(!problems.to_string().contains("other"), "{problems}");

    for url in ["postgres://svc:@h/app", "postgres://svc@h/app?password="] {
        let target = DatabaseTarget::from_sources(
            &sources(&[
                ("DATABASE_URL", url),
                ("DATABASE_PASSWORD_FILE", &password_file),
            ]),
            Role::Service,
        );
        assert!(target.is_ok(), "{url}: {:?}", target.err());
    }
    let url = DatabaseUrl::parse("postgres://svc:@h/app").unwrap();
    assert!(url.password().is_none());

    // As libpq reads them: an empty `password=` is an explicit empty password, which keeps
    // PGPASSWORD out; an empty one after `user:` is none, which lets PGPASSWORD in.
    let password = |url: &str| {
        let connector = connector(&[("DATABASE_URL", url), ("PGPASSWORD", "from-env")]).unwrap();
        connector
            .password()
            .unwrap()
            .map(|password| password.expose_secret().to_owned())
    };
    assert_eq!(
        password("postgres://svc@h/app?password=").as_deref(),
        Some("")
    );
    assert_eq!(
        password("postgres://svc:@h/app").as_deref(),
        Some("from-env")
    );
    // A password given, in either place of the URL, wins over PGPASSWORD (as in libpq).
    assert_eq!(
        password("postgres://svc:from-url@h/app").as_deref(),
        Some("from-url")
    );
    assert_eq!(
        password("postgres://svc@h/app?password=from-query").as_deref(),
        Some("from-query")
    );
    // A password in the URL's query beside the password file: libpq would send the URL's.
    let problems = DatabaseTarget::from_sources(
        &sources(&[
            ("DATABASE_URL", "postgres://svc@h/app?password=st4le"),
            ("DATABASE_PASSWORD_FILE", &password_file),
        ]),
        Role::Service,
    )
    .unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_PASSWORD_FILE"]);
    assert!(
        problems.to_string().contains("carries a password too"),
        "{problems}"
    );
    assert!(!problems.to_string().contains("st4le"), "{problems}");
}

#[test]
fn the_owner_has_its_own_variables_and_falls_back_to_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = private_file(dir.path(), "password", "owner-secret");
    let target = DatabaseTarget::from_sources(
        &sources(&[
            ("DATABASE_URL", "postgres://svc:s@h/app"),
            ("DATABASE_OWNER_URL", "postgres://own@h/app"),
            ("DATABASE_OWNER_PASSWORD_FILE", &password_file),
        ]),
        Role::Owner,
    )
    .unwrap();
    assert_eq!(target.url_variable(), "DATABASE_OWNER_URL");
    let target = DatabaseTarget::from_sources(
        &sources(&[("DATABASE_URL", "postgres://svc:s@h/app")]),
        Role::Owner,
    )
    .unwrap();
    assert_eq!(target.url_variable(), "DATABASE_URL");
    let problems = DatabaseTarget::from_sources(
        &sources(&[
            ("DATABASE_URL", "postgres://svc:s@h/app"),
            ("DATABASE_OWNER_PASSWORD_FILE", &password_file),
        ]),
        Role::Owner,
    )
    .unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_OWNER_PASSWORD_FILE"]);
}

#[test]
fn the_examples_placeholder_passwords_are_refused_wherever_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder_file = private_file(dir.path(), "password", "change-me-service\n");
    for (vars, variable) in [
        (
            vec![(
                "DATABASE_URL",
                "postgres://svc:change-me-service@127.0.0.1/app".to_owned(),
            )],
            "DATABASE_URL",
        ),
        (
            vec![(
                "DATABASE_URL",
                "postgres://svc@127.0.0.1/app?password=change-me-x".to_owned(),
            )],
            "DATABASE_URL",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://svc@127.0.0.1/app".to_owned()),
                ("DATABASE_PASSWORD_FILE", placeholder_file.clone()),
            ],
            "DATABASE_PASSWORD_FILE",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://svc@127.0.0.1/app".to_owned()),
                ("PGPASSWORD", "change-me-service".to_owned()),
            ],
            "PGPASSWORD",
        ),
    ] {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let problems = connector(&vars).unwrap_err();
        assert_eq!(variables(&problems), [variable], "{problems}");
        assert!(problems.to_string().contains("placeholder"), "{problems}");
    }
}

/// The password file is read at each connect: a rotation to the example's placeholder is
/// refused there, as at start.
#[test]
fn a_password_file_rotated_to_a_placeholder_is_refused_at_the_next_connect() {
    let dir = tempfile::tempdir().unwrap();
    let file = private_file(dir.path(), "password", "a-real-one\n");
    let c = connector(&[
        ("DATABASE_URL", "postgres://svc@127.0.0.1/app"),
        ("DATABASE_PASSWORD_FILE", &file),
    ])
    .unwrap();
    assert!(c.password().unwrap().is_some());
    std::fs::write(&file, "change-me-service\n").unwrap();
    let Err(crate::ConnectError::PasswordFile(problem)) = c.password() else {
        panic!("a placeholder was taken");
    };
    assert!(problem.contains("placeholder"), "{problem}");
}

/// libpq's default password file, which the service never reads, is named at start where libpq
/// would read it: no password given. The owner's run is told of its own variable.
#[test]
fn libpqs_password_file_is_named_where_libpq_would_read_it() {
    let home = tempfile::tempdir().unwrap();
    let (variable, pgpass) = if cfg!(windows) {
        let dir = home.path().join("postgresql");
        std::fs::create_dir(&dir).unwrap();
        ("APPDATA", dir.join("pgpass.conf"))
    } else {
        ("HOME", home.path().join(".pgpass"))
    };
    std::fs::write(&pgpass, "*:*:*:*:file-secret\n").unwrap();
    let home_text = home.path().to_str().unwrap();
    let said = |role: Role, vars: &[(&str, &str)]| -> Vec<String> {
        let mut vars = vars.to_vec();
        vars.push((variable, home_text));
        let target = DatabaseTarget::from_sources(&sources(&vars), role).unwrap();
        target.warnings().to_vec()
    };
    let url = ("DATABASE_URL", "postgres://u@h/db");
    let warnings = said(Role::Service, &[url]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&pgpass.display().to_string()),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("set DATABASE_PASSWORD_FILE"),
        "{warnings:?}"
    );
    assert!(!warnings[0].contains("file-secret"), "{warnings:?}");
    let owner = said(Role::Owner, &[("DATABASE_OWNER_URL", "postgres://o@h/db")]);
    assert!(
        owner[0].contains("set DATABASE_OWNER_PASSWORD_FILE"),
        "{owner:?}"
    );

    // A password given, in any of libpq's places or ours: no password file is looked for.
    let dir = tempfile::tempdir().unwrap();
    let file = private_file(dir.path(), "password", "pw\n");
    for given in [
        vec![("DATABASE_URL", "postgres://u:pw@h/db")],
        vec![("DATABASE_URL", "postgres://u@h/db?password=pw")],
        vec![url, ("PGPASSWORD", "pw")],
        vec![url, ("DATABASE_PASSWORD_FILE", file.as_str())],
    ] {
        assert_eq!(
            said(Role::Service, &given),
            Vec::<String>::new(),
            "{given:?}"
        );
    }
    // An empty one is none, as in libpq: also where it takes precedence over another.
    assert_eq!(said(Role::Service, &[url, ("PGPASSWORD", "")]).len(), 1);
    let empty_first = ("DATABASE_URL", "postgres://u:pw@h/db?password=");
    assert_eq!(
        said(Role::Service, &[empty_first, ("PGPASSWORD", "pw")]).len(),
        1
    );
    // A relative home is taken as given, relative to the working folder, as libpq takes it (an
    // empty one is the user database's: see `libpq::tests`).
    #[cfg(unix)]
    {
        let here = std::env::current_dir().unwrap();
        let up = "../".repeat(here.components().count() - 1);
        let relative = format!("{up}{}", home_text.trim_start_matches('/'));
        let vars = [url, ("HOME", relative.as_str())];
        let target = DatabaseTarget::from_sources(&sources(&vars), Role::Service).unwrap();
        assert_eq!(target.warnings().len(), 1, "{relative}");
    }
}

/// libpq's default CA file in the service user's home, under sslmode=require: libpq would verify
/// the server with it, the service would not, so it is refused; under prefer it is no matter.
#[test]
fn require_beside_the_users_default_ca_file_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let (variable, dir) = if cfg!(windows) {
        ("APPDATA", home.path().join("postgresql"))
    } else {
        ("HOME", home.path().join(".postgresql"))
    };
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("root.crt"), "").unwrap();
    let home_text = home.path().to_str().unwrap();
    let require = ("DATABASE_URL", "postgres://u:pw@h/db?sslmode=require");
    let problems = connector(&[require, (variable, home_text)]).unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_URL"]);
    assert!(
        problems.to_string().contains("root.crt is there"),
        "{problems}"
    );
    assert!(problems.to_string().contains("sslrootcert"), "{problems}");
    let prefer = ("DATABASE_URL", "postgres://u:pw@h/db?sslmode=prefer");
    assert!(connector(&[prefer, (variable, home_text)]).is_ok());
    assert!(connector(&[require]).is_ok());
    // Whichever setting asks for require is named; a CA file named anywhere settles it.
    let plain = ("DATABASE_URL", "postgres://u:pw@h/db");
    for (setting, value) in [("PGSSLMODE", "require"), ("DATABASE_SSL_MODE", "require")] {
        let problems = connector(&[plain, (setting, value), (variable, home_text)]).unwrap_err();
        assert_eq!(variables(&problems), [setting]);
    }
    #[cfg(unix)] // the public roots' PEM is built for unix tests only
    {
        let roots = std::str::from_utf8(crate::tls::public_roots_pem()).unwrap();
        let ca = private_file(home.path(), "ca.pem", roots);
        for setting in ["PGSSLROOTCERT", "DATABASE_SSL_ROOT_CERT"] {
            let named = connector(&[require, (setting, ca.as_str()), (variable, home_text)]);
            assert!(named.is_ok(), "{setting}: {:?}", named.err());
        }
    }
}

#[test]
fn a_missing_url_names_both_ways_to_give_one() {
    let problems = connector(&[]).unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_URL"]);
    assert!(problems.to_string().contains("DATABASE_URL_FILE"));
}

#[test]
fn host_lists_from_the_url_its_parameters_or_the_environment() {
    let connector_of = |url: &str, environment: &[(&str, &str)]| {
        let mut vars = vec![("DATABASE_URL", url)];
        vars.extend_from_slice(environment);
        connector(&vars)
    };
    // Several hosts need read-write (see `several_hosts_need_read_write`); from the environment
    // here, so that the URLs show the lists alone.
    let rw = ("PGTARGETSESSIONATTRS", "read-write");
    let c = connector_of(
        "postgres://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
        &[],
    )
    .unwrap();
    assert_eq!(c.endpoints(), [endpoint("h1", 5432), endpoint("h2", 5433)]);
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::ReadWrite);
    let c = connector_of("postgres://u:p@/db?host=h1,h2&port=6000,6001", &[rw]).unwrap();
    assert_eq!(c.endpoints(), [endpoint("h1", 6000), endpoint("h2", 6001)]);
    let c = connector_of("postgres://u:p@/db?host=h1,h2&port=6000", &[rw]).unwrap();
    assert_eq!(c.endpoints(), [endpoint("h1", 6000), endpoint("h2", 6000)]);
    let c = connector_of(
        "postgres://u:p@h1,h2/db",
        &[("PGTARGETSESSIONATTRS", "read-write"), ("PGPORT", "7000")],
    )
    .unwrap();
    // As libpq: two hosts make the authority's port list `,`, which PGPORT does not fill.
    assert_eq!(c.endpoints(), [endpoint("h1", 5432), endpoint("h2", 5432)]);
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::ReadWrite);
    // The read-only kinds from the environment too: every binary of ours writes.
    let problems = connector_of(
        "postgres://u:p@h1/db",
        &[("PGTARGETSESSIONATTRS", "standby")],
    );
    assert_eq!(variables(&problems.unwrap_err()), ["PGTARGETSESSIONATTRS"]);
    let c = connector_of("postgres://u:p@h1/db", &[("PGPORT", "7000")]).unwrap();
    assert_eq!(c.endpoints(), [endpoint("h1", 7000)]);
    let c = connector_of("postgres://u:p@/db?host=h1,h2", &[("PGPORT", "7000"), rw]).unwrap();
    assert_eq!(c.endpoints(), [endpoint("h1", 7000), endpoint("h2", 7000)]);
    // The host parameter replaces the authority's hosts, not its ports.
    let c = connector_of("postgres://u:p@h1:5433/db?host=h2", &[("PGPORT", "7000")]).unwrap();
    assert_eq!(c.endpoints(), [endpoint("h2", 5433)]);
    let c = connector_of("postgres://u:p@h1,h2/db?port=6000", &[rw]).unwrap();
    assert_eq!(c.endpoints(), [endpoint("h1", 6000), endpoint("h2", 6000)]);
    let c = connector_of("postgres://u:p@/db", &[("PGHOST", "h9")]).unwrap();
    assert_eq!(c.endpoints(), [endpoint("h9", 5432)]);

    for (url, expected) in [
        (
            "postgres://u:hunter2@/db?host=h1,h2,h3&port=1,2",
            "lists 2 ports for 3 hosts",
        ),
        (
            "postgres://u:hunter2@/db?host=h1,,h3",
            "the 2nd host is empty",
        ),
        (
            "postgres://u:hunter2@/db?host=h1&port=x",
            "the 1st port is not a number",
        ),
        (
            "postgres://u:hunter2@h1/db?target_session_attrs=writable",
            "must be one of any, read-write",
        ),
        (
            "postgres://u:hunter2@h1,h2/db?target_session_attrs=prefer-standby",
            "the service and the migrations write",
        ),
        (
            "postgres://u:hunter2@h1/db?target_session_attrs=read-only",
            "is read-only, which asks for sessions that cannot write",
        ),
        ("postgres://u:hunter2@/db", "host: is not given"),
        (
            "postgres://u:hunter2@h1,h2/db?host=h3",
            "lists 1 hosts, but the URL's host part gives 2 ports",
        ),
    ] {
        let problems = connector_of(url, &[]).unwrap_err();
        assert_eq!(problems.0.len(), 1, "{url}: {problems}");
        assert_eq!(variables(&problems), ["DATABASE_URL"]);
        assert!(problems.to_string().contains(expected), "{problems}");
        assert!(!problems.to_string().contains("hunter2"));
    }
}

#[test]
fn options_pass_server_settings_on_but_not_ours_or_other_switches() {
    let c = connector(&[(
        "DATABASE_URL",
        r"postgres://u:p@h/db?options=--search-path%3Dmy-app%20-c%20work-mem%3D64MB%20-cintervalstyle%3DISO\%2C%5C%20DMY",
    )])
    .unwrap();
    assert_eq!(
        c.settings,
        [
            ("search_path".to_owned(), "my-app".to_owned()),
            ("work_mem".to_owned(), "64MB".to_owned()),
            ("intervalstyle".to_owned(), r"ISO,\ DMY".replace('\\', "")),
            ("statement_timeout".to_owned(), "1000".to_owned()),
        ]
    );
    for (options, expected) in [
        (
            "-c%20statement_timeout%3D0",
            "which DATABASE_STATEMENT_TIMEOUT_MS sets",
        ),
        // The driver's own startup parameters win over options: refused, never ignored.
        (
            "-c%20TimeZone%3DEurope/Berlin",
            "which the driver sets for every session (TimeZone=UTC)",
        ),
        ("-cdatestyle%3DSQL", "(DateStyle=ISO, MDY) after options"),
        (
            "-c%20application_name%3Dx",
            "from the application_name parameter",
        ),
        // The server takes dashes in a name for underscores, in either form.
        (
            "-c%20statement-timeout%3D0",
            "which DATABASE_STATEMENT_TIMEOUT_MS sets",
        ),
        (
            "--statement-timeout%3D0",
            "which DATABASE_STATEMENT_TIMEOUT_MS sets",
        ),
        ("-B%20100", "may only hold server settings"),
        // An escaped tab or line break: the server would split there and read `-P` as a switch.
        ("-c%20search_path%3Da%5C%09-P", "control character"),
        ("-c%20search_path%3Da%5C%0A-P", "control character"),
        ("-c", "ends with -c"),
        ("-c%20work_mem", "has a -c setting without ="),
        ("-c%20%3D64MB", "has a -c setting without a name"),
    ] {
        let url = format!("postgres://u:p@h/db?options={options}");
        let problems = connector(&[("DATABASE_URL", &url)]).unwrap_err();
        assert!(problems.to_string().contains(expected), "{problems}");
    }
}

#[test]
fn connect_timeout_and_names_follow_libpq() {
    let c = connector(&[(
        "DATABASE_URL",
        "postgres://u:p@h/db?connect_timeout=1&fallback_application_name=tool",
    )])
    .unwrap();
    assert_eq!(
        c.connect_timeout,
        Some(Duration::from_secs(2)),
        "at least 2 s"
    );
    assert_eq!(c.application_name(), "tool");
    let c = connector(&[(
        "DATABASE_URL",
        "postgres://u:p@h/db?connect_timeout=0&application_name=mine&fallback_application_name=x",
    )])
    .unwrap();
    assert_eq!(c.connect_timeout, None);
    assert_eq!(c.application_name(), "mine");
    // libpq's build_startup_packet: `appname ? appname : fbappname`, sent only if not empty. An
    // empty name given wins over the fallback, and none is sent (the server's default, "").
    let c = connector(&[(
        "DATABASE_URL",
        "postgres://u:p@h/db?application_name=&fallback_application_name=tool",
    )])
    .unwrap();
    assert_eq!(c.application_name(), "");
    assert_eq!(
        connector(&[("DATABASE_URL", "postgres://u:p@h/db")])
            .unwrap()
            .application_name(),
        "test-app"
    );
    let problems =
        connector(&[("DATABASE_URL", "postgres://u:p@h/db?connect_timeout=soon")]).unwrap_err();
    assert!(
        problems
            .to_string()
            .contains("connect_timeout: must be a whole number")
    );
}

#[test]
fn the_url_wins_over_the_environment_for_every_part() {
    let c = connector(&[
        (
            "DATABASE_URL",
            "postgres://url-user@h/url-db?user=query-user",
        ),
        ("PGUSER", "env-user"),
        ("PGDATABASE", "env-db"),
    ])
    .unwrap();
    assert_eq!(c.user.as_deref(), Some("query-user"));
    assert_eq!(c.database(), Some("url-db"));
    let c = connector(&[
        ("DATABASE_URL", "postgres://h/"),
        ("PGUSER", "env-user"),
        ("PGDATABASE", "env-db"),
    ])
    .unwrap();
    assert_eq!(c.user.as_deref(), Some("env-user"));
    assert_eq!(c.database(), Some("env-db"));
    // The URL's host and port: an exported PGHOST (for psql) must not move the service.
    let c = connector(&[
        ("DATABASE_URL", "postgres://u@url-host:6000/db"),
        ("PGHOST", "env-host"),
        ("PGPORT", "7000"),
    ])
    .unwrap();
    assert_eq!(c.endpoints(), [endpoint("url-host", 6000)]);
}

/// `load_balance_hosts` takes libpq's two values; any other (a typo, another case) is refused,
/// from the URL or the environment, never taken for `disable`.
#[test]
fn a_load_balance_hosts_libpq_does_not_know_is_refused() {
    let hosts = "postgres://u:p@h1,h2/db?target_session_attrs=read-write&connect_timeout=2";
    for (query, environment, variable) in [
        ("&load_balance_hosts=randon", None, "DATABASE_URL"),
        ("&load_balance_hosts=Random", None, "DATABASE_URL"),
        (
            "",
            Some(("PGLOADBALANCEHOSTS", "rand")),
            "PGLOADBALANCEHOSTS",
        ),
    ] {
        let url = format!("{hosts}{query}");
        let mut vars = vec![("DATABASE_URL", url.as_str())];
        vars.extend(environment);
        let problems = connector(&vars).unwrap_err();
        assert_eq!(variables(&problems), [variable], "{problems}");
        assert!(
            problems.to_string().contains("must be disable or random"),
            "{problems}"
        );
    }
    for value in ["disable", "random"] {
        let url = format!("{hosts}&load_balance_hosts={value}");
        assert!(connector(&[("DATABASE_URL", &url)]).is_ok(), "{value}");
    }
}

#[test]
fn tls_problems_and_overrides_are_named_by_their_variable() {
    let problems = connector(&[
        (
            "DATABASE_URL",
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=system",
        ),
        ("DATABASE_SSL_MODE", "prefer"),
    ])
    .unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_SSL_MODE"]);
    let problems = connector(&[
        ("DATABASE_URL", "postgres://u:p@h/db"),
        ("DATABASE_SSL_MODE", "sometimes"),
    ])
    .unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_SSL_MODE"]);
    let problems = connector(&[
        ("DATABASE_URL", "postgres://u:p@h/db"),
        ("PGSSLMODE", "verify-ca"),
    ])
    .unwrap_err();
    assert_eq!(variables(&problems), ["PGSSLMODE"]);
    // Stricter is fine.
    let c = connector(&[
        ("DATABASE_URL", "postgres://u:p@h/db?sslmode=require"),
        ("DATABASE_SSL_MODE", "verify-full"),
        ("DATABASE_SSL_ROOT_CERT", "system"),
    ])
    .unwrap();
    assert_eq!(c.tls().mode(), SslMode::VerifyFull);
}

/// A target keeps libpq's variables, which it reads at every resolve, and no other value of
/// `.env` or the environment: not compose's superuser password, nor the owner's URL.
#[test]
fn a_target_keeps_only_libpq_variables() {
    let sources = Sources::layered(
        [
            (
                "POSTGRES_PASSWORD".to_owned(),
                "superuser-secret".to_owned(),
            ),
            ("PGAPPNAME".to_owned(), "from-dotenv".to_owned()),
        ],
        [
            (
                "DATABASE_URL".to_owned(),
                "postgres://u:p@db/app".to_owned(),
            ),
            (
                "DATABASE_OWNER_URL".to_owned(),
                "postgres://o:owner-secret@db/app".to_owned(),
            ),
            ("PGCONNECT_TIMEOUT".to_owned(), "5".to_owned()),
        ],
    );
    let target = DatabaseTarget::from_sources(&sources, Role::Service).unwrap();
    let kept = format!("{:?}", target.environment);
    assert_eq!(kept, r#"Some({"PGAPPNAME", "PGCONNECT_TIMEOUT"})"#);
    // What is kept still reads as before: PGAPPNAME from `.env` is refused, as libpq ignores it.
    let problems = target.resolve(&session()).unwrap_err();
    assert_eq!(variables(&problems), ["PGAPPNAME"]);
}

/// The TLS files are read and checked again for each connection, as the password file is, and
/// the driver gets what they hold: one made group-writable (or a symlink pointed at another's
/// file) after start is refused for the next connection, naming it, and never read unchecked.
#[cfg(unix)]
#[test]
fn tls_files_are_checked_again_for_each_connection() {
    use std::os::unix::fs::PermissionsExt;
    // Not a secret: a throwaway Ed25519 key, only parsed here.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIHlZqlU32EQwX8Z6SKxRZS1Uhkq2KyjBifYbbksWJDRd\n\
        -----END PRIVATE KEY-----\n";
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, contents: &[u8], mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let roots = crate::tls::public_roots_pem();
    let ca = write("ca.pem", roots, 0o644);
    // Any certificate will do for the driver's options: the first of the roots.
    let certificate = write("client.crt", roots, 0o644);
    let key = write("client.key", KEY.as_bytes(), 0o600);
    let url = format!(
        "postgres://svc@db.internal/app?sslmode=verify-full&sslrootcert={ca}&sslcert={certificate}&sslkey={key}"
    );
    let connector = connector(&[("DATABASE_URL", &url)]).unwrap();
    let options = || connector.options_for(&connector.endpoints()[0]);
    assert!(options().is_ok(), "{:?}", options().err());
    for (file, loose, kept) in [
        (&ca, 0o664, 0o644),
        (&certificate, 0o646, 0o644),
        (&key, 0o644, 0o600),
    ] {
        let set = |mode| {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set(loose);
        let error = options().unwrap_err();
        assert!(
            matches!(error, crate::ConnectError::TlsFile(_)),
            "{error:?}"
        );
        assert!(error.to_string().contains(file.as_str()), "{error}");
        set(kept);
        assert!(options().is_ok(), "{file}: {:?}", options().err());
    }
    // Swapped for something else: read again, so refused too.
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let error = options().unwrap_err().to_string();
    assert!(error.contains("no PEM certificate"), "{error}");
}

/// With several hosts, a writer must ask for read-write: under any (libpq's default) or
/// primary, the first node that answers is kept even when it cannot write, and the pool, whose
/// readiness means writable, would refuse it at every connect without ever trying the next.
/// One host, or read-write, is accepted; the problem names where the setting came from.
#[test]
fn several_hosts_need_read_write() {
    for (url, environment, variable, expected) in [
        (
            "postgres://u:hunter2@h1,h2/db",
            None,
            "DATABASE_URL",
            "is any (libpq's default) with 2 hosts",
        ),
        (
            "postgres://u:hunter2@/db?host=h1,h2,h3&target_session_attrs=any",
            None,
            "DATABASE_URL",
            "is any with 3 hosts",
        ),
        (
            "postgres://u:hunter2@h1,h2/db?target_session_attrs=primary&load_balance_hosts=random",
            None,
            "DATABASE_URL",
            "is primary with 2 hosts",
        ),
        (
            "postgres://u:hunter2@h1,h2/db",
            Some(("PGTARGETSESSIONATTRS", "primary")),
            "PGTARGETSESSIONATTRS",
            "is primary with 2 hosts",
        ),
        // The list from PGHOST: named there, where the URL lists no host.
        (
            "postgres://u:hunter2@/db",
            Some(("PGHOST", "h1,h2")),
            "PGHOST",
            "is any (libpq's default) with 2 hosts",
        ),
    ] {
        let mut vars = vec![("DATABASE_URL", url)];
        vars.extend(environment);
        let problems = connector(&vars).unwrap_err();
        assert_eq!(variables(&problems), [variable], "{url}: {problems}");
        let line = problems.to_string();
        assert!(line.contains(expected), "{line}");
        assert!(
            line.contains("give target_session_attrs=read-write"),
            "{line}"
        );
        assert!(!line.contains("hunter2"), "{line}");
    }
    // A value that is none of libpq's is said once, as such.
    let url = "postgres://u:p@h1,h2/db?target_session_attrs=bogus&connect_timeout=2";
    let problems = connector(&[("DATABASE_URL", url)]).unwrap_err().to_string();
    assert_eq!(problems.lines().count(), 1, "{problems}");
    assert!(!problems.contains("with 2 hosts"), "{problems}");
    for url in [
        "postgres://u:p@h1/db",
        "postgres://u:p@h1/db?target_session_attrs=primary",
        "postgres://u:p@h1,h2/db?target_session_attrs=read-write&load_balance_hosts=random",
    ] {
        let accepted = connector(&[("DATABASE_URL", url)]);
        assert!(accepted.is_ok(), "{url}: {:?}", accepted.err());
    }
    // Only what reads its settings from the environment writes: a URL alone (the test kit's,
    // a test's own connector) may list hosts under any.
    let url = crate::DatabaseUrl::parse("postgres://u:p@h1,h2/db").unwrap();
    assert!(DatabaseTarget::from_url(url).resolve(&session()).is_ok());
}

/// An exported `DATABASE_URL` beside `.env`'s `DATABASE_OWNER_URL` (as `just dev` writes it):
/// whoever exported it meant that database, and the migrations would have run on `.env`'s.
#[test]
fn the_owners_url_from_dotenv_beside_an_exported_service_url_is_refused() {
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let owned = pairs.iter().map(|&(n, v)| (n.to_owned(), v.to_owned()));
        owned.collect()
    };
    let file = owned(&[
        ("DATABASE_URL", "postgres://svc:s@local/app"),
        ("DATABASE_OWNER_URL", "postgres://own:s@local/app"),
    ]);
    let exported = owned(&[("DATABASE_URL", "postgres://svc:s@staging/app")]);
    let sources = Sources::layered(file.clone(), exported);
    let problems = DatabaseTarget::from_sources(&sources, Role::Owner).unwrap_err();
    assert_eq!(variables(&problems), ["DATABASE_OWNER_URL"]);
    let said = problems.to_string();
    assert!(said.contains("while DATABASE_URL is exported"), "{said}");
    assert!(
        !said.contains("staging") && !said.contains("local"),
        "{said}"
    );
    // The service reads its own; both exported, or both from .env, are what they say.
    assert!(DatabaseTarget::from_sources(&sources, Role::Service).is_ok());
    let both = owned(&[
        ("DATABASE_URL", "postgres://svc:s@staging/app"),
        ("DATABASE_OWNER_URL", "postgres://own:s@staging/app"),
    ]);
    let sources = Sources::layered(file.clone(), both);
    let target = DatabaseTarget::from_sources(&sources, Role::Owner).unwrap();
    assert_eq!(target.url_variable(), "DATABASE_OWNER_URL");
    let sources = Sources::layered(file.clone(), []);
    assert!(DatabaseTarget::from_sources(&sources, Role::Owner).is_ok());
    // Exported empty is unset, as everywhere (an unset `${VAR:-}` in a compose file).
    let sources = Sources::layered(file, owned(&[("DATABASE_URL_FILE", "")]));
    assert!(DatabaseTarget::from_sources(&sources, Role::Owner).is_ok());
}

/// A secret put in a `*_FILE` variable by mistake is not repeated in the exit-2 lines, which
/// are logged.
#[test]
fn a_secret_set_where_its_file_belongs_is_not_echoed() {
    let cases: [&[(&str, &str)]; 2] = [
        &[("DATABASE_URL_FILE", "postgres://app:hunter2@db/app")],
        &[
            ("DATABASE_URL", "postgres://app@db/app"),
            ("DATABASE_PASSWORD_FILE", "hunter2"),
        ],
    ];
    for vars in cases {
        let problems = connector(vars).unwrap_err();
        assert_eq!(variables(&problems).len(), 1, "{problems}");
        assert!(variables(&problems)[0].ends_with("_FILE"), "{problems}");
        assert!(!problems.to_string().contains("hunter2"), "{problems}");
    }
}

/// A `.env` that group or others may read, holding passwords (a URL's, a password setting's),
/// is warned of as a secret file would be, naming them and never their values; not when it is
/// private or holds none. The URL in use need not be one of them (compose's superuser password
/// sits beside it).
#[cfg(unix)]
#[test]
fn passwords_in_a_dot_env_others_may_read_are_warned_of() {
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let said = |text: &str, mode: u32, exported: &[(&str, &str)]| -> Vec<String> {
        let path = dir.path().join(".env");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        // A home of its own: the developer's `~/.pgpass` would add its own warning.
        let home = [("HOME", "/nonexistent/home")];
        let environment = (home.iter().chain(exported))
            .map(|(name, value)| (OsString::from(name), OsString::from(value)));
        let sources = Sources::load_with(dir.path(), environment.collect::<Vec<_>>().into_iter());
        let target = DatabaseTarget::from_sources(&sources.unwrap(), Role::Service).unwrap();
        target.warnings().to_vec()
    };
    let with_password = "DATABASE_URL=postgres://u:s3cret@h/db\nPOSTGRES_PASSWORD=hunter2\n";
    let warnings = said(with_password, 0o644, &[]);
    assert_eq!(
        warnings,
        [
            ".env may be read by group or others (mode 0644) and holds passwords (DATABASE_URL, \
          POSTGRES_PASSWORD); chmod 600 .env keeps them to this user"
        ]
    );
    assert_eq!(said(with_password, 0o640, &[]).len(), 1);
    let in_query = "DATABASE_URL=postgres://u@h/db?password=s3cret\n";
    assert_eq!(said(in_query, 0o604, &[]).len(), 1);
    assert!(said(with_password, 0o600, &[]).is_empty());
    let none = "DATABASE_URL=postgres://u:@h/db\nPOSTGRES_PASSWORD=\nAPP_PORT=8080\n";
    assert!(said(none, 0o644, &[]).is_empty());
    // The URL in use exported: .env's passwords are as open as before.
    let exported = [("DATABASE_URL", "postgres://u:other@h/db")];
    let warnings = said(with_password, 0o644, &exported);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(!warnings[0].contains("s3cret") && !warnings[0].contains("hunter2"));
}

/// A socket folder other users may write (as /tmp) is warned of: any of them could bind the
/// socket first and be sent the password. Not a folder only ours may write, nor TCP.
#[cfg(unix)]
#[test]
fn a_socket_folder_others_may_write_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    let warnings = |url: &str| {
        let target =
            DatabaseTarget::from_sources(&sources(&[("DATABASE_URL", url)]), Role::Service);
        target.unwrap().warnings().to_vec()
    };
    let in_query = format!("postgres://u:pw@/db?host={folder}");
    let in_authority = format!("postgres://u:pw@{}:5433/db", folder.replace('/', "%2F"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    for url in [&in_query, &in_authority] {
        let said = warnings(url);
        assert_eq!(said.len(), 1, "{url}: {said:?}");
        assert!(
            said[0].starts_with(&format!(
                "DATABASE_URL: the socket folder {folder} may be written by other users (mode 1777)"
            )),
            "{said:?}"
        );
        assert!(!said[0].contains("pw@"), "{said:?}");
    }
    // The one folder twice, even apart: said once.
    let twice = format!("postgres://u:pw@/db?host={folder},h,{folder}&port=5432,5433,5434");
    assert_eq!(warnings(&twice).len(), 1);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(warnings(&in_query).is_empty());
    assert!(warnings("postgres://u:pw@127.0.0.1/db").is_empty());
}
