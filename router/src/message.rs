//! The stored form of a message: what one commitlog record holds.
//!
//! One record serves subscribers of every protocol version: the connection that
//! receives a PUBLISH encodes it once into this format, the commitlog stores it as
//! opaque bytes, and each subscriber's connection turns it into its own PUBLISH.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       1     flags: bits 0-1 QoS as published, bit 2 retain as published,
//!               bit 3 origin present, bit 4 expiry present
//! 2       8     publish time, ms since the Unix epoch, u64 BE (for expiry and age)
//!               -- only with bit 4 (expiry):
//!         4     message expiry interval, seconds, u32 BE (MQTT 5)
//!               -- only with bit 3 (origin):
//!         2     packet id the publisher used, u16 BE
//!         2     client id length C, u16 BE
//!         C     the publisher's client id
//!               -- always:
//!         2     topic length T, u16 BE
//!         T     topic name, UTF-8
//!         4     properties length P, u32 BE (0 for 3.1.1)
//!         P     MQTT 5 properties that travel with the message, as on the wire, in
//!               the publisher's order: payload format, content type, response
//!               topic, correlation data, user properties (not the topic alias,
//!               which is per connection, nor the expiry, which is the field above
//!               and is rewritten to the time left when the message is sent)
//!         ...   payload (the rest of the record)
//! ```
//!
//! The origin is written only for QoS 2 publishes from persistent sessions: after a
//! crash between appending such a message and recording its packet id in the session
//! journal, recovery finds the id here, so the publisher's retransmission is
//! recognised and the message is not stored twice (exactly once).
//!
//! A field longer than its length prefix can say (a topic or client id over 65535
//! bytes) is refused ([`NewMessage::try_encode`]), never written with a clamped
//! length; a decoded topic and client id are [`Utf8Bytes`], text by construction.

use std::ops::{Deref, Range};

use bytes::{BufMut, Bytes, BytesMut};
use commitlog::record::{Framed, HEADER_BYTES};

use crate::length_prefix::{u16_len, u32_len, FieldTooLong};

/// The format version written by this code.
pub const FORMAT_VERSION: u8 = 1;
const FIXED_BYTES: usize = 16;
const ORIGIN_FLAG: u8 = 0b1000;
const EXPIRY_FLAG: u8 = 0b1_0000;

/// Who published a message, as far as exactly-once recovery needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The publisher's client id.
    pub client_id: &'a str,
    /// The packet id of its PUBLISH.
    pub pkid: u16,
}

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From the two wire bits; `None` for 3.
    #[must_use]
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A record that is not in a format this code reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Shorter than its fields say.
    #[error("message record truncated")]
    Truncated,
    /// Written by a newer format.
    #[error("unknown message record version {0}")]
    Version(u8),
    /// Bad QoS bits or topic not UTF-8.
    #[error("malformed message record")]
    Malformed,
}

/// A decoded record; every field is a zero-copy view into the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// QoS as published.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// Publish time (ms since the epoch).
    pub time_ms: u64,
    /// Message expiry interval in seconds, as published (MQTT 5).
    pub expiry_secs: Option<u32>,
    /// Topic name.
    pub topic: Utf8Bytes,
    /// MQTT 5 properties as on the wire (empty for 3.1.1).
    pub properties: Bytes,
    /// Payload.
    pub payload: Bytes,
    /// Publisher's client id and packet id (QoS 2 from persistent sessions only).
    pub origin: Option<(Utf8Bytes, u16)>,
}

/// A view into a record that [`Layout::parse`] checked is UTF-8. Only this module
/// makes one, and only from such a range, so [`Utf8Bytes::as_str`] cannot fail (it
/// checks again, as safe code must, and treats a failure as the bug it would be).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// A range `Layout::parse` checked.
    fn parsed(bytes: Bytes) -> Utf8Bytes {
        debug_assert!(
            std::str::from_utf8(&bytes).is_ok(),
            "{bytes:?} is not UTF-8"
        );
        Utf8Bytes(bytes)
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.0) {
            Ok(s) => s,
            Err(e) => {
                // Unreachable: `parsed` is the only way in, and its bytes were checked.
                debug_assert!(false, "Utf8Bytes holds non-UTF-8: {e}");
                tracing::error!(error = %e, bytes = ?self.0, "a checked record field is not UTF-8; read as empty");
                ""
            }
        }
    }
}

