//! Reading the log: from the in-memory tail when the records are still there, else
//! from the segment holding the offset (skipping a hole recovery left).

use bytes::Bytes;

use super::Log;
use crate::error::{Error, Result};
use crate::read::{ByReference, ReadBatch, ReadLimits, Record};
use crate::segment::Segment;
use crate::Offset;

impl Log {
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
}
