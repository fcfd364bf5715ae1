//! Page-cache advice, on one thread per log: filling the active segment's pages ahead
//! of the head (*warming*) and letting the kernel drop the pages behind every reader
//! (*dropping behind*). Both are `posix_fadvise` calls; neither changes what is on disk.
//!
//! **Why warm.** A buffered write into a file region that has no page cache yet must
//! allocate and map each page while copying. On a virtual machine whose free memory is
//! handed back to the host (virtio-balloon free page reporting), every such page is a
//! fault on the host too: measured on our 2-core VM, writing 1 GB into fresh pages ran
//! at 0.4-1.4 GB/s, and over pages already cached at 3.8-4.5 GB/s. With 64 KiB
//! messages that copy was most of the router thread's time. So the active segment's
//! data file is created at its full size (allocated, unwritten), and this thread asks
//! for the region just ahead of the head with `POSIX_FADV_WILLNEED`: the kernel fills
//! the unwritten blocks (or holes) with clean zero pages (no disk I/O, nothing to
//! write back), and the append then overwrites pages that exist. Recovery already
//! treats the zeros after the last record as a torn tail, and a sealed segment is
//! trimmed to its data, so the preallocation is invisible on disk once a segment is
//! done. Under `fsync = "never"` the log neither preallocates
//! nor warms (see `LogConfig::preallocate`).
//!
//! **Why drop behind.** Warming moves the cost of fresh pages off the appending thread
//! but does not remove it: as long as the page cache only grows, every page of the log
//! is a fresh one (in the 64 KiB benchmark the warm-up was 29 % of the broker's CPU).
//! Pages of records that every reader has passed and that are on disk already are
//! given back with `POSIX_FADV_DONTNEED`; the kernel hands the most recently freed
//! pages out first, so the next appends and warm-ups reuse them while they are still
//! backed by the host. A reader that goes back that far (a resumed session, a new
//! reader) reads from disk. The log asks only for synced ranges: the kernel does not
//! drop dirty pages (it would start their write-back instead).
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
/// Warm-ups are asked for in pieces of this size. Linux acts on at most the device's
/// read-ahead (or I/O) size of a `WILLNEED` call and silently drops the rest; 128 KiB
/// is the default read-ahead, so every byte asked for is warmed. Small pieces also
/// let a job for a segment that was meanwhile sealed or removed end soon (the kernel
/// ignores advice past the end of a file).
const PIECE: u64 = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Advice {
    /// Fill the range with pages.
    Warm,
    /// The range's clean pages may go.
    Drop,
}

struct Job {
    file: Arc<File>,
    from: u64,
    to: u64,
    advice: Advice,
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

    /// Ask for `from..to` of `file` to be brought into the page cache; false when the
    /// queue is full (ask again later).
    pub(crate) fn warm(&self, file: &Arc<File>, from: u64, to: u64) -> bool {
        self.send(file, from, to, Advice::Warm)
    }

    /// Let the kernel drop the clean pages wholly inside `from..to` of `file`; false
    /// when the queue is full (ask again later).
    pub(crate) fn drop_behind(&self, file: &Arc<File>, from: u64, to: u64) -> bool {
        self.send(file, from, to, Advice::Drop)
    }

    fn send(&self, file: &Arc<File>, from: u64, to: u64, advice: Advice) -> bool {
        self.0
            .try_send(Job {
                file: file.clone(),
                from,
                to,
                advice,
            })
            .is_ok()
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_job: &Job) {}

#[cfg(target_os = "linux")]
fn advise(job: &Job) {
    let (piece, advice) = match job.advice {
        Advice::Warm => (PIECE, libc::POSIX_FADV_WILLNEED),
        // One call: the kernel drops any length at once.
        Advice::Drop => (u64::MAX, libc::POSIX_FADV_DONTNEED),
    };
    let mut pos = job.from;
    while pos < job.to {
        let len = piece.min(job.to - pos);
        let (Ok(offset), Ok(len_arg)) = (libc::off_t::try_from(pos), libc::off_t::try_from(len))
        else {
            return;
        };
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is
        // open for as long as `job.file` lives, which outlasts the call.
        let rc = unsafe { libc::posix_fadvise(job.file.as_raw_fd(), offset, len_arg, advice) };
        if rc != 0 {
            tracing::debug!(error = %io::Error::from_raw_os_error(rc), advice = ?job.advice, "page cache advice failed");
            return;
        }
        pos += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_a_sparse_file_leaves_it_reading_zeros_and_unchanged_in_size() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create_new(&path).unwrap();
        file.write_all_at(b"data", 0).unwrap();
        file.set_len(8 << 20).unwrap();
        let file = Arc::new(file);
        let w = PageCache::start("test-cache").unwrap();
        assert!(w.warm(&file, 0, 8 << 20));
        drop(w); // joins after the job
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 << 20);
        let mut buf = vec![1u8; 8];
        let f = File::open(&path).unwrap();
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"data\0\0\0\0");
    }
}
