//! Processes: whether one lives, signals, and the tie that makes a server die with its test
//! process.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::files::ServerUser;
use crate::{ProvisionError, Result};

/// The signals our tools send (`Stop`/`Continue` freeze and thaw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Quit,
    Terminate,
    Kill,
    Stop,
    Continue,
}

/// Whether process `pid` lives. A zombie does not: it has exited and holds no port and no file;
/// only its parent's wait is missing. So a test process that is a zombie left leftovers to sweep,
/// and a server that is one has stopped.
#[cfg(unix)]
pub fn process_is_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence without sending anything (EPERM: it exists, but not ours).
    if raw <= 0
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) == Err(Errno::ESRCH)
    {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat
        .rsplit_once(") ")
        .is_some_and(|(_, fields)| fields.starts_with('Z'))
}

/// Whether process `pid` exists, asked of `tasklist` (the workspace forbids the `unsafe` a
/// Win32 call would need). When that cannot be asked, the answer is yes: a leftover is harmless,
/// removing what a running process uses is not.
#[cfg(windows)]
pub fn process_is_alive(pid: u32) -> bool {
    let filter = format!("PID eq {pid}");
    let output = Command::new("tasklist")
        .args(["/FI", &filter, "/FO", "CSV", "/NH"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match output {
        // A match is a CSV row `"image","<pid>",...`; no match is a (localised) notice.
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).contains(&format!("\",\"{pid}\","))
        }
        _ => true,
    }
}

/// Where a process id means something: this host and (Linux) this process-id namespace, so that
/// containers sharing a host name (or a `/dev/shm`) still differ; as eight hex digits (FNV-1a,
/// stable across runs and toolchains, unlike std's hasher) that fit in a database's or a
/// folder's name.
pub fn process_space_tag() -> String {
    #[cfg(unix)]
    let host = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    #[cfg(not(unix))]
    let host = std::env::var("COMPUTERNAME").unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .map(|link| link.display().to_string())
        .unwrap_or_default();
    let hash = format!("{host}\n{namespace}")
        .bytes()
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
    format!("{hash:08x}")
}

/// Whether `pid` lives and works in `dir` or below (Linux: its current directory; a server
/// works in its data folder), so that a stale pid, reused by another program after a reboot, is
/// never signalled. Elsewhere: whether it lives.
pub fn is_process_in(pid: u32, dir: &Path) -> bool {
    process_is_alive(pid)
        && std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map_or(!cfg!(target_os = "linux"), |cwd| cwd.starts_with(dir))
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: Signal) -> Result<()> {
    #[cfg(unix)]
    {
        use nix::sys::signal::Signal as Nix;
        let nix = match signal {
            Signal::Interrupt => Nix::SIGINT,
            Signal::Quit => Nix::SIGQUIT,
            Signal::Terminate => Nix::SIGTERM,
            Signal::Kill => Nix::SIGKILL,
            Signal::Stop => Nix::SIGSTOP,
            Signal::Continue => Nix::SIGCONT,
        };
        let target = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        nix::sys::signal::kill(target, nix)
            .map_err(|errno| ProvisionError::Failed(format!("sending {nix} to {pid}: {errno}")))
    }
    #[cfg(not(unix))]
    Err(ProvisionError::Failed(format!(
        "cannot send {signal:?} to {pid}: signals are unix-only"
    )))
}

/// Sends `signal` to `pid` (not a child of ours) and waits up to `limit` for it to go; whether
/// it went.
pub fn signal_and_wait(pid: u32, sent: Signal, limit: Duration) -> bool {
    let _ = signal(pid, sent);
    crate::wait::wait_until("", limit, || !process_is_alive(pid)).is_ok()
}

/// The processes whose parent is `parent` (a postmaster's backends), from /proc; none elsewhere.
pub fn children_of(parent: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the parenthesised command name: state, then the parent's pid.
        stat.rsplit_once(") ")?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// Sends `sent` to `pid` and all its children (freezing or thawing a server with its backends).
pub fn signal_with_children(pid: u32, sent: Signal) -> Result<()> {
    // The parent first: once stopped it forks no child that the list below would miss (a
    // backend forked while the list was read kept running, and a "frozen" server answered).
    signal(pid, sent)?;
    for child in children_of(pid) {
        let _ = signal(child, sent);
    }
    Ok(())
}

/// Spawns `command` (stdin closed) with its output appended to `log`: a file, never a pipe that
/// nobody might read and that would block it when full. `tied`: with [`spawn_tied`]; else in a
/// process group of its own, so that a Ctrl-C in the terminal that started it does not reach it.
pub fn spawn_logged(mut command: Command, log: &Path, tied: bool) -> Result<Child> {
    let output = crate::files::append_log(log)?;
    let errors = output
        .try_clone()
        .map_err(ProvisionError::io("opening a log"))?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(output)
        .stderr(errors);
    #[cfg(unix)]
    if !tied {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let what = format!("starting {:?}", command.get_program());
    let child = if tied {
        spawn_tied(command)
    } else {
        command.spawn()
    };
    child.map_err(ProvisionError::io(what))
}

/// `program` as `user`, started so that it gets SIGINT (a fast shutdown, for a postmaster) when
/// this process dies, even by SIGKILL (`setpriv --pdeathsig`; without setpriv the tie is only
/// as good as our destructors). Spawn it with [`spawn_tied`].
pub fn tied_command(user: &ServerUser, program: &Path) -> Command {
    let setpriv = Path::new("/usr/bin/setpriv");
    if cfg!(target_os = "linux") && setpriv.exists() {
        let mut command = user.command(setpriv);
        command.args(["--pdeathsig", "INT", "--"]).arg(program);
        command
    } else {
        user.command(program)
    }
}

/// Spawns `command` from one long-lived thread. Linux sends the parent-death signal when the
/// *thread* that forked the child exits, and test threads come and go, so every tied child is
/// forked by this one thread, which lives as long as the process.
pub fn spawn_tied(command: Command) -> std::io::Result<Child> {
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<Request>();
        let spawner = std::thread::Builder::new()
            .name("provision-spawner".into())
            .spawn(move || {
                for (mut command, reply) in requests {
                    let _ = reply.send(command.spawn());
                }
            });
        // Without the thread (out of resources) the channel is closed: an error below.
        Mutex::new(if spawner.is_ok() {
            sender
        } else {
            mpsc::channel().0
        })
    });
    let (reply_to, reply) = mpsc::channel();
    let gone = || std::io::Error::other("the spawner thread is not running");
    sender
        .lock()
        .map_err(|_| gone())?
        .send((command, reply_to))
        .map_err(|_| gone())?;
    reply.recv().map_err(|_| gone())?
}
