//! The peer protocol's frames, as they cross a link between two nodes.
//!
//! Every frame: a 4-byte big-endian length of what follows, a version byte
//! ([`PROTOCOL_VERSION`]), a kind byte, and the kind's fields (big-endian integers,
//! fixed-size nonces and proofs, a length-prefixed reason). [`decode`] refuses a
//! length above the link's limit before buffering it, an unknown version or kind, a
//! frame whose fields do not fill it exactly, node id 0 and a reason that is not
//! UTF-8: the link that sent it is closed, and nothing of it reaches a log.
//!
//! `Records` carries records exactly as the writer's log stores them (each framed
//! with its length and CRC32C): the follower appends them as they are and its log
//! checks every CRC.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use commitlog::Offset;

use crate::ids::{Channel, Incarnation, LogId, NodeId, Stream};

/// The version byte of every frame; a peer speaking another is refused.
pub const PROTOCOL_VERSION: u8 = 3;
/// The length prefix, version and kind.
pub const FRAME_HEADER_BYTES: usize = 6;
/// The longest `Goodbye` reason, in bytes.
const REASON_BYTES_MAX: usize = 1024;
/// The bytes of a nonce or a proof.
const TOKEN_BYTES: usize = 32;

/// One message of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The dialing node's first frame: who it is, whom it means, for what, its nonce.
    Hello {
        /// The dialing node.
        from: NodeId,
        /// The node it means to reach.
        to: NodeId,
        /// What the link will carry.
        channel: Channel,
        /// Fresh for this link.
        nonce: [u8; TOKEN_BYTES],
    },
    /// The listening node's answer: its nonce, and its proof that it holds the secret.
    Challenge {
        /// The listening node.
        from: NodeId,
        /// Fresh for this link.
        nonce: [u8; TOKEN_BYTES],
        /// See `auth`.
        proof: [u8; TOKEN_BYTES],
    },
    /// The dialing node's proof that it holds the secret; the link is up after it.
    Proof {
        /// See `auth`.
        proof: [u8; TOKEN_BYTES],
    },
    /// A follower asks for the records of `log`'s `stream` from `from`, which is
    /// also where its replica ends (everything below is held: the writer counts it
    /// towards commit).
    Fetch {
        /// The log asked for.
        log: LogId,
        /// Which of its streams.
        stream: Stream,
        /// The first offset wanted: the end of the follower's replica.
        from: Offset,
        /// The most record bytes to send back.
        bytes_max: u32,
        /// How long the writer may hold the fetch when it has nothing to send.
        wait_ms: u32,
    },
    /// The writer's answer: records from `base` (possibly none), and its commit.
    Records {
        /// The log.
        log: LogId,
        /// Which of its streams.
        stream: Stream,
        /// The offset of the first record in `records`.
        base: Offset,
        /// Everything below is held by `ack_copies` nodes.
        commit: Offset,
        /// Records framed as stored, back to back.
        records: Bytes,
    },
    /// A request of the metadata group (its encoding is the group's), answered by a
    /// `MetaReply` with the same id.
    MetaRequest {
        /// Chosen by the sender, unique among its requests in flight on the link.
        id: u64,
        /// The request.
        payload: Bytes,
    },
    /// The answer to the `MetaRequest` with the same id.
    MetaReply {
        /// The request's id.
        id: u64,
        /// The answer.
        payload: Bytes,
    },
    /// The sender writes `log` in this run: the receiver replicates it (first
    /// frame on a data link, each way).
    Announce {
        /// The sender's log.
        log: LogId,
    },
    /// The sender is done with `log`, a log that never grows again: it holds
    /// all of it its live peers hold (or none, and needs none), has offered it to
    /// its sessions, and none of them needs any of it. A node removes its copy
    /// once every other node said so (rumq's `router/retire.rs`).
    Done {
        /// The log.
        log: LogId,
    },
    /// The sender closes the link, and says why.
    Goodbye {
        /// Why, for the other side's log.
        reason: String,
    },
}

