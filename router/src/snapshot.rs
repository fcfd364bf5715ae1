//! What the router carries over a clean restart: the persistent sessions and the
//! retained messages. The log already holds every message; a snapshot holds only what
//! says who still needs which of them.
//!
//! [`Router::snapshot`](crate::Router::snapshot) takes one when the broker shuts down,
//! [`Router::restore`](crate::Router::restore) puts it back at the next start. The
//! encoding (big-endian, every variable-length field prefixed by its length):
//!
//! ```text
//! "rumq-sessions 1\n"
//! u32 retained count, then per retained message: u32 len, the stored record
//! u32 session count, then per session:
//!   u16 len, client id
//!   u32 filter count, then per filter: u16 len, filter, u8 QoS
//!   u64 offset to resume reading the log from
//!   u32 count, then per pending retained delivery: u8 QoS, u32 len, record
//!   u32 count, then per unacknowledged delivery: u16 packet id, u8 QoS,
//!       u8 released (PUBREC received), u8 has offset, u64 offset, u32 len, record
//!   u32 count, then per inbound QoS 2 id awaiting PUBREL: u16 packet id
//! ```

use bytes::{Buf, BufMut, Bytes};
use commitlog::Offset;

use crate::QoS;

const MAGIC: &[u8] = b"rumq-sessions 1\n";

/// The state carried over a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Retained messages, as stored records.
    pub retained: Vec<Bytes>,
    /// Persistent sessions.
    pub sessions: Vec<SavedSession>,
}

/// One persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// Client id.
    pub client_id: String,
    /// Filters and granted QoS.
    pub filters: Vec<(String, QoS)>,
    /// The first log offset it has not been offered yet: reading resumes here.
    pub resume: Offset,
    /// Retained messages matched by a subscription and not yet sent.
    pub retained: Vec<(Bytes, QoS)>,
    /// Deliveries sent and not yet acknowledged.
    pub inflight: Vec<SavedInflight>,
    /// Inbound QoS 2 packet ids stored and not yet released.
    pub incoming_qos2: Vec<u16>,
}

/// One unacknowledged outbound delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedInflight {
    /// Packet id.
    pub pkid: u16,
    /// Effective QoS (1 or 2).
    pub qos: QoS,
    /// QoS 2: PUBREC received, PUBCOMP outstanding.
    pub released: bool,
    /// Its log offset (none for a retained message).
    pub offset: Option<Offset>,
    /// The stored record.
    pub record: Bytes,
}

/// Bytes that are not a snapshot this code wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Wrong header: another file or another format version.
    #[error("not a rumq sessions file (version 1)")]
    Format,
    /// Ends in the middle of a field.
    #[error("truncated")]
    Truncated,
    /// A field with an impossible value.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl Snapshot {
    /// Nothing to carry over.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.sessions.is_empty()
    }

    /// Encode (see the module docs).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_slice(MAGIC);
        put_len32(&mut b, self.retained.len());
        for r in &self.retained {
            put_bytes(&mut b, r);
        }
        put_len32(&mut b, self.sessions.len());
        for s in &self.sessions {
            put_str(&mut b, &s.client_id);
            put_len32(&mut b, s.filters.len());
            for (f, q) in &s.filters {
                put_str(&mut b, f);
                b.put_u8(*q as u8);
            }
            b.put_u64(s.resume.0);
            put_len32(&mut b, s.retained.len());
            for (r, q) in &s.retained {
                b.put_u8(*q as u8);
                put_bytes(&mut b, r);
            }
            put_len32(&mut b, s.inflight.len());
            for i in &s.inflight {
                b.put_u16(i.pkid);
                b.put_u8(i.qos as u8);
                b.put_u8(u8::from(i.released));
                b.put_u8(u8::from(i.offset.is_some()));
                b.put_u64(i.offset.map_or(0, |o| o.0));
                put_bytes(&mut b, &i.record);
            }
            put_len32(&mut b, s.incoming_qos2.len());
            for id in &s.incoming_qos2 {
                b.put_u16(*id);
            }
        }
        b
    }

    /// Decode what [`Snapshot::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let mut b = Bytes::copy_from_slice(bytes);
        if !b.starts_with(MAGIC) {
            return Err(SnapshotError::Format);
        }
        b.advance(MAGIC.len());
        let mut snap = Snapshot::default();
        for _ in 0..get_u32(&mut b)? {
            snap.retained.push(get_bytes(&mut b)?);
        }
        for _ in 0..get_u32(&mut b)? {
            let client_id = get_str(&mut b)?;
            let mut filters = Vec::new();
            for _ in 0..get_u32(&mut b)? {
                let f = get_str(&mut b)?;
                filters.push((f, get_qos(&mut b)?));
            }
            let resume = Offset(get_u64(&mut b)?);
            let mut retained = Vec::new();
            for _ in 0..get_u32(&mut b)? {
                let q = get_qos(&mut b)?;
                retained.push((get_bytes(&mut b)?, q));
            }
            let mut inflight = Vec::new();
            for _ in 0..get_u32(&mut b)? {
                let pkid = get_u16(&mut b)?;
                let qos = get_qos(&mut b)?;
                let released = get_u8(&mut b)? != 0;
                let has_offset = get_u8(&mut b)? != 0;
                let offset = get_u64(&mut b)?;
                if pkid == 0 || qos == QoS::AtMostOnce {
                    return Err(SnapshotError::Malformed("in-flight delivery"));
                }
                inflight.push(SavedInflight {
                    pkid,
                    qos,
                    released,
                    offset: has_offset.then_some(Offset(offset)),
                    record: get_bytes(&mut b)?,
                });
            }
            let mut incoming_qos2 = Vec::new();
            for _ in 0..get_u32(&mut b)? {
                incoming_qos2.push(get_u16(&mut b)?);
            }
            snap.sessions.push(SavedSession {
                client_id,
                filters,
                resume,
                retained,
                inflight,
                incoming_qos2,
            });
        }
        if b.has_remaining() {
            return Err(SnapshotError::Malformed("bytes after the last session"));
        }
        Ok(snap)
    }
}

