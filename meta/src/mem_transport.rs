//! An in-memory [`RaftTransport`] for tests: every node of a test cluster registers its
//! [`RaftServer`] with one [`MemNetwork`], and the test cuts and heals links between
//! them. Each RPC and reply goes through JSON, as on a real link, so what the broker's
//! transport must carry is exercised too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use mesh::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::network::{RaftTransport, ReplyFuture, TransportError};
use crate::rpc::{RaftRpc, RaftServer};

/// The links between a test's nodes.
#[derive(Debug, Default)]
pub struct MemNetwork {
    inner: Mutex<Links>,
}

#[derive(Debug, Default)]
struct Links {
    servers: BTreeMap<NodeId, RaftServer>,
    /// Cut links, each as (lower id, higher id): a cut drops both directions.
    cut: BTreeSet<(NodeId, NodeId)>,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl MemNetwork {
    /// A network with no nodes and no cut links.
    pub fn new() -> Arc<MemNetwork> {
        Arc::new(MemNetwork::default())
    }

    /// The transport node `from` sends on.
    pub fn transport(self: &Arc<Self>, from: NodeId) -> Arc<dyn RaftTransport> {
        Arc::new(MemTransport {
            from,
            net: self.clone(),
        })
    }

    /// `node` answers RPCs through `server` (replacing an earlier one: a restart).
    pub fn register(&self, node: NodeId, server: RaftServer) {
        self.links().servers.insert(node, server);
    }

    /// `node` answers nothing any more (it crashed or shut down).
    pub fn unregister(&self, node: NodeId) {
        self.links().servers.remove(&node);
    }

    /// Drops every RPC between `a` and `b`, both ways, until healed.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.links().cut.insert(pair(a, b));
    }

    /// Cuts every link between a node of `side` and a node not in it.
    pub fn partition(&self, side: &[NodeId], rest: &[NodeId]) {
        for a in side {
            for b in rest {
                self.cut(*a, *b);
            }
        }
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.links().cut.clear();
    }

    /// The server `to` answers with, if `from` can reach it.
    fn route(&self, from: NodeId, to: NodeId) -> Result<RaftServer, TransportError> {
        let links = self.links();
        if links.cut.contains(&pair(from, to)) {
            return Err(TransportError::Unreachable {
                node: to,
                reason: "the link is cut".to_string(),
            });
        }
        let server = links.servers.get(&to).cloned();
        server.ok_or_else(|| TransportError::Unreachable {
            node: to,
            reason: "the node is down".to_string(),
        })
    }

    fn links(&self) -> MutexGuard<'_, Links> {
        // A test that panicked while holding the lock has failed already; its links are
        // still a consistent set.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug)]
struct MemTransport {
    from: NodeId,
    net: Arc<MemNetwork>,
}

/// `value` encoded and decoded as a link would carry it.
fn through_json<T: Serialize + DeserializeOwned>(
    value: &T,
    node: NodeId,
) -> Result<T, TransportError> {
    let failed = |e: serde_json::Error| TransportError::Failed {
        node,
        reason: e.to_string(),
    };
    serde_json::from_slice(&serde_json::to_vec(value).map_err(failed)?).map_err(failed)
}

impl RaftTransport for MemTransport {
    fn send(&self, target: NodeId, rpc: RaftRpc) -> ReplyFuture {
        let (net, from) = (self.net.clone(), self.from);
        Box::pin(async move {
            let server = net.route(from, target)?;
            let reply = server.serve(through_json(&rpc, target)?).await;
            // A link cut while the target worked loses the reply.
            net.route(from, target)?;
            through_json(&reply, target)
        })
    }
}
