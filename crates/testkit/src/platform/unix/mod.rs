//! The private cluster on unix: server binaries found on disk, started as the `postgres` user
//! when running as root, with a parent-death signal, and controlled with signals.

mod binaries;
mod cluster;
mod local;
mod spawner;

pub use binaries::locate_binaries;
pub use cluster::PgCluster;
pub use local::LocalCluster;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Creates a new file readable and writable by its owner only.
pub(crate) fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Where a process id means something: this host, and (Linux) this process-id namespace, so that
/// containers sharing a host name still differ.
pub(crate) fn process_space() -> String {
    let host = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .map(|link| link.display().to_string())
        .unwrap_or_default();
    format!("{host}\n{namespace}")
}

/// Whether process `pid` exists (a zombie counts: it may still be reaped by its parent). Used to
/// tell leftovers of killed test runs from those of runs still going.
pub(crate) fn process_is_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        // Signal 0 checks existence and permission without sending anything.
        Ok(pid) if pid > 0 => kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::process_is_alive;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_is_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_is_alive(pid));
    }
}
