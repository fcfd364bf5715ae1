//! A segment: one data file of framed records plus its index, covering a contiguous
//! range of offsets starting at its base offset.
//!
//! Files are named by base offset, zero-padded to 20 digits so they sort:
//! `00000000000000001234.log` and `00000000000000001234.index`.
//!
//! Appends are positional `pwritev(2)` calls at the end of the data, and reads are
//! positional `pread(2)`, so nothing moves a file cursor. The segment tracks its own
//! data length and record count; it never probes for end of file, because the file may
//! be longer than its data: with `preallocate` set, a new segment's file is created
//! at its full size, its blocks allocated but unwritten (see `file_io::allocate`), and
//! trimmed to its data when sealed. Recovery cuts the zeros after the last record like
//! any torn tail.
//!
//! This file holds what a segment is (its files, opening, sealing, removal); `append`
//! how records go in, `reads` how they come out.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::file_io::allocate;
use crate::index::{Entry, Index};
use crate::recovery::{self, Policy};
use crate::syncer::{SyncFile, What};
use crate::Offset;

mod append;
mod reads;

pub use append::{Appendable, WriteScratch};

/// The data file name for a segment with this base offset.
#[must_use]
pub fn data_file_name(base: Offset) -> String {
    format!("{:020}.log", base.0)
}

/// The index file name for a segment with this base offset.
#[must_use]
pub fn index_file_name(base: Offset) -> String {
    format!("{:020}.index", base.0)
}

/// What kind of segment file a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `{base:020}.log`
    Data,
    /// `{base:020}.index`
    Index,
}

/// Parse a segment file name; `None` for anything else.
#[must_use]
pub fn parse_file_name(name: &str) -> Option<(Offset, FileKind)> {
    let (stem, kind) = if let Some(s) = name.strip_suffix(".log") {
        (s, FileKind::Data)
    } else if let Some(s) = name.strip_suffix(".index") {
        (s, FileKind::Index)
    } else {
        return None;
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|b| (Offset(b), kind))
}

/// One segment of a log.
#[derive(Debug)]
pub struct Segment {
    base: Offset,
    data_path: PathBuf,
    /// Shared with the page-cache thread.
    data: Arc<File>,
    data_len: u64,
    /// The file's length: `data_len`, or more while it is preallocated.
    file_len: u64,
    records: u32,
    index: Index,
    bytes_since_entry: u64,
    modified: SystemTime,
    policy: Policy,
}

impl Segment {
    /// Create the files of a new, empty segment; a `preallocate` above 0 makes the
    /// data file that long (allocated, see `file_io::allocate`).
    pub fn create(
        dir: &Path,
        base: Offset,
        policy: Policy,
        index_bytes_max: u64,
        preallocate: u64,
    ) -> Result<Segment> {
        let data_path = dir.join(data_file_name(base));
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(|e| Error::io("create segment", &data_path, e))?;
        if preallocate > 0 {
            allocate(&data, 0, preallocate)
                .map_err(|e| Error::io("preallocate segment", &data_path, e))?;
        }
        let index = Index::create_active(&dir.join(index_file_name(base)), index_bytes_max, &[])?;
        Ok(Segment {
            base,
            data_path,
            data: Arc::new(data),
            data_len: 0,
            file_len: preallocate,
            records: 0,
            index,
            bytes_since_entry: 0,
            modified: SystemTime::now(),
            policy,
        })
    }

    /// Open an existing segment, running recovery (see [`crate::recovery`]). `active`
    /// opens its index writable and preallocated (and its data file to `preallocate`
    /// bytes, when above 0); `clean` says it was closed cleanly.
    pub fn open(
        dir: &Path,
        base: Offset,
        active: bool,
        clean: bool,
        policy: Policy,
        index_bytes_max: u64,
        preallocate: u64,
    ) -> Result<Segment> {
        let data_path = dir.join(data_file_name(base));
        let index_path = dir.join(index_file_name(base));
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(|e| Error::io("open segment", &data_path, e))?;
        let meta = data
            .metadata()
            .map_err(|e| Error::io("stat segment", &data_path, e))?;
        let file_len = meta.len();
        let modified = meta.modified().unwrap_or_else(|e| {
            tracing::warn!(segment = %data_path.display(), error = %e, "no modification time; retention ages the segment from now");
            SystemTime::now()
        });

        let found = if index_path.exists() {
            Some(Index::open_sealed(&index_path)?)
        } else {
            tracing::warn!(segment = %data_path.display(), "index file missing; rebuilding it");
            None
        };
        let r = recovery::recover_segment(&data, &data_path, found.as_ref(), clean, policy)?;
        if r.data_len < file_len {
            data.set_len(r.data_len)
                .map_err(|e| Error::io("truncate torn tail of", &data_path, e))?;
            // Only after an unclean stop. The cut size can reach the disk before the
            // data the last run left in the page cache; synced, a power loss now cannot
            // leave holes inside a size a later open trusts (the log may be reopened
            // under `fsync = "never"`, where sealing does not sync).
            data.sync_data()
                .map_err(|e| Error::io("fsync after truncating", &data_path, e))?;
        }
        // Cut first, extend after: the bytes past the data must read as zeros.
        let file_len = if active && preallocate > r.data_len {
            allocate(&data, r.data_len, preallocate)
                .map_err(|e| Error::io("preallocate segment", &data_path, e))?;
            preallocate
        } else {
            r.data_len
        };
        let index = match (r.rebuilt_index, found, active) {
            (Some(entries), _, true) => {
                Index::create_active(&index_path, index_bytes_max, &entries)?
            }
            (Some(entries), _, false) => Index::write_sealed(&index_path, &entries)?,
            (None, Some(found), true) => {
                let entries: Vec<Entry> = (0..found.len()).filter_map(|i| found.get(i)).collect();
                drop(found);
                Index::create_active(&index_path, index_bytes_max, &entries)?
            }
            (None, Some(found), false) => found,
            // recover_segment rebuilds whenever no index was found.
            (None, None, _) => Index::write_sealed(&index_path, &[])?,
        };
        Ok(Segment {
            base,
            data_path,
            data: Arc::new(data),
            data_len: r.data_len,
            file_len,
            records: r.records,
            index,
            bytes_since_entry: r.bytes_since_entry,
            modified,
            policy,
        })
    }

