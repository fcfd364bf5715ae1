//! A segment's offset index: an mmapped file of fixed-size entries.
//!
//! ```text
//! entry (8 bytes): | relative offset: u32 LE | position in data file: u32 LE |
//! ```
//!
//! The relative offset is `offset - segment base`. Entries are strictly increasing in
//! both fields. With `index_interval_bytes = 0` every record has an entry (dense);
//! otherwise an entry is written for the first record of a segment and then for the
//! first record after at least `index_interval_bytes` of data (sparse, as Kafka does).
//!
//! The active segment's index is preallocated to `index_bytes_max` and mapped
//! read-write; its length in entries is tracked in memory, never found by probing the
//! file. Sealing trims the file to its entries and maps it read-only. The data file is
//! the source of truth: recovery rebuilds an index from it whenever the two disagree.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};

use crate::error::{Error, Result};

/// Bytes per index entry.
pub const ENTRY_BYTES: usize = 8;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Offset relative to the segment's base offset.
    pub rel: u32,
    /// Byte position of the record's frame in the data file.
    pub pos: u32,
}

enum Map {
    /// Active: preallocated, writable.
    Write(MmapMut),
    /// Sealed: trimmed to its entries, read-only.
    Read(Mmap),
    /// A sealed index with no entries (a zero-length file cannot be mapped).
    Empty,
}

