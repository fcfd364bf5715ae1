//! The session journal: how persistent state survives a crash.
//!
//! The message log holds every message; what says *who still needs which of them*
//! lives here: the persistent sessions, their subscriptions, how far each has read,
//! what is in flight to it, the QoS 2 packet ids it sent us and has not released, and
//! the retained messages. Every change to that state is an [`Op`]. The router collects
//! the ops of one flush and appends them to a second commitlog *before* that flush's
//! replies leave, so no PUBACK, SUBACK, PUBREL, PUBCOMP or delivery reaches a client
//! before the state it implies is written (and, under `fsync = "always"`, synced).
//! Clean sessions end with their connection, so nothing of theirs is journaled.
//!
//! Every op is applied on its own: a batch torn by a crash leaves a prefix of its ops,
//! and a prefix is a state the router really passed through (in particular, a
//! delivery's `Sent` op also moves the session's read position past it, so a torn
//! batch can never make recovery offer a message twice under new packet ids).
//!
//! **Compaction.** When the ops written since the last checkpoint outgrow twice the
//! checkpoint itself (and at least `journal_checkpoint_bytes`), the router writes a
//! new checkpoint — `Begin`, the whole state as ops, `End` — and removes the journal
//! segments wholly before it. Replay applies a checkpoint only once its `End` is read,
//! so a crash in the middle of writing one leaves the previous state in force.
//!
//! | module | owns |
//! |---|---|
//! | this one | [`Journal`], the writer: batches of ops, commit, checkpoints |
//! | `op` | [`Op`] and its encoding (the byte table) |
//! | `replay` | [`replay`]: the ops read back into a [`Snapshot`] |

mod op;
mod replay;

use bytes::{BufMut, BytesMut};
use commitlog::record::{Framed, HEADER_BYTES};
use commitlog::Offset;

pub use op::Op;
pub use replay::replay;
pub(crate) use replay::Replay;

use crate::length_prefix::FieldTooLong;
use crate::snapshot::{SavedInflight, SavedSession, Snapshot};
use crate::storage::Storage;
use crate::NEVER_EXPIRES;

