//! A replica's storage, or, once the replica is retired (`retire`), only where it
//! ended: the router's refs to replicas are their places in a list, so a retired
//! replica keeps its place, and its storage goes to the edge to be removed.

use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::{ByReference, Offset, ReadBatch, ReadLimits, Record, RetentionReport};

use crate::storage::Storage;

/// A replica's storage, or where it ended.
#[derive(Debug)]
pub(crate) enum Kept<S> {
    /// Kept: read, appended to, served.
    Open(S),
    /// Retired at this head: every offset below it reads as removed by retention.
    Retired(Offset),
}

impl<S> Kept<S> {
    /// The storage, unless retired.
    pub fn open(&self) -> Option<&S> {
        match self {
            Kept::Open(s) => Some(s),
            Kept::Retired(_) => None,
        }
    }

    /// Whether it was retired.
    pub fn is_retired(&self) -> bool {
        matches!(self, Kept::Retired(_))
    }
}

impl<S: Storage> Kept<S> {
    /// Retire it: the storage, to be removed (`None` if it was retired already).
    pub fn retire(&mut self) -> Option<S> {
        let head = self.head();
        match std::mem::replace(self, Kept::Retired(head)) {
            Kept::Open(s) => Some(s),
            Kept::Retired(_) => None,
        }
    }
}

/// What a read of a retired replica from `from` finds: nothing, at its end.
fn retired_read(from: Offset, head: Offset) -> commitlog::Result<ReadBatch> {
    if from < head {
        Err(commitlog::Error::OffsetOutOfRange {
            requested: from,
            earliest: head,
        })
    } else if from > head {
        Err(commitlog::Error::OffsetBeyondHead {
            requested: from,
            head,
        })
    } else {
        Ok(ReadBatch {
            first: head,
            next: head,
        })
    }
}

impl<S: Storage> Storage for Kept<S> {
    fn append(&mut self, records: &[Framed]) -> commitlog::Result<Range<Offset>> {
        match self {
            Kept::Open(s) => s.append(records),
            Kept::Retired(_) => Err(commitlog::Error::Poisoned),
        }
    }
    fn read(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<Bytes>,
    ) -> commitlog::Result<ReadBatch> {
        match self {
            Kept::Open(s) => s.read(from, limits, out),
            Kept::Retired(head) => retired_read(from, *head),
        }
    }
    fn read_records(
        &self,
        from: Offset,
        limits: ReadLimits,
        by_ref: ByReference,
        out: &mut Vec<Record>,
    ) -> commitlog::Result<ReadBatch> {
        match self {
            Kept::Open(s) => s.read_records(from, limits, by_ref, out),
            Kept::Retired(head) => retired_read(from, *head),
        }
    }
    fn head(&self) -> Offset {
        match self {
            Kept::Open(s) => s.head(),
            Kept::Retired(head) => *head,
        }
    }
    fn tick(&mut self) -> commitlog::Result<()> {
        match self {
            Kept::Open(s) => s.tick(),
            Kept::Retired(_) => Ok(()),
        }
    }
    fn apply_retention(
        &mut self,
        now: SystemTime,
        hold_back: Option<Offset>,
    ) -> commitlog::Result<RetentionReport> {
        match self {
            Kept::Open(s) => s.apply_retention(now, hold_back),
            Kept::Retired(_) => Ok(RetentionReport::default()),
        }
    }
    fn remove_before(&mut self, offset: Offset) -> commitlog::Result<usize> {
        match self {
            Kept::Open(s) => s.remove_before(offset),
            Kept::Retired(_) => Ok(0),
        }
    }
    fn skip_to(&mut self, base: Offset) -> commitlog::Result<()> {
        match self {
            Kept::Open(s) => s.skip_to(base),
            Kept::Retired(_) => Err(commitlog::Error::Poisoned),
        }
    }
    fn offset_within(&self, bytes: u64) -> Offset {
        match self {
            Kept::Open(s) => s.offset_within(bytes),
            Kept::Retired(head) => *head,
        }
    }
    fn drop_cache_below(&mut self, offset: Offset) {
        if let Kept::Open(s) = self {
            s.drop_cache_below(offset);
        }
    }
    fn record_bytes_max(&self) -> u32 {
        match self {
            Kept::Open(s) => s.record_bytes_max(),
            Kept::Retired(_) => 0,
        }
    }
}
