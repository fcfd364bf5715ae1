//! Reading a log directory without opening it: what `rumq-broker log inspect` and
//! `log tail` show. Nothing here writes, repairs or locks anything, so it is safe to
//! point at the directory of a running broker (what it reads may then end in the
//! middle of a record being written: that is reported as a torn end).
//!
//! Every record's CRC is checked. A segment's bytes after its last record are
//! classified: none (the end of the file), zeros (space preallocated for appends),
//! a torn record (a frame that runs past the end of the file: a write cut short),
//! or corruption (anything else, with its position).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::offset::Offset;
use crate::record::{self, Frame, HEADER_BYTES};
use crate::segment::{parse_file_name, FileKind};
use crate::{Error, Result};

/// How a segment's data ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The last record ends the file.
    Clean,
    /// Zeros follow the last record: space preallocated for appends.
    Zeros {
        /// How many.
        bytes: u64,
    },
    /// A frame that runs past the end of the file follows (a write cut short).
    Torn {
        /// Where it starts.
        at: u64,
    },
    /// Bytes that are not a record follow, and not all of them are zeros.
    Corrupt {
        /// Where they start.
        at: u64,
    },
}

/// One segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The data file.
    pub path: PathBuf,
    /// The offset of its first record (from the file name).
    pub base: Offset,
    /// Intact records.
    pub records: u64,
    /// Bytes of intact records, framing included.
    pub bytes: u64,
    /// What follows them.
    pub tail: Tail,
}

impl SegmentReport {
    /// The offset after its last intact record.
    pub fn next(&self) -> Offset {
        self.base.add(self.records)
    }
}

/// The data files of the log in `dir`, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<(Offset, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        if let Some((base, FileKind::Data)) = name.to_str().and_then(parse_file_name) {
            found.push((base, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Walk the segment at `path` (base offset `base`), calling `each` with every intact
/// record's offset and payload, and report what was found. Records longer than
/// `record_bytes_max` count as corruption.
pub fn scan_segment(
    path: &Path,
    base: Offset,
    record_bytes_max: u32,
    mut each: impl FnMut(Offset, Bytes),
) -> Result<SegmentReport> {
    let data = read_all(path)?;
    let mut at = 0usize;
    let mut records = 0u64;
    let tail = loop {
        let rest = data.get(at..).unwrap_or_default();
        if rest.is_empty() {
            break Tail::Clean;
        }
        match record::decode(rest, record_bytes_max) {
            Frame::Record { len } => {
                let payload = data.slice(at + HEADER_BYTES..at + HEADER_BYTES + len);
                each(base.add(records), payload);
                records += 1;
                at += HEADER_BYTES + len;
            }
            _ if rest.iter().all(|b| *b == 0) => {
                break Tail::Zeros {
                    bytes: rest.len() as u64,
                }
            }
            Frame::Incomplete { .. } => break Tail::Torn { at: at as u64 },
            Frame::Corrupt => break Tail::Corrupt { at: at as u64 },
        }
    };
    Ok(SegmentReport {
        path: path.into(),
        base,
        records,
        bytes: at as u64,
        tail,
    })
}

fn read_all(path: &Path) -> Result<Bytes> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, LogConfig};

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes_max: 4096,
            record_bytes_max: 1024,
            ..LogConfig::default()
        }
    }

    #[test]
    fn a_written_log_reads_back_record_by_record_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        let payloads: Vec<Vec<u8>> = (0..100u32).map(|i| vec![i as u8; 100]).collect();
        for p in &payloads {
            log.append(Bytes::from(p.clone())).unwrap();
        }
        log.close().unwrap();
        let segs = segments(dir.path()).unwrap();
        assert!(segs.len() > 1, "{segs:?}");
        let mut seen = Vec::new();
        let mut next = Offset(0);
        for (base, path) in &segs {
            assert_eq!(*base, next);
            let r = scan_segment(path, *base, 1 << 20, |o, p| seen.push((o, p))).unwrap();
            assert!(matches!(r.tail, Tail::Clean | Tail::Zeros { .. }), "{r:?}");
            next = r.next();
        }
        assert_eq!(next, Offset(100));
        for (i, (o, p)) in seen.iter().enumerate() {
            assert_eq!((o.0, &p[..]), (i as u64, &payloads[i][..]));
        }
    }

    #[test]
    fn torn_and_corrupt_ends_are_told_apart_from_preallocated_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000007.log");
        let mut good = Vec::new();
        record::encode_into(&mut good, b"one");
        record::encode_into(&mut good, b"two");
        let scan = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            scan_segment(&path, Offset(7), 1024, |_, _| {}).unwrap()
        };
        let zeros = [&good[..], &[0u8; 64]].concat();
        assert_eq!(scan(&zeros).tail, Tail::Zeros { bytes: 64 });
        assert_eq!(scan(&zeros).next(), Offset(9));
        let mut torn = good.clone();
        record::encode_into(&mut torn, b"three, cut short");
        torn.truncate(torn.len() - 4);
        assert_eq!(
            scan(&torn).tail,
            Tail::Torn {
                at: good.len() as u64
            }
        );
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let r = scan(&flipped);
        assert_eq!((r.records, r.tail), (1, Tail::Corrupt { at: 11 }));
        assert_eq!(
            segments(dir.path()).unwrap(),
            vec![(Offset(7), path.clone())]
        );
    }
}
