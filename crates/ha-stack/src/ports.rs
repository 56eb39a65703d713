use serde::{Deserialize, Serialize};

use crate::{HaError, Result};

/// Patroni-managed PostgreSQL nodes.
pub const NODES: usize = 2;

/// The stack's ports on 127.0.0.1, all derived from one base so that a whole stack can be placed
/// (or found free) at once: HAProxy's primary port is the base itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    base: u16,
}

/// The highest offset from the base that a port uses.
pub const SPAN: u16 = 21;

impl Ports {
    pub fn new(base: u16) -> Result<Self> {
        if base < 1024 || base.checked_add(SPAN).is_none() {
            let top = u16::MAX - SPAN;
            return Err(HaError::Failed(format!(
                "HA port base must be between 1024 and {top}"
            )));
        }
        Ok(Self { base })
    }

    /// HAProxy: always the current primary.
    pub fn primary(&self) -> u16 {
        self.base
    }

    /// HAProxy: the replicas, round robin.
    pub fn replica(&self) -> u16 {
        self.base + 1
    }

    pub fn etcd_client(&self) -> u16 {
        self.base + 2
    }

    /// HAProxy's read-only statistics page (`/stats;csv`): which servers it considers up.
    pub fn haproxy_stats(&self) -> u16 {
        self.base + 4
    }

    /// PostgreSQL of node `index` (0 or 1).
    pub fn postgres(&self, index: usize) -> u16 {
        self.base + 10 + 10 * index as u16
    }

    /// Patroni's REST API of node `index` (0 or 1).
    pub fn rest(&self, index: usize) -> u16 {
        self.base + 11 + 10 * index as u16
    }

    /// Every port the stack listens on.
    pub fn all(&self) -> Vec<u16> {
        let mut ports = vec![
            self.primary(),
            self.replica(),
            self.etcd_client(),
            self.haproxy_stats(),
        ];
        for index in 0..NODES {
            ports.extend([self.postgres(index), self.rest(index)]);
        }
        ports
    }
}
