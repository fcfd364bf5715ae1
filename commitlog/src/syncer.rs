//! The background fsyncs of `fsync = "interval"`: one thread per log that makes
//! records durable while the owner keeps appending.
//!
//! Under `interval` an append is acknowledged once it is in the page cache, so a
//! process crash loses nothing and a power failure loses at most about one interval.
//! Syncing on the appending thread gave the same guarantee but stalled every append
//! behind the disk for as long as the sync took: with 64 KiB messages the broker
//! spent more time waiting in `fdatasync` than writing. Here the owner hands files
//! over (the active segment every interval; a segment just sealed, data and index;
//! the directory after a segment was created) and goes on. Jobs run in order, and
//! each says which records it makes durable: once it is done, every record below its
//! `through` offset is on disk ([`Syncer::synced_through`]).
//!
//! A failed sync is kept and reported by the next [`Syncer::take_failure`]: the log
//! then poisons itself exactly as if its own `fdatasync` had failed (after a failed
//! fsync the kernel may have dropped the dirty pages, so retrying would lie).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::error::Error;
use crate::timing::Timings;
use crate::worker::Worker;
use crate::Offset;

/// Jobs that may wait behind the one running. The log needs two: a roll's seal, and
/// the directory after the next segment is created, behind an interval sync (see
/// `Log::roll`); a job refused is synced by the log itself.
const QUEUE: usize = 2;

/// A file to make durable, and its path for the error message.
pub(crate) struct SyncFile {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) what: What,
}

/// What of a file to make durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum What {
    /// Its data and size (`fdatasync`).
    Data,
    /// Data and all metadata (`fsync`).
    All,
    /// A directory's entries (`fsync` of the directory; a filesystem that cannot sync
    /// directories, `EINVAL`, is taken as having nothing to do).
    Directory,
}

impl SyncFile {
    /// The directory `dir`, opened to be synced.
    pub(crate) fn directory(dir: &Path) -> Result<SyncFile, Error> {
        let file = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
        Ok(SyncFile {
            file: Arc::new(file),
            path: dir.to_path_buf(),
            what: What::Directory,
        })
    }

    /// Sync it here, on the calling thread.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        let result = match self.what {
            What::Data => self.file.sync_data(),
            What::All => self.file.sync_all(),
            What::Directory => match self.file.sync_all() {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
                other => other,
            },
        };
        result.map_err(|e| Error::io("fsync", &self.path, e))
    }
}

struct Job {
    files: Vec<SyncFile>,
    through: Offset,
}

#[derive(Default)]
struct State {
    /// Jobs handed over that have not finished.
    pending: AtomicUsize,
    /// Signalled (under `idle_lock`) when a job finishes.
    idle: Condvar,
    idle_lock: Mutex<()>,
    /// Records below this offset are durable (the largest `through` of a job whose
    /// files all synced).
    synced_through: AtomicU64,
    /// Jobs completed (successful or not), for tests and metrics.
    done: AtomicU64,
    /// The first failure not yet reported to the log.
    failure: Mutex<Option<Error>>,
}

/// The handle the log owns; dropping it lets the thread finish the jobs queued and
/// joins it.
pub(crate) struct Syncer {
    worker: Worker<Job>,
    state: Arc<State>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("pending", &self.state.pending.load(Ordering::Relaxed))
            .field("done", &self.state.done.load(Ordering::Relaxed))
            .finish()
    }
}

impl Syncer {
    /// Start the thread; records below `synced_through` are durable already.
    pub(crate) fn start(
        name: &str,
        synced_through: Offset,
        timings: Arc<Timings>,
    ) -> io::Result<Syncer> {
        let state = Arc::new(State {
            synced_through: AtomicU64::new(synced_through.0),
            ..State::default()
        });
        let shared = state.clone();
        // After a failure nothing more is claimed durable: the records of the failed
        // job may be lost, and later ones are not a prefix without them.
        let mut failed = false;
        let worker = Worker::start(name, QUEUE, move |job: Job| {
            let began = Instant::now();
            let synced = job.files.iter().try_for_each(SyncFile::sync);
            timings.fsync.observe(began.elapsed());
            match synced {
                Ok(()) if !failed => {
                    shared
                        .synced_through
                        .fetch_max(job.through.0, Ordering::AcqRel);
                }
                Ok(()) => {}
                Err(e) => {
                    failed = true;
                    let mut failure = shared
                        .failure
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    failure.get_or_insert(e);
                }
            }
            shared.done.fetch_add(1, Ordering::Release);
            let _guard = shared
                .idle_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            shared.idle.notify_all();
        })?;
        Ok(Syncer { worker, state })
    }

