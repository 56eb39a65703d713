//! `hold-cluster [--env-file PATH] [--tls] [--set NAME=VALUE]... [--app-only] [-- COMMAND [ARG]...]`:
//! starts a private cluster of the test kit and holds it.
//!
//! * Without COMMAND it prints `<postmaster pid> <port>` and waits: SIGTERM, SIGINT or SIGHUP
//!   stop the server and delete its folder; SIGKILL leaves the server to stop by itself (it
//!   follows its parent) and the folder to the next run's sweep. The test that checks a killed
//!   test process takes its PostgreSQL along uses this.
//! * With COMMAND it runs COMMAND with the cluster in its environment, then stops the cluster
//!   and exits with COMMAND's status; 1 instead if COMMAND left a test database (`test_*`)
//!   behind. (A test process's template, `tmpl_*`, lives as long as the process: the next run
//!   sweeps it.) CI runs the tests against an "external" server (`DATABASE_URL_TEST`) and
//!   the migration recipes this way.
//! * The environment (and `--env-file PATH`, written 0600 and exclusively): `DATABASE_URL_TEST`
//!   (the superuser), libpq's `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//!   `DATABASE_URL` and `DATABASE_OWNER_URL` (the service's and the owner's role on an empty
//!   database, as in production), `CLUSTER_BIN_DIR` (the PostgreSQL binaries) and, with `--tls`,
//!   `CLUSTER_CA_FILE`. Passwords never reach a command line.
//! * `--tls` serves TLS (certificate for `localhost` and 127.0.0.1 from a CA made for this run)
//!   next to plaintext; `--set NAME=VALUE` overrides a server setting of the kit's (repeatable).
//! * `--app-only` gives COMMAND the application's two URLs (and `CLUSTER_CA_FILE`), and none of
//!   the variables above of the superuser's, nor any other `PG*`, `DATABASE_*` or `CLUSTER_*`
//!   variable exported to us (`PGPASSFILE`, `PGSSLKEY`, `DATABASE_OWNER_PASSWORD_FILE`...): for a
//!   command that needs no more, such as the migration recipes. This keeps credentials out of its
//!   way; it is no isolation (the command runs as our user).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use counseling_testkit::tls::ServerTls;
use counseling_testkit::{ClusterOptions, PgCluster};
use sea_orm::sqlx::{Connection, PgConnection};

const USAGE: &str = "usage: hold-cluster [--env-file PATH] [--tls] [--set NAME=VALUE]... \
                     [--app-only] [-- COMMAND [ARG]...]";

