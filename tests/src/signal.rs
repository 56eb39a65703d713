//! Sending signals to the service under test: unix only, like the tests that need it. (Windows
//! has no way to send Ctrl-C or Ctrl-Break to one chosen process without `unsafe` Win32 calls,
//! which the workspace forbids.)

pub use nix::sys::signal::Signal;

use crate::Api;

impl Api {
    pub fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("signal failed: {e}"));
    }
}
