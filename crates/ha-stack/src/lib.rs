//! A highly available PostgreSQL on this machine, as the field runs it: one etcd, two
//! Patroni-managed PostgreSQL nodes with synchronous replication, and HAProxy with a port that
//! always leads to the primary (health-checked through Patroni's REST API) and one for replicas.
//!
//! Everything listens on 127.0.0.1 only and lives in a fresh folder created exclusively (see
//! `stack.rs` for its layout). Nobody else on the machine can steer it: etcd requires v3
//! authentication (Patroni's own user may write only Patroni's keys), and every Patroni REST
//! call that changes state requires credentials. Passwords are generated per run, kept in 0600
//! files and handed to Patroni through its environment (to etcdctl on its standard input),
//! never on a command line. The servers' binaries, user,
//! files, passwords, roles and URLs come from `counseling-provision`, as for every PostgreSQL of
//! ours. The fixed configuration is `ha/patroni.yml` and `ha/haproxy.cfg` in the repository;
//! what differs per run (ports, folders, passwords) is filled in through the programs' own
//! environment overrides.
//!
//! Used by the `ha-stack` binary (`just ha-up`, `ha-down`, `ha-status`) and by the HA tests.
//! Unix only (Patroni, etcd and HAProxy from Debian's packages; user switching, signals): on
//! other platforms the crate is empty.
#![cfg(unix)]

mod ports;
mod rest;
mod stack;

pub use counseling_provision::{ProvisionError as HaError, Result};
pub use ports::{NODES, Ports, SPAN};
pub use rest::{Member, cluster_members};
pub use stack::{
    APP_DATABASE, APP_ROLE, ETCD_NAMESPACE, ETCD_USER, HaStack, OWNER_ROLE, REST_API_USER,
    SavedStack, StackOptions,
};
