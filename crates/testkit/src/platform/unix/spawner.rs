//! Starts server processes from one long-lived thread.
//!
//! A postmaster is started with a parent-death signal (`setpriv --pdeathsig`) so that it shuts
//! down when the test process dies, even by SIGKILL. Linux sends that signal when the *thread*
//! that forked the child exits, and test threads come and go, so every spawn happens on this one
//! thread, which lives as long as the process.

use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

pub(crate) fn spawn(command: Command) -> std::io::Result<Child> {
    let sender = SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in receiver {
                    let _ = reply.send(command.spawn());
                }
            })
            // Spawning a thread only fails when the process is out of resources; then no test
            // can run either, so fall back to a closed channel that reports an error below.
            .map_or_else(|_| Mutex::new(mpsc::channel().0), |_| Mutex::new(sender))
    });
    let (reply_to, reply) = mpsc::channel();
    let sent = sender
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((command, reply_to));
    if sent.is_err() {
        return Err(std::io::Error::other("the spawner thread is not running"));
    }
    reply
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread stopped"))?
}