const HELLO: u8 = 1;
const CHALLENGE: u8 = 2;
const PROOF: u8 = 3;
const FETCH: u8 = 4;
const RECORDS: u8 = 5;
const GOODBYE: u8 = 6;
const META_REQUEST: u8 = 7;
const META_REPLY: u8 = 8;
const ANNOUNCE: u8 = 9;
const DONE: u8 = 10;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is above the link's limit (`cluster.peer_frame_bytes_max`).
    #[error("a frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// What the prefix said.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A length too small to hold a version and a kind.
    #[error("a frame of {0} bytes is too short for its header")]
    TooShort(u32),
    /// The peer speaks another version of the protocol.
    #[error("peer protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// No such kind of frame.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// No such stream of a log.
    #[error("unknown stream {0}")]
    UnknownStream(u8),
    /// The frame ended before its fields did.
    #[error("a {0} frame is shorter than its fields")]
    Truncated(&'static str),
    /// Bytes after the last field.
    #[error("a {kind} frame has {extra} bytes after its fields")]
    Trailing {
        /// The frame's kind.
        kind: &'static str,
        /// How many.
        extra: usize,
    },
    /// A channel byte that names no channel.
    #[error("unknown channel {0} in a Hello frame")]
    UnknownChannel(u8),
    /// Node id 0, which no node has.
    #[error("node id 0 in a {0} frame")]
    NodeZero(&'static str),
    /// A `Goodbye` reason that is not UTF-8 or too long.
    #[error("a Goodbye reason that is not UTF-8 of at most {REASON_BYTES_MAX} bytes")]
    BadReason,
}

/// Append `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(PROTOCOL_VERSION);
    match frame {
        Frame::Hello {
            from,
            to,
            channel,
            nonce,
        } => {
            out.put_u8(HELLO);
            out.put_u8(from.0);
            out.put_u8(to.0);
            out.put_u8(channel.to_byte());
            out.put_slice(nonce);
        }
        Frame::Challenge { from, nonce, proof } => {
            out.put_u8(CHALLENGE);
            out.put_u8(from.0);
            out.put_slice(nonce);
            out.put_slice(proof);
        }
        Frame::Proof { proof } => {
            out.put_u8(PROOF);
            out.put_slice(proof);
        }
        Frame::Fetch {
            log,
            stream,
            from,
            bytes_max,
            wait_ms,
        } => {
            put_stream_header(out, FETCH, *log, *stream);
            out.put_u64(from.0);
            out.put_u32(*bytes_max);
            out.put_u32(*wait_ms);
        }
        Frame::Records {
            log,
            stream,
            base,
            commit,
            records,
        } => {
            put_stream_header(out, RECORDS, *log, *stream);
            out.put_u64(base.0);
            out.put_u64(commit.0);
            out.put_slice(records);
        }
        Frame::MetaRequest { id, payload } => {
            out.put_u8(META_REQUEST);
            out.put_u64(*id);
            out.put_slice(payload);
        }
        Frame::MetaReply { id, payload } => {
            out.put_u8(META_REPLY);
            out.put_u64(*id);
            out.put_slice(payload);
        }
        Frame::Announce { log } => {
            out.put_u8(ANNOUNCE);
            put_log(out, *log);
        }
        Frame::Done { log } => {
            out.put_u8(DONE);
            put_log(out, *log);
        }
        Frame::Goodbye { reason } => put_goodbye(out, reason),
    }
    let len = out.len() - start - 4;
    // A frame's length fits: the only unbounded field is `records`, which the writer
    // bounds by the fetch's `bytes_max` (a u32) before it builds the frame.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A `Goodbye`'s kind and reason (cut to `REASON_BYTES_MAX`).
fn put_goodbye(out: &mut BytesMut, reason: &str) {
    out.put_u8(GOODBYE);
    let reason = truncate_utf8(reason, REASON_BYTES_MAX);
    // At most REASON_BYTES_MAX, which fits.
    out.put_u16(reason.len() as u16);
    out.put_slice(reason.as_bytes());
}

/// Take one whole frame off the front of `buf`: `Ok(None)` until one has arrived.
/// A frame longer than `max_bytes` (after its length prefix) is refused as soon as
/// its prefix is read.
pub fn decode(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Frame>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if u64::from(len) > max_bytes as u64 {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: max_bytes,
        });
    }
    if len < 2 {
        return Err(FrameError::TooShort(len));
    }
    let total = 4 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut body = buf.split_to(len as usize).freeze();
    let version = body.get_u8();
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let kind = body.get_u8();
    let frame = match kind {
        HELLO => decode_hello(&mut body)?,
        CHALLENGE => decode_challenge(&mut body)?,
        PROOF => Frame::Proof {
            proof: token(&mut body, "Proof")?,
        },
        FETCH => decode_fetch(&mut body)?,
        RECORDS => decode_records(&mut body)?,
        GOODBYE => decode_goodbye(&mut body)?,
        ANNOUNCE => Frame::Announce {
            log: log_id(&mut body, "Announce")?,
        },
        DONE => Frame::Done {
            log: log_id(&mut body, "Done")?,
        },
        META_REQUEST => {
            let id = u64_field(&mut body, "MetaRequest")?;
            let payload = body.split_off(0);
            Frame::MetaRequest { id, payload }
        }
        META_REPLY => {
            let id = u64_field(&mut body, "MetaReply")?;
            let payload = body.split_off(0);
            Frame::MetaReply { id, payload }
        }
        other => return Err(FrameError::UnknownKind(other)),
    };
    if !body.is_empty() {
        return Err(FrameError::Trailing {
            kind: frame.kind(),
            extra: body.len(),
        });
    }
    Ok(Some(frame))
}

