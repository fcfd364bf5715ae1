//! Record framing in a segment's data file.
//!
//! ```text
//! +----------------+----------------+---------------------+
//! | len: u32 LE    | crc: u32 LE    | payload: len bytes  |
//! +----------------+----------------+---------------------+
//! crc = CRC32C(len as 4 LE bytes ++ payload)
//! ```
//!
//! The length is inside the checksum so a zero-filled region (what a file extended but
//! never written reads as) never decodes as a valid empty record: CRC32C of four zero
//! bytes is not zero.

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
    h[..4].copy_from_slice(&len_u32(payload).to_le_bytes());
    h[4..].copy_from_slice(&checksum(payload).to_le_bytes());
    h
}

/// Payload lengths are checked against `record_bytes_max` (a `u32`) before any record
/// is framed, so this conversion cannot saturate for a payload that reaches the disk.
fn len_u32(payload: &[u8]) -> u32 {
    u32::try_from(payload.len()).unwrap_or(u32::MAX)
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

/// Decode the frame at the start of `buf`.
#[must_use]
pub fn decode(buf: &[u8], record_bytes_max: u32) -> Frame {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Frame::Incomplete {
            needed: HEADER_BYTES,
        };
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > record_bytes_max {
        return Frame::Corrupt;
    }
    let len = len as usize;
    let Some(payload) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Frame::Incomplete {
            needed: HEADER_BYTES + len,
        };
    };
    if checksum(payload) != crc {
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
