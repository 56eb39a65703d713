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

/// The servers of HAProxy proxy `proxy` that are UP, from the CSV statistics on `stats_port`;
/// empty until every server has been checked at least once (before that, HAProxy assumes all of
/// them up).
pub(crate) fn haproxy_up_servers(stats_port: u16, proxy: &str) -> Vec<usize> {
    let Some(reply) = get(stats_port, "/stats;csv").filter(|reply| reply.status == 200) else {
        return Vec::new();
    };
    // Columns: pxname, svname, ..., status (18th), ..., check_status (37th).
    let rows = reply
        .body
        .lines()
        .map(|line| line.split(',').collect::<Vec<&str>>());
    let servers: Vec<Vec<&str>> = rows
        .filter(|fields| fields.len() > 36 && fields[0] == proxy && fields[1].starts_with("node"))
        .collect();
    let checked = |fields: &Vec<&str>| !fields[36].is_empty() && !fields[36].starts_with("INI");
    if servers.len() != crate::NODES || !servers.iter().all(checked) {
        return Vec::new();
    }
    let up = servers.iter().filter(|fields| fields[17] == "UP");
    up.filter_map(|fields| crate::HaStack::node_index(fields[1]))
        .collect()
}
