//! Retiring the logs that restarts left behind (docs/mesh.md).
//!
//! Every run of a node writes a new log, and every node keeps a replica of each
//! (and of its session journal), so a cluster whose nodes restart gathers logs
//! that never grow again: each takes disk, and each is opened again at every
//! restart. A node is *done* with such a log (its writer runs a newer one, or it
//! is this node's own earlier run) once
//!
//! - the survivors agree on it (`relay_synced`: this copy holds all the live
//!   peers' do), and this node offered all of it (its fan-out reached its end);
//! - no session here still needs any of it (`sessions_hold_back`); while a
//!   session is moving here (its places may name it), nothing is decided.
//!
//! It then tells every peer so (`PeerReply::Done`); a peer that holds no copy
//! says so when asked for one. A node retires its copy, handing its storage to
//! the edge to be removed ([`Router::drain_retired`]), once every other node
//! said it is done with it and this node has been for `superseded_keep`.
//!
//! So a session that has not read a log keeps it on every node: wherever it
//! moves, the log is there. A session moves from a node that is not done to one
//! that may be, never the other way. A node that stays away keeps the log on the
//! others until it comes back and is done too; a node that comes back (its link
//! up again) says again what it is done with.

use mesh::{LogId, NodeId};

use super::peer::PeerReply;
use super::Router;
use crate::storage::Storage;
use crate::LogRef;

/// `Done`s sent to each peer per round at most (a peer link's queue holds 64
/// messages); the rest go in later rounds.
const DONE_TOLD_MAX: usize = 16;

impl<S: Storage> Router<S> {
    /// Tell the peers which logs this node is done with, and retire those every
    /// node is done with and this one has been for `superseded_keep`.
    pub(super) fn retire_done_logs(&mut self) {
        let now = self.now;
        let Some(mesh) = self.mesh.as_deref() else {
            return;
        };
        // A session moving here may have places in any of them: decided once
        // none is (what was done stays done meanwhile).
        if !mesh.awaiting.is_empty() {
            return;
        }
        let done: Vec<(usize, bool)> = (0..mesh.replicas.len())
            .filter(|i| {
                mesh.replicas
                    .get(*i)
                    .is_some_and(|r| !r.storage.is_retired())
            })
            .map(|i| (i, self.replica_done(i)))
            .collect();
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let keep = mesh.superseded_keep();
        let peers = mesh.peers().to_vec();
        let mut tell: Vec<(NodeId, LogId)> = Vec::new();
        let mut due = Vec::new();
        for (i, done) in done {
            let Some(r) = mesh.replicas.get_mut(i) else {
                continue;
            };
            if !done {
                r.relay.done_since = None;
                continue;
            }
            let since = *r.relay.done_since.get_or_insert(now);
            // Told once per link: one down now is told when its link is up again
            // (`Relay::linked`).
            for p in &peers {
                let told = tell.iter().filter(|(to, _)| to == p).count();
                if told < DONE_TOLD_MAX && r.relay.told.insert(*p) {
                    tell.push((*p, r.id));
                }
            }
            let all = peers.iter().all(|p| r.relay.done_by.contains(p));
            if all && now.duration_since(since).is_ok_and(|d| d >= keep) {
                due.push(i);
            }
        }
        (mesh.outbox).extend(
            tell.into_iter()
                .map(|(p, log)| (p, PeerReply::Done { log })),
        );
        for i in due {
            self.retire_replica(i);
        }
    }

    /// Whether this node is done with replica `i`: see the module docs.
    fn replica_done(&self, i: usize) -> bool {
        let Some(mesh) = self.mesh.as_deref() else {
            return false;
        };
        let Some(r) = mesh.replicas.get(i) else {
            return false;
        };
        let own = r.id.node == mesh.own().node;
        // An earlier run's own log ends, for every purpose, where it is known
        // committed (its tail past that is never offered nor served).
        let end = if own { r.commit } else { r.storage.head() };
        let newer_journal = own || mesh.latest_journal(r.id.node).is_some_and(|j| j > r.id);
        if !mesh.superseded(r.id) || !newer_journal || r.fanned < end || r.commit < end {
            return false;
        }
        let Ok(at) = u16::try_from(i + 1) else {
            return false;
        };
        self.relay_synced(r.id)
            && (self.sessions_hold_back(LogRef(at), &r.storage)).is_none_or(|h| h >= end)
    }

    /// `peer` is done with `log`.
    pub(super) fn peer_done(&mut self, peer: NodeId, log: LogId) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        if let Some(r) = mesh.replicas.iter_mut().find(|r| r.id == log) {
            r.relay.done_by.insert(peer);
        }
    }

    /// Retire replica `i` and its journal's: their storage goes to the edge.
    fn retire_replica(&mut self, i: usize) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let Some(r) = mesh.replicas.get_mut(i) else {
            return;
        };
        let log = r.id;
        let (end, removed) = (r.storage.head(), r.storage.retire());
        mesh.retired.extend(removed);
        if let Some(j) = mesh.journal_replicas.iter().position(|j| j.id == log) {
            let j = mesh.journal_replicas.swap_remove(j);
            mesh.retired.push(j.storage);
        }
        tracing::info!(%log, %end, "retired a log every node is done with: its files are removed");
    }

    /// The storage of the replicas retired since the last call: the edge removes
    /// their files.
    pub fn drain_retired(&mut self) -> Vec<S> {
        (self.mesh.as_deref_mut())
            .map(|m| std::mem::take(&mut m.retired))
            .unwrap_or_default()
    }
}
