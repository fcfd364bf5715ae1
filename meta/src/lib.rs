//! rumq's cluster metadata, replicated with openraft 0.9 among the cluster's nodes:
//! which logs exist (each node incarnation writes one, open or sealed at an end),
//! which node owns each client id's session, and who is in each shared subscription
//! group. It carries kB/s, never messages: those travel on the mesh's log replication.
//!
//! | module | owns |
//! |---|---|
//! | `command` | [`MetaCommand`] (what a node proposes) and [`MetaResponse`] (what applying it answered) |
//! | `handle` | [`Meta`]: a node opened from its directory; propose, read the state, know the leader |
//! | `log_store` | [`LogStore`]: the Raft log and vote in files, fsynced before openraft is told |
//! | `log_file` | the log file's records (length, CRC, JSON) and the torn tail a crash leaves |
//! | `durable` | small files replaced whole: temporary, fsync, rename, fsync the directory |
//! | `error` | [`StoreError`], [`MetaError`] |
//! | `rpc` | [`RaftRpc`] / [`RaftReply`] (serde) and [`RaftServer`], their receiving end |
//! | `network` | [`RaftTransport`] (what the embedder provides) and openraft's network over it |
//! | `mem_transport` | [`MemNetwork`]: an in-memory transport whose links tests cut |
//! | `state` | [`MetaState`]: the pure, deterministic state machine, and its JSON image |
//! | `state_machine` | [`StateMachine`]: applies entries to the state, builds, keeps and installs snapshots |
//! | `types` | the openraft type configuration, and mesh node id ↔ Raft node id |
//! | `wire` | serde for the `mesh` ids, which carry none of their own |

// openraft's errors are large (a StorageError is over 200 bytes); they travel its
// storage and network calls, a few a second, never the message path.
#![allow(clippy::result_large_err)]

mod command;
mod durable;
mod error;
mod handle;
mod log_file;
mod log_store;
mod mem_transport;
mod network;
mod rpc;
mod state;
mod state_machine;
mod types;
mod wire;

pub use command::{
    Applied, MetaChange, MetaCommand, MetaResponse, OwnerChange, Refusal, SharedChange,
};
pub use durable::replace as replace_file;
pub use error::{MetaError, StoreError};
pub use handle::{Meta, MetaConfig};
pub use log_store::LogStore;
pub use mem_transport::MemNetwork;
pub use network::{RaftTransport, ReplyFuture, TransportError};
pub use rpc::{ProposeRefused, RaftReply, RaftRpc, RaftServer};
pub use state::{LogStatus, MetaState};
pub use state_machine::StateMachine;
pub use types::{
    mesh_node, raft_id, Entry, EntryId, Member, Membership, MetaRaft, RaftNodeId, TypeConfig,
};
