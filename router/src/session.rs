//! One client's session: its subscriptions, what is queued for it, what is in flight
//! to it, and the QoS 2 packet ids it has sent us that await release.
//!
//! Delivery is pull-based. A session is *live* on a log while its queue holds every
//! match in that log up to the head: new appends are offered to it directly. When the
//! queue hits its bound (a slow or offline subscriber), the session falls *behind* on
//! that log and remembers where; later it catches up by scanning the log from there.
//! Memory per session is bounded by `queue_max` positions and `inflight_max` messages
//! either way. (A router reads one log today, its own; in a cluster also the replicas
//! of the others', each with its own live state: see docs/mesh.md.)

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use commitlog::{Offset, Record};

use crate::event::Will;
use crate::id::{IdMap, IdSet};
use crate::position::{LogRef, Position};
use crate::shared::GroupId;
use crate::subscriptions::{Grant, SubOptions};
use crate::{ConnectionId, PacketId, QoS};

/// A matched message waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// Where it is.
    pub pos: Position,
    /// Effective QoS.
    pub qos: QoS,
    /// Send with the retain flag (a retained publish to a retain-as-published
    /// subscription).
    pub retain: bool,
    /// Given to this session as a member of a shared subscription group: if it goes
    /// before acknowledging, another member gets it.
    pub shared: Option<GroupId>,
}

#[cfg(test)]
impl Queued {
    /// A plain match at `offset` in the router's own log.
    pub fn new(offset: Offset, qos: QoS) -> Queued {
        Queued {
            pos: Position::new(LogRef::OWN, offset).expect("a test offset"),
            qos,
            retain: false,
            shared: None,
        }
    }
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 sent, waiting for PUBACK; or QoS 2 sent, waiting for PUBREC.
    Sent,
    /// QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// An unacknowledged outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// The stored record (kept for redelivery); empty while its session is offline
    /// and the record is to be read from the log at `offset` when it resumes (after
    /// a restart, or when it was read by reference).
    pub record: Record,
    /// Where it is, when it came from a log (not a retained message).
    pub pos: Option<Position>,
    /// Effective QoS (1 or 2).
    pub qos: QoS,
    /// Progress.
    pub state: OutState,
    /// Sent as a member of this shared subscription group.
    pub shared: Option<GroupId>,
}

/// One session.
#[derive(Debug)]
pub struct Session {
    /// The client id.
    pub client_id: Box<str>,
    /// The connection it is attached to, if online.
    pub conn: Option<ConnectionId>,
    /// Clean session: dropped when the connection ends.
    pub clean: bool,
    /// Filter → its options.
    pub filters: BTreeMap<String, SubOptions>,
    /// Seconds the session outlives its connection (0: it ends with it; see
    /// [`crate::NEVER_EXPIRES`]).
    pub expiry_secs: u32,
    /// Most QoS 1/2 messages in flight to the current connection (the lower of the
    /// router's `inflight_max` and the client's receive maximum).
    pub inflight_limit: usize,
    /// Largest packet the current connection accepts.
    pub max_packet_size: u32,
    /// Will of the current connection (or, offline, a delayed will not yet sent).
    /// Boxed: most sessions have none.
    pub will: Option<Box<Will>>,
    /// Will delay interval of the current connection, seconds.
    pub will_delay_secs: u32,
    /// The metadata entry since which this node owns the session (see
    /// [`crate::Connect::owned_since`]).
    pub owned_since: u64,
    /// Retained messages to send (from new subscriptions), before the queue.
    pub retained: VecDeque<(Bytes, QoS)>,
    /// `$SYS` messages to send (QoS 0, with the retain flag to send), first of all:
    /// the newest of each topic only (see `push_system`). Never journaled.
    pub system: VecDeque<(Bytes, bool)>,
    /// Matches not yet sent, in the order they were offered (each log's in its
    /// order).
    pub queue: VecDeque<Queued>,
    /// The logs this session fell behind on, with where to resume scanning each; on
    /// every other log it is live (its queue holds every match up to the head).
    pub behind: Vec<(LogRef, Offset)>,
    /// Outbound unacknowledged messages by packet id. A hash map rather than a
    /// tree: once grown to the window it takes and frees entries without
    /// allocating (a B-tree allocates a node every few inserts).
    pub inflight: IdMap<u16, Inflight>,
    next_pkid: u16,
    /// Inbound QoS 2 packet ids stored but not yet released.
    pub incoming_qos2: IdSet<u16>,
    /// The router holds the connection's delivery credit (it came with a `Pull`):
    /// send a batch as soon as there is data.
    pub has_credit: bool,
    /// The router asked for the credit (see `Router::drain_credit_wanted`) and it
    /// has not come back yet: do not ask twice.
    pub credit_asked: bool,
    /// The resume point last written to the session journal.
    pub journaled_resume: Offset,
    /// The same in other logs (a cluster's replicas).
    journaled_in: Vec<(LogRef, Offset)>,
    /// Where it resumes in logs this node does not read (from the node it moved
    /// from): saved with it, and taken up if this node opens such a log.
    pub foreign: Vec<(mesh::LogId, Offset)>,
    /// Replicas it has a place in from where it was before (restored, or moved
    /// here): it reads every record of them from there on, those stamped before
    /// this node started too (which a session live from the start does not get,
    /// see `replica_fan`).
    pub placed: Vec<LogRef>,
    /// Records retention removed before this session read them, not yet reported.
    pub lost: u64,
}

