//! Replay: the journal's ops, read back in order, rebuilt into a [`Snapshot`].
//!
//! Ops of a checkpoint are gathered apart and replace the state only at its `End`,
//! so a checkpoint torn by a crash leaves the previous state in force.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Buf, Bytes};
use commitlog::Offset;
use mesh::{LogId, NodeId};

use super::{JournalError, Op};
use crate::snapshot::{SavedInflight, SavedSession, Snapshot};
use crate::storage::Storage;
use crate::{Message, QoS, SubOptions, NEVER_EXPIRES};

/// A session as replay rebuilds it.
#[derive(Debug, Default, Clone)]
struct Rebuilt {
    client_id: String,
    filters: BTreeMap<String, SubOptions>,
    expiry: Option<u32>,
    resume: Offset,
    resume_in: BTreeMap<LogId, Offset>,
    pending: VecDeque<(Bytes, QoS)>,
    inflight: BTreeMap<u16, SavedInflight>,
    qos2: BTreeSet<u16>,
}

impl Rebuilt {
    /// Apply an op about this session.
    fn apply(&mut self, op: Op) {
        match op {
            Op::Subscribe {
                filter, options, ..
            } => {
                self.filters.insert(filter, options);
            }
            Op::Unsubscribe { filter, .. } => {
                self.filters.remove(&filter);
            }
            Op::Expiry { secs, .. } => self.expiry = Some(secs),
            Op::Pending { qos, record, .. } => self.pending.push_back((record, qos)),
            Op::Taken { .. } => {
                self.pending.pop_front();
            }
            Op::Sent {
                pkid, qos, offset, ..
            } => self.sent(pkid, qos, Some((offset, None)), Bytes::new()),
            Op::SentRecord {
                pkid, qos, record, ..
            } => self.sent(pkid, qos, None, record),
            Op::SentIn {
                pkid,
                qos,
                log,
                offset,
                ..
            } => self.sent(pkid, qos, Some((offset, Some(log))), Bytes::new()),
            Op::ResumeIn { log, offset, .. } => self.resume_in(log, offset),
            Op::Released { pkid, .. } => {
                if let Some(i) = self.inflight.get_mut(&pkid) {
                    i.released = true;
                }
            }
            Op::Acked { pkid, .. } => {
                self.inflight.remove(&pkid);
            }
            Op::Resume { offset, .. } => self.resume = self.resume.max(offset),
            Op::Qos2In { pkid, .. } => {
                self.qos2.insert(pkid);
            }
            Op::Qos2Done { pkid, .. } => {
                self.qos2.remove(&pkid);
            }
            // Not about one session's state: `State::apply` takes these.
            Op::Head(_)
            | Op::Open { .. }
            | Op::Remove { .. }
            | Op::Retain { .. }
            | Op::Unretain { .. }
            | Op::Handoff { .. }
            | Op::Will { .. }
            | Op::WillGone { .. }
            | Op::Begin
            | Op::End => {}
        }
    }

    /// A delivery now in flight: a message at `at` (an offset of the journal's log,
    /// or of the log it names), or a retained `record`.
    fn sent(&mut self, pkid: u16, qos: QoS, at: Option<(Offset, Option<LogId>)>, record: Bytes) {
        // Deliveries leave in each log's order: everything below was handled.
        match at {
            Some((offset, None)) => self.resume = self.resume.max(offset.add(1)),
            Some((offset, Some(log))) => self.resume_in(log, offset.add(1)),
            None => {}
        }
        self.inflight.insert(
            pkid,
            SavedInflight {
                pkid,
                qos,
                released: false,
                offset: at.map(|(offset, _)| offset),
                log: at.and_then(|(_, log)| log),
                record,
            },
        );
    }

    /// The lowest offset of `log` it still needs: its place there (a log it names
    /// no place in is read from its start, as `restore_from` does) or a delivery in
    /// flight from it. `own` is the log of the run whose journal holds it.
    fn needs(&self, own: LogId, log: LogId) -> Offset {
        let place = if log == own {
            self.resume
        } else {
            self.resume_in.get(&log).copied().unwrap_or(Offset(0))
        };
        (self.inflight.values())
            .filter(|i| i.log.unwrap_or(own) == log)
            .filter_map(|i| i.offset)
            .fold(place, Offset::min)
    }

    /// Reading `log` resumes at `offset` at the earliest.
    fn resume_in(&mut self, log: LogId, offset: Offset) {
        let at = self.resume_in.entry(log).or_insert(offset);
        *at = (*at).max(offset);
    }

    fn into_saved(self, id: u32) -> SavedSession {
        SavedSession {
            id,
            client_id: self.client_id,
            filters: self.filters.into_iter().collect(),
            expiry_secs: self.expiry.unwrap_or(NEVER_EXPIRES),
            resume: self.resume,
            resume_in: self.resume_in.into_iter().collect(),
            retained: self.pending.into_iter().collect(),
            inflight: self.inflight.into_values().collect(),
            incoming_qos2: self.qos2.into_iter().collect(),
        }
    }
}

