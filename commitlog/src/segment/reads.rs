//! Reading a segment: records from an offset within limits, whole or (large ones)
//! by reference to the data file, found through the index.

use bytes::{Bytes, BytesMut};

use super::Segment;
use crate::error::{Error, Result};
use crate::file_io::{read_exact_onto, read_exact_uninit};
use crate::index::Entry;
use crate::read::{ByReference, FileRange, ReadLimits, Record};
use crate::record::{self, Frame, HEADER_BYTES};
use crate::Offset;

impl Segment {
    /// Read records from `offset` (which must lie in `base..next`) into `out`, within
    /// `limits`; returns the offset after the last record given. At least one record is
    /// given even when it alone exceeds `limits.bytes_max`.
    pub fn read<R: From<Bytes>>(
        &self,
        offset: Offset,
        limits: ReadLimits,
        out: &mut Vec<R>,
    ) -> Result<Offset> {
        let Some(rel) = self.rel_of(offset) else {
            return Ok(offset);
        };
        if limits.records_max == 0 {
            return Ok(offset);
        }
        let FirstRead {
            mut pos,
            mut cur,
            mut want,
            budget,
        } = self.first_read(rel, limits);
        let mut given = 0usize;
        let mut bytes = 0usize;
        loop {
            let want_now = want.min(self.data_len - pos) as usize;
            let buf = self.read_bytes(pos, want_now)?;
            let mut i = 0usize;
            while i < buf.len() {
                match record::decode_with(
                    &buf[i..],
                    self.policy.record_bytes_max,
                    self.policy.verify_reads,
                ) {
                    Frame::Record { len } => {
                        let frame = HEADER_BYTES + len;
                        if cur >= rel {
                            if given > 0 && bytes + frame > limits.bytes_max {
                                return Ok(offset.add(given as u64));
                            }
                            out.push(R::from(buf.slice(i + HEADER_BYTES..i + frame)));
                            given += 1;
                            bytes += frame;
                        }
                        cur += 1;
                        i += frame;
                        if given == limits.records_max || cur == self.records {
                            return Ok(offset.add(given as u64));
                        }
                    }
                    Frame::Incomplete { needed } => {
                        if given > 0 {
                            return Ok(offset.add(given as u64));
                        }
                        // Still skipping (sparse index) or the first record is larger
                        // than the window: read on from this frame.
                        want = (needed as u64).max(budget);
                        break;
                    }
                    Frame::Corrupt => {
                        return Err(Error::Corrupt {
                            offset: self.base.add(u64::from(cur)),
                            path: self.data_path.clone(),
                        });
                    }
                }
            }
            if given > 0 {
                return Ok(offset.add(given as u64));
            }
            pos += i as u64;
            if pos >= self.data_len {
                // The index promised records that the data does not hold.
                return Err(Error::Corrupt {
                    offset: self.base.add(u64::from(cur)),
                    path: self.data_path.clone(),
                });
            }
        }
    }

    /// Where a read of the records from `rel` starts (the index entry at or before
    /// it) and how many bytes it reads first: up to the end of the records asked
    /// for, within the byte budget, but the whole first record when the index says
    /// where it ends.
    fn first_read(&self, rel: u32, limits: ReadLimits) -> FirstRead {
        let start = self.index.floor(rel).unwrap_or(Entry { rel: 0, pos: 0 });
        let wanted = u64::try_from(limits.records_max).unwrap_or(u64::MAX);
        let rel_end = u32::try_from(u64::from(rel).saturating_add(wanted)).unwrap_or(u32::MAX);
        let end = self
            .index
            .ceil_pos(rel_end)
            .map_or(self.data_len, u64::from)
            .min(self.data_len);
        let skip_slack = u64::from(self.policy.index_interval_bytes) + HEADER_BYTES as u64;
        let budget = limits.bytes_max as u64 + skip_slack;
        let pos = u64::from(start.pos);
        let mut want = (end.max(pos + 1) - pos)
            .min(budget)
            .max(HEADER_BYTES as u64);
        if start.rel == rel {
            // The index knows where the first record ends: read all of it even when it
            // is larger than the byte budget (it is given anyway), not a part and then
            // the whole of it again.
            let first_end = self
                .index
                .ceil_pos(rel.saturating_add(1))
                .map_or(self.data_len, u64::from)
                .min(self.data_len);
            want = want.max(first_end.saturating_sub(pos));
        }
        FirstRead {
            pos,
            cur: start.rel,
            want,
            budget,
        }
    }

