//! CONNECT and DISCONNECT: a session opened, taken over or resumed (its
//! unacknowledged deliveries resent), a connection's end, wills, and the timers of
//! offline sessions (expiry, delayed wills).

use std::time::{Duration, SystemTime};

use commitlog::Record;

use super::deliver::read_one;
use super::logs::Logs;
use super::{Router, Staged, StagedPublish, Timer, TimerKind};
use crate::event::{
    CloseReason, Connect, ConnectCode, Delivery, DisconnectReason, Reply, Will, NEVER_EXPIRES,
};
use crate::journal::Op;
use crate::session::{Inflight, OutState, Session};
use crate::storage::Storage;
use crate::{ConnectionId, PacketId, Position, SessionId};

impl<S: Storage> Router<S> {
    pub(super) fn connect(&mut self, conn: ConnectionId, c: Connect) {
        if self.connect_moved(conn, &c) {
            return;
        }
        if let Some(from) = c.moved_from {
            self.moved_clients_will(&c.client_id, from, c.clean_start);
        }
        let persistent = c.session_expiry > 0;
        let (client_id, assigned) = self.client_id_for(&c.client_id);
        let session_present = match self.by_client.get(&client_id).copied() {
            Some(sid) => self.take_over(sid, c.clean_start, &client_id),
            None => false,
        };
        let sid = self.session_for(client_id, persistent);
        self.by_conn.insert(conn, sid);
        self.attach(sid, conn, c, persistent);
        let (resend, rel) = self.resume_inflight(sid);
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

    /// The client id to use, and the one assigned if the client sent none: an empty
    /// id gets one assigned (3.1.1 allows that for clean sessions only; its
    /// connection refuses the others before they get here).
    fn client_id_for(&mut self, requested: &str) -> (Box<str>, Option<String>) {
        if !requested.is_empty() {
            return (requested.into(), None);
        }
        // In a cluster an assigned id names the log this node writes: unique in
        // the cluster without asking it.
        let node = self.mesh.as_ref().map(|m| m.own());
        let id = loop {
            self.next_assigned_id += 1;
            let id = match node {
                Some(log) => format!("rumq-{log}-{}", self.next_assigned_id),
                None => format!("rumq-{}", self.next_assigned_id),
            };
            if !self.by_client.contains_key(id.as_str()) {
                break id;
            }
        };
        (id.as_str().into(), Some(id))
    }

    /// A new connection for an existing session: close the old connection. Its will
    /// (or one still delayed from an earlier connection) is published if the session
    /// ends here or it had no delay; a delayed will of a session that goes on is
    /// cancelled by this reconnect (MQTT 5 §3.1.2.5, MQTT-3.1.3-9). True when the
    /// session goes on (CONNACK's session present).
    pub(super) fn take_over(&mut self, sid: SessionId, clean_start: bool, client_id: &str) -> bool {
        self.timers.retain(|t| t.sid != sid);
        let (old_conn, will, will_delay, old_clean) = match self.sessions.get_mut(&sid) {
            Some(s) => (s.conn.take(), s.will.take(), s.will_delay_secs, s.clean),
            None => (None, None, 0, true),
        };
        let ends = clean_start || old_clean;
        if let Some(old) = old_conn {
            self.hand_back_shared(sid);
            self.by_conn.remove(&old);
            self.outbox
                .push((old, Reply::Close(CloseReason::SessionTakenOver)));
            tracing::info!(client_id = %client_id, old = %old, "session taken over");
        }
        if let Some(w) = will {
            if ends || (old_conn.is_some() && will_delay == 0) {
                self.stage_will(*w);
            }
            self.will_gone(client_id);
        }
        if ends {
            self.remove_session(sid);
        }
        !ends
    }

    /// The client's session, opened (and journaled, if persistent) if it has none.
    fn session_for(&mut self, client_id: Box<str>, persistent: bool) -> SessionId {
        if let Some(sid) = self.by_client.get(&client_id) {
            return *sid;
        }
        let sid = SessionId(self.next_session);
        self.next_session = self.next_session.wrapping_add(1);
        let head = self.storage.head();
        if persistent {
            self.journal.push(&Op::Open {
                sid: sid.0,
                client_id: client_id.to_string(),
            });
            // Where it starts reading: without it, replay would resume it at the
            // log's first record, before it existed.
            self.journal.push(&Op::Resume {
                sid: sid.0,
                offset: head,
            });
            // And in each replica: a log the journal names no point in is read
            // from its start after a restart.
            let logs = Logs::new(&self.storage, self.mesh.as_deref());
            for log in logs.replica_refs() {
                if let Some(id) = logs.id(log) {
                    self.journal.push(&Op::ResumeIn {
                        sid: sid.0,
                        log: id,
                        offset: logs.end(log),
                    });
                }
            }
        }
        self.sessions.insert(
            sid,
            Box::new(Session::new(client_id.clone(), !persistent, head)),
        );
        self.by_client.insert(client_id, sid);
        sid
    }

    /// Attach the session to the connection, with the connection's limits, will and
    /// expiry (journaled where they change a persistent session).
    fn attach(&mut self, sid: SessionId, conn: ConnectionId, c: Connect, persistent: bool) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
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
        s.owned_since = c.owned_since;
        s.has_credit = false;
        s.credit_asked = false;
        let (client_id, clean) = (s.client_id.clone(), c.clean_start);
        self.earlier_will_on_connect(&client_id, clean);
        self.journal_will(sid);
        self.cancel_orphan_will(&client_id);
    }

