//! Durability: syncing appended records and directory entries under the `fsync`
//! policy, on this thread or handed to the background sync thread of `interval`,
//! and keeping track of what is known to be on stable storage.

use std::time::Instant;

use super::Log;
use crate::config::Fsync;
use crate::error::Result;
use crate::syncer::{SyncFile, Syncer, What};
use crate::Offset;

impl Log {
    /// Make the directory's entries durable (a segment created or removed): under
    /// `interval` on the sync thread, behind the jobs before it, so before any record
    /// appended later is taken as synced; here otherwise.
    pub(super) fn sync_dir_soon(&self) -> Result<()> {
        let dir = vec![SyncFile::directory(&self.dir)?];
        let refused = match &self.syncer {
            Some(syncer) => match syncer.submit(dir, Offset(0)) {
                Ok(()) => return Ok(()),
                Err(back) => back,
            },
            None => dir,
        };
        refused.iter().try_for_each(SyncFile::sync)
    }

    /// Force appended records to stable storage now (after waiting for a background
    /// sync in flight). A failed fsync poisons the log: after one, the kernel may
    /// have dropped the dirty pages, so retrying would lie.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(syncer) = &self.syncer {
            syncer.wait_idle();
        }
        self.check_background_sync()?;
        if !self.unsynced {
            return Ok(());
        }
        if let Some(seg) = self.segments.back() {
            let began = Instant::now();
            let synced = seg.sync();
            self.timings.fsync.observe(began.elapsed());
            if let Err(e) = synced {
                self.poisoned = true;
                return Err(e);
            }
        }
        self.synced_to = self.head;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Call periodically (at least every `fsync_interval_ms`): with
    /// `fsync = "interval"`, starts the background sync of appends that are due, and
    /// reports a background sync that failed (the log is poisoned then).
    pub fn tick(&mut self) -> Result<()> {
        if self.config.fsync == Fsync::Interval {
            self.check_background_sync()?;
            self.sync_if_due()?;
        }
        Ok(())
    }

    /// `fsync = "interval"`: hand the active segment to the sync thread when the
    /// interval has passed since the last sync began and none is running. A sync
    /// still running only delays the next one (see `syncer`).
    pub(super) fn sync_if_due(&mut self) -> Result<()> {
        if !self.unsynced || self.last_sync.elapsed() < self.config.fsync_interval() {
            return Ok(());
        }
        let (Some(syncer), Some(seg)) = (&self.syncer, self.segments.back()) else {
            return self.sync();
        };
        if syncer.is_busy() {
            return Ok(());
        }
        let data = SyncFile {
            file: seg.data_file().clone(),
            path: seg.data_path().to_path_buf(),
            what: What::Data,
        };
        if syncer.submit(vec![data], self.head).is_ok() {
            self.unsynced = false;
            self.last_sync = Instant::now();
            Ok(())
        } else {
            // The thread is gone: sync here rather than not at all.
            self.sync()
        }
    }

    /// Poison the log if a background sync failed; note what the others synced.
    pub(super) fn check_background_sync(&mut self) -> Result<()> {
        let Some(syncer) = &self.syncer else {
            return Ok(());
        };
        if let Some(e) = syncer.take_failure() {
            self.poisoned = true;
            tracing::error!(error = %e, "background fsync failed; the log is poisoned");
            return Err(e);
        }
        self.synced_to = self.synced_to.max(syncer.synced_through());
        Ok(())
    }

    /// True when appended records are not yet known to be on stable storage: not
    /// yet synced, or their background sync has not finished.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced || self.syncer.as_ref().is_some_and(Syncer::is_busy)
    }

    /// Records below this offset are known to be on stable storage: synced by
    /// [`Log::sync`], by an append under `fsync = "always"` or by a seal, or by the
    /// background sync of `fsync = "interval"` as of the last append or [`Log::tick`]
    /// (which note what that thread has finished). Read-only, for tests and metrics.
    pub fn synced_to(&self) -> Offset {
        self.synced_to
    }
}
