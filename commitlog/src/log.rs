//! `Log`: a directory of segments, the in-memory tail, durability and retention.
//!
//! Directory layout:
//!
//! ```text
//! <dir>/log.meta                       "rumq-commitlog 1\n": marks the directory as a log
//! <dir>/LOCK                           flock(2)ed while a Log has the directory open
//! <dir>/clean-shutdown                 present only between a clean close and the next open
//! <dir>/{base:020}.log / .index        segments, oldest first
//! ```

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::config::{Fsync, LogConfig};
use crate::error::{Error, Result};
use crate::page_cache::PageCache;
use crate::read::{ByReference, ReadBatch, ReadLimits, Record};
use crate::recovery::Policy;
use crate::retention::{self, SegmentInfo};
use crate::segment::{self, Appendable, FileKind, Segment, WriteScratch};
use crate::syncer::{SyncFile, Syncer, What};
use crate::tail::Tail;
use crate::Offset;

const META_FILE: &str = "log.meta";
const META_CONTENT: &[u8] = b"rumq-commitlog 1\n";
const LOCK_FILE: &str = "LOCK";
const CLEAN_FILE: &str = "clean-shutdown";

/// Pages are dropped behind the readers once at least this much (or a quarter
/// segment) can go.
const DROP_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// What one retention pass removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_removed: usize,
    /// Offsets no longer in the log (`earliest before .. earliest after`).
    pub removed: Range<Offset>,
    /// Offsets a reader still needed (at or above the hold-back offset) that the hard
    /// limit removed anyway. The broker must surface these: never a silent loss.
    pub dropped_needed: Option<Range<Offset>>,
}

/// Counters and sizes, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Earliest retained offset.
    pub earliest: Offset,
    /// Next offset to be written.
    pub head: Offset,
    /// Segments on disk.
    pub segments: usize,
    /// Bytes of data and index on disk.
    pub bytes: u64,
    /// Bytes of payload held in the in-memory tail.
    pub tail_bytes: usize,
}

/// A segmented, append-only log of opaque records in one directory.
///
/// Used from a single thread; not `Sync` by design.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    policy: Policy,
    /// Oldest first; the last one is the active segment unless `roll_pending`.
    segments: VecDeque<Segment>,
    /// The active segment is sealed: the next append creates a new one (lazily, so no
    /// empty segment is ever left on disk by a roll).
    roll_pending: bool,
    head: Offset,
    tail: Tail,
    write_buf: WriteScratch,
    last_sync: Instant,
    /// Appended records not yet handed to an fsync.
    unsynced: bool,
    /// `fsync = "interval"`: the thread that syncs in the background.
    syncer: Option<Syncer>,
    /// `drop_behind` (and not `fsync = "never"`): the thread that lets the page
    /// cache go behind the readers.
    page_cache: Option<PageCache>,
    /// Records below this are on stable storage (their pages are clean).
    synced_to: Offset,
    /// The end of the last segment whose seal was handed to the sync thread: the next
    /// roll waits until the records below it are synced (see `roll`).
    sealing_through: Offset,
    /// The pages of records below this were handed over to be dropped.
    dropped_to: Offset,
    poisoned: bool,
    _lock: File,
}

impl Log {
    /// Open the log in `dir`, creating it if the directory is missing or empty, and
    /// recovering whatever a crash left.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let names = list_dir(&dir)?;
        check_is_log(&dir, &names)?;
        let lock = lock_dir(&dir)?;
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() {
            write_durably(&dir, META_FILE, META_CONTENT)?;
        }
        let clean_path = dir.join(CLEAN_FILE);
        let clean = clean_path.exists();

