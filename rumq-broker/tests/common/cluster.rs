//! Several broker processes on 127.0.0.1 as a cluster: their configuration and
//! how they start.

use std::net::TcpListener;
use std::time::Duration;

use super::{http, Broker, STEP};

/// The nodes' shared `cluster.secret`.
pub const SECRET: &str = "0123456789abcdef-cluster-test";

/// Peer addresses for three nodes: ports the OS had free a moment ago.
pub fn peer_addrs() -> Vec<String> {
    let held: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// The configuration of node `id` (1-based) of the nodes at `addrs`, with
/// `ack_copies`.
pub fn node_config(id: usize, addrs: &[String], ack_copies: usize) -> String {
    let peers: Vec<(usize, String)> = (1..=addrs.len())
        .filter(|p| *p != id)
        .map(|p| (p, addrs[p - 1].clone()))
        .collect();
    node_config_via(id, &addrs[id - 1], &peers, ack_copies)
}

/// The configuration of node `id` listening on `listen`, reaching each peer at the
/// address given (its own, or a proxy's).
pub fn node_config_via(
    id: usize,
    listen: &str,
    peers: &[(usize, String)],
    ack_copies: usize,
) -> String {
    let peers: Vec<String> = peers.iter().map(|(p, a)| format!("\"{p}={a}\"")).collect();
    format!(
        "[cluster]\nnode_id = {id}\nlisten = \"{listen}\"\npeers = [{}]\nack_copies = {ack_copies}\n\
         secret = \"{SECRET}\"\n",
        peers.join(", ")
    )
}

pub fn start_node(id: usize, addrs: &[String]) -> Broker {
    start_node_with(id, addrs, 2)
}

pub fn start_node_with(id: usize, addrs: &[String], ack_copies: usize) -> Broker {
    let b = Broker::with_config(&node_config(id, addrs, ack_copies));
    b.wait_for_log("peer listener up", STEP);
    b
}

/// Three nodes, each replicating the other two.
pub fn three_nodes() -> Vec<Broker> {
    let addrs = peer_addrs();
    let nodes: Vec<Broker> = (1..=3).map(|id| start_node(id, &addrs)).collect();
    for n in &nodes {
        n.wait_for_log_count("replicating", 2, Duration::from_secs(10));
    }
    nodes
}

/// The JSON an admin API at `addr` answers `GET path` with (200 expected).
pub async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", path, None).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A node whose process dies and starts again: its data directory (kept across its
/// deaths), its configuration, and the process when it runs.
pub struct DurableNode {
    pub data: tempfile::TempDir,
    pub config: String,
    pub broker: Option<Broker>,
}

impl DurableNode {
    /// Its process; a test asks only between starting and killing it.
    pub fn running(&self) -> &Broker {
        self.broker.as_ref().expect("the node runs")
    }

    /// Start it on its data directory; its MQTT port.
    pub fn start(&mut self) -> u16 {
        let b = Broker::start_in(self.data.path(), Some(&self.config));
        b.wait_for_log("peer listener up", STEP);
        let port = b.port();
        self.broker = Some(b);
        port
    }
}

/// Three nodes that take a peer silent for `failure_timeout_ms` as failed (and
/// have `extra` in their configuration), started and replicating each other's
/// logs and journals.
pub fn durable_cluster(failure_timeout_ms: u64, extra: &str) -> [DurableNode; 3] {
    durable_cluster_of(2, failure_timeout_ms, extra)
}

/// The same, with `ack_copies`.
pub fn durable_cluster_of(
    ack_copies: usize,
    failure_timeout_ms: u64,
    extra: &str,
) -> [DurableNode; 3] {
    let addrs = peer_addrs();
    let mut nodes: [DurableNode; 3] = [1, 2, 3].map(|id| DurableNode {
        data: tempfile::tempdir().expect("a data directory"),
        config: format!(
            "{}failure_timeout_ms = {failure_timeout_ms}\n{extra}",
            node_config(id, &addrs, ack_copies)
        ),
        broker: None,
    });
    for n in &mut nodes {
        n.start();
    }
    for n in &nodes {
        n.running().wait_for_log_count(
            "replicating its session journal",
            2,
            Duration::from_secs(10),
        );
    }
    nodes
}

/// Three nodes that replicate each other and take a silent peer as failed after a
/// second (`failure_timeout_ms = 1000`), each up and replicating the others'
/// journals.
pub fn failing_fast_cluster() -> [Broker; 3] {
    let addrs = peer_addrs();
    started_cluster(
        [1, 2, 3].map(|id| format!("{}failure_timeout_ms = 1000\n", node_config(id, &addrs, 2))),
    )
}

/// Three nodes started with `configs`, each up and replicating the others'
/// journals.
pub fn started_cluster(configs: [String; 3]) -> [Broker; 3] {
    let nodes = configs.map(|config| {
        let b = Broker::with_config(&config);
        b.wait_for_log("peer listener up", STEP);
        b
    });
    for n in &nodes {
        n.wait_for_log_count(
            "replicating its session journal",
            2,
            Duration::from_secs(10),
        );
    }
    nodes
}
