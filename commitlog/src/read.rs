//! What a read takes and hands out: its limits, the batch it returns, and records in
//! memory or, large ones, partly left in their file.
//!
//! A reader that only passes a record's bytes on (the broker writing a message to a
//! subscriber's socket) gains nothing from copying them into memory first: for records
//! of at least [`ByReference::min_bytes`], [`crate::Log::read_records`] reads only the
//! first [`ByReference::head_bytes`] and gives the rest as a [`FileRange`], which the
//! broker sends with `sendfile(2)` straight from the page cache. Records still in the
//! in-memory tail are always given whole (they are in memory already).

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::Offset;

/// Bytes of a segment's data file, handed out instead of read. Holding one keeps the
/// file open: a segment that retention removes stays readable through it until the
/// last one is dropped.
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<File>,
    pos: u64,
    len: usize,
}

impl FileRange {
    pub(crate) fn new(file: Arc<File>, pos: u64, len: usize) -> FileRange {
        FileRange { file, pos, len }
    }

    /// The file the bytes are in.
    #[must_use]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where in the file they start.
    #[must_use]
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty range.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Read the bytes into memory (for a reader that needs them after all).
    pub fn read(&self) -> io::Result<Bytes> {
        crate::file_io::read_exact_uninit(&self.file, self.pos, self.len).map(Bytes::from)
    }
}

/// Two ranges are equal when they name the same bytes of the same open file.
impl PartialEq for FileRange {
    fn eq(&self, other: &FileRange) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.pos == other.pos && self.len == other.len
    }
}

impl Eq for FileRange {}

/// One record as a read gave it: `head` is all of it, or (given by reference) its
/// first bytes, with `rest` the remainder in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    head: Bytes,
    rest: Option<FileRange>,
}

impl Record {
    pub(crate) fn by_reference(head: Bytes, rest: FileRange) -> Record {
        Record {
            head,
            rest: Some(rest),
        }
    }

    /// The bytes in memory: the whole record unless [`Record::rest`] is some.
    #[must_use]
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// The part left in the file, for a record given by reference.
    #[must_use]
    pub fn rest(&self) -> Option<&FileRange> {
        self.rest.as_ref()
    }

    /// The whole record, when it is all in memory.
    #[must_use]
    pub fn in_memory(&self) -> Option<&Bytes> {
        self.rest.is_none().then_some(&self.head)
    }

    /// The whole record's length.
    #[must_use]
    pub fn len(&self) -> usize {
        self.head.len() + self.rest.as_ref().map_or(0, FileRange::len)
    }

    /// True for an empty record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole record in memory: the head itself, or the head and the rest read
    /// from the file into one buffer.
    pub fn load(&self) -> io::Result<Bytes> {
        let Some(rest) = &self.rest else {
            return Ok(self.head.clone());
        };
        let mut whole = Vec::with_capacity(self.len());
        whole.extend_from_slice(&self.head);
        whole.extend_from_slice(&rest.read()?);
        Ok(Bytes::from(whole))
    }
}

impl From<Bytes> for Record {
    fn from(head: Bytes) -> Record {
        Record { head, rest: None }
    }
}

/// Which records a read gives by reference, and how much of each it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByReference {
    /// Records of at least this many bytes are given by reference...
    pub min_bytes: usize,
    /// ...with this many of their first bytes read into memory (what the reader
    /// needs to look at; it can [`Record::load`] the whole when that was too few).
    pub head_bytes: usize,
}

/// Bounds on one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// At most this many records.
    pub records_max: usize,
    /// At most this many bytes (payloads plus their 8-byte headers); the first record is
    /// given even when it alone is larger.
    pub bytes_max: usize,
}

/// What a read returned: records `first..next` were pushed to the output, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBatch {
    /// The offset of the first record given. Equal to the requested offset except
    /// after a hole that recovery left (see `docs/architecture.md`).
    pub first: Offset,
    /// The offset to read from next. `first == next` means the reader is at the head.
    pub next: Offset,
}

impl ReadBatch {
    /// Records in the batch.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.next.distance_from(self.first)
    }

    /// True when the reader was at the head: nothing new yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.first == self.next
    }
}
