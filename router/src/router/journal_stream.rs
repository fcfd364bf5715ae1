//! The session journal as a cluster's second replicated stream (docs/mesh.md).
//!
//! **Writer.** Each node's followers fetch its journal as they fetch its messages
//! (`Stream::Journal`), and its commit is the `ack_copies`-th highest end, as for
//! messages. A reply may promise state the journal holds (a PUBREL says PUBREC was
//! journaled, a delivery that its `Sent` was, an ack that the publisher's QoS 2 id
//! was): so in a cluster the replies of a flush wait, in order, until the journal's
//! commit covers the ops written with them. Then a node that takes a session over
//! from this one finds every op its client has seen an answer to.
//!
//! **Follower.** A replica of each peer's journal, appended at its head, whose ops
//! are applied as they arrive to a live [`Replay`] of that node's persistent state:
//! what a session moving here from that node starts from. A replica drops its
//! records before a whole checkpoint of the writer, keeping some checkpoints'
//! worth (`REPLICA_HOLD_CHECKPOINTS`): a peer whose copy lags syncs from it once
//! the writer is gone.

use std::collections::VecDeque;
use std::time::SystemTime;

use bytes::Buf;
use commitlog::record::Framed;
use commitlog::Offset;
use mesh::{LogId, NodeId, Stream};

use super::peer::PeerReply;
use super::Router;
use crate::event::Reply;
use crate::journal::{Op, Replay};
use crate::storage::Storage;
use crate::ConnectionId;

/// A copy of another node's session journal, and the state it describes.
#[derive(Debug)]
pub(super) struct JournalReplica<S> {
    pub(super) id: LogId,
    pub(super) storage: S,
    /// Once its writer is gone: which peers' replicas it holds all of.
    pub(super) relay: super::relay::Relay,
    /// The writer's persistent state as far as this replica goes.
    pub(super) state: Replay,
    /// The record where the writer's last checkpoint began, until its end arrives.
    checkpoint_begin: Option<Offset>,
    /// Where the whole checkpoints this replica holds began, oldest first: it
    /// keeps as many as `REPLICA_HOLD_CHECKPOINTS` checkpoints' worth, so that a
    /// peer whose copy lags can sync from this one once the writer is gone
    /// (`relay`).
    begins: VecDeque<Offset>,
    /// An append failed: fetch again from this time on.
    refetch_at: Option<SystemTime>,
}

/// A replica of a session journal with the records it kept from an earlier run
/// applied: what [`Router::add_loaded_journal_replica`] takes.
#[derive(Debug)]
pub struct LoadedJournal<S>(JournalReplica<S>);

impl<S: Storage> LoadedJournal<S> {
    /// `log`'s journal replica in `storage`, its records applied to the writer's
    /// state (the whole replica is read: run it where that may take a while).
    pub fn load(log: LogId, storage: S) -> LoadedJournal<S> {
        let mut r = JournalReplica {
            id: log,
            storage,
            state: Replay::default(),
            checkpoint_begin: None,
            begins: VecDeque::new(),
            refetch_at: None,
            relay: super::relay::Relay::default(),
        };
        let mut kept = Vec::new();
        let read = crate::storage::visit_records(&r.storage, Offset(0), |offset, record| {
            kept.push((offset, record));
            Ok::<(), commitlog::Error>(())
        });
        if let Err(e) = read {
            tracing::error!(%log, error = %e, "cannot read a journal replica kept from an earlier run");
        }
        for (offset, record) in kept {
            r.apply(offset, record);
        }
        LoadedJournal(r)
    }

    /// The journal it replicates.
    pub fn log(&self) -> LogId {
        self.0.id
    }
}

/// The replies waiting for the journal's commit, and those it released.
#[derive(Debug, Default)]
pub(super) struct Gate {
    /// Each flush's replies, with the journal end they need, in order.
    waiting: VecDeque<(Offset, Vec<(ConnectionId, Reply)>)>,
    /// Released, to go before anything newer.
    released: Vec<(ConnectionId, Reply)>,
    /// Replies at the front of the router's outbox that passed the gate and were
    /// not drained yet (a flush with no drain after it): they go first.
    passed: usize,
}

/// Journal bytes a writer keeps for a follower that lags, in checkpoints' worth
/// (`journal_checkpoint_bytes`): past it the follower is no longer waited for.
const HOLD_CHECKPOINTS: u64 = 4;

/// The same for a replica, for a peer whose copy lags once the writer is gone (a
/// peer that was down itself a few seconds): less than the writer keeps, since a
/// node reads every replica it keeps whole when it starts.
const REPLICA_HOLD_CHECKPOINTS: u64 = 2;

