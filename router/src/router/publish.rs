//! PUBLISH and the acknowledgements: staging publishes, appending them as one batch,
//! acknowledging them after the append, and offering each appended message to the
//! sessions whose filters match it.

use bytes::Bytes;
use commitlog::Offset;

use super::deliver::availability;
use super::replication::share_key;
use super::{Matched, Router, RouterStats, Staged, StagedPublish};
use crate::event::{CloseReason, PubReason, Publication, Reply};
use crate::id::IdMap;
use crate::journal::Op;
use crate::session::{OutState, Queued, Session};
use crate::shared::SharedGroups;
use crate::storage::Storage;
use crate::{ConnectionId, LogRef, Message, PacketId, Position, QoS, SessionId, TopicId};

impl<S: Storage> Router<S> {
    pub(super) fn publish(
        &mut self,
        conn: ConnectionId,
        pkid: Option<PacketId>,
        message: Publication,
    ) {
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
            fence: None,
        });
    }

    pub(super) fn pubrel(&mut self, conn: ConnectionId, pkid: PacketId) {
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

    pub(super) fn pubrec(&mut self, conn: ConnectionId, pkid: PacketId) {
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
    pub(super) fn outbound_ack(&mut self, conn: ConnectionId, pkid: PacketId, qos: QoS) {
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

    pub(super) fn append_staged(&mut self) {
        self.fence_first_message();
        self.staged_records.clear();
        self.staged_records
            .extend(self.staged.iter().filter_map(Staged::record));
        let result = if self.staged_records.is_empty() {
            Ok(self.storage.head()..self.storage.head())
        } else {
            self.storage.append(&self.staged_records)
        };
        let mut staged = std::mem::take(&mut self.staged);
        match result {
            Ok(range) => {
                self.stats.appended += range.end.distance_from(range.start);
                self.stats.append_batches += 1;
                for p in staged.iter().filter_map(|s| s.publish.as_ref()) {
                    self.stats.received_by_qos[p.message.qos as usize] += 1;
                    self.stats.received_bytes_by_qos[p.message.qos as usize] +=
                        p.message.record.payload_len() as u64;
                }
                let mut offset = range.start;
                if self.mesh.is_some() {
                    // In a cluster each waits for its log's commit (see `replication`).
                    self.await_commit(&mut staged, range);
                } else {
                    for st in staged.drain(..) {
                        let next = if st.appends() { offset.add(1) } else { offset };
                        self.settle(offset, st);
                        offset = next;
                    }
                }
            }
            Err(e) => self.refuse_staged(&e, &mut staged),
        }
        // Hand the (now empty) buffer back to avoid reallocating it.
        self.staged = staged;
    }

    /// What an appended (and, in a cluster, committed) entry at `offset` releases:
    /// its message is offered to the sessions, its inbound QoS 2 id is remembered,
    /// and its acknowledgement leaves.
    pub(super) fn settle(&mut self, offset: Offset, mut st: Staged) {
        if let Some(p) = st.publish {
            let matched = self.fan_out(LogRef::OWN, offset, &p.message, p.from);
            if let Some((_, Reply::PubAck(_, reason) | Reply::PubRec(_, reason))) =
                st.reply.as_mut()
            {
                if !matched && self.mesh.is_none() {
                    // A cluster cannot know whether another node's sessions match.
                    *reason = PubReason::NoMatchingSubscribers;
                }
            }
        }
        if let Some(f) = st.fence {
            self.pass_fence(LogRef::OWN, offset, f);
        }
        if let Some((sid, id)) = st.qos2 {
            self.staged_qos2.remove(&(sid, id));
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

    /// The append failed: QoS 1/2 publishers get a refusal (MQTT 5: 0x97; a 3.1.1
    /// connection closes on it); QoS 0 publishers have no ack to carry one and are
    /// closed. Replies of other kinds still go.
    fn refuse_staged(&mut self, e: &commitlog::Error, staged: &mut Vec<Staged>) {
        self.stats.storage_errors += 1;
        tracing::error!(error = %e, records = self.staged_records.len(), "append failed; publishes refused");
        let mut closed = Vec::new();
        for st in staged.drain(..) {
            if let Some(key) = st.qos2 {
                self.staged_qos2.remove(&key);
            }
            if let Some(f) = st.fence {
                tracing::warn!(after = %f.after, "a fence could not be appended; a moved client's messages may reach readers out of order");
            }
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

    /// One more message published to `topic` (see `inspect`).
    fn count_topic(&mut self, topic: TopicId) {
        let Ok(i) = usize::try_from(topic.0) else {
            return;
        };
        if let Some(n) = self.topic_messages.get_mut(i) {
            *n += 1;
        } else if i < self.config.topics_max {
            self.topic_messages.resize(i + 1, 0);
            self.topic_messages[i] = 1;
        }
    }

    /// Offer a message appended to `log` at `offset` to the sessions it matches;
    /// false when no subscription matched (MQTT 5 acks say so).
    pub(super) fn fan_out(
        &mut self,
        log: LogRef,
        offset: Offset,
        p: &Publication,
        from: Option<ConnectionId>,
    ) -> bool {
        if p.retain {
            self.apply_retained(&p.record.payload(), (log, offset));
        }
        self.count_topic(p.topic);
        let Some(pos) = Position::new(log, offset) else {
            beyond_positions(offset);
            return true;
        };
        if p.topic == TopicId::UNINTERNED {
            self.matches.remove(&p.topic);
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
        let key = match &self.mesh {
            Some(mesh) if !matched.groups.is_empty() => share_key(mesh.own(), offset),
            _ => 0,
        };
        let message = Offered {
            pos,
            qos: p.qos,
            retain: p.retain,
            publisher,
            key,
        };
        offer(offer_to!(self), matched, message)
    }

    /// A retained publish (from any log; `at` is where in it) replaces its topic's
    /// retained message, or with an empty payload clears it; in a cluster only if
    /// it is the newest of its topic (see `Mesh::retained_is_newest`). The topic is
    /// the record's: the journal keys retained messages by name, and the record is
    /// what replay sees.
    pub(super) fn apply_retained(&mut self, record: &Bytes, at: (LogRef, Offset)) {
        let Ok(m) = Message::decode(record) else {
            return;
        };
        if let Some(mesh) = self.mesh.as_deref_mut() {
            if !mesh.retained_is_newest(m.topic_str(), m.time_ms, at) {
                return;
            }
        }
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
            self.retained.insert(m.topic_str().into(), record.clone());
        }
    }
}

/// A log offset a [`Position`] cannot hold.
pub(super) fn beyond_positions(offset: Offset) {
    // 2^48 records into one log: not reached at a million messages a second for
    // eight years; the log is to be sealed before (docs/mesh.md).
    tracing::error!(%offset, "log offset beyond what a queue can hold; message not offered");
}

/// A message being offered to the sessions that matched it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Offered {
    pub pos: Position,
    pub qos: QoS,
    pub retain: bool,
    /// The publisher's session, on this node (no local).
    pub publisher: Option<SessionId>,
    /// In a cluster, the same number on every node (`share_key`): which node's
    /// members of a shared group get it.
    pub key: u64,
}

/// What offering a message changes: the router's fields, borrowed apart from the
/// match cache that says who matched (a macro, not a method: a method would borrow
/// the whole router).
macro_rules! offer_to {
    ($router:ident) => {
        $crate::router::publish::OfferTo {
            sessions: &mut $router.sessions,
            shared: &mut $router.shared,
            queue_max: $router.config.session_queue_max,
            credit_wanted: &mut $router.credit_wanted,
            wake: &mut $router.wake,
            stats: &mut $router.stats,
        }
    };
}
pub(super) use offer_to;

/// See [`offer_to`].
pub(super) struct OfferTo<'a> {
    pub sessions: &'a mut IdMap<SessionId, Box<Session>>,
    pub shared: &'a mut SharedGroups,
    pub queue_max: usize,
    pub credit_wanted: &'a mut Vec<ConnectionId>,
    pub wake: &'a mut Vec<SessionId>,
    pub stats: &'a mut RouterStats,
}

/// Queue `m` for the sessions and one member of each shared group in `matched`;
/// false when none matched.
pub(super) fn offer(to: OfferTo<'_>, matched: &Matched, m: Offered) -> bool {
    let log = m.pos.log();
    let mut any = !matched.groups.is_empty();
    for gid in &matched.groups {
        if !to.shared.assigned_here(*gid, m.key) {
            continue;
        }
        let sessions = &*to.sessions;
        let picked = to.shared.pick(*gid, None, |sid| {
            availability(sessions.get(&sid).map(|s| &**s), log, to.queue_max)
        });
        let Some((sid, grant)) = picked else {
            to.stats.shared_dropped += 1;
            tracing::warn!(position = %m.pos, "no member of a shared subscription group can take a message; dropped");
            continue;
        };
        if let Some(s) = to.sessions.get_mut(&sid) {
            let q = Queued {
                pos: m.pos,
                qos: m.qos.min(grant.qos),
                retain: m.retain && grant.retain_as_published,
                shared: Some(*gid),
            };
            if s.offer(q, to.queue_max) && s.ready(to.credit_wanted) {
                to.wake.push(sid);
            }
        }
    }
    for (sid, grant) in &matched.sessions {
        if grant.no_local && Some(*sid) == m.publisher {
            continue;
        }
        any = true;
        let Some(s) = to.sessions.get_mut(sid) else {
            continue;
        };
        let q = Queued {
            pos: m.pos,
            qos: m.qos.min(grant.qos),
            retain: m.retain && grant.retain_as_published,
            shared: None,
        };
        if s.offer(q, to.queue_max) && s.ready(to.credit_wanted) {
            to.wake.push(*sid);
        }
    }
    any
}
