//! The project-local PostgreSQL behind `just dev` (`local-postgres start|stop`): the same rules as
//! the test kit's clusters, but kept between runs.
//!
//! * Data in `.data/postgres-cluster` (as root: `/var/tmp/counseling-platform-<hash of the
//!   checkout>`, which the `postgres` user can enter), created 0700 and checked at every start.
//! * No trust: SCRAM over TCP on 127.0.0.1 only, no unix socket. The superuser's password is
//!   random and kept in a 0600 file beside the data; nothing else needs it.
//! * The roles and database come from `DATABASE_URL` (the service's role: rows only) and
//!   `DATABASE_OWNER_URL` (the owner, which runs migrations), read through `counseling-config`
//!   like every binary of ours; their passwords are set (again) at every start.
//! * `pg_stat_statements` is preloaded and created in the database.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use counseling_config::{DatabaseUrl, Sources};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::{AssertSqlSafe, Connection, PgConnection};
use secrecy::ExposeSecret;

use super::binaries::binaries_from_environment;
use super::cluster::{as_owner, server_user};
use crate::platform::random_password;
use crate::tls::write_private;
use crate::{Result, TestkitError};

const SUPERUSER: &str = "postgres";

/// The project-local cluster of the checkout in the working directory.
#[derive(Debug)]
pub struct LocalCluster {
    bin_dir: PathBuf,
    /// Holds `data/`, `superuser-password` and `server.log`.
    root: PathBuf,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
}

/// The two URLs a local cluster serves: the service's and the owner's.
#[derive(Debug)]
struct Roles {
    service: DatabaseUrl,
    owner: DatabaseUrl,
}

impl LocalCluster {
    /// The cluster of the checkout at `checkout` (not created yet).
    pub fn of_checkout(checkout: &Path) -> Result<Self> {
        let owner = server_user()?;
        let root = match owner {
            // postgres cannot enter root-only folders such as /root or a `mktemp -d` clone.
            Some(_) => PathBuf::from(format!(
                "/var/tmp/counseling-platform-{}",
                checkout_hash(checkout)
            )),
            None => checkout.join(".data").join("postgres-cluster"),
        };
        Ok(Self {
            bin_dir: binaries_from_environment()?,
            root,
            owner,
        })
    }