impl<S: Storage> JournalReplica<S> {
    /// Apply the ops of `record`, at `offset`, to the live state; true when it
    /// ends a checkpoint (whatever precedes the checkpoint's first record can go).
    fn apply(&mut self, offset: Offset, mut record: bytes::Bytes) -> bool {
        let mut ended = false;
        while record.has_remaining() {
            let Ok(op) = Op::decode(&mut record) else {
                tracing::warn!(log = %self.id, %offset, "a replicated journal record does not decode; the rest of it is skipped");
                return ended;
            };
            match op {
                Op::Begin => self.checkpoint_begin = Some(offset),
                Op::End => {
                    ended = true;
                    if let Some(begin) = self.checkpoint_begin {
                        if self.begins.back() != Some(&begin) {
                            self.begins.push_back(begin);
                        }
                    }
                }
                _ => {}
            }
            self.state.apply(op);
        }
        ended
    }

    /// Drop the records before the oldest checkpoint that begins within
    /// `budget` bytes of the head (or before the last one, if none does).
    fn compact(&mut self, budget: u64) {
        let cap = self.storage.offset_within(budget);
        while self.begins.len() > 1 && self.begins.front().is_some_and(|b| *b < cap) {
            self.begins.pop_front();
        }
        let Some(&first) = self.begins.front() else {
            return;
        };
        if let Err(e) = self.storage.remove_before(first) {
            tracing::warn!(log = %self.id, error = %e, "cannot drop a journal replica's records before a checkpoint");
        }
    }
}

impl<S> super::replication::Mesh<S> {
    /// The journal replicas that say where sessions are: each other node's latest,
    /// and an earlier one until a newer one of its node holds a whole checkpoint
    /// (what its new run carried over).
    pub(super) fn journals_in_force(&self) -> Vec<&JournalReplica<S>> {
        let own = self.own().node;
        let journals = &self.journal_replicas;
        (journals.iter())
            .filter(|j| j.id.node != own)
            .filter(|j| {
                !(journals.iter())
                    .any(|n| n.id.node == j.id.node && n.id > j.id && n.state.checkpointed())
            })
            .collect()
    }
}

impl<S: Storage> Router<S> {
    /// Replicate `log`'s session journal (its writer is `log.node`) into `storage`,
    /// whose records are applied to the writer's live state first; then fetch from
    /// its head. False outside a cluster or when it is replicated already.
    pub fn add_journal_replica(&mut self, log: LogId, storage: S) -> bool {
        self.add_loaded_journal_replica(LoadedJournal::load(log, storage))
    }

