//! Positional I/O on a segment's files, the system calls wrapped once: `pread(2)`
//! into buffers that are not zeroed first, `pwritev(2)` in calls of bounded size and
//! slice count, and `fallocate(2)` for preallocation. Nothing here moves a file
//! cursor or knows about records: `read` and `segment` both build on it.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};

/// The most one `pwritev` writes; the write buffer is flushed when it reaches it.
///
/// Why a limit: the larger the write, the more each byte of it costs. Measured on
/// our 2-core VM, 1 GB written in 64 KiB or 128 KiB calls cost 16-18 µs of CPU per
/// 64 KiB; in 1 MiB calls 28-42; in 4 MiB calls 51-73. Our reading of why: Linux
/// sizes the page-cache folios of a buffered write by the write (up to 2 MiB), and
/// large folios are carved out of large free blocks, which on a VM that reports free
/// memory to its host is memory the host has taken back, faulted in page by page
/// while the write copies. In the broker, batches of 64 KiB records used to go out
/// in one call of up to 1024 records; capped at 1 MiB, the 64 KiB relay took
/// 99-111 µs of broker CPU per message instead of 135-160 (docs/performance.md).
/// Smaller caps measured no better in the broker, and cost more calls.
pub(crate) const WRITE_BYTES_MAX: usize = 1 << 20;
/// Slices per `pwritev` at most (`IOV_MAX` on Linux).
pub(crate) const IOV_MAX: usize = 1024;

/// Extend `file` from `from` (its length) to `len` bytes that read as zeros, with
/// the disk blocks allocated where the filesystem can (`fallocate`: unwritten
/// extents, no data written), else as a sparse file.
///
/// Why allocate: into a hole, ext4 reserves blocks for every page written (delayed
/// allocation, under a lock the background fsync holds while it allocates them), and
/// the fsync thread then runs the block allocator. Into allocated blocks the append
/// only copies. Measured with 64 KiB messages: the router stopped waiting on that
/// lock (7-12 % of its time) and broker CPU per message fell about 5 %.
pub(crate) fn allocate(file: &File, from: u64, len: u64) -> io::Result<()> {
    if len <= from {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    if let (Ok(offset), Ok(more)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(len - from),
    ) {
        // SAFETY: fallocate reads only its integer arguments; the descriptor is open
        // for the duration of the call.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, more) };
        if rc == 0 {
            return Ok(());
        }
        // Not supported here, or no room to reserve the whole segment ahead: a sparse
        // file, as without preallocation (writes fail when the disk is full).
        tracing::debug!(error = %io::Error::last_os_error(), "fallocate failed; the segment file is sparse");
    }
    file.set_len(len)
}

/// `len` bytes of `file` from `pos`, read into a fresh buffer that is not zeroed
/// first (a read of a batch is up to a MiB, all of it about to be overwritten).
pub(crate) fn read_exact_uninit(file: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    // SAFETY: the vector's spare capacity is at least `len` bytes.
    unsafe { pread_exact(file, pos, buf.as_mut_ptr(), len)? };
    // SAFETY: pread_exact initialised the first `len` bytes, within the capacity.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

/// `len` bytes of `file` from `pos`, appended to `buf` (which grows when it has not
/// the room): many small reads share one allocation.
pub(crate) fn read_exact_onto(
    file: &File,
    pos: u64,
    len: usize,
    buf: &mut BytesMut,
) -> io::Result<Bytes> {
    buf.reserve(len);
    let start = buf.len();
    // SAFETY: `reserve` made at least `len` bytes of spare capacity after `start`.
    unsafe { pread_exact(file, pos, buf.as_mut_ptr().add(start), len)? };
    // SAFETY: pread_exact initialised them.
    unsafe { buf.set_len(start + len) };
    Ok(buf.split().freeze())
}

/// Fill `len` bytes at `dst` from `file` at `pos`.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
unsafe fn pread_exact(file: &File, pos: u64, dst: *mut u8, len: usize) -> io::Result<()> {
    let mut filled = 0usize;
    while filled < len {
        let at = pos
            .checked_add(filled as u64)
            .and_then(|p| libc::off_t::try_from(p).ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::FileTooLarge))?;
        // SAFETY: `dst + filled` has `len - filled` writable bytes (the caller's
        // promise), written through a raw pointer (no reference to uninitialised
        // memory is made); the descriptor is open while `file` is borrowed.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                dst.add(filled).cast::<libc::c_void>(),
                len - filled,
                at,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// `pwritev` all of `slices` at `pos`, in calls of at most `IOV_MAX` slices and
/// `WRITE_BYTES_MAX` bytes; returns the position after them.
pub(crate) fn write_all_vectored_at(
    file: &File,
    mut pos: u64,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<u64> {
    while let Some(first) = slices.first() {
        let n = match slices_per_call(slices) {
            // The first slice alone is over the limit (so longer than
            // WRITE_BYTES_MAX: the range is in bounds): its first part.
            0 => pwritev_at(file, pos, &[IoSlice::new(&first[..WRITE_BYTES_MAX])])?,
            count => pwritev_at(file, pos, &slices[..count])?,
        };
        IoSlice::advance_slices(&mut slices, n);
        pos += n as u64;
    }
    Ok(pos)
}

/// How many whole slices from the start of `slices` one `pwritev` takes: as many
/// as fit in `WRITE_BYTES_MAX` bytes, at most `IOV_MAX`. 0 when the first alone is
/// larger (it is written in parts).
fn slices_per_call(slices: &[IoSlice<'_>]) -> usize {
    let mut bytes = 0;
    slices
        .iter()
        .take(IOV_MAX)
        .take_while(|s| {
            bytes += s.len();
            bytes <= WRITE_BYTES_MAX
        })
        .count()
}

/// One `pwritev` of `slices` (at most `IOV_MAX`) at `pos`, retried when
/// interrupted; returns the bytes written (at least 1).
fn pwritev_at(file: &File, pos: u64, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let offset =
        libc::off_t::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
    // Callers pass at most IOV_MAX (1024) slices; were there more, the count would
    // still not exceed them (fewer would be written, and the caller writes the rest).
    debug_assert!(slices.len() <= IOV_MAX, "{} slices", slices.len());
    let count = libc::c_int::try_from(slices.len()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix,
        // the slices borrow buffers that outlive the call, and `count` is at most
        // their number; the descriptor is open while `file` is borrowed.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                count,
                offset,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_takes_whole_slices_up_to_the_byte_and_slice_limits() {
        let kib = |n: usize| vec![0u8; n * 1024];
        let (a, b) = (kib(600), kib(500));
        // 600 + 500 KiB is over 1 MiB: one slice per call.
        assert_eq!(slices_per_call(&[IoSlice::new(&a), IoSlice::new(&b)]), 1);
        let quarter = kib(256);
        assert_eq!(slices_per_call(&[IoSlice::new(&quarter); 5]), 4);
        // Larger than the limit alone: written in parts.
        let big = kib(1025);
        assert_eq!(slices_per_call(&[IoSlice::new(&big)]), 0);
        let tiny = [1u8];
        assert_eq!(slices_per_call(&[IoSlice::new(&tiny); 2000]), IOV_MAX);
    }
}