/// The whole persistent state as replay rebuilds it.
#[derive(Debug, Default)]
struct State {
    retained: BTreeMap<String, Bytes>,
    sessions: BTreeMap<u32, Rebuilt>,
    /// Client ids handed to another node (`Handoff`), with the session each had
    /// here (if any), until it opens here again: what that node carries on from.
    /// Not part of the state a checkpoint holds.
    handed: BTreeMap<String, Handed>,
    /// The wills armed on this node's connections, by client id: delay, record.
    wills: BTreeMap<String, (u32, Bytes)>,
}

/// A session handed to a node (`None`: there was none here), and the metadata
/// group's stamp of that change of owner.
type Handed = (NodeId, Option<(u32, Rebuilt)>, u64);

impl State {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Head(_) | Op::Begin | Op::End => {}
            Op::Open { sid, client_id } => {
                self.handed.remove(&client_id);
                self.open(sid, client_id);
            }
            Op::Handoff { client_id, to, at } => {
                let sid = (self.sessions.iter())
                    .find(|(_, s)| s.client_id == client_id)
                    .map(|(sid, _)| *sid);
                let session = sid.and_then(|sid| Some((sid, self.sessions.remove(&sid)?)));
                // Handed on again without coming back (the id moved twice while
                // this node applied the changes): what it handed first goes on.
                let earlier = || self.handed.get(&client_id).and_then(|(_, s, _)| s.clone());
                let session = session.or_else(earlier);
                self.handed.insert(client_id, (to, session, at));
            }
            Op::Remove { sid } => {
                self.sessions.remove(&sid);
            }
            Op::Retain { record } => self.retain(record),
            Op::Unretain { topic } => {
                self.retained.remove(&topic);
            }
            Op::Will {
                client_id,
                delay_secs,
                record,
            } => {
                self.wills.insert(client_id, (delay_secs, record));
            }
            Op::WillGone { client_id } => {
                self.wills.remove(&client_id);
            }
            // An op about a session replay does not know (it was removed, or opened
            // before the journal's first record) changes nothing.
            op => {
                if let Some(s) = op.sid().and_then(|sid| self.sessions.get_mut(&sid)) {
                    s.apply(op);
                }
            }
        }
    }

    /// A new session for `client_id`, replacing any it had.
    fn open(&mut self, sid: u32, client_id: String) {
        self.sessions.retain(|_, s| s.client_id != client_id);
        self.sessions.insert(
            sid,
            Rebuilt {
                client_id,
                ..Rebuilt::default()
            },
        );
    }

    /// Keep `record` as its topic's retained message (one that does not decode is
    /// skipped).
    fn retain(&mut self, record: Bytes) {
        if let Ok(m) = Message::decode(&record) {
            let topic = m.topic_str().to_owned();
            self.retained.insert(topic, record);
        }
    }

    fn into_snapshot(self) -> Snapshot {
        Snapshot {
            wills: (self.wills.into_iter())
                .map(|(id, (delay, record))| (id, delay, record))
                .collect(),
            retained: self.retained.into_values().collect(),
            sessions: self
                .sessions
                .into_iter()
                .map(|(id, s)| s.into_saved(id))
                .collect(),
        }
    }
}

/// Rebuilds the state from ops, honouring checkpoints.
#[derive(Debug, Default)]
pub struct Replay {
    current: State,
    /// A checkpoint being read: it replaces `current` at its `End`.
    checkpoint: Option<State>,
    head: Option<Offset>,
    /// A whole checkpoint was applied: the state holds every session of the run.
    checkpointed: bool,
}

