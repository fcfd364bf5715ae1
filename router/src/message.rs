//! The stored form of a message: what one commitlog record holds.
//!
//! One record serves subscribers of every protocol version: the connection that
//! receives a PUBLISH encodes it once into this format, the commitlog stores it as
//! opaque bytes, and each subscriber's connection turns it into its own PUBLISH.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       1     flags: bits 0-1 QoS as published, bit 2 retain as published
//! 2       8     publish time, ms since the Unix epoch, u64 BE (for expiry and age)
//! 10      2     topic length T, u16 BE
//! 12      T     topic name, UTF-8
//! 12+T    4     properties length P, u32 BE (MQTT 5 properties as on the wire; 0 for 3.1.1)
//! 16+T    P     properties
//! 16+T+P  ...   payload (the rest of the record)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use commitlog::record::Framed;

/// The format version written by this code.
pub const FORMAT_VERSION: u8 = 1;
const FIXED_BYTES: usize = 16;

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
    /// Topic name (valid UTF-8).
    pub topic: Bytes,
    /// MQTT 5 properties as on the wire (empty for 3.1.1).
    pub properties: Bytes,
    /// Payload.
    pub payload: Bytes,
}

impl Message {
    /// Encode a record. `topic` must be at most 65535 bytes (validated by the caller).
    #[must_use]
    pub fn encode(
        qos: QoS,
        retain: bool,
        time_ms: u64,
        topic: &str,
        properties: &[u8],
        payload: &[u8],
    ) -> Bytes {
        let mut b =
            BytesMut::with_capacity(FIXED_BYTES + topic.len() + properties.len() + payload.len());
        Self::put(&mut b, qos, retain, time_ms, topic, properties, payload);
        b.freeze()
    }

    /// Encode a record framed for the commitlog, in one buffer: what a connection
    /// hands the router, so the log writes it without copying or checksumming.
    #[must_use]
    pub fn encode_framed(
        qos: QoS,
        retain: bool,
        time_ms: u64,
        topic: &str,
        properties: &[u8],
        payload: &[u8],
    ) -> Framed {
        let header = commitlog::record::HEADER_BYTES;
        let mut b = BytesMut::with_capacity(
            header + FIXED_BYTES + topic.len() + properties.len() + payload.len(),
        );
        b.put_bytes(0, header);
        Self::put(&mut b, qos, retain, time_ms, topic, properties, payload);
        match Framed::seal(b) {
            Some(f) => f,
            // Unreachable: the buffer holds the header, and no record from a packet
            // (256 MiB at most) exceeds u32::MAX bytes.
            None => Framed::new(&Self::encode(
                qos, retain, time_ms, topic, properties, payload,
            )),
        }
    }

    fn put(
        b: &mut BytesMut,
        qos: QoS,
        retain: bool,
        time_ms: u64,
        topic: &str,
        properties: &[u8],
        payload: &[u8],
    ) {
        b.put_u8(FORMAT_VERSION);
        b.put_u8(qos as u8 | (u8::from(retain) << 2));
        b.put_u64(time_ms);
        // Topic names are validated to fit u16 before they get here.
        b.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
        b.put_slice(topic.as_bytes());
        b.put_u32(u32::try_from(properties.len()).unwrap_or(u32::MAX));
        b.put_slice(properties);
        b.put_slice(payload);
    }

    /// Decode a record without copying.
    pub fn decode(record: &Bytes) -> Result<Message, MessageError> {
        let r = record.as_ref();
        if r.len() < FIXED_BYTES {
            return Err(MessageError::Truncated);
        }
        if r[0] != FORMAT_VERSION {
            return Err(MessageError::Version(r[0]));
        }
        let qos = QoS::from_u8(r[1] & 0b11).ok_or(MessageError::Malformed)?;
        let retain = r[1] & 0b100 != 0;
        let time_ms = u64::from_be_bytes([r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]]);
        let t = usize::from(u16::from_be_bytes([r[10], r[11]]));
        let topic_end = 12 + t;
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
        if std::str::from_utf8(&r[12..topic_end]).is_err() {
            return Err(MessageError::Malformed);
        }
        Ok(Message {
            qos,
            retain,
            time_ms,
            topic: record.slice(12..topic_end),
            properties: record.slice(props_len_end..props_end),
            payload: record.slice(props_end..),
        })
    }

    /// The topic as text (validated UTF-8 by `decode`).
    #[must_use]
    pub fn topic_str(&self) -> &str {
        std::str::from_utf8(&self.topic).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn framed_holds_the_same_record() {
        let f = Message::encode_framed(QoS::AtLeastOnce, false, 5, "t", b"p", b"x");
        assert_eq!(
            f.payload(),
            Message::encode(QoS::AtLeastOnce, false, 5, "t", b"p", b"x")
        );
        assert_eq!(f, Framed::new(&f.payload()));
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
