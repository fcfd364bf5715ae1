//! Arbitrary bytes into the commitlog's record framing (`commitlog::record`), which
//! recovery and reads run over whatever is on disk. Also checks that a frame built by
//! `Framed::new` always decodes back as a record of its payload's length.
//!
//! Input: the first 4 bytes (LE) are `record_bytes_max`, the rest is the buffer.
#![no_main]

use commitlog::record::{self, Frame, Framed, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fn check(buf: &[u8], max: u32) {
    let verified = record::decode(buf, max);
    let unverified = record::decode_with(buf, max, false);
    match verified {
        Frame::Record { len } => {
            assert!(len <= max as usize);
            assert!(HEADER_BYTES + len <= buf.len());
            // Skipping the CRC never changes a good record's answer.
            assert_eq!(unverified, verified);
        }
        Frame::Incomplete { needed } => {
            assert!(needed > buf.len());
            assert_eq!(unverified, verified);
        }
        Frame::Corrupt => {
            // Either the length is over the maximum (unverified says so too) or
            // only the checksum failed (unverified accepts the framing).
            assert!(matches!(unverified, Frame::Corrupt | Frame::Record { .. }));
        }
    }
    if let Frame::Record { len } = unverified {
        assert!(len <= max as usize);
        assert!(HEADER_BYTES + len <= buf.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let (max, rest) = match data {
        [a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]), rest),
        _ => (0, data),
    };
    check(data, u32::MAX);
    check(data, 1024);
    check(rest, max);

    // Round trip: any payload framed by the producer decodes as itself.
    let f = Framed::new(rest);
    let len = rest.len();
    let limit = u32::try_from(len).unwrap_or(u32::MAX);
    assert_eq!(record::decode(f.frame(), limit), Frame::Record { len });
    assert_eq!(record::decode(f.frame(), u32::MAX), Frame::Record { len });
    assert_eq!(record::decode_with(f.frame(), limit, false), Frame::Record { len });
    assert_eq!(&f.payload()[..], rest);
    assert_eq!(f.payload_len(), len);
    // Trailing bytes (the next record) do not change the answer.
    let mut longer = f.frame().to_vec();
    longer.extend_from_slice(data);
    assert_eq!(record::decode(&longer, limit), Frame::Record { len });
    // Any truncation is incomplete, never a record or corrupt.
    if len > 0 {
        assert_eq!(
            record::decode(&f.frame()[..f.frame().len() - 1], limit),
            Frame::Incomplete { needed: HEADER_BYTES + len }
        );
    }
});
