//! The router in a cluster (docs/mesh.md, step 5): its own log's commit, the
//! replicas of the other nodes' logs, and the fetches between them.
//!
//! **Writer.** Appends go on as on one node, but what a flush releases (fan-out to
//! sessions, acknowledgements, the replies after them) waits in `committing` until
//! `ack_copies` nodes hold the records: the log's [`CommitTracker`] learns the
//! followers' ends from their fetches. A fetch with nothing to send is parked, and
//! answered when records arrive, when the commit moves (so followers learn it), or
//! after `fetch_wait` (the heartbeat).
//!
//! **Follower.** A replica appends what its writer sends, checked to start at its
//! head; records the writer's commit covers (with `ack_copies` of 2, all it holds)
//! are offered to this node's sessions as a local publish is; then it asks for more
//! from its new head (one fetch per replica outstanding). The links are the
//! driver's: [`PeerEvent`]s in, [`PeerReply`]s out ([`Router::drain_peer_outbox`]).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, SystemTime};

use commitlog::record::Framed;
use commitlog::Offset;
use mesh::{LogId, NodeId, Stream};

use super::fence::Fence;
use super::inspect::MeshStatus;
use super::journal_stream::{Gate, JournalReplica};
use super::kept::Kept;
use super::peer::{PeerEvent, PeerReply};
use super::relay::Relay;
use super::session_move::Awaiting;
use super::written::Written;
use super::{Matched, Router, Staged};
use crate::storage::Storage;
use crate::LogRef;

/// The router's part of a cluster.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The log this node writes in this run.
    pub own: LogId,
    /// Nodes holding a record before it is committed (this one among them).
    pub ack_copies: usize,
    /// The nodes that replicate this node's log.
    pub followers: Vec<NodeId>,
    /// The most record bytes in one answer to a fetch.
    pub fetch_bytes_max: u32,
    /// How long a fetch with nothing to send is held before it is answered empty.
    pub fetch_wait: Duration,
    /// How long a peer may be silent (no records, no fetch, no heartbeat) before
    /// it is taken as gone: a session moving here from it then carries on from
    /// what this node holds (`cluster.failure_timeout_ms`).
    pub failure_timeout: Duration,
    /// When this node started (or, when it restored its sessions from an earlier
    /// run, when that run last wrote): the records of a replica new to this node
    /// (empty when added) stamped earlier (by their writer's clock) are history,
    /// not offered to this node's sessions, which did not exist then (a node that
    /// joins does not hand its clients old messages), except those that came with
    /// a place in that log (`Session::placed`). Their retained messages
    /// still apply. A replica this node kept from an earlier run offers every
    /// record it did not hold: its sessions were there for them.
    pub started: SystemTime,
    /// How long a replica of a log that never grows again (its writer runs a
    /// newer one) is kept once no node needs it here, before its files are
    /// removed (`retire`; `cluster.superseded_logs_keep_ms`).
    pub superseded_keep: Duration,
}