fn put_len32(b: &mut Vec<u8>, n: usize) {
    // Counts and record sizes are far below 4 GiB (records are bounded by the log).
    b.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    put_len32(b, v.len());
    b.put_slice(v);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Client ids and filters come off the wire as MQTT strings: at most 65535 bytes.
    b.put_u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
    b.put_slice(s.as_bytes());
}

fn need(b: &Bytes, n: usize) -> Result<(), SnapshotError> {
    if b.remaining() < n {
        return Err(SnapshotError::Truncated);
    }
    Ok(())
}

fn get_u8(b: &mut Bytes) -> Result<u8, SnapshotError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Result<u16, SnapshotError> {
    need(b, 2)?;
    Ok(b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Result<u32, SnapshotError> {
    need(b, 4)?;
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Result<u64, SnapshotError> {
    need(b, 8)?;
    Ok(b.get_u64())
}

fn get_qos(b: &mut Bytes) -> Result<QoS, SnapshotError> {
    QoS::from_u8(get_u8(b)?).ok_or(SnapshotError::Malformed("QoS"))
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, SnapshotError> {
    let n = get_u32(b)? as usize;
    need(b, n)?;
    Ok(b.split_to(n))
}

fn get_str(b: &mut Bytes) -> Result<String, SnapshotError> {
    let n = usize::from(get_u16(b)?);
    need(b, n)?;
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| SnapshotError::Malformed("UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Snapshot {
        Snapshot {
            retained: vec![Bytes::from_static(b"r1"), Bytes::new()],
            sessions: vec![
                SavedSession {
                    client_id: "dev-1".into(),
                    filters: vec![
                        ("a/#".into(), QoS::ExactlyOnce),
                        ("b".into(), QoS::AtMostOnce),
                    ],
                    resume: Offset(42),
                    retained: vec![(Bytes::from_static(b"ret"), QoS::AtLeastOnce)],
                    inflight: vec![
                        SavedInflight {
                            pkid: 7,
                            qos: QoS::AtLeastOnce,
                            released: false,
                            offset: Some(Offset(40)),
                            record: Bytes::from_static(b"m40"),
                        },
                        SavedInflight {
                            pkid: 8,
                            qos: QoS::ExactlyOnce,
                            released: true,
                            offset: None,
                            record: Bytes::from_static(b"x"),
                        },
                    ],
                    incoming_qos2: vec![3, 65535],
                },
                SavedSession {
                    client_id: String::new(),
                    filters: vec![],
                    resume: Offset(0),
                    retained: vec![],
                    inflight: vec![],
                    incoming_qos2: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
        assert_eq!(
            Snapshot::decode(&Snapshot::default().encode()),
            Ok(Snapshot::default())
        );
    }

    #[test]
    fn rejects_other_files_and_damage() {
        assert_eq!(Snapshot::decode(b""), Err(SnapshotError::Format));
        assert_eq!(
            Snapshot::decode(b"rumq-sessions 2\n"),
            Err(SnapshotError::Format)
        );
        let bytes = sample().encode();
        for cut in MAGIC.len()..bytes.len() {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Snapshot::decode(&longer).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(tail);
            let _ = Snapshot::decode(&bytes);
        }
    }
}
