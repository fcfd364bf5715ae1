//! Wills in a cluster (issue 23): a connection's will is journaled while it is
//! armed (`Op::Will`, and `Op::WillGone` once it is published, discarded by a
//! DISCONNECT or taken over), in every checkpoint too, so the other nodes follow
//! it in their replicas of this node's journal. When a node goes silent for
//! `failure_timeout` with wills armed, each survivor, once synced with the others
//! on that journal, asks the edge to claim those client ids for itself through the
//! metadata group (a compare-and-set from the gone node: one survivor wins, and
//! none if the client has connected elsewhere meanwhile); the winner publishes the
//! will after its delay. A client that reconnects within that delay to the node
//! that claimed it (or anywhere, which moves the id on) cancels it.
//!
//! Owns: the claims asked for, and the claimed wills waiting for their delay.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use commitlog::record::Framed;
use mesh::{LogId, NodeId};

use super::Router;
use crate::journal::Op;
use crate::storage::Storage;
use crate::{Message, Publication, SessionId, TopicId};

/// Claims asked for and not yet answered (past it, the rest wait for a later tick).
const CLAIMS_MAX: usize = 4096;

/// What a node does about the wills of gone nodes' connections.
#[derive(Debug, Default)]
pub(crate) struct OrphanWills {
    /// (gone node's journal, client id) already asked for: asked once.
    asked: BTreeSet<(LogId, Box<str>)>,
    /// For the edge: client ids to claim from the node named.
    claims: Vec<(Box<str>, NodeId)>,
    /// Claimed wills waiting for their delay: when, client id, the will.
    delayed: Vec<(SystemTime, Box<str>, Bytes)>,
    /// The wills armed on this node's connections when its earlier run ended,
    /// by client id (delay, will), while their claims are out.
    earlier: BTreeMap<String, (u32, Bytes)>,
}

impl<S: Storage> Router<S> {
    /// Journal the will of session `sid`'s connection, if it has one (in a
    /// cluster: see the module docs).
    pub(super) fn journal_will(&mut self, sid: SessionId) {
        if self.mesh.is_none() {
            return;
        }
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if let Some(w) = &s.will {
            self.journal.push(&Op::Will {
                client_id: s.client_id.to_string(),
                delay_secs: s.will_delay_secs,
                record: w.record.payload(),
            });
        }
    }

    /// The will of `client_id` is no longer armed.
    pub(super) fn will_gone(&mut self, client_id: &str) {
        if self.mesh.is_some() {
            self.journal.push(&Op::WillGone {
                client_id: client_id.to_owned(),
            });
        }
    }

    /// The armed wills (in a cluster), by client id: what a snapshot, and so a
    /// checkpoint, holds of them.
    pub(super) fn armed_wills(&self) -> Vec<(String, u32, Bytes)> {
        if self.mesh.is_none() {
            return Vec::new();
        }
        let mut wills: Vec<(String, u32, Bytes)> = (self.sessions.values())
            .filter_map(|s| {
                let record = s.will.as_ref()?.record.payload();
                Some((s.client_id.to_string(), s.will_delay_secs, record))
            })
            .collect();
        wills.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        wills
    }

    /// Ask to claim the wills armed on the connections of nodes gone silent, as
    /// this node's replicas of their journals hold them once synced with the
    /// other survivors; and publish the claimed ones whose delay has passed.
    pub(super) fn orphan_wills(&mut self) {
        let now = self.now;
        let Some(mesh) = self.mesh.as_deref() else {
            return;
        };
        let mut found = Vec::new();
        for j in mesh.journals_in_force() {
            let latest = mesh.latest_journal(j.id.node) == Some(j.id);
            if !latest || mesh.superseded(j.id) || !mesh.writer_gone(j.id, now) {
                continue;
            }
            let new = (j.state.wills())
                .filter(|(id, _, _)| !mesh.wills.asked.contains(&(j.id, (*id).into())));
            found.extend(new.map(|(id, _, _)| (j.id, Box::<str>::from(id))));
        }
        let found: Vec<_> = (found.into_iter())
            .filter(|(j, _)| self.relay_synced(*j))
            .collect();
        if let Some(mesh) = self.mesh.as_deref_mut() {
            for (j, client_id) in found {
                if mesh.wills.claims.len() >= CLAIMS_MAX {
                    break;
                }
                tracing::info!(%client_id, node = %j.node, "a gone node's connection had a will; claiming its client id to publish it");
                mesh.wills.claims.push((client_id.clone(), j.node));
                mesh.wills.asked.insert((j, client_id));
            }
        }
        self.delayed_wills_due(now);
    }