    /// Replicate a journal read by [`LoadedJournal::load`] (off the router's
    /// thread: a long journal takes a while to read); then fetch from its head.
    /// False outside a cluster or when it is replicated already.
    pub fn add_loaded_journal_replica(&mut self, loaded: LoadedJournal<S>) -> bool {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return false;
        };
        let r = loaded.0;
        if mesh.journal_replicas.iter().any(|j| j.id == r.id) {
            return false;
        }
        let fetch = PeerReply::Fetch {
            log: r.id,
            stream: Stream::Journal,
            from: r.storage.head(),
        };
        mesh.outbox.push((r.id.node, fetch));
        mesh.journal_replicas.push(r);
        true
    }

    /// This node's replica of `log`'s session journal, if it keeps one.
    pub fn journal_replica(&self, log: LogId) -> Option<&S> {
        let mesh = self.mesh.as_deref()?;
        let r = mesh.journal_replicas.iter().find(|r| r.id == log)?;
        Some(&r.storage)
    }

    /// The live state of `log`'s journal, as far as this node's replica goes.
    pub(super) fn journal_replica_state(&self, log: LogId) -> Option<&Replay> {
        let mesh = self.mesh.as_deref()?;
        let r = mesh.journal_replicas.iter().find(|r| r.id == log)?;
        Some(&r.state)
    }

    /// A writer's answer to this node's journal fetch.
    pub(super) fn journal_replicated(&mut self, log: LogId, base: Offset, records: &[Framed]) {
        self.heard(log.node);
        self.journal_replicated_in(log.node, log, base, records);
        self.try_awaiting();
    }

    /// Journal records of `log` from `peer` (its writer, or a peer's replica: see
    /// `relay`), from `base`: appended at the replica's head and applied to the
    /// live state; the writer is asked for more. True when they were appended.
    pub(super) fn journal_replicated_in(
        &mut self,
        peer: NodeId,
        log: LogId,
        base: Offset,
        records: &[Framed],
    ) -> bool {
        let now = self.now;
        let budget = REPLICA_HOLD_CHECKPOINTS * self.config.journal_checkpoint_bytes;
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return false;
        };
        let Some(r) = mesh.journal_replicas.iter_mut().find(|r| r.id == log) else {
            tracing::warn!(%log, "journal records of a log this node does not replicate; ignored");
            return false;
        };
        let appended = base == r.storage.head() && !records.is_empty();
        if appended {
            if let Err(e) = r.storage.append(records) {
                tracing::error!(%log, error = %e, "cannot append to a journal replica");
                r.refetch_at = Some(now + super::replication::APPEND_RETRY);
                return false;
            }
            let mut ended = false;
            for (i, f) in records.iter().enumerate() {
                ended |= r.apply(base.add(i as u64), f.payload());
            }
            if ended {
                r.compact(budget);
            }
        }
        let head = r.storage.head();
        if peer == log.node && !mesh.superseded(log) {
            let fetch = PeerReply::Fetch {
                log,
                stream: Stream::Journal,
                from: head,
            };
            mesh.outbox.push((log.node, fetch));
        }
        appended
    }

    /// The link to `peer` is new: fetch its journals again (what was in flight is
    /// gone), and those whose append failed once their wait is over.
    pub(super) fn refetch_journals(&mut self, peer: NodeId) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        for r in mesh.journal_replicas.iter().filter(|r| r.id.node == peer) {
            let fetch = PeerReply::Fetch {
                log: r.id,
                stream: Stream::Journal,
                from: r.storage.head(),
            };
            mesh.outbox.push((peer, fetch));
        }
    }

    /// Fetch again for the journal replicas whose append failed, once their wait
    /// is over.
    pub(super) fn retry_journal_fetches(&mut self) {
        let now = self.now;
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        for r in &mut mesh.journal_replicas {
            if r.refetch_at.is_some_and(|at| at <= now) {
                r.refetch_at = None;
                let fetch = PeerReply::Fetch {
                    log: r.id,
                    stream: Stream::Journal,
                    from: r.storage.head(),
                };
                mesh.outbox.push((r.id.node, fetch));
            }
        }
    }

    /// The flush's journal ops are written: the journal now ends at its head, and
    /// the replies gathered since the last flush to persistent sessions wait until
    /// the commit covers it (in order, behind those waiting already). A clean
    /// session's replies promise nothing journaled: they go (so a journal that
    /// cannot commit, `ack_copies` nodes being unreachable, holds back only the
    /// persistent sessions, whose every reply would wait anyway).
    pub(super) fn journal_written(&mut self) {
        let Some(end) = self.journal.log().map(Storage::head) else {
            return;
        };
        let moved = (self.mesh.as_deref_mut())
            .and_then(|m| m.journal.tracker.local_end(end))
            .is_some();
        if moved {
            self.release_journaled();
        }
        let Router {
            mesh,
            outbox,
            by_conn,
            sessions,
            ..
        } = self;
        let Some(mesh) = mesh.as_deref_mut() else {
            return;
        };
        let gate = &mut mesh.gate;
        let fresh = outbox.split_off(gate.passed.min(outbox.len()));
        outbox.append(&mut gate.released);
        if end <= mesh.journal.tracker.commit() {
            // (Nothing waits, then: it was released as the commit passed it.)
            outbox.extend(fresh);
        } else {
            let mut held = Vec::new();
            for (conn, reply) in fresh {
                let durable = (by_conn.get(&conn))
                    .and_then(|sid| sessions.get(sid))
                    .is_some_and(|s| !s.clean);
                if durable {
                    held.push((conn, reply));
                } else {
                    outbox.push((conn, reply));
                }
            }
            if !held.is_empty() {
                gate.waiting.push_back((end, held));
            }
        }
        gate.passed = outbox.len();
    }

    /// The outbox was drained: nothing in it passed the gate any more.
    pub(super) fn outbox_drained(&mut self) {
        if let Some(mesh) = self.mesh.as_deref_mut() {
            mesh.gate.passed = 0;
        }
    }

    /// Release the replies the journal's commit now covers, in order.
    pub(super) fn release_journaled(&mut self) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let commit = mesh.journal.tracker.commit();
        let gate = &mut mesh.gate;
        while gate.waiting.front().is_some_and(|(end, _)| *end <= commit) {
            if let Some((_, replies)) = gate.waiting.pop_front() {
                gate.released.extend(replies);
            }
        }
    }

    /// Where this node's journal may drop records up to (a checkpoint's start):
    /// not past what a follower still needs, unless it lags by more than
    /// `HOLD_CHECKPOINTS` checkpoints' worth.
    pub(super) fn journal_hold(&self) -> Option<Offset> {
        let mesh = self.mesh.as_deref()?;
        let log = self.journal.log()?;
        let slowest = mesh.journal.tracker.slowest_end()?;
        let cap = log.offset_within(HOLD_CHECKPOINTS * self.config.journal_checkpoint_bytes);
        Some(slowest.max(cap))
    }
}
