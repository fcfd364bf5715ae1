//! Appending to a segment: how many records of a batch fit, framing them, and
//! writing them to the end of the data file in few `pwritev` calls; the index
//! entries they get.

use std::fs::File;
use std::io::{self, IoSlice};
use std::time::SystemTime;

use bytes::Bytes;

use super::Segment;
use crate::error::Error;
use crate::file_io::{allocate, write_all_vectored_at, WRITE_BYTES_MAX};
use crate::index::Entry;
use crate::record::{self, HEADER_BYTES};

/// Records at least this large are written straight from the caller's buffer with
/// `pwritev` instead of being copied into the write buffer.
const LARGE_RECORD_BYTES: usize = 16 * 1024;

/// A record on its way into a segment: a bare payload (framed here) or a
/// [`record::Framed`] (written as is).
pub trait Appendable {
    /// Payload length.
    fn payload_len(&self) -> usize;
    /// The payload.
    fn payload(&self) -> &[u8];
    /// The whole frame, when the producer built it.
    fn frame(&self) -> Option<&[u8]>;
    /// What the in-memory tail keeps (the payload, without copying).
    fn tail(&self) -> Bytes;
}

impl Appendable for Bytes {
    fn payload_len(&self) -> usize {
        self.len()
    }
    fn payload(&self) -> &[u8] {
        self
    }
    fn frame(&self) -> Option<&[u8]> {
        None
    }
    fn tail(&self) -> Bytes {
        self.clone()
    }
}

impl Appendable for record::Framed {
    fn payload_len(&self) -> usize {
        record::Framed::payload_len(self)
    }
    fn payload(&self) -> &[u8] {
        &self.frame()[HEADER_BYTES..]
    }
    fn frame(&self) -> Option<&[u8]> {
        Some(record::Framed::frame(self))
    }
    fn tail(&self) -> Bytes {
        record::Framed::payload(self)
    }
}

/// A failed append: the error, and whether the data file was put back as it was.
#[derive(Debug)]
pub struct WriteFailure {
    /// What went wrong.
    pub error: Error,
    /// False when even truncating back failed: the segment's on-disk state is unknown.
    pub rolled_back: bool,
}

impl Segment {
    /// Append as many of `records` as fit within `segment_bytes_max` and the index;
    /// returns how many were appended (0 when the segment is full: roll).
    pub fn append<R: Appendable>(
        &mut self,
        records: &[R],
        segment_bytes_max: u64,
        scratch: &mut WriteScratch,
    ) -> Result<usize, WriteFailure> {
        let n = self.how_many_fit(records, segment_bytes_max);
        if n == 0 {
            return Ok(0);
        }
        let batch = &records[..n];
        if let Err(e) = write_frames(&self.data, self.data_len, batch, scratch) {
            let error = Error::io("write", &self.data_path, e);
            // Cut what the failed write left (whole frames among it would otherwise
            // be found by recovery after a later, shorter append), then restore the
            // preallocation as zeros; if that fails the file simply grows by appends.
            let rolled_back = self.data.set_len(self.data_len).is_ok();
            if rolled_back
                && self.file_len > self.data_len
                && allocate(&self.data, self.data_len, self.file_len).is_err()
            {
                self.file_len = self.data_len;
            }
            return Err(WriteFailure { error, rolled_back });
        }
        for r in batch {
            if self
                .policy
                .wants_entry(self.records, self.bytes_since_entry)
            {
                self.push_entry();
            }
            let frame = (HEADER_BYTES + r.payload_len()) as u64;
            self.bytes_since_entry += frame;
            self.data_len += frame;
            self.records += 1;
        }
        self.file_len = self.file_len.max(self.data_len);
        self.modified = SystemTime::now();
        Ok(n)
    }

