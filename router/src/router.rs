//! The router state machine.
//!
//! Publishes are *staged* as they arrive and appended to storage as one batch by
//! [`Router::flush`] (the driver calls it after draining its channel, and `handle`
//! calls it when `append_batch_max` publishes are staged). Acknowledgements leave only
//! after the append succeeded, in the order the packets arrived. Then each appended
//! message is offered to the sessions whose filters match its topic, and sessions
//! whose connections are waiting for data get a delivery batch.
//!
//! Every change to a persistent session (and to the retained messages) is also an op
//! for the session journal (see `journal`). The flush ends by appending the ops it
//! gathered, and only then may the outbox's replies leave: [`Router::drain_outbox`]
//! flushes first, so no reply can overtake the state it implies.
//!
//! | module | what of the router it holds |
//! |---|---|
//! | `router` (here) | the state, events in, the flush, the tick |
//! | `connect` | CONNECT (session takeover and resume), DISCONNECT, wills, session timers |
//! | `subscribe` | SUBSCRIBE and UNSUBSCRIBE, retained messages on subscribe, shared groups' hand-back |
//! | `publish` | PUBLISH and the acks, staging, the batch append, fan-out to matching sessions |
//! | `deliver` | delivery batches: from retained messages, the session queue, the log |
//! | `persist` | the journal's side: snapshot, restore, commit, checkpoint, failure |
//! | `system` | `$SYS` topics: retained, sent to online subscribers, never stored |
//! | `inspect` | sessions, subscriptions and topics as plain data, for the admin API |
//! | `logs` | the logs the router reads, by `LogRef`, and where what each offered ends |
//! | `replication` | in a cluster: the own log's commit, replicas, fetches |
//! | `written` | a stream this node writes as its followers hold it: commit, parked fetches |
//! | `journal_stream` | the journal as the second replicated stream: the reply gate, peers' journals |
//! | `relay` | a gone writer's logs synced between the survivors; earlier runs' logs confirmed |
//! | `session_move` | sessions that move between nodes: the handoff, the waiting CONNECT |
//! | `earlier_tail` | a restarted node's crash tail: its QoS 2 ids, once the peers confirm it |
//! | `wills` | wills in a cluster: journaled while armed, published by one node when theirs dies |
//! | `peer` | `PeerEvent` and `PeerReply` |

mod connect;
mod deliver;
mod earlier_tail;
mod fence;
mod inspect;
mod journal_stream;
mod kept;
mod logs;
mod peer;
mod persist;
mod publish;
mod relay;
mod replica_fan;
mod replication;
mod retire;
mod session_move;
mod subscribe;
mod system;
mod wills;
mod written;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::Record;

use crate::event::{Event, Publication, Reply};
use crate::id::{IdMap, IdSet};
use crate::journal::{self, Journal, JournalError, Op};
use crate::session::{Queued, Session};
use crate::shared::{GroupId, SharedGroups};
use crate::storage::Storage;
use crate::subscriptions::{Grant, SubscriptionTree};
use crate::{ConnectionId, LogRef, QoS, RouterConfig, SessionId, TopicId};

pub use fence::Fence;
pub use inspect::{MeshStatus, SessionInfo, SubscriptionInfo, SubscriptionQuery, TopicInfo};
pub use journal_stream::LoadedJournal;
pub use peer::{PeerEvent, PeerReply};
pub use replication::MeshConfig;
pub(crate) use system::record_topic;
pub use system::{is_system_topic, SYSTEM_PREFIX};

/// How often the log is told which of its pages no reader needs in memory: the
/// default `fsync_interval_ms`, since only synced pages can go.
const DROP_BEHIND_INTERVAL: Duration = Duration::from_millis(100);

/// Counters, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Records appended.
    pub appended: u64,
    /// Append batches.
    pub append_batches: u64,
    /// Messages handed to connections.
    pub delivered: u64,
    /// Messages appended from clients of this node, by QoS (wills included).
    pub received_by_qos: [u64; 3],
    /// Their stored records' bytes (topic, properties, payload, header), by QoS.
    pub received_bytes_by_qos: [u64; 3],
    /// Messages handed to connections, by the QoS they were sent with.
    pub delivered_by_qos: [u64; 3],
    /// Their stored records' bytes, by QoS.
    pub delivered_bytes_by_qos: [u64; 3],
    /// Records a session needed that retention removed before it read them.
    pub lost_to_retention: u64,
    /// Failed appends (message log or session journal).
    pub storage_errors: u64,
    /// Session journal checkpoints written.
    pub checkpoints: u64,
    /// Messages for a shared subscription group none of whose members could take
    /// them (all behind by `session_queue_max`, or gone).
    pub shared_dropped: u64,
}

