//! Record framing in a segment's data file.
//!
//! ```text
//! +----------------+----------------+---------------------+
//! | crc: u32 LE    | len: u32 LE    | payload: len bytes  |
//! +----------------+----------------+---------------------+
//! crc = CRC32C(bytes 4 .. 8 + len), i.e. of the length field followed by the payload
//! ```
//!
//! The length is inside the checksum so a zero-filled region (what a file extended but
//! never written reads as) never decodes as a valid empty record: CRC32C of four zero
//! bytes is not zero. The checksum comes first so that what it covers is contiguous
//! and is checked with one call.

/// Bytes of framing in front of every payload.
pub const HEADER_BYTES: usize = 8;

/// The checksum stored for `payload`.
#[must_use]
pub fn checksum(payload: &[u8]) -> u32 {
    let len = len_u32(payload).to_le_bytes();
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

/// The 8-byte header for `payload`.
#[must_use]
pub fn encode_header(payload: &[u8]) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&checksum(payload).to_le_bytes());
    h[4..].copy_from_slice(&len_u32(payload).to_le_bytes());
    h
}

/// Append the whole frame of `payload` to `buf` (one checksum pass over the bytes
/// just copied, which are hot in cache).
pub fn encode_into(buf: &mut Vec<u8>, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&len_u32(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Payload lengths are checked against `record_bytes_max` (a `u32`) before the log
/// frames a record, so this fails only for a payload no log takes (a [`Framed::new`]
/// of 4 GiB or more, which `Log::append_framed` refuses by its real length): loud in
/// debug builds; in release that frame says `u32::MAX`, as no function here can
/// return an error.
fn len_u32(payload: &[u8]) -> u32 {
    let len = u32::try_from(payload.len());
    if len.is_err() {
        tracing::error!(
            len = payload.len(),
            "payload too long for a frame's u32 length; the log refuses it"
        );
    }
    debug_assert!(len.is_ok(), "payload of {} bytes framed", payload.len());
    len.unwrap_or(u32::MAX)
}

/// A record framed by its producer: header and payload in one buffer, ready to be
/// written as is. Producers on other threads (the broker's connection tasks) build
/// these so that the checksum is computed off the log's thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed(bytes::Bytes);

impl Framed {
    /// Frame a payload (one allocation, one copy, one checksum pass).
    #[must_use]
    pub fn new(payload: &[u8]) -> Framed {
        let mut v = Vec::with_capacity(HEADER_BYTES + payload.len());
        encode_into(&mut v, payload);
        Framed(bytes::Bytes::from(v))
    }

    /// Seal a buffer whose first `HEADER_BYTES` were reserved (any value) and whose
    /// payload follows: the header is filled in. `None` if it is shorter than a header
    /// or its payload is longer than `u32::MAX`.
    #[must_use]
    pub fn seal(mut buf: bytes::BytesMut) -> Option<Framed> {
        if buf.len() < HEADER_BYTES {
            return None;
        }
        let len = u32::try_from(buf.len() - HEADER_BYTES).ok()?;
        buf[4..8].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        Some(Framed(buf.freeze()))
    }

    /// The whole frame.
    #[must_use]
    pub fn frame(&self) -> &[u8] {
        &self.0
    }

    /// The payload, without copying.
    #[must_use]
    pub fn payload(&self) -> bytes::Bytes {
        self.0.slice(HEADER_BYTES..)
    }

    /// Payload length.
    #[must_use]
    pub fn payload_len(&self) -> usize {
        self.0.len() - HEADER_BYTES
    }

    /// Split `buf`, records framed back to back as a log stores them (what a
    /// replica fetches), into frames, each one checked as recovery checks it: a
    /// length over `record_bytes_max`, a checksum that fails, or a buffer that ends
    /// inside a frame refuses the whole buffer. No copy: the frames share `buf`.
    pub fn split(buf: &bytes::Bytes, record_bytes_max: u32) -> Result<Vec<Framed>, BadFrames> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            match decode(&buf[at..], record_bytes_max) {
                Frame::Record { len } => {
                    out.push(Framed(buf.slice(at..at + HEADER_BYTES + len)));
                    at += HEADER_BYTES + len;
                }
                Frame::Incomplete { .. } => {
                    return Err(BadFrames {
                        at,
                        what: "truncated",
                    })
                }
                Frame::Corrupt => {
                    return Err(BadFrames {
                        at,
                        what: "corrupt",
                    })
                }
            }
        }
        Ok(out)
    }
}

/// Framed records that do not check (see [`Framed::split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("framed records {what} at byte {at}")]
pub struct BadFrames {
    /// Where the bad frame starts in the buffer.
    pub at: usize,
    /// `"corrupt"` (checksum or length) or `"truncated"`.
    pub what: &'static str,
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete record whose checksum matches: the payload is
    /// `buf[HEADER_BYTES..HEADER_BYTES + len]`.
    Record {
        /// Payload length.
        len: usize,
    },
    /// The buffer ends before the record does; `needed` is the whole frame's length
    /// (header plus payload) when the header was complete, else `HEADER_BYTES`.
    Incomplete {
        /// Bytes the whole frame needs.
        needed: usize,
    },
    /// The header is impossible (length over the maximum) or the checksum fails.
    Corrupt,
}

