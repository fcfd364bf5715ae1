//! One client's session: its subscriptions, what is queued for it, what is in flight
//! to it, and the QoS 2 packet ids it has sent us that await release.
//!
//! Delivery is pull-based. A session is *live* while its queue holds every matching
//! offset up to the head: new appends are offered to it directly. When the queue hits
//! its bound (a slow or offline subscriber), the session stops being live and remembers
//! a `cursor`; later it catches up by scanning the log from there. Memory per session is
//! bounded by `queue_max` offsets and `inflight_max` messages either way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use commitlog::Offset;

use crate::event::Will;
use crate::{ConnectionId, PacketId, QoS};

/// A matched message waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// Where it is in the log.
    pub offset: Offset,
    /// Effective QoS.
    pub qos: QoS,
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
    /// The stored record (kept for redelivery).
    pub record: Bytes,
    /// Its log offset, when it came from the log (not a retained message).
    pub offset: Option<Offset>,
    /// Effective QoS (1 or 2).
    pub qos: QoS,
    /// Progress.
    pub state: OutState,
}

/// One session.
#[derive(Debug)]
pub struct Session {
    /// The client id.
    pub client_id: Arc<str>,
    /// The connection it is attached to, if online.
    pub conn: Option<ConnectionId>,
    /// Clean session: dropped when the connection ends.
    pub clean: bool,
    /// Filter → granted QoS.
    pub filters: HashMap<String, QoS>,
    /// Will of the current connection.
    pub will: Option<Will>,
    /// Retained messages to send (from new subscriptions), before the queue.
    pub retained: VecDeque<(Bytes, QoS)>,
    /// Matched offsets not yet sent, in log order.
    pub queue: VecDeque<Queued>,
    /// The queue holds every match up to the head.
    pub live: bool,
    /// When not live: where to resume scanning the log.
    pub cursor: Offset,
    /// Outbound unacknowledged messages by packet id.
    pub inflight: BTreeMap<u16, Inflight>,
    next_pkid: u16,
    /// Inbound QoS 2 packet ids stored but not yet released.
    pub incoming_qos2: HashSet<u16>,
    /// The connection asked for data and got none: send as soon as there is some.
    pub awaiting_pull: bool,
    /// The resume point last written to the session journal.
    pub journaled_resume: Offset,
}

impl Session {
    /// A new, empty session that is live from `head`.
    pub fn new(client_id: Arc<str>, clean: bool, head: Offset) -> Session {
        Session {
            client_id,
            conn: None,
            clean,
            filters: HashMap::new(),
            will: None,
            retained: VecDeque::new(),
            queue: VecDeque::new(),
            live: true,
            cursor: head,
            inflight: BTreeMap::new(),
            next_pkid: 1,
            incoming_qos2: HashSet::new(),
            awaiting_pull: false,
            journaled_resume: head,
        }
    }

    /// Offer a newly appended message. Returns true when it was queued.
    pub fn offer(&mut self, offset: Offset, qos: QoS, queue_max: usize) -> bool {
        if !self.live {
            return false;
        }
        // Offline persistent sessions keep QoS 1 and 2 only (§3.1.2.4).
        if self.conn.is_none() && qos == QoS::AtMostOnce {
            return false;
        }
        if self.queue.len() >= queue_max {
            // Fall back to the log: resume scanning from this offset later.
            self.live = false;
            self.cursor = offset;
            return false;
        }
        self.queue.push_back(Queued { offset, qos });
        true
    }

    /// The highest QoS granted by a filter of this session that matches `topic`.
    pub fn matching_qos(&self, topic: &str) -> Option<QoS> {
        self.filters
            .iter()
            .filter(|(f, _)| crate::topic::matches(f, topic))
            .map(|(_, q)| *q)
            .max()
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

    /// Where reading would resume after a restart: every match below it was sent
    /// (or dropped as QoS 0 while offline). The queue holds every match below the
    /// cursor (or the head, when live) not sent yet, so that is its front.
    pub fn resume(&self, head: Offset) -> Offset {
        self.queue
            .front()
            .map_or(if self.live { head } else { self.cursor }, |q| q.offset)
    }

    /// The lowest log offset this session still needs (for retention's hold-back).
    pub fn lowest_needed(&self) -> Option<Offset> {
        let inflight = self.inflight.values().filter_map(|i| i.offset).min();
        let queued = self.queue.front().map(|q| q.offset);
        let cursor = (!self.live).then_some(self.cursor);
        [inflight, queued, cursor].into_iter().flatten().min()
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
        assert!(s.offer(Offset(5), QoS::AtLeastOnce, 2));
        assert!(s.offer(Offset(6), QoS::AtLeastOnce, 2));
        assert!(!s.offer(Offset(7), QoS::AtLeastOnce, 2));
        assert!(!s.live);
        assert_eq!(s.cursor, Offset(7));
        assert!(
            !s.offer(Offset(8), QoS::AtLeastOnce, 2),
            "not live: the scan finds it"
        );
        assert_eq!(s.lowest_needed(), Some(Offset(5)));
    }

    #[test]
    fn offline_sessions_skip_qos0() {
        let mut s = s();
        s.conn = None;
        assert!(!s.offer(Offset(1), QoS::AtMostOnce, 10));
        assert!(s.offer(Offset(2), QoS::AtLeastOnce, 10));
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut s = s();
        s.next_pkid = u16::MAX;
        let inflight = Inflight {
            record: Bytes::new(),
            offset: None,
            qos: QoS::AtLeastOnce,
            state: OutState::Sent,
        };
        s.inflight.insert(1, inflight);
        assert_eq!(s.next_packet_id(), Some(PacketId(u16::MAX)));
        assert_eq!(s.next_packet_id(), Some(PacketId(2)));
    }

    #[test]
    fn overlapping_filters_give_max_qos() {
        let mut s = s();
        s.filters.insert("a/+".into(), QoS::AtMostOnce);
        s.filters.insert("#".into(), QoS::ExactlyOnce);
        assert_eq!(s.matching_qos("a/b"), Some(QoS::ExactlyOnce));
        s.filters.remove("#");
        assert_eq!(s.matching_qos("x"), None);
    }
}
