//! Warming the page cache ahead of the head: one thread per log that makes the
//! kernel allocate the pages of the active segment before an append copies into them.
//!
//! A buffered write into a file region that has no page cache yet must allocate and
//! map each page while copying. On a virtual machine whose free memory is handed back
//! to the host (virtio-balloon free page reporting), every such page is a fault on
//! the host too: measured on our 2-core VM, writing 1 GB into fresh pages ran at
//! 0.4-1.4 GB/s, and over pages already cached at 3.8-4.5 GB/s. With 64 KiB messages
//! that copy was most of the router thread's time.
//!
//! So the active segment's data file is created at its full size (sparse), and this
//! thread asks for the region just ahead of the head with
//! `posix_fadvise(POSIX_FADV_WILLNEED)`: the kernel fills holes with clean zero pages
//! (no disk I/O, nothing to write back), and the append then overwrites pages that
//! exist. The owner hands over ranges and never waits; a range that cannot be handed
//! over (the queue is full) is asked for again on a later append. Warming is advice:
//! failures are logged at debug level and change nothing on disk.
//!
//! Recovery already treats the zeros after the last record as a torn tail, and a
//! sealed segment is trimmed to its data, so the preallocation is invisible on disk
//! once a segment is done. Under `fsync = "never"` the log neither preallocates nor
//! warms (see `LogConfig::preallocate`).

use std::fs::File;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::worker::Worker;

/// Ranges waiting for the thread; more are asked for again later.
const QUEUE: usize = 4;
/// Advice is given in pieces of this size. Linux acts on at most the device's
/// read-ahead (or I/O) size of a `WILLNEED` call and silently drops the rest; 128 KiB
/// is the default read-ahead, so every byte asked for is warmed. Small pieces also
/// let a job for a segment that was meanwhile sealed or removed end soon (the kernel
/// ignores advice past the end of a file).
const PIECE: u64 = 128 * 1024;

struct Job {
    file: Arc<File>,
    from: u64,
    to: u64,
}

/// The handle the log owns; dropping it lets the thread finish the jobs queued (at
/// most `QUEUE` more) and joins it.
pub(crate) struct Warmer(Worker<Job>);

impl std::fmt::Debug for Warmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warmer").finish_non_exhaustive()
    }
}

impl Warmer {
    /// Start the thread.
    pub(crate) fn start(name: &str) -> io::Result<Warmer> {
        Worker::start(name, QUEUE, |job: Job| warm(&job)).map(Warmer)
    }

    /// Ask for `from..to` of `file` to be brought into the page cache; false when the
    /// queue is full (ask again later).
    pub(crate) fn warm(&self, file: &Arc<File>, from: u64, to: u64) -> bool {
        self.0.try_send(Job {
            file: file.clone(),
            from,
            to,
        })
    }
}

#[cfg(not(target_os = "linux"))]
fn warm(_job: &Job) {}

#[cfg(target_os = "linux")]
fn warm(job: &Job) {
    let mut pos = job.from;
    while pos < job.to {
        let len = PIECE.min(job.to - pos);
        let (Ok(offset), Ok(len_arg)) = (libc::off_t::try_from(pos), libc::off_t::try_from(len))
        else {
            return;
        };
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is
        // open for as long as `job.file` lives, which outlasts the call.
        let rc = unsafe {
            libc::posix_fadvise(
                job.file.as_raw_fd(),
                offset,
                len_arg,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %io::Error::from_raw_os_error(rc), "page cache warm-up failed");
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
        let w = Warmer::start("test-warm").unwrap();
        assert!(w.warm(&file, 0, 8 << 20));
        drop(w); // joins after the job
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 << 20);
        let mut buf = vec![1u8; 8];
        let f = File::open(&path).unwrap();
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"data\0\0\0\0");
    }
}
