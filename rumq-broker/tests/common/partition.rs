//! Three nodes whose peer links run through proxies a test cuts and heals.

use std::net::SocketAddr;
use std::time::Duration;

use super::{node_config_via, peer_addrs, Broker, Proxy, STEP};

/// Three nodes; node i reaches node j through proxy `(i, j)` (0-based).
pub struct Partitionable {
    pub nodes: [Broker; 3],
    proxies: Vec<((usize, usize), Proxy)>,
}

impl Partitionable {
    /// Started (with `extra` in each node's configuration) and replicating each
    /// other's logs and journals.
    pub async fn start(extra: &str) -> Partitionable {
        let addrs = peer_addrs();
        let mut proxies = Vec::new();
        for i in 0..3 {
            for j in (0..3).filter(|j| *j != i) {
                let target: SocketAddr =
                    addrs[j].parse().expect("peer_addrs gives socket addresses");
                proxies.push(((i, j), Proxy::start(target).await));
            }
        }
        let configs = [0, 1, 2].map(|i| {
            let peers: Vec<(usize, String)> = (proxies.iter())
                .filter(|((from, _), _)| *from == i)
                .map(|((_, to), p)| (to + 1, p.addr.to_string()))
                .collect();
            format!(
                "{}failure_timeout_ms = 1000\n{extra}",
                node_config_via(i + 1, &addrs[i], &peers, 2)
            )
        });
        let nodes = super::started_cluster(configs);
        Partitionable { nodes, proxies }
    }

    /// Cut (`true`) or heal every link between node `n` (0-based) and the others.
    pub fn isolate(&self, n: usize, cut: bool) {
        for ((from, to), p) in &self.proxies {
            match (*from == n || *to == n, cut) {
                (true, true) => p.cut(),
                (true, false) => p.heal(),
                _ => {}
            }
        }
    }
}
