//! Page-cache advice, on one thread per log: letting the kernel drop the pages of
//! records that are on disk and behind every reader (*dropping behind*), with
//! `posix_fadvise(POSIX_FADV_DONTNEED)`. It changes nothing on disk.
//!
//! **Why.** As long as the log's page cache only grows, every page an append writes
//! into is one the kernel has to find in free memory, and on a virtual machine whose
//! free memory is handed back to the host (virtio-balloon free page reporting) the
//! first touch of such a page faults on the host too. Given back behind the readers,
//! the pages are freed while still backed, and the kernel hands recently freed pages
//! out first, so the next appends reuse them. Measured on our 2-core VM with 6.5 GB
//! of 64 KiB messages relayed: 439 MB/s dropping behind, 287 without. A reader that
//! goes back that far (a resumed session, a new reader) reads from disk. The log asks
//! only for synced ranges: the kernel does not drop dirty pages (it would start their
//! write-back instead).
//!
//! It used to warm pages ahead of the head too (`POSIX_FADV_WILLNEED` over the
//! preallocated file, so appends found pages in place). That only paid while appends
//! were written in calls of many megabytes, whose large folios came from memory the
//! host had taken back; with writes capped at 1 MiB (see `segment`), warming cost
//! more than it saved (64 KiB relay: 230 vs 439 MB/s over 6.5 GB; see
//! docs/performance.md), so it is gone.
//!
//! The owner hands over ranges and never waits; a range that cannot be handed over (the
//! queue is full) is asked for again later. Failures are logged at debug level.

use std::fs::File;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::worker::Worker;

/// Ranges waiting for the thread; more are asked for again later.
const QUEUE: usize = 4;

struct Job {
    file: Arc<File>,
    from: u64,
    to: u64,
}

/// The handle the log owns; dropping it lets the thread finish the jobs queued (at
/// most `QUEUE` more) and joins it.
pub(crate) struct PageCache(Worker<Job>);

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").finish_non_exhaustive()
    }
}

impl PageCache {
    /// Start the thread.
    pub(crate) fn start(name: &str) -> io::Result<PageCache> {
        Worker::start(name, QUEUE, |job: Job| advise(&job)).map(PageCache)
    }

    /// Let the kernel drop the clean pages wholly inside `from..to` of `file`; false
    /// when the queue is full (ask again later).
    pub(crate) fn drop_behind(&self, file: &Arc<File>, from: u64, to: u64) -> bool {
        self.0
            .try_send(Job {
                file: file.clone(),
                from,
                to,
            })
            .is_ok()
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_job: &Job) {}

#[cfg(target_os = "linux")]
fn advise(job: &Job) {
    if job.to <= job.from {
        // A length of 0 would mean "to the end of the file".
        return;
    }
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(job.from),
        // Cannot underflow: `to > from` was checked above.
        libc::off_t::try_from(job.to - job.from),
    ) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open
    // for as long as `job.file` lives, which outlasts the call.
    let rc = unsafe {
        libc::posix_fadvise(job.file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED)
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::from_raw_os_error(rc), "page cache advice failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_a_range_changes_nothing_that_reads_back() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create_new(&path).unwrap();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| i as u8).collect();
        file.write_all_at(&data, 0).unwrap();
        file.sync_all().unwrap();
        let file = Arc::new(file);
        let cache = PageCache::start("test-cache").unwrap();
        assert!(cache.drop_behind(&file, 0, 1 << 20));
        drop(cache); // joins after the job
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        let mut back = vec![0u8; 1 << 20];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut back, 0)
            .unwrap();
        assert_eq!(back, data);
    }
}
