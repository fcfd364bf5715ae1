//! Drop-behind: handing the pages of synced records no reader needs to the
//! page-cache thread, in batches.

use super::Log;
use crate::segment::Segment;
use crate::Offset;

/// Pages are dropped behind the readers once at least this much (or a quarter
/// segment) can go.
const DROP_BATCH_BYTES: u64 = 8 * 1024 * 1024;

impl Log {
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
}
