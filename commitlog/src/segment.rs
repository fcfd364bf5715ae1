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
//! at its full size, its blocks allocated but unwritten (see `allocate`), and trimmed
//! to its data when sealed. Recovery cuts the zeros after the last record like any
//! torn tail.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::file_io::{
    allocate, read_exact_onto, read_exact_uninit, write_all_vectored_at, WRITE_BYTES_MAX,
};
use crate::index::{Entry, Index};
use crate::read::{ByReference, FileRange, ReadLimits, Record};
use crate::record::{self, Frame, HEADER_BYTES};
use crate::recovery::{self, Policy};
use crate::syncer::{SyncFile, What};
use crate::Offset;

/// Records at least this large are written straight from the caller's buffer with
/// `pwritev` instead of being copied into the write buffer.
const LARGE_RECORD_BYTES: usize = 16 * 1024;

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

/// A record on its way into a segment: a bare payload (framed here) or a
/// [`record::Framed`] (written as is).
pub trait Appendable {
    /// Payload length.
    fn payload_len(&self) -> usize;
    /// The payload.
    fn payload(&self) -> &[u8];
    /// The whole frame, when the producer built it.
    fn frame(&self) -> Option<&[u8]>;
    /// What the in-memory tail keeps (the payload, without copying).
    fn tail(&self) -> Bytes;
}

impl Appendable for Bytes {
    fn payload_len(&self) -> usize {
        self.len()
    }
    fn payload(&self) -> &[u8] {
        self
    }
    fn frame(&self) -> Option<&[u8]> {
        None
    }
    fn tail(&self) -> Bytes {
        self.clone()
    }
}

impl Appendable for record::Framed {
    fn payload_len(&self) -> usize {
        record::Framed::payload_len(self)
    }
    fn payload(&self) -> &[u8] {
        &self.frame()[HEADER_BYTES..]
    }
    fn frame(&self) -> Option<&[u8]> {
        Some(record::Framed::frame(self))
    }
    fn tail(&self) -> Bytes {
        record::Framed::payload(self)
    }
}

