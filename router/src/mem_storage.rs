//! Storage in memory, beside the commitlog-backed one: the same contract as the
//! commitlog's `Log` as the router sees it (offsets from 0, reads bounded by count
//! and bytes, at least one record per read, removal of a prefix), with every record
//! in a `VecDeque`. No files, no threads, no clock: what router scenario scripts and
//! a deterministic simulation run on. Appending can be made to fail, as a full disk
//! would.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::{ByReference, Offset, ReadBatch, ReadLimits, Record, RetentionReport};

use crate::storage::Storage;

/// A log of records held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    /// The offset of `records[0]`.
    earliest: Offset,
    records: VecDeque<Bytes>,
    /// Appends fail (as on a full disk) while set.
    failing: bool,
    /// The `hold_back` of the last `apply_retention`, if any was made.
    last_hold_back: Option<Option<Offset>>,
}

impl MemStorage {
    /// An empty log.
    #[must_use]
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Make appends fail (`true`, as a full disk does) or succeed again.
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// The records held, oldest first, with their offsets.
    pub fn records(&self) -> impl Iterator<Item = (Offset, &Bytes)> {
        (self.earliest.0..).map(Offset).zip(self.records.iter())
    }

    /// The earliest offset still held.
    #[must_use]
    pub fn earliest(&self) -> Offset {
        self.earliest
    }

    /// What the last retention was told to keep (`Some(None)`: nothing held); `None`
    /// before any. (Memory keeps every record: retention only says what it would
    /// have kept.)
    pub fn last_hold_back(&self) -> Option<Option<Offset>> {
        self.last_hold_back
    }

    /// Push the records from `from` within `limits` (at least one, if any).
    fn read_into<R: From<Bytes>>(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<R>,
    ) -> commitlog::Result<ReadBatch> {
        if from < self.earliest {
            return Err(commitlog::Error::OffsetOutOfRange {
                requested: from,
                earliest: self.earliest,
            });
        }
        let head = self.head();
        if from > head {
            return Err(commitlog::Error::OffsetBeyondHead {
                requested: from,
                head,
            });
        }
        let skip = usize::try_from(from.distance_from(self.earliest)).unwrap_or(usize::MAX);
        let (mut n, mut bytes) = (0usize, 0usize);
        for record in self.records.iter().skip(skip) {
            let over = n > 0 && bytes + record.len() > limits.bytes_max;
            if n >= limits.records_max || over {
                break;
            }
            bytes += record.len();
            n += 1;
            out.push(R::from(record.clone()));
        }
        Ok(ReadBatch {
            first: from,
            next: from.add(n as u64),
        })
    }
}

impl Storage for MemStorage {
    fn append(&mut self, records: &[Framed]) -> commitlog::Result<Range<Offset>> {
        if self.failing {
            return Err(commitlog::Error::Io {
                op: "append",
                path: "memory".into(),
                source: std::io::ErrorKind::StorageFull.into(),
            });
        }
        let start = self.head();
        self.records.extend(records.iter().map(Framed::payload));
        Ok(start..self.head())
    }

    fn read(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<Bytes>,
    ) -> commitlog::Result<ReadBatch> {
        self.read_into(from, limits, out)
    }

    fn read_records(
        &self,
        from: Offset,
        limits: ReadLimits,
        _by_ref: ByReference,
        out: &mut Vec<Record>,
    ) -> commitlog::Result<ReadBatch> {
        self.read_into(from, limits, out)
    }

    fn head(&self) -> Offset {
        self.earliest.add(self.records.len() as u64)
    }

    fn tick(&mut self) -> commitlog::Result<()> {
        Ok(())
    }

    /// No retention limits: nothing is removed.
    fn apply_retention(
        &mut self,
        _now: SystemTime,
        hold_back: Option<Offset>,
    ) -> commitlog::Result<RetentionReport> {
        self.last_hold_back = Some(hold_back);
        Ok(RetentionReport {
            segments_removed: 0,
            removed: self.earliest..self.earliest,
            dropped_needed: None,
        })
    }

    /// Remove the records below `offset` (the count removed).
    fn remove_before(&mut self, offset: Offset) -> commitlog::Result<usize> {
        let mut removed = 0;
        while self.earliest < offset && self.records.pop_front().is_some() {
            self.earliest = self.earliest.add(1);
            removed += 1;
        }
        Ok(removed)
    }

    fn skip_to(&mut self, base: Offset) -> commitlog::Result<()> {
        if base > self.head() {
            self.records.clear();
            self.earliest = base;
        }
        Ok(())
    }
    fn offset_within(&self, bytes: u64) -> Offset {
        let mut total = 0u64;
        let mut at = self.head();
        for record in self.records.iter().rev() {
            total += record.len() as u64;
            if total > bytes {
                break;
            }
            at = Offset(at.0 - 1);
        }
        at
    }

    fn drop_cache_below(&mut self, _offset: Offset) {}

    /// Memory takes records of any size.
    fn record_bytes_max(&self) -> u32 {
        u32::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(s: &str) -> Framed {
        Framed::new(s.as_bytes())
    }

    fn read(m: &MemStorage, from: u64, records_max: usize, bytes_max: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let limits = ReadLimits {
            records_max,
            bytes_max,
        };
        m.read(Offset(from), limits, &mut out).unwrap();
        out
    }

    #[test]
    fn reads_what_was_appended_within_its_limits() {
        let mut m = MemStorage::new();
        assert_eq!(
            m.append(&[framed("a"), framed("bb"), framed("ccc")])
                .unwrap(),
            Offset(0)..Offset(3)
        );
        assert_eq!(read(&m, 0, 10, 100), vec!["a", "bb", "ccc"]);
        assert_eq!(read(&m, 1, 1, 100), vec!["bb"]);
        assert_eq!(read(&m, 0, 10, 3), vec!["a", "bb"]);
        assert_eq!(read(&m, 2, 10, 1), vec!["ccc"], "at least one record");
        assert!(read(&m, 3, 10, 100).is_empty(), "at the head");
    }

    #[test]
    fn removal_and_failing_appends_behave_as_the_log_does() {
        let mut m = MemStorage::new();
        m.append(&[framed("a"), framed("b"), framed("c")]).unwrap();
        assert_eq!(m.remove_before(Offset(2)).unwrap(), 2);
        let mut out: Vec<Bytes> = Vec::new();
        let limits = ReadLimits {
            records_max: 1,
            bytes_max: 1,
        };
        assert!(matches!(
            m.read(Offset(1), limits, &mut out),
            Err(commitlog::Error::OffsetOutOfRange {
                earliest: Offset(2),
                ..
            })
        ));
        assert!(matches!(
            m.read(Offset(4), limits, &mut out),
            Err(commitlog::Error::OffsetBeyondHead { .. })
        ));
        m.set_failing(true);
        assert!(m.append(&[framed("d")]).is_err());
        assert_eq!(m.head(), Offset(3));
        assert_eq!(m.offset_within(1), Offset(2));
    }
}
