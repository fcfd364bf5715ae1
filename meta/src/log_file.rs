//! The Raft log file's records, and what a crash can leave of them.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | `len`: payload length, u32 little-endian |
//! | 4 | CRC32C of `len`'s 4 bytes then the payload, u32 little-endian |
//! | `len` | payload: one Raft entry as JSON |
//!
//! The length sits inside the CRC so a flipped length bit is caught, not followed.
//! Records are only ever appended, cut at a record boundary (`truncate`) or rewritten
//! whole through a rename (`purge`), so a crash can only leave a torn last record:
//! short of its header or payload, whole-length with a payload that never landed, or
//! a file size grown over zeros that were never written.
//! [`scan`] drops such a tail; a bad record with more bytes after it is corruption.

use std::ops::Range;

/// Bytes before a record's payload.
pub(crate) const HEADER_BYTES: usize = 8;
/// The largest payload written; a larger length is corruption (metadata entries are
/// hundreds of bytes).
pub(crate) const PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// Appends one framed record holding `payload` to `out`.
pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(
        payload.len() <= PAYLOAD_BYTES_MAX,
        "a metadata entry of {} bytes",
        payload.len()
    );
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What [`scan`] found in a file's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Each whole record: where it starts and where its payload lies.
    pub(crate) records: Vec<(u64, Range<usize>)>,
    /// Where the whole records end; bytes past it are a torn tail to cut.
    pub(crate) valid_bytes: u64,
}

/// A record that cannot be a torn tail: it has bytes after it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Corrupt {
    /// Where the record starts.
    pub(crate) offset: u64,
    /// What is wrong with it.
    pub(crate) reason: String,
}

/// Reads every record of `bytes`, dropping a torn last one.
pub(crate) fn scan(bytes: &[u8]) -> Result<Scan, Corrupt> {
    let mut records = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= HEADER_BYTES {
        let (len, crc) = header(&bytes[pos..pos + HEADER_BYTES]);
        let offset = pos as u64;
        if len > PAYLOAD_BYTES_MAX {
            return Err(Corrupt {
                offset,
                reason: format!("record length {len} above {PAYLOAD_BYTES_MAX}"),
            });
        }
        let payload = pos + HEADER_BYTES..pos + HEADER_BYTES + len;
        if payload.end > bytes.len() {
            break; // torn: the payload never fully landed
        }
        let len_bytes = &bytes[pos..pos + 4];
        if crc32c::crc32c_append(crc32c::crc32c(len_bytes), &bytes[payload.clone()]) != crc {
            if payload.end == bytes.len() || bytes[pos..].iter().all(|b| *b == 0) {
                break; // torn: the last record's bytes, or a size grown ahead of them, never landed
            }
            return Err(Corrupt {
                offset,
                reason: "checksum mismatch with records after it".to_string(),
            });
        }
        pos = payload.end;
        records.push((offset, payload));
    }
    Ok(Scan {
        records,
        valid_bytes: pos as u64,
    })
}

fn header(bytes: &[u8]) -> (usize, u32) {
    let mut len = [0; 4];
    let mut crc = [0; 4];
    len.copy_from_slice(&bytes[..4]);
    crc.copy_from_slice(&bytes[4..8]);
    (u32::from_le_bytes(len) as usize, u32::from_le_bytes(crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            frame(payload, &mut out);
        }
        out
    }

    fn payloads(bytes: &[u8], scan: &Scan) -> Vec<Vec<u8>> {
        scan.records
            .iter()
            .map(|(_, range)| bytes[range.clone()].to_vec())
            .collect()
    }

    #[test]
    fn whole_records_read_back_in_order() {
        let bytes = file(&[b"one", b"", b"three"]);
        let scan = scan(&bytes).unwrap();
        assert_eq!(
            payloads(&bytes, &scan),
            [b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert_eq!(scan.valid_bytes, bytes.len() as u64);
        assert_eq!(scan.records[1].0, (HEADER_BYTES + 3) as u64);
    }

    #[test]
    fn a_record_cut_anywhere_is_a_torn_tail_dropped_at_its_start() {
        let whole = file(&[b"kept", b"torn away"]);
        let kept = (HEADER_BYTES + 4) as u64;
        for cut in kept as usize..whole.len() {
            let scan = scan(&whole[..cut]).unwrap();
            assert_eq!(scan.records.len(), 1, "cut at {cut}");
            assert_eq!(scan.valid_bytes, kept, "cut at {cut}");
        }
    }

    #[test]
    fn a_last_record_whose_payload_never_landed_is_a_torn_tail() {
        let mut bytes = file(&[b"kept", b"zeroed"]);
        let end = bytes.len();
        bytes[end - 6..].fill(0);
        let scan = scan(&bytes).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.valid_bytes, (HEADER_BYTES + 4) as u64);
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let mut bytes = file(&[b"kept"]);
        bytes.extend_from_slice(&[0; 100]);
        let scan = scan(&bytes).unwrap();
        assert_eq!(
            (scan.records.len(), scan.valid_bytes),
            (1, (HEADER_BYTES + 4) as u64)
        );
    }

    #[test]
    fn a_bad_checksum_with_records_after_it_is_corruption_at_its_offset() {
        let mut bytes = file(&[b"first", b"flipped", b"last"]);
        let second = HEADER_BYTES + 5;
        bytes[second + HEADER_BYTES] ^= 1;
        let err = scan(&bytes).unwrap_err();
        assert_eq!(err.offset, second as u64);
    }

    #[test]
    fn a_flipped_length_bit_is_caught_by_the_checksum() {
        let mut bytes = file(&[b"first", b"second", b"third"]);
        bytes[0] ^= 1; // "first" now claims 4 bytes: its CRC fails, and bytes follow
        assert_eq!(scan(&bytes).unwrap_err().offset, 0);
    }

    #[test]
    fn an_absurd_length_is_corruption() {
        let mut bytes = file(&[b"x"]);
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 64]);
        assert!(scan(&bytes).unwrap_err().reason.contains("length"));
    }
}
