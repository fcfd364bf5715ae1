//! The journal's side of the router: the persistent state as a snapshot, restoring
//! it at startup, committing the ops a flush gathered, checkpoints, and what happens
//! when the journal cannot be written.

use std::time::Duration;

use bytes::Bytes;
use commitlog::Offset;

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
    pub(super) fn recover_inbound_qos2(&mut self, from: Offset) {
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

    /// The persistent state: the persistent sessions and the retained messages (what a
    /// journal checkpoint holds; online sessions are saved as if their connections had
    /// just dropped).
    pub fn snapshot(&self) -> Snapshot {
        // What was offered to the sessions (the commit, in a cluster): a live
        // session resumes there.
        let head = self.commit();
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
                let resume = s.resume(LogRef::OWN, head);
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
                        // Offsets of the own log only (the journal's); a
                        // replica's record is saved whole, as it was journaled.
                        offset: i
                            .pos
                            .filter(|p| p.log() == LogRef::OWN)
                            .map(Position::offset),
                        // A record from the log (it has an offset) is saved absent,
                        // whether or not it is in memory now, to be read back when the
                        // session resumes: the journal's checkpoint and replay keep
                        // only its offset, and a snapshot says the same. A retained
                        // message (no offset) is always held in memory.
                        record: match i.pos {
                            Some(p) if p.log() == LogRef::OWN => Bytes::new(),
                            _ => i
                                .record
                                .in_memory()
                                .cloned()
                                .unwrap_or_else(|| i.record.load().unwrap_or_default()),
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
            s.set_behind(LogRef::OWN, saved.resume.min(head));
            s.journaled_resume = saved.resume.min(head);
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
                let pos = match i.offset.map(|o| Position::new(LogRef::OWN, o)) {
                    Some(None) => {
                        tracing::warn!(client_id = %s.client_id, offset = ?i.offset, "in-flight offset beyond what a position holds; dropped");
                        continue;
                    }
                    Some(pos) => pos,
                    None => None,
                };
                s.inflight.insert(
                    i.pkid,
                    Inflight {
                        record: i.record.into(),
                        pos,
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
    pub(super) fn sessions_hold_back(&self, log: LogRef, storage: &S) -> Option<Offset> {
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
    pub(super) fn write_checkpoint(&mut self) -> commitlog::Result<()> {
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
