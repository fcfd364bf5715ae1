//! Recovery: working out, from what is on disk, how much of a segment is intact.
//!
//! The data file is the source of truth. Its frames carry a length and a CRC32C, so
//! walking them from a known-good position finds exactly the records that were
//! completely written. Recovery never trusts the index past what the data confirms:
//!
//! - A segment that was not closed cleanly (the active one after a crash) is scanned
//!   from its first byte; its index is rebuilt from the scan.
//! - Any other segment is checked cheaply: every index entry must be plausible
//!   (strictly increasing, inside the data) and the frames from the last entry must
//!   end exactly at the end of the file. If not, it is scanned in full.
//! - Bytes after the last intact frame (a torn write, zeros, garbage) are cut off.
//!
//! What was repaired is reported through `tracing` at `warn` level.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::index::{Entry, Index};
use crate::record::{self, Frame, HEADER_BYTES};

/// Bytes read per system call while scanning.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// At the end of the data: every byte belongs to an intact record.
    End,
    /// At a frame that runs past the end of the file (a torn write).
    Torn,
    /// At a frame whose length is impossible or whose checksum fails.
    Corrupt,
}

/// The result of walking the frames of a data file.
#[derive(Debug)]
pub struct Scan {
    /// Index entries for the scanned records, by the sparse/dense policy, starting
    /// with the entry for the first scanned record (if any).
    pub entries: Vec<Entry>,
    /// Position just after the last intact record.
    pub end: u64,
    /// Relative offset just after the last intact record.
    pub next_rel: u32,
    /// Data bytes since the last index entry at `end` (to continue the policy).
    pub bytes_since_entry: u64,
    /// Why it stopped.
    pub stop: Stop,
}

/// How index entries are chosen, and the largest valid record.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// 0: an entry per record.
    pub index_interval_bytes: u32,
    /// Frames claiming more are corrupt.
    pub record_bytes_max: u32,
    /// Check CRCs on reads too (recovery always checks them).
    pub verify_reads: bool,
}

impl Policy {
    /// Whether the record at relative offset `rel` gets an index entry.
    pub fn wants_entry(&self, rel: u32, bytes_since_entry: u64) -> bool {
        rel == 0 || bytes_since_entry >= u64::from(self.index_interval_bytes)
    }
}

/// Walk frames from `from` (a record boundary) to `data_len`.
pub fn scan(file: &File, path: &Path, from: Entry, data_len: u64, policy: Policy) -> Result<Scan> {
    let mut entries = Vec::new();
    let mut pos = u64::from(from.pos);
    let mut rel = from.rel;
    let mut since = 0u64;
    let mut first = true;
    let mut buf: Vec<u8> = Vec::new();
    let stop = 'outer: loop {
        if pos >= data_len {
            break Stop::End;
        }
        let want = (data_len - pos).min(SCAN_CHUNK_BYTES as u64) as usize;
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io("read data", path, e))?;
        let mut i = 0usize;
        loop {
            match record::decode(&buf[i..], policy.record_bytes_max) {
                Frame::Record { len } => {
                    if first || policy.wants_entry(rel, since) {
                        // Segments we write are at most u32::MAX bytes: a record
                        // further on is in a file we did not write.
                        let at = pos + i as u64;
                        let Ok(entry_pos) = u32::try_from(at) else {
                            return Err(Error::NotALog {
                                path: path.to_path_buf(),
                                reason: format!(
                                    "a record starts at byte {at}, beyond the {} bytes a segment index can address",
                                    u32::MAX
                                ),
                            });
                        };
                        entries.push(Entry {
                            rel,
                            pos: entry_pos,
                        });
                        since = 0;
                        first = false;
                    }
                    let frame = HEADER_BYTES + len;
                    since += frame as u64;
                    i += frame;
                    rel += 1;
                    if i == buf.len() {
                        pos += i as u64;
                        continue 'outer;
                    }
                }
                Frame::Incomplete { needed } => {
                    let at = pos + i as u64;
                    if at + needed as u64 > data_len {
                        pos = at;
                        break 'outer Stop::Torn;
                    }
                    if i == 0 {
                        // One frame bigger than a chunk: read it whole.
                        buf.resize(needed, 0);
                        file.read_exact_at(&mut buf, at)
                            .map_err(|e| Error::io("read data", path, e))?;
                        continue;
                    }
                    pos = at;
                    continue 'outer;
                }
                Frame::Corrupt => {
                    pos += i as u64;
                    break 'outer Stop::Corrupt;
                }
            }
        }
    };
    Ok(Scan {
        entries,
        end: pos,
        next_rel: rel,
        bytes_since_entry: since,
        stop,
    })
}

/// What recovery decided for one segment.
#[derive(Debug)]
pub struct Recovered {
    /// Length of the intact data.
    pub data_len: u64,
    /// Records in the segment.
    pub records: u32,
    /// Data bytes since the last index entry.
    pub bytes_since_entry: u64,
    /// `Some(entries)` when the index must be rewritten with exactly these.
    pub rebuilt_index: Option<Vec<Entry>>,
}

