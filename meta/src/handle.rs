//! [`Meta`]: one node of the metadata group, opened from its directory, and what the
//! broker asks of it: propose a command, read the applied state, know the leader.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh::NodeId;
use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftMetrics;
use openraft::{Config, SnapshotPolicy};
use tokio::sync::{mpsc, watch};

use crate::command::{Applied, MetaChange, MetaCommand, MetaResponse};
use crate::error::MetaError;
use crate::log_store::LogStore;
use crate::network::{Network, RaftTransport};
use crate::rpc::{RaftReply, RaftRpc, RaftServer};
use crate::state::MetaState;
use crate::state_machine::StateMachine;
use crate::types::{mesh_node, raft_id, Member, MetaRaft, RaftNodeId};

/// How to run one node of the metadata group.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This node (`cluster.node_id`).
    pub node: NodeId,
    /// Where its Raft log, vote and snapshot live (created if missing).
    pub dir: PathBuf,
    /// Every voter with its peer address (`cluster.peers` plus this node). The
    /// lowest id initializes the group, once, on the first boot of a fresh store.
    pub members: BTreeMap<NodeId, String>,
    /// How often the leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// A follower without a heartbeat for a random time in this range campaigns.
    pub election_timeout_min_ms: u64,
    /// The range's upper end.
    pub election_timeout_max_ms: u64,
    /// How long [`Meta::propose`] waits for its command to be applied.
    pub propose_timeout_ms: u64,
    /// A snapshot is built after this many entries, and the log behind it purged.
    pub snapshot_entries_max: u64,
    /// Where to tell of every change of a session's owner, and of the nodes with
    /// members of a shared group, in Raft order (none: not told). Applying waits for
    /// room: the reader must keep up.
    pub changes: Option<mpsc::Sender<MetaChange>>,
}

impl MetaConfig {
    /// A configuration with openraft's timing (heartbeat 50 ms, election 150-300 ms),
    /// proposals that wait up to 5 s, and a snapshot every 1000 entries.
    pub fn new(
        node: NodeId,
        dir: impl Into<PathBuf>,
        members: BTreeMap<NodeId, String>,
    ) -> MetaConfig {
        MetaConfig {
            node,
            dir: dir.into(),
            members,
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            propose_timeout_ms: 5_000,
            snapshot_entries_max: 1_000,
            changes: None,
        }
    }

    fn raft_config(&self) -> Result<Config, MetaError> {
        let config = Config {
            cluster_name: "rumq-meta".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_entries_max),
            // Behind a snapshot nothing is kept: a lagging follower gets the snapshot.
            max_in_snapshot_log_to_keep: 0,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| MetaError::Config(e.to_string()))
    }

    fn check(&self) -> Result<(), MetaError> {
        if !self.members.contains_key(&self.node) {
            return Err(MetaError::Config(format!(
                "node {} is not among the members",
                self.node
            )));
        }
        if self.members.contains_key(&NodeId(0)) {
            return Err(MetaError::Config("node id 0 is never a node".to_string()));
        }
        Ok(())
    }
}

