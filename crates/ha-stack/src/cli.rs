//! The `ha-stack` commands (unix only; see `main.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use counseling_ha::{HaStack, NODES, Ports, SavedStack, StackOptions};
use counseling_provision::files::write_private;

/// HAProxy's primary port unless `HA_PORT_BASE` says otherwise; the others follow it. Below
/// Linux's ephemeral range (32768-60999), so that no client's source port can hold one.
const DEFAULT_PORT_BASE: u16 = 15400;

pub fn main() -> ExitCode {
    // An argument that is not UTF-8 is no command: usage, below.
    let command = counseling_config::arguments()
        .ok()
        .and_then(|args| args.into_iter().next())
        .unwrap_or_default();
    let state = PathBuf::from(".data/ha");
    let outcome = match command.as_str() {
        "up" => up(&state),
        "down" => down(&state),
        "status" => status(&state),
        _ => {
            eprintln!("usage: ha-stack up|down|status");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ha-stack {command}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(state: &Path) -> Result<Option<HaStack>> {
    let file = state.join("stack.json");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).context("reading .data/ha/stack.json"),
    };
    let saved: SavedStack = serde_json::from_str(&text).context("parsing .data/ha/stack.json")?;
    Ok(Some(HaStack::attach(saved)?))
}

fn up(state: &Path) -> Result<()> {
    if load(state)?.is_some() {
        bail!("a stack is already up (or was not stopped): run `just ha-down` first");
    }
    let base = match std::env::var("HA_PORT_BASE") {
        Ok(value) => value
            .parse()
            .context("HA_PORT_BASE must be a port number")?,
        Err(_) => DEFAULT_PORT_BASE,
    };
    let ports = Ports::new(base)?;
    // Not group-writable whatever the umask: `.data` also holds the local cluster's folder.
    counseling_provision::files::owned_folder(state).context("creating .data/ha")?;
    let started = std::time::Instant::now();
    let logs = state.join("failed-logs");
    let mut options = StackOptions::new(ports)?;
    options.logs_on_failure = Some(logs.clone());
    let mut stack = HaStack::start(&options)
        .with_context(|| format!("the servers' logs are in {}", logs.display()))?;
    // Claimed first, and only then ours to remove: an `ha-up` run at the same time that claimed
    // it first keeps its files (and its stack).
    let claimed = serde_json::to_string_pretty(stack.saved())
        .map_err(anyhow::Error::from)
        .and_then(|saved| Ok(write_private(&state.join("stack.json"), &saved)?));
    if let Err(error) = claimed {
        let _ = stack.stop();
        let taken = matches!(
            error.downcast_ref::<counseling_provision::ProvisionError>(),
            Some(counseling_provision::ProvisionError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists
        );
        if taken {
            return Err(error.context("another `just ha-up` claimed .data/ha/stack.json first"));
        }
        // Ours, but half-written (a full disk): it would stop every later `ha-up` and `ha-down`.
        forget(state);
        return Err(error.context("saving .data/ha/stack.json"));
    }
    if let Err(error) = save_urls_and_migrate(&stack, state) {
        let _ = stack.stop();
        forget(state);
        return Err(error);
    }
    println!(
        "HA stack up in {:.1} s (directory {})",
        started.elapsed().as_secs_f64(),
        stack.dir().display()
    );
    print_ports(ports);
    println!("migrations applied as {}", counseling_ha::OWNER_ROLE);
    println!(
        "DATABASE_URL (service) and DATABASE_OWNER_URL (migrations), through HAProxy: \
         .data/ha/database.env; naming both nodes (a host list): .data/ha/database-direct.env \
         (mode 0600)"
    );
    Ok(())
}

/// Writes `database.env` and `database-direct.env` (0600: the service's role for
/// the service, the owner for the migration CLI, which prefers DATABASE_OWNER_URL; through
/// HAProxy, and naming both nodes with `target_session_attrs=read-write`), then applies the
/// migrations as the owner through HAProxy.
fn save_urls_and_migrate(stack: &HaStack, state: &Path) -> Result<()> {
    let owner_url = stack.owner_url()?;
    for (file, url, owner) in [
        ("database.env", stack.app_url()?, &owner_url),
        (
            "database-direct.env",
            stack.app_url_direct()?,
            &stack.owner_url_direct()?,
        ),
    ] {
        let urls = shell_assignments(&[
            ("DATABASE_URL", url.expose_secret()),
            ("DATABASE_OWNER_URL", owner.expose_secret()),
        ]);
        write_private(&state.join(file), &urls)?;
    }
    let owner = owner_url.connect_options();
    counseling_provision::block_on(counseling_provision::roles::apply_migrations(owner))?;
    Ok(())
}

/// `NAME='value'` lines, as a POSIX shell's `.` reads them (the way the HA doc loads these
/// files). Unquoted, the `&` between a host list's parameters would end the assignment and run
/// the rest in the background, leaving `DATABASE_URL` unset; a `'` inside is closed, escaped
/// and reopened.
fn shell_assignments(variables: &[(&str, &str)]) -> String {
    let line =
        |(name, value): &(&str, &str)| format!("{name}='{}'\n", value.replace('\'', r"'\''"));
    variables.iter().map(line).collect()
}

/// Removes the state files of a stack that is gone.
fn forget(state: &Path) {
    for name in ["stack.json", "database.env", "database-direct.env"] {
        let _ = std::fs::remove_file(state.join(name));
    }
}

fn down(state: &Path) -> Result<()> {
    let Some(mut stack) = load(state)? else {
        println!("no HA stack is up");
        return Ok(());
    };
    stack.stop()?;
    forget(state);
    println!("HA stack stopped and its directory removed");
    Ok(())
}

fn status(state: &Path) -> Result<()> {
    let Some(stack) = load(state)? else {
        println!("no HA stack is up");
        return Ok(());
    };
    println!("directory {}", stack.dir().display());
    print_ports(stack.ports());
    match stack.members() {
        Some(members) => {
            println!("{:<8} {:<13} {:<10} timeline", "member", "role", "state");
            for member in members {
                println!(
                    "{:<8} {:<13} {:<10} {}",
                    member.name,
                    member.role,
                    member.state,
                    member.timeline.map(|t| t.to_string()).unwrap_or_default()
                );
            }
        }
        None => println!("no Patroni REST API answers"),
    }
    println!(
        "cluster: {}",
        if stack.is_healthy() {
            "healthy (leader with a synchronous standby)"
        } else {
            "NOT healthy"
        }
    );
    for (name, pid) in stack.processes() {
        println!("process {name:<16} pid {pid}");
    }
    Ok(())
}

fn print_ports(ports: Ports) {
    println!(
        "HAProxy: primary 127.0.0.1:{}, replicas 127.0.0.1:{}",
        ports.primary(),
        ports.replica()
    );
    println!("etcd:    127.0.0.1:{}", ports.etcd_client());
    for index in 0..NODES {
        println!(
            "{}:   PostgreSQL 127.0.0.1:{}, Patroni REST 127.0.0.1:{}",
            HaStack::node_name(index),
            ports.postgres(index),
            ports.rest(index)
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::shell_assignments;

    #[test]
    fn a_shell_that_sources_the_url_files_gets_every_url_whole() {
        let direct = "postgres://app:p%40ss@127.0.0.1:15410,127.0.0.1:15420/db\
                      ?target_session_attrs=read-write&connect_timeout=2";
        let odd = "it's $HOME & `id` \\ \"quoted\" ; *";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("database-direct.env");
        let text = shell_assignments(&[("DATABASE_URL", direct), ("DATABASE_OWNER_URL", odd)]);
        std::fs::write(&file, text).unwrap();
        let output = std::process::Command::new("bash")
            .args(["-c", r#"set -a && . "$1" && set +a && printf '%s\n%s' "$DATABASE_URL" "$DATABASE_OWNER_URL""#])
            .arg("bash")
            .arg(&file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            format!("{direct}\n{odd}")
        );
    }
}
