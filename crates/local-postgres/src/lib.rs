//! The project-local PostgreSQL behind `just dev` (`local-postgres`): a `counseling-provision`
//! server kept between runs, with the application's roles and database from `DATABASE_URL` (the service's role: rows
//! only) and `DATABASE_OWNER_URL` (the owner, which runs migrations), read through
//! `counseling-config` like every binary of ours; their passwords are set again at every start.
//!
//! * In `.data/postgres-cluster` of the checkout; as root in `/var/lib/counseling-platform-<hash
//!   of the checkout>`, where the `postgres` user can reach it and only root can create it (in
//!   `/var/tmp` another user could take the name first). Checked at every start.
//! * The superuser's password is random, in a 0600 file beside the data; nothing else needs it.
//! * `pg_stat_statements` is preloaded and created in the database.
//! * `.env` for a fresh checkout: [`write_env_file`].

use std::path::{Path, PathBuf};

use counseling_config::{DatabaseTarget, Role, SessionDefaults, Sources};
use secrecy::{ExposeSecret, SecretString};

#[cfg(unix)]
use counseling_provision::files::check_private_folder;
use counseling_provision::files::{ServerUser, owned_folder, private_folder, write_private};
use counseling_provision::password::generate_password;
use counseling_provision::process::Signal;
use counseling_provision::roles::{Application, provision_application};
use counseling_provision::server::{HbaTransport, Lifetime, Server, hba, port_in_use};
use counseling_provision::{ProvisionError, Result};

/// The project-local cluster of a checkout.
#[derive(Debug)]
pub struct LocalCluster {
    bin_dir: PathBuf,
    /// Holds `data/`, `superuser-password`, `pg_hba.conf` and `server.log`.
    root: PathBuf,
    user: ServerUser,
}

impl LocalCluster {
    /// The cluster of the checkout at `checkout` (not created yet).
    pub fn of_checkout(checkout: &Path) -> Result<Self> {
        if !cfg!(unix) {
            return Err(ProvisionError::PrivateClusterUnsupported);
        }
        let user = ServerUser::of_this_process()?;
        let root = match user.is_another() {
            // postgres cannot enter root-only folders such as /root or a `mktemp -d` clone; and
            // in a folder everyone may write, another user could make ours first.
            true => PathBuf::from(format!("/var/lib/counseling-platform-{}", fnv(checkout))),
            false => checkout.join(".data").join("postgres-cluster"),
        };
        let bin_dir = counseling_provision::binaries::server_binaries()?;
        Ok(Self {
            bin_dir,
            root,
            user,
        })
    }

    /// The folder holding the data, the superuser's password file and the server's log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn server(&self, port: u16) -> Server {
        let mut server = Server::new(self.bin_dir.clone(), self.root.clone(), port, self.user);
        server
            .settings
            .push("shared_preload_libraries=pg_stat_statements".into());
        server
    }

    /// Creates the cluster on first use, starts it, and makes the roles and database of
    /// `logins` exist with their passwords. Returns what it did.
    pub async fn start(&self, logins: &Logins) -> Result<String> {
        let Logins { service, owner } = logins;
        let server = self.server(service.port);
        if !server.initialised() {
            self.init(&server)?;
        }
        self.check_folders()?;
        let port = server.port;
        let report = if server.pid().is_some() {
            // The superuser's password goes to `port` below: it must be this cluster's, not
            // whatever listens on a port DATABASE_URL was changed to since.
            match server.running_port() {
                Some(running) if running == port => {}
                running => {
                    let running = running.map_or("another port".to_owned(), |p| p.to_string());
                    return Err(ProvisionError::Failed(format!(
                        "the project-local PostgreSQL runs on port {running}, DATABASE_URL names \
                         {port}: stop it first (just db-stop)"
                    )));
                }
            }
            format!("already running on 127.0.0.1:{port}\n")
        } else if port_in_use(port) {
            return Err(ProvisionError::Failed(format!(
                "port {port} is in use by another program: stop it, or give DATABASE_URL \
                 another port"
            )));
        } else {
            // The access rules are what this code says, whatever an older version wrote.
            server.write_hba(&hba(HbaTransport::Any, false))?;
            server.start(Lifetime::Detached)?;
            let log = server.log_path();
            format!("started on 127.0.0.1:{port} (log: {})\n", log.display())
        };
        let password = std::fs::read_to_string(self.root.join("superuser-password"))
            .map_err(ProvisionError::io("reading the superuser's password"))?;
        let admin = counseling_provision::url::local_url(
            port,
            counseling_provision::SUPERUSER,
            None,
            "postgres",
            &[],
        )?
        .connect_options()
        .password(password.trim());
        let application = Application {
            database: &service.database,
            owner: (&owner.user, &owner.password),
            service: (&service.user, &service.password),
            extensions: &["pg_stat_statements"],
        };
        provision_application(&admin, &application).await?;
        Ok(report)
    }

    /// Stops the cluster if it runs.
    pub fn stop(&self) -> Result<&'static str> {
        let server = self.server(0);
        if server.pid().is_none() {
            return Ok("not running");
        }
        // Signals go only to a server in folders this tool made, as start checks: the folder's
        // name is predictable, and anyone may have made one like it.
        self.check_folders()?;
        server.stop(Signal::Interrupt)?;
        Ok("stopped")
    }

    fn init(&self, server: &Server) -> Result<()> {
        self.make_parent()?;
        // Exclusive: a leftover or foreign folder is an error, not something to reuse.
        private_folder(&self.root).map_err(|error| {
            ProvisionError::Failed(format!("{error} (remove it if it is a leftover)"))
        })?;
        let password = generate_password()?;
        let path = self.root.join("superuser-password");
        write_private(&path, secrecy::ExposeSecret::expose_secret(&password))?;
        server.init(&password, &hba(HbaTransport::Any, false), false)
    }

    /// The folder the cluster's is made in (`.data`), which no other user may write: one who
    /// could would rename the cluster's folder away and put their own in its place while it is
    /// being made.
    fn make_parent(&self) -> Result<()> {
        self.root.parent().map_or(Ok(()), owned_folder)
    }

    /// Folders found in place must be the ones we made: the root ours, the data the server
    /// user's, neither open to anyone else.
    #[cfg(unix)]
    fn check_folders(&self) -> Result<()> {
        let ours = nix::unistd::Uid::effective().as_raw();
        let root_mode = if self.user.is_another() { 0o710 } else { 0o700 };
        check_private_folder(&self.root, ours, root_mode)?;
        check_private_folder(&self.root.join("data"), self.user.uid(), 0o700)
    }

    #[cfg(not(unix))]
    fn check_folders(&self) -> Result<()> {
        Ok(())
    }
}

