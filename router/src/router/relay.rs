//! A gone writer's logs, synced between the replicas that survive it
//! (docs/mesh.md).
//!
//! A writer is gone when it has been silent for `failure_timeout`, or when it runs
//! again under a newer incarnation (its old log never grows again). Its replicas
//! on the other nodes may differ by its last records: each holds what it fetched
//! before the writer stopped. A record that was committed is on `ack_copies` nodes,
//! so while fewer than that failed it is on a survivor. So every node asks each
//! live peer, every `fetch_wait`, for what that peer's replica of the log (and of
//! its session journal) holds beyond its own, until that peer answers with
//! nothing new. The records are byte-identical to the writer's, so they are
//! appended as the writer's are, and offered to this node's sessions. A node
//! answers such a fetch at once, from its replica, never parking it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use commitlog::record::Framed;
use commitlog::{Offset, ReadLimits};
use mesh::{LogId, NodeId, Stream};

use super::peer::PeerReply;
use super::replication::{Mesh, Replica};
use super::Router;
use crate::storage::Storage;

/// Relay fetches asked of each live peer per round, at most (a peer link's queue
/// holds 64 messages).
const RELAY_ASKS_MAX: usize = 16;

/// Where a replica of a gone writer's stream stands against the live peers'.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    /// The peers whose replica this one holds all of (their last answer brought
    /// nothing new).
    pub(super) synced: BTreeSet<NodeId>,
    /// When the live peers were last asked.
    asked: Option<SystemTime>,
    /// Since when this node has been done with it, if it is (`retire`).
    pub(super) done_since: Option<SystemTime>,
    /// The peers this node told it is done with it.
    pub(super) told: BTreeSet<NodeId>,
    /// The peers that said they are done with it.
    pub(super) done_by: BTreeSet<NodeId>,
    /// This node's earlier run's log: how far each peer is known to hold it.
    holds: BTreeMap<NodeId, Offset>,
}

impl<S> Mesh<S> {
    /// Replica `log` (not the own log, `LogRef::OWN`).
    pub(super) fn replica_at(&self, log: crate::LogRef) -> Option<&Replica<S>> {
        self.replicas.get(usize::from(log.0).checked_sub(1)?)
    }

    /// The same, to change.
    pub(super) fn replica_at_mut(&mut self, log: crate::LogRef) -> Option<&mut Replica<S>> {
        self.replicas.get_mut(usize::from(log.0).checked_sub(1)?)
    }

    /// Where this node's replica of `stream` of `log` stands against the peers'.
    pub(super) fn relay_mut(&mut self, log: LogId, stream: Stream) -> Option<&mut Relay> {
        match stream {
            Stream::Messages => (self.replicas.iter_mut())
                .find(|r| r.id == log && !r.storage.is_retired())
                .map(|r| &mut r.relay),
            Stream::Journal => (self.journal_replicas.iter_mut())
                .find(|r| r.id == log)
                .map(|r| &mut r.relay),
        }
    }
}

impl Relay {
    /// `peer`'s link came up: it may have run anew and lost track of this one;
    /// ask it again, and tell it again (and be told again) who is done.
    pub(super) fn linked(&mut self, peer: NodeId) {
        self.synced.remove(&peer);
        self.told.remove(&peer);
        self.done_by.remove(&peer);
    }
}