    /// Index the record about to be appended at the end of the data.
    ///
    /// `how_many_fit` reserved the slot, and the position fits a `u32` because
    /// `segment_bytes_max <= u32::MAX` (`LogConfig::validate`): a failure is a bug,
    /// loud in debug builds. In release the entry is left out, never written with a
    /// wrong position: the index is sparser there, which reads and recovery handle.
    fn push_entry(&mut self) {
        let pushed = u32::try_from(self.data_len).is_ok_and(|pos| {
            self.index.push(Entry {
                rel: self.records,
                pos,
            })
        });
        if !pushed {
            tracing::error!(
                segment = %self.data_path.display(),
                records = self.records,
                data_len = self.data_len,
                "index entry left out: no slot reserved, or its position does not fit u32"
            );
        }
        debug_assert!(pushed, "index slot reserved and position within u32");
        self.bytes_since_entry = 0;
    }

    fn how_many_fit<R: Appendable>(&self, records: &[R], segment_bytes_max: u64) -> usize {
        let mut len = self.data_len;
        let mut since = self.bytes_since_entry;
        let mut free_entries = self.index.capacity().saturating_sub(self.index.len());
        for (n, r) in records.iter().enumerate() {
            // n < records.len() and the segment's record count fits u32 (see `read`).
            let rel = self.records + n as u32;
            let frame = (HEADER_BYTES + r.payload_len()) as u64;
            if len + frame > segment_bytes_max && rel > 0 {
                return n;
            }
            if self.policy.wants_entry(rel, since) {
                if free_entries == 0 {
                    return n;
                }
                free_entries -= 1;
                since = 0;
            }
            since += frame;
            len += frame;
        }
        records.len()
    }
}

/// Reusable buffers for framing a batch.
#[derive(Debug, Default)]
pub struct WriteScratch {
    /// Frames of small records, and headers of large ones.
    buf: Vec<u8>,
    /// `(end in buf, record index)`: after `buf[..end]` comes that large record's
    /// payload (or, for a pre-framed record, its whole frame).
    cuts: Vec<(usize, usize)>,
}

/// Write the frames of `records` to `file` at `pos` with few system calls: small
/// records are framed into one buffer, large payloads are written from their own
/// buffers, and everything goes out in `pwritev` calls of up to `IOV_MAX` slices and
/// `WRITE_BYTES_MAX` bytes.
fn write_frames<R: Appendable>(
    file: &File,
    mut pos: u64,
    records: &[R],
    scratch: &mut WriteScratch,
) -> io::Result<()> {
    scratch.buf.clear();
    scratch.cuts.clear();
    for (i, r) in records.iter().enumerate() {
        let large = r.payload_len() >= LARGE_RECORD_BYTES;
        match (r.frame(), large) {
            (Some(_), true) => scratch.cuts.push((scratch.buf.len(), i)),
            (Some(frame), false) => scratch.buf.extend_from_slice(frame),
            (None, true) => {
                scratch
                    .buf
                    .extend_from_slice(&record::encode_header(r.payload()));
                scratch.cuts.push((scratch.buf.len(), i));
            }
            (None, false) => record::encode_into(&mut scratch.buf, r.payload()),
        }
        if scratch.buf.len() >= WRITE_BYTES_MAX {
            pos = flush_frames(file, pos, records, scratch)?;
        }
    }
    flush_frames(file, pos, records, scratch).map(|_| ())
}

/// Returns the position after what was written.
fn flush_frames<R: Appendable>(
    file: &File,
    mut pos: u64,
    records: &[R],
    scratch: &mut WriteScratch,
) -> io::Result<u64> {
    let buf = &scratch.buf;
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * scratch.cuts.len() + 1);
    let mut prev = 0;
    for &(end, i) in &scratch.cuts {
        if end > prev {
            slices.push(IoSlice::new(&buf[prev..end]));
        }
        if let Some(r) = records.get(i) {
            slices.push(IoSlice::new(r.frame().unwrap_or_else(|| r.payload())));
        }
        prev = end;
    }
    if prev < buf.len() {
        slices.push(IoSlice::new(&buf[prev..]));
    }
    pos = write_all_vectored_at(file, pos, &mut slices)?;
    drop(slices);
    scratch.buf.clear();
    scratch.cuts.clear();
    Ok(pos)
}