    /// The session's unacknowledged deliveries, to resend after the CONNACK, and the
    /// PUBRELs of the QoS 2 ones already released. In-flight messages held as
    /// offsets (restored after a restart, or let go at disconnect: see `disconnect`)
    /// are read from the log now; one retention has removed meanwhile (or that power
    /// loss took with the last interval) is dropped.
    fn resume_inflight(&mut self, sid: SessionId) -> (Vec<Delivery>, Vec<PacketId>) {
        let (mut resend, mut rel) = (Vec::new(), Vec::new());
        let Some(s) = self.sessions.get_mut(&sid) else {
            return (resend, rel);
        };
        let logs = Logs::new(&self.storage, self.mesh.as_deref());
        s.inflight.retain(|_, inf| {
            // (A released QoS 2 message needs only its PUBREL.)
            let wanted = inf.state == OutState::Sent && inf.record.is_empty();
            let Some(pos) = inf.pos.filter(|_| wanted) else {
                return true;
            };
            let read = match logs.get(pos.log()) {
                Some(log) => read_one(log, pos.offset()),
                None => Ok(None),
            };
            match read {
                Ok(Some(record)) => {
                    inf.record = Record::from(record);
                    true
                }
                other => {
                    tracing::warn!(client_id = %s.client_id, %pos, error = ?other.err(), "in-flight message no longer in the log; dropped");
                    false
                }
            }
        });
        // Resume unacknowledged deliveries in the order they were first sent
        // (§4.4): log order, which packet ids lose once they wrap. Retained
        // messages (no position) went first.
        let mut pending: Vec<(Option<Position>, u16, &Inflight)> = s
            .inflight
            .iter()
            .map(|(pkid, inf)| (inf.pos, *pkid, inf))
            .collect();
        pending.sort_by_key(|(pos, pkid, _)| (*pos, *pkid));
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
        (resend, rel)
    }

    /// A session's end here (its clean connection gone, or it expired): removed,
    /// and in a cluster its client id, if this node claimed it, given up
    /// (`drain_released`).
    fn end_session(&mut self, sid: SessionId) {
        if let (Some(mesh), Some(s)) = (self.mesh.as_deref_mut(), self.sessions.get(&sid)) {
            if s.owned_since > 0 {
                mesh.released.push(s.client_id.clone());
            }
        }
        self.remove_session(sid);
    }

    pub(super) fn remove_session(&mut self, sid: SessionId) {
        self.drop_session(sid, true);
    }

    /// Drop a session that carries on on another node: as `remove_session`, but
    /// nothing journaled (the journal says where it went).
    pub(super) fn forget_session(&mut self, sid: SessionId) {
        self.drop_session(sid, false);
    }

    fn drop_session(&mut self, sid: SessionId, journaled: bool) {
        self.timers.retain(|t| t.sid != sid);
        if let Some(s) = self.sessions.remove(&sid) {
            if !s.clean && journaled {
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

    pub(super) fn disconnect(
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
        let client_id = will.as_ref().map(|_| s.client_id.to_string());
        let ends = s.expiry_secs == 0;
        if !ends && s.go_offline() && !s.clean {
            // The journal lists the pending retained messages as `Pending` ops and
            // takes them off the front with `Taken`: with QoS 0 ones gone from the
            // middle, replay would take the wrong ones. A checkpoint writes the list
            // as it now is.
            self.journal.want_checkpoint();
        }
        let will_delay = s.will_delay_secs;
        let expiry = s.expiry_secs;
        match (reason, will, client_id) {
            // The will waits for the earlier of its delay and the session's end
            // (armed meanwhile: in a cluster, still journaled).
            (DisconnectReason::Abrupt, Some(w), Some(id)) if ends || will_delay == 0 => {
                self.stage_will(*w);
                self.will_gone(&id);
            }
            (DisconnectReason::Abrupt, Some(w), _) => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.will = Some(w);
                    self.timers.push(Timer {
                        sid,
                        kind: TimerKind::Will,
                        after: Duration::from_secs(u64::from(will_delay.min(expiry))),
                        at: None,
                    });
                }
            }
            (DisconnectReason::Normal, Some(_), Some(id)) => self.will_gone(&id),
            _ => {}
        }
        if ends {
            self.end_session(sid);
        } else if expiry != NEVER_EXPIRES {
            self.timers.push(Timer {
                sid,
                kind: TimerKind::Expire,
                after: Duration::from_secs(u64::from(expiry)),
                at: None,
            });
        }
    }

    pub(super) fn stage_will(&mut self, mut w: Will) {
        // Stamped as it is published, not as its connection began (a retained
        // will must rank after what that connection published since, and an
        // expiry counts from now).
        let now = super::epoch_ms(self.now);
        if now > 0 {
            if let Some(r) = crate::message::restamped(&w.record.payload(), now) {
                w.record = commitlog::record::Framed::new(&r);
            }
        }
        self.staged.push(Staged {
            publish: Some(StagedPublish {
                message: w,
                from: None,
            }),
            reply: None,
            qos2: None,
            fence: None,
        });
    }

    /// Arm new timers at `now` and fire those due: delayed wills are published,
    /// expired sessions removed with what they held.
    pub(super) fn run_timers(&mut self, now: SystemTime) {
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
                let client_id = s.client_id.to_string();
                self.stage_will(*w);
                self.will_gone(&client_id);
            }
            if t.kind == TimerKind::Expire {
                self.timers.retain(|other| other.sid != t.sid);
                self.end_session(t.sid);
            }
        }
    }
}