impl Session {
    /// A new, empty session that is live from `head` (of its router's own log).
    pub fn new(client_id: Box<str>, clean: bool, head: Offset) -> Session {
        Session {
            client_id,
            conn: None,
            clean,
            filters: BTreeMap::new(),
            expiry_secs: if clean { 0 } else { crate::NEVER_EXPIRES },
            inflight_limit: usize::from(u16::MAX),
            max_packet_size: u32::MAX,
            will: None,
            will_delay_secs: 0,
            owned_since: 0,
            retained: VecDeque::new(),
            system: VecDeque::new(),
            queue: VecDeque::new(),
            behind: Vec::new(),
            inflight: IdMap::default(),
            next_pkid: 1,
            incoming_qos2: IdSet::default(),
            has_credit: false,
            credit_asked: false,
            journaled_resume: head,
            journaled_in: Vec::new(),
            foreign: Vec::new(),
            placed: Vec::new(),
            lost: 0,
        }
    }

    /// The connection went and the session stays: it keeps QoS 1 and 2 messages
    /// only, and in-flight messages read by reference as positions, not open segment
    /// files (read again when it resumes, as restored ones are after a restart), so a
    /// segment retention removes meanwhile is not kept open, nor its disk space
    /// taken, for a client that may never come back. A replica's record stays in
    /// memory, as it came. True when QoS 0 retained messages were dropped from
    /// the pending list.
    pub fn go_offline(&mut self) -> bool {
        self.queue.retain(|q| q.qos != QoS::AtMostOnce);
        self.system.clear();
        let pending = self.retained.len();
        self.retained.retain(|(_, q)| *q != QoS::AtMostOnce);
        for inf in self.inflight.values_mut() {
            let own = inf.pos.is_some_and(|p| p.log() == LogRef::OWN);
            if own && inf.record.rest().is_some() {
                inf.record = Record::from(Bytes::new());
            }
        }
        self.retained.len() != pending
    }

    /// The resume point in `log` last written to the session journal.
    pub fn journaled_in(&self, log: LogRef) -> Option<Offset> {
        (self.journaled_in.iter())
            .find(|(l, _)| *l == log)
            .map(|(_, at)| *at)
    }

    /// `at` was written to the session journal as the resume point in `log`.
    pub fn set_journaled_in(&mut self, log: LogRef, at: Offset) {
        match self.journaled_in.iter_mut().find(|(l, _)| *l == log) {
            Some(entry) => entry.1 = at,
            None => self.journaled_in.push((log, at)),
        }
    }

    /// Whether a batch may be sent now: the router holds the connection's credit.
    /// Ask only with something to send: without the credit, this asks for it (once,
    /// in `wanted`), so that it comes back with a `Pull`.
    pub fn ready(&mut self, wanted: &mut Vec<ConnectionId>) -> bool {
        if self.has_credit {
            return true;
        }
        if let (Some(conn), false) = (self.conn, self.credit_asked) {
            self.credit_asked = true;
            wanted.push(conn);
        }
        false
    }

    /// Something waits to be sent: retained messages, queued matches, or a log
    /// scan (behind on a log).
    pub fn has_backlog(&self) -> bool {
        !self.system.is_empty()
            || !self.retained.is_empty()
            || !self.queue.is_empty()
            || !self.behind.is_empty()
    }

