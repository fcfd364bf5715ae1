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
//!               bit 3 origin present
//! 2       8     publish time, ms since the Unix epoch, u64 BE (for expiry and age)
//!               -- only with bit 3 (origin):
//!         2     packet id the publisher used, u16 BE
//!         2     client id length C, u16 BE
//!         C     the publisher's client id
//!               -- always:
//!         2     topic length T, u16 BE
//!         T     topic name, UTF-8
//!         4     properties length P, u32 BE (MQTT 5 properties as on the wire; 0 for 3.1.1)
//!         P     properties
//!         ...   payload (the rest of the record)
//! ```
//!
//! The origin is written only for QoS 2 publishes from persistent sessions: after a
//! crash between appending such a message and recording its packet id in the session
//! journal, recovery finds the id here, so the publisher's retransmission is
//! recognised and the message is not stored twice (exactly once).

use bytes::{BufMut, Bytes, BytesMut};
use commitlog::record::Framed;

/// The format version written by this code.
pub const FORMAT_VERSION: u8 = 1;
const FIXED_BYTES: usize = 16;
const ORIGIN_FLAG: u8 = 0b1000;

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
    /// Topic name (valid UTF-8).
    pub topic: Bytes,
    /// MQTT 5 properties as on the wire (empty for 3.1.1).
    pub properties: Bytes,
    /// Payload.
    pub payload: Bytes,
    /// Publisher's client id and packet id (QoS 2 from persistent sessions only).
    pub origin: Option<(Bytes, u16)>,
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
        Self::put(
            &mut b, qos, retain, time_ms, None, topic, properties, payload,
        );
        b.freeze()
    }

    /// Encode a record framed for the commitlog, in one buffer: what a connection
    /// hands the router, so the log writes it without copying or checksumming.
    #[must_use]
    #[allow(clippy::too_many_arguments)] // the record's fields, in record order
    pub fn encode_framed(
        qos: QoS,
        retain: bool,
        time_ms: u64,
        origin: Option<Origin<'_>>,
        topic: &str,
        properties: &[u8],
        payload: &[u8],
    ) -> Framed {
        let header = commitlog::record::HEADER_BYTES;
        let origin_len = origin.map_or(0, |o| 4 + o.client_id.len());
        let mut b = BytesMut::with_capacity(
            header + FIXED_BYTES + origin_len + topic.len() + properties.len() + payload.len(),
        );
        b.put_bytes(0, header);
        Self::put(
            &mut b, qos, retain, time_ms, origin, topic, properties, payload,
        );
        match Framed::seal(b) {
            Some(f) => f,
            // Unreachable: the buffer holds the header, and no record from a packet
            // (256 MiB at most) exceeds u32::MAX bytes.
            None => {
                let mut b = BytesMut::new();
                Self::put(
                    &mut b, qos, retain, time_ms, origin, topic, properties, payload,
                );
                Framed::new(&b.freeze())
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the record's fields, in record order
    fn put(
        b: &mut BytesMut,
        qos: QoS,
        retain: bool,
        time_ms: u64,
        origin: Option<Origin<'_>>,
        topic: &str,
        properties: &[u8],
        payload: &[u8],
    ) {
        b.put_u8(FORMAT_VERSION);
        let origin_flag = if origin.is_some() { ORIGIN_FLAG } else { 0 };
        b.put_u8(qos as u8 | (u8::from(retain) << 2) | origin_flag);
        b.put_u64(time_ms);
        if let Some(o) = origin {
            b.put_u16(o.pkid);
            // Client ids come off the wire as MQTT strings: at most 65535 bytes.
            b.put_u16(u16::try_from(o.client_id.len()).unwrap_or(u16::MAX));
            b.put_slice(o.client_id.as_bytes());
        }
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
        let mut at = 10;
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
            let id = record.slice(at + 4..id_end);
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
        Ok(Message {
            qos,
            retain,
            time_ms,
            topic: record.slice(topic_start..topic_end),
            properties: record.slice(props_len_end..props_end),
            payload: record.slice(props_end..),
            origin,
        })
    }

    /// The publisher's client id and packet id, if the record carries them.
    #[must_use]
    pub fn origin(&self) -> Option<(&str, u16)> {
        let (id, pkid) = self.origin.as_ref()?;
        Some((std::str::from_utf8(id).unwrap_or(""), *pkid))
    }

    /// The topic as text (validated UTF-8 by `decode`).
    #[must_use]
    pub fn topic_str(&self) -> &str {
        std::str::from_utf8(&self.topic).unwrap_or("")
    }
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
        let f = Message::encode_framed(QoS::AtLeastOnce, false, 5, None, "t", b"p", b"x");
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

    #[test]
    fn origin_round_trips_and_moves_the_topic() {
        let origin = Origin {
            client_id: "dev-7",
            pkid: 513,
        };
        let f = Message::encode_framed(QoS::ExactlyOnce, false, 5, Some(origin), "a/b", b"", b"x");
        let m = Message::decode(&f.payload()).unwrap();
        assert_eq!(m.origin(), Some(("dev-7", 513)));
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
