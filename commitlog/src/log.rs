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
//!
//! This file holds the `Log` itself and what it reports about itself; its
//! operations live by concern in submodules: `open` (claiming the directory,
//! recovery, close), `append` (batches, rolls), `sync` (the fsync policy and what
//! is on stable storage), `reads`, `removal` (retention and `remove_before`) and
//! `drop_behind` (the page cache behind the readers).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::LogConfig;
use crate::page_cache::PageCache;
use crate::recovery::Policy;
use crate::segment::{Segment, WriteScratch};
use crate::syncer::Syncer;
use crate::tail::Tail;
use crate::timing::{HistogramSnapshot, Timings};
use crate::Offset;

mod append;
mod drop_behind;
mod open;
mod reads;
mod removal;
mod sync;

pub use removal::RetentionReport;

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
    /// How long append batches took (write, and fsync under `always`).
    pub append_time: HistogramSnapshot,
    /// How long fsyncs of segment data took.
    pub fsync_time: HistogramSnapshot,
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
    /// How long appends and fsyncs take (shared with the fsync thread).
    timings: Arc<Timings>,
    _lock: File,
}

impl Log {
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
            append_time: self.timings.append.snapshot(),
            fsync_time: self.timings.fsync.snapshot(),
        }
    }
}