/// An entry in the staging area: a record to append and/or a reply that must leave
/// after the records staged before it.
#[derive(Debug)]
struct Staged {
    publish: Option<StagedPublish>,
    reply: Option<(ConnectionId, Reply)>,
    /// Inbound QoS 2 id to remember once the append succeeded.
    qos2: Option<(SessionId, u16)>,
    /// A fence to append (see `fence`); never with `publish`.
    fence: Option<fence::Fence>,
}

impl Staged {
    /// The record it appends, if any.
    fn record(&self) -> Option<Framed> {
        match (&self.publish, self.fence) {
            (Some(p), _) => Some(p.message.record.clone()),
            (None, Some(f)) => Some(f.framed()),
            (None, None) => None,
        }
    }

    /// Whether it appends a record.
    fn appends(&self) -> bool {
        self.publish.is_some() || self.fence.is_some()
    }
}

#[derive(Debug)]
struct StagedPublish {
    message: Publication,
    /// The publishing connection (none for a will).
    from: Option<ConnectionId>,
}

/// The broker's state. See the crate docs.
#[derive(Debug)]
pub struct Router<S: Storage> {
    config: RouterConfig,
    storage: S,
    journal: Journal<S>,
    /// Boxed: the map's slots stay small, so its spare capacity (up to half of
    /// it after growing) costs pointers, not whole sessions.
    sessions: IdMap<SessionId, Box<Session>>,
    by_client: BTreeMap<Box<str>, SessionId>,
    by_conn: IdMap<ConnectionId, SessionId>,
    tree: SubscriptionTree,
    /// Topic → matching sessions and shared groups; cleared whenever a
    /// subscription changes. Keyed by the id the connection interned the topic as;
    /// the name itself is read from the record on a miss.
    matches: IdMap<TopicId, Matched>,
    /// Messages published here, by topic id (up to `config.topics_max`).
    topic_messages: Vec<u64>,
    shared: SharedGroups,
    /// Retained messages by topic name.
    retained: BTreeMap<Box<str>, Bytes>,
    /// Retained `$SYS` messages by topic name: never journaled (see `system`).
    system_retained: BTreeMap<Box<str>, Bytes>,
    staged: Vec<Staged>,
    /// Inbound QoS 2 ids (by session) of the publishes in `staged`: a retransmission
    /// that arrives before the flush is not stored twice.
    staged_qos2: IdSet<(SessionId, u16)>,
    staged_records: Vec<Framed>,
    outbox: Vec<(ConnectionId, Reply)>,
    /// Connections whose delivery credit the router asks for (see
    /// [`Router::drain_credit_wanted`]).
    credit_wanted: Vec<ConnectionId>,
    wake: Vec<SessionId>,
    next_session: u32,
    next_assigned_id: u64,
    last_retention: Option<SystemTime>,
    /// When the log was last told which pages no reader needs in memory.
    last_drop_behind: Option<SystemTime>,
    read_buf: Vec<Record>,
    /// Scratch for `deliver`: the queued messages being read.
    want_buf: Vec<Queued>,
    /// Offline sessions whose expiry or delayed will is pending.
    timers: Vec<Timer>,
    /// Wall-clock time of the last tick (times message expiry and timers).
    now: SystemTime,
    stats: RouterStats,
    /// In a cluster: the commit, replicas and fetches (see `replication`).
    mesh: Option<Box<replication::Mesh<S>>>,
}

/// Who a topic's messages go to.
#[derive(Debug, Default)]
struct Matched {
    sessions: Vec<(SessionId, Grant)>,
    groups: Vec<GroupId>,
}

/// Something an offline session is waiting for. `at` is set by the first tick after
/// it was armed: the router reads no clock of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timer {
    sid: SessionId,
    kind: TimerKind,
    after: Duration,
    at: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// The session ends (its will, if still held, is published first).
    Expire,
    /// The delayed will is published.
    Will,
}

