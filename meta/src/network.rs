//! openraft's network, over a [`RaftTransport`] that the embedder provides: the
//! broker carries RPCs on its authenticated peer links; tests use
//! [`crate::MemNetwork`].

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mesh::NodeId;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};

use crate::rpc::{RaftReply, RaftRpc};
use crate::types::{mesh_node, Member, RaftNodeId, TypeConfig};

/// The future of one RPC's reply.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Result<RaftReply, TransportError>> + Send>>;

/// Carries Raft RPCs to other nodes: the one thing this crate needs from the cluster's
/// links. `send` delivers `rpc` to `target`, where the embedder hands it to that
/// node's [`crate::RaftServer::serve`], and resolves to the reply it returned.
///
/// - It need not retry, order or time out: openraft times every RPC out, retries,
///   and backs off after [`TransportError::Unreachable`].
/// - `RaftRpc` and `RaftReply` are serde types; encode them as the link likes.
/// - It must not block: return a future, and let the link's task do the work.
pub trait RaftTransport: Send + Sync + Debug + 'static {
    /// Sends `rpc` to `target` and resolves to its reply.
    fn send(&self, target: NodeId, rpc: RaftRpc) -> ReplyFuture;
}

/// Why an RPC got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// No link to the node: openraft backs off before it tries again.
    #[error("node {node} is unreachable: {reason}")]
    Unreachable {
        /// The target.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The link failed while the RPC was on it: openraft may retry at once.
    #[error("rpc to node {node} failed: {reason}")]
    Failed {
        /// The target.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// openraft's network factory: one [`Connection`] per target, all over one transport.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    transport: Arc<dyn RaftTransport>,
}

impl Network {
    pub(crate) fn new(transport: Arc<dyn RaftTransport>) -> Network {
        Network { transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftNodeId, _node: &Member) -> Connection {
        Connection {
            transport: self.transport.clone(),
            target,
            node: mesh_node(target),
        }
    }
}

/// openraft's client to one target node.
#[derive(Debug)]
pub(crate) struct Connection {
    transport: Arc<dyn RaftTransport>,
    target: RaftNodeId,
    /// `None` if the Raft id is no mesh node (a bad membership): every RPC fails.
    node: Option<NodeId>,
}

/// An RPC error without a remote error of type `E`.
type RpcErr<E = openraft::error::Infallible> =
    RPCError<RaftNodeId, Member, RaftError<RaftNodeId, E>>;

fn transport_err<E: std::error::Error>(err: TransportError) -> RPCError<RaftNodeId, Member, E> {
    match err {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&err)),
        TransportError::Failed { .. } => RPCError::Network(NetworkError::new(&err)),
    }
}

/// A reply that does not answer the request sent: the peer speaks another protocol.
fn mismatched(target: RaftNodeId) -> NetworkError {
    let reason = format!("node {target} answered with a reply of another kind");
    NetworkError::new(&std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        reason,
    ))
}

impl Connection {
    async fn call(&self, rpc: RaftRpc) -> Result<RaftReply, TransportError> {
        let Some(node) = self.node else {
            let reason = format!("raft id {} is no mesh node (1..=255)", self.target);
            return Err(TransportError::Unreachable {
                node: NodeId(0),
                reason,
            });
        };
        self.transport.send(node, rpc).await
    }

    fn remote<E: std::error::Error>(&self, result: Result<RaftReply, TransportError>) -> RpcErr<E> {
        match result {
            Err(err) => transport_err(err),
            Ok(_) => RPCError::Network(mismatched(self.target)),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftNodeId>, RpcErr> {
        match self.call(RaftRpc::AppendEntries(rpc)).await {
            Ok(RaftReply::AppendEntries(reply)) => {
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.remote(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RpcErr> {
        match self.call(RaftRpc::Vote(rpc)).await {
            Ok(RaftReply::Vote(reply)) => {
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.remote(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftNodeId>, RpcErr<InstallSnapshotError>> {
        match self.call(RaftRpc::InstallSnapshot(rpc)).await {
            Ok(RaftReply::InstallSnapshot(reply)) => {
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.remote(other)),
        }
    }

    /// Sends the snapshot whole, in one RPC: the metadata's state is small.
    async fn full_snapshot(
        &mut self,
        vote: Vote<RaftNodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<RaftNodeId>, StreamingError<TypeConfig, Fatal<RaftNodeId>>> {
        let rpc = RaftRpc::FullSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            result = self.call(rpc) => result,
        };
        match result {
            Ok(RaftReply::FullSnapshot(reply)) => {
                reply.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(StreamingError::Network(mismatched(self.target))),
            Err(err @ TransportError::Unreachable { .. }) => {
                Err(StreamingError::Unreachable(Unreachable::new(&err)))
            }
            Err(err @ TransportError::Failed { .. }) => {
                Err(StreamingError::Network(NetworkError::new(&err)))
            }
        }
    }
}
