//! `local-postgres answers`, `just dev`'s first probe: `DATABASE_URL` is checked and reached
//! exactly as the service reaches it (`counseling_config::DatabaseTarget`: TLS rules, the
//! `DATABASE_SSL_*` overrides, `DATABASE_URL_FILE`/`DATABASE_PASSWORD_FILE`, host lists, every
//! libpq parameter honoured or refused). A configuration problem is exit 2 with one line naming
//! the variable, never taken for "no database answers" (exit 1), which would send `just dev` on
//! to start another database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use counseling_config::DatabaseUrl;
use counseling_provision::files::write_private;
use counseling_provision::url::local_url;
use counseling_testkit::TestDatabase;
use secrecy::ExposeSecret;

/// Runs `local-postgres answers` in `dir` with exactly `vars`: its exit code and its stderr.
fn answers(dir: &Path, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_local-postgres"))
        .arg("answers")
        .current_dir(dir)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// Exit 2 and exactly one line, naming `variable`.
#[track_caller]
fn refused(dir: &Path, vars: &[(&str, &str)], variable: &str) {
    let (code, stderr) = answers(dir, vars);
    assert_eq!(code, Some(2), "{vars:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(variable), "{stderr}");
}

/// `url` (a test kit URL, on 127.0.0.1) without its password.
fn without_password(url: &DatabaseUrl) -> String {
    let database = url.database().unwrap();
    let bare = local_url(url.port(), url.username(), None, database, &[]).unwrap();
    bare.expose_secret().to_owned()
}

#[tokio::test]
async fn a_database_that_accepts_the_login_answers_and_a_closed_port_does_not() {
    let db = TestDatabase::migrated().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = answers(dir.path(), &[("DATABASE_URL", &db.url())]);
    assert_eq!(code, Some(0), "{stderr}");
    // Nothing listens on port 1: no database answers, which is no configuration problem.
    let (code, stderr) = answers(
        dir.path(),
        &[("DATABASE_URL", "postgres://someone:pw@127.0.0.1:1/db")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("pw@"), "{stderr}");
}

#[tokio::test]
async fn a_configuration_problem_is_exit_2_not_a_database_that_does_not_answer() {
    let db = TestDatabase::migrated().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // verify-full with no CA to verify against: libpq refuses it, so does the service.
    let verify_full = db.url_with(&[("sslmode", "verify-full")]);
    refused(dir, &[("DATABASE_URL", &verify_full)], "DATABASE_URL");
    // A parameter the driver cannot honour, and one libpq does not know.
    let crl = db.url_with(&[("sslcrl", "/etc/counseling/crl.pem")]);
    refused(dir, &[("DATABASE_URL", &crl)], "sslcrl");
    let typo = db.url_with(&[("sslmod", "require")]);
    refused(dir, &[("DATABASE_URL", &typo)], "sslmod");
    // An override weaker than the URL.
    let require = db.url_with(&[("sslmode", "require")]);
    refused(
        dir,
        &[("DATABASE_URL", &require), ("DATABASE_SSL_MODE", "disable")],
        "DATABASE_SSL_MODE",
    );
    // A password in the URL and a password file too.
    let file = dir.join("password");
    write_private(&file, "secret").unwrap();
    refused(
        dir,
        &[
            ("DATABASE_URL", &db.url()),
            ("DATABASE_PASSWORD_FILE", file.to_str().unwrap()),
        ],
        "DATABASE_PASSWORD_FILE",
    );
    // The example's placeholder password.
    refused(
        dir,
        &[(
            "DATABASE_URL",
            "postgres://counseling:change-me-service@127.0.0.1:5432/counseling_platform",
        )],
        "DATABASE_URL",
    );
    // Nothing configured at all.
    refused(dir, &[], "DATABASE_URL");
    // Not even a URL.
    refused(dir, &[("DATABASE_URL", "mysql://u:p@h/db")], "DATABASE_URL");
}

#[tokio::test]
async fn the_password_file_and_the_url_file_are_read() {
    let db = TestDatabase::migrated().await.unwrap();
    let url = DatabaseUrl::parse(&db.url()).unwrap();
    let password = url.password().unwrap().expose_secret().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
    write_private(&right, &format!("{password}\n")).unwrap();
    write_private(&wrong, "not-the-password").unwrap();
    let bare = without_password(&url);
    for (file, expected) in [(&right, 0), (&wrong, 1)] {
        let vars = [
            ("DATABASE_URL", bare.as_str()),
            ("DATABASE_PASSWORD_FILE", file.to_str().unwrap()),
        ];
        let (code, stderr) = answers(dir.path(), &vars);
        assert_eq!(code, Some(expected), "{}: {stderr}", file.display());
    }
    // The refusal in PostgreSQL's words, not the driver's wrapper around them.
    let vars = [
        ("DATABASE_URL", bare.as_str()),
        ("DATABASE_PASSWORD_FILE", wrong.to_str().unwrap()),
    ];
    let (_, stderr) = answers(dir.path(), &vars);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("error returned from database"), "{stderr}");
    assert!(!stderr.contains(" at line "), "{stderr}");
    let url_file = dir.path().join("url");
    write_private(&url_file, &db.url()).unwrap();
    let vars = [("DATABASE_URL_FILE", url_file.to_str().unwrap())];
    let (code, stderr) = answers(dir.path(), &vars);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn tls_overrides_and_host_lists_are_honoured() {
    let db = TestDatabase::migrated().await.unwrap();
    let url = DatabaseUrl::parse(&db.url()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The test server speaks no TLS: asked for TLS, it does not answer as required.
    let vars = [
        ("DATABASE_URL", db.url()),
        ("DATABASE_SSL_MODE", "require".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (code, stderr) = answers(dir.path(), &vars);
    assert_eq!(code, Some(1), "{stderr}");
    // The same through the URL's own sslmode.
    let require = db.url_with(&[("sslmode", "require")]);
    let (code, stderr) = answers(dir.path(), &[("DATABASE_URL", &require)]);
    assert_eq!(code, Some(1), "{stderr}");
    // A host list whose first host is closed: the second one answers. Several hosts need
    // read-write (the service writes): without it, refused as the service would refuse it.
    let listed = url
        .with_hosts(&[("127.0.0.1", 1), ("127.0.0.1", url.port())])
        .unwrap();
    let listed = listed.expose_secret();
    let separator = if listed.contains('?') { '&' } else { '?' };
    let read_write = format!("{listed}{separator}target_session_attrs=read-write");
    let (code, stderr) = answers(dir.path(), &[("DATABASE_URL", &read_write)]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = answers(dir.path(), &[("DATABASE_URL", listed)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("target_session_attrs"), "{stderr}");
}

/// A program run as `uid`, listening on 127.0.0.1:`port` (perl-base is essential on Debian;
/// python3 may live in a home other users cannot enter). It says whether anything connected.
#[cfg(unix)]
struct Listener {
    process: std::process::Child,
    said: std::io::BufReader<std::process::ChildStdout>,
}

#[cfg(unix)]
impl Listener {
    fn run_as(uid: u32, port: u16) -> Self {
        let script = format!(
            "use IO::Socket::INET; $| = 1;\n\
             my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => {port}, \
             Listen => 1) or die \"listen: $!\";\n\
             print \"listening\\n\";\n\
             my $c = $s->accept; print \"connected\\n\" if $c; close $c; sleep 5;\n"
        );
        let mut process = Command::new("setpriv")
            .args([&format!("--reuid={uid}"), "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/perl", "-e", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = std::io::BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut said, &mut line).unwrap();
        assert_eq!(line, "listening\n");
        Self { process, said }
    }

    /// Whether anything connected, once the caller is done with it.
    fn was_connected(mut self) -> bool {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.said, &mut rest);
        rest == "connected\n"
    }
}

/// Whether this test can become another user and tell users apart: Linux, root, outside a
/// user namespace (inside one, users outside it look alike, and the probe does not ask).
#[cfg(unix)]
fn can_tell_users_apart() -> bool {
    let identity = counseling_provision::server::sees_every_user();
    let able = cfg!(target_os = "linux") && nix::unistd::Uid::effective().is_root() && identity;
    if !able {
        eprintln!("skipped: needs Linux and root, outside a user namespace");
    }
    able
}

/// What the local cluster cannot serve (a role without a password, another machine) stops
/// `local-postgres start` as a configuration problem, exit 2 naming the variable, before any
/// folder is made.
#[cfg(unix)]
#[test]
fn start_refuses_logins_the_local_cluster_cannot_serve_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (url, said) in [
        (
            "postgres://app@127.0.0.1:5432/db",
            "DATABASE_URL gives no password",
        ),
        (
            "postgres://app:pw@db.example:5432/db",
            "DATABASE_URL names another machine",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_local-postgres"))
            .arg("start")
            .current_dir(dir.path())
            .env_clear()
            .env("HOME", dir.path())
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(said), "{stderr}");
    }
    let cluster = counseling_local_postgres::LocalCluster::of_checkout(dir.path()).unwrap();
    assert!(!cluster.root().exists(), "{:?}", cluster.root());
}

/// Docker and Kubernetes mount secrets owned by root (who may write anything anyway): a binary
/// that runs as its own user, as the image's does, takes a password file root owns, in folders
/// root owns.
#[cfg(unix)]
#[tokio::test]
async fn a_user_other_than_root_takes_a_password_file_root_owns() {
    use std::os::unix::fs::PermissionsExt;
    if !can_tell_users_apart() {
        return;
    }
    let db = TestDatabase::migrated().await.unwrap();
    let url = DatabaseUrl::parse(&db.url()).unwrap();
    let password = url.password().unwrap().expose_secret().to_owned();
    // Everything `nobody` needs, in a folder it may enter (a CI clone's may be root's alone).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("local-postgres");
    std::fs::copy(env!("CARGO_BIN_EXE_local-postgres"), &binary).unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .arg("answers")
        .current_dir(dir.path())
        .env_clear()
        .env("HOME", "/nonexistent")
        .env("DATABASE_URL", without_password(&url))
        .env("DATABASE_PASSWORD_FILE", &file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

/// Another user of the machine holds the port `DATABASE_URL` names (here `nobody`, listening
/// before our database starts): `answers` does not connect, and so never hands it the password
/// (libpq's default `sslmode=prefer` lets any server ask for it in cleartext).
#[cfg(unix)]
#[test]
fn a_port_another_user_holds_is_never_sent_the_password() {
    if !can_tell_users_apart() {
        return;
    }
    let port = counseling_provision::server::free_port().unwrap();
    let intruder = Listener::run_as(65534, port);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://counseling:s3cret-pw@127.0.0.1:{port}/x");
    let (code, stderr) = answers(dir.path(), &[("DATABASE_URL", &url)]);
    // `just dev` stops there too: no docker, no cluster in the intruder's place.
    let provided = Command::new(env!("CARGO_BIN_EXE_local-postgres"))
        .arg("provide")
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("PATH", std::env::var_os("PATH").unwrap())
        .output()
        .unwrap();
    let connected = intruder.was_connected();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("is held by a program of another user (uid 65534)"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&provided.stdout),
        String::from_utf8_lossy(&provided.stderr)
    );
    assert_eq!(provided.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is held by a program of another user"),
        "{said}"
    );
    assert!(
        !said.contains("docker") && !said.contains("project-local"),
        "{said}"
    );
    assert!(!connected, "a probe connected to the intruder");
}

/// Where the owner cannot matter, the probe still goes: a system account's server (uid below
/// 1000, as `postgres` or a container's server runs), and any server when `DATABASE_URL` makes
/// it prove itself with a certificate (`verify-full`: the password follows only a proof). Were
/// these refused, `just dev` would start a second database beside a working one.
#[cfg(unix)]
#[test]
fn a_system_accounts_port_and_a_verified_server_are_probed() {
    if !can_tell_users_apart() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    let port = counseling_provision::server::free_port().unwrap();
    let system_server = Listener::run_as(1, port);
    let url = format!("postgres://counseling:pw@127.0.0.1:{port}/x");
    let (code, stderr) = answers(dir.path(), &[("DATABASE_URL", &url)]);
    assert!(system_server.was_connected(), "{stderr}");
    // It speaks no PostgreSQL, so it does not answer; but nobody called it a stranger.
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("held"), "{stderr}");

    let port = counseling_provision::server::free_port().unwrap();
    let stranger = Listener::run_as(65534, port);
    let authority = counseling_testkit::tls::CertificateAuthority::new("probe test CA").unwrap();
    let root_cert = dir.path().join("root.crt");
    write_private(&root_cert, authority.certificate_pem()).unwrap();
    let url = format!(
        "postgres://counseling:pw@localhost:{port}/x?sslmode=verify-full&sslrootcert={}",
        root_cert.display()
    );
    let (code, stderr) = answers(dir.path(), &[("DATABASE_URL", &url)]);
    assert!(stranger.was_connected(), "{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("held"), "{stderr}");
}
