//! The Raft log and vote, kept in a directory:
//!
//! | file | holds | written |
//! |---|---|---|
//! | `raft.log` | entries, framed as `log_file` says | appended, fsynced before `append` reports; cut by `truncate` |
//! | `vote.json` | the vote | replaced whole (`durable`), before `save_vote` returns |
//! | `committed.json` | the last committed entry id | replaced whole |
//! | `purged.json` | the last purged entry id | replaced whole, then `raft.log` is rewritten without the purged entries |
//!
//! Every entry also stays in memory: the metadata log holds kB, and openraft purges
//! it behind each snapshot. The I/O is blocking and done in place: it is a few small
//! writes a second, and openraft serialises storage calls anyway.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageError, StorageIOError, Vote};

use crate::durable;
use crate::error::StoreError;
use crate::log_file;
use crate::types::{Entry, EntryId, RaftNodeId, TypeConfig};

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";

/// The file-backed Raft log store of one node. Clones share the store (openraft's
/// replication tasks read through clones).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

/// Entries by index, each with where its record starts in `raft.log`.
type Entries = BTreeMap<u64, (u64, Entry)>;

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    entries: Entries,
    file_bytes: u64,
    vote: Option<Vote<RaftNodeId>>,
    committed: Option<EntryId>,
    purged: Option<EntryId>,
}

impl LogStore {
    /// Opens the store in `dir`, creating the directory if needed. A torn last record
    /// is cut off; any other damage is an error naming the file.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let vote = durable::read_json(&dir.join(VOTE_FILE))?;
        let committed = durable::read_json(&dir.join(COMMITTED_FILE))?;
        let purged: Option<EntryId> = durable::read_json(&dir.join(PURGED_FILE))?;
        let path = dir.join(LOG_FILE);
        let (entries, file_bytes) = recover(&path, purged.map(|id| id.index))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        durable::sync_dir(&path)?;
        let inner = Inner {
            dir: dir.to_path_buf(),
            file,
            entries,
            file_bytes,
            vote,
            committed,
            purged,
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// True if nothing was ever stored here: no vote, no entry, nothing purged. Only
    /// such a store may be initialized (openraft#1535: initializing again on restart
    /// makes a node campaign forever).
    pub fn is_fresh(&self) -> Result<bool, StoreError> {
        let inner = self.lock()?;
        Ok(inner.vote.is_none() && inner.entries.is_empty() && inner.purged.is_none())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }
}

/// Reads `raft.log`: cuts a torn tail, decodes every record, skips those at or below
/// `purged` (a purge that crashed before its rewrite), and checks there is no gap.
fn recover(path: &Path, purged: Option<u64>) -> Result<(Entries, u64), StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |offset, reason| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let scan = log_file::scan(&bytes).map_err(|c| corrupt(c.offset, c.reason))?;
    if scan.valid_bytes < bytes.len() as u64 {
        tracing::warn!(path = %path.display(), kept_bytes = scan.valid_bytes, torn_bytes = bytes.len() as u64 - scan.valid_bytes, "cutting a torn tail off the raft log");
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(StoreError::io(path))?;
        file.set_len(scan.valid_bytes)
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io(path))?;
    }
    let mut entries = BTreeMap::new();
    let mut last = purged;
    for (offset, payload) in scan.records {
        let entry: Entry =
            serde_json::from_slice(&bytes[payload]).map_err(|e| corrupt(offset, e.to_string()))?;
        let index = entry.log_id.index;
        if purged.is_some_and(|p| index <= p) {
            continue;
        }
        if last.is_some_and(|l| index != l + 1) {
            return Err(corrupt(
                offset,
                format!("entry {index} follows entry {last:?}"),
            ));
        }
        last = Some(index);
        entries.insert(index, (offset, entry));
    }
    Ok((entries, scan.valid_bytes))
}

