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
//! - no session still needs any of it (`sessions_hold_back`): neither one here
//!   nor one in another node's journal as this node's replica of it goes
//!   (`journals_lower_needs`); while a session is moving here (its places may
//!   name it), nothing is decided.
//!
//! It then tells every peer so (`PeerReply::Done`); a peer that holds no copy
//! says so when asked for one. A node retires its copy, handing its storage to
//! the edge to be removed ([`Router::drain_retired`]), once every other node
//! said it is done with it and this node has been for `superseded_keep`.
//!
//! So a session that has not read a log keeps it on every node: wherever it
//! moves, the log is there. Counting the journals' sessions matters because a
//! node's `Done` is not taken back: a node done with a log may get a session that
//! needs it (moved from a node that was not done), and the others, done since,
//! would retire theirs; with every journal counted, no node is done while that
//! session's node journals the need. A node that stays away keeps the log on the
//! others until it comes back and is done too; a node that comes back (its link
//! up again) says again what it is done with.

use std::collections::{BTreeMap, BTreeSet};

use commitlog::Offset;
use mesh::{LogId, NodeId};

use super::deliver::journal_place_in;
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
        let Some(done) = self.done_logs() else {
            return;
        };
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

    /// Whether this node is done with each replica not retired, by its place
    /// (`None` while a session moves here: its places may name any of them, so
    /// nothing is decided, and what was done stays done meanwhile).
    fn done_logs(&mut self) -> Option<Vec<(usize, bool)>> {
        let mesh = self.mesh.as_deref()?;
        if !mesh.awaiting.is_empty() {
            return None;
        }
        let done_here: Vec<(usize, Option<(LogId, Offset)>)> = (0..mesh.replicas.len())
            .filter(|i| {
                mesh.replicas
                    .get(*i)
                    .is_some_and(|r| !r.storage.is_retired())
            })
            .map(|i| (i, self.replica_done_here(i)))
            .collect();
        for (i, d) in &done_here {
            if let (Some((id, end)), Ok(at)) = (d, u16::try_from(i + 1)) {
                self.journal_places(LogRef(at), *id, *end);
            }
        }
        let mut needs: BTreeMap<LogId, Offset> = (done_here.iter())
            .filter_map(|(_, d)| d.map(|(log, _)| (log, Offset(u64::MAX))))
            .collect();
        self.journals_lower_needs(&mut needs);
        let done = done_here.into_iter().map(|(i, d)| {
            let done = d.is_some_and(|(log, end)| needs.get(&log).is_none_or(|n| *n >= end));
            (i, done)
        });
        Some(done.collect())
    }

    /// Whether this node is done with replica `i` as far as its own sessions go
    /// (see the module docs): its id and where it ends, if so.
    fn replica_done_here(&self, i: usize) -> Option<(LogId, Offset)> {
        let mesh = self.mesh.as_deref()?;
        let r = mesh.replicas.get(i)?;
        let own = r.id.node == mesh.own().node;
        // An earlier run's own log ends, for every purpose, where it is known
        // committed (its tail past that is never offered nor served).
        let end = if own { r.commit } else { r.storage.head() };
        let newer_journal = own || mesh.latest_journal(r.id.node).is_some_and(|j| j > r.id);
        if !mesh.superseded(r.id) || !newer_journal || r.fanned < end || r.commit < end {
            return None;
        }
        let at = u16::try_from(i + 1).ok()?;
        let done = self.relay_synced(r.id)
            && (self.sessions_hold_back(LogRef(at), &r.storage)).is_none_or(|h| h >= end);
        done.then_some((r.id, end))
    }

    /// Journal each persistent session's place in replica `log` (`id`, read here
    /// to `end`) where it moved past what was journaled: the other nodes judge
    /// from the journal, and a session that matched nothing there (a publisher's)
    /// journaled no place in it since it started.
    fn journal_places(&mut self, log: LogRef, id: LogId, end: Offset) {
        let Router {
            sessions, journal, ..
        } = self;
        if !journal.enabled() {
            return;
        }
        for (sid, s) in sessions.iter_mut().filter(|(_, s)| !s.clean) {
            let at = s.resume(log, end);
            if s.journaled_in(log).is_none_or(|j| j < at) {
                journal_place_in(journal, (*sid, s), (log, id), at);
            }
        }
    }

    /// Lower each offset of `needs` to the lowest of its log that a session in
    /// another node's journal still needs: wherever that session moves, it finds
    /// the log (this node's own `Done` would otherwise be told before a session
    /// that needs the log moved here, and the others retire it). The journals
    /// counted are each node's latest, and an earlier one until a newer one of its
    /// node holds a whole checkpoint (what its new run carried over).
    fn journals_lower_needs(&self, needs: &mut BTreeMap<LogId, Offset>) {
        let Some(mesh) = self.mesh.as_deref() else {
            return;
        };
        if needs.is_empty() {
            return;
        }
        let in_force = mesh.journals_in_force();
        let live: BTreeSet<&str> = (in_force.iter())
            .flat_map(|j| j.state.client_ids())
            .chain(self.by_client.keys().map(|k| &**k))
            .collect();
        let live = |id: &str| live.contains(id);
        for j in in_force {
            j.state.lower_needs(j.id, &live, needs);
        }
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