impl<S: Storage> Router<S> {
    /// A router over `storage`.
    pub fn new(config: RouterConfig, storage: S) -> Self {
        Router {
            config,
            storage,
            journal: Journal::none(),
            sessions: IdMap::default(),
            by_client: BTreeMap::new(),
            by_conn: IdMap::default(),
            tree: SubscriptionTree::default(),
            matches: IdMap::default(),
            topic_messages: Vec::new(),
            shared: SharedGroups::default(),
            retained: BTreeMap::new(),
            system_retained: BTreeMap::new(),
            staged: Vec::new(),
            staged_qos2: IdSet::default(),
            staged_records: Vec::new(),
            outbox: Vec::new(),
            credit_wanted: Vec::new(),
            wake: Vec::new(),
            next_session: 0,
            next_assigned_id: 0,
            last_retention: None,
            last_drop_behind: None,
            read_buf: Vec::new(),
            want_buf: Vec::new(),
            timers: Vec::new(),
            now: SystemTime::UNIX_EPOCH,
            stats: RouterStats::default(),
            mesh: None,
        }
    }

    /// A router whose persistent state is journaled in `journal`: replays it (the
    /// state as of the last committed flush: sessions, subscriptions, delivery
    /// progress, in-flight messages, QoS 2 ids, retained messages), recovers what the
    /// message log holds beyond it, and writes a fresh checkpoint.
    pub fn open(config: RouterConfig, storage: S, journal: S) -> Result<Self, JournalError> {
        let (snapshot, journal_head) = journal::replay(&journal)?;
        let mut router = Router::new(config, storage);
        router.restore(snapshot);
        if let Some(from) = journal_head {
            router.recover_inbound_qos2(LogRef::OWN, (from, None), None);
        }
        router.journal = Journal::new(journal);
        router.write_checkpoint().map_err(JournalError::Storage)?;
        Ok(router)
    }

    /// Counters.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// The storage (for the driver's shutdown).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The session journal's storage, if the router has one (see [`Router::open`]).
    pub fn journal_storage(&self) -> Option<&S> {
        self.journal.log()
    }

    /// Take the message log and the session journal back (shutdown: flush first).
    pub fn into_storage(self) -> (S, Option<S>) {
        (self.storage, self.journal.into_log())
    }

    /// Every shared subscription group with a member on this node
    /// (`$share/{group}/{filter}`), if that set changed since the last call: in a
    /// cluster, what the driver tells the metadata group.
    pub fn take_shared_groups_changed(&mut self) -> Option<Vec<String>> {
        self.shared.take_changed()
    }

    /// Sessions held (online and offline).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions with a connection.
    pub fn connected_count(&self) -> usize {
        self.by_conn.len()
    }

    /// Retained messages held.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Subscriptions held across all sessions.
    pub fn subscription_count(&self) -> usize {
        self.tree.len()
    }

