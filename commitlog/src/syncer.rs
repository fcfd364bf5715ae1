//! The background `fdatasync` of `fsync = "interval"`: one thread per log that makes
//! the active segment durable while the owner keeps appending.
//!
//! Under `interval` an append is acknowledged once it is in the page cache, so a
//! process crash loses nothing and a power failure loses at most about one interval.
//! Syncing on the appending thread gave the same guarantee but stalled every append
//! behind the disk for as long as the sync took: with 64 KiB messages the broker
//! spent more time waiting in `fdatasync` than writing. Here the owner hands the
//! segment's file (a duplicate of its descriptor) to this thread and goes on; at
//! most one sync is outstanding, and a sync still running when the next interval is
//! due simply makes the next one start later.
//!
//! A failed sync is kept and reported by the next [`Syncer::take_failure`]: the log
//! then poisons itself exactly as if its own `fdatasync` had failed (after a failed
//! fsync the kernel may have dropped the dirty pages, so retrying would lie).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::Error;
use crate::worker::Worker;

/// A file to make durable, and its path for the error message.
struct Job {
    file: File,
    path: PathBuf,
}

#[derive(Default)]
struct State {
    /// A job was handed over and has not finished.
    busy: AtomicBool,
    /// Signalled (under `idle_lock`) when a job finishes.
    idle: Condvar,
    idle_lock: Mutex<()>,
    /// Syncs completed (successful or not), for tests and metrics.
    done: AtomicU64,
    /// The first failure not yet reported to the log.
    failure: Mutex<Option<Error>>,
}

/// The handle the log owns; dropping it stops the thread after the job in hand.
pub(crate) struct Syncer {
    worker: Worker<Job>,
    state: Arc<State>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("busy", &self.state.busy.load(Ordering::Relaxed))
            .field("done", &self.state.done.load(Ordering::Relaxed))
            .finish()
    }
}

impl Syncer {
    /// Start the thread.
    pub(crate) fn start(name: &str) -> io::Result<Syncer> {
        let state = Arc::new(State::default());
        let shared = state.clone();
        // One slot: the log never hands over a job while one is running.
        let worker = Worker::start(name, 1, move |job: Job| {
            if let Err(e) = job.file.sync_data() {
                let mut failure = shared
                    .failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                failure.get_or_insert(Error::io("fsync", &job.path, e));
            }
            shared.done.fetch_add(1, Ordering::Release);
            let _guard = shared
                .idle_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            shared.busy.store(false, Ordering::Release);
            shared.idle.notify_all();
        })?;
        Ok(Syncer { worker, state })
    }

    /// True while a handed-over sync has not finished.
    pub(crate) fn is_busy(&self) -> bool {
        self.state.busy.load(Ordering::Acquire)
    }

    /// Hand `file` over to be synced. Returns false (and does nothing) while the
    /// previous sync is still running or if the thread is gone.
    pub(crate) fn submit(&self, file: File, path: PathBuf) -> bool {
        if self.is_busy() {
            return false;
        }
        self.state.busy.store(true, Ordering::Release);
        if !self.worker.try_send(Job { file, path }) {
            // Only a dead thread refuses: the slot is free whenever we are not busy.
            self.state.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Wait until the sync in hand, if any, has finished.
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

    /// Syncs completed so far.
    #[cfg(test)]
    pub(crate) fn completed(&self) -> u64 {
        self.state.done.load(Ordering::Acquire)
    }

    /// Wait for the sync in hand, if any, and stop the thread (dropping does too).
    pub(crate) fn stop(&mut self) {
        self.worker.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_one_file_at_a_time_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let mut s = Syncer::start("test-sync").unwrap();
        assert!(s.submit(f.try_clone().unwrap(), path.clone()));
        s.wait_idle();
        assert!(!s.is_busy());
        assert_eq!(s.completed(), 1);
        assert!(s.submit(f.try_clone().unwrap(), path.clone()));
        s.stop();
        assert_eq!(s.completed(), 2, "stop waits for the job in hand");
        assert!(s.take_failure().is_none());
        assert!(!s.submit(f, path), "a stopped syncer takes nothing");
    }

    #[test]
    fn a_failed_sync_is_reported_once() {
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
        let s = Syncer::start("test-sync").unwrap();
        assert!(s.submit(f, path));
        s.wait_idle();
        let e = s.take_failure().expect("the failure is reported");
        assert!(e.to_string().contains("fsync"), "{e}");
        assert!(s.take_failure().is_none(), "and only once");
    }
}
