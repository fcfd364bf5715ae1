//! The metadata itself: a pure, deterministic state machine. `apply` decides every
//! command from the state alone (BTreeMaps, no clocks), so every node that applies the
//! same entries holds the same state, and a snapshot is this struct as JSON.

use std::collections::{BTreeMap, BTreeSet};

use mesh::{Incarnation, LogId, NodeId};
use serde::{Deserialize, Serialize};

use crate::command::{MetaCommand, MetaResponse, Refusal};
use crate::types::{EntryId, Membership};
use crate::wire;

/// Where a registered log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStatus {
    /// Its writer may still append.
    Open,
    /// Closed for good at `end` (one past its last record).
    Sealed {
        /// Where it ends.
        end: u64,
    },
}

/// The cluster's metadata as applied up to `last_applied`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StateImage", try_from = "StateImage")]
pub struct MetaState {
    /// The last Raft entry applied.
    pub last_applied: Option<EntryId>,
    /// The membership in force as of `last_applied`.
    pub membership: Membership,
    /// Every log ever opened, open or sealed.
    pub logs: BTreeMap<LogId, LogStatus>,
    /// Who owns each session, by client id.
    pub owners: BTreeMap<String, NodeId>,
    /// The members of each shared subscription group, in one order on every node.
    pub shared: BTreeMap<String, BTreeSet<(NodeId, String)>>,
}

impl MetaState {
    /// Applies one command at entry `at` and says what it did. A refused command
    /// changes nothing but `last_applied`.
    pub fn apply(&mut self, at: EntryId, command: &MetaCommand) -> MetaResponse {
        self.last_applied = Some(at);
        match command {
            MetaCommand::OpenLog { log } => self.open_log(*log),
            MetaCommand::SealLog { log, end } => self.seal_log(*log, *end),
            MetaCommand::Own {
                client_id,
                node,
                expected,
            } => self.own(client_id, *node, *expected),
            MetaCommand::Release { client_id, node } => self.release(client_id, *node),
            MetaCommand::JoinShared {
                group,
                node,
                client_id,
            } => {
                let added = self
                    .shared
                    .entry(group.clone())
                    .or_default()
                    .insert((*node, client_id.clone()));
                MetaResponse::Joined { added }
            }
            MetaCommand::LeaveShared {
                group,
                node,
                client_id,
            } => self.leave_shared(group, *node, client_id),
        }
    }

    /// The nodes with members of shared group `group`, in order, once each.
    pub fn group_nodes(&self, group: &str) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .shared
            .get(group)
            .map(|members| members.iter().map(|(node, _)| *node).collect())
            .unwrap_or_default();
        nodes.dedup();
        nodes
    }

    /// The latest log `node` registered, if any.
    pub fn latest_log(&self, node: NodeId) -> Option<LogId> {
        let first = LogId {
            node,
            incarnation: Incarnation(0),
        };
        let last = LogId {
            node,
            incarnation: Incarnation(u32::MAX),
        };
        self.logs
            .range(first..=last)
            .next_back()
            .map(|(log, _)| *log)
    }

    fn open_log(&mut self, log: LogId) -> MetaResponse {
        if let Some(latest) = self.latest_log(log.node) {
            if latest.incarnation >= log.incarnation {
                return MetaResponse::Refused(Refusal::StaleIncarnation { latest });
            }
        }
        self.logs.insert(log, LogStatus::Open);
        MetaResponse::Opened
    }

    fn seal_log(&mut self, log: LogId, end: u64) -> MetaResponse {
        match self.logs.get_mut(&log) {
            None => MetaResponse::Refused(Refusal::UnknownLog),
            Some(LogStatus::Sealed { end: sealed }) if *sealed != end => {
                MetaResponse::Refused(Refusal::SealedAt { end: *sealed })
            }
            Some(status) => {
                *status = LogStatus::Sealed { end };
                MetaResponse::Sealed { end }
            }
        }
    }

    fn own(&mut self, client_id: &str, node: NodeId, expected: Option<NodeId>) -> MetaResponse {
        let current = self.owners.get(client_id).copied();
        if current != expected {
            return MetaResponse::Refused(Refusal::OwnerIs { current });
        }
        self.owners.insert(client_id.to_string(), node);
        MetaResponse::Owned { previous: current }
    }

    fn release(&mut self, client_id: &str, node: NodeId) -> MetaResponse {
        let current = self.owners.get(client_id).copied();
        if current != Some(node) {
            return MetaResponse::Refused(Refusal::OwnerIs { current });
        }
        self.owners.remove(client_id);
        MetaResponse::Released
    }

    fn leave_shared(&mut self, group: &str, node: NodeId, client_id: &str) -> MetaResponse {
        let Some(members) = self.shared.get_mut(group) else {
            return MetaResponse::Left { removed: false };
        };
        let removed = members.remove(&(node, client_id.to_string()));
        if members.is_empty() {
            self.shared.remove(group);
        }
        MetaResponse::Left { removed }
    }
}

/// `MetaState` as JSON holds it: maps keyed by ids become lists, since JSON object
/// keys are strings.
#[derive(Serialize, Deserialize)]
struct StateImage {
    last_applied: Option<EntryId>,
    membership: Membership,
    logs: Vec<LogImage>,
    owners: Vec<OwnerImage>,
    shared: Vec<GroupImage>,
}

#[derive(Serialize, Deserialize)]
struct LogImage {
    #[serde(with = "wire::log")]
    log: LogId,
    status: LogStatus,
}

#[derive(Serialize, Deserialize)]
struct OwnerImage {
    client_id: String,
    #[serde(with = "wire::node")]
    node: NodeId,
}

#[derive(Serialize, Deserialize)]
struct GroupImage {
    group: String,
    members: Vec<OwnerImage>,
}

impl From<MetaState> for StateImage {
    fn from(state: MetaState) -> Self {
        let logs = state
            .logs
            .into_iter()
            .map(|(log, status)| LogImage { log, status })
            .collect();
        let owners = state
            .owners
            .into_iter()
            .map(|(client_id, node)| OwnerImage { client_id, node })
            .collect();
        let shared = state
            .shared
            .into_iter()
            .map(|(group, members)| GroupImage {
                group,
                members: members
                    .into_iter()
                    .map(|(node, client_id)| OwnerImage { client_id, node })
                    .collect(),
            })
            .collect();
        StateImage {
            last_applied: state.last_applied,
            membership: state.membership,
            logs,
            owners,
            shared,
        }
    }
}

impl TryFrom<StateImage> for MetaState {
    type Error = String;

    fn try_from(image: StateImage) -> Result<Self, String> {
        let mut state = MetaState {
            last_applied: image.last_applied,
            membership: image.membership,
            ..Self::default()
        };
        for LogImage { log, status } in image.logs {
            if state.logs.insert(log, status).is_some() {
                return Err(format!("log {log} is listed twice"));
            }
        }
        for OwnerImage { client_id, node } in image.owners {
            if state.owners.insert(client_id.clone(), node).is_some() {
                return Err(format!("client id {client_id:?} has two owners"));
            }
        }
        for GroupImage { group, members } in image.shared {
            let set = members.into_iter().map(|m| (m.node, m.client_id)).collect();
            state.shared.insert(group, set);
        }
        Ok(state)
    }
}

#[cfg(test)]
#[path = "state/tests.rs"]
mod tests;
