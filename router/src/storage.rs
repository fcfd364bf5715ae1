//! The router's view of storage: the commitlog's operations behind a trait, so tests
//! can inject faults (a full disk, a failing fsync) around a real log.

use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::{ByReference, Log, Offset, ReadBatch, ReadLimits, Record, RetentionReport};

/// What the router needs of a log.
pub trait Storage {
    /// Append records, framed by their producers, in order (see [`Log::append_framed`]).
    fn append(&mut self, records: &[Framed]) -> commitlog::Result<Range<Offset>>;
    /// Read records (see [`Log::read`]).
    fn read(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<Bytes>,
    ) -> commitlog::Result<ReadBatch>;
    /// Read records, large ones from segments by reference (see [`Log::read_records`]).
    fn read_records(
        &self,
        from: Offset,
        limits: ReadLimits,
        by_ref: ByReference,
        out: &mut Vec<Record>,
    ) -> commitlog::Result<ReadBatch>;
    /// The next offset to be written.
    fn head(&self) -> Offset;
    /// Periodic work: interval fsync.
    fn tick(&mut self) -> commitlog::Result<()>;
    /// Retention (see [`Log::apply_retention`]).
    fn apply_retention(
        &mut self,
        now: SystemTime,
        hold_back: Option<Offset>,
    ) -> commitlog::Result<RetentionReport>;
    /// Remove whole segments below `offset` (see [`Log::remove_before`]).
    fn remove_before(&mut self, offset: Offset) -> commitlog::Result<usize>;
    /// Where the newest `bytes` of the log begin (see [`Log::offset_within`]).
    fn offset_within(&self, bytes: u64) -> Offset;
    /// Go on from `base`, past the head, without the offsets in between (see
    /// [`Log::skip_to`]).
    fn skip_to(&mut self, base: Offset) -> commitlog::Result<()>;
    /// No reader needs the records below `offset` in memory (see
    /// [`Log::drop_cache_below`]).
    fn drop_cache_below(&mut self, offset: Offset);
    /// The largest record payload an append takes (see `LogConfig::record_bytes_max`).
    fn record_bytes_max(&self) -> u32;
}

/// Visit every record from `from` to the head, in order (what retention removed is
/// skipped), stopping at the first error `visit` returns. For the startup scans:
/// journal replay and the message log's tail.
pub fn visit_records<S: Storage, E: From<commitlog::Error>>(
    storage: &S,
    from: Offset,
    mut visit: impl FnMut(Offset, Bytes) -> Result<(), E>,
) -> Result<(), E> {
    let limits = ReadLimits {
        records_max: 1024,
        bytes_max: 16 * 1024 * 1024,
    };
    let mut buf = Vec::new();
    let mut at = from;
    loop {
        buf.clear();
        let batch = match storage.read(at, limits, &mut buf) {
            Ok(b) => b,
            Err(commitlog::Error::OffsetOutOfRange { earliest, .. }) if earliest > at => {
                at = earliest;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut offset = batch.first;
        for record in buf.drain(..) {
            visit(offset, record)?;
            offset = offset.add(1);
        }
        at = batch.next;
    }
}

impl Storage for Log {
    fn append(&mut self, records: &[Framed]) -> commitlog::Result<Range<Offset>> {
        Log::append_framed(self, records)
    }
    fn read(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<Bytes>,
    ) -> commitlog::Result<ReadBatch> {
        Log::read(self, from, limits, out)
    }
    fn read_records(
        &self,
        from: Offset,
        limits: ReadLimits,
        by_ref: ByReference,
        out: &mut Vec<Record>,
    ) -> commitlog::Result<ReadBatch> {
        Log::read_records(self, from, limits, by_ref, out)
    }
    fn head(&self) -> Offset {
        Log::head(self)
    }
    fn tick(&mut self) -> commitlog::Result<()> {
        Log::tick(self)
    }
    fn apply_retention(
        &mut self,
        now: SystemTime,
        hold_back: Option<Offset>,
    ) -> commitlog::Result<RetentionReport> {
        Log::apply_retention(self, now, hold_back)
    }
    fn remove_before(&mut self, offset: Offset) -> commitlog::Result<usize> {
        Log::remove_before(self, offset)
    }
    fn skip_to(&mut self, base: Offset) -> commitlog::Result<()> {
        Log::skip_to(self, base).map(drop)
    }
    fn offset_within(&self, bytes: u64) -> Offset {
        Log::offset_within(self, bytes)
    }
    fn drop_cache_below(&mut self, offset: Offset) {
        Log::drop_cache_below(self, offset);
    }
    fn record_bytes_max(&self) -> u32 {
        self.config().record_bytes_max
    }
}