impl Deref for Utf8Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Records at least this large are not built in an arena (see
/// [`NewMessage::framed_in`]).
pub const ARENA_RECORD_MAX: usize = 8 * 1024;

/// The fields of a record to write; see the module docs for the layout.
///
/// The topic and the origin's client id must fit a `u16` length (the connection
/// reads both as MQTT strings, which do). [`NewMessage::try_encode`] and
/// [`NewMessage::try_framed`] say when they do not; the infallible forms treat it as
/// the caller's bug (see [`NewMessage::framed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// QoS as published.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// Publish time (ms since the epoch).
    pub time_ms: u64,
    /// Message expiry interval in seconds (MQTT 5).
    pub expiry_secs: Option<u32>,
    /// The publisher's identity, for QoS 2 from persistent sessions.
    pub origin: Option<Origin<'a>>,
    /// Topic name; at most 65535 bytes.
    pub topic: &'a str,
    /// MQTT 5 properties that travel with the message, as on the wire.
    pub properties: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> NewMessage<'a> {
    /// A message with no expiry, origin or properties.
    #[must_use]
    pub fn new(qos: QoS, retain: bool, time_ms: u64, topic: &'a str, payload: &'a [u8]) -> Self {
        NewMessage {
            qos,
            retain,
            time_ms,
            expiry_secs: None,
            origin: None,
            topic,
            properties: &[],
            payload,
        }
    }

    fn len(&self) -> usize {
        FIXED_BYTES
            + self.expiry_secs.map_or(0, |_| 4)
            + self.origin.map_or(0, |o| 4 + o.client_id.len())
            + self.topic.len()
            + self.properties.len()
            + self.payload.len()
    }

    /// The record, or which field does not fit its length prefix.
    pub fn try_encode(&self) -> Result<Bytes, FieldTooLong> {
        let prefixes = self.prefixes()?;
        let mut b = BytesMut::with_capacity(self.len());
        self.put(&mut b, &prefixes);
        Ok(b.freeze())
    }

    /// The record framed for the commitlog, in one buffer: what a connection hands
    /// the router, so the log writes it without copying or checksumming. Or which
    /// field does not fit its length prefix (the whole record's included).
    pub fn try_framed(&self) -> Result<Framed, FieldTooLong> {
        let prefixes = self.prefixes()?;
        let mut b = BytesMut::with_capacity(HEADER_BYTES + self.len());
        b.put_bytes(0, HEADER_BYTES);
        self.put(&mut b, &prefixes);
        seal(b, self.len())
    }

    /// The record (see [`NewMessage::try_encode`]); empty if it cannot be written,
    /// as for [`NewMessage::framed`].
    #[must_use]
    pub fn encode(&self) -> Bytes {
        self.try_encode().unwrap_or_else(|e| {
            refused(&e);
            Bytes::new()
        })
    }

    /// The record framed for the commitlog (see [`NewMessage::try_framed`]).
    ///
    /// A field too long for its length prefix is a bug of the caller, which
    /// validates topics and client ids: debug builds panic; release builds log an
    /// error and return an empty record, which every reader skips as undecodable, so
    /// the message is dropped rather than stored with a wrong length.
    #[must_use]
    pub fn framed(&self) -> Framed {
        or_empty(self.try_framed())
    }

    /// Like [`NewMessage::framed`], but carved out of `arena`: records built one
    /// after another share one reference-counted allocation, so a burst of publishes
    /// costs one allocation rather than one (or two) per message. When `arena` has
    /// no room it is replaced by a fresh block of at least `block` bytes. A block
    /// lives as long as any record in it. Records of [`ARENA_RECORD_MAX`] bytes or
    /// more get an allocation of their own (no slack is kept alive with them).
    #[must_use]
    pub fn framed_in(&self, arena: &mut BytesMut, block: usize) -> Framed {
        let need = HEADER_BYTES + self.len();
        if need >= ARENA_RECORD_MAX {
            return self.framed();
        }
        or_empty(self.try_framed_in(arena, need.max(block)))
    }

    /// [`NewMessage::framed_in`] for a record below [`ARENA_RECORD_MAX`]; a fresh
    /// block has `block` bytes.
    fn try_framed_in(&self, arena: &mut BytesMut, block: usize) -> Result<Framed, FieldTooLong> {
        let prefixes = self.prefixes()?;
        if arena.capacity() - arena.len() < HEADER_BYTES + self.len() {
            *arena = BytesMut::with_capacity(block);
        }
        arena.put_bytes(0, HEADER_BYTES);
        self.put(arena, &prefixes);
        seal(arena.split(), self.len())
    }

    /// The length prefixes of the variable fields, each checked to fit.
    fn prefixes(&self) -> Result<Prefixes, FieldTooLong> {
        Ok(Prefixes {
            client_id: match self.origin {
                Some(o) => u16_len("client id", o.client_id.len())?,
                None => 0,
            },
            topic: u16_len("topic", self.topic.len())?,
            properties: u32_len("properties", self.properties.len())?,
        })
    }

    /// Write the fields with their checked `prefixes` (so none is written half).
    fn put(&self, b: &mut BytesMut, prefixes: &Prefixes) {
        b.put_u8(FORMAT_VERSION);
        let mut flags = self.qos as u8 | (u8::from(self.retain) << 2);
        if self.origin.is_some() {
            flags |= ORIGIN_FLAG;
        }
        if self.expiry_secs.is_some() {
            flags |= EXPIRY_FLAG;
        }
        b.put_u8(flags);
        b.put_u64(self.time_ms);
        if let Some(e) = self.expiry_secs {
            b.put_u32(e);
        }
        if let Some(o) = self.origin {
            b.put_u16(o.pkid);
            b.put_u16(prefixes.client_id);
            b.put_slice(o.client_id.as_bytes());
        }
        b.put_u16(prefixes.topic);
        b.put_slice(self.topic.as_bytes());
        b.put_u32(prefixes.properties);
        b.put_slice(self.properties);
        b.put_slice(self.payload);
    }
}

