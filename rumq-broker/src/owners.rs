//! Who owns each client id in a cluster (docs/mesh.md, "Client ids"). A client id is
//! connected on one node at a time, as on a single node: a CONNECT here first makes
//! this node the id's owner through the metadata group (a compare-and-set, so two
//! nodes claiming at once are put in one order), and the router hears of every
//! owner the group applies for another node, which ends that session here.
//!
//! The same group keeps, for each shared subscription group, the nodes with members
//! of it (`shared_sync` says which groups have members here), and every router
//! hears of them, to give each message of a group to one node's members.
//!
//! Owns: the claim a CONNECT makes, the feed of what the metadata applies into the
//! router, and this node's entries in the shared groups.

use std::collections::BTreeSet;
use std::time::Duration;

use mesh::NodeId;
use meta::{Meta, MetaChange, MetaCommand, MetaError, MetaResponse, Refusal};
use router::PeerEvent;
use tokio::sync::{mpsc, watch};

use crate::driver::{RouterTx, ToRouter};

/// Compare-and-set attempts of one claim: each refusal names the owner that
/// another node set meanwhile, which the next attempt expects.
const CLAIM_TRIES: usize = 4;

/// Changes applied by the metadata group and not yet handed to the router.
pub const CHANGES_QUEUE: usize = 1024;

/// How long a failed update of this node's shared groups waits before the next.
const SYNC_RETRY: Duration = Duration::from_secs(1);

/// A node's claims on client ids; shared by its connections.
#[derive(Debug, Clone)]
pub struct Owners {
    meta: Meta,
    timeout: Duration,
}

/// Why a CONNECT could not make this node its client id's owner.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The metadata group did not apply the claim (no majority, no leader, a stopped
    /// Raft node), or not within `cluster.claim_timeout_ms`.
    #[error("{0}")]
    Meta(#[from] MetaError),
    /// Other nodes kept taking the id while this one tried.
    #[error("the owner of the client id kept changing")]
    Contended,
    /// `cluster.claim_timeout_ms` passed.
    #[error("no owner agreed within {0} ms")]
    Timeout(u128),
}

impl Owners {
    /// The metadata group.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Claims through `meta`, each within `timeout`.
    pub fn new(meta: Meta, timeout: Duration) -> Owners {
        Owners { meta, timeout }
    }

    /// Stop this node of the metadata group (its files stay for the next run).
    pub async fn stop(&self) {
        if let Err(e) = self.meta.shutdown().await {
            tracing::warn!(error = %e, "the metadata group's node did not stop cleanly");
        }
    }

    /// Make this node `client_id`'s owner, and say since which metadata entry it
    /// is (`router::Connect::owned_since`). An id this node owns already, as far as
    /// it has applied, is not proposed again: its owner changes that are still on
    /// their way find the session newer than them, or end it (the client connects
    /// again and claims).
    pub async fn claim(&self, client_id: &str) -> Result<Claimed, ClaimError> {
        let me = self.meta.node();
        let (owner, applied) = self.meta.owner(client_id);
        if owner == Some(me) {
            return Ok(Claimed {
                since: applied,
                from: None,
            });
        }
        tokio::time::timeout(self.timeout, self.propose(client_id, owner))
            .await
            .map_err(|_| ClaimError::Timeout(self.timeout.as_millis()))?
    }

    async fn propose(
        &self,
        client_id: &str,
        mut expected: Option<NodeId>,
    ) -> Result<Claimed, ClaimError> {
        let me = self.meta.node();
        for _ in 0..CLAIM_TRIES {
            let command = MetaCommand::Own {
                client_id: client_id.to_string(),
                node: me,
                expected,
            };
            let applied = self.meta.submit(command).await?;
            let claimed = |from: Option<NodeId>| Claimed {
                since: applied.index,
                from: from.filter(|n| *n != me),
            };
            match applied.response {
                MetaResponse::Owned { .. } => return Ok(claimed(expected)),
                MetaResponse::Refused(Refusal::OwnerIs { current }) if current == Some(me) => {
                    return Ok(claimed(None))
                }
                MetaResponse::Refused(Refusal::OwnerIs { current }) => expected = current,
                other => {
                    let why = format!("a claim answered {other:?}");
                    return Err(ClaimError::Meta(MetaError::Raft(why)));
                }
            }
        }
        Err(ClaimError::Contended)
    }
}

/// A client id this node owns now.
#[derive(Debug, Clone, Copy)]
pub struct Claimed {
    /// The metadata entry since which (`router::Connect::owned_since`).
    pub since: u64,
    /// The node that owned it before (`router::Connect::moved_from`).
    pub from: Option<NodeId>,
}

