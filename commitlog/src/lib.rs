//! rumq's commitlog: a segmented, append-only log of opaque records on disk.
//!
//! It knows nothing of MQTT or tokio and is used from one thread (the router's). A
//! [`Log`] owns one directory; records are appended (singly or in batches) and get
//! dense, monotonic [`Offset`]s that are never reused; readers pull by offset.
//!
//! Map of the crate, one owner per module:
//!
//! | module | owns |
//! |---|---|
//! | [`log`](crate::Log) | the directory, segment list, head, tail, fsync policy, retention (`log/open`, `append`, `sync`, `reads`, `removal`, `drop_behind`) |
//! | `segment` | one data file + index: append, positional reads, preallocation, sealing |
//! | `index` | the mmapped offset → position index of a segment |
//! | `record` | the on-disk frame of a record: length + CRC32C + payload |
//! | `inspect` | reading a log directory read-only: segments, records, how each ends |
//! | `read` | what reads take and hand out: [`ReadLimits`], [`ReadBatch`], [`Record`]s, large ones partly as a [`FileRange`] |
//! | `file_io` | positional `pread`/`pwritev`/`fallocate` on a segment's files |
//! | `recovery` | deciding what on disk is intact after a crash |
//! | `retention` | which old segments go (a pure planner) |
//! | `syncer` | the background `fdatasync` thread of `fsync = "interval"` |
//! | `page_cache` | the thread that lets the page cache go behind the readers (dropping behind) |
//! | `worker` | the named thread + bounded job queue both of those run on |
//! | `tail` | the newest records in memory, for caught-up readers |
//! | `timing` | histograms of append and fsync durations, read by metrics |
//! | `config` | [`LogConfig`], [`Fsync`], [`RetentionConfig`] |
//!
//! The on-disk format and the recovery rules are described byte by byte in
//! `docs/architecture.md`.

mod config;
mod error;
mod file_io;
mod index;
pub mod inspect;
mod log;
mod offset;
mod page_cache;
mod read;
pub mod record;
mod recovery;
mod retention;
mod segment;
mod syncer;
mod tail;
pub mod timing;
mod worker;

pub use config::{Fsync, LogConfig, RetentionConfig, SEGMENT_BYTES_LIMIT};
pub use error::{Error, Result};
pub use log::{Log, LogStats, RetentionReport};
pub use offset::Offset;
pub use read::{ByReference, FileRange, ReadBatch, ReadLimits, Record};
