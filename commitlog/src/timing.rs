//! How long appends and fsyncs take: fixed-bucket histograms of atomic counters, so
//! the appending thread and the fsync thread record into them without a lock and a
//! metrics scrape reads them at any time ([`Histogram::snapshot`]).
//!
//! Recorded once per append batch and once per fsync, never per record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the buckets, in microseconds: 50 µs to 2.5 s, about three
/// per decade (what a disk's fsync and a batch's write span); one more bucket takes
/// what is slower.
pub const BUCKET_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Buckets, the last one unbounded.
const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// A histogram of durations (see the module docs).
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Count one duration.
    pub fn observe(&self, d: Duration) {
        // In nanoseconds: 50.9 µs is above the 50 µs bound, not in its bucket.
        let ns = d.as_nanos();
        let bucket = BUCKET_BOUNDS_US.partition_point(|&bound| u128::from(bound) * 1000 < ns);
        if let Some(c) = self.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket (not cumulative), bounds as [`BUCKET_BOUNDS_US`], then the rest.
    pub counts: [u64; BUCKETS],
    /// The sum of the durations, in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Each bucket's upper bound in seconds (the last one `f64::MAX`, which
    /// Prometheus' encoders write as `+Inf`) with its own count (not cumulative:
    /// the encoder sums them).
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        let bounds = BUCKET_BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::MAX));
        bounds.zip(self.counts).collect()
    }
}

/// What a log times.
#[derive(Debug, Default)]
pub struct Timings {
    /// An append batch: the write, and the fsync under `fsync = "always"`.
    pub append: Histogram,
    /// One `fdatasync` of a segment's data (on the appending thread under
    /// `always`, on the fsync thread under `interval`).
    pub fsync: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_at_or_above_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_nanos(50_100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!((s.counts[0], s.counts[1], s.counts[6]), (1, 1, 1));
        assert_eq!(s.counts[BUCKETS - 1], 1, "slower than the last bound");
        let b = s.buckets_seconds();
        assert_eq!(b.len(), BUCKETS);
        assert_eq!(b[0], (50e-6, 1));
        assert_eq!(b[6], (5e-3, 1));
        assert_eq!(b[BUCKETS - 1], (f64::MAX, 1));
        assert_eq!(s.sum_ns, 10_003_100_100);
    }
}