/// Decode and verify the frame at the start of `buf`.
#[must_use]
pub fn decode(buf: &[u8], record_bytes_max: u32) -> Frame {
    decode_with(buf, record_bytes_max, true)
}

/// Decode the frame at the start of `buf`; `verify` checks the CRC (recovery always
/// does; reads do when `verify_reads` is set).
#[must_use]
pub fn decode_with(buf: &[u8], record_bytes_max: u32, verify: bool) -> Frame {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Frame::Incomplete {
            needed: HEADER_BYTES,
        };
    };
    let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    // An all-zero header is never a record (the CRC of a zero length is not zero):
    // it is a hole or preallocated space, and must not pass as an empty record when
    // the CRC is not checked.
    if len > record_bytes_max || (crc == 0 && len == 0) {
        return Frame::Corrupt;
    }
    let len = len as usize;
    let Some(covered) = buf.get(4..HEADER_BYTES + len) else {
        return Frame::Incomplete {
            needed: HEADER_BYTES + len,
        };
    };
    if verify && crc32c::crc32c(covered) != crc {
        return Frame::Corrupt;
    }
    Frame::Record { len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = encode_header(payload).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn zeros_are_never_a_record_but_an_empty_record_is() {
        assert_eq!(decode_with(&[0u8; 64], 1024, false), Frame::Corrupt);
        assert_eq!(decode_with(&[0u8; 64], 1024, true), Frame::Corrupt);
        let empty = frame(b"");
        assert_eq!(decode_with(&empty, 1024, false), Frame::Record { len: 0 });
        assert_eq!(decode_with(&empty, 1024, true), Frame::Record { len: 0 });
    }

    #[test]
    fn framed_and_sealed_match() {
        let mut b = bytes::BytesMut::from(&[0xeeu8; HEADER_BYTES][..]);
        b.extend_from_slice(b"payload");
        let sealed = Framed::seal(b).unwrap();
        assert_eq!(sealed, Framed::new(b"payload"));
        assert_eq!(sealed.frame(), &frame(b"payload")[..]);
        assert_eq!(&sealed.payload()[..], b"payload");
        assert!(Framed::seal(bytes::BytesMut::from(&b"short"[..])).is_none());
    }

    #[test]
    fn encode_into_matches_header_plus_payload() {
        let mut buf = vec![9u8];
        encode_into(&mut buf, b"abc");
        assert_eq!(&buf[1..], &frame(b"abc")[..]);
    }

    #[test]
    fn unverified_decode_only_checks_framing() {
        let mut f = frame(b"hello");
        f[9] ^= 1;
        assert_eq!(decode(&f, 1024), Frame::Corrupt);
        assert_eq!(decode_with(&f, 1024, false), Frame::Record { len: 5 });
    }

    #[test]
    fn zeros_are_never_a_record() {
        assert_eq!(decode(&[0u8; 64], 1024), Frame::Corrupt);
    }

    #[test]
    fn empty_payload_round_trips() {
        assert_eq!(decode(&frame(b""), 1024), Frame::Record { len: 0 });
    }

    #[test]
    fn short_buffers_are_incomplete() {
        let f = frame(b"hello");
        assert_eq!(decode(&f[..3], 1024), Frame::Incomplete { needed: 8 });
        assert_eq!(decode(&f[..10], 1024), Frame::Incomplete { needed: 13 });
    }

    #[test]
    fn oversized_length_is_corrupt() {
        assert_eq!(decode(&frame(&[7u8; 100]), 99), Frame::Corrupt);
    }

    #[test]
    fn split_gives_back_the_frames_and_refuses_a_bad_one() {
        let mut buf = frame(b"one");
        buf.extend_from_slice(&frame(b""));
        buf.extend_from_slice(&frame(b"three"));
        let buf = bytes::Bytes::from(buf);
        let frames = Framed::split(&buf, 1024).unwrap();
        let payloads: Vec<_> = frames.iter().map(Framed::payload).collect();
        assert_eq!(payloads, [&b"one"[..], b"", b"three"]);
        assert_eq!(frames[2], Framed::new(b"three"));
        assert_eq!(
            Framed::split(&buf.slice(..buf.len() - 1), 1024),
            Err(BadFrames {
                at: 19,
                what: "truncated"
            })
        );
        let mut flipped = buf.to_vec();
        flipped[HEADER_BYTES + 1] ^= 1;
        assert_eq!(
            Framed::split(&bytes::Bytes::from(flipped), 1024),
            Err(BadFrames {
                at: 0,
                what: "corrupt"
            })
        );
        assert_eq!(Framed::split(&bytes::Bytes::new(), 1024), Ok(Vec::new()));
    }

    proptest! {
        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let f = frame(&payload);
            prop_assert_eq!(decode(&f, 1024), Frame::Record { len: payload.len() });
        }

        #[test]
        fn any_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..256),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut f = frame(&payload);
            let i = bit.index(f.len() * 8);
            f[i / 8] ^= 1 << (i % 8);
            prop_assert_ne!(decode(&f, 1 << 20), Frame::Record { len: payload.len() });
        }
    }
}
