//! What Raft nodes say to each other, as values a transport carries (serde), and the
//! receiving end: [`RaftServer::serve`] hands a request to the local Raft node and
//! returns its reply. A transport carries a `RaftRpc` to the target, calls its
//! server, and carries the `RaftReply` back; it never looks inside either.

use std::io::Cursor;

use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use crate::types::{Member, MetaRaft, RaftNodeId, TypeConfig};

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
}

/// The receiving end of the Raft RPCs of one node; cheap to clone.
#[derive(Clone)]
pub struct RaftServer {
    raft: MetaRaft,
}

impl std::fmt::Debug for RaftServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftServer").finish_non_exhaustive()
    }
}

impl RaftServer {
    pub(crate) fn new(raft: MetaRaft) -> RaftServer {
        RaftServer { raft }
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
        }
    }
}