        let policy = Policy {
            index_interval_bytes: config.index_interval_bytes,
            record_bytes_max: config.record_bytes_max,
            verify_reads: config.verify_reads,
        };
        let bases = segment_bases(&dir, &names)?;
        let mut segments = VecDeque::with_capacity(bases.len());
        for (i, base) in bases.iter().enumerate() {
            let active = i + 1 == bases.len();
            // Sealed segments were trimmed when rolled and their fsync had finished
            // before the next roll (see `roll`): their index is checked cheaply. The
            // active one, and the one sealed last (whose fsync may not have finished),
            // are scanned in full unless the log was closed cleanly.
            let seg_clean = clean || i + 2 < bases.len();
            let seg = Segment::open(
                &dir,
                *base,
                active,
                seg_clean,
                policy,
                config.index_bytes_max,
                config.preallocation(),
            )?;
            if let Some(prev) = segments.back().map(Segment::next) {
                if prev < seg.base() {
                    tracing::warn!(
                        missing = ?(prev..seg.base()),
                        "offsets lost in a crash (a sealed segment was cut short); readers skip them"
                    );
                } else if prev > seg.base() {
                    return Err(Error::NotALog {
                        path: dir.join(segment::data_file_name(seg.base())),
                        reason: format!(
                            "segment overlaps the one before it (which ends at {prev})"
                        ),
                    });
                }
            }
            segments.push_back(seg);
        }
        if clean {
            std::fs::remove_file(&clean_path).map_err(|e| Error::io("remove", &clean_path, e))?;
            sync_dir(&dir)?;
        }
        let head = segments.back().map_or(Offset(0), Segment::next);
        let roll_pending = segments.back().is_none_or(Segment::index_is_full);
        if roll_pending {
            // Its index is full: it will never be appended to again, so it is sealed
            // now (opened as the active one, it was extended to its preallocated
            // size, and nothing else would trim it).
            if let Some(seg) = segments.back_mut() {
                seg.seal(config.fsync != Fsync::Never)?;
            }
        }
        tracing::debug!(dir = %dir.display(), segments = segments.len(), %head, clean, "opened log");
        let syncer = match config.fsync {
            Fsync::Interval => Some(
                Syncer::start("rumq-fsync", head)
                    .map_err(|e| Error::io("start the fsync thread for", &dir, e))?,
            ),
            Fsync::Always | Fsync::Never => None,
        };
        let page_cache = if config.drops_behind() {
            Some(
                PageCache::start("rumq-pagecache")
                    .map_err(|e| Error::io("start the page-cache thread for", &dir, e))?,
            )
        } else {
            None
        };
        Ok(Log {
            tail: Tail::new(head, config.tail_bytes_max),
            dir,
            policy,
            segments,
            roll_pending,
            head,
            write_buf: WriteScratch::default(),
            last_sync: Instant::now(),
            unsynced: false,
            syncer,
            page_cache,
            // What recovery kept is on disk (it syncs what it cuts), and nothing of
            // it is known to be cached.
            synced_to: head,
            sealing_through: head,
            dropped_to: head,
            poisoned: false,
            _lock: lock,
            config,
        })
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration this log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The next offset to be written.
    pub fn head(&self) -> Offset {
        self.head
    }

    /// The earliest offset still in the log (equal to `head` when it is empty).
    pub fn earliest(&self) -> Offset {
        self.segments.front().map_or(self.head, Segment::base)
    }

    /// The lowest offset from which the newest whole segments up to the head take
    /// at most `bytes` on disk (the head itself when even the newest is larger).
    /// Retention works in whole segments, so this is where a reader's claim on at
    /// most `bytes` of the log begins.
    pub fn offset_within(&self, bytes: u64) -> Offset {
        let mut total = 0u64;
        let mut from = self.head;
        for seg in self.segments.iter().rev() {
            total = total.saturating_add(seg.bytes());
            if total > bytes {
                break;
            }
            from = seg.base();
        }
        from
    }

    /// Sizes and counters.
    pub fn stats(&self) -> LogStats {
        LogStats {
            earliest: self.earliest(),
            head: self.head,
            segments: self.segments.len(),
            bytes: self.segments.iter().map(Segment::bytes).sum(),
            tail_bytes: self.tail.bytes(),
        }
    }

    /// Append one record; returns its offset.
    pub fn append(&mut self, record: Bytes) -> Result<Offset> {
        let range = self.append_batch(std::slice::from_ref(&record))?;
        Ok(range.start)
    }

    /// Append records in order; returns their offsets. The batch is written with as
    /// few system calls as the segment size allows and, with `fsync = "always"`, made
    /// durable with one `fdatasync` per segment touched (a group commit).
    ///
    /// On error nothing of the batch is in the log... unless the error came from the
    /// fsync: then the records may be in the page cache but their durability is
    /// unknown, and the log is poisoned.
    pub fn append_batch(&mut self, records: &[Bytes]) -> Result<Range<Offset>> {
        self.append_records(records)
    }