/// How a role of the application logs in, as the service or the migrations would: the variable
/// its URL came from, its role, database, port (on 127.0.0.1) and password.
#[derive(Debug)]
struct Login {
    variable: &'static str,
    user: String,
    database: String,
    port: u16,
    password: SecretString,
}

impl Login {
    /// `role`'s login, read as every binary of ours reads it: the URL or its file with libpq's
    /// parameters and `PG*` variables, the password in the URL, its password file or
    /// `PGPASSWORD`. What the local cluster cannot serve is refused, naming the variable.
    fn of(sources: &Sources, role: Role) -> Result<Self> {
        let refused = |problems: String| ProvisionError::Failed(problems.trim_end().to_owned());
        let target = DatabaseTarget::from_sources(sources, role)
            .map_err(|problems| refused(problems.to_string()))?;
        let connector = (target.resolve(&SessionDefaults::named("counseling-local-postgres")))
            .map_err(|problems| refused(problems.to_string()))?;
        let variable = target.url_variable();
        let refuse = |problem: &str| Err(refused(format!("{variable} {problem}")));
        let endpoint = match connector.endpoints() {
            [endpoint] => endpoint,
            _ => return refuse("names several hosts: the local cluster is one, on 127.0.0.1"),
        };
        match endpoint.host.as_str() {
            "127.0.0.1" => {}
            // It may resolve to ::1 first, where any local user could listen for passwords.
            "localhost" => {
                return refuse("names localhost: use 127.0.0.1, where the local cluster listens");
            }
            _ => return refuse("names another machine, not this one: nothing to start here"),
        }
        let Some(user) = connector.user().filter(|user| !user.is_empty()) else {
            return refuse("names no role: name the application's own (as .env.example does)");
        };
        // The application's roles are made with no power beyond theirs (`ensure_login_role`):
        // the cluster's superuser, so named, would lose its powers or fail to start.
        if user == counseling_provision::SUPERUSER {
            return refuse(&format!(
                "names the role {user}, the cluster's superuser: name the application's own role \
                 (as .env.example does)"
            ));
        }
        let password = connector
            .password()
            .map_err(|error| refused(error.to_string()))?;
        // The cluster asks every login for a password (scram-sha-256): a role given none could
        // not log in.
        let Some(password) = password.filter(|password| !password.expose_secret().is_empty())
        else {
            return refuse(
                "gives no password for its role, which the local cluster needs (in the URL, or \
                 in a password file)",
            );
        };
        Ok(Self {
            variable,
            // As the server would: a login naming no database reaches its role's namesake.
            database: connector.database().unwrap_or(user).to_owned(),
            user: user.to_owned(),
            port: endpoint.port,
            password,
        })
    }
}