/// A message's number for shared groups: the same on every node (from where it is
/// in which log), spread evenly over a group's nodes.
pub(super) fn share_key(log: LogId, offset: Offset) -> u64 {
    let id = u64::from(log.node.0) << 32 | u64::from(log.incarnation.0);
    // splitmix64's finalizer over the two halves.
    let mut z = id.rotate_left(17) ^ offset.0;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The cluster state of a router.
#[derive(Debug)]
pub(super) struct Mesh<S> {
    config: MeshConfig,
    /// This node's message log, as its followers hold it.
    pub(super) messages: Written,
    /// This node's session journal, as its followers hold it.
    pub(super) journal: Written,
    /// Appended, not yet committed: each entry's offset (its record's, or the next
    /// one for an entry without a record) and what it releases, in order.
    committing: VecDeque<(Offset, Staged)>,
    /// Replicas of other nodes' logs; replica `i` is `LogRef(i + 1)`.
    pub(super) replicas: Vec<Replica<S>>,
    /// Replicas of other nodes' session journals.
    pub(super) journal_replicas: Vec<JournalReplica<S>>,
    /// Replies waiting for this node's journal's commit.
    pub(super) gate: Gate,
    /// CONNECTs waiting for their sessions' state from another node.
    pub(super) awaiting: Vec<Awaiting>,
    pub(super) handed_away: super::session_move::HandedAway,
    /// After a restart: the fence this run's log starts with (see `fence`).
    pub(super) first_fence: Option<Fence>,
    /// When each peer was last heard from (records, fetches, heartbeats).
    pub(super) last_heard: BTreeMap<NodeId, SystemTime>,
    pub(super) outbox: Vec<(NodeId, PeerReply)>,
    /// Scratch for matching replicas' records (see `offer_replicated`).
    pub(super) matched: Matched,
    /// The stamp of the retained message (or clear) last applied to each topic: a
    /// retained publish from any log applies only if its stamp is newer, so every
    /// node converges on the same retained message whatever order its logs'
    /// records arrive in. A clear stays here as a tombstone (a topic name and a
    /// stamp) so that an older set arriving after it does not come back.
    retained_stamps: HashMap<Box<str>, RetainStamp>,
    /// Client ids this node claimed whose sessions ended here (see
    /// `Router::drain_released`).
    pub(super) released: Vec<Box<str>>,
    /// Retired replicas' storage, for the edge to remove (`retire`).
    pub(super) retired: Vec<S>,
    pub(super) wills: super::wills::OrphanWills,
    pub(super) earlier_tail: Option<super::earlier_tail::EarlierTail>,
}

/// A retained message's rank among those of its topic, from every log: the time
/// its publisher's node stamped it, then the log, then the offset. (Within one
/// log, time and offset agree unless the node's clock stepped back.)
pub(super) type RetainStamp = (u64, LogId, Offset);

impl<S> Mesh<S> {
    /// The log this node writes.
    pub(super) fn own(&self) -> LogId {
        self.config.own
    }

    /// When this node started (records stamped before it are history to a new
    /// replica).
    pub(super) fn started(&self) -> SystemTime {
        self.config.started
    }

    /// The own log's commit.
    pub(super) fn commit(&self) -> Offset {
        self.messages.tracker.commit()
    }

    /// The nodes of the cluster, this one among them.
    pub(super) fn members(&self) -> usize {
        self.config.followers.len() + 1
    }

    /// The other nodes of the cluster.
    pub(super) fn peers(&self) -> &[NodeId] {
        &self.config.followers
    }

    /// How long a replica no node needs here is kept (`retire`).
    pub(super) fn superseded_keep(&self) -> Duration {
        self.config.superseded_keep
    }

    /// Nodes holding a record before it is committed.
    pub(super) fn ack_copies(&self) -> usize {
        self.config.ack_copies
    }

    /// How long a silent peer is taken as alive.
    pub(super) fn failure_timeout(&self) -> Duration {
        self.config.failure_timeout
    }

    /// How long a fetch is held.
    pub(super) fn fetch_wait(&self) -> Duration {
        self.config.fetch_wait
    }

    /// Count a peer never heard from as silent since `now` (the first tick).
    pub(super) fn start_silence(&mut self, now: SystemTime) {
        for peer in &self.config.followers {
            self.last_heard.entry(*peer).or_insert(now);
        }
    }

    /// Whether `peer` was heard from within `failure_timeout` of `now`.
    fn heard_lately(&self, peer: NodeId, now: SystemTime) -> bool {
        self.last_heard.get(&peer).is_some_and(|t| {
            now.duration_since(*t)
                .map_or(true, |d| d < self.config.failure_timeout)
        })
    }

    /// The peers heard from lately.
    pub(super) fn live_peers(&self, now: SystemTime) -> Vec<NodeId> {
        (self.config.followers.iter().copied())
            .filter(|p| self.heard_lately(*p, now))
            .collect()
    }

    /// Whether `log`'s writer writes it no more: it is an earlier run of this node
    /// or of a node that runs a newer one, or its node has been silent for
    /// `failure_timeout`.
    pub(super) fn writer_gone(&self, log: LogId, now: SystemTime) -> bool {
        self.superseded(log)
            || (self.last_heard.contains_key(&log.node) && !self.heard_lately(log.node, now))
    }

    /// Whether `log` will never grow again: it is an earlier run of this node, or
    /// of a node whose newer run this node replicates.
    pub(super) fn superseded(&self, log: LogId) -> bool {
        if log.node == self.config.own.node {
            return true;
        }
        let newer = |id: LogId| id.node == log.node && id.incarnation > log.incarnation;
        self.replicas.iter().any(|r| newer(r.id))
            || self.journal_replicas.iter().any(|r| newer(r.id))
    }

    /// The newest of `node`'s session journals this node replicates.
    pub(super) fn latest_journal(&self, node: NodeId) -> Option<LogId> {
        (self.journal_replicas.iter())
            .map(|r| r.id)
            .filter(|id| id.node == node)
            .max()
    }

    /// The router's ref of log `id`, if it reads it.
    pub(super) fn log_ref(&self, id: LogId) -> Option<LogRef> {
        if id == self.config.own {
            return Some(LogRef::OWN);
        }
        let i = self.replicas.iter().position(|r| r.id == id)?;
        u16::try_from(i + 1).ok().map(LogRef)
    }

    /// Where this node's log and its replicas stand (see `Router::mesh_status`).
    pub(super) fn status(&self, head: Offset) -> MeshStatus
    where
        S: Storage,
    {
        MeshStatus {
            log: self.config.own.to_string(),
            head: head.0,
            commit: self.messages.tracker.commit().0,
            followers: self
                .messages
                .tracker
                .lags()
                .map(|(n, lag)| (n.0, lag))
                .collect(),
            // Retired ones are gone from disk (`retire`).
            replicas: (self.replicas.iter())
                .filter(|r| !r.storage.is_retired())
                .map(|r| (r.id.to_string(), r.storage.head().0, r.commit.0))
                .collect(),
        }
    }

    /// Where the slowest follower of this node's log ends: its writer keeps what
    /// follows for it.
    pub(super) fn slowest_follower(&self) -> Option<Offset> {
        self.messages.tracker.slowest_end()
    }

    /// Whether a retained publish to `topic`, of `time_ms`, at `offset` of the log
    /// at `log`, is newer than the one applied (which it then replaces).
    pub(super) fn retained_is_newest(
        &mut self,
        topic: &str,
        time_ms: u64,
        (log, offset): (LogRef, Offset),
    ) -> bool {
        let id = match usize::from(log.0).checked_sub(1) {
            None => self.config.own,
            Some(i) => match self.replicas.get(i) {
                Some(r) => r.id,
                None => return false,
            },
        };
        let stamp = (time_ms, id, offset);
        match self.retained_stamps.get_mut(topic) {
            Some(applied) if *applied >= stamp => false,
            Some(applied) => {
                *applied = stamp;
                true
            }
            None => {
                self.retained_stamps.insert(topic.into(), stamp);
                true
            }
        }
    }
}

/// A copy of another node's log.
#[derive(Debug)]
pub(super) struct Replica<S> {
    pub(super) id: LogId,
    pub(super) storage: Kept<S>,
    /// What the writer said is committed (never above this replica's head).
    pub(super) commit: Offset,
    /// Records below this were offered to the sessions.
    pub(super) fanned: Offset,
    /// Once its writer is gone: which peers' replicas it holds all of.
    pub(super) relay: Relay,
    /// A session's place in it is past `fanned` (it moved here ahead of this
    /// copy): it waits there, and is woken when `fanned` moves.
    pub(super) waited_on: Cell<bool>,
    /// New to this node (empty when added): records stamped before
    /// `MeshConfig::started` are history, offered only to the sessions placed in
    /// it (`Session::placed`).
    pub(super) history: bool,
    /// An append failed: fetch again from this time on, not at once (a full disk
    /// would otherwise be asked to take the same records at network speed).
    refetch_at: Option<SystemTime>,
}

impl<S: Storage> Replica<S> {
    /// Its writer sent records from `base`, past this copy's head (its retention
    /// removed the rest): go on from `base`; false if it cannot.
    fn skip_to(&mut self, base: Offset, now: SystemTime) -> bool {
        let head = self.storage.head();
        if let Err(e) = self.storage.skip_to(base) {
            tracing::error!(log = %self.id, %head, %base, error = %e, retry_in = ?APPEND_RETRY, "cannot skip a replica ahead");
            self.refetch_at = Some(now + APPEND_RETRY);
            return false;
        }
        tracing::warn!(log = %self.id, from = %head, to = %base, "the writer no longer holds what this copy lacks: it goes on without it");
        self.commit = self.commit.max(base);
        self.fanned = self.fanned.max(base);
        true
    }
}

/// An entry waits for the commit to pass this offset.
fn needs(offset: Offset, st: &Staged) -> Offset {
    if st.appends() {
        offset.add(1)
    } else {
        offset
    }
}

/// How long a replica whose append failed waits before it fetches again.
pub(super) const APPEND_RETRY: Duration = Duration::from_secs(1);

impl<S: Storage> Router<S> {
    /// Run as a node of a cluster: from now on what a flush releases waits for its
    /// log's commit.
    pub fn join_mesh(&mut self, config: MeshConfig) {
        let config_own_node = config.own.node;
        let head = self.storage.head();
        let journal_head = self.journal.log().map_or(Offset(0), Storage::head);
        // The followers hold none of the journal yet (it began with a checkpoint
        // before the node joined).
        let mut journal = Written::new(config.ack_copies, &config.followers, Offset(0));
        journal.tracker.local_end(journal_head);
        self.mesh = Some(Box::new(Mesh {
            messages: Written::new(config.ack_copies, &config.followers, head),
            journal,
            config,
            committing: VecDeque::new(),
            replicas: Vec::new(),
            journal_replicas: Vec::new(),
            gate: Gate::default(),
            awaiting: Vec::new(),
            handed_away: super::session_move::HandedAway::default(),
            first_fence: None,
            last_heard: BTreeMap::new(),
            outbox: Vec::new(),
            matched: Matched::default(),
            retained_stamps: HashMap::new(),
            released: Vec::new(),
            wills: super::wills::OrphanWills::default(),
            earlier_tail: None,
            retired: Vec::new(),
        }));
        self.shared.join_cluster(config_own_node);
        self.local_end(head);
    }

    /// Replicate `log` (its writer is `log.node`) into `storage`, and fetch from its
    /// head. `None` outside a cluster, or with `u16::MAX` replicas already.
    pub fn add_replica(&mut self, log: LogId, storage: S) -> Option<LogRef> {
        let mesh = self.mesh.as_mut()?;
        let r = LogRef(u16::try_from(mesh.replicas.len() + 1).ok()?);
        let head = storage.head();
        mesh.replicas.push(Replica {
            id: log,
            storage: Kept::Open(storage),
            commit: head,
            fanned: head,
            relay: Relay::default(),
            waited_on: Cell::new(false),
            history: head == Offset(0),
            refetch_at: None,
        });
        if log.node != mesh.config.own.node {
            let fetch = PeerReply::Fetch {
                log,
                stream: Stream::Messages,
                from: head,
            };
            mesh.outbox.push((log.node, fetch));
        }
        // A session that knew where it was in this log resumes there.
        let mut read = None;
        for s in self.sessions.values_mut() {
            if let Some(i) = s.foreign.iter().position(|(id, _)| *id == log) {
                let (_, at) = s.foreign.swap_remove(i);
                s.set_behind(r, at);
                s.placed.push(r);
                s.set_journaled_in(r, at);
                read = read.max(Some(at));
            }
        }
        self.kept_copy_of_another(r, read);
        // Every persistent session gets a resume point in it: the next checkpoint
        // writes them (a log the journal names no point in is read from its start).
        self.journal.want_checkpoint();
        Some(r)
    }

    /// The log this node writes in this run (none outside a cluster).
    pub fn own_log(&self) -> Option<LogId> {
        self.mesh.as_ref().map(|m| m.own())
    }

    /// This node's log's commit (its head outside a cluster).
    pub fn commit(&self) -> Offset {
        self.mesh
            .as_ref()
            .map_or_else(|| self.storage.head(), |m| m.messages.tracker.commit())
    }

    /// What the router sends its peers, in order (nothing outside a cluster).
    pub fn drain_peer_outbox(&mut self) -> impl Iterator<Item = (NodeId, PeerReply)> + '_ {
        self.mesh
            .as_mut()
            .map(|m| m.outbox.drain(..))
            .into_iter()
            .flatten()
    }

    /// Feed one event from a peer link.
    pub fn handle_peer(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Fetched {
                peer,
                log,
                stream,
                from,
                bytes_max,
            } => self.fetched(peer, (log, stream), from, bytes_max),
            PeerEvent::LinkUp { peer } => self.link_up(peer),
            PeerEvent::Replicated {
                log,
                stream,
                base,
                commit,
                records,
            } => self.writer_sent(log, stream, (base, commit), &records),
            PeerEvent::Relayed {
                peer,
                log,
                stream,
                base,
                commit,
                records,
            } => self.relayed(peer, (log, stream), (base, commit), &records),
            PeerEvent::Moved {
                client_id,
                node,
                at,
            } => self.session_moved(&client_id, at, node),
            PeerEvent::SharedNodes { group, nodes } => self.shared.set_nodes(&group, nodes),
            PeerEvent::Done { peer, log } => self.peer_done(peer, log),
            PeerEvent::WillClaimed { client_id, from } => self.will_claimed(&client_id, from),
        }
    }

    /// The client ids whose sessions ended on this node since the last call, among
    /// those it claimed in the cluster: the driver gives them up in the metadata
    /// (`Release`), so that it does not keep every client id ever seen.
    pub fn drain_released(&mut self) -> impl Iterator<Item = Box<str>> + '_ {
        self.mesh
            .as_deref_mut()
            .into_iter()
            .flat_map(|m| m.released.drain(..))
    }

    /// The replica of `log`, if this node holds one.
    pub fn replica(&self, log: LogId) -> Option<&S> {
        let mesh = self.mesh.as_ref()?;
        mesh.replicas
            .iter()
            .find(|r| r.id == log)
            .and_then(|r| r.storage.open())
    }

    fn link_up(&mut self, peer: NodeId) {
        // A link that comes up is a sign of life: a node that restarted is not
        // taken as gone for its earlier run's silence.
        self.heard(peer);
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        mesh.messages.link_up(peer);
        mesh.journal.link_up(peer);
        for relay in (mesh.replicas.iter_mut().map(|r| &mut r.relay))
            .chain(mesh.journal_replicas.iter_mut().map(|r| &mut r.relay))
        {
            relay.linked(peer);
        }
        // Not a log its writer superseded: the writer does not serve it any more.
        let fetches: Vec<_> = (mesh.replicas.iter())
            .filter(|r| r.id.node == peer && !mesh.superseded(r.id))
            .map(|r| PeerReply::Fetch {
                log: r.id,
                stream: Stream::Messages,
                from: r.storage.head(),
            })
            .collect();
        mesh.outbox.extend(fetches.into_iter().map(|f| (peer, f)));
        self.refetch_journals(peer);
    }

    /// The entries of a flush appended at `range`: they wait for the commit.
    pub(super) fn await_commit(&mut self, staged: &mut Vec<Staged>, range: Range<Offset>) {
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        let mut offset = range.start;
        for st in staged.drain(..) {
            let next = needs(offset, &st);
            mesh.committing.push_back((offset, st));
            offset = next;
        }
        self.local_end(range.end);
    }

    /// Whether released replies must queue behind entries awaiting the commit.
    pub(super) fn committing(&self) -> bool {
        self.mesh.as_ref().is_some_and(|m| !m.committing.is_empty())
    }

    /// The own log now ends at `end`.
    fn local_end(&mut self, end: Offset) {
        let moved = self
            .mesh
            .as_mut()
            .and_then(|m| m.messages.tracker.local_end(end))
            .is_some();
        if moved {
            self.release_committed();
        }
    }

    /// Settle the entries the commit now covers, in order.
    fn release_committed(&mut self) {
        loop {
            let Some(mesh) = self.mesh.as_mut() else {
                return;
            };
            let commit = mesh.messages.tracker.commit();
            let due = mesh
                .committing
                .front()
                .is_some_and(|(offset, st)| needs(*offset, st) <= commit);
            if !due {
                return;
            }
            let Some((offset, st)) = mesh.committing.pop_front() else {
                return;
            };
            self.settle(offset, st);
        }
    }

    fn fetched(
        &mut self,
        peer: NodeId,
        (log, stream): (LogId, Stream),
        from: Offset,
        bytes_max: u32,
    ) {
        self.heard(peer);
        let now = self.now;
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        let bytes_max = bytes_max.min(mesh.config.fetch_bytes_max);
        if log != mesh.config.own {
            self.relay_fetch(peer, (log, stream), from, bytes_max);
            return;
        }
        match stream {
            Stream::Messages => {
                if mesh.messages.fetched(peer, from, bytes_max, now) {
                    self.release_committed();
                }
            }
            Stream::Journal => {
                if mesh.journal.fetched(peer, from, bytes_max, now) {
                    self.release_journaled();
                }
            }
        }
        self.answer_fetches();
    }

    /// Answer the parked fetches of both streams that have records to read or a
    /// commit to learn, and those held for `fetch_wait` (a heartbeat).
    pub(super) fn answer_fetches(&mut self) {
        let Router {
            storage,
            journal,
            mesh,
            now,
            ..
        } = self;
        let Some(mesh) = mesh.as_deref_mut() else {
            return;
        };
        let (own, times) = (mesh.config.own, (*now, mesh.config.fetch_wait));
        let outbox = &mut mesh.outbox;
        (mesh.messages).answer(&*storage, (own, Stream::Messages), times, outbox);
        if let Some(log) = journal.log() {
            (mesh.journal).answer(log, (own, Stream::Journal), times, outbox);
        }
    }

    fn replicated(&mut self, log: LogId, base: Offset, commit: Offset, records: &[Framed]) {
        self.heard(log.node);
        self.replicated_in(log.node, log, (base, commit), records);
        self.try_awaiting();
    }

    /// Time passes from `self.now` to `now`. A gap of more than a quarter of
    /// `failure_timeout` between ticks (which come every few milliseconds) is a
    /// stall of this node (a slow disk, a starved CPU): it heard nothing then
    /// because it did not listen, so that time does not count as its peers'
    /// silence. Otherwise a node that stalled for `failure_timeout` would take
    /// every peer for gone at once.
    pub(super) fn not_listening(&mut self, now: SystemTime) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let Ok(gap) = now.duration_since(self.now) else {
            return;
        };
        if self.now == SystemTime::UNIX_EPOCH || gap <= mesh.failure_timeout() / 4 {
            return;
        }
        tracing::warn!(
            stalled_ms = gap.as_millis() as u64,
            "this node did not run for a while; its peers' silence meanwhile is not counted"
        );
        for heard in mesh.last_heard.values_mut() {
            *heard = (*heard + gap).min(now);
        }
    }

    /// Records of `stream` of `log` from its writer's node: the writer's, or, for
    /// a log that node ran before its current run, its answer as a survivor's
    /// (see `relay`).
    fn writer_sent(
        &mut self,
        log: LogId,
        stream: Stream,
        (base, commit): (Offset, Offset),
        records: &[Framed],
    ) {
        if self.mesh.as_deref().is_some_and(|m| m.superseded(log)) {
            self.relayed(log.node, (log, stream), (base, commit), records);
            return;
        }
        match stream {
            Stream::Messages => self.replicated(log, base, commit, records),
            Stream::Journal => self.journal_replicated(log, base, records),
        }
    }

    /// `peer` was heard from now.
    pub(super) fn heard(&mut self, peer: NodeId) {
        let now = self.now;
        if let Some(mesh) = self.mesh.as_deref_mut() {
            mesh.last_heard.insert(peer, now);
        }
    }

    /// Records of `log` from `peer` (its writer, or a peer's replica: see `relay`)
    /// from `base`, and that peer's commit: appended at the replica's head, and
    /// offered to the sessions once committed; the writer is asked for more. True
    /// when they were appended.
    pub(super) fn replicated_in(
        &mut self,
        peer: NodeId,
        log: LogId,
        (base, commit): (Offset, Offset),
        records: &[Framed],
    ) -> bool {
        let Some(mesh) = self.mesh.as_mut() else {
            return false;
        };
        let Some(i) = mesh.replicas.iter().position(|r| r.id == log) else {
            tracing::warn!(%log, "records of a log this node does not replicate; ignored");
            return false;
        };
        let ack_copies = mesh.config.ack_copies;
        let r = &mut mesh.replicas[i];
        if base > r.storage.head() && peer == log.node && !r.skip_to(base, self.now) {
            return false;
        }
        let appended = base == r.storage.head() && !records.is_empty();
        if appended {
            if let Err(e) = r.storage.append(records) {
                tracing::error!(%log, error = %e, retry_in = ?APPEND_RETRY, "cannot append to a replica");
                r.refetch_at = Some(self.now + APPEND_RETRY);
                return false;
            }
        } else if base != r.storage.head() {
            tracing::debug!(%log, %base, head = %r.storage.head(), "records not at the replica's head; fetching again");
        }
        let head = r.storage.head();
        // The writer holds what it sent, and this node now holds it too: with
        // `ack_copies` of 2 (or 1) that is committed without waiting to be told,
        // which spares its subscribers a round trip.
        let known = if ack_copies <= 2 {
            head
        } else {
            commit.min(head)
        };
        r.commit = r.commit.max(known);
        // A writer that runs a newer log answers no more for this one (its
        // replicas sync between themselves: `relay`). One that is only silent is
        // asked on: it may come back.
        if peer == log.node && !mesh.superseded(log) {
            let fetch = PeerReply::Fetch {
                log,
                stream: Stream::Messages,
                from: head,
            };
            mesh.outbox.push((log.node, fetch));
        }
        self.fan_out_replica(i);
        appended
    }

    /// What each replica's sessions still need, and what it has not offered yet,
    /// kept; retention (the log's own config) or the page cache (`drop_cache`) may
    /// take the rest.
    pub(super) fn replicas_retention(&mut self, now: SystemTime, drop_cache: bool) {
        let Some(mesh) = self.mesh.as_deref() else {
            return;
        };
        let holds: Vec<Offset> = (0..mesh.replicas.len())
            .filter_map(|i| {
                let r = mesh.replicas.get(i)?;
                let log = LogRef(u16::try_from(i + 1).ok()?);
                let sessions = self.sessions_hold_back(log, &r.storage);
                Some(sessions.map_or(r.fanned, |s| s.min(r.fanned)))
            })
            .collect();
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        for (r, hold) in mesh.replicas.iter_mut().zip(holds) {
            if drop_cache {
                r.storage.drop_cache_below(hold);
                continue;
            }
            match r.storage.apply_retention(now, Some(hold)) {
                Ok(report) => {
                    if let Some(d) = &report.dropped_needed {
                        tracing::warn!(log = %r.id, dropped = ?d, "retention removed replicated messages sessions still needed");
                    }
                }
                Err(e) => tracing::error!(log = %r.id, error = %e, "retention of a replica failed"),
            }
        }
    }

    /// Fetch again for the replicas whose append failed, once their wait is over.
    pub(super) fn retry_fetches(&mut self) {
        let now = self.now;
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        for r in &mut mesh.replicas {
            if r.refetch_at.is_some_and(|at| at <= now) {
                r.refetch_at = None;
                let fetch = PeerReply::Fetch {
                    log: r.id,
                    stream: Stream::Messages,
                    from: r.storage.head(),
                };
                mesh.outbox.push((r.id.node, fetch));
            }
        }
    }
}
