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
//! **Encoding.** A journal record is a sequence of ops; each op is a tag byte and its
//! fields, big-endian, strings and records prefixed by their length:
//!
//! ```text
//! tag op           fields
//!  1  Head         u64 message-log head when the batch was committed
//!  2  Open         u32 session, u16 len + client id
//!  3  Remove       u32 session
//!  4  Subscribe    u32 session, u8 options, [u32 id], u16 len + filter
//!                  (options as in MQTT 5: bits 0-1 QoS, 2 no local, 3 retain as
//!                  published; bit 7: a subscription identifier follows)
//!  5  Unsubscribe  u32 session, u16 len + filter
//!  6  Pending      u32 session, u8 QoS, u32 len + record   (retained message to send)
//!  7  Taken        u32 session                             (the first pending one left)
//!  8  Sent         u32 session, u16 packet id, u8 QoS, u64 offset
//!  9  SentRecord   u32 session, u16 packet id, u8 QoS, u32 len + record (a retained one)
//! 10  Released     u32 session, u16 packet id              (PUBREC received)
//! 11  Acked        u32 session, u16 packet id              (PUBACK / PUBCOMP received)
//! 12  Resume       u32 session, u64 offset                 (everything below was handled)
//! 13  Qos2In       u32 session, u16 packet id              (inbound QoS 2 stored)
//! 14  Qos2Done     u32 session, u16 packet id              (PUBREL received)
//! 15  Retain       u32 len + record
//! 16  Unretain     u16 len + topic
//! 17  Begin        (checkpoint starts)
//! 18  End          (checkpoint complete)
//! 19  Expiry       u32 session, u32 seconds                (session expiry interval;
//!                  without one a session never expires)
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use commitlog::record::{Framed, HEADER_BYTES};
use commitlog::Offset;

use crate::snapshot::{SavedInflight, SavedSession, Snapshot};
use crate::storage::Storage;
use crate::{Message, QoS, SubOptions, NEVER_EXPIRES};

/// One change to persistent state (see the module docs for the encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The message log's head when this batch was committed.
    Head(Offset),
    /// A persistent session was created.
    Open {
        /// Session.
        sid: u32,
        /// Its client id.
        client_id: String,
    },
    /// A persistent session ended.
    Remove {
        /// Session.
        sid: u32,
    },
    /// A filter was added or its options replaced.
    Subscribe {
        /// Session.
        sid: u32,
        /// Filter.
        filter: String,
        /// Its options.
        options: SubOptions,
    },
    /// The session's expiry interval was set (on connect, or by DISCONNECT).
    Expiry {
        /// Session.
        sid: u32,
        /// Seconds.
        secs: u32,
    },
    /// A filter was removed.
    Unsubscribe {
        /// Session.
        sid: u32,
        /// Filter.
        filter: String,
    },
    /// A retained message matched a new subscription and waits to be sent.
    Pending {
        /// Session.
        sid: u32,
        /// Effective QoS.
        qos: QoS,
        /// The stored record.
        record: Bytes,
    },
    /// The oldest pending retained message was sent.
    Taken {
        /// Session.
        sid: u32,
    },
    /// A message from the log was sent at QoS 1 or 2 and awaits its ack.
    Sent {
        /// Session.
        sid: u32,
        /// Packet id.
        pkid: u16,
        /// Effective QoS.
        qos: QoS,
        /// Log offset.
        offset: Offset,
    },
    /// A retained message was sent at QoS 1 or 2 and awaits its ack.
    SentRecord {
        /// Session.
        sid: u32,
        /// Packet id.
        pkid: u16,
        /// Effective QoS.
        qos: QoS,
        /// The stored record.
        record: Bytes,
    },
    /// PUBREC received for an outbound QoS 2 message.
    Released {
        /// Session.
        sid: u32,
        /// Packet id.
        pkid: u16,
    },
    /// PUBACK or PUBCOMP received.
    Acked {
        /// Session.
        sid: u32,
        /// Packet id.
        pkid: u16,
    },
    /// Every matching message below `offset` was sent (or was QoS 0 to an offline
    /// session).
    Resume {
        /// Session.
        sid: u32,
        /// Where reading resumes.
        offset: Offset,
    },
    /// An inbound QoS 2 message was stored; its id awaits PUBREL.
    Qos2In {
        /// Session.
        sid: u32,
        /// Packet id.
        pkid: u16,
    },
    /// PUBREL received.
    Qos2Done {
        /// Session.
        sid: u32,
        /// Packet id.
        pkid: u16,
    },
    /// A retained message was set (its topic is in the record).
    Retain {
        /// The stored record.
        record: Bytes,
    },
    /// The retained message of a topic was cleared.
    Unretain {
        /// Topic name.
        topic: String,
    },
    /// A checkpoint starts: the ops up to `End` are the whole state.
    Begin,
    /// The checkpoint is complete.
    End,
}

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

