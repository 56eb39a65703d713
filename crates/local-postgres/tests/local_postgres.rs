//! `local-postgres` (the cluster behind `just dev`) as an attacker on the same machine would
//! inspect it, and as the service and the migrations use it.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use counseling_config::Sources;
use counseling_local_postgres::{LocalCluster, Logins};
use counseling_provision::files::ServerUser;
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::{Connection, PgConnection};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn connect(url: &str) -> Result<PgConnection, sea_orm::sqlx::Error> {
    PgConnection::connect_with(&PgConnectOptions::from_str(url).unwrap()).await
}

#[tokio::test]
async fn the_local_cluster_trusts_nobody_and_serves_the_two_roles_of_the_urls() {
    let checkout = tempfile::tempdir().unwrap();
    let port = counseling_provision::server::free_port().unwrap();
    // Reserved characters, percent-encoded: the roles get the decoded passwords.
    let service = format!("postgres://app_svc:s%40r%3Av%2F%20x@127.0.0.1:{port}/appdb");
    let owner = format!("postgres://app_own:o%23w%3Fn%25@127.0.0.1:{port}/appdb");
    let sources = Sources::from_vars([
        ("DATABASE_URL", service.as_str()),
        ("DATABASE_OWNER_URL", owner.as_str()),
    ]);
    let cluster = Stopped(LocalCluster::of_checkout(checkout.path()).unwrap());
    let cluster = &cluster.0;
    let root = cluster.root().to_path_buf();
    {
        cluster
            .start(&Logins::read(&sources).unwrap())
            .await
            .unwrap();

        // Ours; as root, the postgres user may pass through it to its data, nothing more.
        let is_root = nix::unistd::Uid::effective().is_root();
        assert_eq!(mode(&root), if is_root { 0o710 } else { 0o700 });
        assert_eq!(mode(&root.join("data")), 0o700);
        assert_eq!(mode(&root.join("superuser-password")), 0o600);
        let password = std::fs::read_to_string(root.join("superuser-password")).unwrap();
        let mut admin = PgConnection::connect_with(
            &PgConnectOptions::new_without_pgpass()
                .host("127.0.0.1")
                .port(port)
                .username("postgres")
                .password(password.trim())
                .database("appdb"),
        )
        .await
        .unwrap();
        let rules: Vec<(String, String)> =
            sea_orm::sqlx::query_as("SELECT type, auth_method FROM pg_hba_file_rules")
                .fetch_all(&mut admin)
                .await
                .unwrap();
        assert_eq!(rules, [("host".to_owned(), "scram-sha-256".to_owned())]);
        let sockets: String = sea_orm::sqlx::query_scalar("SHOW unix_socket_directories")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(sockets, "");
        for role in ["app_svc", "app_own"] {
            let powers = counseling_testkit::fixtures::powers_beyond_login(&mut admin, role);
            assert_eq!(powers.await.unwrap(), Vec::<&str>::new(), "{role}");
        }
        let extension: i64 = sea_orm::sqlx::query_scalar(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(extension, 1);

        // The owner changes the schema; the service only uses rows.
        let mut as_owner = connect(&owner).await.unwrap();
        sea_orm::sqlx::query("CREATE TABLE notes (id int)")
            .execute(&mut as_owner)
            .await
            .unwrap();
        let mut as_service = connect(&service).await.unwrap();
        sea_orm::sqlx::query("INSERT INTO notes VALUES (1)")
            .execute(&mut as_service)
            .await
            .unwrap();
        for ddl in ["CREATE TABLE sneaky (id int)", "DROP TABLE notes"] {
            let error = sea_orm::sqlx::query(ddl)
                .execute(&mut as_service)
                .await
                .unwrap_err();
            let code = error.as_database_error().and_then(|e| e.code()).unwrap();
            assert_eq!(code, "42501", "{ddl}");
        }

        // Started again with another password: the role follows the URL.
        let changed = format!("postgres://app_svc:fresh@127.0.0.1:{port}/appdb");
        let sources = Sources::from_vars([
            ("DATABASE_URL", changed.as_str()),
            ("DATABASE_OWNER_URL", owner.as_str()),
        ]);
        let report = cluster
            .start(&Logins::read(&sources).unwrap())
            .await
            .unwrap();
        assert!(report.contains("already running"), "{report}");
        connect(&changed).await.unwrap();
        assert!(connect(&service).await.is_err());
    }
}

/// A folder laid out as `start` makes the cluster's (the root ours, `data/` the server user's,
/// both private, a `PG_VERSION`), whose `postmaster.pid` names a live process working in
/// `data/`; then changed by `deviate`. Removed, and its process killed, when dropped.
struct LookAlike {
    _checkout: tempfile::TempDir,
    cluster: LocalCluster,
    process: std::process::Child,
}

impl LookAlike {
    fn new(deviate: Deviation) -> Self {
        let checkout = tempfile::tempdir().unwrap();
        let cluster = LocalCluster::of_checkout(checkout.path()).unwrap();
        let user = ServerUser::of_this_process().unwrap();
        let data = cluster.root().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let root_mode = if user.is_another() { 0o710 } else { 0o700 };
        chmod(cluster.root(), root_mode);
        chmod(&data, 0o700);
        chown(&data, user.uid());
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        let process = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&data)
            .spawn()
            .unwrap();
        std::fs::write(data.join("postmaster.pid"), format!("{}\n", process.id())).unwrap();
        deviate(cluster.root());
        Self {
            _checkout: checkout,
            cluster,
            process,
        }
    }

    /// Whether the process `postmaster.pid` names is still alive (`stop` waits for the server
    /// it signals to exit).
    fn alive(&mut self) -> bool {
        self.process.try_wait().unwrap().is_none()
    }
}

