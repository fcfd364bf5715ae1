//! Removing old segments: by the retention limits (planned by `crate::retention`),
//! or below an offset the log's owner knows is obsolete.

use std::ops::Range;
use std::time::SystemTime;

use super::Log;
use crate::config::Fsync;
use crate::error::{Error, Result};
use crate::retention::{self, SegmentInfo};
use crate::tail::Tail;
use crate::Offset;

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

impl Log {
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

    /// Go on from `base`, past the head, leaving out the offsets in between: for a
    /// copy of another node's log whose writer no longer holds them (they will
    /// never come). Every segment goes; the log then holds nothing below `base` (a
    /// read there is `OffsetOutOfRange`), and the next append is at `base`. The
    /// new, empty segment is on disk before the old ones go, so a crash in between
    /// leaves a hole readers skip, never a log that starts again at 0. Returns how
    /// many segments went; at or below the head it does nothing.
    pub fn skip_to(&mut self, base: Offset) -> Result<usize> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if base <= self.head {
            return Ok(0);
        }
        if !self.roll_pending && !self.segments.is_empty() {
            self.roll()?;
        }
        self.sync()?;
        self.head = base;
        self.roll_pending = true;
        self.ensure_writable_segment()?;
        let mut removed = 0;
        while self.segments.len() > 1 {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            seg.remove()?;
            removed += 1;
        }
        if removed > 0 && self.config.fsync != Fsync::Never {
            self.sync_dir_soon()?;
        }
        self.tail = Tail::new(base, self.config.tail_bytes_max);
        self.synced_to = self.synced_to.max(base);
        self.dropped_to = self.dropped_to.max(base);
        tracing::debug!(dir = %self.dir.display(), %base, removed, "log skipped ahead");
        Ok(removed)
    }
}