mod tag {
    pub const HEAD: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const REMOVE: u8 = 3;
    pub const SUBSCRIBE: u8 = 4;
    pub const UNSUBSCRIBE: u8 = 5;
    pub const PENDING: u8 = 6;
    pub const TAKEN: u8 = 7;
    pub const SENT: u8 = 8;
    pub const SENT_RECORD: u8 = 9;
    pub const RELEASED: u8 = 10;
    pub const ACKED: u8 = 11;
    pub const RESUME: u8 = 12;
    pub const QOS2_IN: u8 = 13;
    pub const QOS2_DONE: u8 = 14;
    pub const RETAIN: u8 = 15;
    pub const UNRETAIN: u8 = 16;
    pub const BEGIN: u8 = 17;
    pub const END: u8 = 18;
    pub const EXPIRY: u8 = 19;
}

impl Op {
    /// Append the encoded op to `b`.
    pub fn encode(&self, b: &mut BytesMut) {
        match self {
            Op::Head(o) => {
                b.put_u8(tag::HEAD);
                b.put_u64(o.0);
            }
            Op::Open { sid, client_id } => {
                put_head(b, tag::OPEN, *sid);
                put_str(b, client_id);
            }
            Op::Remove { sid } => put_head(b, tag::REMOVE, *sid),
            Op::Subscribe {
                sid,
                filter,
                options,
            } => {
                put_head(b, tag::SUBSCRIBE, *sid);
                b.put_u8(
                    options.qos as u8
                        | u8::from(options.no_local) << 2
                        | u8::from(options.retain_as_published) << 3
                        | u8::from(options.id.is_some()) << 7,
                );
                if let Some(id) = options.id {
                    b.put_u32(id);
                }
                put_str(b, filter);
            }
            Op::Expiry { sid, secs } => {
                put_head(b, tag::EXPIRY, *sid);
                b.put_u32(*secs);
            }
            Op::Unsubscribe { sid, filter } => {
                put_head(b, tag::UNSUBSCRIBE, *sid);
                put_str(b, filter);
            }
            Op::Pending { sid, qos, record } => {
                put_head(b, tag::PENDING, *sid);
                b.put_u8(*qos as u8);
                put_bytes(b, record);
            }
            Op::Taken { sid } => put_head(b, tag::TAKEN, *sid),
            Op::Sent {
                sid,
                pkid,
                qos,
                offset,
            } => {
                put_head(b, tag::SENT, *sid);
                b.put_u16(*pkid);
                b.put_u8(*qos as u8);
                b.put_u64(offset.0);
            }
            Op::SentRecord {
                sid,
                pkid,
                qos,
                record,
            } => {
                put_head(b, tag::SENT_RECORD, *sid);
                b.put_u16(*pkid);
                b.put_u8(*qos as u8);
                put_bytes(b, record);
            }
            Op::Released { sid, pkid } => {
                put_head(b, tag::RELEASED, *sid);
                b.put_u16(*pkid);
            }
            Op::Acked { sid, pkid } => {
                put_head(b, tag::ACKED, *sid);
                b.put_u16(*pkid);
            }
            Op::Resume { sid, offset } => {
                put_head(b, tag::RESUME, *sid);
                b.put_u64(offset.0);
            }
            Op::Qos2In { sid, pkid } => {
                put_head(b, tag::QOS2_IN, *sid);
                b.put_u16(*pkid);
            }
            Op::Qos2Done { sid, pkid } => {
                put_head(b, tag::QOS2_DONE, *sid);
                b.put_u16(*pkid);
            }
            Op::Retain { record } => {
                b.put_u8(tag::RETAIN);
                put_bytes(b, record);
            }
            Op::Unretain { topic } => {
                b.put_u8(tag::UNRETAIN);
                put_str(b, topic);
            }
            Op::Begin => b.put_u8(tag::BEGIN),
            Op::End => b.put_u8(tag::END),
        }
    }

