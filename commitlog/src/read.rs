//! What a read hands out: records in memory, or large ones partly left in their file.
//!
//! A reader that only passes a record's bytes on (the broker writing a message to a
//! subscriber's socket) gains nothing from copying them into memory first: for records
//! of at least [`ByReference::min_bytes`], [`crate::Log::read_records`] reads only the
//! first [`ByReference::head_bytes`] and gives the rest as a [`FileRange`], which the
//! broker sends with `sendfile(2)` straight from the page cache. Records still in the
//! in-memory tail are given as they were appended: whole, or in the two parts of a
//! `record::Framed` whose producer kept a large payload apart (both in memory).

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

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
        crate::segment::read_exact_uninit(&self.file, self.pos, self.len).map(Bytes::from)
    }
}

/// Two ranges are equal when they name the same bytes of the same open file.
impl PartialEq for FileRange {
    fn eq(&self, other: &FileRange) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.pos == other.pos && self.len == other.len
    }
}

impl Eq for FileRange {}

/// One record as a read gave it: `head` is all of it, or its first bytes with `rest`
/// the remainder, left in its file (given by reference) or in a buffer of its own (a
/// large payload its producer kept apart, read from the tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    head: Bytes,
    rest: Option<Rest>,
}

/// The part of a [`Record`] that is not in its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rest {
    /// In memory, in a buffer of its own: a large payload its producer kept apart
    /// from the record's head rather than copy it (see `record::Framed`), still in
    /// the tail.
    Memory(Bytes),
    /// Left in the segment's file.
    File(FileRange),
}

impl Rest {
    /// Its length.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Rest::Memory(b) => b.len(),
            Rest::File(f) => f.len(),
        }
    }

    /// True when empty (never, for a rest a read hands out).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Record {
    pub(crate) fn by_reference(head: Bytes, rest: FileRange) -> Record {
        Record {
            head,
            rest: Some(Rest::File(rest)),
        }
    }

    /// A record in memory in two parts (none when `rest` is empty).
    pub(crate) fn in_parts(head: Bytes, rest: Bytes) -> Record {
        Record {
            head,
            rest: (!rest.is_empty()).then_some(Rest::Memory(rest)),
        }
    }

    /// The record's first bytes: the whole record unless [`Record::rest`] is some.
    /// With a rest, at least the head its producer wrote (for a message: its topic
    /// and properties) or the `head_bytes` asked for by reference.
    #[must_use]
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// The rest of the record, when it is not all in the head.
    #[must_use]
    pub fn rest(&self) -> Option<&Rest> {
        self.rest.as_ref()
    }

    /// The part left in the file, for a record given by reference.
    #[must_use]
    pub fn file_range(&self) -> Option<&FileRange> {
        match &self.rest {
            Some(Rest::File(f)) => Some(f),
            _ => None,
        }
    }

    /// The whole record, when it is all in one buffer.
    #[must_use]
    pub fn in_memory(&self) -> Option<&Bytes> {
        self.rest.is_none().then_some(&self.head)
    }

    /// The whole record's length.
    #[must_use]
    pub fn len(&self) -> usize {
        self.head.len() + self.rest.as_ref().map_or(0, Rest::len)
    }

    /// True for an empty record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole record in one buffer: the head itself, or the head and the rest
    /// (copied, or read from the file) one after the other.
    pub fn load(&self) -> io::Result<Bytes> {
        let rest = match &self.rest {
            None => return Ok(self.head.clone()),
            Some(Rest::Memory(b)) => b.clone(),
            Some(Rest::File(f)) => f.read()?,
        };
        Ok(join(&self.head, &rest))
    }
}

/// `head` and `rest` copied into one buffer.
pub(crate) fn join(head: &[u8], rest: &[u8]) -> Bytes {
    let mut whole = Vec::with_capacity(head.len() + rest.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(rest);
    Bytes::from(whole)
}

impl From<Bytes> for Record {
    fn from(head: Bytes) -> Record {
        Record { head, rest: None }
    }
}

/// What reads hand out: whole records in one buffer (`Bytes`) or [`Record`]s.
pub(crate) trait Readable: From<Bytes> {
    /// A record of the tail, kept as its producer handed it over: in one part, or
    /// in two when a large payload was kept apart (`rest` is then not empty).
    fn from_parts(head: &Bytes, rest: &Bytes) -> Self;
}

impl Readable for Bytes {
    fn from_parts(head: &Bytes, rest: &Bytes) -> Bytes {
        if rest.is_empty() {
            head.clone()
        } else {
            join(head, rest)
        }
    }
}

impl Readable for Record {
    fn from_parts(head: &Bytes, rest: &Bytes) -> Record {
        Record::in_parts(head.clone(), rest.clone())
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