impl Drop for LookAlike {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(self.cluster.root());
        let _ = std::fs::remove_dir_all(self.cluster.root().with_extension("real"));
    }
}

/// One change to a look-alike, given its root.
type Deviation = fn(&Path);

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

/// The root moved away and a symlink to it in its place.
fn symlinked(root: &Path) {
    let elsewhere = root.with_extension("real");
    std::fs::rename(root, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root).unwrap();
}

/// Start and stop trust only folders laid out as this tool makes them: any one difference (a
/// mode, an owner, a symlink) and start runs nothing in it and stop signals nothing.
#[tokio::test]
async fn start_and_stop_trust_no_folder_they_did_not_make() {
    // The control: a folder exactly as start makes it is stopped.
    let mut faithful = LookAlike::new(|_| {});
    assert_eq!(
        faithful.cluster.stop().map_err(|e| e.to_string()),
        Ok("stopped")
    );
    assert!(!faithful.alive());

    let mut deviations: Vec<(&str, Deviation)> = vec![
        ("root mode 0755", |root| chmod(root, 0o755)),
        ("data mode 0750", |root| chmod(&root.join("data"), 0o750)),
        ("root a symlink to a folder as start makes it", symlinked),
    ];
    // Owners only root can give away.
    if nix::unistd::Uid::effective().is_root() {
        deviations.push(("root owned by nobody", |root| chown(root, 65534)));
        deviations.push(("data owned by nobody", |root| {
            chown(&root.join("data"), 65534)
        }));
    }
    let url = "postgres://app:pw@127.0.0.1:1/appdb";
    let sources = Sources::from_vars([("DATABASE_URL", url)]);
    for (deviation, deviate) in deviations {
        let mut look_alike = LookAlike::new(deviate);
        let stopped = look_alike.cluster.stop().map_err(|error| error.to_string());
        // Refused; or, through a symlink, not even found running: the process works in the
        // folder the link points to, not in the one stop was given.
        let expected: &[&str] = match deviation.contains("symlink") {
            true => &["not running"],
            false => &[],
        };
        assert!(
            stopped
                .as_ref()
                .map_or(true, |said| expected.contains(said)),
            "{deviation}: {stopped:?}"
        );
        assert!(
            look_alike.alive(),
            "{deviation}: the process named in the folder was signalled"
        );

        let look_alike = LookAlike::new(deviate);
        let started = look_alike
            .cluster
            .start(&Logins::read(&sources).unwrap())
            .await
            .unwrap_err();
        assert!(
            started
                .to_string()
                .contains("is not a private folder as this tool makes them"),
            "{deviation}: {started}"
        );
    }
}

/// Stops the cluster and deletes its folder when the test ends, passed or not.
struct Stopped(LocalCluster);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.stop();
        let _ = std::fs::remove_dir_all(self.0.root());
    }
}