    /// As [`Segment::read`], but records of at least `by_ref.min_bytes` are given by
    /// reference: their first `by_ref.head_bytes` read, the rest left in the file
    /// (see `read`). Runs of smaller records are read as by `read`, one read per run.
    /// Needs an entry per record in the index (to know each record's size unread) and
    /// reads whose CRC is not checked; otherwise every record is read whole.
    pub fn read_by_reference(
        &self,
        offset: Offset,
        limits: ReadLimits,
        by_ref: ByReference,
        out: &mut Vec<Record>,
    ) -> Result<Offset> {
        if self.policy.verify_reads || self.policy.index_interval_bytes != 0 {
            return self.read(offset, limits, out);
        }
        let mut at = offset;
        let mut bytes = 0usize;
        // The heads read share allocations, a few dozen to each.
        let mut heads = BytesMut::new();
        while at < self.next() && at.distance_from(offset) < limits.records_max as u64 {
            let Some((pos, end)) = self.frame_at(at) else {
                // An index without an entry per record (written with another
                // interval): read the rest whole.
                let left = ReadLimits {
                    records_max: limits.records_max - at.distance_from(offset) as usize,
                    bytes_max: limits.bytes_max.saturating_sub(bytes),
                };
                return if at > offset && left.bytes_max == 0 {
                    Ok(at)
                } else {
                    self.read(at, left, out)
                };
            };
            let frame = usize::try_from(end - pos).unwrap_or(usize::MAX);
            if at > offset && bytes.saturating_add(frame) > limits.bytes_max {
                break;
            }
            let len = frame.saturating_sub(HEADER_BYTES);
            if len < by_ref.min_bytes {
                // This record and the small ones after it, whole, in one read.
                let (run_end, run_bytes) = self.small_run(at, frame, offset, limits, bytes, by_ref);
                let run = ReadLimits {
                    records_max: run_end.distance_from(at) as usize,
                    bytes_max: run_bytes,
                };
                at = self.read(at, run, out)?;
                bytes += run_bytes;
                continue;
            }
            let head = by_ref.head_bytes.min(len);
            if heads.capacity() - heads.len() < HEADER_BYTES + head {
                heads = BytesMut::with_capacity(32 * (HEADER_BYTES + head));
            }
            let buf = read_exact_onto(&self.data, pos, HEADER_BYTES + head, &mut heads)
                .map_err(|e| Error::io("read", &self.data_path, e))?;
            let intact = match record::decode_with(&buf, self.policy.record_bytes_max, false) {
                Frame::Record { len: l } => l == len,
                Frame::Incomplete { needed } => needed == frame,
                Frame::Corrupt => false,
            };
            if !intact {
                return Err(Error::Corrupt {
                    offset: at,
                    path: self.data_path.clone(),
                });
            }
            let rest = FileRange::new(
                self.data.clone(),
                pos + (HEADER_BYTES + head) as u64,
                len - head,
            );
            out.push(Record::by_reference(buf.slice(HEADER_BYTES..), rest));
            bytes += frame;
            at = at.add(1);
        }
        Ok(at)
    }

    /// The run of records below `by_ref.min_bytes` that starts with record `at` (of
    /// `frame` bytes), within what is left of `limits` (a read from `offset` that has
    /// taken `bytes`): where it ends, and its bytes.
    fn small_run(
        &self,
        at: Offset,
        frame: usize,
        offset: Offset,
        limits: ReadLimits,
        bytes: usize,
        by_ref: ByReference,
    ) -> (Offset, usize) {
        let mut run_end = at.add(1);
        let mut run_bytes = frame;
        while run_end < self.next() && run_end.distance_from(offset) < limits.records_max as u64 {
            let Some((p, e)) = self.frame_at(run_end) else {
                break;
            };
            let f = usize::try_from(e - p).unwrap_or(usize::MAX);
            if f - HEADER_BYTES >= by_ref.min_bytes
                || bytes.saturating_add(run_bytes + f) > limits.bytes_max
            {
                break;
            }
            run_bytes += f;
            run_end = run_end.add(1);
        }
        (run_end, run_bytes)
    }

    /// Where the frame of record `at` starts and ends, when the index has an entry
    /// for it and for the record after it (or it is the last).
    fn frame_at(&self, at: Offset) -> Option<(u64, u64)> {
        let rel = usize::try_from(at.distance_from(self.base)).ok()?;
        let start = self.index.get(rel).filter(|e| e.rel as usize == rel)?;
        let end = if rel + 1 == self.records as usize {
            self.data_len
        } else {
            u64::from(
                self.index
                    .get(rel + 1)
                    .filter(|e| e.rel as usize == rel + 1)?
                    .pos,
            )
        };
        (end >= u64::from(start.pos) + HEADER_BYTES as u64).then_some((u64::from(start.pos), end))
    }

    fn read_bytes(&self, pos: u64, len: usize) -> Result<Bytes> {
        read_exact_uninit(&self.data, pos, len)
            .map(Bytes::from)
            .map_err(|e| Error::io("read", &self.data_path, e))
    }
}

/// The start of a segment read (see `Segment::first_read`).
struct FirstRead {
    /// Where the first frame read begins: at the record asked for, or at an earlier
    /// one when the index is sparse.
    pos: u64,
    /// The relative offset of the record at `pos`.
    cur: u32,
    /// Bytes to read first.
    want: u64,
    /// Bytes a read may take: the caller's budget plus what skipping from an
    /// earlier index entry costs.
    budget: u64,
}