    /// Decode one op from the front of `b`.
    pub fn decode(b: &mut Bytes) -> Result<Op, &'static str> {
        let t = get_u8(b)?;
        let op = match t {
            tag::HEAD => Op::Head(Offset(get_u64(b)?)),
            tag::BEGIN => Op::Begin,
            tag::END => Op::End,
            tag::RETAIN => Op::Retain {
                record: get_bytes(b)?,
            },
            tag::UNRETAIN => Op::Unretain { topic: get_str(b)? },
            _ => {
                let sid = get_u32(b)?;
                match t {
                    tag::OPEN => Op::Open {
                        sid,
                        client_id: get_str(b)?,
                    },
                    tag::REMOVE => Op::Remove { sid },
                    tag::SUBSCRIBE => {
                        let bits = get_u8(b)?;
                        let options = SubOptions {
                            qos: QoS::from_u8(bits & 0b11).ok_or("bad QoS")?,
                            no_local: bits & 0b100 != 0,
                            retain_as_published: bits & 0b1000 != 0,
                            id: if bits & 0x80 != 0 {
                                Some(get_u32(b)?)
                            } else {
                                None
                            },
                        };
                        Op::Subscribe {
                            sid,
                            options,
                            filter: get_str(b)?,
                        }
                    }
                    tag::EXPIRY => Op::Expiry {
                        sid,
                        secs: get_u32(b)?,
                    },
                    tag::UNSUBSCRIBE => Op::Unsubscribe {
                        sid,
                        filter: get_str(b)?,
                    },
                    tag::PENDING => {
                        let qos = get_qos(b)?;
                        Op::Pending {
                            sid,
                            qos,
                            record: get_bytes(b)?,
                        }
                    }
                    tag::TAKEN => Op::Taken { sid },
                    tag::SENT => Op::Sent {
                        sid,
                        pkid: get_u16(b)?,
                        qos: get_qos(b)?,
                        offset: Offset(get_u64(b)?),
                    },
                    tag::SENT_RECORD => Op::SentRecord {
                        sid,
                        pkid: get_u16(b)?,
                        qos: get_qos(b)?,
                        record: get_bytes(b)?,
                    },
                    tag::RELEASED => Op::Released {
                        sid,
                        pkid: get_u16(b)?,
                    },
                    tag::ACKED => Op::Acked {
                        sid,
                        pkid: get_u16(b)?,
                    },
                    tag::RESUME => Op::Resume {
                        sid,
                        offset: Offset(get_u64(b)?),
                    },
                    tag::QOS2_IN => Op::Qos2In {
                        sid,
                        pkid: get_u16(b)?,
                    },
                    tag::QOS2_DONE => Op::Qos2Done {
                        sid,
                        pkid: get_u16(b)?,
                    },
                    _ => return Err("unknown op"),
                }
            }
        };
        Ok(op)
    }
}

fn put_head(b: &mut BytesMut, tag: u8, sid: u32) {
    b.put_u8(tag);
    b.put_u32(sid);
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Client ids, filters and topics come off the wire as MQTT strings (≤ 65535 bytes).
    b.put_u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
    b.put_slice(s.as_bytes());
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    // Records are bounded by the message log's record_bytes_max (far below 4 GiB).
    b.put_u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
    b.put_slice(v);
}

fn need(b: &Bytes, n: usize) -> Result<(), &'static str> {
    if b.remaining() < n {
        return Err("truncated op");
    }
    Ok(())
}

fn get_u8(b: &mut Bytes) -> Result<u8, &'static str> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Result<u16, &'static str> {
    need(b, 2)?;
    Ok(b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Result<u32, &'static str> {
    need(b, 4)?;
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Result<u64, &'static str> {
    need(b, 8)?;
    Ok(b.get_u64())
}

fn get_qos(b: &mut Bytes) -> Result<QoS, &'static str> {
    QoS::from_u8(get_u8(b)?).ok_or("bad QoS")
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, &'static str> {
    let n = get_u32(b)? as usize;
    need(b, n)?;
    Ok(b.split_to(n))
}