/// The checked length prefixes of a record's variable fields.
#[derive(Debug)]
struct Prefixes {
    /// Of the origin's client id (0 without an origin).
    client_id: u16,
    topic: u16,
    properties: u32,
}

/// Fill in the frame header of `b` (header space, then a record of `len` bytes).
fn seal(b: BytesMut, len: usize) -> Result<Framed, FieldTooLong> {
    // With the header space there, `seal` refuses only a record whose length does
    // not fit the frame's u32.
    Framed::seal(b).ok_or_else(|| FieldTooLong::u32("record", len))
}

/// The framed record, or, for one that cannot be written, an empty one (see
/// [`NewMessage::framed`]).
fn or_empty(framed: Result<Framed, FieldTooLong>) -> Framed {
    framed.unwrap_or_else(|e| {
        refused(&e);
        Framed::new(&[])
    })
}

/// A record that cannot be written: loud in debug builds, an error in the log in
/// release builds.
fn refused(e: &FieldTooLong) {
    debug_assert!(false, "message record not written: {e}");
    tracing::error!(error = %e, "message record not written (a field does not fit its length prefix): the message is dropped");
}

impl Message {
    /// Encode a record with no expiry or origin (see [`NewMessage`] for those).
    #[must_use]
    pub fn encode(
        qos: QoS,
        retain: bool,
        time_ms: u64,
        topic: &str,
        properties: &[u8],
        payload: &[u8],
    ) -> Bytes {
        NewMessage {
            properties,
            ..NewMessage::new(qos, retain, time_ms, topic, payload)
        }
        .encode()
    }

    /// Decode a record without copying (the fields are views into it).
    pub fn decode(record: &Bytes) -> Result<Message, MessageError> {
        let l = Layout::parse(record)?;
        Ok(Message {
            qos: l.qos,
            retain: l.retain,
            time_ms: l.time_ms,
            expiry_secs: l.expiry_secs,
            topic: Utf8Bytes::parsed(record.slice(l.topic)),
            properties: record.slice(l.properties),
            payload: record.slice(l.payload),
            origin: l
                .origin
                .map(|(id, pkid)| (Utf8Bytes::parsed(record.slice(id)), pkid)),
        })
    }