impl<S: Storage> Router<S> {
    /// `peer` fetches `stream` of `log`, which this node does not write: answered
    /// at once from this node's replica of it, if it has one.
    pub(super) fn relay_fetch(
        &mut self,
        peer: NodeId,
        (log, stream): (LogId, Stream),
        from: Offset,
        bytes_max: u32,
    ) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        // An earlier run's own log is served only as far as the peers confirmed
        // it (`confirmed`): its tail past that was never committed, and must not
        // spread. What is confirmed may be on no other live node (the peer that
        // held it died since), so it is served.
        let own = log.node == mesh.own().node;
        let found = match stream {
            Stream::Messages => (mesh.replicas.iter())
                .find(|r| r.id == log)
                .and_then(|r| r.storage.open().map(|s| (s, r.commit))),
            Stream::Journal if !own => (mesh.journal_replicas.iter())
                .find(|r| r.id == log)
                .map(|r| (&r.storage, r.storage.head())),
            Stream::Journal => None,
        };
        let Some((storage, commit)) = found else {
            // Nothing here: said so, or the peer would wait for this node's
            // answer before it carries sessions on from that log.
            tracing::debug!(%peer, %log, %stream, "fetch of a log this node neither writes nor replicates; answered with nothing");
            let nothing = PeerReply::Records {
                log,
                stream,
                base: from,
                commit: from,
                records: Vec::new(),
            };
            mesh.outbox.push((peer, nothing));
            // Nor needs any of it (see `retire`).
            let holds = (mesh.replicas.iter()).any(|r| r.id == log && !r.storage.is_retired())
                || mesh.journal_replicas.iter().any(|r| r.id == log);
            if !holds {
                mesh.outbox.push((peer, PeerReply::Done { log }));
            }
            return;
        };
        let mut records = Vec::new();
        let end = if own { commit } else { storage.head() };
        let base = if from < end {
            let limits = ReadLimits {
                records_max: usize::try_from(end.distance_from(from)).unwrap_or(usize::MAX),
                bytes_max: bytes_max as usize,
            };
            match storage.read(from, limits, &mut records) {
                Ok(batch) => batch.first,
                Err(e) => {
                    tracing::warn!(%peer, %log, %stream, %from, error = %e, "cannot read a replica for a peer");
                    return;
                }
            }
        } else {
            from
        };
        let reply = PeerReply::Records {
            log,
            stream,
            base,
            commit,
            records,
        };
        mesh.outbox.push((peer, reply));
    }

    /// A peer's answer from its replica of `stream` of `log`.
    pub(super) fn relayed(
        &mut self,
        peer: NodeId,
        (log, stream): (LogId, Stream),
        (base, commit): (Offset, Offset),
        records: &[Framed],
    ) {
        self.heard(peer);
        if self.confirmed(peer, (log, stream), base, records.len()) {
            self.settle_earlier_tail();
            self.try_awaiting();
            return;
        }
        let appended = match stream {
            Stream::Messages => self.replicated_in(peer, log, (base, commit), records),
            Stream::Journal => self.journal_replicated_in(peer, log, base, records),
        };
        // The writer's next run serves its earlier log only as far as it has
        // confirmed it (`confirmed`), and confirms more as the peers hold more:
        // asked again until it covers this copy (with `ack_copies` 3, its commit
        // is what this copy may offer).
        let short = peer == log.node && stream == Stream::Messages && commit < self.head_of(log);
        if appended && stream == Stream::Messages {
            self.tell_writer_held(log);
        }
        if let Some(relay) = self.relay_mut(log, stream) {
            if appended {
                // More may follow: ask again at the next tick.
                relay.synced.remove(&peer);
                relay.asked = None;
            } else if records.is_empty() && !short {
                relay.synced.insert(peer);
            }
        }
        self.try_awaiting();
    }

    /// A peer's answer for this node's earlier run's log: it holds `n` records from
    /// `base`. What `ack_copies` nodes hold, this one (the writer) among them, was
    /// committed; this node's own copy may have more that was not (its tail at the
    /// crash), which is never read. True when it was such an answer.
    fn confirmed(
        &mut self,
        peer: NodeId,
        (log, stream): (LogId, Stream),
        base: Offset,
        n: usize,
    ) -> bool {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return false;
        };
        if log.node != mesh.own().node || stream != Stream::Messages {
            return false;
        }
        let Some(i) = mesh.replicas.iter().position(|r| r.id == log) else {
            return true;
        };
        let copies = mesh.ack_copies();
        let r = &mut mesh.replicas[i];
        let held = r.relay.holds.entry(peer).or_default();
        *held = (*held).max(base.add(n as u64));
        if n == 0 {
            r.relay.synced.insert(peer);
        } else {
            r.relay.synced.remove(&peer);
            r.relay.asked = None;
        }
        // Held by `copies - 1` peers besides this node (with two copies, by one:
        // what any peer holds).
        let mut ends: Vec<Offset> = r.relay.holds.values().copied().collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let nth = ends
            .get(copies.saturating_sub(2))
            .copied()
            .unwrap_or(Offset(0));
        let end = nth.min(r.storage.head());
        if end > r.commit {
            r.commit = end;
            self.fan_out_replica(i);
        }
        true
    }

    /// This node's copy of gone writer's `log` grew (from a peer, or late from the
    /// writer's earlier run): its node, if it runs anew, is told how far this copy
    /// goes (an answer it did not ask for), since it confirms that log by what its
    /// peers hold (`confirmed`) and may have heard less from this one before.
    fn tell_writer_held(&mut self, log: LogId) {
        let head = self.head_of(log);
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        if mesh.superseded(log) {
            let held = PeerReply::Records {
                log,
                stream: Stream::Messages,
                base: head,
                commit: head,
                records: Vec::new(),
            };
            mesh.outbox.push((log.node, held));
        }
    }

    /// The head of this node's replica of `log`'s messages (0 without one).
    fn head_of(&self, log: LogId) -> Offset {
        (self.mesh.as_deref())
            .and_then(|m| m.replicas.iter().find(|r| r.id == log))
            .map_or(Offset(0), |r| r.storage.head())
    }

    fn relay_mut(&mut self, log: LogId, stream: Stream) -> Option<&mut Relay> {
        self.mesh.as_deref_mut()?.relay_mut(log, stream)
    }

    /// Ask the live peers for what their replicas hold of gone writers' logs, for
    /// the replicas not synced with them yet, at most every `fetch_wait`.
    pub(super) fn relay_fetches(&mut self) {
        let now = self.now;
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        mesh.start_silence(now);
        let live = mesh.live_peers(now);
        let wait = mesh.fetch_wait();
        let mut asks = Vec::new();
        let own = mesh.own().node;
        // An earlier run's own log is asked for from where what it holds is known
        // committed (see `confirmed`).
        let streams = (mesh.replicas.iter())
            .map(|r| {
                let from = if r.id.node == own {
                    r.commit
                } else {
                    r.storage.head()
                };
                (r.id, Stream::Messages, from)
            })
            .chain(
                (mesh.journal_replicas.iter()).map(|r| (r.id, Stream::Journal, r.storage.head())),
            )
            .collect::<Vec<_>>();
        for (log, stream, from) in streams {
            // A bounded round: a node that restarted often has a gone writer's
            // log per earlier run, and asking for them all at once overflowed the
            // peer links' queues (the link reset, the answers were lost, and the
            // next round did the same). The rest are asked in later rounds.
            if asks.len() >= RELAY_ASKS_MAX.saturating_mul(live.len().max(1)) {
                break;
            }
            if !mesh.writer_gone(log, now) {
                continue;
            }
            // (The writer's node too once it runs anew: it holds that log.)
            let writer_asked = mesh.superseded(log);
            let relay = mesh.relay_mut(log, stream);
            let Some(relay) = relay else {
                continue;
            };
            if relay
                .asked
                .is_some_and(|t| now.duration_since(t).is_ok_and(|d| d < wait))
            {
                continue;
            }
            relay.asked = Some(now);
            for peer in live
                .iter()
                .filter(|p| (**p != log.node || writer_asked) && !relay.synced.contains(p))
            {
                // Past what that peer is known to hold of this node's earlier log.
                let from = relay.holds.get(peer).map_or(from, |h| from.max(*h));
                asks.push((*peer, PeerReply::Fetch { log, stream, from }));
            }
        }
        mesh.outbox.extend(asks);
    }

    /// Serve an earlier run's own log that no session here read when this run
    /// began (see `rumq-broker/src/replica_files.rs`): read, and served to the
    /// peers, only as far as they confirm it (see `unconfirmed_earlier_logs`), so
    /// that a session moving here with a place in it never reads the tail the
    /// crash left unacknowledged; and its records, all stamped before this run
    /// began, are history: offered as they are confirmed only to the sessions
    /// that came here with a place in it.
    pub fn add_earlier_own_log(&mut self, log: LogId, storage: S) -> Option<crate::LogRef> {
        let at = self.add_replica(log, storage)?;
        let r = self.mesh.as_deref_mut()?.replica_at_mut(at)?;
        r.commit = Offset(0);
        r.fanned = Offset(0);
        r.history = true;
        Some(at)
    }

    /// A copy of another node's log kept from this node's earlier run (`r`, not
    /// empty; `read`: the furthest place its sessions had in it). With
    /// `ack_copies` of 2 what it holds is committed (the writer holds it too), as
    /// `add_replica` takes it; with more, only what its sessions had read is known
    /// committed (they read no further than that): the rest waits for the writer's
    /// commit or for the peers to hold it (`relay`), and is history.
    pub(super) fn kept_copy_of_another(&mut self, r: crate::LogRef, read: Option<Offset>) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let (own, copies) = (mesh.own().node, mesh.ack_copies());
        let Some(r) = mesh.replica_at_mut(r) else {
            return;
        };
        if r.id.node == own || copies <= 2 || r.storage.head() == Offset(0) {
            return;
        }
        r.commit = read.unwrap_or(Offset(0)).min(r.storage.head());
        r.fanned = r.commit;
        r.history = true;
    }

    /// This node's earlier runs' logs are read only as far as they are known
    /// committed: `written_by` (the last run) up to `journal_head` (where its
    /// journal last saw the commit), older ones not at all, until the peers that
    /// replicated them say how far they hold them (`relay`). Past that is the tail
    /// a crash left unacknowledged, which no node ever offers.
    pub(super) fn unconfirmed_earlier_logs(
        &mut self,
        written_by: LogId,
        journal_head: Option<Offset>,
    ) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let own = mesh.own().node;
        for r in mesh.replicas.iter_mut().filter(|r| r.id.node == own) {
            let known = if r.id == written_by {
                journal_head.unwrap_or(Offset(0))
            } else {
                Offset(0)
            };
            r.commit = known.min(r.storage.head());
            r.fanned = r.commit;
        }
    }

    /// Whether this node's replicas of `log` and of its journal hold everything
    /// each live peer's do (vacuously, when it keeps no such replica), and enough
    /// nodes are known to hold nothing more that every committed record is
    /// here: a committed record is on `ack_copies` nodes, so fewer than that may
    /// be unknown (neither this node nor a peer it synced with). Without that
    /// count, a node that took every peer for gone (it had heard from none
    /// lately: it was itself stalled, or cut off) would be synced with nobody,
    /// and carry sessions on from a journal short of what its clients saw.
    /// (With `ack_copies = 1` a record may be on its gone writer alone: what the
    /// live peers hold is all there is.)
    pub(super) fn relay_synced(&self, log: LogId) -> bool {
        let Some(mesh) = self.mesh.as_deref() else {
            return true;
        };
        let live = mesh.live_peers(self.now);
        let writer_asked = mesh.superseded(log);
        let counts = |p: &NodeId| *p != log.node || writer_asked;
        let members = mesh.members();
        let ack_copies = mesh.ack_copies();
        let synced = |relay: &Relay| {
            let known = 1 + relay.synced.iter().filter(|p| counts(p)).count();
            live.iter()
                .filter(|p| counts(p))
                .all(|p| relay.synced.contains(p))
                && (ack_copies < 2 || members.saturating_sub(known) < ack_copies)
        };
        mesh.replicas
            .iter()
            .filter(|r| r.id == log)
            .all(|r| synced(&r.relay))
            && (mesh.journal_replicas.iter())
                .filter(|r| r.id == log)
                .all(|r| synced(&r.relay))
    }
}
