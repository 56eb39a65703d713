//! Starts a private cluster, prints `<postmaster pid> <port>`, and waits to be killed. Used by
//! the test that checks a killed test process takes its PostgreSQL along.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cluster = match counseling_testkit::PgCluster::start_blocking() {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("hold-cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    let pid = cluster.postmaster_pid().unwrap_or(0);
    println!("{pid} {}", cluster.port());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
