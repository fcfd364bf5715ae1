//! Reading a log directory without opening it: what `rumq-broker log inspect` and
//! `log tail` show. Nothing here writes, repairs or locks anything, so it is safe to
//! point at the directory of a running broker (what it reads may then end in the
//! middle of a record being written: that is reported as a torn end).
//!
//! Every record's CRC is checked. A segment is read a chunk (1 MiB) at a time. A segment's bytes after its last record are
//! classified: none (the end of the file), zeros (space preallocated for appends),
//! a torn record (a frame that runs past the end of the file: a write cut short),
//! or corruption (anything else, with its position).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

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

/// Bytes read from a segment at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Walk the segment at `path` (base offset `base`), calling `each` with every intact
/// record's offset and payload, and report what was found. Records longer than
/// `record_bytes_max` count as corruption. Reads the file a chunk at a time: memory
/// is a chunk, or the largest record.
pub fn scan_segment(
    path: &Path,
    base: Offset,
    record_bytes_max: u32,
    mut each: impl FnMut(Offset, Bytes),
) -> Result<SegmentReport> {
    let mut r = Chunks::open(path)?;
    let mut at = 0u64;
    let mut records = 0u64;
    let tail = loop {
        r.fill(HEADER_BYTES)?;
        if r.buf.is_empty() {
            break Tail::Clean;
        }
        match record::decode(&r.buf, record_bytes_max) {
            Frame::Record { len } => {
                let frame = r.buf.split_to(HEADER_BYTES + len).freeze();
                each(base.add(records), frame.slice(HEADER_BYTES..));
                records += 1;
                at += (HEADER_BYTES + len) as u64;
            }
            Frame::Incomplete { needed } if !r.eof => r.fill(needed)?,
            frame => {
                if let Some(bytes) = r.rest_if_zeros()? {
                    break Tail::Zeros { bytes };
                }
                break match frame {
                    Frame::Incomplete { .. } => Tail::Torn { at },
                    _ => Tail::Corrupt { at },
                };
            }
        }
    };
    Ok(SegmentReport {
        path: path.into(),
        base,
        records,
        bytes: at,
        tail,
    })
}

/// A segment file read a chunk at a time.
struct Chunks<'a> {
    file: File,
    path: &'a Path,
    buf: BytesMut,
    eof: bool,
}

impl<'a> Chunks<'a> {
    fn open(path: &'a Path) -> Result<Chunks<'a>> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        Ok(Chunks {
            file,
            path,
            buf: BytesMut::new(),
            eof: false,
        })
    }

    /// Read until `buf` holds `n` bytes, or the file ends.
    fn fill(&mut self, n: usize) -> Result<()> {
        while self.buf.len() < n && !self.eof {
            let want = (n - self.buf.len()).max(CHUNK_BYTES);
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let got = self
                .file
                .read(&mut self.buf[start..])
                .map_err(|e| Error::io("read", self.path, e))?;
            self.buf.truncate(start + got);
            self.eof = got == 0;
        }
        Ok(())
    }

    /// Whether everything left (in `buf` and the rest of the file) is zeros: how many
    /// bytes, if so.
    fn rest_if_zeros(&mut self) -> Result<Option<u64>> {
        let mut bytes = 0u64;
        loop {
            if self.buf.iter().any(|b| *b != 0) {
                return Ok(None);
            }
            bytes += self.buf.len() as u64;
            self.buf.clear();
            if self.eof {
                return Ok(Some(bytes));
            }
            self.fill(CHUNK_BYTES)?;
        }
    }
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

    #[test]
    fn records_and_zeros_across_chunks_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let sizes = [600 * 1024, 1536 * 1024, 10, 700 * 1024];
        let mut bytes = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            record::encode_into(&mut bytes, &vec![i as u8 + 1; *n]);
        }
        let data_len = bytes.len() as u64;
        bytes.resize(bytes.len() + 2 * CHUNK_BYTES + 512, 0);
        std::fs::write(&path, &bytes).unwrap();
        let mut seen = Vec::new();
        let r = scan_segment(&path, Offset(0), 4 << 20, |o, p| {
            seen.push((o.0, p.len(), p[0]))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, sizes[0], 1),
                (1, sizes[1], 2),
                (2, sizes[2], 3),
                (3, sizes[3], 4)
            ]
        );
        assert_eq!(
            (r.bytes, r.tail),
            (
                data_len,
                Tail::Zeros {
                    bytes: 2 * CHUNK_BYTES as u64 + 512
                }
            )
        );
    }
}