impl Inner {
    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries
            .keys()
            .next_back()
            .copied()
            .or(self.purged.map(|id| id.index))
    }

    fn append(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        let mut last = self.last_index();
        for entry in entries {
            let index = entry.log_id.index;
            if last.is_some_and(|l| index != l + 1) {
                return Err(StoreError::Gap { index, last });
            }
            last = Some(index);
            let offset = self.file_bytes + bytes.len() as u64;
            frame_entry(&entry, &self.log_path(), &mut bytes)?;
            placed.push((offset, entry));
        }
        let path = self.log_path();
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(StoreError::io(&path))?;
        self.file_bytes += bytes.len() as u64;
        for (offset, entry) in placed {
            self.entries.insert(entry.log_id.index, (offset, entry));
        }
        Ok(())
    }

    /// Removes the entries from `index` on, from memory and from the file.
    fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        let Some(&(offset, _)) = self.entries.get(&index) else {
            return Ok(()); // nothing at or after it (entries are consecutive)
        };
        let path = self.log_path();
        self.file
            .set_len(offset)
            .and_then(|()| self.file.sync_all())
            .map_err(StoreError::io(&path))?;
        self.file_bytes = offset;
        self.entries.split_off(&index);
        Ok(())
    }

    /// Forgets the entries up to `upto`: records it in `purged.json`, then rewrites
    /// `raft.log` with what is left (a crash between the two is undone by `recover`).
    fn purge(&mut self, upto: EntryId) -> Result<(), StoreError> {
        durable::write_json(&self.dir.join(PURGED_FILE), &upto)?;
        self.purged = Some(upto);
        self.entries = self.entries.split_off(&(upto.index + 1));
        let path = self.log_path();
        let mut bytes = Vec::new();
        for (offset, entry) in self.entries.values_mut() {
            *offset = bytes.len() as u64;
            frame_entry(entry, &path, &mut bytes)?;
        }
        durable::replace(&path, &bytes)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        self.file_bytes = bytes.len() as u64;
        Ok(())
    }
}

/// Appends `entry` to `out` as one record of the log file at `path`.
fn frame_entry(entry: &Entry, path: &Path, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let payload = serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!("cannot encode entry {}: {e}", entry.log_id.index),
    })?;
    log_file::frame(&payload, out);
    Ok(())
}

fn read_err(e: StoreError) -> StorageError<RaftNodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: StoreError) -> StorageError<RaftNodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<RaftNodeId>> {
        let inner = self.lock().map_err(read_err)?;
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (_, entry))| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftNodeId>> {
        let inner = self.lock().map_err(read_err)?;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|(_, entry)| entry.log_id);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last.or(inner.purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<(), StorageError<RaftNodeId>> {
        let mut inner = self.lock().map_err(write_err)?;
        durable::write_json(&inner.dir.join(VOTE_FILE), vote)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftNodeId>>, StorageError<RaftNodeId>> {
        Ok(self.lock().map_err(read_err)?.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<EntryId>,
    ) -> Result<(), StorageError<RaftNodeId>> {
        let mut inner = self.lock().map_err(write_err)?;
        durable::write_json(&inner.dir.join(COMMITTED_FILE), &committed).map_err(write_err)?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<EntryId>, StorageError<RaftNodeId>> {
        Ok(self.lock().map_err(read_err)?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<RaftNodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock().map_err(write_err)?;
        inner
            .append(entries.into_iter().collect())
            .map_err(write_err)?;
        // The records are fsynced: only now may openraft count them as held here.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: EntryId) -> Result<(), StorageError<RaftNodeId>> {
        self.lock()
            .and_then(|mut inner| inner.truncate(log_id.index))
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: EntryId) -> Result<(), StorageError<RaftNodeId>> {
        self.lock()
            .and_then(|mut inner| inner.purge(log_id))
            .map_err(write_err)
    }
}

#[cfg(test)]
#[path = "log_store/tests.rs"]
mod tests;
