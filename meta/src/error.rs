//! The crate's errors: what the store met on disk, and what a caller of [`crate::Meta`]
//! is told.

use std::io;
use std::path::PathBuf;

use mesh::NodeId;

/// What went wrong reading or writing the store's directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS's error.
        source: io::Error,
    },
    /// `path` holds something the store never writes: a record whose checksum fails
    /// with more records after it, a gap in the entries, JSON that does not parse.
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry that would leave a hole in the log (a bug in the caller).
    #[error("entry {index} does not follow the log's last entry {last:?}")]
    Gap {
        /// The entry's index.
        index: u64,
        /// The index of the last entry, or of the last purged one.
        last: Option<u64>,
    },
    /// A thread panicked while holding the store's lock; the store refuses further use.
    #[error("the store's lock is poisoned")]
    Poisoned,
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

/// What a [`crate::Meta`] call could not do.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The node's store could not be opened or written.
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    /// The configuration cannot run: this node is not among the members, or a member
    /// id is 0.
    #[error("metadata config: {0}")]
    Config(String),
    /// This node is not the leader; propose on `leader` (`None`: no leader is known,
    /// an election is running).
    #[error("not the metadata leader (leader: {})", leader.map_or("unknown".to_string(), |n| n.to_string()))]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// No answer within the proposal timeout: the command may or may not be applied
    /// later (a leader cut off from the majority cannot commit).
    #[error("no metadata commit within {timeout_ms} ms; the command may still be applied")]
    Timeout {
        /// The timeout that passed.
        timeout_ms: u64,
    },
    /// The Raft node has stopped (after a storage error, or shut down).
    #[error("metadata raft stopped: {0}")]
    Stopped(String),
    /// The leader could not be reached to forward a proposal to it.
    #[error("metadata leader unreachable: {0}")]
    Unreachable(String),
    /// Raft refused the call for another reason.
    #[error("metadata raft: {0}")]
    Raft(String),
}