impl Replay {
    /// Apply one op.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Begin => self.checkpoint = Some(State::default()),
            Op::End => {
                if let Some(mut c) = self.checkpoint.take() {
                    // Handed sessions are not in a checkpoint: they stay until
                    // their client id opens here again.
                    let mut handed = std::mem::take(&mut self.current.handed);
                    handed.retain(|id, _| !c.sessions.values().any(|s| s.client_id == *id));
                    c.handed = handed;
                    self.current = c;
                    self.checkpointed = true;
                }
            }
            Op::Head(h) => self.head = Some(h),
            op => self
                .checkpoint
                .as_mut()
                .unwrap_or(&mut self.current)
                .apply(op),
        }
    }

    /// The session of `client_id` as the ops so far leave it (a checkpoint being
    /// read does not count until its end).
    pub fn session(&self, client_id: &str) -> Option<SavedSession> {
        let (id, s) = (self.current.sessions.iter()).find(|(_, s)| s.client_id == client_id)?;
        Some(s.clone().into_saved(*id))
    }

    /// Whether `client_id` was handed to node `to`, and with what session (`None`
    /// inside: it had none here).
    pub fn handed(&self, client_id: &str, to: NodeId) -> Option<Option<SavedSession>> {
        self.handed_at(client_id, to).map(|(session, _)| session)
    }

    /// As [`handed`](Self::handed), with the stamp of that change of owner.
    pub fn handed_at(&self, client_id: &str, to: NodeId) -> Option<(Option<SavedSession>, u64)> {
        match self.current.handed.get(client_id)? {
            (node, session, at) if *node == to => Some((
                session.as_ref().map(|(id, s)| s.clone().into_saved(*id)),
                *at,
            )),
            _ => None,
        }
    }

    /// The wills armed on the connections of this journal's node, as the ops so
    /// far leave them: client id, will delay (seconds), the will in stored form.
    pub fn wills(&self) -> impl Iterator<Item = (&str, u32, &Bytes)> {
        (self.current.wills.iter()).map(|(id, (delay, record))| (id.as_str(), *delay, record))
    }

    /// The message-log head the last batch read so far was committed at.
    pub fn head(&self) -> Option<Offset> {
        self.head
    }

    /// Whether a whole checkpoint was applied (a new run's first holds every
    /// session it carried over from the run before).
    pub fn checkpointed(&self) -> bool {
        self.checkpointed
    }

    /// The client ids of the sessions the ops so far leave here.
    pub fn client_ids(&self) -> impl Iterator<Item = &str> {
        (self.current.sessions.values()).map(|s| s.client_id.as_str())
    }

    /// Lower each offset of `needs` to the lowest of its log a session here still
    /// needs, or one handed from here whose client id `live` does not name (where
    /// it went, its state is not known yet). `own`: the log of this journal's run.
    pub fn lower_needs(
        &self,
        own: LogId,
        live: &dyn Fn(&str) -> bool,
        needs: &mut BTreeMap<LogId, Offset>,
    ) {
        let handed = (self.current.handed.iter())
            .filter(|(id, _)| !live(id))
            .filter_map(|(_, (_, s, _))| s.as_ref().map(|(_, s)| s));
        for s in self.current.sessions.values().chain(handed) {
            for (log, need) in needs.iter_mut() {
                *need = (*need).min(s.needs(own, *log));
            }
        }
    }

    /// Forget that `client_id` was handed over: its new node has it.
    pub fn forget_handed(&mut self, client_id: &str) {
        self.current.handed.remove(client_id);
    }

    /// The state, and the message-log head the last batch was committed at.
    pub fn finish(self) -> (Snapshot, Option<Offset>) {
        (self.current.into_snapshot(), self.head)
    }
}

/// Read the whole journal in `log` and rebuild the state it describes.
pub fn replay<S: Storage>(log: &S) -> Result<(Snapshot, Option<Offset>), JournalError> {
    let mut replay = Replay::default();
    crate::storage::visit_records(log, Offset(0), |offset, mut record| {
        while record.has_remaining() {
            let op = Op::decode(&mut record)
                .map_err(|reason| JournalError::Malformed { offset, reason })?;
            replay.apply(op);
        }
        Ok::<(), JournalError>(())
    })?;
    Ok(replay.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_moves_the_resume_point_and_acks_clear_inflight() {
        let mut r = Replay::default();
        r.apply(Op::Open {
            sid: 4,
            client_id: "c".into(),
        });
        r.apply(Op::Sent {
            sid: 4,
            pkid: 1,
            qos: QoS::AtLeastOnce,
            offset: Offset(10),
        });
        r.apply(Op::Sent {
            sid: 4,
            pkid: 2,
            qos: QoS::ExactlyOnce,
            offset: Offset(12),
        });
        r.apply(Op::Acked { sid: 4, pkid: 1 });
        r.apply(Op::Released { sid: 4, pkid: 2 });
        r.apply(Op::Resume {
            sid: 4,
            offset: Offset(5),
        });
        let (snap, _) = r.finish();
        let s = &snap.sessions[0];
        assert_eq!((s.id, s.resume), (4, Offset(13)), "Resume never moves back");
        assert_eq!(s.inflight.len(), 1);
        assert!(s.inflight[0].released);
    }

    #[test]
    fn a_checkpoint_counts_only_once_complete() {
        let open = |sid, id: &str| Op::Open {
            sid,
            client_id: id.into(),
        };
        let mut r = Replay::default();
        r.apply(open(1, "old"));
        r.apply(Op::Begin);
        r.apply(open(2, "new"));
        // Torn here: the old state stands.
        let (snap, _) = r.finish();
        assert_eq!(snap.sessions[0].client_id, "old");

        let mut r = Replay::default();
        r.apply(open(1, "old"));
        r.apply(Op::Begin);
        r.apply(open(2, "new"));
        r.apply(Op::End);
        r.apply(Op::Head(Offset(3)));
        let (snap, head) = r.finish();
        assert_eq!(snap.sessions.len(), 1);
        assert_eq!(snap.sessions[0].client_id, "new");
        assert_eq!(head, Some(Offset(3)));
    }

    #[test]
    fn reopening_a_client_id_replaces_its_session() {
        let mut r = Replay::default();
        for sid in [1, 2] {
            r.apply(Op::Open {
                sid,
                client_id: "same".into(),
            });
        }
        assert_eq!(r.finish().0.sessions.len(), 1);
    }
}