    /// The folder holding the data, the superuser's password file and the server's log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Creates the cluster on first use, starts it, and makes the roles and database that
    /// `sources` name exist with the passwords they give.
    pub async fn start(&self, sources: &Sources) -> Result<String> {
        let roles = roles(sources)?;
        let port = roles.service.port();
        if !self.data().join("PG_VERSION").is_file() {
            self.init()?;
        }
        self.check_folder()?;
        let mut report = String::new();
        if self.running() {
            report.push_str(&format!("already running on 127.0.0.1:{port}\n"));
        } else {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Err(TestkitError::Server(format!(
                    "port {port} is in use by another program: stop it, or give DATABASE_URL \
                     another port"
                )));
            }
            self.pg_ctl(&[
                "start",
                "-w",
                "-t",
                "30",
                "-l",
                &self.root.join("server.log").to_string_lossy(),
                "-o",
                &format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
                     -c shared_preload_libraries=pg_stat_statements"
                ),
            ])?;
            report.push_str(&format!(
                "started on 127.0.0.1:{port} (log: {})\n",
                self.root.join("server.log").display()
            ));
        }
        self.provision(&roles).await?;
        Ok(report)
    }

    /// Stops the cluster if it runs.
    pub fn stop(&self) -> Result<&'static str> {
        if !self.running() {
            return Ok("not running");
        }
        self.pg_ctl(&["stop", "-m", "fast", "-w"])?;
        Ok("stopped")
    }

    fn running(&self) -> bool {
        self.data().join("PG_VERSION").is_file()
            && self
                .command("pg_ctl")
                .args(["status", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
    }

    /// A folder found in place must be the one we made: a real directory (not a symlink), mode
    /// 0700, owned by the server's user. Anything else may be someone else's trap.
    fn check_folder(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let expected_uid = self.owner.map_or_else(
            || nix::unistd::Uid::effective().as_raw(),
            |(uid, _)| uid.as_raw(),
        );
        for folder in [self.root.clone(), self.data()] {
            let metadata = fs::symlink_metadata(&folder)
                .map_err(TestkitError::io(format!("inspecting {}", folder.display())))?;
            if !metadata.is_dir()
                || metadata.mode() & 0o777 != 0o700
                || metadata.uid() != expected_uid
            {
                return Err(TestkitError::Server(format!(
                    "{} is not a private folder of the server's user (a symlink, another owner \
                     or another mode): remove it and start again",
                    folder.display()
                )));
            }
        }
        Ok(())
    }

    fn init(&self) -> Result<()> {
        // Exclusive, 0700; a leftover or foreign folder is an error, not something to reuse.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.root.parent().unwrap_or(Path::new("/")))
            .map_err(TestkitError::io("creating the cluster's parent folder"))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.root)
            .map_err(TestkitError::io(format!(
                "creating {} (remove it if it is a leftover)",
                self.root.display()
            )))?;
        let password = random_password();
        write_private(&self.root.join("superuser-password"), &password)?;
        // initdb reads the password from a file the server's user can read, deleted at once.
        let pwfile = self.root.join("initdb-password");
        write_private(&pwfile, &password)?;
        if let Some((uid, gid)) = self.owner {
            for path in [&self.root, &pwfile] {
                std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                    .map_err(TestkitError::io("handing the cluster folder to postgres"))?;
            }
        }
        let output = self
            .command("initdb")
            .arg("--pgdata")
            .arg(self.data())
            .args([
                "--username",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            .args(["--auth=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(TestkitError::io("running initdb"));
        let _ = fs::remove_file(&pwfile);
        let output = output?;
        if !output.status.success() {
            return Err(TestkitError::Server(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        fs::write(
            self.data().join("pg_hba.conf"),
            "host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .map_err(TestkitError::io("writing pg_hba.conf"))
    }

    /// Roles, database, grants and extension, idempotently; passwords travel in statements over
    /// the connection, never on a command line.
    async fn provision(&self, roles: &Roles) -> Result<()> {
        let password = fs::read_to_string(self.root.join("superuser-password"))
            .map_err(TestkitError::io("reading the superuser's password"))?;
        let admin_options = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(roles.service.port())
            .username(SUPERUSER)
            .password(password.trim())
            .database("postgres");
        let mut admin = PgConnection::connect_with(&admin_options)
            .await
            .map_err(TestkitError::db("connecting as the superuser"))?;
        // The statements below carry passwords: keep them out of pg_stat_statements and the log.
        for setting in [
            "SET pg_stat_statements.track_utility = off",
            "SET log_statement = 'none'",
            "SET log_min_error_statement = panic",
        ] {
            execute(&mut admin, setting).await?;
        }
        let database = roles.service.database().unwrap_or("postgres").to_owned();
        let (owner, service) = (roles.owner.username(), roles.service.username());
        for (role, url) in [(owner, &roles.owner), (service, &roles.service)] {
            let exists: bool = sea_orm::sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            )
            .bind(role)
            .fetch_one(&mut admin)
            .await
            .map_err(TestkitError::db("looking up roles"))?;
            let verb = if exists { "ALTER" } else { "CREATE" };
            let secret = url
                .password()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            execute(
                &mut admin,
                &format!(
                    "{verb} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}",
                    identifier(role),
                    literal(&secret)
                ),
            )
            .await?;
        }
        let exists: bool = sea_orm::sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .map_err(TestkitError::db("looking up the database"))?;
        if !exists {
            execute(
                &mut admin,
                &format!(
                    "CREATE DATABASE {} OWNER {}",
                    identifier(&database),
                    identifier(owner)
                ),
            )
            .await?;
        }
        let _ = admin.close().await;

        let mut in_database =
            PgConnection::connect_with(&admin_options.clone().database(&database))
                .await
                .map_err(TestkitError::db("connecting to the database"))?;
        let mut statements = migration::roles::grant_statements(&database, owner, service);
        statements.push("CREATE EXTENSION IF NOT EXISTS pg_stat_statements".to_owned());
        for statement in statements {
            execute(&mut in_database, &statement).await?;
        }
        let _ = in_database.close().await;
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(TestkitError::io("running pg_ctl"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Server(format!(
                "pg_ctl {} failed: {}; see {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&output.stderr).trim(),
                self.root.join("server.log").display()
            )))
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        as_owner(&mut command, self.owner);
        command
    }
}

async fn execute(connection: &mut PgConnection, statement: &str) -> Result<()> {
    sea_orm::sqlx::query(AssertSqlSafe(statement))
        .execute(connection)
        .await
        .map(|_| ())
        .map_err(TestkitError::db("setting up the local database"))
}

/// `DATABASE_URL` and `DATABASE_OWNER_URL` (the same when unset), which must name this machine.
fn roles(sources: &Sources) -> Result<Roles> {
    let parse = |variable: &str| -> Result<Option<DatabaseUrl>> {
        sources
            .get(variable)
            .map(|text| {
                DatabaseUrl::parse(text)
                    .map_err(|error| TestkitError::Server(format!("{variable} {error}")))
            })
            .transpose()
    };
    let service = parse("DATABASE_URL")?.ok_or_else(|| {
        TestkitError::Server("DATABASE_URL is not set (in the environment or .env)".into())
    })?;
    let owner = parse("DATABASE_OWNER_URL")?.unwrap_or_else(|| service.clone());
    for (variable, url) in [("DATABASE_URL", &service), ("DATABASE_OWNER_URL", &owner)] {
        match url.host() {
            "127.0.0.1" => {}
            // It may resolve to ::1 first, where any local user could listen for passwords.
            "localhost" => {
                return Err(TestkitError::Server(format!(
                    "{variable} names localhost: use 127.0.0.1, where the local cluster listens"
                )));
            }
            _ => {
                return Err(TestkitError::Server(format!(
                    "{variable} names another machine, not this one: nothing to start here"
                )));
            }
        }
    }
    if owner.port() != service.port() || owner.database() != service.database() {
        return Err(TestkitError::Server(
            "DATABASE_OWNER_URL must name the same port and database as DATABASE_URL".into(),
        ));
    }
    Ok(Roles { service, owner })
}

/// A quoted SQL identifier.
fn identifier(name: &str) -> String {
    migration::roles::quoted(name)
}

/// A quoted SQL string literal (standard_conforming_strings is on).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A short name for a checkout's folder that stays the same across runs and toolchains
/// (FNV-1a of the path: std's hasher may change between Rust releases).
fn checkout_hash(checkout: &Path) -> String {
    let hash = checkout
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}