impl Frame {
    /// The frame's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Challenge { .. } => "Challenge",
            Frame::Proof { .. } => "Proof",
            Frame::Fetch { .. } => "Fetch",
            Frame::Records { .. } => "Records",
            Frame::MetaRequest { .. } => "MetaRequest",
            Frame::MetaReply { .. } => "MetaReply",
            Frame::Announce { .. } => "Announce",
            Frame::Done { .. } => "Done",
            Frame::Goodbye { .. } => "Goodbye",
        }
    }
}

fn decode_hello(body: &mut Bytes) -> Result<Frame, FrameError> {
    let from = node(body, "Hello")?;
    let to = node(body, "Hello")?;
    let byte = body
        .try_get_u8()
        .map_err(|_| FrameError::Truncated("Hello"))?;
    let channel = Channel::from_byte(byte).ok_or(FrameError::UnknownChannel(byte))?;
    let nonce = token(body, "Hello")?;
    Ok(Frame::Hello {
        from,
        to,
        channel,
        nonce,
    })
}

fn decode_challenge(body: &mut Bytes) -> Result<Frame, FrameError> {
    let from = node(body, "Challenge")?;
    let nonce = token(body, "Challenge")?;
    let proof = token(body, "Challenge")?;
    Ok(Frame::Challenge { from, nonce, proof })
}

fn decode_fetch(body: &mut Bytes) -> Result<Frame, FrameError> {
    const KIND: &str = "Fetch";
    let log = log_id(body, KIND)?;
    let stream = stream(body, KIND)?;
    let from = Offset(u64_field(body, KIND)?);
    let bytes_max = u32_field(body, KIND)?;
    let wait_ms = u32_field(body, KIND)?;
    Ok(Frame::Fetch {
        log,
        stream,
        from,
        bytes_max,
        wait_ms,
    })
}

fn decode_records(body: &mut Bytes) -> Result<Frame, FrameError> {
    const KIND: &str = "Records";
    let log = log_id(body, KIND)?;
    let stream = stream(body, KIND)?;
    let base = Offset(u64_field(body, KIND)?);
    let commit = Offset(u64_field(body, KIND)?);
    let records = body.split_off(0);
    Ok(Frame::Records {
        log,
        stream,
        base,
        commit,
        records,
    })
}

fn decode_goodbye(body: &mut Bytes) -> Result<Frame, FrameError> {
    let len = usize::from(u16_field(body, "Goodbye")?);
    if len > REASON_BYTES_MAX {
        return Err(FrameError::BadReason);
    }
    if body.len() < len {
        return Err(FrameError::Truncated("Goodbye"));
    }
    let bytes = body.split_to(len);
    let reason = std::str::from_utf8(&bytes).map_err(|_| FrameError::BadReason)?;
    Ok(Frame::Goodbye {
        reason: reason.to_owned(),
    })
}

/// The kind byte, log and stream that begin a `Fetch` or a `Records`.
fn put_stream_header(out: &mut BytesMut, kind: u8, log: LogId, stream: Stream) {
    out.put_u8(kind);
    put_log(out, log);
    out.put_u8(stream.to_byte());
}

fn put_log(out: &mut BytesMut, log: LogId) {
    out.put_u8(log.node.0);
    out.put_u32(log.incarnation.0);
}

fn log_id(body: &mut Bytes, kind: &'static str) -> Result<LogId, FrameError> {
    let node = node(body, kind)?;
    let incarnation = Incarnation(u32_field(body, kind)?);
    Ok(LogId { node, incarnation })
}

fn stream(body: &mut Bytes, kind: &'static str) -> Result<Stream, FrameError> {
    let b = body.try_get_u8().map_err(|_| FrameError::Truncated(kind))?;
    Stream::from_byte(b).ok_or(FrameError::UnknownStream(b))
}

fn node(body: &mut Bytes, kind: &'static str) -> Result<NodeId, FrameError> {
    if body.is_empty() {
        return Err(FrameError::Truncated(kind));
    }
    match body.get_u8() {
        0 => Err(FrameError::NodeZero(kind)),
        n => Ok(NodeId(n)),
    }
}

fn token(body: &mut Bytes, kind: &'static str) -> Result<[u8; TOKEN_BYTES], FrameError> {
    let mut t = [0u8; TOKEN_BYTES];
    if body.len() < TOKEN_BYTES {
        return Err(FrameError::Truncated(kind));
    }
    body.copy_to_slice(&mut t);
    Ok(t)
}

fn u16_field(body: &mut Bytes, kind: &'static str) -> Result<u16, FrameError> {
    body.try_get_u16().map_err(|_| FrameError::Truncated(kind))
}

fn u32_field(body: &mut Bytes, kind: &'static str) -> Result<u32, FrameError> {
    body.try_get_u32().map_err(|_| FrameError::Truncated(kind))
}

fn u64_field(body: &mut Bytes, kind: &'static str) -> Result<u64, FrameError> {
    body.try_get_u64().map_err(|_| FrameError::Truncated(kind))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
