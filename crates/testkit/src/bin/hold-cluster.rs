//! Starts a private cluster, prints `<postmaster pid> <port>`, and waits to be stopped: SIGTERM,
//! SIGINT or SIGHUP stop the server and delete its folder; SIGKILL leaves the server to stop by
//! itself (it follows its parent) and the folder to the next run's sweep. Used by
//! the test that checks a killed test process takes its PostgreSQL along, by CI to run the test
//! kit against an "external" server, and by `just bench` for its server.
//!
//! `hold-cluster [--env-file PATH] [--tls] [--set NAME=VALUE]...`
//!
//! * `--env-file PATH` writes PATH (0600, created exclusively) with libpq's variables for the
//!   superuser, `DATABASE_URL_TEST`, `CLUSTER_BIN_DIR` (the PostgreSQL binaries the kit found)
//!   and, with `--tls`, `CLUSTER_CA_FILE`, for a script to
//!   `source`: the password reaches it through a file and the environment, never a command line.
//! * `--tls` serves TLS (certificate for `localhost` and 127.0.0.1 from a CA made for this run)
//!   next to plaintext.
//! * `--set NAME=VALUE` overrides a server setting of the kit's (repeatable).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use counseling_testkit::tls::ServerTls;
use counseling_testkit::{ClusterOptions, PgCluster};

const USAGE: &str = "usage: hold-cluster [--env-file PATH] [--tls] [--set NAME=VALUE]...";

struct Arguments {
    env_file: Option<PathBuf>,
    options: ClusterOptions,
}

fn parse(mut args: impl Iterator<Item = String>) -> Option<Arguments> {
    let mut parsed = Arguments {
        env_file: None,
        options: ClusterOptions::default(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--env-file" => parsed.env_file = Some(PathBuf::from(args.next()?)),
            "--tls" => parsed.options.tls = Some(ServerTls::default()),
            "--set" => {
                // The kit checks the name (and refuses its security settings) at start.
                let setting = args.next()?;
                let (name, value) = setting.split_once('=')?;
                parsed
                    .options
                    .server_settings
                    .push((name.to_owned(), value.to_owned()));
            }
            _ => return None,
        }
    }
    Some(parsed)
}

fn main() -> ExitCode {
    let Some(arguments) = parse(std::env::args().skip(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    // Listening for the stop signals before the server starts: a signal that arrives while it
    // starts still stops it and deletes its folder.
    let waiting = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            let signals = runtime.block_on(async { StopSignals::listen() })?;
            Ok((runtime, signals))
        });
    let (runtime, signals) = match waiting {
        Ok(waiting) => waiting,
        Err(error) => {
            eprintln!("hold-cluster: cannot wait for signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = match PgCluster::start_blocking_with(arguments.options) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("hold-cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = arguments.env_file {
        let mut variables = format!(
            "PGHOST=127.0.0.1\nPGPORT={}\nPGUSER=postgres\nPGPASSWORD={}\nPGDATABASE=postgres\n\
             DATABASE_URL_TEST={}\nCLUSTER_BIN_DIR={}\n",
            cluster.port(),
            cluster.password(),
            cluster.superuser_url("postgres"),
            cluster.bin_dir().display(),
        );
        if let Some(tls) = cluster.tls_files() {
            variables.push_str(&format!("CLUSTER_CA_FILE={}\n", tls.root_cert.display()));
        }
        if let Err(error) = counseling_testkit::tls::write_private(&path, &variables) {
            eprintln!("hold-cluster: {error}");
            return ExitCode::FAILURE;
        }
    }
    let pid = cluster.postmaster_pid().unwrap_or(0);
    println!("{pid} {}", cluster.port());
    let _ = std::io::stdout().flush();
    hold(cluster, &runtime, signals)
}

/// Waits for a signal to stop, then lets `cluster` go: that stops the server and deletes its
/// folder.
fn hold(cluster: PgCluster, runtime: &tokio::runtime::Runtime, signals: StopSignals) -> ExitCode {
    runtime.block_on(signals.wait());
    let _stopped_on_return = cluster;
    ExitCode::SUCCESS
}

/// SIGTERM, SIGINT and SIGHUP (Ctrl-C on Windows), listened for from creation on.
#[cfg(unix)]
struct StopSignals([tokio::signal::unix::Signal; 3]);

#[cfg(unix)]
impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self([
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
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
