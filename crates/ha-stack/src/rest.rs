use std::time::Duration;

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

#[derive(Debug, Deserialize)]
struct Cluster {
    members: Vec<Member>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into()
}

/// `GET http://127.0.0.1:{port}{path}`: the status and body, or `None` if nothing answered.
pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut response = agent()
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Some((status, body))
}

/// The cluster's members as the Patroni REST API on `rest_port` sees them.
pub fn cluster_members(rest_port: u16) -> Option<Vec<Member>> {
    let (status, body) = get(rest_port, "/cluster")?;
    if status != 200 {
        return None;
    }
    serde_json::from_str::<Cluster>(&body)
        .ok()
        .map(|cluster| cluster.members)
}
