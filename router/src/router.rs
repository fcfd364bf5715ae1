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

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::{ByReference, FileRange, Offset, ReadLimits, Record};

use crate::event::{
    CloseReason, Connect, ConnectCode, Delivery, DisconnectReason, Event, PubReason, Publication,
    Reply, RetainHandling, SubscribeCode, Subscription, UnsubscribeCode, Will, NEVER_EXPIRES,
};
use crate::id::{IdMap, IdSet};
use crate::journal::{self, Journal, JournalError, Op};
use crate::session::{Inflight, OutState, Queued, Session};
use crate::shared::{Availability, GroupId, SharedGroups};
use crate::snapshot::{SavedInflight, SavedSession, Snapshot};
use crate::storage::Storage;
use crate::subscriptions::{Grant, SubOptions, SubscriptionTree};
use crate::{
    topic, ConnectionId, Layout, Message, PacketId, QoS, RouterConfig, SessionId, TopicId,
};

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
    by_client: HashMap<Box<str>, SessionId>,
    by_conn: IdMap<ConnectionId, SessionId>,
    tree: SubscriptionTree,
    /// Topic → matching sessions and shared groups; cleared whenever a
    /// subscription changes. Keyed by the id the connection interned the topic as;
    /// the name itself is read from the record on a miss.
    matches: IdMap<TopicId, Matched>,
    shared: SharedGroups,
    /// Retained messages by topic name.
    retained: HashMap<Box<str>, Bytes>,
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
            by_client: HashMap::new(),
            by_conn: IdMap::default(),
            tree: SubscriptionTree::default(),
            matches: IdMap::default(),
            shared: SharedGroups::default(),
            retained: HashMap::new(),
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
            router.recover_inbound_qos2(from);
        }
        router.journal = Journal::new(journal);
        router.write_checkpoint().map_err(JournalError::Storage)?;
        Ok(router)
    }

    /// Messages appended after the journal's last commit had their acknowledgements
    /// held back by the crash, but they are in the log: a QoS 2 publisher will resend
    /// them. Their records name the publisher and packet id (persistent sessions
    /// only), so put those ids back and the retransmission is not stored again.
    fn recover_inbound_qos2(&mut self, from: Offset) {
        // After power loss the journal may be ahead of the message log: nothing to scan.
        if self.sessions.is_empty() || from >= self.storage.head() {
            return;
        }
        let mut recovered = 0u32;
        let Router {
            storage,
            sessions,
            by_client,
            ..
        } = self;
        let scanned = crate::storage::visit_records(&*storage, from, |_, record| {
            let Ok(m) = Message::decode(&record) else {
                return Ok::<(), commitlog::Error>(());
            };
            let Some((client_id, pkid)) = m.origin() else {
                return Ok(());
            };
            let sid = by_client.get(client_id);
            if let Some(s) = sid.and_then(|sid| sessions.get_mut(sid)) {
                s.incoming_qos2.insert(pkid);
                recovered += 1;
            }
            Ok(())
        });
        if let Err(e) = scanned {
            tracing::error!(error = %e, "cannot read the log tail for QoS 2 recovery");
        }
        if recovered > 0 {
            tracing::info!(
                recovered,
                "inbound QoS 2 ids recovered from the log tail (their PUBRECs were not sent)"
            );
        }
    }

    /// Counters.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// The storage (for the driver's shutdown).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Take the message log and the session journal back (shutdown: flush first).
    pub fn into_storage(self) -> (S, Option<S>) {
        (self.storage, self.journal.into_log())
    }

    /// Sessions held (online and offline).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
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
        self.now = now;
        self.run_timers(now);
        // Keep the journal's idea of the log head recent, so crash recovery scans
        // only a short tail of the message log (see `recover_inbound_qos2`).
        let head = self.storage.head();
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
                        tracing::warn!(dropped = ?d, "retention removed messages sessions still needed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention failed"),
            }
        }
    }

    /// The persistent state: the persistent sessions and the retained messages (what a
    /// journal checkpoint holds; online sessions are saved as if their connections had
    /// just dropped).
    pub fn snapshot(&self) -> Snapshot {
        let head = self.storage.head();
        let mut retained: Vec<(&str, Bytes)> = self
            .retained
            .iter()
            .map(|(t, r)| (&**t, r.clone()))
            .collect();
        retained.sort_unstable_by_key(|(t, _)| *t);
        let mut sessions: Vec<(&SessionId, &Session)> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.clean)
            .map(|(id, s)| (id, &**s))
            .collect();
        sessions.sort_unstable_by_key(|(sid, _)| **sid);
        let sessions = sessions
            .into_iter()
            .map(|(sid, s)| {
                let resume = s.resume(head);
                let mut filters: Vec<(String, SubOptions)> =
                    s.filters.iter().map(|(f, o)| (f.clone(), *o)).collect();
                filters.sort_by(|a, b| a.0.cmp(&b.0));
                let mut incoming_qos2: Vec<u16> = s.incoming_qos2.iter().copied().collect();
                incoming_qos2.sort_unstable();
                let mut inflight: Vec<SavedInflight> = s
                    .inflight
                    .iter()
                    .map(|(pkid, i)| SavedInflight {
                        pkid: *pkid,
                        qos: i.qos,
                        released: i.state == OutState::Released,
                        offset: i.offset,
                        // A record from the log (it has an offset) is saved absent,
                        // whether or not it is in memory now, to be read back when the
                        // session resumes: the journal's checkpoint and replay keep
                        // only its offset, and a snapshot says the same. A retained
                        // message (no offset) is always held in memory.
                        record: match i.offset {
                            Some(_) => Bytes::new(),
                            None => i.record.in_memory().cloned().unwrap_or_default(),
                        },
                    })
                    .collect();
                inflight.sort_unstable_by_key(|i| i.pkid);
                SavedSession {
                    id: sid.0,
                    client_id: s.client_id.to_string(),
                    filters,
                    expiry_secs: s.expiry_secs,
                    resume,
                    retained: s.retained.iter().cloned().collect(),
                    inflight,
                    incoming_qos2,
                }
            })
            .collect();
        Snapshot {
            retained: retained.into_iter().map(|(_, r)| r).collect(),
            sessions,
        }
    }

    /// Put back what [`Router::snapshot`] saved (or journal replay rebuilt), at
    /// startup before any connection: the sessions come back offline, keep their ids,
    /// and catch up from the log when their clients reconnect. In-flight messages
    /// saved by offset are read back from the log.
    pub fn restore(&mut self, snapshot: Snapshot) {
        for record in snapshot.retained {
            let Ok(m) = Message::decode(&record) else {
                tracing::warn!("undecodable retained message in the snapshot; dropped");
                continue;
            };
            let topic: Box<str> = m.topic_str().into();
            self.retained.insert(topic, record);
        }
        let head = self.storage.head();
        for saved in snapshot.sessions {
            let client_id: Box<str> = saved.client_id.as_str().into();
            if let Some(old) = self.by_client.get(&client_id).copied() {
                self.remove_session(old);
            }
            let sid = SessionId(saved.id);
            self.remove_session(sid);
            self.next_session = self.next_session.max(saved.id.wrapping_add(1));
            let mut s = Session::new(client_id.clone(), false, head);
            // Not live: the first delivery reads the log from `resume` on (the log
            // may have lost its unsynced tail in an OS crash: never past the head).
            s.live = false;
            s.cursor = saved.resume.min(head);
            s.journaled_resume = s.cursor;
            for (filter, options) in saved.filters {
                if topic::validate_filter(&filter).is_ok() {
                    self.subscribe_filter(&filter, sid, options.grant());
                    s.filters.insert(filter, options);
                }
            }
            // The interval starts over at restart: the broker cannot know how long
            // it was down, and ending a session early loses what it holds.
            s.expiry_secs = saved.expiry_secs;
            if saved.expiry_secs != NEVER_EXPIRES {
                self.timers.push(Timer {
                    sid,
                    kind: TimerKind::Expire,
                    after: Duration::from_secs(u64::from(saved.expiry_secs)),
                    at: None,
                });
            }
            // An offline session keeps QoS 1 and 2 only.
            s.retained = saved
                .retained
                .into_iter()
                .filter(|(_, q)| *q != QoS::AtMostOnce)
                .collect();
            // In-flight messages from the log come back as offsets: their records
            // are read when the client returns (see `connect`).
            for i in saved.inflight {
                s.inflight.insert(
                    i.pkid,
                    Inflight {
                        record: i.record.into(),
                        offset: i.offset,
                        qos: i.qos,
                        state: if i.released {
                            OutState::Released
                        } else {
                            OutState::Sent
                        },
                        shared: None,
                    },
                );
            }
            s.incoming_qos2 = saved.incoming_qos2.into_iter().collect();
            self.sessions.insert(sid, Box::new(s));
            self.by_client.insert(client_id, sid);
        }
        self.matches.clear();
    }

    /// The lowest offset a session still needs: any connected session (clean or
    /// not: a subscriber that lags must not lose what it was promised while it is
    /// connected), and persistent ones while offline, which claim at most the
    /// newest `offline_bytes_max` of the log.
    pub fn hold_back(&self) -> Option<Offset> {
        let cap = (self.config.offline_bytes_max > 0)
            .then(|| self.storage.offset_within(self.config.offline_bytes_max));
        self.sessions
            .values()
            .filter(|s| s.conn.is_some() || !s.clean)
            .filter_map(|s| {
                let (inflight, unsent) = s.lowest_needed_parts();
                // The cap applies to what is not yet sent: in-flight messages are
                // journaled by offset and must stay readable.
                let unsent = match (s.conn, cap, unsent) {
                    (None, Some(cap), Some(u)) => Some(u.max(cap)),
                    (_, _, u) => u,
                };
                [inflight, unsent].into_iter().flatten().min()
            })
            .min()
    }

    /// Send `reply` after everything staged before it.
    fn reply(&mut self, conn: ConnectionId, reply: Reply) {
        if self.staged.is_empty() {
            self.outbox.push((conn, reply));
        } else {
            self.staged.push(Staged {
                publish: None,
                reply: Some((conn, reply)),
                qos2: None,
            });
        }
    }

    fn connect(&mut self, conn: ConnectionId, c: Connect) {
        let mut assigned = None;
        let persistent = c.session_expiry > 0;
        // An empty id gets one assigned (3.1.1 allows that for clean sessions only;
        // its connection refuses the others before they get here).
        let client_id: Box<str> = if c.client_id.is_empty() {
            let id = loop {
                self.next_assigned_id += 1;
                let id = format!("rumq-{}", self.next_assigned_id);
                if !self.by_client.contains_key(id.as_str()) {
                    break id;
                }
            };
            assigned = Some(id.clone());
            id.into()
        } else {
            c.client_id.as_str().into()
        };

        let mut session_present = false;
        if let Some(sid) = self.by_client.get(&client_id).copied() {
            // Take over: close the old connection. Its will (or one still delayed
            // from an earlier connection) is published if the session ends here or
            // it had no delay; a delayed will of a session that goes on is
            // cancelled by this reconnect (MQTT 5 §3.1.2.5, MQTT-3.1.3-9).
            self.timers.retain(|t| t.sid != sid);
            let (old_conn, will, will_delay, old_clean) = match self.sessions.get_mut(&sid) {
                Some(s) => (s.conn.take(), s.will.take(), s.will_delay_secs, s.clean),
                None => (None, None, 0, true),
            };
            let ends = c.clean_start || old_clean;
            if let Some(old) = old_conn {
                self.hand_back_shared(sid);
                self.by_conn.remove(&old);
                self.outbox
                    .push((old, Reply::Close(CloseReason::SessionTakenOver)));
                tracing::info!(client_id = %client_id, old = %old, new = %conn, "session taken over");
            }
            if let Some(w) = will {
                if ends || (old_conn.is_some() && will_delay == 0) {
                    self.stage_will(*w);
                }
            }
            if ends {
                self.remove_session(sid);
            } else {
                session_present = true;
            }
        }
        let sid = match self.by_client.get(&client_id) {
            Some(sid) => *sid,
            None => {
                let sid = SessionId(self.next_session);
                self.next_session = self.next_session.wrapping_add(1);
                let head = self.storage.head();
                self.sessions.insert(
                    sid,
                    Box::new(Session::new(client_id.clone(), !persistent, head)),
                );
                self.by_client.insert(client_id.clone(), sid);
                if persistent {
                    self.journal.push(&Op::Open {
                        sid: sid.0,
                        client_id: client_id.to_string(),
                    });
                }
                sid
            }
        };
        self.by_conn.insert(conn, sid);
        let mut resend = Vec::new();
        let mut rel = Vec::new();
        if let Some(s) = self.sessions.get_mut(&sid) {
            if !s.clean && !persistent {
                // A persistent session resumed by a connection that ends it on
                // disconnect (MQTT 5: clean start 0, expiry 0): no longer journaled.
                self.journal.push(&Op::Remove { sid: sid.0 });
            }
            if persistent && s.expiry_secs != c.session_expiry {
                self.journal.push(&Op::Expiry {
                    sid: sid.0,
                    secs: c.session_expiry,
                });
            }
            s.conn = Some(conn);
            s.clean = !persistent;
            s.expiry_secs = c.session_expiry;
            s.inflight_limit = usize::from(c.receive_maximum.max(1));
            s.max_packet_size = c.max_packet_size;
            s.will = c.will.map(Box::new);
            s.will_delay_secs = c.will_delay;
            s.has_credit = false;
            s.credit_asked = false;
            // In-flight messages held as offsets (restored after a restart, or let go
            // at disconnect: see `disconnect`) are read from the log now; one
            // retention has removed meanwhile (or that power loss took with the
            // last interval) is dropped.
            s.inflight.retain(|_, inf| {
                // (A released QoS 2 message needs only its PUBREL.)
                let wanted = inf.state == OutState::Sent && inf.record.is_empty();
                let Some(offset) = inf.offset.filter(|_| wanted) else {
                    return true;
                };
                match read_one(&self.storage, offset) {
                    Ok(Some(record)) => {
                        inf.record = Record::from(record);
                        true
                    }
                    other => {
                        tracing::warn!(client_id = %client_id, %offset, error = ?other.err(), "in-flight message no longer in the log; dropped");
                        false
                    }
                }
            });
            // Resume unacknowledged deliveries in the order they were first sent
            // (§4.4): log order, which packet ids lose once they wrap. Retained
            // messages (no offset) went first.
            let mut pending: Vec<(Option<Offset>, u16, &Inflight)> = s
                .inflight
                .iter()
                .map(|(pkid, inf)| (inf.offset, *pkid, inf))
                .collect();
            pending.sort_by_key(|(offset, pkid, _)| (*offset, *pkid));
            for (_, pkid, inf) in pending {
                match inf.state {
                    OutState::Sent => resend.push(Delivery {
                        record: inf.record.clone(),
                        qos: inf.qos,
                        pkid: Some(PacketId(pkid)),
                        dup: true,
                        retain: false,
                        subscription_ids: s.ids_for_record(&inf.record),
                        lost_before: 0,
                    }),
                    OutState::Released => rel.push(PacketId(pkid)),
                }
            }
        }
        self.reply(
            conn,
            Reply::ConnAck {
                code: ConnectCode::Accepted,
                session_present,
                assigned_client_id: assigned,
            },
        );
        if !resend.is_empty() {
            // Outside the delivery credit (which starts with the connection's first
            // Pull): the connection returns none for this batch.
            self.reply(conn, Reply::Deliver(resend));
        }
        for pkid in rel {
            self.reply(conn, Reply::PubRel(pkid));
        }
    }

    fn remove_session(&mut self, sid: SessionId) {
        self.timers.retain(|t| t.sid != sid);
        if let Some(s) = self.sessions.remove(&sid) {
            if !s.clean {
                self.journal.push(&Op::Remove { sid: sid.0 });
            }
            for f in s.filters.keys() {
                self.unsubscribe_filter(f, sid);
            }
            if !s.filters.is_empty() {
                self.matches.clear();
            }
            self.by_client.remove(&s.client_id);
            if let Some(c) = s.conn {
                self.by_conn.remove(&c);
            }
        }
    }

    /// Remove one subscription of `sid` from the tree or its shared group.
    /// Subscribe `sid` to `filter`: in its shared group or in the tree. True if
    /// the filter is shared.
    fn subscribe_filter(&mut self, filter: &str, sid: SessionId, grant: Grant) -> bool {
        let shared = topic::shared(filter).is_some();
        if shared {
            self.shared.join(filter, sid, grant);
        } else {
            self.tree.insert(filter, sid, grant);
        }
        shared
    }

    fn unsubscribe_filter(&mut self, filter: &str, sid: SessionId) {
        if topic::shared(filter).is_some() {
            self.shared.leave(filter, sid);
        } else {
            self.tree.remove(filter, sid);
        }
    }

    /// A shared group member's connection is going: what it got through the group
    /// and has not acknowledged goes to other members (in-flight QoS 2 messages
    /// already PUBREC'd stay: the client has them).
    fn hand_back_shared(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let (items, freed) = s.release_shared();
        if items.is_empty() {
            return;
        }
        if !s.clean {
            for pkid in freed {
                self.journal.push(&Op::Acked { sid: sid.0, pkid });
            }
        }
        for q in items {
            let Some(gid) = q.shared else {
                continue;
            };
            let sessions = &self.sessions;
            let queue_max = self.config.session_queue_max;
            let picked = self.shared.pick(gid, Some(sid), |x| {
                availability(sessions.get(&x).map(|s| &**s), queue_max)
            });
            match picked.and_then(|(other, _)| Some(other).zip(self.sessions.get_mut(&other))) {
                Some((other, o)) if o.conn.is_some() || q.qos != QoS::AtMostOnce => {
                    o.adopt(q);
                    if o.ready(&mut self.credit_wanted) {
                        self.wake.push(other);
                    }
                }
                _ => {
                    self.stats.shared_dropped += 1;
                    tracing::warn!(offset = %q.offset, "a shared subscription message left by a departing member has no other member to take it; dropped");
                }
            }
        }
    }

    fn stage_will(&mut self, w: Will) {
        self.staged.push(Staged {
            publish: Some(StagedPublish {
                message: w,
                from: None,
            }),
            reply: None,
            qos2: None,
        });
    }

    fn publish(&mut self, conn: ConnectionId, pkid: Option<PacketId>, message: Publication) {
        let qos = message.qos;
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let (reply, qos2) = match (qos, pkid) {
            (QoS::AtMostOnce, _) => (None, None),
            (QoS::AtLeastOnce, Some(p)) => {
                (Some((conn, Reply::PubAck(p, PubReason::Success))), None)
            }
            (QoS::ExactlyOnce, Some(p)) => {
                let seen = self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| s.incoming_qos2.contains(&p.0))
                    || self.staged_qos2.contains(&(sid, p.0));
                if seen {
                    // A retransmission of a publish we stored (or staged, not yet
                    // appended): acknowledge after it, store nothing (exactly once).
                    self.reply(conn, Reply::PubRec(p, PubReason::Success));
                    return;
                }
                self.staged_qos2.insert((sid, p.0));
                (
                    Some((conn, Reply::PubRec(p, PubReason::Success))),
                    Some((sid, p.0)),
                )
            }
            (_, None) => {
                self.outbox
                    .push((conn, Reply::Close(CloseReason::ProtocolError)));
                return;
            }
        };
        self.staged.push(Staged {
            publish: Some(StagedPublish {
                message,
                from: Some(conn),
            }),
            reply,
            qos2,
        });
    }

    fn pubrel(&mut self, conn: ConnectionId, pkid: PacketId) {
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        // Journaled before the PUBCOMP leaves: once the client has it, it may reuse
        // the id for a new message, which must not look like a retransmission.
        let known = s.incoming_qos2.remove(&pkid.0);
        if known && !s.clean {
            self.journal.push(&Op::Qos2Done {
                sid: sid.0,
                pkid: pkid.0,
            });
        }
        self.reply(conn, Reply::PubComp { pkid, known });
    }

    fn pubrec(&mut self, conn: ConnectionId, pkid: PacketId) {
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Some(inf) = s.inflight.get_mut(&pkid.0) {
            if inf.qos == QoS::ExactlyOnce && inf.state == OutState::Sent {
                inf.state = OutState::Released;
                // Journaled before the PUBREL leaves: after a restart the session
                // resends the PUBREL, never the message (the client may have
                // completed it and forgotten the id).
                if !s.clean {
                    self.journal.push(&Op::Released {
                        sid: sid.0,
                        pkid: pkid.0,
                    });
                }
            }
        }
        // PUBREL also for an id we no longer know: the client wants to finish it.
        self.reply(conn, Reply::PubRel(pkid));
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) frees an in-flight slot.
    fn outbound_ack(&mut self, conn: ConnectionId, pkid: PacketId, qos: QoS) {
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.inflight.get(&pkid.0).is_some_and(|i| i.qos == qos) {
            s.inflight.remove(&pkid.0);
            if !s.clean {
                self.journal.push(&Op::Acked {
                    sid: sid.0,
                    pkid: pkid.0,
                });
            }
            if s.has_backlog() && s.ready(&mut self.credit_wanted) {
                self.deliver(sid);
            }
        }
    }

    fn subscribe(
        &mut self,
        conn: ConnectionId,
        pkid: PacketId,
        filters: Vec<Subscription>,
        id: Option<u32>,
    ) {
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for sub in filters {
            let filter = sub.filter;
            if topic::validate_filter(&filter).is_err() {
                codes.push(SubscribeCode::InvalidFilter);
                continue;
            }
            let existed = self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.filters.contains_key(&filter));
            // A new filter past the per-session limit is refused (a replaced one is
            // not new): every subscription costs memory in the tree and on each match.
            let full = self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.filters.len() >= self.config.subscriptions_max && !existed);
            if full {
                tracing::warn!(%conn, filter, max = self.config.subscriptions_max, "subscription refused: limit reached");
                codes.push(SubscribeCode::QuotaExceeded);
                continue;
            }
            let options = SubOptions {
                qos: sub.qos,
                no_local: sub.no_local,
                retain_as_published: sub.retain_as_published,
                id,
            };
            let is_shared = self.subscribe_filter(&filter, sid, options.grant());
            // Retained messages are not sent for shared subscriptions (§4.8.2).
            let send_retained = !is_shared
                && match sub.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscription => !existed,
                    RetainHandling::Never => false,
                };
            if send_retained {
                for (name, record) in &self.retained {
                    if topic::matches(&filter, name) {
                        let msg_qos = Layout::parse(record).map_or(QoS::AtMostOnce, |m| m.qos);
                        retained.push((record.clone(), msg_qos.min(sub.qos)));
                    }
                }
            }
            if let Some(s) = self.sessions.get_mut(&sid) {
                if !s.clean {
                    self.journal.push(&Op::Subscribe {
                        sid: sid.0,
                        filter: filter.clone(),
                        options,
                    });
                }
                s.filters.insert(filter, options);
            }
            codes.push(SubscribeCode::Granted(sub.qos));
        }
        self.matches.clear();
        self.reply(conn, Reply::SubAck { pkid, codes });
        if let Some(s) = self.sessions.get_mut(&sid) {
            if !s.clean {
                for (record, qos) in &retained {
                    self.journal.push(&Op::Pending {
                        sid: sid.0,
                        qos: *qos,
                        record: record.clone(),
                    });
                }
            }
            s.retained.extend(retained);
            if !s.retained.is_empty() && s.ready(&mut self.credit_wanted) {
                self.wake.push(sid);
            }
        }
        self.deliver_woken();
    }

    fn unsubscribe(&mut self, conn: ConnectionId, pkid: PacketId, filters: Vec<String>) {
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        for f in &filters {
            self.unsubscribe_filter(f, sid);
            let mut code = UnsubscribeCode::NoSubscriptionExisted;
            if let Some(s) = self.sessions.get_mut(&sid) {
                if s.filters.remove(f).is_some() {
                    code = UnsubscribeCode::Success;
                    if !s.clean {
                        self.journal.push(&Op::Unsubscribe {
                            sid: sid.0,
                            filter: f.clone(),
                        });
                    }
                }
            }
            codes.push(code);
        }
        self.matches.clear();
        self.reply(conn, Reply::UnsubAck { pkid, codes });
    }

    fn disconnect(
        &mut self,
        conn: ConnectionId,
        reason: DisconnectReason,
        session_expiry: Option<u32>,
    ) {
        // A connection that was taken over is no longer in by_conn: nothing to do.
        let Some(sid) = self.by_conn.remove(&conn) else {
            return;
        };
        if !self.sessions.contains_key(&sid) {
            return;
        }
        self.hand_back_shared(sid);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.conn = None;
        s.has_credit = false;
        s.credit_asked = false;
        if let Some(secs) = session_expiry {
            // MQTT 5 DISCONNECT may change the interval (its connection refuses
            // 0 → non-zero, §3.14.2.2.2).
            if !s.clean && secs != s.expiry_secs && secs > 0 {
                self.journal.push(&Op::Expiry { sid: sid.0, secs });
            }
            s.expiry_secs = secs;
        }
        let will = s.will.take();
        let ends = s.expiry_secs == 0;
        if !ends {
            // An offline session keeps QoS 1 and 2 messages only.
            s.queue.retain(|q| q.qos != QoS::AtMostOnce);
            s.retained.retain(|(_, q)| *q != QoS::AtMostOnce);
            // And offsets, not open segment files: an in-flight message read by
            // reference is read again when the session resumes (as restored ones
            // are after a restart), so a segment retention removes meanwhile is not kept open
            // (nor its disk space taken) for a client that may never come back.
            for inf in s.inflight.values_mut() {
                if inf.offset.is_some() && inf.record.rest().is_some() {
                    inf.record = Record::from(Bytes::new());
                }
            }
        }
        let will_delay = s.will_delay_secs;
        let expiry = s.expiry_secs;
        if let (DisconnectReason::Abrupt, Some(w)) = (reason, will) {
            // The will waits for the earlier of its delay and the session's end.
            if ends || will_delay == 0 {
                self.stage_will(*w);
            } else if let Some(s) = self.sessions.get_mut(&sid) {
                s.will = Some(w);
                self.timers.push(Timer {
                    sid,
                    kind: TimerKind::Will,
                    after: Duration::from_secs(u64::from(will_delay.min(expiry))),
                    at: None,
                });
            }
        }
        if ends {
            self.remove_session(sid);
        } else if expiry != NEVER_EXPIRES {
            self.timers.push(Timer {
                sid,
                kind: TimerKind::Expire,
                after: Duration::from_secs(u64::from(expiry)),
                at: None,
            });
        }
    }

    /// Arm new timers at `now` and fire those due: delayed wills are published,
    /// expired sessions removed with what they held.
    fn run_timers(&mut self, now: SystemTime) {
        if self.timers.is_empty() {
            return;
        }
        let mut due = Vec::new();
        self.timers.retain_mut(|t| {
            let at = *t.at.get_or_insert_with(|| now + t.after);
            if at <= now {
                due.push(*t);
                false
            } else {
                true
            }
        });
        for t in due {
            let Some(s) = self.sessions.get_mut(&t.sid) else {
                continue;
            };
            if s.conn.is_some() {
                continue;
            }
            let will = s.will.take();
            if t.kind == TimerKind::Expire {
                tracing::debug!(client_id = %s.client_id, "session expired");
            }
            if let Some(w) = will {
                self.stage_will(*w);
            }
            if t.kind == TimerKind::Expire {
                self.timers.retain(|other| other.sid != t.sid);
                self.remove_session(t.sid);
            }
        }
    }

    /// Append everything staged, send the acknowledgements, fan out, deliver.
    pub fn flush(&mut self) {
        if !self.staged.is_empty() {
            self.append_staged();
        }
        self.deliver_woken();
        self.commit_journal();
    }

    /// Append the journal ops gathered since the last flush; on failure, hold back
    /// the replies that may depend on them.
    fn commit_journal(&mut self) {
        // After a failure the journal no longer matches memory: only a whole
        // checkpoint repairs it, and it supersedes the pending ops.
        let repairing = self.journal.needs_checkpoint;
        let committed = if repairing {
            Ok(())
        } else {
            self.journal.commit(self.storage.head())
        };
        let result = committed.and_then(|()| {
            if self
                .journal
                .checkpoint_due(self.config.journal_checkpoint_bytes)
            {
                self.write_checkpoint()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) if repairing => {
                tracing::info!("session journal rewritten after an earlier failure");
            }
            Ok(()) => {}
            Err(e) => self.journal_failed(&e),
        }
    }

    /// Write the whole persistent state to the journal and drop what it supersedes.
    fn write_checkpoint(&mut self) -> commitlog::Result<()> {
        let state = self.snapshot();
        self.journal.checkpoint(&state, self.storage.head())?;
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// The journal could not be written: replies to persistent sessions may promise
    /// state that is not on disk. Hold them back and close those connections; the
    /// clients reconnect and resume from the state in memory, which the next flush
    /// writes whole as a checkpoint. Clean sessions' replies depend on no journaled
    /// state and still go.
    fn journal_failed(&mut self, e: &commitlog::Error) {
        self.stats.storage_errors += 1;
        tracing::error!(error = %e, "session journal append failed; closing persistent sessions' connections");
        let mut closed = Vec::new();
        let mut kept = Vec::with_capacity(self.outbox.len());
        for (conn, reply) in self.outbox.drain(..) {
            let durable = self
                .by_conn
                .get(&conn)
                .and_then(|sid| self.sessions.get(sid))
                .is_some_and(|s| !s.clean);
            if durable {
                if !closed.contains(&conn) {
                    closed.push(conn);
                }
            } else {
                kept.push((conn, reply));
            }
        }
        for conn in closed {
            kept.push((conn, Reply::Close(CloseReason::StorageFailure)));
        }
        self.outbox = kept;
    }

    fn append_staged(&mut self) {
        self.staged_records.clear();
        self.staged_records.extend(
            self.staged
                .iter()
                .filter_map(|s| s.publish.as_ref().map(|p| p.message.record.clone())),
        );
        let result = if self.staged_records.is_empty() {
            Ok(self.storage.head()..self.storage.head())
        } else {
            self.storage.append(&self.staged_records)
        };
        let mut staged = std::mem::take(&mut self.staged);
        self.staged_qos2.clear();
        match result {
            Ok(range) => {
                self.stats.appended += range.end.distance_from(range.start);
                self.stats.append_batches += 1;
                let mut offset = range.start;
                for mut st in staged.drain(..) {
                    if let Some(p) = st.publish {
                        let matched = self.fan_out(offset, &p.message, p.from);
                        offset = offset.add(1);
                        if let Some((_, Reply::PubAck(_, reason) | Reply::PubRec(_, reason))) =
                            st.reply.as_mut()
                        {
                            if !matched {
                                *reason = PubReason::NoMatchingSubscribers;
                            }
                        }
                    }
                    if let Some((sid, id)) = st.qos2 {
                        if let Some(s) = self.sessions.get_mut(&sid) {
                            s.incoming_qos2.insert(id);
                            if !s.clean {
                                self.journal.push(&Op::Qos2In {
                                    sid: sid.0,
                                    pkid: id,
                                });
                            }
                        }
                    }
                    if let Some(r) = st.reply {
                        self.outbox.push(r);
                    }
                }
            }
            Err(e) => {
                self.stats.storage_errors += 1;
                tracing::error!(error = %e, records = self.staged_records.len(), "append failed; publishes refused");
                // QoS 1/2 publishers get a refusal (MQTT 5: 0x97; a 3.1.1
                // connection closes on it); QoS 0 publishers have no ack to carry
                // one and are closed. Replies of other kinds still go.
                let mut closed = Vec::new();
                for st in staged.drain(..) {
                    match (st.publish.and_then(|p| p.from), st.reply) {
                        (Some(_), Some((to, Reply::PubAck(p, _)))) => {
                            self.outbox
                                .push((to, Reply::PubAck(p, PubReason::StorageFailure)));
                        }
                        (Some(_), Some((to, Reply::PubRec(p, _)))) => {
                            self.outbox
                                .push((to, Reply::PubRec(p, PubReason::StorageFailure)));
                        }
                        (Some(conn), _) => {
                            if !closed.contains(&conn) {
                                closed.push(conn);
                                self.outbox
                                    .push((conn, Reply::Close(CloseReason::StorageFailure)));
                            }
                        }
                        (None, Some(r)) => self.outbox.push(r),
                        (None, None) => {}
                    }
                }
            }
        }
        // Hand the (now empty) buffer back to avoid reallocating it.
        self.staged = staged;
    }

    /// Offer an appended message to the sessions it matches; false when no
    /// subscription matched (MQTT 5 acks say so).
    fn fan_out(&mut self, offset: Offset, p: &Publication, from: Option<ConnectionId>) -> bool {
        if p.retain {
            let record = p.record.payload();
            // The topic as the record has it: the journal keys retained messages by
            // name, and the record is what replay sees.
            if let Ok(m) = Message::decode(&record) {
                if m.payload.is_empty() {
                    if self.retained.remove(m.topic_str()).is_some() {
                        self.journal.push(&Op::Unretain {
                            topic: m.topic_str().to_owned(),
                        });
                    }
                } else {
                    self.journal.push(&Op::Retain {
                        record: record.clone(),
                    });
                    self.retained.insert(m.topic_str().into(), record);
                }
            }
        }
        if !self.matches.contains_key(&p.topic) {
            let mut found = Matched::default();
            // The name as the record holds it (the connection interned it as
            // `p.topic`).
            let record = p.record.payload();
            if let Ok(m) = Message::decode(&record) {
                self.tree.matches(m.topic_str(), &mut found.sessions);
                self.shared.matches(m.topic_str(), &mut found.groups);
            }
            self.matches.insert(p.topic, found);
        }
        let Some(matched) = self.matches.get(&p.topic) else {
            return false;
        };
        let publisher = from.and_then(|c| self.by_conn.get(&c)).copied();
        let mut any = !matched.groups.is_empty();
        for gid in &matched.groups {
            let sessions = &self.sessions;
            let queue_max = self.config.session_queue_max;
            let picked = self.shared.pick(*gid, None, |sid| {
                availability(sessions.get(&sid).map(|s| &**s), queue_max)
            });
            let Some((sid, grant)) = picked else {
                self.stats.shared_dropped += 1;
                tracing::warn!(topic = ?p.topic, "no member of a shared subscription group can take a message; dropped");
                continue;
            };
            if let Some(s) = self.sessions.get_mut(&sid) {
                let q = Queued {
                    offset,
                    qos: p.qos.min(grant.qos),
                    retain: p.retain && grant.retain_as_published,
                    shared: Some(*gid),
                };
                if s.offer(q, self.config.session_queue_max) && s.ready(&mut self.credit_wanted) {
                    self.wake.push(sid);
                }
            }
        }
        for (sid, grant) in &matched.sessions {
            if grant.no_local && Some(*sid) == publisher {
                continue;
            }
            any = true;
            let Some(s) = self.sessions.get_mut(sid) else {
                continue;
            };
            let q = Queued {
                offset,
                qos: p.qos.min(grant.qos),
                retain: p.retain && grant.retain_as_published,
                shared: None,
            };
            if s.offer(q, self.config.session_queue_max) && s.ready(&mut self.credit_wanted) {
                self.wake.push(*sid);
            }
        }
        any
    }

    fn deliver_woken(&mut self) {
        let mut wake = std::mem::take(&mut self.wake);
        for sid in wake.drain(..) {
            self.deliver(sid);
        }
        self.wake = wake;
    }

    /// Send the session's connection a batch if it is waiting for one. A batch whose
    /// every message turned out to be gone (removed by retention, expired, too
    /// large) sends nothing: try the next, a bounded number of times.
    fn deliver(&mut self, sid: SessionId) {
        for _ in 0..64 {
            if !self.deliver_once(sid) {
                break;
            }
        }
    }

    /// One delivery batch; true when it skipped messages and sent none (try again).
    fn deliver_once(&mut self, sid: SessionId) -> bool {
        let Router {
            sessions,
            storage,
            journal,
            config,
            outbox,
            credit_wanted,
            read_buf,
            want_buf,
            stats,
            now,
            ..
        } = self;
        let now_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let Some(s) = sessions.get_mut(&sid) else {
            return false;
        };
        let Some(conn) = s.conn else {
            return false;
        };
        if !s.has_credit {
            return false;
        }
        let durable = !s.clean && journal.enabled();
        let inflight_max = s.window(config.inflight_max);
        let max_ids = s.filters.values().filter(|o| o.id.is_some()).count();
        let with_ids = max_ids > 0;
        // Sized once: a batch grows by no reallocation.
        let mut items = Vec::with_capacity(
            (s.queue.len() + s.retained.len())
                .clamp(1, config.deliver_records_max)
                .min(inflight_max.max(1) + s.retained.len()),
        );
        let mut bytes = 0usize;
        let mut skipped = 0usize;
        while items.len() < config.deliver_records_max && bytes < config.deliver_bytes_max {
            let Some((_, qos)) = s.retained.front() else {
                break;
            };
            if *qos != QoS::AtMostOnce && s.inflight.len() >= inflight_max {
                break;
            }
            let Some((record, qos)) = s.retained.pop_front() else {
                break;
            };
            bytes += record.len();
            if durable {
                journal.push(&Op::Taken { sid: sid.0 });
            }
            let whole = Record::from(record.clone());
            if !deliverable(s, &whole, now_ms, max_ids) {
                skipped += 1;
                continue;
            }
            let subscription_ids = ids_when(with_ids, s, &whole);
            let out = Outgoing {
                record: whole,
                offset: None,
                qos,
                retain: true,
                shared: None,
                subscription_ids,
            };
            let sent = push_delivery(s, &mut items, out);
            if let (true, Some((pkid, qos))) = (durable, sent) {
                journal.push(&Op::SentRecord {
                    sid: sid.0,
                    pkid: pkid.0,
                    qos,
                    record,
                });
            }
        }
        // Take what the window allows off the queue, then read it in runs of
        // consecutive offsets: one storage read per run, not per message (a lagging
        // subscriber is served from disk, and a syscall per message would dominate).
        let mut want = std::mem::take(want_buf);
        want.clear();
        let mut window = inflight_max.saturating_sub(s.inflight.len());
        while items.len() + want.len() < config.deliver_records_max {
            if s.queue.is_empty() {
                if s.live {
                    break;
                }
                scan(s, storage, config, read_buf, stats);
                if s.queue.is_empty() {
                    break;
                }
            }
            let Some(q) = s.queue.front().copied() else {
                break;
            };
            if q.qos != QoS::AtMostOnce {
                if window == 0 {
                    break;
                }
                window -= 1;
            }
            s.queue.pop_front();
            want.push(q);
        }
        let mut k = 0;
        while k < want.len() && bytes < config.deliver_bytes_max {
            let first = want[k].offset;
            let run = 1 + want[k + 1..]
                .iter()
                .zip(&want[k..])
                .take_while(|(next, prev)| next.offset == prev.offset.add(1))
                .count();
            read_buf.clear();
            let limits = ReadLimits {
                records_max: run,
                bytes_max: config.deliver_bytes_max - bytes,
            };
            match read_messages(storage, first, limits, read_buf) {
                Ok(b) if b.first == first && !read_buf.is_empty() => {
                    for record in read_buf.drain(..) {
                        let q = want[k];
                        k += 1;
                        bytes += record.len();
                        if !deliverable(s, &record, now_ms, max_ids) {
                            skipped += 1;
                            continue;
                        }
                        let subscription_ids = ids_when(with_ids, s, &record);
                        let out = Outgoing {
                            record,
                            offset: Some(q.offset),
                            qos: q.qos,
                            retain: q.retain,
                            shared: q.shared,
                            subscription_ids,
                        };
                        let sent = push_delivery(s, &mut items, out);
                        if let (true, Some((pkid, qos))) = (durable, sent) {
                            journal.push(&Op::Sent {
                                sid: sid.0,
                                pkid: pkid.0,
                                qos,
                                offset: q.offset,
                            });
                        }
                    }
                }
                Ok(_) | Err(commitlog::Error::OffsetOutOfRange { .. }) => {
                    stats.lost_to_retention += 1;
                    s.lost += 1;
                    skipped += 1;
                    tracing::warn!(client_id = %s.client_id, offset = %first, "message removed by retention before delivery");
                    k += 1;
                }
                Err(e) => {
                    tracing::error!(client_id = %s.client_id, offset = %first, error = %e, "cannot read message; skipping it");
                    skipped += 1;
                    k += 1;
                }
            }
        }
        // What the byte budget left over goes back to the front, in order.
        for q in want.drain(k..).rev() {
            s.queue.push_front(q);
        }
        *want_buf = want;
        if durable {
            let resume = s.resume(storage.head());
            if resume != s.journaled_resume {
                s.journaled_resume = resume;
                journal.push(&Op::Resume {
                    sid: sid.0,
                    offset: resume,
                });
            }
        }
        if let (Some(first), true) = (items.first_mut(), s.lost > 0) {
            first.lost_before = std::mem::take(&mut s.lost);
        }
        if items.is_empty() {
            return skipped > 0;
        }
        stats.delivered += items.len() as u64;
        s.has_credit = false;
        if s.has_backlog() {
            // Asked for before the batch leaves: the connection must return the
            // credit with a `Pull`, not park it.
            s.credit_asked = true;
            credit_wanted.push(conn);
        }
        outbox.push((conn, Reply::Deliver(items)));
        false
    }
}

/// The identifiers of `s`'s subscriptions matching `record`, when `s` has any
/// (`with_ids`, computed once per batch: looking costs a pass over its filters).
fn ids_when(with_ids: bool, s: &Session, record: &Record) -> Vec<u32> {
    if with_ids {
        s.ids_for_record(record)
    } else {
        Vec::new()
    }
}

/// How a shared group member stands for taking a message now: it must be keeping up
/// (live, with room in its queue), since a member that reads from the log does not
/// see shared messages there.
fn availability(s: Option<&Session>, queue_max: usize) -> Availability {
    match s {
        Some(s) if s.live && s.queue.len() < queue_max && s.conn.is_some() => Availability::Online,
        Some(s) if s.live && s.queue.len() < queue_max && !s.clean => Availability::Offline,
        _ => Availability::No,
    }
}

/// Whether a record may go to this session now: not expired (MQTT 5 message
/// expiry), and not larger than the client's maximum packet size. A message that
/// may not is skipped as if delivered (§3.1.2.11.4).
fn deliverable(s: &Session, record: &Record, now_ms: u64, max_ids: usize) -> bool {
    let check_size = s.max_packet_size != u32::MAX
        && Message::packet_size_bound(record.len(), max_ids) > s.max_packet_size as usize;
    if !check_size && !Message::has_expiry(record.head()) {
        return true;
    }
    let Ok(m) = Message::decode(record.head()) else {
        return true;
    };
    // The payload's part left in the file, for a record given by reference.
    let unread = record.rest().map_or(0, FileRange::len);
    if m.expiry_left(now_ms) == Some(0) {
        tracing::debug!(client_id = %s.client_id, topic = m.topic_str(), "message expired before delivery");
        return false;
    }
    if check_size
        && m.v5_packet_size(s.ids_for_record(record).len()) + unread > s.max_packet_size as usize
    {
        tracing::debug!(client_id = %s.client_id, topic = m.topic_str(), max = s.max_packet_size, "message larger than the client's maximum packet size; not sent");
        return false;
    }
    true
}

/// Stored messages of at least this size are read from segments by reference: the
/// first bytes in memory, the rest sent by the connection with `sendfile` straight
/// from the page cache (one copy instead of a read into memory and a write out of
/// it). Below 16 KiB the system calls cost more than the copy saves (the same bound
/// as the commitlog's for referencing rather than copying payloads on append). The
/// head holds the fields the router and the encoder look at for any usual topic.
const BY_REFERENCE: ByReference = ByReference {
    min_bytes: 16 * 1024,
    head_bytes: 512,
};

/// The record at `offset`, whole; `None` when the log no longer has it (retention
/// removed it, or recovery left a hole there).
fn read_one<S: Storage>(storage: &S, offset: Offset) -> commitlog::Result<Option<Bytes>> {
    let mut one = Vec::with_capacity(1);
    let limits = ReadLimits {
        records_max: 1,
        bytes_max: 1,
    };
    let batch = storage.read(offset, limits, &mut one)?;
    Ok(one.pop().filter(|_| batch.first == offset))
}

/// Read stored messages, large ones from segments by reference (`BY_REFERENCE`). A
/// record whose head is too short for the message's fields (a topic or properties
/// longer than the head) is read whole, so every record given can be decoded.
fn read_messages<S: Storage>(
    storage: &S,
    from: Offset,
    limits: ReadLimits,
    out: &mut Vec<Record>,
) -> commitlog::Result<commitlog::ReadBatch> {
    let start = out.len();
    let batch = storage.read_records(from, limits, BY_REFERENCE, out)?;
    for record in &mut out[start..] {
        if record.rest().is_some() && Layout::parse(record.head()).is_err() {
            match record.load() {
                Ok(whole) => *record = Record::from(whole),
                // Left as it is: the record is skipped as undecodable downstream.
                Err(e) => tracing::error!(error = %e, "cannot read a stored message whole"),
            }
        }
    }
    Ok(batch)
}

/// One message on its way to a session.
struct Outgoing {
    record: Record,
    /// Where it is in the log (none for a retained message sent on subscribe).
    offset: Option<Offset>,
    qos: QoS,
    retain: bool,
    shared: Option<GroupId>,
    subscription_ids: Vec<u32>,
}

/// Add a delivery to the batch; for QoS 1 and 2, returns the packet id and QoS it is
/// in flight with.
fn push_delivery(
    s: &mut Session,
    items: &mut Vec<Delivery>,
    out: Outgoing,
) -> Option<(PacketId, QoS)> {
    let Outgoing {
        record,
        offset,
        qos,
        retain,
        shared,
        subscription_ids,
    } = out;
    let pkid = if qos == QoS::AtMostOnce {
        None
    } else {
        // inflight_max < 65535 keeps an id free; if not, send at QoS 0 rather than stall.
        s.next_packet_id()
    };
    let qos = if pkid.is_none() { QoS::AtMostOnce } else { qos };
    if let Some(p) = pkid {
        s.inflight.insert(
            p.0,
            Inflight {
                record: record.clone(),
                offset,
                qos,
                state: OutState::Sent,
                shared,
            },
        );
    }
    items.push(Delivery {
        record,
        qos,
        pkid,
        dup: false,
        retain,
        subscription_ids,
        lost_before: 0,
    });
    pkid.map(|p| (p, qos))
}

/// Catch a session that is not live up from the log: read from its cursor and queue
/// what its filters match, until the queue is full, the read budget is spent, or the
/// head is reached (then it is live again).
fn scan<S: Storage>(
    s: &mut Session,
    storage: &S,
    config: &RouterConfig,
    buf: &mut Vec<Record>,
    stats: &mut RouterStats,
) {
    let limits = ReadLimits {
        records_max: config.scan_records_max,
        bytes_max: 4 * 1024 * 1024,
    };
    let mut rounds = 4;
    while !s.live && s.queue.len() < config.session_queue_max && rounds > 0 {
        rounds -= 1;
        buf.clear();
        let batch = match read_messages(storage, s.cursor, limits, buf) {
            Ok(b) => b,
            Err(commitlog::Error::OffsetOutOfRange { earliest, .. }) => {
                let lost = earliest.distance_from(s.cursor);
                stats.lost_to_retention += lost;
                s.lost += lost;
                tracing::warn!(client_id = %s.client_id, from = %s.cursor, to = %earliest, "retention removed messages before this session read them");
                s.cursor = earliest;
                continue;
            }
            Err(e) => {
                tracing::error!(client_id = %s.client_id, error = %e, "cannot read the log for a session");
                return;
            }
        };
        if batch.is_empty() {
            s.live = true;
            return;
        }
        let mut offset = batch.first;
        // The match of the previous record's topic: runs of records on one topic are
        // common (a device's stream), and a byte comparison is much cheaper than
        // checking the topic against every filter of the session.
        let mut last: Option<(Bytes, Option<Grant>)> = None;
        for record in buf.iter() {
            if s.queue.len() >= config.session_queue_max {
                break;
            }
            // Parsed, not decoded: no reference count is touched per record.
            let record = record.head();
            if let Ok(m) = Layout::parse(record) {
                let topic = &record[m.topic.clone()];
                let matched = match &last {
                    Some((last_topic, grant)) if last_topic[..] == *topic => *grant,
                    _ => {
                        // `parse` checked the topic is UTF-8.
                        let grant = s.matching(std::str::from_utf8(topic).unwrap_or(""));
                        last = Some((record.slice(m.topic), grant));
                        grant
                    }
                };
                // No local cannot be honoured here: a record does not say which
                // session published it (see docs/architecture.md).
                if let Some(grant) = matched {
                    let qos = m.qos.min(grant.qos);
                    if s.conn.is_some() || qos != QoS::AtMostOnce {
                        s.queue.push_back(Queued {
                            offset,
                            qos,
                            retain: m.retain && grant.retain_as_published,
                            shared: None,
                        });
                    }
                }
            }
            offset = offset.add(1);
        }
        s.cursor = offset;
        if offset == storage.head() {
            s.live = true;
        }
    }
}

#[cfg(test)]
mod tests;