/// One node of the metadata group. Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct Meta {
    node: NodeId,
    raft: MetaRaft,
    state: Arc<RwLock<MetaState>>,
    transport: Arc<dyn RaftTransport>,
    propose_timeout_ms: u64,
    retry_ms: u64,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Meta {
    /// Opens the node's store in `config.dir` (creating it) and starts its Raft node,
    /// sending on `transport`. On the first boot of a fresh store, the member with
    /// the lowest id initializes the group; never on a restart (openraft#1535), and
    /// never from another member, so two nodes cannot found two groups.
    ///
    /// A node whose store was wiped counts as fresh: if it is the lowest id, it must
    /// not be restarted with the others' stores intact (membership changes, issue 23).
    pub async fn open(
        config: MetaConfig,
        transport: Arc<dyn RaftTransport>,
    ) -> Result<Meta, MetaError> {
        config.check()?;
        let log = LogStore::open(&config.dir)?;
        let fresh = log.is_fresh()?;
        let mut machine = StateMachine::open(&config.dir)?;
        if let Some(tx) = &config.changes {
            machine.notify_changes(tx.clone());
        }
        let state = machine.shared();
        let raft_config = Arc::new(config.raft_config()?);
        let raft = MetaRaft::new(
            raft_id(config.node),
            raft_config,
            Network::new(transport.clone()),
            log,
            machine,
        )
        .await
        .map_err(|e| MetaError::Stopped(e.to_string()))?;
        let founder = config.members.keys().next() == Some(&config.node);
        if fresh && founder {
            let members: BTreeMap<RaftNodeId, Member> = config
                .members
                .iter()
                .map(|(node, addr)| (raft_id(*node), Member { addr: addr.clone() }))
                .collect();
            tracing::info!(node = %config.node, members = members.len(), "initializing the metadata group");
            raft.initialize(members)
                .await
                .map_err(|e| MetaError::Raft(e.to_string()))?;
        }
        Ok(Meta {
            node: config.node,
            raft,
            state,
            transport,
            propose_timeout_ms: config.propose_timeout_ms,
            retry_ms: config.heartbeat_ms,
        })
    }

    /// Proposes `command` and waits until it is applied, returning what applying it
    /// answered (a refusal is an answer, not an error). Only the leader proposes:
    /// elsewhere this returns [`MetaError::NotLeader`] naming the leader, and the
    /// caller forwards or retries there ([`Meta::submit`] does). After
    /// [`MetaError::Timeout`] the command may still be applied.
    pub async fn propose(&self, command: MetaCommand) -> Result<MetaResponse, MetaError> {
        let applied = client_write(&self.raft, command, self.propose_timeout_ms).await?;
        Ok(applied.response)
    }

    /// Has `command` applied wherever the leader is: proposed here on the leader,
    /// forwarded to it from elsewhere, and tried again (every heartbeat) while an
    /// election runs or the leader moves, all within the proposal timeout. As
    /// [`Meta::propose`], with the entry's index.
    pub async fn submit(&self, command: MetaCommand) -> Result<Applied, MetaError> {
        let timeout_ms = self.propose_timeout_ms;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        let tries = async {
            loop {
                let tried = match self.leader() {
                    Some(leader) if leader == self.node => {
                        client_write(&self.raft, command.clone(), timeout_ms).await
                    }
                    Some(leader) => self.forward(leader, command.clone()).await,
                    None => Err(MetaError::NotLeader { leader: None }),
                };
                match tried {
                    Err(MetaError::NotLeader { .. }) | Err(MetaError::Unreachable(_)) => {
                        tokio::time::sleep(Duration::from_millis(self.retry_ms)).await
                    }
                    done => return done,
                }
            }
        };
        tokio::time::timeout_at(deadline, tries)
            .await
            .map_err(|_| MetaError::Timeout { timeout_ms })?
    }

    async fn forward(&self, leader: NodeId, command: MetaCommand) -> Result<Applied, MetaError> {
        let reply = self
            .transport
            .send(leader, RaftRpc::Propose(command))
            .await
            .map_err(|e| MetaError::Unreachable(e.to_string()))?;
        match reply {
            RaftReply::Propose(result) => result.map_err(MetaError::from),
            _ => Err(MetaError::Raft(format!(
                "node {leader} answered a proposal with another reply"
            ))),
        }
    }

    /// The shared groups with members on `node`, as applied on this node.
    pub fn groups_of(&self, node: NodeId) -> std::collections::BTreeSet<String> {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state
            .shared
            .iter()
            .filter(|(_, members)| members.iter().any(|(n, _)| *n == node))
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// Who owns `client_id` as applied on this node, and the index of the last entry
    /// applied (possibly behind the leader's).
    pub fn owner(&self, client_id: &str) -> (Option<NodeId>, u64) {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let applied = state.last_applied.map_or(0, |id| id.index);
        (state.owners.get(client_id).copied(), applied)
    }

    /// The metadata as applied on this node: up to date on the leader once
    /// `propose` returned, and possibly behind on a follower.
    pub fn state(&self) -> MetaState {
        // A panic while applying stops openraft; the last state written is still whole.
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.clone()
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .and_then(mesh_node)
    }

    /// openraft's metrics: role, term, leader, last log and applied index. Waiting on
    /// them (`changed()`) is how to wait for an election or an apply.
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<RaftNodeId, Member>> {
        self.raft.metrics()
    }

    /// The receiving end of this node's Raft RPCs, for the transport.
    pub fn server(&self) -> RaftServer {
        RaftServer::new(self.raft.clone(), self.propose_timeout_ms)
    }

    /// Stops the Raft node; its files stay, for the next [`Meta::open`].
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| MetaError::Stopped(e.to_string()))
    }
}

/// Proposes `command` to `raft` and waits, at most `timeout_ms`, until it is applied.
pub(crate) async fn client_write(
    raft: &MetaRaft,
    command: MetaCommand,
    timeout_ms: u64,
) -> Result<Applied, MetaError> {
    let write = raft.client_write(command);
    let result = tokio::time::timeout(Duration::from_millis(timeout_ms), write)
        .await
        .map_err(|_| MetaError::Timeout { timeout_ms })?;
    match result {
        Ok(response) => Ok(Applied {
            response: response.data,
            index: response.log_id.index,
        }),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            Err(MetaError::NotLeader {
                leader: forward.leader_id.and_then(mesh_node),
            })
        }
        Err(RaftError::APIError(other)) => Err(MetaError::Raft(other.to_string())),
        Err(RaftError::Fatal(fatal)) => Err(MetaError::Stopped(fatal.to_string())),
    }
}