    /// Append records its producer already framed ([`crate::record::Framed`]): the
    /// same as [`Log::append_batch`] without computing checksums on this thread.
    pub fn append_framed(&mut self, records: &[crate::record::Framed]) -> Result<Range<Offset>> {
        self.append_records(records)
    }

    fn append_records<R: Appendable>(&mut self, records: &[R]) -> Result<Range<Offset>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.check_background_sync()?;
        for r in records {
            if r.payload_len() > self.config.record_bytes_max as usize {
                return Err(Error::RecordTooLarge {
                    len: r.payload_len(),
                    max: self.config.record_bytes_max,
                });
            }
        }
        let start = self.head;
        let mut rest = records;
        while !rest.is_empty() {
            self.ensure_writable_segment()?;
            // ensure_writable_segment leaves at least one segment.
            let Some(seg) = self.segments.back_mut() else {
                return Err(Error::Poisoned);
            };
            let n = match seg.append(rest, self.config.segment_bytes_max, &mut self.write_buf) {
                Ok(n) => n,
                Err(f) => {
                    if !f.rolled_back {
                        self.poisoned = true;
                    }
                    tracing::error!(error = %f.error, rolled_back = f.rolled_back, "append failed");
                    return Err(f.error);
                }
            };
            if n == 0 {
                self.roll()?;
                continue;
            }
            for r in &rest[..n] {
                self.tail.push(r.tail());
            }
            self.head = self.head.add(n as u64);
            self.unsynced = true;
            rest = &rest[n..];
            if !rest.is_empty() {
                self.roll()?;
            }
        }
        match self.config.fsync {
            Fsync::Always => self.sync()?,
            Fsync::Interval => self.sync_if_due()?,
            Fsync::Never => {}
        }
        Ok(start..self.head)
    }

    /// The segment to append to, creating it if a roll is pending.
    fn ensure_writable_segment(&mut self) -> Result<()> {
        if self.roll_pending || self.segments.is_empty() {
            let seg = Segment::create(
                &self.dir,
                self.head,
                self.policy,
                self.config.index_bytes_max,
                self.config.preallocation(),
            )?;
            if self.config.fsync != Fsync::Never {
                self.sync_dir_soon()?;
            }
            self.segments.push_back(seg);
            self.roll_pending = false;
        }
        Ok(())
    }

    /// Seal the active segment; the next append starts a new one.
    ///
    /// Under `interval` the seal's fsyncs (data, then index) go to the sync thread,
    /// behind any sync running, and the appending thread goes on: synced here, a roll
    /// waited for up to an interval of writes to reach the disk (with 64 KiB messages,
    /// 14 % of the router thread's time). Until that sync is done, a power loss can
    /// leave the sealed segment with zeros where records were, inside a size the
    /// cheap check of a sealed segment would trust. So recovery scans the last two
    /// segments in full after an unclean stop, and a roll first waits for the previous
    /// roll's sync: no older segment is ever in that state.
    fn roll(&mut self) -> Result<()> {
        if self.syncer.is_some() {
            self.seal_in_background()?;
        } else if let Some(seg) = self.segments.back_mut() {
            let durable = self.config.fsync != Fsync::Never;
            if let Err(e) = seg.seal(durable) {
                self.poisoned = true;
                return Err(e);
            }
            if durable {
                self.synced_to = self.synced_to.max(seg.next());
            }
        }
        if let Some(seg) = self.segments.back() {
            tracing::debug!(segment = %seg.data_path().display(), next = %seg.next(), "rolled segment");
        }
        self.roll_pending = true;
        Ok(())
    }

    /// `roll` under `interval`.
    fn seal_in_background(&mut self) -> Result<()> {
        if let Some(syncer) = &self.syncer {
            if syncer.synced_through() < self.sealing_through {
                // Then the previous seal is synced, or failed (and the check below
                // poisons the log): the thread only ends when the log drops it, and
                // its jobs do not panic.
                syncer.wait_idle();
            }
        }
        self.check_background_sync()?;
        let (Some(syncer), Some(seg)) = (&self.syncer, self.segments.back_mut()) else {
            return Ok(());
        };
        let through = seg.next();
        let refused = match seg.seal_unsynced() {
            Ok(files) => syncer.submit(files.into(), through).err(),
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        if let Some(files) = refused {
            // The thread is gone (or its queue full): sync here rather than not at all.
            if let Err(e) = files.iter().try_for_each(SyncFile::sync) {
                self.poisoned = true;
                return Err(e);
            }
            self.synced_to = self.synced_to.max(through);
        }
        self.sealing_through = through;
        // Every record appended so far is in the segment just handed over.
        self.unsynced = false;
        Ok(())
    }

    /// Make the directory's entries durable (a segment created or removed): under
    /// `interval` on the sync thread, behind the jobs before it, so before any record
    /// appended later is taken as synced; here otherwise.
    fn sync_dir_soon(&self) -> Result<()> {
        let dir = vec![SyncFile::directory(&self.dir)?];
        let refused = match &self.syncer {
            Some(syncer) => match syncer.submit(dir, Offset(0)) {
                Ok(()) => return Ok(()),
                Err(back) => back,
            },
            None => dir,
        };
        refused.iter().try_for_each(SyncFile::sync)
    }

    /// Force appended records to stable storage now (after waiting for a background
    /// sync in flight). A failed fsync poisons the log: after one, the kernel may
    /// have dropped the dirty pages, so retrying would lie.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(syncer) = &self.syncer {
            syncer.wait_idle();
        }
        self.check_background_sync()?;
        if !self.unsynced {
            return Ok(());
        }
        if let Some(seg) = self.segments.back() {
            if let Err(e) = seg.sync() {
                self.poisoned = true;
                return Err(e);
            }
        }
        self.synced_to = self.head;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Call periodically (at least every `fsync_interval_ms`): with
    /// `fsync = "interval"`, starts the background sync of appends that are due, and
    /// reports a background sync that failed (the log is poisoned then).
    pub fn tick(&mut self) -> Result<()> {
        if self.config.fsync == Fsync::Interval {
            self.check_background_sync()?;
            self.sync_if_due()?;
        }
        Ok(())
    }

    /// `fsync = "interval"`: hand the active segment to the sync thread when the
    /// interval has passed since the last sync began and none is running. A sync
    /// still running only delays the next one (see `syncer`).
    fn sync_if_due(&mut self) -> Result<()> {
        if !self.unsynced || self.last_sync.elapsed() < self.config.fsync_interval() {
            return Ok(());
        }
        let (Some(syncer), Some(seg)) = (&self.syncer, self.segments.back()) else {
            return self.sync();
        };
        if syncer.is_busy() {
            return Ok(());
        }
        let data = SyncFile {
            file: seg.data_file().clone(),
            path: seg.data_path().to_path_buf(),
            what: What::Data,
        };
        if syncer.submit(vec![data], self.head).is_ok() {
            self.unsynced = false;
            self.last_sync = Instant::now();
            Ok(())
        } else {
            // The thread is gone: sync here rather than not at all.
            self.sync()
        }
    }

    /// Poison the log if a background sync failed; note what the others synced.
    fn check_background_sync(&mut self) -> Result<()> {
        let Some(syncer) = &self.syncer else {
            return Ok(());
        };
        if let Some(e) = syncer.take_failure() {
            self.poisoned = true;
            tracing::error!(error = %e, "background fsync failed; the log is poisoned");
            return Err(e);
        }
        self.synced_to = self.synced_to.max(syncer.synced_through());
        Ok(())
    }

    /// No reader needs the records below `offset` in memory any more: hand the pages
    /// of those that are on stable storage to the page-cache thread to drop (see
    /// `page_cache`; with `drop_behind` off or `fsync = "never"`, nothing). On stable
    /// storage means synced by the last [`Log::sync`], [`Log::tick`] or seal: call it
    /// after `tick`. A reader that later reads below `offset` reads from disk. Cheap
    /// when nothing is new: call it as often as the readers move (the router does
    /// every 100 ms).
    pub fn drop_cache_below(&mut self, offset: Offset) {
        if !self.config.drops_behind() || self.poisoned {
            return;
        }
        let Some(cache) = &self.page_cache else {
            return;
        };
        let to = offset.min(self.synced_to);
        if to <= self.dropped_to {
            return;
        }
        let first = self
            .segments
            .partition_point(|s| s.next() <= self.dropped_to);
        let dropped_to = self.dropped_to;
        let ranges: Vec<(&Segment, u64, u64)> = self
            .segments
            .range(first..)
            .take_while(|seg| seg.base() < to)
            .map(|seg| {
                let from = seg.position_below(dropped_to);
                (seg, from, seg.position_below(to).max(from))
            })
            .collect();
        // In batches: a call starts write-back of the range and walks its pages, and
        // when a page sits in another CPU's LRU cache it drains every CPU's (an
        // interrupt on each core): a trickle of messages should not pay that every
        // few kilobytes.
        let batch = DROP_BATCH_BYTES.min(self.config.segment_bytes_max / 4);
        if ranges.iter().map(|(_, from, end)| end - from).sum::<u64>() < batch {
            return;
        }
        for (seg, from, end) in ranges {
            if end > from && !cache.drop_behind(seg.data_file(), from, end) {
                // The queue is full: the rest is asked for on a later call.
                return;
            }
            self.dropped_to = to.min(seg.next());
        }
        self.dropped_to = to;
    }

    /// True when appended records are not yet known to be on stable storage: not
    /// yet synced, or their background sync has not finished.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced || self.syncer.as_ref().is_some_and(Syncer::is_busy)
    }

    /// Read records from `from` into `out` within `limits`.
    ///
    /// Records in the in-memory tail are served without a system call; older ones with
    /// one positional read per call (one segment per call: read again from `next`).
    pub fn read(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<Bytes>,
    ) -> Result<ReadBatch> {
        self.read_with(from, limits, out, |seg, at, out| seg.read(at, limits, out))
    }

    /// As [`Log::read`], but records read from a segment that are at least
    /// `by_ref.min_bytes` long are given by reference: their first
    /// `by_ref.head_bytes` in memory, the rest as a [`crate::FileRange`] of the
    /// segment's file, for a reader that sends them on with `sendfile(2)`. Needs an
    /// index entry per record (`index_interval_bytes = 0`) and `verify_reads` off;
    /// otherwise, and for records in the tail, records are given whole.
    pub fn read_records(
        &self,
        from: Offset,
        limits: ReadLimits,
        by_ref: ByReference,
        out: &mut Vec<Record>,
    ) -> Result<ReadBatch> {
        self.read_with(from, limits, out, |seg, at, out| {
            seg.read_by_reference(at, limits, by_ref, out)
        })
    }

    /// Read from the tail, or from the segment holding `from` with `from_segment`.
    fn read_with<R: From<Bytes>>(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<R>,
        from_segment: impl FnOnce(&Segment, Offset, &mut Vec<R>) -> Result<Offset>,
    ) -> Result<ReadBatch> {
        let earliest = self.earliest();
        if from < earliest {
            return Err(Error::OffsetOutOfRange {
                requested: from,
                earliest,
            });
        }
        if from > self.head {
            return Err(Error::OffsetBeyondHead {
                requested: from,
                head: self.head,
            });
        }
        if from >= self.tail.start() {
            let next = self.tail.read(from, limits, out);
            return Ok(ReadBatch { first: from, next });
        }
        // The segment with the greatest base <= from.
        let i = self
            .segments
            .partition_point(|s| s.base() <= from)
            .saturating_sub(1);
        for seg in self.segments.range(i..) {
            // Skip a hole left by recovery (offsets that never survived a crash).
            let at = from.max(seg.base());
            if at < seg.next() {
                let next = from_segment(seg, at, out)?;
                return Ok(ReadBatch { first: at, next });
            }
        }
        Ok(ReadBatch {
            first: self.head,
            next: self.head,
        })
    }

    /// Remove the oldest segments that retention limits allow (see
    /// [`crate::RetentionConfig`]). `hold_back` is the lowest offset some reader still
    /// needs; `now` is the wall-clock time segment ages are measured against.
    pub fn apply_retention(
        &mut self,
        now: SystemTime,
        hold_back: Option<Offset>,
    ) -> Result<RetentionReport> {
        let infos: Vec<SegmentInfo> = self
            .segments
            .iter()
            .map(|s| SegmentInfo {
                base: s.base(),
                next: s.next(),
                bytes: s.bytes(),
                modified: s.modified(),
            })
            .collect();
        // With a roll pending the last segment is sealed and a new one would start at
        // the head: it may go too, as long as one segment remains to remember the head.
        let plan = retention::plan(&infos, &self.config.retention, now, hold_back);
        let before = self.earliest();
        let mut removed = 0;
        for _ in 0..plan.remove {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            tracing::info!(segment = %seg.data_path().display(), records = seg.records(), "retention removed segment");
            seg.remove()?;
            removed += 1;
        }
        if removed > 0 && self.config.fsync != Fsync::Never {
            self.sync_dir_soon()?;
        }
        let after = self.earliest();
        self.tail.trim_front(after);
        if let Some(d) = &plan.dropped_needed {
            tracing::warn!(
                dropped = ?d,
                hold_back = ?hold_back,
                hold_bytes_max = self.config.retention.hold_bytes_max,
                "retention hard limit removed records a reader still needed"
            );
        }
        Ok(RetentionReport {
            segments_removed: removed,
            removed: before..after,
            dropped_needed: plan.dropped_needed,
        })
    }

    /// Remove the oldest sealed segments whose records all lie below `offset` (never
    /// the active segment). For logs whose owner knows what is obsolete — the router's
    /// session journal after a checkpoint — rather than a size or age policy. Returns
    /// how many segments went.
    pub fn remove_before(&mut self, offset: Offset) -> Result<usize> {
        if self.config.fsync != Fsync::Never {
            // What supersedes the removed records (a checkpoint) must be on disk
            // before they are gone, or a power failure could leave neither.
            self.sync()?;
        }
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.next() <= offset) {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            seg.remove()?;
            removed += 1;
        }
        if removed > 0 {
            if self.config.fsync != Fsync::Never {
                self.sync_dir_soon()?;
            }
            self.tail.trim_front(self.earliest());
        }
        Ok(removed)
    }

    /// Close cleanly: sync, trim the active index, and leave the marker that lets the
    /// next open skip the full scan of the active segment.
    pub fn close(mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if let Some(mut syncer) = self.syncer.take() {
            syncer.stop();
            if let Some(e) = syncer.take_failure() {
                return Err(e);
            }
        }
        self.unsynced = true;
        self.sync()?;
        if let Some(seg) = self.segments.back_mut() {
            seg.seal(true)?;
        }
        write_durably(&self.dir, CLEAN_FILE, b"")?;
        Ok(())
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A directory is a log if it has our meta file with the right content, or is empty
/// (then it becomes one).
fn check_is_log(dir: &Path, names: &[String]) -> Result<()> {
    if names.iter().any(|n| n == META_FILE) {
        let path = dir.join(META_FILE);
        let content = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        if content != META_CONTENT {
            return Err(Error::NotALog {
                path: dir.to_path_buf(),
                reason: format!(
                    "{META_FILE} says {:?}, expected {:?}",
                    String::from_utf8_lossy(&content),
                    String::from_utf8_lossy(META_CONTENT)
                ),
            });
        }
        return Ok(());
    }
    match names.iter().find(|n| n.as_str() != LOCK_FILE) {
        None => Ok(()),
        Some(other) => Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("it has no {META_FILE} but holds other files (such as {other:?})"),
        }),
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// The base offsets of the segments present, sorted. Index files without a data file
/// are leftovers of an interrupted removal and are deleted.
fn segment_bases(dir: &Path, names: &[String]) -> Result<Vec<Offset>> {
    let mut data = Vec::new();
    let mut index = Vec::new();
    for name in names {
        match segment::parse_file_name(name) {
            Some((base, FileKind::Data)) => data.push(base),
            Some((base, FileKind::Index)) => index.push(base),
            None if name == META_FILE || name == LOCK_FILE || name == CLEAN_FILE => {}
            None => {
                tracing::warn!(file = %dir.join(name).display(), "ignoring unknown file in log directory")
            }
        }
    }
    data.sort();
    for base in index {
        if data.binary_search(&base).is_err() {
            let path = dir.join(segment::index_file_name(base));
            tracing::warn!(file = %path.display(), "removing index without a data file");
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(data)
}

/// Write a small file so that a crash leaves either no file or the whole content:
/// write to a temporary name, fsync, rename, fsync the directory.
fn write_durably(dir: &Path, name: &str, content: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(content)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    SyncFile::directory(dir)?.sync()
}
