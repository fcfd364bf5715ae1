//! The commitlog's error type: one enum, every I/O error with the path it concerns.

use std::io;
use std::path::PathBuf;

use crate::Offset;

/// Everything that can go wrong in the commitlog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call failed on `path`.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing (`"open"`, `"write"`, `"fsync"`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The directory exists but does not hold a rumq commitlog.
    #[error("{} is not a rumq commitlog directory: {reason}", path.display())]
    NotALog {
        /// The directory.
        path: PathBuf,
        /// Why we think so.
        reason: String,
    },

    /// Another process (or another `Log` in this one) holds the directory's lock.
    #[error("{} is locked by another process", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A read asked for an offset that retention already removed.
    #[error("offset {requested} is below the earliest retained offset {earliest}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The earliest offset still in the log: resume from here.
        earliest: Offset,
    },

    /// A read asked for an offset that has not been written yet (past the head).
    #[error("offset {requested} is beyond the head of the log ({head})")]
    OffsetBeyondHead {
        /// The offset asked for.
        requested: Offset,
        /// The next offset to be written.
        head: Offset,
    },

    /// A record is larger than `record_bytes_max`.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Its length.
        len: usize,
        /// The configured maximum.
        max: u32,
    },

    /// A record already written failed its checksum on read (bit rot, or a file
    /// changed behind our back).
    #[error("corrupt record at offset {offset} in {}", path.display())]
    Corrupt {
        /// The offset of the bad record.
        offset: Offset,
        /// The data file it is in.
        path: PathBuf,
    },

    /// An earlier write or fsync failed in a way that leaves the on-disk state unknown;
    /// the log refuses further appends until it is reopened (which runs recovery).
    #[error("log is poisoned by an earlier I/O failure; reopen it to recover")]
    Poisoned,

    /// The configuration is inconsistent.
    #[error("invalid commitlog config: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error is the disk (or quota) being full: the caller may refuse
    /// new data and retry later, nothing is wrong with what is stored.
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

/// The commitlog's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