    /// The first offset of this segment.
    pub fn base(&self) -> Offset {
        self.base
    }

    /// The offset after its last record.
    pub fn next(&self) -> Offset {
        self.base.add(u64::from(self.records))
    }

    /// Records held.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Bytes of data and index on disk.
    pub fn bytes(&self) -> u64 {
        self.data_len + (self.index.len() * crate::index::ENTRY_BYTES) as u64
    }

    /// When a record was last appended.
    pub fn modified(&self) -> SystemTime {
        self.modified
    }

    /// The data file (for the background sync and the page-cache thread).
    pub fn data_file(&self) -> &Arc<File> {
        &self.data
    }

    /// Bytes of framed records in the data file.
    #[cfg(test)]
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Where in the data file the records before `offset` end, or an earlier position
    /// when the index is sparse (0 at or before the base, the data's end from the
    /// next offset on).
    pub fn position_below(&self, offset: Offset) -> u64 {
        if offset >= self.next() {
            return self.data_len;
        }
        // Below the base there is nothing before it.
        self.rel_of(offset)
            .and_then(|rel| self.index.floor(rel))
            .map_or(0, |e| u64::from(e.pos))
    }

    /// `offset` relative to the base, for a record this segment holds (`None`
    /// outside `base..next`); it fits a `u32` because the record count does.
    pub(crate) fn rel_of(&self, offset: Offset) -> Option<u32> {
        if offset < self.base {
            return None;
        }
        u32::try_from(offset.distance_from(self.base))
            .ok()
            .filter(|rel| *rel < self.records)
    }

    /// The path of the data file.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// True when no more records fit the index.
    pub fn index_is_full(&self) -> bool {
        self.index.is_full()
    }

    /// `fdatasync` the data file.
    pub fn sync(&self) -> Result<()> {
        self.data
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.data_path, e))
    }

    /// Make the segment read-only: trim its data file and index to what they hold
    /// (and, if `durable`, fsync both files).
    ///
    /// A preallocated data file is synced even when not `durable` (the log does not
    /// preallocate under `fsync = "never"`, so this is a guard): its size is set by
    /// `ftruncate`, which the filesystem journals within seconds, not by the data
    /// reaching the disk. Without the sync a power loss could leave a sealed segment
    /// with holes (zeros) where records were, inside the part the cheap check of a
    /// sealed segment trusts.
    pub fn seal(&mut self, durable: bool) -> Result<()> {
        let trimmed = self.file_len > self.data_len;
        let [data, index] = self.seal_unsynced()?;
        if durable || trimmed {
            data.sync()?;
        }
        if durable {
            index.sync()?;
        }
        Ok(())
    }

    /// Seal like [`Segment::seal`] but without syncing: returns the files that make
    /// the seal durable once synced, data then index, for the caller to hand to the
    /// background sync. Until they are, a power loss may leave the trimmed segment
    /// with zeros where records were (see `Log::roll` for why that is safe).
    pub(crate) fn seal_unsynced(&mut self) -> Result<[SyncFile; 2]> {
        if self.file_len > self.data_len {
            self.data
                .set_len(self.data_len)
                .map_err(|e| Error::io("trim preallocated segment", &self.data_path, e))?;
            self.file_len = self.data_len;
        }
        self.index.seal(false)?;
        Ok([
            SyncFile {
                file: self.data.clone(),
                path: self.data_path.clone(),
                what: What::Data,
            },
            SyncFile {
                file: self.index.file().clone(),
                path: self.index.path().to_path_buf(),
                what: What::All,
            },
        ])
    }

    /// Delete both files.
    pub fn remove(self) -> Result<()> {
        let index_path = self.index.path().to_path_buf();
        drop(self.index);
        std::fs::remove_file(&self.data_path)
            .map_err(|e| Error::io("remove segment", &self.data_path, e))?;
        match std::fs::remove_file(&index_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove index", &index_path, e)),
        }
    }
}

#[cfg(test)]
mod tests;