/// A failed append: the error, and whether the data file was put back as it was.
#[derive(Debug)]
pub struct WriteFailure {
    /// What went wrong.
    pub error: Error,
    /// False when even truncating back failed: the segment's on-disk state is unknown.
    pub rolled_back: bool,
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
    /// data file that long (allocated, see `allocate`).
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
        let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());

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
        if offset <= self.base {
            return 0;
        }
        // base < offset < next, so the distance fits the u32 record count.
        let rel = u32::try_from(offset.distance_from(self.base)).unwrap_or(u32::MAX);
        self.index.floor(rel).map_or(0, |e| u64::from(e.pos))
    }

    /// The path of the data file.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// True when no more records fit the index.
    pub fn index_is_full(&self) -> bool {
        self.index.is_full()
    }

    /// Append as many of `records` as fit within `segment_bytes_max` and the index;
    /// returns how many were appended (0 when the segment is full: roll).
    pub fn append<R: Appendable>(
        &mut self,
        records: &[R],
        segment_bytes_max: u64,
        scratch: &mut WriteScratch,
    ) -> Result<usize, WriteFailure> {
        let n = self.how_many_fit(records, segment_bytes_max);
        if n == 0 {
            return Ok(0);
        }
        let batch = &records[..n];
        if let Err(e) = write_frames(&self.data, self.data_len, batch, scratch) {
            let error = Error::io("write", &self.data_path, e);
            // Cut what the failed write left (whole frames among it would otherwise
            // be found by recovery after a later, shorter append), then restore the
            // preallocation as zeros; if that fails the file simply grows by appends.
            let rolled_back = self.data.set_len(self.data_len).is_ok();
            if rolled_back
                && self.file_len > self.data_len
                && allocate(&self.data, self.data_len, self.file_len).is_err()
            {
                self.file_len = self.data_len;
            }
            return Err(WriteFailure { error, rolled_back });
        }
        for r in batch {
            if self
                .policy
                .wants_entry(self.records, self.bytes_since_entry)
            {
                // how_many_fit reserved an index slot for this entry, and positions fit
                // u32 because segment_bytes_max <= u32::MAX (LogConfig::validate).
                let pushed = self.index.push(Entry {
                    rel: self.records,
                    pos: self.data_len as u32,
                });
                debug_assert!(pushed, "index slot was reserved");
                self.bytes_since_entry = 0;
            }
            let frame = (HEADER_BYTES + r.payload_len()) as u64;
            self.bytes_since_entry += frame;
            self.data_len += frame;
            self.records += 1;
        }
        self.file_len = self.file_len.max(self.data_len);
        self.modified = SystemTime::now();
        Ok(n)
    }

    fn how_many_fit<R: Appendable>(&self, records: &[R], segment_bytes_max: u64) -> usize {
        let mut len = self.data_len;
        let mut since = self.bytes_since_entry;
        let mut free_entries = self.index.capacity().saturating_sub(self.index.len());
        for (n, r) in records.iter().enumerate() {
            // n < records.len() and the segment's record count fits u32 (see `read`).
            let rel = self.records + n as u32;
            let frame = (HEADER_BYTES + r.payload_len()) as u64;
            if len + frame > segment_bytes_max && rel > 0 {
                return n;
            }
            if self.policy.wants_entry(rel, since) {
                if free_entries == 0 {
                    return n;
                }
                free_entries -= 1;
                since = 0;
            }
            since += frame;
            len += frame;
        }
        records.len()
    }

    /// Read records from `offset` (which must lie in `base..next`) into `out`, within
    /// `limits`; returns the offset after the last record given. At least one record is
    /// given even when it alone exceeds `limits.bytes_max`.
    pub fn read<R: From<Bytes>>(
        &self,
        offset: Offset,
        limits: ReadLimits,
        out: &mut Vec<R>,
    ) -> Result<Offset> {
        let next = self.next();
        if offset < self.base || offset >= next || limits.records_max == 0 {
            return Ok(offset);
        }
        // offset - base < records <= u32::MAX.
        let rel = offset.distance_from(self.base) as u32;
        let start = self.index.floor(rel).unwrap_or(Entry { rel: 0, pos: 0 });
        let rel_end = u32::try_from(u64::from(rel) + limits.records_max as u64).unwrap_or(u32::MAX);
        let end = self
            .index
            .ceil_pos(rel_end)
            .map_or(self.data_len, u64::from)
            .min(self.data_len);
        let skip_slack = u64::from(self.policy.index_interval_bytes) + HEADER_BYTES as u64;
        let budget = limits.bytes_max as u64 + skip_slack;

        let mut pos = u64::from(start.pos);
        let mut cur = start.rel;
        let mut given = 0usize;
        let mut bytes = 0usize;
        let mut want = (end.max(pos + 1) - pos)
            .min(budget)
            .max(HEADER_BYTES as u64);
        if start.rel == rel {
            // The index knows where the first record ends: read all of it even when it
            // is larger than the byte budget (it is given anyway), not a part and then
            // the whole of it again.
            let first_end = self
                .index
                .ceil_pos(rel.saturating_add(1))
                .map_or(self.data_len, u64::from)
                .min(self.data_len);
            want = want.max(first_end.saturating_sub(pos));
        }
        loop {
            let want_now = want.min(self.data_len - pos) as usize;
            let buf = self.read_bytes(pos, want_now)?;
            let mut i = 0usize;
            while i < buf.len() {
                match record::decode_with(
                    &buf[i..],
                    self.policy.record_bytes_max,
                    self.policy.verify_reads,
                ) {
                    Frame::Record { len } => {
                        let frame = HEADER_BYTES + len;
                        if cur >= rel {
                            if given > 0 && bytes + frame > limits.bytes_max {
                                return Ok(offset.add(given as u64));
                            }
                            out.push(R::from(buf.slice(i + HEADER_BYTES..i + frame)));
                            given += 1;
                            bytes += frame;
                        }
                        cur += 1;
                        i += frame;
                        if given == limits.records_max || cur == self.records {
                            return Ok(offset.add(given as u64));
                        }
                    }
                    Frame::Incomplete { needed } => {
                        if given > 0 {
                            return Ok(offset.add(given as u64));
                        }
                        // Still skipping (sparse index) or the first record is larger
                        // than the window: read on from this frame.
                        want = (needed as u64).max(budget);
                        break;
                    }
                    Frame::Corrupt => {
                        return Err(Error::Corrupt {
                            offset: self.base.add(u64::from(cur)),
                            path: self.data_path.clone(),
                        });
                    }
                }
            }
            if given > 0 {
                return Ok(offset.add(given as u64));
            }
            pos += i as u64;
            if pos >= self.data_len {
                // The index promised records that the data does not hold.
                return Err(Error::Corrupt {
                    offset: self.base.add(u64::from(cur)),
                    path: self.data_path.clone(),
                });
            }
        }
    }

    /// As [`Segment::read`], but records of at least `by_ref.min_bytes` are given by
    /// reference: their first `by_ref.head_bytes` read, the rest left in the file
    /// (see `read`). Runs of smaller records are read as by `read`, one read per run.
    /// Needs an entry per record in the index (to know each record's size unread) and
    /// reads whose CRC is not checked; otherwise every record is read whole.
    pub fn read_by_reference(
        &self,
        offset: Offset,
        limits: ReadLimits,
        by_ref: ByReference,
        out: &mut Vec<Record>,
    ) -> Result<Offset> {
        if self.policy.verify_reads || self.policy.index_interval_bytes != 0 {
            return self.read(offset, limits, out);
        }
        let mut at = offset;
        let mut bytes = 0usize;
        // The heads read share allocations, a few dozen to each.
        let mut heads = BytesMut::new();
        while at < self.next() && at.distance_from(offset) < limits.records_max as u64 {
            let Some((pos, end)) = self.frame_at(at) else {
                // An index without an entry per record (written with another
                // interval): read the rest whole.
                let left = ReadLimits {
                    records_max: limits.records_max - at.distance_from(offset) as usize,
                    bytes_max: limits.bytes_max.saturating_sub(bytes),
                };
                return if at > offset && left.bytes_max == 0 {
                    Ok(at)
                } else {
                    self.read(at, left, out)
                };
            };
            let frame = usize::try_from(end - pos).unwrap_or(usize::MAX);
            if at > offset && bytes.saturating_add(frame) > limits.bytes_max {
                break;
            }
            let len = frame.saturating_sub(HEADER_BYTES);
            if len < by_ref.min_bytes {
                // This record and the small ones after it, whole, in one read.
                let mut run_end = at.add(1);
                let mut run_bytes = frame;
                while run_end < self.next()
                    && run_end.distance_from(offset) < limits.records_max as u64
                {
                    let Some((p, e)) = self.frame_at(run_end) else {
                        break;
                    };
                    let f = usize::try_from(e - p).unwrap_or(usize::MAX);
                    if f - HEADER_BYTES >= by_ref.min_bytes
                        || bytes.saturating_add(run_bytes + f) > limits.bytes_max
                    {
                        break;
                    }
                    run_bytes += f;
                    run_end = run_end.add(1);
                }
                let run = ReadLimits {
                    records_max: run_end.distance_from(at) as usize,
                    bytes_max: run_bytes,
                };
                at = self.read(at, run, out)?;
                bytes += run_bytes;
                continue;
            }
            let head = by_ref.head_bytes.min(len);
            if heads.capacity() - heads.len() < HEADER_BYTES + head {
                heads = BytesMut::with_capacity(32 * (HEADER_BYTES + head));
            }
            let buf = read_exact_onto(&self.data, pos, HEADER_BYTES + head, &mut heads)
                .map_err(|e| Error::io("read", &self.data_path, e))?;
            let intact = match record::decode_with(&buf, self.policy.record_bytes_max, false) {
                Frame::Record { len: l } => l == len,
                Frame::Incomplete { needed } => needed == frame,
                Frame::Corrupt => false,
            };
            if !intact {
                return Err(Error::Corrupt {
                    offset: at,
                    path: self.data_path.clone(),
                });
            }
            let rest = FileRange::new(
                self.data.clone(),
                pos + (HEADER_BYTES + head) as u64,
                len - head,
            );
            out.push(Record::by_reference(buf.slice(HEADER_BYTES..), rest));
            bytes += frame;
            at = at.add(1);
        }
        Ok(at)
    }

    /// Where the frame of record `at` starts and ends, when the index has an entry
    /// for it and for the record after it (or it is the last).
    fn frame_at(&self, at: Offset) -> Option<(u64, u64)> {
        let rel = usize::try_from(at.distance_from(self.base)).ok()?;
        let start = self.index.get(rel).filter(|e| e.rel as usize == rel)?;
        let end = if rel + 1 == self.records as usize {
            self.data_len
        } else {
            u64::from(
                self.index
                    .get(rel + 1)
                    .filter(|e| e.rel as usize == rel + 1)?
                    .pos,
            )
        };
        (end >= u64::from(start.pos) + HEADER_BYTES as u64).then_some((u64::from(start.pos), end))
    }

    fn read_bytes(&self, pos: u64, len: usize) -> Result<Bytes> {
        read_exact_uninit(&self.data, pos, len)
            .map(Bytes::from)
            .map_err(|e| Error::io("read", &self.data_path, e))
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

/// Reusable buffers for framing a batch.
#[derive(Debug, Default)]
pub struct WriteScratch {
    /// Frames of small records, and headers of large ones.
    buf: Vec<u8>,
    /// `(end in buf, record index)`: after `buf[..end]` comes that large record's
    /// payload (or, for a pre-framed record, its whole frame).
    cuts: Vec<(usize, usize)>,
}

/// Write the frames of `records` to `file` at `pos` with few system calls: small
/// records are framed into one buffer, large payloads are written from their own
/// buffers, and everything goes out in `pwritev` calls of up to `IOV_MAX` slices and
/// `WRITE_BYTES_MAX` bytes.
fn write_frames<R: Appendable>(
    file: &File,
    mut pos: u64,
    records: &[R],
    scratch: &mut WriteScratch,
) -> io::Result<()> {
    scratch.buf.clear();
    scratch.cuts.clear();
    for (i, r) in records.iter().enumerate() {
        let large = r.payload_len() >= LARGE_RECORD_BYTES;
        match (r.frame(), large) {
            (Some(_), true) => scratch.cuts.push((scratch.buf.len(), i)),
            (Some(frame), false) => scratch.buf.extend_from_slice(frame),
            (None, true) => {
                scratch
                    .buf
                    .extend_from_slice(&record::encode_header(r.payload()));
                scratch.cuts.push((scratch.buf.len(), i));
            }
            (None, false) => record::encode_into(&mut scratch.buf, r.payload()),
        }
        if scratch.buf.len() >= WRITE_BYTES_MAX {
            pos = flush_frames(file, pos, records, scratch)?;
        }
    }
    flush_frames(file, pos, records, scratch).map(|_| ())
}

/// Returns the position after what was written.
fn flush_frames<R: Appendable>(
    file: &File,
    mut pos: u64,
    records: &[R],
    scratch: &mut WriteScratch,
) -> io::Result<u64> {
    let buf = &scratch.buf;
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * scratch.cuts.len() + 1);
    let mut prev = 0;
    for &(end, i) in &scratch.cuts {
        if end > prev {
            slices.push(IoSlice::new(&buf[prev..end]));
        }
        if let Some(r) = records.get(i) {
            slices.push(IoSlice::new(r.frame().unwrap_or_else(|| r.payload())));
        }
        prev = end;
    }
    if prev < buf.len() {
        slices.push(IoSlice::new(&buf[prev..]));
    }
    pos = write_all_vectored_at(file, pos, &mut slices)?;
    drop(slices);
    scratch.buf.clear();
    scratch.cuts.clear();
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENSE: Policy = Policy {
        index_interval_bytes: 0,
        record_bytes_max: 1 << 20,
        verify_reads: true,
    };

    fn lim(records_max: usize, bytes_max: usize) -> ReadLimits {
        ReadLimits {
            records_max,
            bytes_max,
        }
    }

    fn recs(n: usize, size: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(vec![i as u8; size])).collect()
    }

    #[test]
    fn file_names_sort_and_parse() {
        assert_eq!(data_file_name(Offset(42)), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((Offset(42), FileKind::Index))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
    }

    #[test]
    fn append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segment::create(dir.path(), Offset(100), DENSE, 4096, 0).unwrap();
        let mut buf = WriteScratch::default();
        assert_eq!(s.append(&recs(10, 5), 1 << 20, &mut buf).unwrap(), 10);
        assert_eq!(s.next(), Offset(110));
        let mut out: Vec<Bytes> = Vec::new();
        assert_eq!(
            s.read(Offset(103), lim(4, 1 << 20), &mut out).unwrap(),
            Offset(107)
        );
        assert_eq!(out, recs(10, 5)[3..7].to_vec());
        out.clear();
        // A 13-byte frame each: a 30-byte budget gives two.
        assert_eq!(
            s.read(Offset(100), lim(100, 30), &mut out).unwrap(),
            Offset(102)
        );
    }

    #[test]
    fn batches_and_records_larger_than_one_write_read_back_whole() {
        // 40 records of 100 KiB (4 MB in calls of at most 1 MiB) and one of 2.5 MiB
        // (written in parts), among small ones framed into the write buffer.
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy {
            record_bytes_max: 4 << 20,
            ..DENSE
        };
        let mut s = Segment::create(dir.path(), Offset(0), policy, 1 << 16, 0).unwrap();
        let mut records = recs(40, 100 * 1024);
        records.insert(7, Bytes::from(vec![7u8; 5]));
        records.insert(
            20,
            Bytes::from((0..2_621_440u32).map(|i| i as u8).collect::<Vec<u8>>()),
        );
        records.push(Bytes::from(vec![9u8; 3]));
        let n = records.len();
        let mut buf = WriteScratch::default();
        assert_eq!(s.append(&records, 64 << 20, &mut buf).unwrap(), n);
        let mut out: Vec<Bytes> = Vec::new();
        let next = s.read(Offset(0), lim(n, 64 << 20), &mut out).unwrap();
        assert_eq!(next, Offset(n as u64));
        assert_eq!(out, records);
    }

    #[test]
    fn stops_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segment::create(dir.path(), Offset(0), DENSE, 4096, 0).unwrap();
        let mut buf = WriteScratch::default();
        // 18-byte frames in a 50-byte segment: two fit.
        assert_eq!(s.append(&recs(5, 10), 50, &mut buf).unwrap(), 2);
        assert_eq!(s.append(&recs(1, 10), 50, &mut buf).unwrap(), 0);
        // An index of 3 entries stops a dense segment at 3 records.
        let mut t = Segment::create(dir.path(), Offset(10), DENSE, 24, 0).unwrap();
        assert_eq!(t.append(&recs(5, 1), 1 << 20, &mut buf).unwrap(), 3);
        assert!(t.index_is_full());
    }

    #[test]
    fn sparse_reads_skip_to_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy {
            index_interval_bytes: 100,
            ..DENSE
        };
        let mut s = Segment::create(dir.path(), Offset(0), policy, 4096, 0).unwrap();
        let records = recs(50, 22);
        s.append(&records, 1 << 20, &mut WriteScratch::default())
            .unwrap();
        for start in 0..50u64 {
            let mut out: Vec<Bytes> = Vec::new();
            let next = s.read(Offset(start), lim(3, 1 << 20), &mut out).unwrap();
            assert_eq!(next, Offset((start + 3).min(50)));
            assert_eq!(out[..], records[start as usize..next.0 as usize]);
        }
    }

    #[test]
    fn large_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segment::create(dir.path(), Offset(0), DENSE, 4096, 0).unwrap();
        let records = vec![
            Bytes::from(vec![1u8; 100_000]),
            Bytes::from_static(b"small"),
        ];
        s.append(&records, 1 << 30, &mut WriteScratch::default())
            .unwrap();
        let mut out: Vec<Bytes> = Vec::new();
        // The first record alone is over the byte budget: it still comes.
        assert_eq!(s.read(Offset(0), lim(10, 10), &mut out).unwrap(), Offset(1));
        assert_eq!(out[0], records[0]);
    }

    #[test]
    fn reopen_recovers_unclean_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segment::create(dir.path(), Offset(7), DENSE, 4096, 0).unwrap();
        s.append(&recs(4, 3), 1 << 20, &mut WriteScratch::default())
            .unwrap();
        drop(s);
        let s = Segment::open(dir.path(), Offset(7), true, false, DENSE, 4096, 0).unwrap();
        assert_eq!(s.next(), Offset(11));
        let mut out: Vec<Bytes> = Vec::new();
        s.read(Offset(9), lim(10, 1 << 20), &mut out).unwrap();
        assert_eq!(out, recs(4, 3)[2..].to_vec());
    }

    #[test]
    fn a_preallocated_segment_recovers_its_records_and_is_trimmed_when_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let len = |s: &Segment| std::fs::metadata(s.data_path()).unwrap().len();
        let mut s = Segment::create(dir.path(), Offset(7), DENSE, 4096, 1 << 20).unwrap();
        assert_eq!(len(&s), 1 << 20);
        let mut scratch = WriteScratch::default();
        s.append(&recs(4, 3), 1 << 20, &mut scratch).unwrap();
        // Large records take the other write path (straight from their buffers).
        s.append(&recs(2, 20_000), 1 << 20, &mut scratch).unwrap();
        let data_len = s.data_len();
        assert_eq!(len(&s), 1 << 20);
        drop(s); // a crash: the zeros after the records are still there

        let mut s =
            Segment::open(dir.path(), Offset(7), true, false, DENSE, 4096, 1 << 20).unwrap();
        assert_eq!((s.next(), s.data_len()), (Offset(13), data_len));
        assert_eq!(
            len(&s),
            1 << 20,
            "the reopened active segment is preallocated again"
        );
        s.append(&recs(1, 5), 1 << 20, &mut scratch).unwrap();
        let mut out: Vec<Bytes> = Vec::new();
        s.read(Offset(7), lim(100, 1 << 20), &mut out).unwrap();
        let mut want = recs(4, 3);
        want.extend(recs(2, 20_000));
        want.extend(recs(1, 5));
        assert_eq!(out, want);

        s.seal(true).unwrap();
        assert_eq!(len(&s), s.data_len());
        drop(s);
        // Sealed and trimmed: the cheap check (frames end at the end of the file) passes.
        let s = Segment::open(dir.path(), Offset(7), false, true, DENSE, 4096, 1 << 20).unwrap();
        assert_eq!((s.next(), len(&s)), (Offset(14), s.data_len()));
    }
}
