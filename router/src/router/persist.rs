//! The journal's side of the router: the persistent state as a snapshot, restoring
//! it at startup, committing the ops a flush gathered, checkpoints, and what happens
//! when the journal cannot be written.

use std::time::Duration;

use bytes::Bytes;
use commitlog::Offset;

use mesh::LogId;

use super::fence::Fence;
use super::logs::Logs;
use super::{Router, Timer, TimerKind};
use crate::event::{CloseReason, Reply, NEVER_EXPIRES};
use crate::session::{Inflight, OutState, Session};
use crate::snapshot::{SavedInflight, SavedSession, Snapshot};
use crate::storage::Storage;
use crate::subscriptions::SubOptions;
use crate::{topic, LogRef, Message, Position, QoS, SessionId};

impl<S: Storage> Router<S> {
    /// Messages appended after the journal's last commit had their acknowledgements
    /// held back by the crash, but they are in the log: a QoS 2 publisher will resend
    /// them. Their records name the publisher and packet id (persistent sessions
    /// only), so put those ids back and the retransmission is not stored again.
    /// (`only`: for that client id alone, a session that moved here.) In a
    /// cluster, only what the log is known committed to (`until`) was stored:
    /// past it is the tail a crash left, which no node offers, and an id
    /// recovered from there would take its retransmission for a duplicate.
    pub(super) fn recover_inbound_qos2(
        &mut self,
        log: LogRef,
        (from, until): (Offset, Option<Offset>),
        only: Option<&str>,
    ) {
        let Router {
            storage,
            sessions,
            by_client,
            mesh,
            ..
        } = self;
        let Some(storage) = Logs::new(&*storage, mesh.as_deref()).get(log) else {
            return;
        };
        // After power loss the journal may be ahead of the message log: nothing to scan.
        if sessions.is_empty() || from >= storage.head() {
            return;
        }
        let mut recovered = 0u32;
        let scanned = crate::storage::visit_records(storage, from, |offset, record| {
            if until.is_some_and(|u| offset >= u) {
                return Ok(());
            }
            let Ok(m) = Message::decode(&record) else {
                return Ok::<(), commitlog::Error>(());
            };
            let Some((client_id, pkid)) = m.origin() else {
                return Ok(());
            };
            if only.is_some_and(|only| only != client_id) {
                return Ok(());
            }
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

    /// The persistent state: the persistent sessions and the retained messages (what a
    /// journal checkpoint holds; online sessions are saved as if their connections had
    /// just dropped).
    pub fn snapshot(&self) -> Snapshot {
        let logs = Logs::new(&self.storage, self.mesh.as_deref());
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
        let sessions = (sessions.into_iter())
            .map(|(sid, s)| saved_session(*sid, s, logs))
            .collect();
        Snapshot {
            retained: retained.into_iter().map(|(_, r)| r).collect(),
            sessions,
            wills: self.armed_wills(),
        }
    }

    /// Put back what [`Router::snapshot`] saved (or journal replay rebuilt), at
    /// startup before any connection: the sessions come back offline, keep their ids,
    /// and catch up from the log when their clients reconnect. In-flight messages
    /// saved by offset are read back from the log.
    pub fn restore(&mut self, snapshot: Snapshot) {
        self.restore_from(snapshot, None);
    }

    /// As [`Router::restore`], for a snapshot that `written_by`'s run saved (in a
    /// cluster, a node's earlier run: its log, and the replicas its sessions read,
    /// must be among this router's logs by then, or their positions there are
    /// dropped). `None`: this router's own log.
    pub fn restore_from(&mut self, snapshot: Snapshot, written_by: Option<LogId>) {
        for record in snapshot.retained {
            let Ok(m) = Message::decode(&record) else {
                tracing::warn!("undecodable retained message in the snapshot; dropped");
                continue;
            };
            let topic: Box<str> = m.topic_str().into();
            self.retained.insert(topic, record);
        }
        let head = self.storage.head();
        let saver = match written_by {
            None => Some(LogRef::OWN),
            Some(id) => self.mesh.as_deref().and_then(|m| m.log_ref(id)),
        };
        for mut saved in snapshot.sessions {
            let client_id: Box<str> = saved.client_id.as_str().into();
            if let Some(old) = self.by_client.get(&client_id).copied() {
                self.remove_session(old);
            }
            let sid = SessionId(saved.id);
            self.remove_session(sid);
            self.next_session = self.next_session.max(saved.id.wrapping_add(1));
            let mut s = Session::new(client_id.clone(), false, head);
            self.restore_positions(&mut s, &saved, (saver, written_by));
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
            // In-flight messages from the log come back as positions: their
            // records are read when the client returns (see `connect`).
            for i in std::mem::take(&mut saved.inflight) {
                self.restore_inflight(&mut s, i, saver);
            }
            s.incoming_qos2 = saved.incoming_qos2.into_iter().collect();
            self.sessions.insert(sid, Box::new(s));
            self.by_client.insert(client_id, sid);
        }
        self.matches.clear();
    }

    /// Persistent session `sid` as a snapshot saves it.
    pub(super) fn saved_session(&self, sid: SessionId) -> Option<SavedSession> {
        let s = self.sessions.get(&sid).filter(|s| !s.clean)?;
        let logs = Logs::new(&self.storage, self.mesh.as_deref());
        Some(saved_session(sid, s, logs))
    }

    /// Carry on from an earlier run of this node (`written_by`, its log, which the
    /// router must read by now, as every log `snapshot.logs()` names): its
    /// sessions restored from `snapshot` (its journal's replay, whose last batch was
    /// committed at `journal_head` of that log), the inbound QoS 2 ids of its
    /// unacknowledged tail recovered, the whole state written to this run's
    /// journal as its first checkpoint, so that the next run needs only this one,
    /// and a fence after that log to start this run's (before its first message).
    pub fn resume_run(
        &mut self,
        mut snapshot: Snapshot,
        journal_head: Option<Offset>,
        written_by: LogId,
    ) -> commitlog::Result<()> {
        self.unconfirmed_earlier_logs(written_by, journal_head);
        let wills = std::mem::take(&mut snapshot.wills);
        self.restore_from(snapshot, Some(written_by));
        self.earlier_run_wills(wills);
        let saver = self.mesh.as_deref().and_then(|m| m.log_ref(written_by));
        if let (Some(log), Some(from)) = (saver, journal_head) {
            self.earlier_tail_from(log, written_by, from);
        }
        // What its publishers send in this run comes after what they sent in that
        // one, at every reader (see `fence`).
        let logs = Logs::new(&self.storage, self.mesh.as_deref());
        let end = saver.and_then(|l| logs.get(l)).map(Storage::head);
        if let (Some(end), Some(mesh)) = (end, self.mesh.as_deref_mut()) {
            mesh.first_fence = Some(Fence {
                after: written_by,
                end,
            });
        }
        self.write_checkpoint()
    }

    /// Put in-flight delivery `i` back into restored session `s` (`saver`: the log
    /// its offset is in when it names none).
    fn restore_inflight(&self, s: &mut Session, i: SavedInflight, saver: Option<LogRef>) {
        let log = match i.log {
            None => saver,
            Some(id) => self.mesh.as_deref().and_then(|m| m.log_ref(id)),
        };
        let pos = match i.offset.map(|o| log.and_then(|l| Position::new(l, o))) {
            Some(None) => {
                tracing::warn!(client_id = %s.client_id, offset = ?i.offset, log = ?i.log, "in-flight message in a log this node does not read; dropped");
                return;
            }
            Some(pos) => pos,
            None => None,
        };
        let state = if i.released {
            OutState::Released
        } else {
            OutState::Sent
        };
        let inflight = Inflight {
            record: i.record.into(),
            pos,
            qos: i.qos,
            state,
            shared: None,
        };
        s.inflight.insert(i.pkid, inflight);
    }

    /// Where restored session `s` reads each log: `saved`'s points, mapped to this
    /// router's logs (`saver`: the log its `resume` is in). Not live anywhere: the
    /// first delivery reads each log from its point on; a log with no point is read
    /// from its start (it is newer than the save); never past the head of the log
    /// this node writes (it may have lost its unsynced tail in an OS crash, and new
    /// records take those offsets). A session whose point is past what another log
    /// offered waits there until it is offered that far (see `scan`; a moving
    /// session waits for the logs to reach its points first: see `session_move`).
    fn restore_positions(
        &self,
        s: &mut Session,
        saved: &SavedSession,
        (saver, written_by): (Option<LogRef>, Option<LogId>),
    ) {
        let logs = Logs::new(&self.storage, self.mesh.as_deref());
        let mut points: Vec<(LogRef, Offset)> =
            saver.map(|l| (l, saved.resume)).into_iter().collect();
        if let (None, Some(id)) = (saver, written_by) {
            s.foreign.push((id, saved.resume));
        }
        if let Some(mesh) = self.mesh.as_deref() {
            for (id, at) in &saved.resume_in {
                match mesh.log_ref(*id) {
                    Some(l) => points.push((l, *at)),
                    // Kept, and saved again: a node that reads that log (or this
                    // one, once it does) resumes there, not at the log's start.
                    None => s.foreign.push((*id, *at)),
                }
            }
        }
        for log in std::iter::once(LogRef::OWN).chain(logs.replica_refs()) {
            // A retired log (`retire`) has nothing to read: a session with no
            // place in it is at its end.
            let unknown = if logs.is_retired(log) {
                logs.end(log)
            } else {
                Offset(0)
            };
            let point = points.iter().find(|(l, _)| *l == log).map(|(_, at)| *at);
            if point.is_some() && log != LogRef::OWN {
                s.placed.push(log);
            }
            let at = point.unwrap_or(unknown);
            let at = match log {
                LogRef::OWN => at.min(logs.get(log).map_or(Offset(0), Storage::head)),
                _ => at,
            };
            s.set_behind(log, at);
            if log == LogRef::OWN {
                s.journaled_resume = at;
            } else {
                s.set_journaled_in(log, at);
            }
        }
    }

    /// The lowest offset of this node's log still needed: by a session (see
    /// `sessions_hold_back`) or, in a cluster, by the slowest follower (up to the
    /// log's `hold_bytes_max`, as for sessions).
    pub fn hold_back(&self) -> Option<Offset> {
        let sessions = self.sessions_hold_back(LogRef::OWN, &self.storage);
        let followers = self.mesh.as_ref().and_then(|m| m.slowest_follower());
        [sessions, followers].into_iter().flatten().min()
    }

    /// The lowest offset of `log` (held in `storage`) a session still needs: any
    /// connected session (clean or not: a subscriber that lags must not lose what
    /// it was promised while it is connected), and persistent ones while offline,
    /// which claim at most the newest `offline_bytes_max` of the log.
    pub(super) fn sessions_hold_back<T: Storage>(
        &self,
        log: LogRef,
        storage: &T,
    ) -> Option<Offset> {
        let cap = (self.config.offline_bytes_max > 0)
            .then(|| storage.offset_within(self.config.offline_bytes_max));
        self.sessions
            .values()
            .filter(|s| s.conn.is_some() || !s.clean)
            .filter_map(|s| {
                let (inflight, unsent) = s.lowest_needed_parts(log);
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

    /// Append the journal ops gathered since the last flush; on failure, hold back
    /// the replies that may depend on them.
    pub(super) fn commit_journal(&mut self) {
        // After a failure the journal no longer matches memory: only a whole
        // checkpoint repairs it, and it supersedes the pending ops.
        let repairing = self.journal.needs_checkpoint;
        let committed = if repairing {
            Ok(())
        } else {
            // Where the records settled (their QoS 2 ids journaled) end: the
            // commit, in a cluster.
            self.journal.commit(self.commit())
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
    pub(super) fn write_checkpoint(&mut self) -> commitlog::Result<()> {
        let state = self.snapshot();
        let hold = self.journal_hold();
        self.journal.checkpoint(&state, self.commit(), hold)?;
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// The journal could not be written: replies to persistent sessions may promise
    /// state that is not on disk. Hold them back and close those connections; the
    /// clients reconnect and resume from the state in memory, which the next flush
    /// writes whole as a checkpoint. Clean sessions' replies depend on no journaled
    /// state and still go.
    pub(super) fn journal_failed(&mut self, e: &commitlog::Error) {
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
}

/// Session `s` (`sid`) as a snapshot saves it. A live session resumes where what
/// was offered to the sessions ends (the commit, in a cluster, and what each replica
/// fanned out).
fn saved_session<S: Storage>(sid: SessionId, s: &Session, logs: Logs<'_, S>) -> SavedSession {
    let resume = s.resume(LogRef::OWN, logs.end(LogRef::OWN));
    let mut resume_in: Vec<(LogId, Offset)> = (logs.replica_refs())
        .filter_map(|r| Some((logs.id(r)?, s.resume(r, logs.end(r)))))
        .collect();
    for (id, at) in &s.foreign {
        if resume_in.iter().all(|(l, _)| l != id) {
            resume_in.push((*id, *at));
        }
    }
    let mut filters: Vec<(String, SubOptions)> =
        s.filters.iter().map(|(f, o)| (f.clone(), *o)).collect();
    filters.sort_by(|a, b| a.0.cmp(&b.0));
    let mut incoming_qos2: Vec<u16> = s.incoming_qos2.iter().copied().collect();
    incoming_qos2.sort_unstable();
    let mut inflight: Vec<SavedInflight> = (s.inflight.iter())
        .map(|(pkid, i)| saved_inflight(*pkid, i, logs))
        .collect();
    inflight.sort_unstable_by_key(|i| i.pkid);
    SavedSession {
        id: sid.0,
        client_id: s.client_id.to_string(),
        filters,
        expiry_secs: s.expiry_secs,
        resume,
        resume_in,
        retained: s.retained.iter().cloned().collect(),
        inflight,
        incoming_qos2,
    }
}

/// In-flight delivery `i` (packet id `pkid`) as a snapshot saves it. A record from a
/// log (it has a position the journal can name) is saved absent, whether or not it
/// is in memory now, to be read back when the session resumes: the journal's
/// checkpoint and replay keep only its position, and a snapshot says the same. A
/// retained message (no position) is held in memory.
fn saved_inflight<S: Storage>(pkid: u16, i: &Inflight, logs: Logs<'_, S>) -> SavedInflight {
    let at = i.pos.and_then(|p| match p.log() {
        LogRef::OWN => Some((p.offset(), None)),
        log => logs.id(log).map(|id| (p.offset(), Some(id))),
    });
    SavedInflight {
        pkid,
        qos: i.qos,
        released: i.state == OutState::Released,
        offset: at.map(|(offset, _)| offset),
        log: at.and_then(|(_, log)| log),
        record: match at {
            Some(_) => Bytes::new(),
            None => (i.record.in_memory().cloned())
                .unwrap_or_else(|| i.record.load().unwrap_or_default()),
        },
    }
}
