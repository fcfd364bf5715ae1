//! What the cluster agrees on: the commands a node proposes through Raft, and what
//! applying one answered. Every command is decided by the state it meets, so a refusal
//! is a response (applied on every node alike), not an error.

use std::fmt;

use mesh::{LogId, NodeId};
use serde::{Deserialize, Serialize};

use crate::wire;

/// A change to the cluster's metadata, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A node started a new incarnation and will write this log. Refused if the
    /// registry already holds this incarnation of the node or a later one.
    OpenLog {
        /// The new log.
        #[serde(with = "wire::log")]
        log: LogId,
    },
    /// The log ends at `end` and is never written again. Sealing again at the same
    /// end is a no-op; refused for an unknown log or one sealed at another end.
    SealLog {
        /// The log to seal.
        #[serde(with = "wire::log")]
        log: LogId,
        /// Its end offset: one past its last record.
        end: u64,
    },
    /// Compare-and-set of a session's owner: `node` owns `client_id` if the current
    /// owner is `expected` (`None`: nobody owns it), else it is refused naming the
    /// current owner.
    Own {
        /// The session's client id.
        client_id: String,
        /// The node that takes it.
        #[serde(with = "wire::node")]
        node: NodeId,
        /// The owner the proposer saw.
        #[serde(with = "wire::opt_node")]
        expected: Option<NodeId>,
    },
    /// `node` gives `client_id` up; refused unless `node` owns it.
    Release {
        /// The session's client id.
        client_id: String,
        /// Its owner.
        #[serde(with = "wire::node")]
        node: NodeId,
    },
    /// `client_id`, connected to `node`, is a member of the shared subscription group.
    JoinShared {
        /// The `$share/<group>/<filter>` group, as the router names it.
        group: String,
        /// Where the member is connected.
        #[serde(with = "wire::node")]
        node: NodeId,
        /// The member.
        client_id: String,
    },
    /// `client_id` on `node` leaves the group.
    LeaveShared {
        /// The group.
        group: String,
        /// Where the member was connected.
        #[serde(with = "wire::node")]
        node: NodeId,
        /// The member.
        client_id: String,
    },
}

/// What applying one Raft entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// A blank or membership entry: nothing of the metadata changed.
    Noop,
    /// `OpenLog` registered the log, open.
    Opened,
    /// `SealLog`: the log is sealed at `end`.
    Sealed {
        /// Where it ends.
        end: u64,
    },
    /// `Own` took the session.
    Owned {
        /// Who owned it before (the `expected` of the command).
        #[serde(with = "wire::opt_node")]
        previous: Option<NodeId>,
    },
    /// `Release`: nobody owns the session now.
    Released,
    /// `JoinShared`; `added` is false if the member was already in the group.
    Joined {
        /// Whether the group changed.
        added: bool,
    },
    /// `LeaveShared`; `removed` is false if the member was not in the group.
    Left {
        /// Whether the group changed.
        removed: bool,
    },
    /// The command met a state that refuses it; nothing changed.
    Refused(Refusal),
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// `OpenLog` of an incarnation not above the node's latest registered one.
    StaleIncarnation {
        /// The node's latest registered log.
        #[serde(with = "wire::log")]
        latest: LogId,
    },
    /// `SealLog` of a log the registry does not hold.
    UnknownLog,
    /// `SealLog` of a log already sealed at another end.
    SealedAt {
        /// The end it was sealed at.
        end: u64,
    },
    /// `Own` whose `expected` is not the current owner, or `Release` by a node that
    /// does not own the session.
    OwnerIs {
        /// The current owner.
        #[serde(with = "wire::opt_node")]
        current: Option<NodeId>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::StaleIncarnation { latest } => {
                write!(
                    f,
                    "the node's latest log is {latest}, a new incarnation must be above it"
                )
            }
            Refusal::UnknownLog => f.write_str("no such log"),
            Refusal::SealedAt { end } => write!(f, "the log is sealed at {end}"),
            Refusal::OwnerIs {
                current: Some(node),
            } => write!(f, "the session is owned by node {node}"),
            Refusal::OwnerIs { current: None } => f.write_str("nobody owns the session"),
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh::Incarnation;

    use super::*;

    #[test]
    fn commands_and_responses_round_trip_through_json() {
        let log = LogId {
            node: NodeId(2),
            incarnation: Incarnation(5),
        };
        let commands = [
            MetaCommand::OpenLog { log },
            MetaCommand::SealLog { log, end: 42 },
            MetaCommand::Own {
                client_id: "c".into(),
                node: NodeId(3),
                expected: None,
            },
            MetaCommand::Own {
                client_id: "c".into(),
                node: NodeId(3),
                expected: Some(NodeId(1)),
            },
            MetaCommand::Release {
                client_id: "c".into(),
                node: NodeId(3),
            },
            MetaCommand::JoinShared {
                group: "g".into(),
                node: NodeId(1),
                client_id: "c".into(),
            },
            MetaCommand::LeaveShared {
                group: "g".into(),
                node: NodeId(1),
                client_id: "c".into(),
            },
        ];
        for command in commands {
            let json = serde_json::to_string(&command).unwrap();
            assert_eq!(
                serde_json::from_str::<MetaCommand>(&json).unwrap(),
                command,
                "{json}"
            );
        }
        let refused = MetaResponse::Refused(Refusal::StaleIncarnation { latest: log });
        let json = serde_json::to_string(&refused).unwrap();
        assert_eq!(
            serde_json::from_str::<MetaResponse>(&json).unwrap(),
            refused
        );
    }

    #[test]
    fn node_id_zero_is_refused_on_the_way_in() {
        let json = r#"{"Release":{"client_id":"c","node":0}}"#;
        let err = serde_json::from_str::<MetaCommand>(json).unwrap_err();
        assert!(err.to_string().contains("node id 0"), "{err}");
    }
}

/// What a node's broker needs to hear of what its metadata node applies; see
/// [`crate::MetaConfig::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaChange {
    /// A session has a new owner.
    Owner(OwnerChange),
    /// A shared subscription group has members on other nodes than before.
    Shared(SharedChange),
}

/// The nodes with members of a shared subscription group, after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedChange {
    /// The group (`$share/{name}/{filter}`).
    pub group: String,
    /// The nodes with members of it now, in order (none: the group is gone).
    pub nodes: Vec<NodeId>,
}

/// A session's owner as applied: `node` took `client_id` at Raft entry `index`. What a
/// node that held the session before needs to close it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerChange {
    /// The session's client id.
    pub client_id: String,
    /// Its new owner.
    pub node: NodeId,
    /// The Raft entry that made it so (a snapshot's last entry for one installed).
    pub index: u64,
}

/// A proposal applied: what applying it answered, at which Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// What applying it answered.
    pub response: MetaResponse,
    /// The entry's index.
    pub index: u64,
}
