//! Nothing is left running: a test process killed with SIGKILL takes its PostgreSQL along.
//! Linux only: it reads /proc, and the parent-death signal it checks is Linux's.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes: it holds no port and no files.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            state != Some("Z")
        })
        .unwrap_or(false)
}

#[test]
fn a_killed_test_process_takes_its_postgres_along() {
    let mut holder = Command::new(env!("CARGO_BIN_EXE_hold-cluster"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut fields = line.split_whitespace();
    let postmaster: u32 = fields.next().unwrap().parse().unwrap();
    let port: u16 = fields.next().unwrap().parse().unwrap();
    assert!(
        alive(postmaster),
        "the postmaster runs while its test process does"
    );
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok());

    holder.kill().unwrap(); // SIGKILL: no destructor, no exit hook runs.
    holder.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(postmaster) {
        assert!(
            Instant::now() < deadline,
            "postgres {postmaster} outlived its test process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err());
}