    /// Queue a `$SYS` record to send, replacing the one of the same topic still
    /// waiting: only the newest value is worth sending, and the queue stays as short
    /// as the list of system topics.
    pub fn push_system(&mut self, record: Bytes, retain: bool) {
        let topic = crate::router::record_topic(&record);
        self.system
            .retain(|(r, _)| crate::router::record_topic(r) != topic);
        self.system.push_back((record, retain));
    }

    /// Whether the queue holds every match in `log` up to its head.
    pub fn is_live(&self, log: LogRef) -> bool {
        self.behind.iter().all(|(l, _)| *l != log)
    }

    /// Live on every log.
    pub fn is_live_everywhere(&self) -> bool {
        self.behind.is_empty()
    }

    /// Where scanning `log` resumes, when the session is behind on it.
    pub fn cursor(&self, log: LogRef) -> Option<Offset> {
        self.behind
            .iter()
            .find(|(l, _)| *l == log)
            .map(|(_, at)| *at)
    }

    /// Behind on `log` from `at` (the cursor moves there if it already was).
    pub fn set_behind(&mut self, log: LogRef, at: Offset) {
        match self.behind.iter_mut().find(|(l, _)| *l == log) {
            Some(entry) => entry.1 = at,
            None => self.behind.push((log, at)),
        }
    }

    /// Scan `log` after the other logs it is behind on (a fence stopped it).
    pub fn scan_last(&mut self, log: LogRef) {
        if let Some(i) = self.behind.iter().position(|(l, _)| *l == log) {
            let entry = self.behind.remove(i);
            self.behind.push(entry);
        }
    }

    /// Caught up with `log`: live on it again.
    pub fn caught_up(&mut self, log: LogRef) {
        self.behind.retain(|(l, _)| *l != log);
    }

    /// Offer a newly appended message. Returns true when it was queued.
    pub fn offer(&mut self, q: Queued, queue_max: usize) -> bool {
        if !self.behind.is_empty() && !self.is_live(q.pos.log()) {
            return false;
        }
        // Offline persistent sessions keep QoS 1 and 2 only (§3.1.2.4).
        if self.conn.is_none() && q.qos == QoS::AtMostOnce {
            return false;
        }
        if self.queue.len() >= queue_max {
            // Fall back to the log: resume scanning from this offset later.
            self.behind.push((q.pos.log(), q.pos.offset()));
            return false;
        }
        self.queue.push_back(q);
        true
    }