/// Decide how much of a segment is intact. `index` is the index found on disk (if
/// any); `clean` says whether the segment was closed cleanly, so that its index may be
/// trusted after the cheap check.
pub fn recover_segment(
    data: &File,
    data_path: &Path,
    index: Option<&Index>,
    clean: bool,
    policy: Policy,
) -> Result<Recovered> {
    let file_len = data
        .metadata()
        .map_err(|e| Error::io("stat data", data_path, e))?
        .len();

    if clean {
        if let Some(index) = index {
            let plausible = index.plausible_prefix(file_len);
            if plausible == index.len() {
                let from = index.last().unwrap_or(Entry { rel: 0, pos: 0 });
                let s = scan(data, data_path, from, file_len, policy)?;
                // Intact to the end, and the index already has every entry the
                // policy asks for (the scan's first entry is the index's last one).
                if s.stop == Stop::End
                    && s.entries.len() <= 1
                    && (!index.is_empty() || s.next_rel == 0)
                {
                    return Ok(Recovered {
                        data_len: file_len,
                        records: s.next_rel,
                        bytes_since_entry: s.bytes_since_entry,
                        rebuilt_index: None,
                    });
                }
            }
            tracing::warn!(
                segment = %data_path.display(),
                "index disagrees with data file; scanning the whole segment"
            );
        }
    }

    let s = scan(data, data_path, Entry { rel: 0, pos: 0 }, file_len, policy)?;
    if s.end < file_len {
        tracing::warn!(
            segment = %data_path.display(),
            intact_bytes = s.end,
            dropped_bytes = file_len - s.end,
            records = s.next_rel,
            reason = ?s.stop,
            "cutting off a torn or corrupt tail"
        );
    } else if !clean {
        tracing::info!(
            segment = %data_path.display(),
            records = s.next_rel,
            "recovered unclosed segment; rebuilt its index"
        );
    }
    Ok(Recovered {
        data_len: s.end,
        records: s.next_rel,
        bytes_since_entry: s.bytes_since_entry,
        rebuilt_index: Some(s.entries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const POLICY: Policy = Policy {
        index_interval_bytes: 0,
        record_bytes_max: 1 << 20,
        verify_reads: true,
    };

    fn write_frames(path: &Path, payloads: &[&[u8]]) -> Vec<u8> {
        let mut all = Vec::new();
        for p in payloads {
            all.extend_from_slice(&record::encode_header(p));
            all.extend_from_slice(p);
        }
        std::fs::File::create(path)
            .unwrap()
            .write_all(&all)
            .unwrap();
        all
    }

    #[test]
    fn scan_stops_at_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let all = write_frames(&p, &[b"one", b"two", b"three"]);
        let f = File::options().read(true).write(true).open(&p).unwrap();
        f.set_len(all.len() as u64 - 2).unwrap();
        let r = recover_segment(&f, &p, None, false, POLICY).unwrap();
        assert_eq!(r.records, 2);
        assert_eq!(r.data_len, 11 + 11);
        assert_eq!(r.rebuilt_index.unwrap().len(), 2);
    }

    #[test]
    fn scan_stops_at_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let mut all = write_frames(&p, &[b"one"]);
        all.extend_from_slice(&[0u8; 100]);
        std::fs::write(&p, &all).unwrap();
        let f = File::open(&p).unwrap();
        let s = scan(&f, &p, Entry { rel: 0, pos: 0 }, all.len() as u64, POLICY).unwrap();
        assert_eq!((s.next_rel, s.end, s.stop), (1, 11, Stop::Corrupt));
    }

    #[test]
    fn sparse_policy_spaces_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let payloads: Vec<&[u8]> = vec![&[1u8; 92]; 10]; // 100-byte frames
        let all = write_frames(&p, &payloads);
        let f = File::open(&p).unwrap();
        let policy = Policy {
            index_interval_bytes: 250,
            ..POLICY
        };
        let s = scan(&f, &p, Entry { rel: 0, pos: 0 }, all.len() as u64, policy).unwrap();
        let rels: Vec<u32> = s.entries.iter().map(|e| e.rel).collect();
        assert_eq!(rels, vec![0, 3, 6, 9]);
    }

    #[test]
    fn a_frame_larger_than_a_chunk_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let big = vec![9u8; SCAN_CHUNK_BYTES + 100];
        let all = write_frames(&p, &[b"a", &big, b"b"]);
        let f = File::open(&p).unwrap();
        let policy = Policy {
            record_bytes_max: 1 << 24,
            ..POLICY
        };
        let s = scan(&f, &p, Entry { rel: 0, pos: 0 }, all.len() as u64, policy).unwrap();
        assert_eq!((s.next_rel, s.stop), (3, Stop::End));
    }
}
