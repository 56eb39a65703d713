use std::time::Duration;

use counseling_provision::http::Reply;
use serde::Deserialize;

/// One node as Patroni's `GET /cluster` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub name: String,
    /// `leader`, `sync_standby` or `replica`.
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, ...
    pub state: String,
    #[serde(default)]
    pub timeline: Option<u64>,
}

impl Member {
    pub fn is_running_leader(&self) -> bool {
        self.role == "leader" && self.state == "running"
    }

    pub fn is_sync_standby(&self) -> bool {
        self.role == "sync_standby" && matches!(self.state.as_str(), "running" | "streaming")
    }
}

/// `GET http://127.0.0.1:{port}{path}` within 2 s, or `None` if nothing answered.
pub(crate) fn get(port: u16, path: &str) -> Option<Reply> {
    let url = format!("http://127.0.0.1:{port}{path}");
    counseling_provision::http::get(&url, &[], Duration::from_secs(2)).ok()
}

/// The cluster's members as the Patroni REST API on `rest_port` sees them.
pub fn cluster_members(rest_port: u16) -> Option<Vec<Member>> {
    #[derive(Deserialize)]
    struct Cluster {
        members: Vec<Member>,
    }
    let reply = get(rest_port, "/cluster").filter(|reply| reply.status == 200)?;
    let cluster: Cluster = serde_json::from_str(&reply.body).ok()?;
    Some(cluster.members)
}