fn get_str(b: &mut Bytes) -> Result<String, &'static str> {
    let n = usize::from(get_u16(b)?);
    need(b, n)?;
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| "string not UTF-8")
}

/// Ops are gathered into records of about this size (a batch may span several).
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
        }
    }

    /// Write to `log`.
    pub fn new(log: S) -> Self {
        Journal {
            log: Some(log),
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

    /// Take the log back (shutdown).
    pub fn into_log(self) -> Option<S> {
        self.log
    }

    /// Add an op to the current batch.
    pub fn push(&mut self, op: &Op) {
        if self.log.is_none() {
            return;
        }
        if self.buf.is_empty() {
            self.buf.put_bytes(0, HEADER_BYTES);
        }
        op.encode(&mut self.buf);
        if self.buf.len() >= RECORD_TARGET {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if self.buf.len() > HEADER_BYTES {
            let buf = std::mem::take(&mut self.buf);
            if let Some(f) = Framed::seal(buf) {
                self.sealed.push(f);
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

    /// Time for a checkpoint: the ops since the last one outgrew it.
    pub fn checkpoint_due(&self, min_bytes: u64) -> bool {
        self.needs_checkpoint
            || (self.enabled() && self.since_checkpoint > min_bytes.max(2 * self.checkpoint_bytes))
    }

    /// Write `state` as a checkpoint and remove what it supersedes.
    pub fn checkpoint(&mut self, state: &Snapshot, head: Offset) -> commitlog::Result<()> {
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
            for (record, qos) in &s.retained {
                self.push(&Op::Pending {
                    sid,
                    qos: *qos,
                    record: record.clone(),
                });
            }
            for i in &s.inflight {
                self.push(&match i.offset {
                    Some(offset) => Op::Sent {
                        sid,
                        pkid: i.pkid,
                        qos: i.qos,
                        offset,
                    },
                    None => Op::SentRecord {
                        sid,
                        pkid: i.pkid,
                        qos: i.qos,
                        record: i.record.clone(),
                    },
                });
                if i.released {
                    self.push(&Op::Released { sid, pkid: i.pkid });
                }
            }
            for pkid in &s.incoming_qos2 {
                self.push(&Op::Qos2In { sid, pkid: *pkid });
            }
        }
        self.push(&Op::End);
        let before = self.since_checkpoint;
        self.commit(head)?;
        self.checkpoint_bytes = self.since_checkpoint - before;
        self.since_checkpoint = 0;
        self.needs_checkpoint = false;
        if let Some(log) = self.log.as_mut() {
            log.remove_before(begin)?;
        }
        Ok(())
    }
}

/// A session as replay rebuilds it.
#[derive(Debug, Default)]
struct Rebuilt {
    client_id: String,
    filters: BTreeMap<String, SubOptions>,
    expiry: Option<u32>,
    resume: Offset,
    pending: VecDeque<(Bytes, QoS)>,
    inflight: BTreeMap<u16, SavedInflight>,
    qos2: BTreeSet<u16>,
}

#[derive(Debug, Default)]
struct State {
    retained: BTreeMap<String, Bytes>,
    sessions: BTreeMap<u32, Rebuilt>,
}

impl State {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Head(_) | Op::Begin | Op::End => {}
            Op::Open { sid, client_id } => {
                self.sessions.retain(|_, s| s.client_id != client_id);
                self.sessions.insert(
                    sid,
                    Rebuilt {
                        client_id,
                        ..Rebuilt::default()
                    },
                );
            }
            Op::Remove { sid } => {
                self.sessions.remove(&sid);
            }
            Op::Subscribe {
                sid,
                filter,
                options,
            } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.filters.insert(filter, options);
                }
            }
            Op::Expiry { sid, secs } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.expiry = Some(secs);
                }
            }
            Op::Unsubscribe { sid, filter } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.filters.remove(&filter);
                }
            }
            Op::Pending { sid, qos, record } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.pending.push_back((record, qos));
                }
            }
            Op::Taken { sid } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.pending.pop_front();
                }
            }
            Op::Sent {
                sid,
                pkid,
                qos,
                offset,
            } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    // Deliveries leave in log order: everything below was handled.
                    s.resume = s.resume.max(offset.add(1));
                    s.inflight.insert(
                        pkid,
                        SavedInflight {
                            pkid,
                            qos,
                            released: false,
                            offset: Some(offset),
                            record: Bytes::new(),
                        },
                    );
                }
            }
            Op::SentRecord {
                sid,
                pkid,
                qos,
                record,
            } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.inflight.insert(
                        pkid,
                        SavedInflight {
                            pkid,
                            qos,
                            released: false,
                            offset: None,
                            record,
                        },
                    );
                }
            }
            Op::Released { sid, pkid } => {
                if let Some(i) = self
                    .sessions
                    .get_mut(&sid)
                    .and_then(|s| s.inflight.get_mut(&pkid))
                {
                    i.released = true;
                }
            }
            Op::Acked { sid, pkid } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.inflight.remove(&pkid);
                }
            }
            Op::Resume { sid, offset } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.resume = s.resume.max(offset);
                }
            }
            Op::Qos2In { sid, pkid } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.qos2.insert(pkid);
                }
            }
            Op::Qos2Done { sid, pkid } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.qos2.remove(&pkid);
                }
            }
            Op::Retain { record } => {
                if let Ok(m) = Message::decode(&record) {
                    let topic = m.topic_str().to_owned();
                    self.retained.insert(topic, record);
                }
            }
            Op::Unretain { topic } => {
                self.retained.remove(&topic);
            }
        }
    }

    fn into_snapshot(self) -> Snapshot {
        Snapshot {
            retained: self.retained.into_values().collect(),
            sessions: self
                .sessions
                .into_iter()
                .map(|(id, s)| SavedSession {
                    id,
                    client_id: s.client_id,
                    filters: s.filters.into_iter().collect(),
                    expiry_secs: s.expiry.unwrap_or(NEVER_EXPIRES),
                    resume: s.resume,
                    retained: s.pending.into_iter().collect(),
                    inflight: s.inflight.into_values().collect(),
                    incoming_qos2: s.qos2.into_iter().collect(),
                })
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
}

impl Replay {
    /// Apply one op.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Begin => self.checkpoint = Some(State::default()),
            Op::End => {
                if let Some(c) = self.checkpoint.take() {
                    self.current = c;
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
    use proptest::prelude::*;

    fn all_ops() -> Vec<Op> {
        vec![
            Op::Head(Offset(9)),
            Op::Open {
                sid: 1,
                client_id: "dev".into(),
            },
            Op::Subscribe {
                sid: 1,
                filter: "a/#".into(),
                options: SubOptions::qos(QoS::ExactlyOnce),
            },
            Op::Subscribe {
                sid: 1,
                filter: "c/+".into(),
                options: SubOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    id: Some(268_435_455),
                },
            },
            Op::Expiry { sid: 1, secs: 3600 },
            Op::Unsubscribe {
                sid: 1,
                filter: "b".into(),
            },
            Op::Pending {
                sid: 1,
                qos: QoS::AtLeastOnce,
                record: Bytes::from_static(b"rec"),
            },
            Op::Taken { sid: 1 },
            Op::Sent {
                sid: 1,
                pkid: 7,
                qos: QoS::AtLeastOnce,
                offset: Offset(40),
            },
            Op::SentRecord {
                sid: 1,
                pkid: 8,
                qos: QoS::ExactlyOnce,
                record: Bytes::from_static(b"r"),
            },
            Op::Released { sid: 1, pkid: 8 },
            Op::Acked { sid: 1, pkid: 7 },
            Op::Resume {
                sid: 1,
                offset: Offset(41),
            },
            Op::Qos2In { sid: 1, pkid: 3 },
            Op::Qos2Done { sid: 1, pkid: 3 },
            Op::Retain {
                record: Message::encode(QoS::AtLeastOnce, true, 0, "t", b"", b"v"),
            },
            Op::Unretain { topic: "t".into() },
            Op::Remove { sid: 1 },
            Op::Begin,
            Op::End,
        ]
    }

    #[test]
    fn every_op_round_trips() {
        let mut b = BytesMut::new();
        for op in all_ops() {
            op.encode(&mut b);
        }
        let mut b = b.freeze();
        let mut back = Vec::new();
        while b.has_remaining() {
            back.push(Op::decode(&mut b).unwrap());
        }
        assert_eq!(back, all_ops());
    }

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

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut b = Bytes::from(bytes);
            while b.has_remaining() {
                if Op::decode(&mut b).is_err() {
                    break;
                }
            }
        }
    }
}