/// The service's login and the owner's (the same when no `DATABASE_OWNER_*` is set), as the
/// local cluster serves them: one port and one database.
#[derive(Debug)]
pub struct Logins {
    service: Login,
    owner: Login,
}

impl Logins {
    /// The logins `sources` give, or why the local cluster cannot serve them (a configuration
    /// problem: a line naming the variable).
    pub fn read(sources: &Sources) -> Result<Self> {
        let (service, owner) = (
            Login::of(sources, Role::Service)?,
            Login::of(sources, Role::Owner)?,
        );
        if owner.port != service.port || owner.database != service.database {
            return Err(ProvisionError::Failed(format!(
                "{} must name the same port and database as {}",
                owner.variable, service.variable
            )));
        }
        Ok(Self { service, owner })
    }
}

/// A short name for a checkout's folder that stays the same across runs and toolchains
/// (FNV-1a of the path: std's hasher may change between Rust releases).
fn fnv(checkout: &Path) -> String {
    let bytes = checkout.as_os_str().as_encoded_bytes();
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Writes `checkout/.env` from `checkout/.env.example` unless `.env` exists (then returns
/// `false`), so that no two checkouts share a password and none is known from the repository:
/// every distinct value of a `*_PASSWORD` variable is a placeholder, replaced everywhere in the
/// file (URLs included) by one new password, so the URLs and compose's variables still agree.
/// The example is read by `counseling-config`'s reader, as every `.env`; the new file is created
/// exclusively, readable by its owner only.
pub fn write_env_file(checkout: &Path) -> Result<bool> {
    let target = checkout.join(".env");
    if target.exists() {
        return Ok(false);
    }
    let example = checkout.join(".env.example");
    let text = std::fs::read_to_string(&example)
        .map_err(ProvisionError::io(format!("reading {}", example.display())))?;
    let variables = counseling_config::parse_env(&text)
        .map_err(|error| ProvisionError::Failed(format!(".env.example {error}")))?;
    let mut placeholders: Vec<String> = variables
        .into_iter()
        .filter(|(name, value)| name.ends_with("_PASSWORD") && !value.is_empty())
        .map(|(_, value)| value)
        .collect();
    // Longest first, so that a placeholder inside another is not replaced half-way.
    placeholders.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    placeholders.dedup();
    let mut fresh = text;
    for placeholder in placeholders {
        let password = generate_password()?;
        fresh = fresh.replace(
            &placeholder,
            secrecy::ExposeSecret::expose_secret(&password),
        );
    }
    write_private(&target, &fresh)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What the project-local cluster cannot serve is refused before anything starts.
    #[test]
    fn urls_the_local_cluster_cannot_serve_are_refused() {
        let refusal = |service: &str, owner: &str| {
            let vars = [("DATABASE_URL", service), ("DATABASE_OWNER_URL", owner)];
            match Logins::read(&Sources::from_vars(vars)) {
                Err(ProvisionError::Failed(message)) => message,
                other => panic!("{other:?}"),
            }
        };
        let app = "postgres://app:pw@127.0.0.1:5432/db";
        let own = "postgres://own:pw@127.0.0.1:5432/db";
        assert!(
            Logins::read(&Sources::from_vars([
                ("DATABASE_URL", app),
                ("DATABASE_OWNER_URL", own)
            ]))
            .is_ok()
        );
        for (service, owner, expected) in [
            (
                "postgres://app:pw@localhost:5432/db",
                own,
                "DATABASE_URL names localhost",
            ),
            (
                app,
                "postgres://own:pw@db.example:5432/db",
                "DATABASE_OWNER_URL names another machine",
            ),
            (
                "postgres://postgres:pw@127.0.0.1:5432/db",
                own,
                "DATABASE_URL names the role postgres",
            ),
            (
                app,
                "postgres://postgres:pw@127.0.0.1:5432/db",
                "DATABASE_OWNER_URL names the role postgres",
            ),
            (
                app,
                "postgres://own:pw@127.0.0.1:5433/db",
                "the same port and database",
            ),
            (
                "postgres://app@127.0.0.1:5432/db",
                own,
                "DATABASE_URL gives no password",
            ),
            // Read as libpq reads them: a parameter names the role, the host or the database.
            (
                "postgres://app:pw@127.0.0.1:5432/db?user=postgres",
                own,
                "DATABASE_URL names the role postgres",
            ),
            (
                "postgres://app:pw@127.0.0.1:5432/db?host=db.example",
                own,
                "DATABASE_URL names another machine",
            ),
            (
                app,
                "postgres://own:pw@127.0.0.1:5432/db?dbname=other",
                "the same port and database",
            ),
            (
                "postgres://app:pw@127.0.0.1:5432,127.0.0.1:5433/db\
                 ?target_session_attrs=read-write&connect_timeout=2",
                own,
                "DATABASE_URL names several hosts",
            ),
        ] {
            let message = refusal(service, owner);
            assert!(message.contains(expected), "{message}");
        }
    }

    /// The URLs and passwords are read as the service and the migrations read them: from their
    /// files too, where the roles' passwords must then come from.
    #[test]
    fn logins_come_from_url_and_password_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            write_private(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let service_url = file("service-url", "postgres://app:from-url@127.0.0.1:5433/db\n");
        let owner_url = file("owner-url", "postgres://own@127.0.0.1:5433/db\n");
        let owner_password = file("owner-password", "from-file\n");
        let sources = Sources::from_vars([
            ("DATABASE_URL_FILE", service_url.as_str()),
            ("DATABASE_OWNER_URL_FILE", owner_url.as_str()),
            ("DATABASE_OWNER_PASSWORD_FILE", owner_password.as_str()),
        ]);
        let Logins { service, owner } = Logins::read(&sources).unwrap();
        assert_eq!((service.user.as_str(), service.port), ("app", 5433));
        assert_eq!(service.password.expose_secret(), "from-url");
        assert_eq!(owner.user, "own");
        assert_eq!(owner.password.expose_secret(), "from-file");
        // Refusals name the variable the URL came from.
        let sources = Sources::from_vars([(
            "DATABASE_URL_FILE",
            file("elsewhere", "postgres://app:pw@db.example/db").as_str(),
        )]);
        let refusal = Logins::read(&sources).unwrap_err().to_string();
        assert!(
            refusal.contains("DATABASE_URL_FILE names another machine"),
            "{refusal}"
        );
    }

    #[test]
    fn every_placeholder_gets_one_fresh_password_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env.example"),
            "DATABASE_URL=postgres://app:change-me-service@localhost/db\n\
             DATABASE_OWNER_URL=postgres://own:change-me-owner@localhost/db\n\
             POSTGRES_SERVICE_PASSWORD=change-me-service\n\
             POSTGRES_OWNER_PASSWORD=change-me-owner\n",
        )
        .unwrap();
        assert!(write_env_file(dir.path()).unwrap());
        let written = std::fs::read_to_string(dir.path().join(".env")).unwrap();
        assert!(!written.contains("change-me"), "{written}");
        let value = |name: &str| {
            let prefix = format!("{name}=");
            written
                .lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .unwrap()
                .to_owned()
        };
        let service = value("POSTGRES_SERVICE_PASSWORD");
        assert_eq!(service.len(), 64);
        assert!(value("DATABASE_URL").contains(&format!(":{service}@")));
        assert_ne!(service, value("POSTGRES_OWNER_PASSWORD"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let metadata = std::fs::metadata(dir.path().join(".env")).unwrap();
            assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        }
        // An existing .env is never overwritten.
        assert!(!write_env_file(dir.path()).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".env")).unwrap(),
            written
        );
    }

    /// The cluster's folder is made where only its user (or root) can make names: in a folder
    /// everyone may write, another user could take the predictable name first.
    #[cfg(unix)]
    #[test]
    fn the_cluster_folder_is_in_a_folder_no_other_user_may_write() {
        use std::os::unix::fs::MetadataExt;
        let checkout = tempfile::tempdir().unwrap();
        let cluster = LocalCluster::of_checkout(checkout.path()).unwrap();
        // The nearest folder that exists (a fresh checkout has no `.data` yet).
        let parent = (cluster.root().ancestors().skip(1))
            .find_map(|folder| std::fs::metadata(folder).ok())
            .unwrap();
        let ours = nix::unistd::geteuid().as_raw();
        assert!([0, ours].contains(&parent.uid()), "{:?}", cluster.root());
        assert_eq!(parent.mode() & 0o022, 0, "{:?}", cluster.root());

        // The folder made for it (a checkout's `.data`, as for a user who is not root) is its
        // user's alone, whatever the umask; one its group may write is refused, naming it.
        let in_checkout = LocalCluster {
            root: checkout.path().join(".data").join("postgres-cluster"),
            ..cluster
        };
        in_checkout.make_parent().unwrap();
        let made = checkout.path().join(".data");
        let metadata = std::fs::metadata(&made).unwrap();
        assert_eq!(metadata.uid(), ours);
        assert_eq!(metadata.mode() & 0o077, 0, "{made:?}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o770)).unwrap();
        let error = in_checkout.make_parent().unwrap_err().to_string();
        assert!(error.contains(&made.display().to_string()), "{error}");
        assert!(error.contains("chmod 700"), "{error}");
    }
}