#[derive(Default)]
struct Arguments {
    env_file: Option<PathBuf>,
    app_only: bool,
    options: ClusterOptions,
    command: Vec<OsString>,
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Option<Arguments> {
    let mut parsed = Arguments::default();
    while let Some(arg) = args.next() {
        match arg.to_str()? {
            "--env-file" => parsed.env_file = Some(PathBuf::from(args.next()?)),
            "--tls" => parsed.options.tls = Some(ServerTls::default()),
            "--app-only" => parsed.app_only = true,
            "--set" => {
                // The kit checks the name (and refuses its security settings) at start.
                let setting = args.next()?.into_string().ok()?;
                let (name, value) = setting.split_once('=')?;
                let setting = (name.to_owned(), value.to_owned());
                parsed.options.server_settings.push(setting);
            }
            "--" => {
                parsed.command = args.collect();
                return (!parsed.command.is_empty()).then_some(parsed);
            }
            _ => return None,
        }
    }
    Some(parsed)
}

fn main() -> ExitCode {
    let Some(arguments) = parse(std::env::args_os().skip(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = runtime
        .map_err(|error| error.to_string())
        .and_then(|runtime| {
            // Listening for the stop signals before the server starts: a signal that arrives while
            // it starts still stops it and deletes its folder.
            let signals = runtime.block_on(async { StopSignals::listen() });
            let signals = signals.map_err(|error| format!("cannot wait for signals: {error}"))?;
            runtime.block_on(hold(arguments, signals))
        });
    outcome.unwrap_or_else(|error| {
        eprintln!("hold-cluster: {error}");
        ExitCode::FAILURE
    })
}

async fn hold(arguments: Arguments, signals: StopSignals) -> Result<ExitCode, String> {
    let cluster = PgCluster::start_with(arguments.options)
        .await
        .map_err(|e| e.to_string())?;
    let database = cluster.empty_database().await.map_err(|e| e.to_string())?;
    let mut variables = vec![
        ("DATABASE_URL", database.url()),
        ("DATABASE_OWNER_URL", database.owner_url()),
    ];
    if !arguments.app_only {
        variables.extend(cluster.libpq_environment("postgres"));
        let superuser = cluster.superuser_url("postgres");
        variables.push((counseling_config::TEST_SERVER_VARIABLE, superuser));
        variables.push(("CLUSTER_BIN_DIR", cluster.bin_dir().display().to_string()));
    }
    if let Some(tls) = cluster.tls_files() {
        variables.push(("CLUSTER_CA_FILE", tls.root_cert.display().to_string()));
    }
    if let Some(path) = &arguments.env_file {
        let lines: String = variables
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        counseling_provision::files::write_private(path, &lines).map_err(|e| e.to_string())?;
    }
    let Some((program, args)) = arguments.command.split_first() else {
        println!(
            "{} {}",
            cluster.postmaster_pid().unwrap_or(0),
            cluster.port()
        );
        let _ = std::io::stdout().flush();
        signals.wait().await;
        // Dropping the cluster stops the server and deletes its folder.
        return Ok(ExitCode::SUCCESS);
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(variables.iter().cloned())
        .kill_on_drop(true);
    if arguments.app_only {
        // Withheld even as exported to us: libpq's and our settings (a developer's
        // DATABASE_URL_TEST, a key or password file) and the kit's, which the command would read
        // next to the two URLs it is given.
        let given: Vec<&str> = variables.iter().map(|(name, _)| *name).collect();
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            let ours = ["PG", "DATABASE_", "CLUSTER_"]
                .iter()
                .any(|prefix| text.starts_with(prefix));
            if ours && !given.contains(&text.as_ref()) {
                command.env_remove(&name);
            }
        }
    }
    let mut child = command
        .spawn()
        .map_err(|error| format!("running {program:?}: {error}"))?;
    let status = tokio::select! {
        status = child.wait() => status.map_err(|error| error.to_string())?,
        () = signals.wait() => return Ok(ExitCode::FAILURE),
    };
    drop(database); // dropped with its handle, so it is not counted below
    let leftovers = test_databases(&cluster)
        .await
        .map_err(|error| error.to_string())?;
    if leftovers > 0 {
        eprintln!("hold-cluster: {program:?} left {leftovers} test databases behind");
        return Ok(ExitCode::FAILURE);
    }
    let code = status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1);
    Ok(ExitCode::from(code))
}

/// How many test databases the test kit made and did not drop.
async fn test_databases(cluster: &PgCluster) -> Result<i64, sea_orm::sqlx::Error> {
    let mut admin = PgConnection::connect_with(&cluster.admin_options()).await?;
    let sql = r"SELECT count(*) FROM pg_database WHERE datname ~ '^test_'";
    let count = sea_orm::sqlx::query_scalar(sql)
        .fetch_one(&mut admin)
        .await?;
    let _ = admin.close().await;
    Ok(count)
}

/// SIGTERM, SIGINT and SIGHUP (Ctrl-C on Windows), listened for from creation on.
#[cfg(unix)]
struct StopSignals([tokio::signal::unix::Signal; 3]);

#[cfg(unix)]
impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
        ];
        Ok(Self([
            signal(kinds[0])?,
            signal(kinds[1])?,
            signal(kinds[2])?,
        ]))
    }

    async fn wait(self) {
        let [mut terminate, mut interrupt, mut hangup] = self.0;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
            _ = hangup.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct StopSignals(tokio::signal::windows::CtrlC);

#[cfg(not(unix))]
impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        tokio::signal::windows::ctrl_c().map(Self)
    }

    async fn wait(mut self) {
        let _ = self.0.recv().await;
    }
}