/// Hand the router what `changes` brings: owner changes for another node than `meta`'s
/// (`PeerEvent::Moved`), and the nodes of shared groups (`PeerEvent::SharedNodes`),
/// until either side goes.
pub async fn feed_router(mut changes: mpsc::Receiver<MetaChange>, router: RouterTx, meta: Meta) {
    let me = meta.node();
    while let Some(change) = changes.recv().await {
        let event = match change {
            MetaChange::Owner(change) if change.node == me => continue,
            // Stale: this node owns it again (a restart replays the metadata's
            // history, where a session carried over from the earlier run may have
            // been another node's once).
            MetaChange::Owner(change) if meta.owner(&change.client_id).0 == Some(me) => continue,
            MetaChange::Owner(change) => PeerEvent::Moved {
                client_id: change.client_id,
                node: change.node,
                at: change.index,
            },
            MetaChange::Shared(change) => {
                let nodes: Vec<String> = change.nodes.iter().map(|n| n.to_string()).collect();
                tracing::info!(group = %change.group, nodes = %nodes.join(","), "shared group's nodes");
                PeerEvent::SharedNodes {
                    group: change.group,
                    nodes: change.nodes,
                }
            }
        };
        if router.send(ToRouter::Peer(event)).await.is_err() {
            return;
        }
    }
}

/// Keep this node's entries among the shared groups' members in the metadata what
/// the router says `groups` are (one entry per group and node: which member here
/// gets a message is the router's choice). What the metadata holds for this node
/// and the router does not, a previous run's included, is taken out. A proposal
/// that fails is tried again after `SYNC_RETRY`.
pub async fn shared_sync(meta: Meta, mut groups: watch::Receiver<Vec<String>>) {
    let me = meta.node();
    loop {
        let wanted: BTreeSet<String> = groups.borrow_and_update().iter().cloned().collect();
        let held = meta.groups_of(me);
        let joins = wanted.difference(&held).map(|g| (g, true));
        let leaves = held.difference(&wanted).map(|g| (g, false));
        let mut failed = false;
        for (group, join) in joins.chain(leaves) {
            let (group, node, client_id) = (group.clone(), me, String::new());
            let command = if join {
                MetaCommand::JoinShared {
                    group,
                    node,
                    client_id,
                }
            } else {
                MetaCommand::LeaveShared {
                    group,
                    node,
                    client_id,
                }
            };
            if let Err(e) = meta.submit(command).await {
                tracing::warn!(error = %e, "cannot record this node's shared groups in the cluster; trying again");
                failed = true;
                break;
            }
        }
        let changed = if failed {
            tokio::time::timeout(SYNC_RETRY, groups.changed())
                .await
                .unwrap_or(Ok(()))
        } else {
            groups.changed().await
        };
        if changed.is_err() {
            return;
        }
    }
}

/// Give up in the metadata the client ids whose sessions ended here, as `released`
/// brings them (`Release` is refused, changing nothing, if another node took the id
/// meanwhile). One that fails stays recorded as this node's: a few bytes, until its
/// client connects again.
pub async fn release_ended(meta: Meta, mut released: mpsc::Receiver<Box<str>>) {
    let node = meta.node();
    while let Some(client_id) = released.recv().await {
        let client_id = client_id.into();
        if let Err(e) = meta.submit(MetaCommand::Release { client_id, node }).await {
            tracing::debug!(error = %e, "cannot release a client id in the cluster");
        }
    }
}

/// Claim each client id of `wills` from the gone node named, expecting it as the
/// owner (`Own`): the router publishes the will of the one it took
/// (`PeerEvent::WillClaimed`). Refused (another survivor took it first, or the
/// client connected elsewhere), nothing is published here. A will this node's
/// earlier run left (named with this node) is claimed by releasing the id
/// (`Release`, refused unless this node still owns it): a survivor's claim from
/// this node after it is refused, so one node publishes it.
pub async fn claim_wills(
    meta: Meta,
    mut wills: mpsc::Receiver<(Box<str>, NodeId)>,
    router: RouterTx,
) {
    let me = meta.node();
    while let Some((client_id, from)) = wills.recv().await {
        let command = if from == me {
            MetaCommand::Release {
                client_id: client_id.to_string(),
                node: me,
            }
        } else {
            MetaCommand::Own {
                client_id: client_id.to_string(),
                node: me,
                expected: Some(from),
            }
        };
        match meta.submit(command).await.map(|a| a.response) {
            Ok(MetaResponse::Owned { .. } | MetaResponse::Released) => {
                let event = PeerEvent::WillClaimed {
                    client_id: client_id.into(),
                    from,
                };
                if router.send(ToRouter::Peer(event)).await.is_err() {
                    return;
                }
            }
            Ok(other) => {
                tracing::info!(%client_id, %from, answer = ?other, "will claim lost: another node publishes it, or the client connected elsewhere");
            }
            Err(e) => {
                tracing::warn!(%client_id, %from, error = %e, "will claim failed: cannot claim a gone node's client id; its will is not published here");
            }
        }
    }
}
