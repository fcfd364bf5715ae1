//! openraft's side of [`MetaState`]: applying committed entries, and snapshots.
//!
//! The state lives in memory, shared with [`crate::Meta`]'s readers. Each snapshot
//! (openraft builds one every `snapshot_logs_since_last` entries, then purges the log
//! behind it) is written to `snapshot.json` before openraft hears of it, and so is an
//! installed one: at open, the state starts from that file, and openraft replays the
//! log's committed entries after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::command::{MetaChange, MetaCommand, MetaResponse, OwnerChange, SharedChange};
use crate::durable;
use crate::error::StoreError;
use crate::state::MetaState;
use crate::types::{Entry, EntryId, Member, Membership, RaftNodeId, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot.json";

/// The state machine of one node; clones share it (the snapshot builder is a clone).
#[derive(Debug, Clone)]
pub struct StateMachine {
    state: Arc<RwLock<MetaState>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    path: PathBuf,
    builds: Arc<AtomicU64>,
    changes: Option<mpsc::Sender<MetaChange>>,
}

/// `snapshot.json`: the snapshot's meta and the state it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftNodeId, Member>,
    state: MetaState,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Result<Snapshot<TypeConfig>, StorageError<RaftNodeId>> {
        let data = serde_json::to_vec(&self.state)
            .map_err(|e| StorageIOError::read_snapshot(Some(self.meta.signature()), &e))?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl StateMachine {
    /// Opens the state machine of the store in `dir`: the last snapshot's state, or
    /// an empty one.
    pub fn open(dir: &Path) -> Result<StateMachine, StoreError> {
        let path = dir.join(SNAPSHOT_FILE);
        let snapshot: Option<StoredSnapshot> = durable::read_json(&path)?;
        let state = snapshot
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_default();
        Ok(StateMachine {
            state: Arc::new(RwLock::new(state)),
            snapshot: Arc::new(Mutex::new(snapshot)),
            path,
            builds: Arc::new(AtomicU64::new(0)),
            changes: None,
        })
    }

    /// Tell `tx` of every change of a session's owner, and of the nodes of a shared
    /// group, this machine applies, in Raft order. Applying waits for room in `tx`: its reader must keep up.
    pub fn notify_changes(&mut self, tx: mpsc::Sender<MetaChange>) {
        self.changes = Some(tx);
    }

    async fn send_changes(&self, changes: Vec<MetaChange>) {
        let Some(tx) = &self.changes else {
            return;
        };
        for change in changes {
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }

    /// The state, shared with readers.
    pub(crate) fn shared(&self) -> Arc<RwLock<MetaState>> {
        self.state.clone()
    }

    fn read(&self) -> Result<MetaState, StorageError<RaftNodeId>> {
        let state = self
            .state
            .read()
            .map_err(|_| StorageIOError::read_state_machine(&StoreError::Poisoned))?;
        Ok(state.clone())
    }

    fn keep(&self, stored: StoredSnapshot) -> Result<(), StorageError<RaftNodeId>> {
        let signature = Some(stored.meta.signature());
        durable::write_json(&self.path, &stored)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        let mut current = self
            .snapshot
            .lock()
            .map_err(|_| StorageIOError::write_snapshot(signature, &StoreError::Poisoned))?;
        *current = Some(stored);
        Ok(())
    }
}

/// What applying `command` at `index` (it answered `response`, leaving `state`)
/// changed that the broker hears of.
fn change_of(
    state: &MetaState,
    command: MetaCommand,
    response: &MetaResponse,
    index: u64,
) -> Option<MetaChange> {
    match (command, response) {
        (
            MetaCommand::Own {
                client_id, node, ..
            },
            MetaResponse::Owned { .. },
        ) => Some(MetaChange::Owner(OwnerChange {
            client_id,
            node,
            index,
        })),
        (MetaCommand::JoinShared { group, .. }, MetaResponse::Joined { added: true })
        | (MetaCommand::LeaveShared { group, .. }, MetaResponse::Left { removed: true }) => {
            let nodes = state.group_nodes(&group);
            Some(MetaChange::Shared(SharedChange { group, nodes }))
        }
        _ => None,
    }
}

/// What `after` has that `before` did not: new owners (as changes at `index`), and
/// the groups whose nodes differ.
fn changes_between(before: &MetaState, after: &MetaState, index: u64) -> Vec<MetaChange> {
    let owners = after
        .owners
        .iter()
        .filter(|(client_id, node)| before.owners.get(*client_id) != Some(node))
        .map(|(client_id, node)| {
            MetaChange::Owner(OwnerChange {
                client_id: client_id.clone(),
                node: *node,
                index,
            })
        });
    let groups: std::collections::BTreeSet<&String> =
        before.shared.keys().chain(after.shared.keys()).collect();
    let shared = groups.into_iter().filter_map(|group| {
        let nodes = after.group_nodes(group);
        (before.group_nodes(group) != nodes).then(|| {
            MetaChange::Shared(SharedChange {
                group: group.clone(),
                nodes,
            })
        })
    });
    owners.chain(shared).collect()
}

fn apply_one(state: &mut MetaState, entry: Entry) -> MetaResponse {
    match entry.payload {
        EntryPayload::Blank => {
            state.last_applied = Some(entry.log_id);
            MetaResponse::Noop
        }
        EntryPayload::Normal(command) => state.apply(entry.log_id, &command),
        EntryPayload::Membership(membership) => {
            state.last_applied = Some(entry.log_id);
            state.membership = StoredMembership::new(Some(entry.log_id), membership);
            MetaResponse::Noop
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftNodeId>> {
        let state = self.read()?;
        let build = self.builds.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match state.last_applied {
            Some(id) => format!("{}-{}-{build}", id.leader_id, id.index),
            None => format!("none-{build}"),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, state };
        let snapshot = stored.to_snapshot()?;
        self.keep(stored)?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<EntryId>, Membership), StorageError<RaftNodeId>> {
        let state = self.read()?;
        Ok((state.last_applied, state.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError<RaftNodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let watched = self.changes.is_some();
        let mut changes = Vec::new();
        let responses = {
            let mut state = self
                .state
                .write()
                .map_err(|_| StorageIOError::write_state_machine(&StoreError::Poisoned))?;
            entries
                .into_iter()
                .map(|entry| {
                    let index = entry.log_id.index;
                    let touched = match &entry.payload {
                        EntryPayload::Normal(command) if watched => Some(command.clone()),
                        _ => None,
                    };
                    let response = apply_one(&mut state, entry);
                    if let Some(change) =
                        touched.and_then(|c| change_of(&state, c, &response, index))
                    {
                        changes.push(change);
                    }
                    response
                })
                .collect()
        };
        self.send_changes(changes).await;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftNodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftNodeId>> {
        let mut state: MetaState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        self.keep(StoredSnapshot {
            meta: meta.clone(),
            state: state.clone(),
        })?;
        let changes = {
            let mut current = self
                .state
                .write()
                .map_err(|_| StorageIOError::write_state_machine(&StoreError::Poisoned))?;
            let changes = self.changes.as_ref().map(|_| {
                let index = meta.last_log_id.map_or(0, |id| id.index);
                changes_between(&current, &state, index)
            });
            *current = state;
            changes.unwrap_or_default()
        };
        self.send_changes(changes).await;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftNodeId>> {
        let current = self
            .snapshot
            .lock()
            .map_err(|_| StorageIOError::read_snapshot(None, &StoreError::Poisoned))?
            .clone();
        current.map(|stored| stored.to_snapshot()).transpose()
    }
}

#[cfg(test)]
mod tests {
    use mesh::{Incarnation, LogId, NodeId};
    use openraft::{CommittedLeaderId, LogId as RaftLogId};

    use super::*;
    use crate::command::MetaCommand;

    fn entry(index: u64, command: MetaCommand) -> Entry {
        Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    #[tokio::test]
    async fn a_built_snapshot_is_the_state_after_reopen_and_installs_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut machine = StateMachine::open(dir.path()).unwrap();
        let log = LogId {
            node: NodeId(1),
            incarnation: Incarnation(1),
        };
        let own = MetaCommand::Own {
            client_id: "c".into(),
            node: NodeId(2),
            expected: None,
        };
        let answers = machine
            .apply([entry(1, MetaCommand::OpenLog { log }), entry(2, own)])
            .await
            .unwrap();
        assert_eq!(
            answers,
            [MetaResponse::Opened, MetaResponse::Owned { previous: None }]
        );
        let snapshot = machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(2));
        let before = machine.read().unwrap();

        let mut reopened = StateMachine::open(dir.path()).unwrap();
        assert_eq!(reopened.read().unwrap(), before);
        assert_eq!(
            reopened.applied_state().await.unwrap().0,
            before.last_applied
        );

        let other = tempfile::tempdir().unwrap();
        let mut installer = StateMachine::open(other.path()).unwrap();
        installer
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(installer.read().unwrap(), before);
        let current = installer.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
        assert_eq!(
            StateMachine::open(other.path()).unwrap().read().unwrap(),
            before
        );
    }
}
