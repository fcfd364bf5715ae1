//! What a log can be told: segment and index sizes, durability and retention.
//!
//! The broker embeds [`LogConfig`] in its TOML config, so every field has a serde
//! default and unknown keys are rejected.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Largest data file a segment may have: index entries store positions as `u32`.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;

/// When appended records are forced to stable storage with `fdatasync`.
///
/// | policy | survives a process crash | survives power loss / kernel crash |
/// |---|---|---|
/// | `Never` | every returned append | nothing since the kernel last wrote back (≈30 s) |
/// | `Interval` | every returned append | all but the last `interval_ms` of appends |
/// | `Always` | every returned append | every returned append (one fsync per append call) |
///
/// A process crash never loses a returned append under any policy: `append` returns
/// only after `pwritev(2)` put the bytes in the kernel's page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Leave write-back to the kernel.
    Never,
    /// `fdatasync` when an append comes `interval_ms` or more after the last sync, and
    /// on [`crate::Log::tick`], on a background thread so appends do not wait for it.
    Interval,
    /// `fdatasync` once per `append`/`append_batch` call: a group commit.
    Always,
}

/// Configuration of one [`crate::Log`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A segment is rolled when its data file would grow past this many bytes.
    pub segment_bytes_max: u64,
    /// Bytes preallocated for a segment's index; the segment rolls when it is full.
    pub index_bytes_max: u64,
    /// Write an index entry every this many data bytes (0: one entry per record).
    pub index_interval_bytes: u32,
    /// Largest record accepted.
    pub record_bytes_max: u32,
    /// Bytes of the most recent records kept in memory for caught-up readers.
    pub tail_bytes_max: usize,
    /// Create a new (or reopened) active segment's data file at `segment_bytes_max`,
    /// its blocks allocated but unwritten (see `file_io::allocate`), and trim it to
    /// its data when it is sealed: appends then neither reserve blocks nor wait for
    /// the sync thread's block allocation. Not used with `fsync = "never"` (see
    /// `preallocation`).
    pub preallocate: bool,
    /// Let the kernel drop the cached pages of records that are on disk and that
    /// every reader has passed ([`crate::Log::drop_cache_below`]), so the log's page
    /// cache holds what readers still need and new pages reuse freed ones (see
    /// `page_cache`). Not used with `fsync = "never"`, whose pages stay dirty.
    pub drop_behind: bool,
    /// Check every record's CRC when reading it back, not only during recovery.
    /// Catches bit rot in sealed segments at roughly twice the CPU cost of a cached
    /// read.
    pub verify_reads: bool,
    /// Durability policy.
    pub fsync: Fsync,
    /// Interval for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Retention limits.
    pub retention: RetentionConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 128 * 1024 * 1024,
            index_bytes_max: 16 * 1024 * 1024,
            index_interval_bytes: 0,
            record_bytes_max: 16 * 1024 * 1024,
            tail_bytes_max: 16 * 1024 * 1024,
            preallocate: true,
            drop_behind: true,
            verify_reads: false,
            fsync: Fsync::Interval,
            fsync_interval_ms: 100,
            retention: RetentionConfig::default(),
        }
    }
}

impl LogConfig {
    /// Check the values against each other; called by [`crate::Log::open`].
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.segment_bytes_max == 0 || self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return fail(format!(
                "segment_bytes_max must be between 1 and {SEGMENT_BYTES_LIMIT}, got {}",
                self.segment_bytes_max
            ));
        }
        if self.index_bytes_max < crate::index::ENTRY_BYTES as u64 {
            return fail(format!(
                "index_bytes_max must hold at least one entry ({} bytes), got {}",
                crate::index::ENTRY_BYTES,
                self.index_bytes_max
            ));
        }
        if u64::from(self.record_bytes_max) + crate::record::HEADER_BYTES as u64
            > self.segment_bytes_max
        {
            return fail(format!(
                "record_bytes_max ({}) plus its {}-byte header must fit in segment_bytes_max ({})",
                self.record_bytes_max,
                crate::record::HEADER_BYTES,
                self.segment_bytes_max
            ));
        }
        if self.fsync == Fsync::Interval && self.fsync_interval_ms == 0 {
            return fail("fsync_interval_ms must be > 0 with fsync = \"interval\"".into());
        }
        Ok(())
    }

    /// The length a new or reopened active segment's data file is created at (0: as
    /// long as its data).
    ///
    /// Not under `fsync = "never"`: there a sealed segment's trimmed size could reach
    /// the disk (the filesystem journals it within seconds) long before its data
    /// (write-back, ~30 s), and a power loss would leave holes of zeros where records
    /// were. Sealing syncs a preallocated file to rule that out, which `never` is
    /// configured not to pay for. An extending write never has that problem: the
    /// filesystem moves the on-disk size only as the data is written back.
    pub(crate) fn preallocation(&self) -> u64 {
        if self.preallocate && self.fsync != Fsync::Never {
            self.segment_bytes_max
        } else {
            0
        }
    }

    /// Whether pages behind the readers are dropped (only synced pages can be).
    pub(crate) fn drops_behind(&self) -> bool {
        self.drop_behind && self.fsync != Fsync::Never
    }

    pub(crate) fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }
}

/// Retention limits. The oldest segments are removed whole; the segment being
/// written to is never removed, so the head offset survives a restart.
///
/// The soft limits (`bytes_max`, `segments_max`, `age_ms_max`) yield to a reader that
/// still needs data (`hold_back` in [`crate::Log::apply_retention`]). `hold_bytes_max`
/// is the hard limit: past it, segments go even when a reader still needs them, and
/// the drop is reported.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep at most this many bytes of segments (0: no limit).
    pub bytes_max: u64,
    /// Keep at most this many segments (0: no limit).
    pub segments_max: usize,
    /// Remove segments whose newest record is older than this (0: no limit).
    pub age_ms_max: u64,
    /// Hard limit in bytes that even held-back data may not exceed (0: no limit).
    pub hold_bytes_max: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            bytes_max: 1024 * 1024 * 1024,
            segments_max: 0,
            age_ms_max: 7 * 24 * 3600 * 1000,
            hold_bytes_max: 8 * 1024 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn record_must_fit_a_segment() {
        let c = LogConfig {
            segment_bytes_max: 1024,
            record_bytes_max: 1024,
            ..LogConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("record_bytes_max"), "{err}");
    }

    #[test]
    fn segment_positions_fit_u32() {
        let c = LogConfig {
            segment_bytes_max: SEGMENT_BYTES_LIMIT + 1,
            ..LogConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
