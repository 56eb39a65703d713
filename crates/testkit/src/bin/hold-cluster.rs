//! Starts a private cluster, prints `<postmaster pid> <port>`, and waits to be killed. Used by
//! the test that checks a killed test process takes its PostgreSQL along, and by CI to run the
//! test kit against an "external" server.
//!
//! `hold-cluster --env-file PATH` also writes PATH (0600, created exclusively) with libpq's
//! variables for the superuser and `DATABASE_URL_TEST`, for a script to `source`: the password
//! reaches it through a file and the environment, never a command line.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_file = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--env-file" => Some(std::path::PathBuf::from(path)),
        _ => {
            eprintln!("usage: hold-cluster [--env-file PATH]");
            return ExitCode::from(2);
        }
    };
    let cluster = match counseling_testkit::PgCluster::start_blocking() {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("hold-cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = env_file {
        let variables = format!(
            "PGHOST=127.0.0.1\nPGPORT={}\nPGUSER=postgres\nPGPASSWORD={}\nPGDATABASE=postgres\n\
             DATABASE_URL_TEST={}\n",
            cluster.port(),
            cluster.password(),
            cluster.superuser_url("postgres"),
        );
        if let Err(error) = counseling_testkit::tls::write_private(&path, &variables) {
            eprintln!("hold-cluster: {error}");
            return ExitCode::FAILURE;
        }
    }
    let pid = cluster.postmaster_pid().unwrap_or(0);
    println!("{pid} {}", cluster.port());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
