//! The journal's unit of change, [`Op`], and its encoding.
//!
//! A journal record is a sequence of ops; each op is a tag byte, the session it is
//! about (for the ops that have one) and its fields, big-endian, strings and records
//! prefixed by their length:
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
//! 20  SentIn       u32 session, u16 packet id, u8 QoS, log, u64 offset
//! 21  ResumeIn     u32 session, log, u64 offset
//! 22  Handoff      u8 node, u16 len + client id            (the session of that client
//!                  id, if there is one, left this node for that one; as
//!                  written before session 22, read as stamped 0)
//! 23  HandoffAt    u8 node, u64 stamp, u16 len + client id (the same, with the
//!                  metadata group's stamp of that change of owner)
//! ```
//!
//! `Head`, `Sent` and `Resume` name offsets in the message log the journal's run
//! wrote; `SentIn` and `ResumeIn` name another log (a replica, in a cluster, or an
//! earlier run's log), written as u8 node and u32 incarnation. Only a cluster
//! writes them.
//!
//! An op with a string or record longer than its length prefix can say is refused
//! ([`FieldTooLong`]) and nothing of it is written.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use commitlog::Offset;
use mesh::{Incarnation, LogId, NodeId};

use crate::length_prefix::{put_u16_prefixed, put_u32_prefixed, FieldTooLong};
use crate::{QoS, SubOptions};

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
    /// A message from another log (see the module docs) was sent at QoS 1 or 2
    /// and awaits its ack.
    SentIn {
        /// Session.
        sid: u32,
        /// Packet id.
        pkid: u16,
        /// Effective QoS.
        qos: QoS,
        /// The log.
        log: LogId,
        /// Its offset there.
        offset: Offset,
    },
    /// Every matching message of another log below `offset` was sent.
    ResumeIn {
        /// Session.
        sid: u32,
        /// The log.
        log: LogId,
        /// Where reading it resumes.
        offset: Offset,
    },
    /// The session of `client_id` (if there is one) left this node: another node,
    /// `to`, owns the client id now, and carries the session on from this state.
    Handoff {
        /// The client id.
        client_id: String,
        /// Its new owner.
        to: NodeId,
        /// The metadata group's stamp of that change of owner (later changes
        /// have higher ones): which of several nodes' handoffs is the newest.
        at: u64,
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
    /// The connection of `client_id` has a will (in a cluster: the other nodes
    /// publish it if this node dies with the connection open, `Router::orphan_wills`).
    Will {
        /// The client id.
        client_id: String,
        /// Its will delay (MQTT 5), in seconds.
        delay_secs: u32,
        /// The will, in stored form.
        record: Bytes,
    },
    /// The will of `client_id` is no longer armed: published, or its connection
    /// ended with DISCONNECT or was taken over.
    WillGone {
        /// The client id.
        client_id: String,
    },
    /// A checkpoint starts: the ops up to `End` are the whole state.
    Begin,
    /// The checkpoint is complete.
    End,
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
    pub const SENT_IN: u8 = 20;
    pub const RESUME_IN: u8 = 21;
    pub const HANDOFF: u8 = 22;
    pub const HANDOFF_AT: u8 = 23;
    pub const WILL: u8 = 24;
    pub const WILL_GONE: u8 = 25;
}

impl Op {
    /// Append the encoded op to `b`: its tag, its session if it has one, its fields.
    /// An op with a field longer than its length prefix can say is refused and
    /// nothing is appended.
    pub fn encode(&self, b: &mut BytesMut) -> Result<(), FieldTooLong> {
        let start = b.len();
        b.put_u8(self.tag());
        if let Some(sid) = self.sid() {
            b.put_u32(sid);
        }
        let fields = self.put_fields(b);
        if fields.is_err() {
            b.truncate(start);
        }
        fields
    }

