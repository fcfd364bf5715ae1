//! Retention planning: which of the oldest segments go, as a pure function of their
//! sizes, ages, the limits and the reader hold-back. [`crate::Log::apply_retention`]
//! carries the plan out.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use crate::config::RetentionConfig;
use crate::Offset;

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    /// First offset.
    pub base: Offset,
    /// Offset after its last record.
    pub next: Offset,
    /// Bytes on disk.
    pub bytes: u64,
    /// When it was last appended to.
    pub modified: SystemTime,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Remove this many segments from the front.
    pub remove: usize,
    /// Records that a reader still needed but the hard limit removed anyway.
    pub dropped_needed: Option<Range<Offset>>,
}

/// Plan retention over `segments` (oldest first; the last one is the active segment
/// and is never removed). `hold_back` is the lowest offset a reader still needs.
#[must_use]
pub fn plan(
    segments: &[SegmentInfo],
    config: &RetentionConfig,
    now: SystemTime,
    hold_back: Option<Offset>,
) -> Plan {
    let mut bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut count = segments.len();
    let age_max = Duration::from_millis(config.age_ms_max);
    let mut plan = Plan {
        remove: 0,
        dropped_needed: None,
    };
    for s in segments.iter().take(segments.len().saturating_sub(1)) {
        let over_bytes = config.bytes_max > 0 && bytes > config.bytes_max;
        let over_count = config.segments_max > 0 && count > config.segments_max;
        let too_old = config.age_ms_max > 0
            && now
                .duration_since(s.modified)
                .is_ok_and(|age| age > age_max);
        let over_hard = config.hold_bytes_max > 0 && bytes > config.hold_bytes_max;
        if !(over_bytes || over_count || too_old || over_hard) {
            break;
        }
        let needed_from = hold_back.filter(|h| *h < s.next);
        if let Some(h) = needed_from {
            if !over_hard {
                break;
            }
            let from = h.max(s.base);
            plan.dropped_needed = Some(match plan.dropped_needed.take() {
                Some(r) => r.start..s.next,
                None => from..s.next,
            });
        }
        plan.remove += 1;
        bytes -= s.bytes;
        count -= 1;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(n: u64, bytes: u64, now: SystemTime) -> Vec<SegmentInfo> {
        (0..n)
            .map(|i| SegmentInfo {
                base: Offset(i * 10),
                next: Offset(i * 10 + 10),
                bytes,
                // Older segments were modified earlier: segment i is (n - i) hours old.
                modified: now - Duration::from_secs(3600 * (n - i)),
            })
            .collect()
    }

    fn cfg(bytes_max: u64, segments_max: usize, age_ms_max: u64, hold: u64) -> RetentionConfig {
        RetentionConfig {
            bytes_max,
            segments_max,
            age_ms_max,
            hold_bytes_max: hold,
        }
    }

    #[test]
    fn by_bytes_count_and_age() {
        let now = SystemTime::now();
        let s = segs(5, 100, now);
        assert_eq!(plan(&s, &cfg(250, 0, 0, 0), now, None).remove, 3);
        assert_eq!(plan(&s, &cfg(0, 2, 0, 0), now, None).remove, 3);
        // Older than 2.5 hours: segments 0, 1 and 2 (5, 4 and 3 hours old).
        assert_eq!(plan(&s, &cfg(0, 0, 9_000_000, 0), now, None).remove, 3);
        assert_eq!(plan(&s, &cfg(0, 0, 0, 0), now, None).remove, 0);
    }

    #[test]
    fn never_removes_the_active_segment() {
        let now = SystemTime::now();
        assert_eq!(
            plan(&segs(3, 100, now), &cfg(1, 0, 0, 0), now, None).remove,
            2
        );
    }

    #[test]
    fn holds_back_for_a_reader() {
        let now = SystemTime::now();
        let s = segs(5, 100, now);
        // The reader needs offset 15 (segment 1): only segment 0 may go.
        let p = plan(&s, &cfg(100, 0, 0, 0), now, Some(Offset(15)));
        assert_eq!(p.remove, 1);
        assert_eq!(p.dropped_needed, None);
    }

    #[test]
    fn hard_limit_drops_held_data_and_says_so() {
        let now = SystemTime::now();
        let s = segs(5, 100, now);
        let p = plan(&s, &cfg(100, 0, 0, 300), now, Some(Offset(15)));
        assert_eq!(p.remove, 2);
        assert_eq!(p.dropped_needed, Some(Offset(15)..Offset(20)));
    }
}
