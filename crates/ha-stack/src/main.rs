//! `ha-stack up|down|status`: the local highly available PostgreSQL behind `just ha-up`,
//! `just ha-down` and `just ha-status`. State lives in `.data/ha/` of the current directory:
//! `stack.json` (where the stack is, its ports and processes; no passwords), `database.env`
//! (0600: `DATABASE_URL` of the service's role and `DATABASE_OWNER_URL` of the migrations' owner
//! role, both through HAProxy's primary port) and `database-direct.env` (the same naming both
//! nodes, a libpq host list with `target_session_attrs=read-write`).

#[cfg(unix)]
mod cli;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("ha-stack: the local HA stack runs on Linux only (Patroni, etcd, HAProxy)");
    std::process::ExitCode::from(2)
}