    /// True while a handed-over job has not finished.
    pub(crate) fn is_busy(&self) -> bool {
        self.state.pending.load(Ordering::Acquire) > 0
    }

    /// Records below this offset are durable.
    pub(crate) fn synced_through(&self) -> Offset {
        Offset(self.state.synced_through.load(Ordering::Acquire))
    }

    /// Hand `files` over to be synced in order, after the jobs before them; once all
    /// are, the records below `through` are durable. The files come back when
    /// `QUEUE` jobs are waiting already or the thread is gone: the caller syncs them
    /// itself.
    pub(crate) fn submit(
        &self,
        files: Vec<SyncFile>,
        through: Offset,
    ) -> Result<(), Vec<SyncFile>> {
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        self.worker.try_send(Job { files, through }).map_err(|job| {
            self.state.pending.fetch_sub(1, Ordering::AcqRel);
            job.files
        })
    }

    /// Wait until every job handed over has finished.
    pub(crate) fn wait_idle(&self) {
        let mut guard = self
            .state
            .idle_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while self.is_busy() && !self.worker.is_finished() {
            guard = self
                .state
                .idle
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A sync that failed since the last call, once.
    pub(crate) fn take_failure(&self) -> Option<Error> {
        self.state
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Jobs completed so far.
    #[cfg(test)]
    pub(crate) fn completed(&self) -> u64 {
        self.state.done.load(Ordering::Acquire)
    }

    /// Let the thread finish the jobs queued, and stop it (dropping does too).
    pub(crate) fn stop(&mut self) {
        self.worker.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(file: &Arc<File>, path: &std::path::Path) -> Vec<SyncFile> {
        vec![SyncFile {
            file: file.clone(),
            path: path.to_path_buf(),
            what: What::Data,
        }]
    }

    #[test]
    fn jobs_run_in_order_and_say_what_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = Arc::new(File::create(&path).unwrap());
        let mut s = Syncer::start("test-sync", Offset(3), Arc::default()).unwrap();
        assert_eq!(s.synced_through(), Offset(3));
        assert!(s.submit(data(&f, &path), Offset(5)).is_ok());
        s.wait_idle();
        assert!(!s.is_busy());
        assert_eq!((s.completed(), s.synced_through()), (1, Offset(5)));
        // A seal queued behind a running sync: both run, in order.
        let mut files = data(&f, &path);
        files.push(SyncFile::directory(dir.path()).unwrap());
        assert!(s.submit(data(&f, &path), Offset(7)).is_ok());
        assert!(s.submit(files, Offset(9)).is_ok());
        s.stop();
        assert_eq!(s.completed(), 3, "stop waits for the jobs queued");
        assert_eq!(s.synced_through(), Offset(9));
        assert!(s.take_failure().is_none());
        let back = s.submit(data(&f, &path), Offset(10));
        assert_eq!(
            back.err().map(|f| f.len()),
            Some(1),
            "a stopped syncer gives the files back"
        );
    }

    #[test]
    fn a_failed_sync_is_reported_once_and_makes_nothing_durable() {
        // A read-only descriptor of a FIFO: fdatasync on it fails with EINVAL.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        // Opened read-write so the open does not block waiting for a writer.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let s = Syncer::start("test-sync", Offset(0), Arc::default()).unwrap();
        assert!(s.submit(data(&Arc::new(f), &path), Offset(4)).is_ok());
        s.wait_idle();
        let e = s.take_failure().expect("the failure is reported");
        assert!(e.to_string().contains("fsync"), "{e}");
        assert!(s.take_failure().is_none(), "and only once");
        assert_eq!(s.synced_through(), Offset(0));
        let good = dir.path().join("good");
        let g = Arc::new(File::create(&good).unwrap());
        assert!(s.submit(data(&g, &good), Offset(8)).is_ok());
        s.wait_idle();
        assert_eq!(
            s.synced_through(),
            Offset(0),
            "nothing after a failure either"
        );
    }
}