    /// Decode one op from the front of `b`.
    pub fn decode(b: &mut Bytes) -> Result<Op, &'static str> {
        let t = get_u8(b)?;
        if let Some(op) = Op::decode_without_session(t, b)? {
            return Ok(op);
        }
        let sid = get_u32(b)?;
        Op::decode_for_session(t, sid, b)
    }

    /// The session the op is about; `None` for the batch and checkpoint markers and
    /// the retained messages, which belong to no session.
    #[must_use]
    pub fn sid(&self) -> Option<u32> {
        match self {
            Op::Head(_)
            | Op::Retain { .. }
            | Op::Unretain { .. }
            | Op::Handoff { .. }
            | Op::Will { .. }
            | Op::WillGone { .. }
            | Op::Begin
            | Op::End => None,
            Op::Open { sid, .. }
            | Op::Remove { sid }
            | Op::Subscribe { sid, .. }
            | Op::Expiry { sid, .. }
            | Op::Unsubscribe { sid, .. }
            | Op::Pending { sid, .. }
            | Op::Taken { sid }
            | Op::Sent { sid, .. }
            | Op::SentRecord { sid, .. }
            | Op::Released { sid, .. }
            | Op::Acked { sid, .. }
            | Op::Resume { sid, .. }
            | Op::SentIn { sid, .. }
            | Op::ResumeIn { sid, .. }
            | Op::Qos2In { sid, .. }
            | Op::Qos2Done { sid, .. } => Some(*sid),
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Op::Head(_) => tag::HEAD,
            Op::Open { .. } => tag::OPEN,
            Op::Remove { .. } => tag::REMOVE,
            Op::Subscribe { .. } => tag::SUBSCRIBE,
            Op::Expiry { .. } => tag::EXPIRY,
            Op::Unsubscribe { .. } => tag::UNSUBSCRIBE,
            Op::Pending { .. } => tag::PENDING,
            Op::Taken { .. } => tag::TAKEN,
            Op::Sent { .. } => tag::SENT,
            Op::SentRecord { .. } => tag::SENT_RECORD,
            Op::Released { .. } => tag::RELEASED,
            Op::Acked { .. } => tag::ACKED,
            Op::Resume { .. } => tag::RESUME,
            Op::SentIn { .. } => tag::SENT_IN,
            Op::ResumeIn { .. } => tag::RESUME_IN,
            Op::Handoff { .. } => tag::HANDOFF_AT,
            Op::Qos2In { .. } => tag::QOS2_IN,
            Op::Qos2Done { .. } => tag::QOS2_DONE,
            Op::Retain { .. } => tag::RETAIN,
            Op::Unretain { .. } => tag::UNRETAIN,
            Op::Will { .. } => tag::WILL,
            Op::WillGone { .. } => tag::WILL_GONE,
            Op::Begin => tag::BEGIN,
            Op::End => tag::END,
        }
    }

    /// The fields after the tag and the session.
    fn put_fields(&self, b: &mut BytesMut) -> Result<(), FieldTooLong> {
        match self {
            Op::Remove { .. } | Op::Taken { .. } | Op::Begin | Op::End => {}
            Op::Head(offset) | Op::Resume { offset, .. } => b.put_u64(offset.0),
            Op::Open { client_id, .. } => put_u16_prefixed(b, "client id", client_id.as_bytes())?,
            Op::Subscribe {
                filter, options, ..
            } => {
                put_options(b, options);
                put_u16_prefixed(b, "filter", filter.as_bytes())?;
            }
            Op::Unsubscribe { filter, .. } => put_u16_prefixed(b, "filter", filter.as_bytes())?,
            Op::Expiry { secs, .. } => b.put_u32(*secs),
            Op::Pending { qos, record, .. } => {
                b.put_u8(*qos as u8);
                put_u32_prefixed(b, "record", record)?;
            }
            Op::Sent {
                pkid, qos, offset, ..
            } => {
                b.put_u16(*pkid);
                b.put_u8(*qos as u8);
                b.put_u64(offset.0);
            }
            Op::SentRecord {
                pkid, qos, record, ..
            } => {
                b.put_u16(*pkid);
                b.put_u8(*qos as u8);
                put_u32_prefixed(b, "record", record)?;
            }
            Op::SentIn {
                pkid,
                qos,
                log,
                offset,
                ..
            } => {
                b.put_u16(*pkid);
                b.put_u8(*qos as u8);
                put_log(b, *log);
                b.put_u64(offset.0);
            }
            Op::ResumeIn { log, offset, .. } => {
                put_log(b, *log);
                b.put_u64(offset.0);
            }
            Op::Released { pkid, .. }
            | Op::Acked { pkid, .. }
            | Op::Qos2In { pkid, .. }
            | Op::Qos2Done { pkid, .. } => b.put_u16(*pkid),
            Op::Retain { record } => put_u32_prefixed(b, "record", record)?,
            Op::Unretain { topic } => put_u16_prefixed(b, "topic", topic.as_bytes())?,
            Op::Handoff { client_id, to, at } => {
                b.put_u8(to.0);
                b.put_u64(*at);
                put_u16_prefixed(b, "client id", client_id.as_bytes())?;
            }
            Op::Will {
                client_id,
                delay_secs,
                record,
            } => {
                b.put_u32(*delay_secs);
                put_u16_prefixed(b, "client id", client_id.as_bytes())?;
                put_u32_prefixed(b, "record", record)?;
            }
            Op::WillGone { client_id } => {
                put_u16_prefixed(b, "client id", client_id.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The ops of tag `t` that belong to no session; `None` for the others.
    fn decode_without_session(t: u8, b: &mut Bytes) -> Result<Option<Op>, &'static str> {
        Ok(Some(match t {
            tag::HEAD => Op::Head(Offset(get_u64(b)?)),
            tag::BEGIN => Op::Begin,
            tag::END => Op::End,
            tag::RETAIN => Op::Retain {
                record: get_bytes(b)?,
            },
            tag::UNRETAIN => Op::Unretain { topic: get_str(b)? },
            tag::HANDOFF => {
                let to = NodeId(get_u8(b)?);
                Op::Handoff {
                    to,
                    at: 0,
                    client_id: get_str(b)?,
                }
            }
            tag::HANDOFF_AT => {
                let to = NodeId(get_u8(b)?);
                let at = get_u64(b)?;
                Op::Handoff {
                    to,
                    at,
                    client_id: get_str(b)?,
                }
            }
            tag::WILL => Op::Will {
                delay_secs: get_u32(b)?,
                client_id: get_str(b)?,
                record: get_bytes(b)?,
            },
            tag::WILL_GONE => Op::WillGone {
                client_id: get_str(b)?,
            },
            _ => return Ok(None),
        }))
    }

    /// The op of tag `t` about session `sid`.
    fn decode_for_session(t: u8, sid: u32, b: &mut Bytes) -> Result<Op, &'static str> {
        Ok(match t {
            tag::OPEN => Op::Open {
                sid,
                client_id: get_str(b)?,
            },
            tag::REMOVE => Op::Remove { sid },
            tag::SUBSCRIBE => {
                let options = get_options(b)?;
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
            tag::RESUME => Op::Resume {
                sid,
                offset: Offset(get_u64(b)?),
            },
            tag::SENT_IN => Op::SentIn {
                sid,
                pkid: get_u16(b)?,
                qos: get_qos(b)?,
                log: get_log(b)?,
                offset: Offset(get_u64(b)?),
            },
            tag::RESUME_IN => Op::ResumeIn {
                sid,
                log: get_log(b)?,
                offset: Offset(get_u64(b)?),
            },
            tag::RELEASED => Op::Released {
                sid,
                pkid: get_u16(b)?,
            },
            tag::ACKED => Op::Acked {
                sid,
                pkid: get_u16(b)?,
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
        })
    }
}

fn put_log(b: &mut BytesMut, log: LogId) {
    b.put_u8(log.node.0);
    b.put_u32(log.incarnation.0);
}

fn get_log(b: &mut Bytes) -> Result<LogId, &'static str> {
    Ok(LogId {
        node: NodeId(get_u8(b)?),
        incarnation: Incarnation(get_u32(b)?),
    })
}

fn put_options(b: &mut BytesMut, options: &SubOptions) {
    b.put_u8(
        options.qos as u8
            | u8::from(options.no_local) << 2
            | u8::from(options.retain_as_published) << 3
            | u8::from(options.id.is_some()) << 7,
    );
    if let Some(id) = options.id {
        b.put_u32(id);
    }
}

fn get_options(b: &mut Bytes) -> Result<SubOptions, &'static str> {
    let bits = get_u8(b)?;
    Ok(SubOptions {
        qos: QoS::from_u8(bits & 0b11).ok_or("bad QoS")?,
        no_local: bits & 0b100 != 0,
        retain_as_published: bits & 0b1000 != 0,
        id: if bits & 0x80 != 0 {
            Some(get_u32(b)?)
        } else {
            None
        },
    })
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

#[cfg(test)]
mod tests;
