//! What Raft nodes say to each other, as values a transport carries (serde), and the
//! receiving end: [`RaftServer::serve`] hands a request to the local Raft node and
//! returns its reply. A transport carries a `RaftRpc` to the target, calls its
//! server, and carries the `RaftReply` back; it never looks inside either.

use std::io::Cursor;

use mesh::NodeId;
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use crate::command::{Applied, MetaCommand};
use crate::error::MetaError;
use crate::handle::client_write;
use crate::types::{Member, MetaRaft, RaftNodeId, TypeConfig};
use crate::wire;

/// A request from one Raft node to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Entries to append, or a heartbeat when there are none.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A candidate asks for a vote.
    Vote(VoteRequest<RaftNodeId>),
    /// One chunk of a snapshot (openraft's chunked transfer; this crate's network
    /// sends whole snapshots, `FullSnapshot`, and serves chunks for completeness).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A whole snapshot, for a follower whose next entry the leader has purged.
    FullSnapshot {
        /// The leader's vote.
        vote: Vote<RaftNodeId>,
        /// What the snapshot covers.
        meta: SnapshotMeta<RaftNodeId, Member>,
        /// The state as JSON.
        data: Vec<u8>,
    },
    /// A command proposed on a node that is not the leader, forwarded to the leader
    /// (not Raft's own message: rumq's forwarding, [`crate::Meta::submit`]).
    Propose(MetaCommand),
}

/// The target's answer to a [`RaftRpc`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// Answers `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// Answers `Vote`.
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// Answers `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    ),
    /// Answers `FullSnapshot`.
    FullSnapshot(Result<SnapshotResponse<RaftNodeId>, Fatal<RaftNodeId>>),
    /// Answers `Propose`.
    Propose(Result<Applied, ProposeRefused>),
}

/// Why a forwarded proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposeRefused {
    /// The node asked is not the leader (any more); it names the leader it knows.
    NotLeader {
        /// The leader it knows of.
        #[serde(with = "wire::opt_node")]
        leader: Option<NodeId>,
    },
    /// Anything else, as the leader's error said it.
    Failed(String),
}

impl From<MetaError> for ProposeRefused {
    fn from(e: MetaError) -> ProposeRefused {
        match e {
            MetaError::NotLeader { leader } => ProposeRefused::NotLeader { leader },
            other => ProposeRefused::Failed(other.to_string()),
        }
    }
}

impl From<ProposeRefused> for MetaError {
    fn from(r: ProposeRefused) -> MetaError {
        match r {
            ProposeRefused::NotLeader { leader } => MetaError::NotLeader { leader },
            ProposeRefused::Failed(why) => MetaError::Raft(why),
        }
    }
}

/// The receiving end of the Raft RPCs of one node; cheap to clone.
#[derive(Clone)]
pub struct RaftServer {
    raft: MetaRaft,
    propose_timeout_ms: u64,
}

impl std::fmt::Debug for RaftServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftServer").finish_non_exhaustive()
    }
}

impl RaftServer {
    pub(crate) fn new(raft: MetaRaft, propose_timeout_ms: u64) -> RaftServer {
        RaftServer {
            raft,
            propose_timeout_ms,
        }
    }

    /// Hands `rpc` to the local Raft node and returns its reply.
    pub async fn serve(&self, rpc: RaftRpc) -> RaftReply {
        match rpc {
            RaftRpc::AppendEntries(req) => {
                RaftReply::AppendEntries(self.raft.append_entries(req).await)
            }
            RaftRpc::Vote(req) => RaftReply::Vote(self.raft.vote(req).await),
            RaftRpc::InstallSnapshot(req) => {
                RaftReply::InstallSnapshot(self.raft.install_snapshot(req).await)
            }
            RaftRpc::FullSnapshot { vote, meta, data } => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                };
                RaftReply::FullSnapshot(self.raft.install_full_snapshot(vote, snapshot).await)
            }
            RaftRpc::Propose(command) => {
                let written = client_write(&self.raft, command, self.propose_timeout_ms).await;
                RaftReply::Propose(written.map_err(ProposeRefused::from))
            }
        }
    }
}
