//! The openraft type configuration, and how mesh node ids map to Raft node ids.

use std::io::Cursor;

use mesh::NodeId;

use crate::command::{MetaCommand, MetaResponse};

openraft::declare_raft_types!(
    /// rumq's metadata group: entries carry [`MetaCommand`]s, applying one answers a
    /// [`MetaResponse`]; nodes are `u64` (a mesh `NodeId` widened) with their peer address.
    pub TypeConfig:
        D = MetaCommand,
        R = MetaResponse,
);

/// A Raft node id: the mesh `NodeId`, widened (openraft wants `Default` and serde).
pub type RaftNodeId = u64;
/// A member as Raft stores it: its peer address (`cluster.peers`).
pub type Member = openraft::BasicNode;
/// A Raft entry's position: term, leader and index.
pub type EntryId = openraft::LogId<RaftNodeId>;
/// The membership in force, with the entry that set it.
pub type Membership = openraft::StoredMembership<RaftNodeId, Member>;
/// The Raft instance of this group.
pub type MetaRaft = openraft::Raft<TypeConfig>;
/// One entry of the Raft log.
pub type Entry = openraft::Entry<TypeConfig>;

/// The Raft id of a mesh node.
pub fn raft_id(node: NodeId) -> RaftNodeId {
    u64::from(node.0)
}

/// The mesh node of a Raft id; `None` for 0 and for ids above 255, which no member has.
pub fn mesh_node(id: RaftNodeId) -> Option<NodeId> {
    match u8::try_from(id) {
        Ok(0) | Err(_) => None,
        Ok(raw) => Some(NodeId(raw)),
    }
}