    /// The publisher's client id and packet id, if the record carries them.
    #[must_use]
    pub fn origin(&self) -> Option<(&str, u16)> {
        let (id, pkid) = self.origin.as_ref()?;
        Some((id.as_str(), *pkid))
    }

    /// Whether a record carries a message expiry interval (without decoding it).
    #[must_use]
    pub fn has_expiry(record: &[u8]) -> bool {
        record.get(1).is_some_and(|f| f & EXPIRY_FLAG != 0)
    }

    /// An upper bound of the MQTT 5 PUBLISH packet that carries a record of
    /// `record_len` bytes with `ids` subscription identifiers. The packet drops the
    /// record's fixed fields and origin, and adds a fixed header (at most 5 bytes),
    /// a packet id, a property length (at most 4), the expiry and a topic alias
    /// (5 and 3 bytes) and the identifiers (at most 5 each).
    #[must_use]
    pub fn packet_size_bound(record_len: usize, ids: usize) -> usize {
        record_len + 5 + 2 + 4 + 5 + 3 + 5 * ids
    }

    /// The size of the MQTT 5 PUBLISH carrying this message at QoS 1 or 2 with
    /// `ids` subscription identifiers, counting the topic in full and a topic
    /// alias (so never below what is sent).
    #[must_use]
    pub fn v5_packet_size(&self, ids: usize) -> usize {
        let props = self.properties.len() + self.expiry_secs.map_or(0, |_| 5) + 3 + 5 * ids;
        let rem = 2 + self.topic.len() + 2 + varint_len(props) + props + self.payload.len();
        1 + varint_len(rem) + rem
    }

    /// Seconds left before the message expires at `now_ms`: `None` without an
    /// expiry, `Some(0)` once expired (an expired message is not delivered).
    #[must_use]
    pub fn expiry_left(&self, now_ms: u64) -> Option<u32> {
        expiry_left(self.expiry_secs, self.time_ms, now_ms)
    }

    /// The topic as text.
    #[must_use]
    pub fn topic_str(&self) -> &str {
        self.topic.as_str()
    }
}

/// Where a record's fields lie: byte ranges into it. Parsing one touches no
/// reference count, which matters on the delivery path: a connection encodes each
/// outgoing PUBLISH from its record, and cloning views of a record that other
/// threads share costs an atomic operation on a contended cache line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// QoS as published.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// Publish time (ms since the epoch).
    pub time_ms: u64,
    /// Message expiry interval in seconds, as published (MQTT 5).
    pub expiry_secs: Option<u32>,
    /// Topic name (valid UTF-8).
    pub topic: Range<usize>,
    /// MQTT 5 properties as on the wire.
    pub properties: Range<usize>,
    /// Payload.
    pub payload: Range<usize>,
    /// Publisher's client id (valid UTF-8) and packet id.
    pub origin: Option<(Range<usize>, u16)>,
}

/// `record` (a stored message) stamped `time_ms` instead; `None` if it is not one.
pub fn restamped(record: &[u8], time_ms: u64) -> Option<Bytes> {
    Layout::parse(record).ok()?;
    let mut b = BytesMut::from(record);
    b.get_mut(2..10)?.copy_from_slice(&time_ms.to_be_bytes());
    Some(b.freeze())
}