    /// Replies produced so far, in order. Flushes first: a reply may leave only once
    /// what it acknowledges is appended and journaled.
    pub fn drain_outbox(&mut self) -> std::vec::Drain<'_, (ConnectionId, Reply)> {
        self.flush();
        self.outbox_drained();
        self.outbox.drain(..)
    }

    /// The connections whose delivery credit the router asks for, since the last
    /// call: it has messages for them, or a batch it sent left some behind. The
    /// credit is the right to send a connection its next `Deliver` batch; it comes
    /// back with an `Event::Pull`. Whoever runs the router hands it in as soon as
    /// the connection returned it (the broker's connections can return it without
    /// an event, and the driver then turns it into a `Pull`), or makes sure the
    /// connection sends its `Pull` when it does. Drain it together with
    /// [`Router::drain_outbox`], before the replies are handed out: a batch that
    /// left messages behind asks before it leaves.
    pub fn drain_credit_wanted(&mut self) -> std::vec::Drain<'_, ConnectionId> {
        self.credit_wanted.drain(..)
    }

    /// Feed one event.
    pub fn handle(&mut self, event: Event) {
        let Some(event) = self.hold_for_move(event) else {
            return;
        };
        match event {
            Event::Connect { conn, connect } => self.connect(conn, connect),
            Event::Publish {
                conn,
                pkid,
                message,
            } => self.publish(conn, pkid, message),
            Event::PubAck { conn, pkid } => self.outbound_ack(conn, pkid, QoS::AtLeastOnce),
            Event::PubRec { conn, pkid } => self.pubrec(conn, pkid),
            Event::PubRecRefused { conn, pkid } => self.outbound_ack(conn, pkid, QoS::ExactlyOnce),
            Event::PubComp { conn, pkid } => self.outbound_ack(conn, pkid, QoS::ExactlyOnce),
            Event::PubRel { conn, pkid } => self.pubrel(conn, pkid),
            Event::Subscribe {
                conn,
                pkid,
                filters,
                id,
            } => self.subscribe(conn, pkid, filters, id),
            Event::Unsubscribe {
                conn,
                pkid,
                filters,
            } => self.unsubscribe(conn, pkid, filters),
            Event::Pull { conn } => {
                if let Some(sid) = self.by_conn.get(&conn).copied() {
                    if let Some(s) = self.sessions.get_mut(&sid) {
                        s.has_credit = true;
                        s.credit_asked = false;
                    }
                    self.deliver(sid);
                }
            }
            Event::Disconnect {
                conn,
                reason,
                session_expiry,
            } => self.disconnect(conn, reason, session_expiry),
        }
        if self.staged.len() >= self.config.append_batch_max {
            self.flush();
        }
    }

    /// Periodic work at wall-clock time `now`: interval fsync and retention.
    pub fn tick(&mut self, now: SystemTime) {
        self.not_listening(now);
        self.now = now;
        self.run_timers(now);
        self.relay_fetches();
        self.settle_earlier_tail();
        self.orphan_wills();
        self.try_awaiting();
        // Keep the journal's idea of the log head recent, so crash recovery scans
        // only a short tail of the message log (see `recover_inbound_qos2`): the
        // settled part of it (the commit, in a cluster).
        let head = self.commit();
        if self.journal.head_is_stale(head) && !self.sessions.is_empty() {
            self.journal.push(&Op::Head(head));
        }
        self.flush();
        if let Err(e) = self.storage.tick() {
            tracing::error!(error = %e, "commitlog fsync failed");
            self.stats.storage_errors += 1;
        }
        if let Some(Err(e)) = self.journal.log_mut().map(Storage::tick) {
            tracing::error!(error = %e, "session journal fsync failed");
            self.stats.storage_errors += 1;
        }
        // Pages the readers have passed become droppable once synced: look as often
        // as the interval fsync makes them so (the lowest offset needed costs a pass
        // over the sessions), so freed pages are reused while the host still backs them.
        let due = self.last_drop_behind.is_none_or(|last| {
            now.duration_since(last)
                .is_ok_and(|d| d >= DROP_BEHIND_INTERVAL)
        });
        if due {
            self.last_drop_behind = Some(now);
            let needed = self.hold_back().unwrap_or_else(|| self.storage.head());
            self.storage.drop_cache_below(needed);
            self.replicas_retention(now, true);
        }
        let due = self.last_retention.is_none_or(|last| {
            now.duration_since(last)
                .is_ok_and(|d| d >= Duration::from_millis(self.config.retention_interval_ms))
        });
        if due {
            self.last_retention = Some(now);
            // Sessions whose bursts are over give their in-flight windows back
            // (here, not on each ack: a window that empties between bursts would
            // otherwise be freed and regrown per burst).
            for s in self.sessions.values_mut() {
                if s.inflight.is_empty() && s.inflight.capacity() > 16 {
                    s.inflight.shrink_to(0);
                }
            }
            let hold_back = self.hold_back();
            match self.storage.apply_retention(now, hold_back) {
                Ok(report) => {
                    if let Some(d) = &report.dropped_needed {
                        tracing::warn!(dropped = ?d, "retention removed messages sessions or followers still needed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention failed"),
            }
            self.replicas_retention(now, false);
            self.retire_done_logs();
        }
    }

    /// Send `reply` after everything staged before it.
    fn reply(&mut self, conn: ConnectionId, reply: Reply) {
        if self.staged.is_empty() && !self.committing() {
            self.outbox.push((conn, reply));
        } else {
            self.staged.push(Staged {
                publish: None,
                reply: Some((conn, reply)),
                qos2: None,
                fence: None,
            });
        }
    }

    /// Append everything staged, send the acknowledgements, fan out, deliver.
    pub fn flush(&mut self) {
        if !self.staged.is_empty() {
            self.append_staged();
        }
        if self.mesh.is_some() {
            self.fan_out_replicas();
            self.retry_fetches();
            self.retry_journal_fetches();
        }
        self.deliver_woken();
        self.commit_journal();
        if self.mesh.is_some() {
            self.journal_written();
            self.answer_fetches();
        }
    }
}

/// Milliseconds since the epoch of `t` (0 before it): the time messages carry.
fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
