//! What operators see of the cluster, one view for `GET /cluster` (admin API) and
//! the `rumq_cluster_*` metrics: the router's mesh status (this node's log, its
//! followers' lag, the replicas held here), which peers' data links are up, and the
//! metadata group's Raft term, leader and last applied entry.
//!
//! Owns: that view and its metric names.

use meta::Meta;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use router::MeshStatus;
use serde::Serialize;

/// The cluster as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// This node's id.
    pub node: u8,
    /// The log it writes in this run (`node.incarnation`).
    pub log: String,
    /// That log's head (next offset).
    pub head: u64,
    /// Below this, `ack_copies` nodes hold every record.
    pub commit: u64,
    /// The nodes that replicate this node's log.
    pub followers: Vec<Follower>,
    /// The other nodes' logs replicated here.
    pub replicas: Vec<Replica>,
    /// The metadata group (client id owners, shared groups), as Raft reports it.
    pub meta: MetaView,
}

/// A node replicating this node's log.
#[derive(Debug, Clone, Serialize)]
pub struct Follower {
    /// Its id.
    pub node: u8,
    /// Records it is behind this node's head.
    pub lag_records: u64,
    /// Its data link is up.
    pub link_up: bool,
}

/// Another node's log, replicated here.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    /// The log (`node.incarnation`).
    pub log: String,
    /// Its head here.
    pub head: u64,
    /// The commit its writer told.
    pub commit: u64,
}

/// The metadata group's Raft state on this node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetaView {
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The index of the last entry applied here.
    pub last_applied: Option<u64>,
    /// The group's members, as its membership lists them: node id and peer address.
    pub members: Vec<(u64, String)>,
}

/// The view from the router's `mesh`, the peers with a data link up, and `meta`.
pub fn view(node: u8, mesh: &MeshStatus, links_up: &[u8], meta: Option<&Meta>) -> ClusterView {
    let meta = meta.map_or_else(MetaView::default, |m| {
        let metrics = m.metrics();
        let r = metrics.borrow();
        MetaView {
            leader: r.current_leader,
            term: r.current_term,
            last_applied: r.last_applied.map(|l| l.index),
            members: (r.membership_config.membership().nodes())
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
        }
    });
    ClusterView {
        node,
        log: mesh.log.clone(),
        head: mesh.head,
        commit: mesh.commit,
        followers: (mesh.followers.iter())
            .map(|&(node, lag_records)| Follower {
                node,
                lag_records,
                link_up: links_up.contains(&node),
            })
            .collect(),
        replicas: (mesh.replicas.iter())
            .map(|(log, head, commit)| Replica {
                log: log.clone(),
                head: *head,
                commit: *commit,
            })
            .collect(),
        meta,
    }
}

impl ClusterView {
    /// The `rumq_cluster_*` gauges.
    pub fn encode(&self, out: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let plain = [
            (
                "cluster_log_head",
                "The head (next offset) of the log this node writes.",
                self.head,
            ),
            (
                "cluster_commit",
                "Below this offset ack_copies nodes hold every record of this node's log.",
                self.commit,
            ),
            (
                "cluster_meta_term",
                "The metadata group's Raft term.",
                self.meta.term,
            ),
            (
                "cluster_meta_leader",
                "The metadata group's leader as this node knows it (0: none).",
                self.meta.leader.unwrap_or(0),
            ),
            (
                "cluster_meta_last_applied",
                "The index of the last metadata entry applied here.",
                self.meta.last_applied.unwrap_or(0),
            ),
        ];
        for (name, help, value) in plain {
            gauge(value).encode(out.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let help = "Records a follower is behind this node's log.";
        let mut lag = out.encode_descriptor(
            "cluster_follower_lag_records",
            help,
            None,
            MetricType::Gauge,
        )?;
        for f in &self.followers {
            let node = f.node.to_string();
            gauge(f.lag_records).encode(lag.encode_family(&[("follower", node.as_str())])?)?;
        }
        let help = "1 when the data link to a peer is up.";
        let mut up = out.encode_descriptor("cluster_peer_up", help, None, MetricType::Gauge)?;
        for f in &self.followers {
            let node = f.node.to_string();
            gauge(u64::from(f.link_up)).encode(up.encode_family(&[("peer", node.as_str())])?)?;
        }
        let help = "Records of another node's log held here (its head here).";
        let mut held =
            out.encode_descriptor("cluster_replica_head", help, None, MetricType::Gauge)?;
        for r in &self.replicas {
            gauge(r.head).encode(held.encode_family(&[("log", r.log.as_str())])?)?;
        }
        Ok(())
    }
}

fn gauge(v: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}