impl Layout {
    /// Check a record and find its fields (the checks of [`Message::decode`]).
    pub fn parse(r: &[u8]) -> Result<Layout, MessageError> {
        if r.len() < FIXED_BYTES {
            return Err(MessageError::Truncated);
        }
        if r[0] != FORMAT_VERSION {
            return Err(MessageError::Version(r[0]));
        }
        let qos = QoS::from_u8(r[1] & 0b11).ok_or(MessageError::Malformed)?;
        let retain = r[1] & 0b100 != 0;
        let time_ms = u64::from_be_bytes([r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]]);
        let mut at = 10;
        let expiry_secs = if r[1] & EXPIRY_FLAG != 0 {
            let b = r.get(at..at + 4).ok_or(MessageError::Truncated)?;
            at += 4;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            None
        };
        let origin = if r[1] & ORIGIN_FLAG != 0 {
            let pkid = be16(r, at)?;
            let c = usize::from(be16(r, at + 2)?);
            let id_end = at + 4 + c;
            if id_end > r.len() {
                return Err(MessageError::Truncated);
            }
            if std::str::from_utf8(&r[at + 4..id_end]).is_err() {
                return Err(MessageError::Malformed);
            }
            let id = at + 4..id_end;
            at = id_end;
            Some((id, pkid))
        } else {
            None
        };
        let t = usize::from(be16(r, at)?);
        let topic_start = at + 2;
        let topic_end = topic_start + t;
        let props_len_end = topic_end + 4;
        let lb = r
            .get(topic_end..props_len_end)
            .ok_or(MessageError::Truncated)?;
        let p = u32::from_be_bytes([lb[0], lb[1], lb[2], lb[3]]) as usize;
        let props_end = props_len_end
            .checked_add(p)
            .ok_or(MessageError::Truncated)?;
        if props_end > r.len() {
            return Err(MessageError::Truncated);
        }
        if std::str::from_utf8(&r[topic_start..topic_end]).is_err() {
            return Err(MessageError::Malformed);
        }
        Ok(Layout {
            qos,
            retain,
            time_ms,
            expiry_secs,
            topic: topic_start..topic_end,
            properties: props_len_end..props_end,
            payload: props_end..r.len(),
            origin,
        })
    }

    /// Seconds left before the message expires at `now_ms` (see
    /// [`Message::expiry_left`]).
    #[must_use]
    pub fn expiry_left(&self, now_ms: u64) -> Option<u32> {
        expiry_left(self.expiry_secs, self.time_ms, now_ms)
    }
}

/// Bytes an MQTT Variable Byte Integer takes (shared with the broker's encoder, so
/// the size computed here is the size it writes).
#[must_use]
pub fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn expiry_left(expiry_secs: Option<u32>, time_ms: u64, now_ms: u64) -> Option<u32> {
    let secs = expiry_secs?;
    let age = now_ms.saturating_sub(time_ms) / 1000;
    Some(u32::try_from(u64::from(secs).saturating_sub(age)).unwrap_or(0))
}