    /// The wills armed on this node's connections when its earlier run ended
    /// (a crash: none of them said DISCONNECT): each is published once this node
    /// has confirmed it still owns the client id (a claim expecting itself; the
    /// client may have connected elsewhere meanwhile), or when the client
    /// connects here again first, as a takeover publishes the old connection's.
    pub(super) fn earlier_run_wills(&mut self, wills: Vec<(String, u32, Bytes)>) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let own = mesh.own().node;
        for (client_id, delay, record) in wills.into_iter().take(CLAIMS_MAX) {
            tracing::info!(%client_id, "a connection open when this node's earlier run ended had a will; confirming its client id is still this node's to publish it");
            mesh.wills.claims.push((client_id.as_str().into(), own));
            mesh.wills.earlier.insert(client_id, (delay, record));
        }
    }

    /// `client_id` connects here (`clean`: its session ends with the old one):
    /// a will its connection left when this node's earlier run ended is
    /// published now, before anything the new connection sends, unless its delay
    /// outlasts the reconnect (MQTT 5 §3.1.2.5).
    pub(super) fn earlier_will_on_connect(&mut self, client_id: &str, clean: bool) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let Some((delay, record)) = mesh.wills.earlier.remove(client_id) else {
            return;
        };
        if delay == 0 || clean {
            self.stage_stored_will(client_id, &record);
        }
    }

    /// `client_id` connects here, its id taken from node `from` (`clean`: its
    /// session ends with the old one): the will its connection there left, if
    /// that node is gone (or it was that node's earlier run) and its journal
    /// here holds the will armed, is published now, as a takeover publishes the
    /// old connection's; a live node publishes its own as it hands over.
    pub(super) fn moved_clients_will(&mut self, client_id: &str, from: NodeId, clean: bool) {
        let now = self.now;
        let Some(mesh) = self.mesh.as_deref() else {
            return;
        };
        if from == mesh.own().node {
            return;
        }
        let latest = mesh.latest_journal(from);
        let found = (mesh.journals_in_force().into_iter())
            .filter(|j| j.id.node == from)
            .filter(|j| Some(j.id) != latest || mesh.writer_gone(j.id, now))
            .find_map(|j| {
                let (_, delay, record) = j.state.wills().find(|(id, _, _)| *id == client_id)?;
                Some((delay, record.clone()))
            });
        if let Some((delay, record)) = found.filter(|(delay, _)| *delay == 0 || clean) {
            tracing::info!(client_id, node = %from, delay_secs = delay, "publishing the will a moved client's connection on a gone node left");
            self.stage_stored_will(client_id, &record);
        }
    }

    /// The client ids whose wills this node asks to claim from the node named:
    /// the edge proposes each (`Own`, expecting that node) and tells the router
    /// `PeerEvent::WillClaimed` when it took it.
    pub fn drain_will_claims(&mut self) -> impl Iterator<Item = (Box<str>, NodeId)> + '_ {
        (self.mesh.as_deref_mut().into_iter()).flat_map(|m| m.wills.claims.drain(..))
    }

    /// This node took `client_id` from gone node `from`: its will there is
    /// published here after its delay.
    pub(super) fn will_claimed(&mut self, client_id: &str, from: NodeId) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let earlier = (from == mesh.own().node)
            .then(|| mesh.wills.earlier.remove(client_id))
            .flatten();
        let will = earlier.or_else(|| {
            (mesh.latest_journal(from))
                .and_then(|j| mesh.journal_replicas.iter().find(|r| r.id == j))
                .and_then(|r| r.state.wills().find(|(id, _, _)| *id == client_id))
                .map(|(_, delay, record)| (delay, record.clone()))
        });
        let Some((delay, record)) = will else {
            return;
        };
        let at = self.now + Duration::from_secs(u64::from(delay));
        tracing::info!(client_id, node = %from, delay_secs = delay, "will claim won: publishing the will of a gone node's connection");
        mesh.wills.delayed.push((at, client_id.into(), record));
        self.delayed_wills_due(self.now);
    }

    /// `client_id` connected (here, or on another node): a claimed will still
    /// waiting for its delay is not published.
    pub(super) fn cancel_orphan_will(&mut self, client_id: &str) {
        if let Some(mesh) = self.mesh.as_deref_mut() {
            mesh.wills.delayed.retain(|(_, id, _)| &**id != client_id);
        }
    }

    fn delayed_wills_due(&mut self, now: SystemTime) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        if mesh.wills.delayed.is_empty() {
            return;
        }
        let (due, waiting) = std::mem::take(&mut mesh.wills.delayed)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        mesh.wills.delayed = waiting;
        for (_, client_id, record) in due {
            self.stage_stored_will(&client_id, &record);
        }
    }

    /// Publish a will kept in stored form (no connection interned its topic).
    fn stage_stored_will(&mut self, client_id: &str, record: &Bytes) {
        let Ok(m) = Message::decode(record) else {
            tracing::warn!(%client_id, "a will kept in the journal does not decode; not published");
            return;
        };
        let will = Publication {
            topic: TopicId::UNINTERNED,
            qos: m.qos,
            retain: m.retain,
            record: Framed::new(record),
        };
        self.stage_will(will);
    }
}