/// The index of one segment.
pub struct Index {
    path: PathBuf,
    /// Shared with the background sync of a seal (see `Segment::seal_unsynced`).
    file: Arc<File>,
    map: Map,
    len: usize,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Index {
    /// Create (or overwrite) an active index at `path` holding `entries`, preallocated
    /// to at least `bytes_max`.
    pub fn create_active(path: &Path, bytes_max: u64, entries: &[Entry]) -> Result<Index> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io("create index", path, e))?;
        let needed = (entries.len() * ENTRY_BYTES) as u64;
        let size = bytes_max.max(needed) / ENTRY_BYTES as u64 * ENTRY_BYTES as u64;
        file.set_len(size)
            .map_err(|e| Error::io("preallocate index", path, e))?;
        // SAFETY: the file is in a directory this process holds the lock of, so no
        // other process changes it, and we never shrink it while this map lives
        // (`seal` drops the map before `set_len`).
        let map =
            unsafe { MmapMut::map_mut(&file) }.map_err(|e| Error::io("mmap index", path, e))?;
        let mut index = Index {
            path: path.to_path_buf(),
            file: Arc::new(file),
            map: Map::Write(map),
            len: 0,
        };
        for e in entries {
            // Capacity was sized for `entries` above.
            let pushed = index.push(*e);
            if !pushed {
                tracing::error!(index = %path.display(), "rebuilt index entry left out: no room");
            }
            debug_assert!(pushed, "index sized for its entries");
        }
        Ok(index)
    }

    /// Open a sealed index file read-only. Its entries are checked by the caller
    /// (see `recovery`); a trailing partial entry is ignored.
    pub fn open_sealed(path: &Path) -> Result<Index> {
        let file = File::open(path).map_err(|e| Error::io("open index", path, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io("stat index", path, e))?
            .len();
        let map = if bytes < ENTRY_BYTES as u64 {
            Map::Empty
        } else {
            // SAFETY: as in `create_active`: the directory lock keeps other processes
            // out, and this process never writes a sealed index while it is mapped.
            Map::Read(unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap index", path, e))?)
        };
        let len = (bytes / ENTRY_BYTES as u64) as usize;
        Ok(Index {
            path: path.to_path_buf(),
            file: Arc::new(file),
            map,
            len,
        })
    }

    /// Write a sealed index holding exactly `entries` (after recovery rebuilt them).
    pub fn write_sealed(path: &Path, entries: &[Entry]) -> Result<Index> {
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES);
        for e in entries {
            bytes.extend_from_slice(&e.rel.to_le_bytes());
            bytes.extend_from_slice(&e.pos.to_le_bytes());
        }
        std::fs::write(path, &bytes).map_err(|e| Error::io("write index", path, e))?;
        Index::open_sealed(path)
    }

    fn bytes(&self) -> &[u8] {
        match &self.map {
            Map::Write(m) => m,
            Map::Read(m) => m,
            Map::Empty => &[],
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries the mapped file can hold.
    pub fn capacity(&self) -> usize {
        self.bytes().len() / ENTRY_BYTES
    }

    /// True when another entry does not fit.
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// The path of the index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The index file (for a background sync).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Entry `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<Entry> {
        if i >= self.len {
            return None;
        }
        let b = self.bytes().get(i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES)?;
        Some(Entry {
            rel: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            pos: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// The last entry.
    pub fn last(&self) -> Option<Entry> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    /// Append an entry; returns false (and stores nothing) when the index is full or
    /// sealed. The caller checks `is_full` first, so false is a bug it can report.
    pub fn push(&mut self, e: Entry) -> bool {
        let i = self.len;
        let Map::Write(m) = &mut self.map else {
            return false;
        };
        let Some(slot) = m.get_mut(i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES) else {
            return false;
        };
        slot[..4].copy_from_slice(&e.rel.to_le_bytes());
        slot[4..].copy_from_slice(&e.pos.to_le_bytes());
        self.len += 1;
        true
    }

    /// The number of leading entries that are plausible: strictly increasing and
    /// pointing inside `data_len`. Zeros left in a preallocated tail stop it.
    pub fn plausible_prefix(&self, data_len: u64) -> usize {
        let mut prev: Option<Entry> = None;
        for i in 0..self.len {
            let Some(e) = self.get(i) else { return i };
            let ordered = prev.is_none_or(|p| e.rel > p.rel && e.pos > p.pos);
            let first_ok = prev.is_some() || (e.rel == 0 && e.pos == 0);
            if !ordered || !first_ok || u64::from(e.pos) >= data_len {
                return i;
            }
            prev = Some(e);
        }
        self.len
    }

    /// The entry with the greatest relative offset `<= rel`.
    pub fn floor(&self, rel: u32) -> Option<Entry> {
        // partition_point over entry indices: first entry with e.rel > rel.
        let (mut lo, mut hi) = (0usize, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some(e) if e.rel <= rel => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo.checked_sub(1).and_then(|i| self.get(i))
    }

    /// The position of the first entry with relative offset `>= rel`: every record
    /// before `rel` lies before it.
    pub fn ceil_pos(&self, rel: u32) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some(e) if e.rel < rel => lo = mid + 1,
                _ => hi = mid,
            }
        }
        self.get(lo).map(|e| e.pos)
    }

    /// Write dirty pages of an active index to disk (`msync`).
    pub fn flush(&self) -> Result<()> {
        if let Map::Write(m) = &self.map {
            m.flush()
                .map_err(|e| Error::io("msync index", &self.path, e))?;
        }
        Ok(())
    }

    /// Trim the file to its entries and remap it read-only; `durable` adds an fsync.
    pub fn seal(&mut self, durable: bool) -> Result<()> {
        if !matches!(self.map, Map::Write(_)) {
            return Ok(());
        }
        if durable {
            self.flush()?;
        }
        // Drop the writable map before shrinking the file under it.
        self.map = Map::Empty;
        let bytes = (self.len * ENTRY_BYTES) as u64;
        self.file
            .set_len(bytes)
            .map_err(|e| Error::io("trim index", &self.path, e))?;
        if durable {
            self.file
                .sync_all()
                .map_err(|e| Error::io("fsync index", &self.path, e))?;
        }
        if bytes > 0 {
            // SAFETY: as in `open_sealed`.
            let m = unsafe { Mmap::map(&self.file) }
                .map_err(|e| Error::io("mmap index", &self.path, e))?;
            self.map = Map::Read(m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(rel: u32, pos: u32) -> Entry {
        Entry { rel, pos }
    }

    #[test]
    fn push_get_floor_ceil() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut idx = Index::create_active(&p, 64, &[]).unwrap();
        assert_eq!(idx.capacity(), 8);
        for (r, pos) in [(0, 0), (3, 100), (7, 250)] {
            assert!(idx.push(e(r, pos)));
        }
        assert_eq!(idx.floor(0), Some(e(0, 0)));
        assert_eq!(idx.floor(5), Some(e(3, 100)));
        assert_eq!(idx.floor(100), Some(e(7, 250)));
        assert_eq!(idx.ceil_pos(1), Some(100));
        assert_eq!(idx.ceil_pos(7), Some(250));
        assert_eq!(idx.ceil_pos(8), None);
    }

    #[test]
    fn fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::create_active(&dir.path().join("i"), 16, &[]).unwrap();
        assert!(idx.push(e(0, 0)));
        assert!(idx.push(e(1, 9)));
        assert!(idx.is_full());
        assert!(!idx.push(e(2, 18)));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn seal_trims_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i");
        let mut idx = Index::create_active(&p, 4096, &[e(0, 0), e(1, 20)]).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
        idx.seal(true).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 16);
        assert_eq!(idx.get(1), Some(e(1, 20)));
        let again = Index::open_sealed(&p).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.last(), Some(e(1, 20)));
    }

    #[test]
    fn zeroed_tail_is_not_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i");
        // A preallocated index whose last two slots are zero, as a crash leaves it.
        let idx = Index::write_sealed(&p, &[e(0, 0), e(1, 20), e(0, 0), e(0, 0)]).unwrap();
        assert_eq!(idx.plausible_prefix(1000), 2);
        // An entry pointing past the data is not plausible either.
        assert_eq!(idx.plausible_prefix(20), 1);
    }

    #[test]
    fn empty_sealed_index() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::write_sealed(&dir.path().join("i"), &[]).unwrap();
        assert!(idx.is_empty());
        assert_eq!(idx.floor(3), None);
    }
}