/// A journal this code cannot read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading the journal's log failed.
    #[error(transparent)]
    Storage(#[from] commitlog::Error),
    /// A record passed its checksum but does not hold ops this code wrote.
    #[error("session journal record at offset {offset} is malformed: {reason}")]
    Malformed {
        /// The record.
        offset: Offset,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Ops are gathered into records of about this size (a batch may span several), and
/// never larger than the journal's log takes.
const RECORD_TARGET: usize = 1 << 20;

/// The writing side: ops of the current batch, appended by [`Journal::commit`].
#[derive(Debug)]
pub struct Journal<S> {
    log: Option<S>,
    /// The open record: frame header space, then ops.
    buf: BytesMut,
    /// Full records of this batch.
    sealed: Vec<Framed>,
    /// Bytes appended since the last checkpoint began.
    since_checkpoint: u64,
    /// Size of the last checkpoint.
    checkpoint_bytes: u64,
    /// The message-log head last written in a `Head` op.
    last_head: Option<Offset>,
    /// A write failed: the journal no longer matches memory until a checkpoint.
    pub needs_checkpoint: bool,
    /// A change that ops cannot express was made: checkpoint at the next commit.
    checkpoint_wanted: bool,
    /// The largest record payload the log takes: a record is sealed before an op
    /// would take it past this.
    record_max: usize,
}

impl<S: Storage> Journal<S> {
    /// No journal: state lives in memory only.
    pub fn none() -> Self {
        Journal {
            log: None,
            buf: BytesMut::new(),
            sealed: Vec::new(),
            since_checkpoint: 0,
            checkpoint_bytes: 0,
            last_head: None,
            needs_checkpoint: false,
            checkpoint_wanted: false,
            record_max: RECORD_TARGET,
        }
    }

    /// Write to `log`.
    pub fn new(log: S) -> Self {
        let record_max = usize::try_from(log.record_bytes_max()).unwrap_or(usize::MAX);
        Journal {
            log: Some(log),
            record_max,
            ..Journal::none()
        }
    }

    /// Whether ops are kept at all.
    pub fn enabled(&self) -> bool {
        self.log.is_some()
    }

    /// The journal's log, to sync it.
    pub fn log_mut(&mut self) -> Option<&mut S> {
        self.log.as_mut()
    }

    /// The log, if there is one.
    pub fn log(&self) -> Option<&S> {
        self.log.as_ref()
    }

    /// Take the log back (shutdown).
    pub fn into_log(self) -> Option<S> {
        self.log
    }

    /// Add an op to the current batch.
    ///
    /// An op that starts a record past the log's record limit goes into the next
    /// record. An op with a field too long for its length prefix, or too large for a
    /// record of its own, is not written: the router hands over only client ids,
    /// filters and topics read as MQTT strings and records below the message log's
    /// limit (the journal's is larger), so that is a bug, loud in debug builds and an
    /// error in the log in release builds.
    pub fn push(&mut self, op: &Op) {
        if self.log.is_none() {
            return;
        }
        let start = self.buf.len();
        if self.buf.is_empty() {
            self.buf.put_bytes(0, HEADER_BYTES);
        }
        if let Err(e) = op.encode(&mut self.buf) {
            self.buf.truncate(start);
            refused(op, &e);
            return;
        }
        if self.buf.len() - HEADER_BYTES > self.record_max && start > HEADER_BYTES {
            // The ops before this one fill a record; it begins the next.
            let op_bytes = self.buf.split_off(start);
            self.seal();
            self.buf.put_bytes(0, HEADER_BYTES);
            self.buf.extend_from_slice(&op_bytes);
        }
        let len = self.buf.len() - HEADER_BYTES;
        if len > self.record_max {
            self.buf.clear();
            too_large(op, len, self.record_max);
            return;
        }
        if len >= RECORD_TARGET.min(self.record_max) {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if self.buf.len() > HEADER_BYTES {
            let buf = std::mem::take(&mut self.buf);
            let len = buf.len() - HEADER_BYTES;
            match Framed::seal(buf) {
                Some(f) => self.sealed.push(f),
                None => {
                    // Unreachable: a record is sealed once it passes RECORD_TARGET,
                    // and no op's record comes near u32::MAX bytes.
                    let e = FieldTooLong::u32("journal record", len);
                    debug_assert!(false, "{e}");
                    tracing::error!(error = %e, "session journal record not written; a checkpoint is due");
                    self.needs_checkpoint = true;
                }
            }
        }
        self.buf.clear();
    }

    /// Ops are waiting for [`Journal::commit`].
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty() || !self.sealed.is_empty()
    }

    /// The message-log head moved since the journal last said where it was.
    pub fn head_is_stale(&self, head: Offset) -> bool {
        self.enabled() && self.last_head != Some(head)
    }

    /// Append the batch, if there is one (ending with a `Head` op for `head`). On
    /// failure the batch is dropped and a checkpoint is due.
    pub fn commit(&mut self, head: Offset) -> commitlog::Result<()> {
        if !self.has_pending() {
            return Ok(());
        }
        self.push(&Op::Head(head));
        self.seal();
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let bytes: usize = self.sealed.iter().map(|f| f.frame().len()).sum();
        let result = log.append(&self.sealed);
        self.sealed.clear();
        match result {
            Ok(_) => {
                self.since_checkpoint += bytes as u64;
                self.last_head = Some(head);
                Ok(())
            }
            Err(e) => {
                self.needs_checkpoint = true;
                Err(e)
            }
        }
    }

    /// Time for a checkpoint: the ops since the last one outgrew it, or one is
    /// wanted.
    pub fn checkpoint_due(&self, min_bytes: u64) -> bool {
        self.needs_checkpoint
            || (self.enabled()
                && (self.checkpoint_wanted
                    || self.since_checkpoint > min_bytes.max(2 * self.checkpoint_bytes)))
    }

    /// Checkpoint at the next commit: memory changed in a way no op expresses.
    pub fn want_checkpoint(&mut self) {
        self.checkpoint_wanted = true;
    }

    /// Write `state` as a checkpoint and remove what it supersedes.
    /// Records from `hold` on stay (a follower still needs them).
    pub fn checkpoint(
        &mut self,
        state: &Snapshot,
        head: Offset,
        hold: Option<Offset>,
    ) -> commitlog::Result<()> {
        let Some(begin) = self.log.as_ref().map(Storage::head) else {
            return Ok(());
        };
        // Ops of the current batch go first: the checkpoint supersedes them anyway.
        self.push(&Op::Begin);
        for record in &state.retained {
            self.push(&Op::Retain {
                record: record.clone(),
            });
        }
        for s in &state.sessions {
            self.push_session(s);
        }
        for (client_id, delay_secs, record) in &state.wills {
            self.push(&Op::Will {
                client_id: client_id.clone(),
                delay_secs: *delay_secs,
                record: record.clone(),
            });
        }
        self.push(&Op::End);
        let before = self.since_checkpoint;
        self.commit(head)?;
        self.checkpoint_bytes = self.since_checkpoint - before;
        self.since_checkpoint = 0;
        self.needs_checkpoint = false;
        self.checkpoint_wanted = false;
        if let Some(log) = self.log.as_mut() {
            log.remove_before(hold.map_or(begin, |h| h.min(begin)))?;
        }
        Ok(())
    }

    /// The ops that rebuild session `s` (its `Open` first).
    pub(crate) fn push_session(&mut self, s: &SavedSession) {
        let sid = s.id;
        self.push(&Op::Open {
            sid,
            client_id: s.client_id.clone(),
        });
        if s.expiry_secs != NEVER_EXPIRES {
            self.push(&Op::Expiry {
                sid,
                secs: s.expiry_secs,
            });
        }
        for (filter, options) in &s.filters {
            self.push(&Op::Subscribe {
                sid,
                filter: filter.clone(),
                options: *options,
            });
        }
        self.push(&Op::Resume {
            sid,
            offset: s.resume,
        });
        for (log, offset) in &s.resume_in {
            self.push(&Op::ResumeIn {
                sid,
                log: *log,
                offset: *offset,
            });
        }
        for (record, qos) in &s.retained {
            self.push(&Op::Pending {
                sid,
                qos: *qos,
                record: record.clone(),
            });
        }
        for i in &s.inflight {
            self.push(&sent(sid, i));
            if i.released {
                self.push(&Op::Released { sid, pkid: i.pkid });
            }
        }
        for pkid in &s.incoming_qos2 {
            self.push(&Op::Qos2In { sid, pkid: *pkid });
        }
    }
}

/// The op that puts in-flight delivery `i` of session `sid` back.
fn sent(sid: u32, i: &SavedInflight) -> Op {
    match (i.offset, i.log) {
        (Some(offset), Some(log)) => Op::SentIn {
            sid,
            pkid: i.pkid,
            qos: i.qos,
            log,
            offset,
        },
        (Some(offset), None) => Op::Sent {
            sid,
            pkid: i.pkid,
            qos: i.qos,
            offset,
        },
        (None, _) => Op::SentRecord {
            sid,
            pkid: i.pkid,
            qos: i.qos,
            record: i.record.clone(),
        },
    }
}

/// An op that cannot be written (see [`Journal::push`]).
fn refused(op: &Op, e: &FieldTooLong) {
    debug_assert!(false, "session journal op not written: {e}");
    tracing::error!(error = %e, sid = ?op.sid(), "session journal op not written (a field does not fit its length prefix)");
}

/// An op larger than a whole record (see [`Journal::push`]).
fn too_large(op: &Op, len: usize, max: usize) {
    debug_assert!(
        false,
        "session journal op not written: {len} bytes, records take {max}"
    );
    tracing::error!(len, max, sid = ?op.sid(), "session journal op not written (larger than the journal's record limit)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use commitlog::{Log, LogConfig};

    fn journal(dir: &tempfile::TempDir) -> Journal<Log> {
        Journal::new(Log::open(dir.path().join("journal"), LogConfig::default()).unwrap())
    }

    /// Debug builds stop at the broken invariant; release builds go on without the
    /// op, and the journal holds only what fits.
    #[test]
    #[cfg_attr(
        debug_assertions,
        should_panic(expected = "session journal op not written")
    )]
    fn an_op_with_an_oversized_client_id_is_refused_not_written_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(&dir);
        j.push(&Op::Open {
            sid: 1,
            client_id: "x".repeat(usize::from(u16::MAX) + 1),
        });
        assert!(!j.has_pending(), "nothing of the refused op is kept");
        j.push(&Op::Open {
            sid: 2,
            client_id: "fits".into(),
        });
        j.commit(Offset(0)).unwrap();
        let (snapshot, _) = replay(j.log_mut().unwrap()).unwrap();
        let ids: Vec<_> = snapshot.sessions.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2]);
    }

    /// A batch larger than the log's record limit is split into records the log
    /// takes, and replay reads every op of it.
    #[test]
    fn a_batch_over_the_record_limit_is_split_into_records_that_fit() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            record_bytes_max: 256,
            ..LogConfig::default()
        };
        let mut j = Journal::new(Log::open(dir.path().join("journal"), config).unwrap());
        for sid in 0..40 {
            j.push(&Op::Open {
                sid,
                client_id: format!("client-{sid}"),
            });
        }
        j.commit(Offset(0)).unwrap();
        let log = j.log_mut().unwrap();
        assert!(log.head().0 > 1, "one record of {} ops", 40);
        let (snapshot, _) = replay(log).unwrap();
        let ids: Vec<_> = snapshot.sessions.iter().map(|s| s.id).collect();
        assert_eq!(ids, (0..40).collect::<Vec<_>>());
    }
}