    /// Take back a message another member of a shared group left unacknowledged:
    /// queued in its log's order (the resume point is that log's first entry),
    /// whether or not the session is live. Entries of other logs keep their places:
    /// it goes before the first later entry of its own log, or at the end.
    pub fn adopt(&mut self, q: Queued) {
        let log = q.pos.log();
        let at = self
            .queue
            .iter()
            .position(|x| x.pos.log() == log && x.pos > q.pos)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, q);
    }

    /// Hand back what came through shared subscriptions and is not acknowledged
    /// (queued, or sent at QoS 1 and awaiting PUBACK), for other members to take.
    /// Returns them with the packet ids freed (to journal as acknowledged).
    pub fn release_shared(&mut self) -> (Vec<Queued>, Vec<u16>) {
        let mut out: Vec<Queued> = Vec::new();
        self.queue.retain(|q| {
            if q.shared.is_some() {
                out.push(*q);
                false
            } else {
                true
            }
        });
        let mut freed = Vec::new();
        // Not QoS 2: once its PUBLISH was sent, its delivery must be finished with
        // this client and no other (MQTT-4.8.2-4, -5).
        self.inflight
            .retain(|pkid, i| match (i.shared, i.pos, i.state, i.qos) {
                (Some(g), Some(pos), OutState::Sent, QoS::AtLeastOnce) => {
                    out.push(Queued {
                        pos,
                        qos: i.qos,
                        retain: false,
                        shared: Some(g),
                    });
                    freed.push(*pkid);
                    false
                }
                _ => true,
            });
        out.sort_by_key(|q| q.pos);
        (out, freed)
    }

    /// This session's subscriptions matching `topic`, merged (see [`Grant`]).
    pub fn matching(&self, topic: &str) -> Option<Grant> {
        let mut found: Option<Grant> = None;
        for (f, o) in &self.filters {
            // Shared filters are the group's to match, not the member's.
            if f.starts_with(crate::topic::SHARE_PREFIX) {
                continue;
            }
            if crate::topic::matches(f, topic) {
                match found.as_mut() {
                    Some(g) => g.merge(o.grant()),
                    None => found = Some(o.grant()),
                }
            }
        }
        found
    }

    /// The identifiers of this session's subscriptions matching `topic`, ascending.
    pub fn subscription_ids(&self, topic: &str) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .filters
            .iter()
            .filter(|(f, _)| {
                let inner = crate::topic::shared(f).map_or(f.as_str(), |(_, inner)| inner);
                crate::topic::matches(inner, topic)
            })
            .filter_map(|(_, o)| o.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The identifiers of the subscriptions matching a stored record's topic (empty,
    /// without decoding, when no filter has one).
    pub fn ids_for_record(&self, record: &Record) -> Vec<u32> {
        if !self.filters.values().any(|o| o.id.is_some()) {
            return Vec::new();
        }
        crate::Message::decode(record.head())
            .map_or_else(|_| Vec::new(), |m| self.subscription_ids(m.topic_str()))
    }

    /// The most QoS 1/2 messages that may be in flight to it now.
    pub fn window(&self, inflight_max: usize) -> usize {
        inflight_max.min(self.inflight_limit)
    }

    /// A free packet id for an outbound message; `None` when all 65535 are in flight.
    pub fn next_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) {
                return Some(PacketId(id));
            }
        }
        None
    }

    /// Where reading `log` would resume after a restart (`head` is its head): every
    /// match below it was sent (or dropped as QoS 0 while offline). The queue holds
    /// every match below the cursor (or the head, when live) not sent yet, so that
    /// is the log's first entry in it.
    ///
    /// Shared-subscription entries do not count: one adopted from another member may
    /// lie below what this session has already handled, and shared messages are
    /// not read back from the log (see docs/architecture.md).
    pub fn resume(&self, log: LogRef, head: Offset) -> Offset {
        self.queue
            .iter()
            .find(|q| q.shared.is_none() && q.pos.log() == log)
            .map_or_else(|| self.cursor(log).unwrap_or(head), |q| q.pos.offset())
    }

    /// The lowest offset of `log` this session still needs.
    #[cfg(test)]
    pub fn lowest_needed(&self, log: LogRef) -> Option<Offset> {
        let (inflight, unsent) = self.lowest_needed_parts(log);
        [inflight, unsent].into_iter().flatten().min()
    }

    /// The lowest offset of `log` in flight, and the lowest not yet sent (queued, or
    /// where the log scan resumes).
    pub fn lowest_needed_parts(&self, log: LogRef) -> (Option<Offset>, Option<Offset>) {
        let in_log = |p: Position| (p.log() == log).then(|| p.offset());
        let inflight = self
            .inflight
            .values()
            .filter_map(|i| i.pos.and_then(in_log))
            .min();
        let queued = self.queue.iter().find_map(|q| in_log(q.pos));
        (
            inflight,
            [queued, self.cursor(log)].into_iter().flatten().min(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Session {
        let mut s = Session::new("c".into(), false, Offset(0));
        s.conn = Some(ConnectionId(1));
        s
    }

    #[test]
    fn a_full_queue_falls_back_to_the_log() {
        let mut s = s();
        assert!(s.offer(Queued::new(Offset(5), QoS::AtLeastOnce), 2));
        assert!(s.offer(Queued::new(Offset(6), QoS::AtLeastOnce), 2));
        assert!(!s.offer(Queued::new(Offset(7), QoS::AtLeastOnce), 2));
        assert!(!s.is_live(LogRef::OWN));
        assert_eq!(s.cursor(LogRef::OWN), Some(Offset(7)));
        assert!(
            !s.offer(Queued::new(Offset(8), QoS::AtLeastOnce), 2),
            "not live: the scan finds it"
        );
        assert_eq!(s.lowest_needed(LogRef::OWN), Some(Offset(5)));
    }

    /// Falling behind on one log leaves the session live on the others, and each
    /// log's resume point and retention hold are its own.
    #[test]
    fn each_log_has_its_own_live_state_cursor_and_resume_point() {
        let mut s = s();
        let other = LogRef(1);
        let at = |log, o| Queued {
            pos: Position::new(log, Offset(o)).unwrap(),
            ..Queued::new(Offset(0), QoS::AtLeastOnce)
        };
        assert!(s.offer(at(LogRef::OWN, 5), 2));
        assert!(s.offer(at(other, 40), 2));
        assert!(
            !s.offer(at(other, 41), 2),
            "queue full: behind on the other log"
        );
        assert!(s.is_live(LogRef::OWN) && !s.is_live(other));
        assert_eq!(s.cursor(other), Some(Offset(41)));
        assert_eq!(s.resume(LogRef::OWN, Offset(9)), Offset(5));
        assert_eq!(s.resume(other, Offset(99)), Offset(40));
        s.queue.clear();
        assert_eq!(
            s.resume(LogRef::OWN, Offset(9)),
            Offset(9),
            "live: the head"
        );
        assert_eq!(
            s.resume(other, Offset(99)),
            Offset(41),
            "behind: the cursor"
        );
        assert_eq!(s.lowest_needed(LogRef::OWN), None);
        assert_eq!(s.lowest_needed(other), Some(Offset(41)));
        s.caught_up(other);
        assert!(s.is_live_everywhere());
    }

    #[test]
    fn adopted_shared_messages_do_not_move_the_resume_point_back() {
        let mut s = s();
        assert!(s.offer(Queued::new(Offset(10), QoS::AtLeastOnce), 100));
        s.adopt(Queued {
            shared: Some(crate::shared::GroupId(1)),
            ..Queued::new(Offset(3), QoS::AtLeastOnce)
        });
        assert_eq!(
            s.queue.front().map(|q| q.pos.offset()),
            Offset(3).into(),
            "log order"
        );
        assert_eq!(s.resume(LogRef::OWN, Offset(20)), Offset(10));
        assert_eq!(
            s.lowest_needed(LogRef::OWN),
            Some(Offset(3)),
            "retention still holds it"
        );
    }

    #[test]
    fn a_shared_qos2_delivery_stays_with_its_member() {
        let mut s = s();
        for (pkid, qos) in [(1u16, QoS::AtLeastOnce), (2, QoS::ExactlyOnce)] {
            s.inflight.insert(
                pkid,
                Inflight {
                    record: Record::from(Bytes::new()),
                    pos: Position::new(LogRef::OWN, Offset(u64::from(pkid))),
                    qos,
                    state: OutState::Sent,
                    shared: Some(crate::shared::GroupId(7)),
                },
            );
        }
        let (back, freed) = s.release_shared();
        assert_eq!(freed, vec![1]);
        assert_eq!(back.len(), 1);
        assert!(
            s.inflight.contains_key(&2),
            "QoS 2 is finished with this client"
        );
    }

    #[test]
    fn offline_sessions_skip_qos0() {
        let mut s = s();
        s.conn = None;
        assert!(!s.offer(Queued::new(Offset(1), QoS::AtMostOnce), 10));
        assert!(s.offer(Queued::new(Offset(2), QoS::AtLeastOnce), 10));
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut s = s();
        s.next_pkid = u16::MAX;
        let inflight = Inflight {
            record: Record::from(Bytes::new()),
            pos: None,
            qos: QoS::AtLeastOnce,
            state: OutState::Sent,
            shared: None,
        };
        s.inflight.insert(1, inflight);
        assert_eq!(s.next_packet_id(), Some(PacketId(u16::MAX)));
        assert_eq!(s.next_packet_id(), Some(PacketId(2)));
    }

    #[test]
    fn overlapping_filters_give_max_qos_and_every_id() {
        let mut s = s();
        s.filters.insert(
            "a/+".into(),
            SubOptions {
                id: Some(7),
                ..SubOptions::qos(QoS::AtMostOnce)
            },
        );
        s.filters.insert(
            "#".into(),
            SubOptions {
                id: Some(3),
                ..SubOptions::qos(QoS::ExactlyOnce)
            },
        );
        assert_eq!(s.matching("a/b").map(|g| g.qos), Some(QoS::ExactlyOnce));
        assert_eq!(s.subscription_ids("a/b"), vec![3, 7]);
        assert_eq!(s.subscription_ids("x"), vec![3]);
        s.filters.remove("#");
        assert_eq!(s.matching("x"), None);
    }
}
