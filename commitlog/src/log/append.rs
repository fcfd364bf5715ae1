//! Appending to the log: checking a batch, writing it across as many segments as it
//! takes, rolling (sealing the active segment, on the sync thread under
//! `interval`), and the fsync an append owes under its policy.

use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;

use super::Log;
use crate::config::Fsync;
use crate::error::{Error, Result};
use crate::segment::{Appendable, Segment};
use crate::syncer::SyncFile;
use crate::Offset;

impl Log {
    /// Append one record; returns its offset.
    pub fn append(&mut self, record: Bytes) -> Result<Offset> {
        let range = self.append_batch(std::slice::from_ref(&record))?;
        Ok(range.start)
    }

    /// Append records in order; returns their offsets. The batch is written with as
    /// few system calls as the segment size allows and, with `fsync = "always"`, made
    /// durable with one `fdatasync` per segment touched (a group commit).
    ///
    /// On error nothing of the batch is in the log... unless the error came from the
    /// fsync: then the records may be in the page cache but their durability is
    /// unknown, and the log is poisoned.
    pub fn append_batch(&mut self, records: &[Bytes]) -> Result<Range<Offset>> {
        self.append_records(records)
    }

    /// Append records its producer already framed ([`crate::record::Framed`]): the
    /// same as [`Log::append_batch`] without computing checksums on this thread.
    pub fn append_framed(&mut self, records: &[crate::record::Framed]) -> Result<Range<Offset>> {
        self.append_records(records)
    }

    fn append_records<R: Appendable>(&mut self, records: &[R]) -> Result<Range<Offset>> {
        let began = Instant::now();
        let appended = self.write_records(records)?;
        self.timings.append.observe(began.elapsed());
        Ok(appended)
    }

    /// `append_records` less the timing.
    fn write_records<R: Appendable>(&mut self, records: &[R]) -> Result<Range<Offset>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.check_background_sync()?;
        for r in records {
            if r.payload_len() > self.config.record_bytes_max as usize {
                return Err(Error::RecordTooLarge {
                    len: r.payload_len(),
                    max: self.config.record_bytes_max,
                });
            }
        }
        let start = self.head;
        let mut rest = records;
        while !rest.is_empty() {
            self.ensure_writable_segment()?;
            // ensure_writable_segment leaves at least one segment.
            let Some(seg) = self.segments.back_mut() else {
                return Err(Error::Poisoned);
            };
            let n = match seg.append(rest, self.config.segment_bytes_max, &mut self.write_buf) {
                Ok(n) => n,
                Err(f) => {
                    if !f.rolled_back {
                        self.poisoned = true;
                    }
                    tracing::error!(error = %f.error, rolled_back = f.rolled_back, "append failed");
                    return Err(f.error);
                }
            };
            if n == 0 {
                self.roll()?;
                continue;
            }
            for r in &rest[..n] {
                self.tail.push(r.tail());
            }
            self.head = self.head.add(n as u64);
            self.unsynced = true;
            rest = &rest[n..];
            if !rest.is_empty() {
                self.roll()?;
            }
        }
        match self.config.fsync {
            Fsync::Always => self.sync()?,
            Fsync::Interval => self.sync_if_due()?,
            Fsync::Never => {}
        }
        Ok(start..self.head)
    }

    /// The segment to append to, creating it if a roll is pending.
    pub(super) fn ensure_writable_segment(&mut self) -> Result<()> {
        if self.roll_pending || self.segments.is_empty() {
            let seg = Segment::create(
                &self.dir,
                self.head,
                self.policy,
                self.config.index_bytes_max,
                self.config.preallocation(),
            )?;
            if self.config.fsync != Fsync::Never {
                self.sync_dir_soon()?;
            }
            self.segments.push_back(seg);
            self.roll_pending = false;
        }
        Ok(())
    }

    /// Seal the active segment; the next append starts a new one.
    ///
    /// Under `interval` the seal's fsyncs (data, then index) go to the sync thread,
    /// behind any sync running, and the appending thread goes on: synced here, a roll
    /// waited for up to an interval of writes to reach the disk (with 64 KiB messages,
    /// 14 % of the router thread's time). Until that sync is done, a power loss can
    /// leave the sealed segment with zeros where records were, inside a size the
    /// cheap check of a sealed segment would trust. So recovery scans the last two
    /// segments in full after an unclean stop, and a roll first waits for the previous
    /// roll's sync: no older segment is ever in that state.
    pub(super) fn roll(&mut self) -> Result<()> {
        if self.syncer.is_some() {
            self.seal_in_background()?;
        } else if let Some(seg) = self.segments.back_mut() {
            let durable = self.config.fsync != Fsync::Never;
            if let Err(e) = seg.seal(durable) {
                self.poisoned = true;
                return Err(e);
            }
            if durable {
                self.synced_to = self.synced_to.max(seg.next());
            }
        }
        if let Some(seg) = self.segments.back() {
            tracing::debug!(segment = %seg.data_path().display(), next = %seg.next(), "rolled segment");
        }
        self.roll_pending = true;
        Ok(())
    }

    /// `roll` under `interval`.
    fn seal_in_background(&mut self) -> Result<()> {
        if let Some(syncer) = &self.syncer {
            if syncer.synced_through() < self.sealing_through {
                // Then the previous seal is synced, or failed (and the check below
                // poisons the log): the thread only ends when the log drops it, and
                // its jobs do not panic.
                syncer.wait_idle();
            }
        }
        self.check_background_sync()?;
        let (Some(syncer), Some(seg)) = (&self.syncer, self.segments.back_mut()) else {
            return Ok(());
        };
        let through = seg.next();
        let refused = match seg.seal_unsynced() {
            Ok(files) => syncer.submit(files.into(), through).err(),
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        if let Some(files) = refused {
            // The thread is gone (or its queue full): sync here rather than not at all.
            if let Err(e) = files.iter().try_for_each(SyncFile::sync) {
                self.poisoned = true;
                return Err(e);
            }
            self.synced_to = self.synced_to.max(through);
        }
        self.sealing_through = through;
        // Every record appended so far is in the segment just handed over.
        self.unsynced = false;
        Ok(())
    }
}