fn be16(r: &[u8], at: usize) -> Result<u16, MessageError> {
    match r.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(MessageError::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn framed_holds_the_same_record() {
        let f = NewMessage {
            properties: b"p",
            ..NewMessage::new(QoS::AtLeastOnce, false, 5, "t", b"x")
        }
        .framed();
        assert_eq!(
            f.payload(),
            Message::encode(QoS::AtLeastOnce, false, 5, "t", b"p", b"x")
        );
        assert_eq!(f, Framed::new(&f.payload()));
    }

    #[test]
    fn records_from_an_arena_are_the_same_records() {
        let mut arena = BytesMut::new();
        let a = NewMessage::new(QoS::AtLeastOnce, false, 5, "t", b"one").framed_in(&mut arena, 256);
        let b = NewMessage::new(QoS::AtMostOnce, true, 6, "u/v", b"two").framed_in(&mut arena, 256);
        assert_eq!(
            a,
            NewMessage::new(QoS::AtLeastOnce, false, 5, "t", b"one").framed()
        );
        assert_eq!(
            b,
            NewMessage::new(QoS::AtMostOnce, true, 6, "u/v", b"two").framed()
        );
        // Larger than the block: a block of its own.
        let big = vec![1u8; 1000];
        let c = NewMessage::new(QoS::AtMostOnce, false, 7, "t", &big).framed_in(&mut arena, 256);
        assert_eq!(Message::decode(&c.payload()).unwrap().payload.len(), 1000);
    }

    #[test]
    fn round_trip() {
        let r = Message::encode(QoS::ExactlyOnce, true, 1234, "a/b", b"", b"hello");
        let m = Message::decode(&r).unwrap();
        assert_eq!(m.qos, QoS::ExactlyOnce);
        assert!(m.retain);
        assert_eq!(m.time_ms, 1234);
        assert_eq!(m.topic_str(), "a/b");
        assert_eq!(&m.payload[..], b"hello");
        assert!(m.properties.is_empty());
    }

    #[test]
    fn origin_round_trips_and_moves_the_topic() {
        let origin = Origin {
            client_id: "dev-7",
            pkid: 513,
        };
        let f = NewMessage {
            origin: Some(origin),
            expiry_secs: Some(60),
            ..NewMessage::new(QoS::ExactlyOnce, false, 5, "a/b", b"x")
        }
        .framed();
        let m = Message::decode(&f.payload()).unwrap();
        assert_eq!(m.origin(), Some(("dev-7", 513)));
        assert_eq!(m.expiry_secs, Some(60));
        assert_eq!(m.expiry_left(5 + 59_999), Some(1));
        assert_eq!(m.expiry_left(5 + 60_000), Some(0));
        assert_eq!(m.topic_str(), "a/b");
        assert_eq!(&m.payload[..], b"x");
        let plain = Message::decode(&Message::encode(
            QoS::ExactlyOnce,
            false,
            5,
            "a/b",
            b"",
            b"x",
        ));
        assert_eq!(plain.unwrap().origin(), None);
    }

    #[test]
    fn a_field_longer_than_its_length_prefix_is_refused_not_written_clamped() {
        let long = "x".repeat(usize::from(u16::MAX) + 1);
        let e = NewMessage::new(QoS::AtLeastOnce, false, 5, &long, b"x")
            .try_framed()
            .unwrap_err();
        assert_eq!((e.field, e.len, e.max), ("topic", 65_536, 65_535));
        let e = NewMessage {
            origin: Some(Origin {
                client_id: &long,
                pkid: 1,
            }),
            ..NewMessage::new(QoS::ExactlyOnce, false, 5, "t", b"x")
        }
        .try_encode()
        .unwrap_err();
        assert_eq!((e.field, e.len), ("client id", 65_536));
    }

    #[test]
    fn a_topic_of_exactly_u16_max_bytes_round_trips() {
        let topic = "x".repeat(usize::from(u16::MAX));
        let f = NewMessage::new(QoS::AtLeastOnce, false, 5, &topic, b"x")
            .try_framed()
            .unwrap();
        assert_eq!(Message::decode(&f.payload()).unwrap().topic_str(), topic);
    }

    /// Debug builds stop at the broken invariant; release builds write an empty
    /// record, which no reader takes for a message.
    #[test]
    #[cfg_attr(
        debug_assertions,
        should_panic(expected = "message record not written")
    )]
    fn framed_refuses_an_oversized_topic_with_an_empty_record() {
        let long = "x".repeat(usize::from(u16::MAX) + 1);
        let f = NewMessage::new(QoS::AtLeastOnce, false, 5, &long, b"x").framed();
        assert_eq!(f.payload_len(), 0);
        assert_eq!(Message::decode(&f.payload()), Err(MessageError::Truncated));
    }

    #[test]
    fn a_record_whose_topic_is_not_utf8_does_not_decode() {
        let mut r =
            BytesMut::from(&Message::encode(QoS::AtMostOnce, false, 0, "ab", b"", b"x")[..]);
        let at = r.iter().position(|&c| c == b'a').unwrap();
        r[at] = 0xff;
        assert_eq!(Message::decode(&r.freeze()), Err(MessageError::Malformed));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(&Bytes::from(bytes));
        }

        #[test]
        fn encode_decode(topic in "[a-z/]{1,20}", props in proptest::collection::vec(any::<u8>(), 0..20),
                         payload in proptest::collection::vec(any::<u8>(), 0..100), q in 0u8..3, retain: bool) {
            let qos = QoS::from_u8(q).unwrap();
            let r = Message::encode(qos, retain, 9, &topic, &props, &payload);
            let m = Message::decode(&r).unwrap();
            prop_assert_eq!(m.topic_str(), topic.as_str());
            prop_assert_eq!(&m.properties[..], &props[..]);
            prop_assert_eq!(&m.payload[..], &payload[..]);
            prop_assert_eq!((m.qos, m.retain), (qos, retain));
        }
    }
}
